//! One component connection: the XEP-0114 §3 handshake, then the shared bound-stream loop
//! (`rookery_stream::pump`) with the component inbound policy (the trust rule of
//! [`crate::trust`]).
//!
//! Handshake errors, each a stream error after our stream header:
//! - the header is not in `jabber:component:accept` → `invalid-namespace`;
//! - its `to` is not a configured component domain → `host-unknown`;
//! - anything but `<handshake/>` first, or a wrong digest → `not-authorized`;
//! - the domain is already served and `on_conflict = "conflict"` → `conflict`;
//! - too many failed handshakes from the address → `policy-violation`;
//! - no handshake before `handshake_timeout_secs` → `connection-timeout`.
//!
//! Once connected, a component silent for `ping_interval_secs` gets an XMPP ping (XEP-0199)
//! from the server's domain; if nothing at all arrives within `ping_timeout_secs` after it, the
//! stream ends with `connection-timeout`, so a dead TCP connection (no RST ever seen) frees the
//! domain for the next connection instead of answering it with `conflict` forever. When the
//! stream ends, stanzas still queued for it are bounced (`service-unavailable` for IQ get/set
//! and messages) rather than dropped silently.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rookery_core::session::SessionEnd;
use rookery_core::{Core, SessionHandle};
use rookery_jid::Jid;
use rookery_proto::{
    ns, Stanza, StanzaError, StanzaErrorCondition, StreamError, StreamErrorCondition as SEC,
};
use rookery_stream::keepalive::{Due, Keepalive};
use rookery_stream::pump::{self, Inbound};
use rookery_stream::{header, new_stream_id, Conn, ConnError, IpKey, Transport};
use rookery_xml::{Element, Limits, CONTENT_NS};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::Instrument;

use crate::route::{Busy, ComponentRoute};
use crate::trust::{check_from, FromRule};
use crate::{handshake, Components};

/// Serves one accepted TCP connection to the end.
pub async fn serve(comps: Arc<Components>, tcp: TcpStream, peer: SocketAddr) {
    let span = tracing::info_span!("component", %peer, domain = tracing::field::Empty);
    async move {
        tracing::debug!("accepted");
        let cfg = &comps.config;
        let deadline = Duration::from_secs(cfg.handshake_timeout_secs.max(1));
        let mut conn = Conn::new(
            Transport::Plain(tcp),
            peer,
            Limits::PRE_AUTH,
            comps.core.domain(),
            ns::COMPONENT,
        );
        let route = match tokio::time::timeout(deadline, authenticate(&comps, &mut conn)).await {
            Ok(Ok(route)) => route,
            Ok(Err(e)) => return pump::finish(&mut conn, e).await,
            Err(_) => {
                return conn
                    .fail(&StreamError::with_text(
                        SEC::ConnectionTimeout,
                        "handshake took too long",
                    ))
                    .await
            }
        };
        let (handle, mut end) =
            SessionHandle::new(comps.core.next_session_id(), route.jid().clone(), cfg.queue);
        let attached = match Attached::new(&comps.core, &route, handle, cfg.on_conflict) {
            Ok(a) => a,
            Err(Busy) => {
                tracing::warn!("refused: the domain is already connected");
                return conn
                    .fail(&StreamError::with_text(
                        SEC::Conflict,
                        "another connection serves this domain",
                    ))
                    .await;
            }
        };
        let reason =
            match tokio::time::timeout(deadline, conn.send(&Element::new("handshake", CONTENT_NS)))
                .await
            {
                Ok(Ok(())) => {
                    conn.set_limits(Limits {
                        max_stanza_bytes: cfg.max_stanza_bytes,
                        ..Limits::S2S
                    });
                    tracing::info!("component connected");
                    run(&comps, &mut conn, &mut end, &route).await
                }
                Ok(Err(e)) => e,
                Err(_) => ConnError::stream(SEC::ConnectionTimeout, "handshake reply not read"),
            };
        // Detach first, so stanzas arriving from now on are bounced, not queued to a dead end;
        // then bounce what was queued and never written.
        drop(attached);
        tracing::info!(reason = %reason, "component disconnected");
        bounce_queued(&comps.core, &mut end).await;
        pump::finish(&mut conn, reason).await;
    }
    .instrument(span)
    .await
}

/// The connection of a domain while it is attached; detached when dropped, whatever ends
/// the connection (error, timeout, task cancellation). The other nodes of a cluster hear of
/// both (`Core::domain_connection`).
struct Attached<'a> {
    core: &'a Core,
    route: &'a ComponentRoute,
    id: rookery_core::SessionId,
}

impl<'a> Attached<'a> {
    fn new(
        core: &'a Core,
        route: &'a ComponentRoute,
        handle: SessionHandle,
        policy: crate::OnConflict,
    ) -> Result<Self, Busy> {
        let id = handle.id();
        if let Some(old) = route.attach(handle, policy)? {
            tracing::info!("replacing the connected component");
            old.close(StreamError::with_text(
                SEC::Conflict,
                "replaced by a new connection",
            ));
        }
        core.domain_connection(route.domain(), true);
        Ok(Attached { core, route, id })
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        // A connection replaced meanwhile leaves its successor announced.
        if self.route.detach(self.id) {
            self.core.domain_connection(self.route.domain(), false);
        }
    }
}

/// Reads the component's stream header and handshake (XEP-0114 §3); returns the route of
/// the domain it proved it may serve.
async fn authenticate(
    comps: &Components,
    conn: &mut Conn,
) -> Result<Arc<ComponentRoute>, ConnError> {
    let header = conn.next_header().await?;
    // Never a version back, whatever the component sent: XEP-0114 defines none, and a
    // version='1.0' header promises <stream:features/> (RFC 6120 §4.3.2), which this
    // protocol has none of; a peer's version higher than ours is answered with ours or
    // none (§4.7.5), and without one the component proceeds to its handshake.
    conn.set_header_version(false);
    let route = header
        .attr("to")
        .and_then(|to| Jid::parse(to).ok())
        .filter(|j| j.local().is_none() && j.resource().is_none())
        .and_then(|j| comps.route(j.domain()));
    if let Some(r) = &route {
        conn.set_domain(r.domain());
        tracing::Span::current().record("domain", r.domain());
    }
    let id = new_stream_id();
    conn.send_header(None, &id).await?;
    header::check_namespace(&header, ns::COMPONENT)?;
    let Some(route) = route else {
        tracing::info!(to = ?header.attr("to"), "refused: not a configured component domain");
        return Err(ConnError::stream(
            SEC::HostUnknown,
            "no component is configured for that domain",
        ));
    };
    let ip = conn.peer.ip();
    if comps.limiter.exceeded(&IpKey::from(ip)) {
        tracing::warn!("refused: too many failed handshakes from this address");
        return Err(ConnError::stream(
            SEC::PolicyViolation,
            "too many failed handshakes; try again later",
        ));
    }
    let el = conn.next_element().await?;
    if !el.is("handshake", CONTENT_NS) {
        return Err(ConnError::stream(
            SEC::NotAuthorized,
            "send <handshake/> first",
        ));
    }
    if !handshake::verify(&id, route.secret(), &el.text()) {
        comps.limiter.hit(IpKey::from(ip));
        tracing::warn!("component handshake failed: wrong secret");
        return Err(ConnError::stream(SEC::NotAuthorized, "handshake failed"));
    }
    Ok(route)
}

/// Runs the bound stream until it ends; returns why.
async fn run(
    comps: &Components,
    conn: &mut Conn,
    end: &mut SessionEnd,
    route: &ComponentRoute,
) -> ConnError {
    let cfg = &comps.config;
    let mut policy = Component {
        core: &comps.core,
        jid: route.jid(),
        keepalive: Keepalive::new(
            Duration::from_secs(cfg.ping_interval_secs),
            Duration::from_secs(cfg.ping_timeout_secs.max(1)),
        ),
    };
    pump::run(conn, end, Duration::ZERO, &mut policy).await
}

/// Stanzas still queued when the stream ended (never written): IQ get/set and messages are
/// bounced with `service-unavailable`, like those arriving while no component is connected.
/// The bytes are our own serialization, so they parse back; anything else is skipped.
async fn bounce_queued(core: &Arc<Core>, end: &mut SessionEnd) {
    let mut bounced = 0usize;
    for b in end.rx.close_and_drain() {
        let Some(stanza) = Stanza::from_serialized(&b) else {
            continue;
        };
        if let Err(e) = crate::route::unavailable(&stanza) {
            core.reply_error(&stanza, e).await;
            bounced += 1;
        }
    }
    if bounced > 0 {
        tracing::info!(bounced, "bounced stanzas queued for the component");
    }
}

/// The component inbound policy.
struct Component<'a> {
    core: &'a Arc<Core>,
    jid: &'a Jid,
    /// The XEP-0199 ping after silence.
    keepalive: Keepalive,
}

impl Inbound for Component<'_> {
    fn deadline(&self, conn: &Conn) -> Option<Instant> {
        self.keepalive.deadline(conn.last_read())
    }

    /// Silent for the interval: ping. Still silent after the ping: the connection is dead.
    async fn timer(&mut self, conn: &mut Conn) -> Result<(), ConnError> {
        match self.keepalive.poll(conn.last_read(), Instant::now()) {
            Due::Nothing => return Ok(()),
            Due::Dead => {
                tracing::warn!("component did not answer a ping; closing");
                return Err(ConnError::stream(
                    SEC::ConnectionTimeout,
                    "no answer to ping",
                ));
            }
            Due::Check => {}
        }
        let ping = Element::new("iq", CONTENT_NS)
            .with_attr("type", "get")
            .with_attr("id", format!("rk-c-ping-{}", self.keepalive.sent()))
            .with_attr("from", self.core.domain())
            .with_attr("to", self.jid.as_str())
            .with_child(Element::new("ping", ns::PING));
        conn.send(&ping).await
    }

    /// The `from` trust rule of [`crate::trust`], then routing like any trusted stanza.
    async fn element(&mut self, conn: &mut Conn, el: Element) -> Result<(), ConnError> {
        let Some(mut stanza) = conn.stanza_or_reply(el).await? else {
            return Ok(());
        };
        match check_from(self.jid.domain(), stanza.from()) {
            FromRule::Keep => {}
            FromRule::Stamp => stanza.set_from(self.jid.clone()),
            FromRule::Reject => {
                let from = stanza.from().map(Jid::to_string).unwrap_or_default();
                tracing::warn!(%from, "component sent from an address outside its domain");
                return Err(ConnError::Stream(StreamError::with_text(
                    SEC::InvalidFrom,
                    format!("a component may only send from its own domain, not {from}"),
                )));
            }
        }
        if stanza.to().is_none() {
            let e = StanzaError::new(StanzaErrorCondition::BadRequest)
                .with_text("stanzas from a component must have a 'to' address");
            if let Some(mut reply) = stanza.error_reply(&e) {
                // The addresses swapped leave it without `from`, which a stanza on this
                // server-style stream (XEP-0114 §3) must have (RFC 6120 §8.1.2.1): the error
                // is the server's.
                if let Ok(server) = Jid::parse(self.core.domain()) {
                    reply.set_from(server);
                }
                conn.send(reply.element()).await?;
            }
            return Ok(());
        }
        self.core.route_from_peer(stanza).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;
    use rookery_core::{CoreBuilder, CoreConfig, Outbound};

    #[tokio::test]
    async fn queued_stanzas_are_bounced_when_the_stream_ends() {
        let core = CoreBuilder::new(
            CoreConfig::default(),
            Arc::new(rookery_core::MemoryAccounts::new()),
        )
        .build()
        .unwrap();
        let alice = Jid::parse("alice@localhost/r").unwrap();
        let (h, mut alice_end) = SessionHandle::new(1, alice.clone(), 16);
        core.bind(h).await;
        let (bot, mut end) = SessionHandle::new(2, Jid::parse("bot.localhost").unwrap(), 16);
        for s in [
            "<message from='alice@localhost/r' to='bot.localhost' id='m'><body>x</body></message>",
            "<presence from='alice@localhost/r' to='bot.localhost'/>",
            "<iq from='alice@localhost/r' to='bot.localhost' type='get' id='i'><ping xmlns='urn:xmpp:ping'/></iq>",
            "<iq from='alice@localhost/r' to='bot.localhost' type='result' id='r'/>",
        ] {
            assert!(bot.send(Bytes::from(s)));
        }
        bounce_queued(&core, &mut end).await;
        let mut got = Vec::new();
        while let Ok(Outbound::Bytes(b)) = alice_end.rx.try_recv() {
            got.push(String::from_utf8_lossy(&b).into_owned());
        }
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().all(|g| g.contains("service-unavailable")));
        assert!(got
            .iter()
            .any(|g| g.starts_with("<message") && g.contains("id=\"m\"")));
        assert!(got
            .iter()
            .any(|g| g.starts_with("<iq") && g.contains("id=\"i\"")));
        // Closed: later sends fail instead of queueing.
        assert!(!bot.send(Bytes::from_static(b"<message/>")));
    }
}
