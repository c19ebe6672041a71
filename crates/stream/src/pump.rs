//! The loop of a bound stream: inbound elements go to the listener's [`Inbound`] policy;
//! bytes the router queued for this stream are written in batches with one flush; the kill
//! switch and the idle timeout end it with a stream error.

use std::future::Future;
use std::time::Duration;

use rookery_core::session::SessionEnd;
use rookery_core::Outbound;
use rookery_proto::StreamErrorCondition as SEC;
use rookery_xml::Element;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::conn::{Conn, ConnError};

/// Most queued stanzas written before one flush.
const WRITE_BATCH: usize = 64;

/// What a listener does with each element its peer sends once the stream is bound: the
/// trust rule for `from` and the routing call live in implementations of this trait.
pub trait Inbound {
    /// Handles one top-level element; an error ends the stream.
    fn element(
        &mut self,
        conn: &mut Conn,
        el: Element,
    ) -> impl Future<Output = Result<(), ConnError>> + Send;
}

/// Runs the stream until it ends; returns why. `idle` of zero disables the idle timeout.
pub async fn run<H: Inbound + Send>(
    conn: &mut Conn,
    end: &mut SessionEnd,
    idle: Duration,
    handler: &mut H,
) -> ConnError {
    let mut last_read = Instant::now();
    loop {
        let idle_deadline = (!idle.is_zero()).then(|| last_read + idle);
        tokio::select! {
            biased;
            reason = end.kill.fired() => {
                // Flush what was queued before the kill (e.g. the reply to the request that
                // caused it), then end the stream.
                let _ = drain(conn, &mut end.rx, usize::MAX).await;
                return ConnError::Stream(reason);
            }
            out = end.rx.recv() => match out {
                Some(Outbound::Bytes(b)) => {
                    let r = async {
                        conn.write_unflushed(&b).await?;
                        drain(conn, &mut end.rx, WRITE_BATCH).await
                    }.await;
                    if let Err(e) = r { return e; }
                }
                None => return ConnError::stream(SEC::InternalServerError, "session queue closed"),
            },
            ev = conn.next_element() => match ev {
                Ok(el) => {
                    last_read = Instant::now();
                    if let Err(e) = handler.element(conn, el).await {
                        return e;
                    }
                }
                Err(e) => return e,
            },
            _ = sleep_until(idle_deadline) => {
                return ConnError::stream(SEC::ConnectionTimeout, "idle timeout");
            }
        }
    }
}

/// Ends the connection the way `reason` calls for: answer a peer's close, send a stream
/// error, or just log a lost connection.
pub async fn finish(conn: &mut Conn, reason: ConnError) {
    match reason {
        ConnError::StreamClosed => {
            tracing::info!("stream closed by peer");
            conn.close().await
        }
        ConnError::Stream(e) => conn.fail(&e).await,
        e => tracing::info!(error = %e, "connection lost"),
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
    rx: &mut mpsc::Receiver<Outbound>,
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
