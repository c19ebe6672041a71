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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rookery_core::session::SessionEnd;
use rookery_core::{Core, SessionHandle};
use rookery_jid::Jid;
use rookery_proto::{
    ns, Stanza, StanzaError, StanzaErrorCondition, StanzaParseError, StreamError,
    StreamErrorCondition as SEC,
};
use rookery_stream::pump::{self, Inbound};
use rookery_stream::{new_stream_id, Conn, ConnError, Transport};
use rookery_xml::{Element, Event, Limits, CONTENT_NS};
use tokio::net::TcpStream;
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
        let attached = match Attached::new(&route, handle, cfg.on_conflict) {
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
                    run(&comps.core, &mut conn, &mut end, &route).await
                }
                Ok(Err(e)) => e,
                Err(_) => ConnError::stream(SEC::ConnectionTimeout, "handshake reply not read"),
            };
        // Detach first, so stanzas arriving from now on are bounced, not queued to a dead end.
        drop(attached);
        tracing::info!(reason = %reason, "component disconnected");
        pump::finish(&mut conn, reason).await;
    }
    .instrument(span)
    .await
}

/// The connection of a domain while it is attached; detached when dropped, whatever ends
/// the connection (error, timeout, task cancellation).
struct Attached<'a> {
    route: &'a ComponentRoute,
    id: rookery_core::SessionId,
}

impl<'a> Attached<'a> {
    fn new(
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
        Ok(Attached { route, id })
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.route.detach(self.id);
    }
}

/// Reads the component's stream header and handshake (XEP-0114 §3); returns the route of
/// the domain it proved it may serve.
async fn authenticate(
    comps: &Components,
    conn: &mut Conn,
) -> Result<Arc<ComponentRoute>, ConnError> {
    let header = match conn.next_event().await? {
        Event::StreamOpen(h) => h,
        _ => {
            return Err(ConnError::stream(
                SEC::BadFormat,
                "expected a stream header",
            ))
        }
    };
    // RFC 6120 §4.7.5: a peer without a version (every XEP-0114 component) gets none back.
    let versioned = header
        .attr("version")
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok())
        .is_some_and(|m| m >= 1);
    conn.set_header_version(versioned);
    let route = header
        .attr("to")
        .and_then(|to| Jid::parse(to).ok())
        .filter(|j| j.local().is_none() && j.resource().is_none())
        .and_then(|j| comps.routes.get(j.domain()).cloned());
    if let Some(r) = &route {
        conn.set_domain(r.domain());
        tracing::Span::current().record("domain", r.domain());
    }
    let id = new_stream_id();
    conn.send_header(None, &id).await?;
    if header.default_ns != ns::COMPONENT {
        return Err(ConnError::stream(
            SEC::InvalidNamespace,
            "expected jabber:component:accept",
        ));
    }
    let Some(route) = route else {
        tracing::info!(to = ?header.attr("to"), "refused: not a configured component domain");
        return Err(ConnError::stream(
            SEC::HostUnknown,
            "no component is configured for that domain",
        ));
    };
    let ip = conn.peer.ip();
    if comps.limiter.blocked(ip) {
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
        comps.limiter.failed(ip);
        tracing::warn!("component handshake failed: wrong secret");
        return Err(ConnError::stream(SEC::NotAuthorized, "handshake failed"));
    }
    Ok(route)
}

/// Runs the bound stream until it ends; returns why.
async fn run(
    core: &Arc<Core>,
    conn: &mut Conn,
    end: &mut SessionEnd,
    route: &ComponentRoute,
) -> ConnError {
    let mut policy = Component {
        core,
        jid: route.jid(),
    };
    pump::run(conn, end, Duration::ZERO, &mut policy).await
}

/// The component inbound policy.
struct Component<'a> {
    core: &'a Arc<Core>,
    jid: &'a Jid,
}

impl Inbound for Component<'_> {
    /// The `from` trust rule of [`crate::trust`], then routing like any trusted stanza.
    async fn element(&mut self, conn: &mut Conn, el: Element) -> Result<(), ConnError> {
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
            if let Some(reply) = stanza.error_reply(&e) {
                conn.send(reply.element()).await?;
            }
            return Ok(());
        }
        self.core.route(stanza).await;
        Ok(())
    }
}
