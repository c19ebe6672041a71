//! The bound client session: the trust rule for clients (the server stamps `from`), on top of
//! the shared loop in `rookery_stream::pump`.

use std::sync::Arc;
use std::time::Duration;

use rookery_jid::Jid;
use rookery_proto::{
    ns, IqType, Stanza, StanzaKind, StanzaParseError, StreamError, StreamErrorCondition as SEC,
};
use rookery_stream::pump::{self, Inbound};
use rookery_stream::{Conn, ConnError};
use rookery_xml::Element;

use crate::negotiate::Bound;
use crate::C2sContext;

/// Runs a bound session until the stream ends, then unregisters it.
pub async fn run(ctx: &Arc<C2sContext>, mut conn: Conn, bound: Bound) {
    let Bound {
        jid,
        handle,
        mut end,
    } = bound;
    let idle = Duration::from_secs(ctx.config.idle_timeout_secs);
    let mut client = Client { ctx, jid: &jid };
    let reason = pump::run(&mut conn, &mut end, idle, &mut client).await;
    ctx.core.unbind(&jid, handle.id()).await;
    pump::finish(&mut conn, reason).await;
}

/// The c2s inbound policy.
struct Client<'a> {
    ctx: &'a Arc<C2sContext>,
    jid: &'a Jid,
}

impl Inbound for Client<'_> {
    /// Whatever `from` the client wrote is replaced by its full JID (RFC 6120 §8.1.2.1), so
    /// it cannot speak for anyone else.
    async fn element(&mut self, conn: &mut Conn, mut el: Element) -> Result<(), ConnError> {
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
        stanza.set_from(self.jid.clone());
        if is_legacy_session(self.ctx, &stanza) {
            conn.send(stanza.iq_result(None).element()).await?;
            return Ok(());
        }
        self.ctx.core.route_from_session(stanza).await;
        Ok(())
    }
}

/// RFC 3921 session establishment, still sent by older clients: a no-op success.
fn is_legacy_session(ctx: &C2sContext, s: &Stanza) -> bool {
    s.kind() == StanzaKind::Iq(IqType::Set)
        && s.to().is_none_or(|t| t.as_str() == ctx.core.domain())
        && s.payload().is_some_and(|p| p.is("session", ns::SESSION))
}
