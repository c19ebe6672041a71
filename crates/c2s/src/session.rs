//! The bound session loop: client stanzas in (with `from` stamped by the server), routed
//! stanzas out (drained from the session's bounded queue, written in batches).

use std::sync::Arc;
use std::time::Duration;

use rookery_core::Outbound;
use rookery_proto::{
    ns, IqType, Stanza, StanzaKind, StanzaParseError, StreamError, StreamErrorCondition as SEC,
};
use rookery_xml::Element;
use tokio::time::Instant;

use crate::conn::{Conn, ConnError};
use crate::negotiate::Bound;
use crate::C2sContext;

/// Most queued stanzas written before one flush.
const WRITE_BATCH: usize = 64;

/// Runs a bound session until the stream ends, then unregisters it.
pub async fn run(ctx: &Arc<C2sContext>, mut conn: Conn, bound: Bound) {
    let Bound {
        jid,
        handle,
        mut end,
    } = bound;
    let core = &ctx.core;
    let idle = Duration::from_secs(ctx.config.idle_timeout_secs);
    let mut last_read = Instant::now();
    let outcome: Result<(), ConnError> = loop {
        let idle_deadline = (!idle.is_zero()).then(|| last_read + idle);
        tokio::select! {
            biased;
            reason = end.kill.fired() => {
                // Flush what was queued before the kill (e.g. the reply to the request that
                // caused it), then end the stream.
                let _ = drain(&mut conn, &mut end.rx, usize::MAX).await;
                break Err(ConnError::Stream(reason));
            }
            out = end.rx.recv() => match out {
                Some(Outbound::Bytes(b)) => {
                    let r = async {
                        conn.write_unflushed(&b).await?;
                        drain(&mut conn, &mut end.rx, WRITE_BATCH).await
                    }.await;
                    if let Err(e) = r { break Err(e); }
                }
                None => break Ok(()),
            },
            ev = conn.next_element() => match ev {
                Ok(el) => {
                    last_read = Instant::now();
                    if let Err(e) = handle_element(ctx, &mut conn, &jid, el).await {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            },
            _ = sleep_until(idle_deadline) => {
                break Err(ConnError::stream(SEC::ConnectionTimeout, "idle timeout"));
            }
        }
    };
    core.unbind(&jid, handle.id()).await;
    match outcome {
        Ok(()) => conn.close().await,
        Err(ConnError::StreamClosed) => {
            tracing::info!("stream closed by client");
            conn.close().await
        }
        Err(ConnError::Stream(e)) => conn.fail(&e).await,
        Err(e) => tracing::info!(error = %e, "connection lost"),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Writes up to `max` more queued stanzas, then flushes.
async fn drain(
    conn: &mut Conn,
    rx: &mut tokio::sync::mpsc::Receiver<Outbound>,
    max: usize,
) -> Result<(), ConnError> {
    let mut n = 0;
    while n < max {
        match rx.try_recv() {
            Ok(Outbound::Bytes(b)) => conn.write_unflushed(&b).await?,
            Err(_) => break,
        }
        n += 1;
    }
    conn.flush().await
}

/// One element from the client. The trust rule for clients: whatever `from` the client
/// wrote is replaced by its full JID (RFC 6120 §8.1.2.1), so it cannot speak for others.
async fn handle_element(
    ctx: &Arc<C2sContext>,
    conn: &mut Conn,
    jid: &rookery_jid::Jid,
    mut el: Element,
) -> Result<(), ConnError> {
    el.remove_attr("from");
    let mut stanza = match Stanza::from_element(el) {
        Ok(s) => s,
        Err(e @ StanzaParseError::Malformed { .. }) => {
            if let Some(reply) = e.reply() {
                conn.send(&reply).await?;
            }
            return Ok(());
        }
        Err(StanzaParseError::NotAStanza(name)) => {
            return Err(ConnError::Stream(StreamError::with_text(
                SEC::UnsupportedStanzaType,
                format!("unexpected <{name}/>"),
            )))
        }
    };
    stanza.set_from(jid.clone());
    if is_legacy_session(ctx, &stanza) {
        conn.send(stanza.iq_result(None).element()).await?;
        return Ok(());
    }
    ctx.core.route(stanza).await;
    Ok(())
}

/// RFC 3921 session establishment, still sent by older clients: a no-op success.
fn is_legacy_session(ctx: &C2sContext, s: &Stanza) -> bool {
    s.kind() == StanzaKind::Iq(IqType::Set)
        && s.to().is_none_or(|t| t.as_str() == ctx.core.domain())
        && s.payload().is_some_and(|p| p.is("session", ns::SESSION))
}
