//! The bound client session: the trust rule for clients (the server stamps `from`), on top of
//! the shared loop in `rookery_stream::pump`, plus what only client streams have:
//!
//! - XEP-0198 stream management (see [`crate::sm`]): inbound counting and `<a/>` answers,
//!   outbound counting with a copy of each unacknowledged stanza, ack requests (`<r/>` once
//!   [`C2sConfig::sm_ack_every`](crate::C2sConfig) stanzas are unacknowledged, or
//!   [`ACK_DELAY`] after the first one), hibernation of a resumable session whose connection
//!   died, and resumption on a new connection;
//! - dead-peer detection: after `ping_interval_secs` of silence the server sends an XEP-0199
//!   ping (an `<r/>` when stream management is on) and a peer that sends nothing within
//!   `ping_timeout_secs` is dead; so is one that stops reading (writes stall that long);
//! - XEP-0352 client state indication (see [`crate::csi`]).
//!
//! When the session ends for good (clean close, stream error, hibernation timeout, too many
//! unacknowledged stanzas) it is unbound, so presence unavailable goes out, and what it could
//! not deliver — unacknowledged, held back or still queued — is routed again: messages then
//! find another resource, offline storage or a bounce with an error (XEP-0198 §5, RFC 6121
//! §8.5.3.2), IQ requests get an error reply; nothing is dropped silently.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rookery_core::deadline::after;
use rookery_core::session::SessionEnd;
use rookery_core::{Event, HandoverRefusal, Outbound, Receipt, SessionHandle};
use rookery_jid::Jid;
use rookery_proto::time::{delay, now_unix};
use rookery_proto::{ns, IqType, Stanza, StanzaKind, StreamError, StreamErrorCondition as SEC};
use rookery_stream::keepalive::{Due, Keepalive};
use rookery_stream::negotiation::sasl2;
use rookery_stream::pump::{self, Inbound};
use rookery_stream::{Conn, ConnError};
use rookery_xml::Element;
use tokio::time::Instant;
use tracing::Instrument;

use crate::bind2;
use crate::csi::{self, Csi, Decision};
use crate::elsewhere::{Moved, MOVE_GRACE};
use crate::machine::Inline;
use crate::machine::Sasl2Resumed;
use crate::negotiate::Bound;
use crate::sm::{self, Claim, Counters, Handoff, Takeover, Verdict};
use crate::C2sContext;

/// How long the first unacknowledged stanza may wait before the server asks for an ack
/// even though fewer than `sm_ack_every` are pending.
pub const ACK_DELAY: Duration = Duration::from_secs(5);

/// Runs a bound session until it ends for good (surviving connection losses while it is
/// resumable), then unregisters it and routes again what it could not deliver.
///
/// Every step but the loop itself is boxed: this future lives as long as the connection, and
/// unboxed, the rare steps (resumption, the unbind and rerouting at the end, the closing
/// writes) would make every idle session carry their state (`docs/performance.md`). Not an
/// `async fn` for the same reason: that would keep its arguments twice, as arguments and as
/// the locals they are moved into (rust-lang/rust#62958); the block below uses them in place.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would keep its arguments twice"
)]
pub fn run<'a>(
    ctx: &'a Arc<C2sContext>,
    mut conn: Conn,
    mut bound: Bound,
) -> impl Future<Output = ()> + Send + 'a {
    async move {
        let idle = Duration::from_secs(ctx.config.idle_timeout_secs);
        let inline = bound.inline.take();
        let moved = bound.moved.take();
        let end = &mut bound.end;
        let mut client = Client::new(ctx, &bound.jid);
        if let Some(inline) = inline {
            if let Err(reason) = Box::pin(client.inline(&mut conn, *inline)).await {
                return Box::pin(finish(client, &bound.handle, end, Some(conn), reason)).await;
            }
        }
        if let Some(moved) = moved {
            if let Err(reason) = Box::pin(client.arrive(&mut conn, *moved)).await {
                return Box::pin(finish(client, &bound.handle, end, Some(conn), reason)).await;
            }
        }
        let (last, reason) = loop {
            let reason = pump::run(&mut conn, end, idle, &mut client).await;
            match Box::pin(client.after(conn, reason, end)).await {
                Next::Run(c) => conn = c,
                Next::Ended(c, r) => break (c, r),
                Next::Moved(handed) => return Box::pin(client.moved_out(end, handed)).await,
            }
        };
        Box::pin(finish(client, &bound.handle, end, last, reason)).await
    }
}

/// The session is over: unbinds it, routes again what it could not deliver, and closes its
/// last connection (if any) as `reason` calls for.
async fn finish(
    mut client: Client<'_>,
    handle: &SessionHandle,
    end: &mut SessionEnd,
    mut last: Option<Conn>,
    reason: ConnError,
) {
    let unsent = last.as_mut().map(Conn::take_unsent).unwrap_or_default();
    client.terminate(handle, end, unsent).await;
    if let Some(mut conn) = last {
        match client.closing.take() {
            Some(bytes) => {
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    let _ = conn.write(&bytes).await;
                    conn.shutdown().await;
                })
                .await;
            }
            None => pump::finish(&mut conn, reason).await,
        }
    } else {
        tracing::info!(reason = %reason, "session ended");
    }
}

/// What the session does after its loop on one connection ended.
enum Next {
    /// Go on with this connection (resumed).
    Run(Conn),
    /// The session is over; close this connection (if any) as the reason says.
    Ended(Option<Conn>, ConnError),
    /// The session went on on another node, to which it handed over all but the last
    /// stanzas it parked from this one on ([`Client::moved_out`]).
    Moved(usize),
}

/// How a hibernation ended.
enum Hibernation {
    /// A connection here resumed the session.
    Resumed(Box<Conn>),
    /// The session must end.
    Ended,
    /// Another node took it over, with the stanzas parked before this count.
    Moved(usize),
}

/// A session that moved here from another node of a cluster, whose client resumed it here
/// ([`crate::elsewhere`]).
pub struct MovedIn {
    /// What the other node handed over.
    pub moved: Moved,
    /// Set when `<resume/>` came inline in SASL2.
    pub sasl2: Option<Box<Sasl2Resumed>>,
}

/// A managed stream (after `<enable/>`).
struct Managed {
    counters: Counters,
    /// Set while the session is resumable.
    resume: Option<Resumable>,
    /// An `<r/>` is out and no `<a/>` came back yet.
    requested: bool,
    /// When to ask for an ack although fewer than `sm_ack_every` stanzas are pending.
    ack_due: Option<Instant>,
    /// Stanzas queued for the session while no connection was attached.
    parked: VecDeque<Bytes>,
    /// Receipts held until the client acknowledges the stanza count each waits for (a sent
    /// count, mod 2^32 as the counters).
    receipts: Vec<(u32, Receipt)>,
}

impl Managed {
    /// Holds `r` until the client has acknowledged what was written before it and the
    /// `pending` stanzas still to be written ahead of it (held back, parked).
    fn hold_receipt(&mut self, r: Receipt, pending: usize) {
        let pending = u32::try_from(pending).unwrap_or(u32::MAX);
        let target = self.counters.sent_count().wrapping_add(pending);
        self.receipts.push((target, r));
        self.release_receipts();
    }

    /// Lets go the receipts the client's acknowledgements cover now.
    fn release_receipts(&mut self) {
        let unacked = u32::try_from(self.counters.unacked()).unwrap_or(u32::MAX);
        let acked = self.counters.sent_count().wrapping_sub(unacked);
        // Kept: a target still ahead of `acked` (less than half the counter's range away).
        self.receipts
            .retain(|(target, _)| (1..1 << 31).contains(&target.wrapping_sub(acked)));
    }
}

struct Resumable {
    id: String,
    max: Duration,
    handoff: Arc<Handoff>,
}

/// The c2s inbound policy and per-session state.
struct Client<'a> {
    ctx: &'a Arc<C2sContext>,
    jid: &'a Jid,
    sm: Option<Box<Managed>>,
    csi: Csi,
    /// Server-initiated liveness check.
    keepalive: Keepalive,
    /// The id of the XEP-0199 ping in flight.
    ping_id: Option<String>,
    /// A connection that took the session over, accepted in [`Inbound::wake`].
    taken_over: Option<Box<Conn>>,
    /// A takeover [`Inbound::wake`] refused, answered in [`Inbound::woken`].
    refused: Option<Box<(Takeover, Element)>>,
    /// The connection that resumed the session asked inline in SASL2: `<resumed/>` goes
    /// inside a SASL2 `<success/>` with this.
    resumed_in_sasl2: Option<Box<Sasl2Resumed>>,
    /// Bytes that end the stream, written instead of the usual stream error.
    closing: Option<Vec<u8>>,
}

impl<'a> Client<'a> {
    fn new(ctx: &'a Arc<C2sContext>, jid: &'a Jid) -> Self {
        Client {
            ctx,
            jid,
            sm: None,
            csi: Csi::default(),
            keepalive: Self::keepalive(ctx),
            ping_id: None,
            taken_over: None,
            refused: None,
            resumed_in_sasl2: None,
            closing: None,
        }
    }

    /// Enables what a Bind2 request asked for inline, then sends the SASL2 `<success/>`
    /// with `<bound/>` saying how (XEP-0386 §4.2): carbons through the module that serves
    /// their `<enable/>`, the client state, stream management as `<enable/>` would, and the
    /// archive's `<metadata/>`. First the offline messages the archive holds are cleared
    /// ([`Event::BoundFromArchive`]): a Bind2 client reads what it missed from the archive.
    async fn inline(&mut self, conn: &mut Conn, inline: Inline) -> Result<(), ConnError> {
        let Inline {
            mut success,
            bind,
            mut features,
        } = inline;
        let core = &self.ctx.core;
        core.emit(&Event::BoundFromArchive(self.jid.clone())).await;
        if bind.carbons {
            let enable = Element::new("enable", ns::CARBONS);
            if let Err(e) = core.serve_inline_iq(IqType::Set, self.jid, enable).await {
                tracing::info!(condition = %e.condition, "inline carbons not enabled");
            }
        }
        if bind.inactive == Some(true) {
            self.csi.set_inactive();
        }
        let mut answers = Vec::new();
        // §4.2 SHOULD: the archive's state as the session is bound, where the client's
        // synchronisation starts (none without an archive: no module serves the request).
        let metadata = Element::new("metadata", ns::MAM);
        if let Ok(Some(m)) = core.serve_inline_iq(IqType::Get, self.jid, metadata).await {
            answers.push(m);
        }
        if let Some(el) = &bind.sm_enable {
            answers.push(self.enable_reply(el));
        }
        success.push_child(bind2::bound(answers));
        tracing::debug!("bound inline (Bind2)");
        conn.send(&success).await?;
        if self.sm.is_some() {
            // Enabled inline: an `<enable/>` now would only fail.
            features.remove_children("sm", sm::NS);
        }
        conn.send(&features).await
    }

    fn resumable(&self) -> bool {
        self.sm.as_ref().is_some_and(|m| m.resume.is_some())
    }

    /// Whether losing the connection this way leaves the session waiting for a resumption:
    /// a connection that broke or went silent, not a close or an error of the client's.
    fn hibernates(&self, reason: &ConnError) -> bool {
        self.resumable()
            && self.closing.is_none()
            && match reason {
                ConnError::Eof | ConnError::Io(_) => true,
                ConnError::Stream(e) => e.condition == SEC::ConnectionTimeout,
                _ => false,
            }
    }

    /// A fresh liveness check under the listener's settings.
    fn keepalive(ctx: &C2sContext) -> Keepalive {
        Keepalive::new(
            Duration::from_secs(ctx.config.ping_interval_secs),
            Self::ping_timeout_of(ctx),
        )
    }

    fn ping_timeout_of(ctx: &C2sContext) -> Duration {
        Duration::from_secs(ctx.config.ping_timeout_secs.max(1))
    }

    fn ping_timeout(&self) -> Duration {
        Self::ping_timeout_of(self.ctx)
    }

    /// Decides what follows the end of the loop on `conn`: hibernation, resumption on the
    /// connection that took over, or the end.
    async fn after(&mut self, conn: Conn, reason: ConnError, end: &mut SessionEnd) -> Next {
        let mut conn = Some(conn);
        let mut reason = reason;
        loop {
            let next = match reason {
                ConnError::Detached => {
                    let Some(new) = self.taken_over.take() else {
                        let e = ConnError::stream(SEC::InternalServerError, "lost takeover");
                        return Next::Ended(conn, e);
                    };
                    if let Some(old) = conn.take() {
                        close_in_background(
                            old,
                            Some(StreamError::with_text(
                                SEC::Conflict,
                                "the session was resumed on another connection",
                            )),
                        );
                    }
                    tracing::info!(peer = %new.peer, "session resumed on a new connection");
                    rookery_metrics::get().sm_resume();
                    Some(new)
                }
                r if self.hibernates(&r) => {
                    tracing::info!(reason = %r, "connection lost; session hibernating");
                    rookery_metrics::get().sm_hibernation();
                    if let Some(old) = conn.take() {
                        close_in_background(old, None);
                    }
                    match self.hibernate(end).await {
                        Hibernation::Resumed(c) => {
                            tracing::info!(peer = %c.peer, "session resumed");
                            rookery_metrics::get().sm_resume();
                            Some(c)
                        }
                        Hibernation::Ended => {
                            tracing::info!("hibernated session ended");
                            None
                        }
                        Hibernation::Moved(handed) => return Next::Moved(handed),
                    }
                }
                r => return Next::Ended(conn, r),
            };
            let Some(mut new) = next else {
                return Next::Ended(
                    None,
                    ConnError::stream(SEC::ConnectionTimeout, "not resumed in time"),
                );
            };
            let limit = self.ping_timeout();
            match tokio::time::timeout(limit, self.attach(&mut new)).await {
                Ok(Ok(())) => return Next::Run(*new),
                Ok(Err(e)) => reason = e,
                Err(_) => reason = ConnError::stream(SEC::ConnectionTimeout, "resume stalled"),
            }
            conn = Some(*new);
        }
    }

    /// Waits, with no connection, for a resumption here or another node's takeover;
    /// meanwhile stanzas for the session are parked (bounded).
    async fn hibernate(&mut self, end: &mut SessionEnd) -> Hibernation {
        let Some(m) = self.sm.as_mut() else {
            return Hibernation::Ended;
        };
        let Some((handoff, max)) = m.resume.as_ref().map(|r| (r.handoff.clone(), r.max)) else {
            return Hibernation::Ended;
        };
        let deadline = after(Instant::now(), max);
        let mut parked_bytes: usize = m.parked.iter().map(Bytes::len).sum();
        loop {
            tokio::select! {
                biased;
                reason = end.kill.fired() => {
                    tracing::info!(condition = %reason.condition, "hibernated session closed");
                    return Hibernation::Ended;
                }
                claim = handoff.recv() => match claim {
                    Claim::Resume(t) => match refusal(&m.counters, t.h) {
                        Some(failed) => refuse(&self.ctx.core, t, failed).await,
                        None => {
                            if let Some((conn, sasl2)) = accept(&mut m.counters, t) {
                                self.resumed_in_sasl2 = sasl2;
                                return Hibernation::Resumed(conn);
                            }
                        }
                    },
                    Claim::Move(mv) => match m.counters.check(mv.h) {
                        Err(too_high) => {
                            refuse_move(&self.ctx.core, mv, too_high, m.counters.inbound()).await;
                        }
                        Ok(_) => {
                            let (ctx, jid) = (self.ctx, self.jid);
                            if let Some(handed) = hand_over(ctx, jid, m, &self.csi, mv, end) {
                                let held = self.csi.held();
                                if wait_for_move(ctx, jid, m, held, end, &handoff).await {
                                    return Hibernation::Moved(handed);
                                }
                                return Hibernation::Ended;
                            }
                        }
                    },
                },
                item = end.rx.recv() => match item {
                    Some(item) => {
                        if let Outbound::Bytes(b) = &item {
                            held_message(self.ctx, self.jid, b).await;
                        }
                        if !park(self.ctx, m, self.csi.held(), &mut parked_bytes, item) {
                            tracing::info!("too many stanzas for a hibernated session");
                            return Hibernation::Ended;
                        }
                    }
                    None => return Hibernation::Ended,
                },
                _ = tokio::time::sleep_until(deadline) => return Hibernation::Ended,
            }
        }
    }

    /// Takes over a session another node handed here (see [`crate::elsewhere`]) on the
    /// connection that resumed it: the counters, unacknowledged and pending stanzas and the
    /// SM-ID it had, then `<resumed/>` and the resend as for a resumption here.
    async fn arrive(&mut self, conn: &mut Conn, moved: MovedIn) -> Result<(), ConnError> {
        let MovedIn { mut moved, sasl2 } = moved;
        let handoff = self.ctx.sm.register_as(&moved.previd, self.jid);
        let max = moved
            .max_secs
            .min(self.ctx.config.sm_resume_timeout_secs)
            .max(1);
        self.sm = Some(Box::new(Managed {
            counters: Counters::restore(moved.inbound, moved.sent, moved.take_unacked()),
            resume: Some(Resumable {
                id: moved.previd,
                max: Duration::from_secs(max),
                handoff,
            }),
            requested: false,
            ack_due: None,
            parked: moved.pending.into_iter().map(Bytes::from).collect(),
            receipts: Vec::new(),
        }));
        self.resumed_in_sasl2 = sasl2;
        tracing::info!(peer = %conn.peer, "session resumed from another node");
        rookery_metrics::get().sm_resume();
        let limit = self.ping_timeout();
        match tokio::time::timeout(limit, self.attach(conn)).await {
            Ok(r) => r,
            Err(_) => Err(ConnError::stream(SEC::ConnectionTimeout, "resume stalled")),
        }
    }

    /// The session goes on on the node it was handed to, whose session replaced it in the
    /// registry here: what was parked after the handover (`handed` on) and is still queued
    /// goes to that session, and this task ends telling nobody — no unavailable presence,
    /// no unbind (the registry holds the new session), nothing routed again that the other
    /// node has. A stanza that session does not take is routed again as at any end.
    async fn moved_out(mut self, end: &mut SessionEnd, handed: usize) {
        let Some(mut m) = self.sm.take() else { return };
        if let Some(r) = m.resume.take() {
            self.ctx.sm.remove(&r.id);
            if let Some(claim) = r.handoff.close() {
                claim.refuse(sm::failed("item-not-found", None));
            }
        }
        let late: Vec<Bytes> = m
            .parked
            .drain(..)
            .skip(handed)
            .chain(end.rx.close_and_drain())
            .collect();
        let to = self
            .ctx
            .core
            .session(self.jid)
            .filter(SessionHandle::is_remote);
        let mut rerouted = 0usize;
        for b in late {
            if to.as_ref().is_some_and(|h| h.send(b.clone())) {
                continue;
            }
            if let Some(stanza) = Stanza::from_serialized(&b).filter(|s| reroutable(s, self.jid)) {
                rerouted += 1;
                self.ctx.core.reroute(stanza).await;
            }
        }
        tracing::info!(rerouted, "session moved to another node");
    }

    /// Puts the session on a connection that resumed it (§5): `<resumed/>`, then what the
    /// client has not acknowledged, then what waited meanwhile.
    async fn attach(&mut self, conn: &mut Conn) -> Result<(), ConnError> {
        self.keepalive = Self::keepalive(self.ctx);
        self.ping_id = None;
        // As for an <a/>: what the `h` of <resumed/> counts is committed before the client
        // is told.
        self.ctx.core.settle().await;
        let Some(m) = self.sm.as_mut() else {
            return Err(ConnError::stream(SEC::InternalServerError, "not managed"));
        };
        // The resuming client's `h` acknowledged what the receipts wait for, perhaps.
        m.release_receipts();
        let Some(r) = m.resume.as_ref() else {
            return Err(ConnError::stream(SEC::InternalServerError, "not resumable"));
        };
        let resumed = sm::resumed(&r.id, m.counters.inbound());
        match self.resumed_in_sasl2.take() {
            None => conn.queue(&rookery_proto::stream::to_bytes(&resumed)),
            Some(s) => {
                // XEP-0198 inline in SASL2: the success names the resumed session's full JID
                // and re-establishes the stream; unlike after Bind2, no stream features
                // follow it (XEP-0198 "SASL2 and BIND2 interaction": MUST NOT).
                let Sasl2Resumed {
                    additional_data,
                    mut answers,
                } = *s;
                answers.push(resumed);
                let success =
                    sasl2::success(additional_data.as_deref(), self.jid.as_str(), answers);
                conn.queue(&rookery_proto::stream::to_bytes(&success));
            }
        }
        for b in m.counters.unacked_stanzas() {
            conn.queue(b);
        }
        m.requested = false;
        m.ack_due = None;
        let parked = std::mem::take(&mut m.parked);
        // Client state is per stream: a resumed stream starts active (XEP-0352 §4).
        let held = self.csi.set_active();
        for b in held.into_iter().chain(parked) {
            self.write_stanza(conn, b).await?;
        }
        self.batch_written(conn).await?;
        if let Some(m) = self.sm.as_mut() {
            if m.counters.unacked() > 0 && !m.requested {
                conn.queue(&rookery_proto::stream::to_bytes(&sm::request()));
                m.requested = true;
            }
        }
        conn.flush().await
    }

    /// The session ends for good: it is no longer resumable, it is unbound (presence
    /// unavailable goes out) and what it could not deliver is routed again ([`reroutable`]):
    /// a stanza written but not acknowledged with a `<delay/>` of when it was written
    /// (XEP-0198 §4), unless it has one already. `unsent` is what the last connection took
    /// but never delivered ([`Conn::take_unsent`]); a managed stream counts those among its
    /// unacknowledged stanzas already.
    async fn terminate(
        &mut self,
        handle: &SessionHandle,
        end: &mut SessionEnd,
        unsent: Vec<Bytes>,
    ) {
        // With the time each was written, for those that were.
        let mut undelivered: Vec<(Bytes, Option<i64>)> = Vec::new();
        // Let go only once what they wait for is routed again, below.
        let mut receipts = Vec::new();
        if let Some(mut m) = self.sm.take() {
            receipts = std::mem::take(&mut m.receipts);
            if let Some(r) = m.resume.take() {
                self.ctx.sm.remove(&r.id);
                if let Some(claim) = r.handoff.close() {
                    claim.refuse(sm::failed("item-not-found", None));
                }
            }
            let unacked = m.counters.take_unacked().into_iter();
            undelivered.extend(unacked.map(|u| (u.stanza, Some(u.sent_at))));
            undelivered.extend(std::mem::take(&mut m.parked).into_iter().map(|b| (b, None)));
        } else {
            undelivered.extend(unsent.into_iter().map(|b| (b, None)));
        }
        undelivered.extend(self.csi.take_held().into_iter().map(|b| (b, None)));
        self.ctx.core.unbind(self.jid, handle.id()).await;
        // Also the stanza that overflowed the queue, if that is why the session ends.
        undelivered.extend(end.rx.close_and_drain().into_iter().map(|b| (b, None)));
        let mut rerouted = 0usize;
        for (b, sent_at) in undelivered {
            let Some(mut stanza) = Stanza::from_serialized(&b) else {
                continue;
            };
            if !reroutable(&stanza, self.jid) {
                continue;
            }
            if let (Some(at), StanzaKind::Message(_)) = (sent_at, stanza.kind()) {
                if !stanza.element().has_child("delay", ns::DELAY) {
                    stanza.push_payload(delay(self.jid.domain(), at, None));
                }
            }
            rerouted += 1;
            self.ctx.core.reroute(stanza).await;
        }
        if rerouted > 0 {
            tracing::info!(rerouted, "undelivered stanzas routed again");
        }
        drop(receipts);
    }

    /// Holds `receipt` until the client acknowledges what was queued before it (XEP-0198);
    /// without stream management that is in the connection's hands already: let go.
    fn hold_receipt(&mut self, receipt: Receipt) {
        let held = self.csi.held();
        if let Some(m) = self.sm.as_mut() {
            m.hold_receipt(receipt, held + m.parked.len());
        }
    }

    /// Writes one stanza to the client, counting it and keeping a copy when the stream is
    /// managed (the copy is taken first, so a failed write loses nothing).
    async fn write_stanza(&mut self, conn: &mut Conn, b: Bytes) -> Result<(), ConnError> {
        if let Some(m) = self.sm.as_mut() {
            m.counters.sent(b.clone(), now_unix());
            if m.ack_due.is_none() && !m.requested {
                m.ack_due = Some(Instant::now() + ACK_DELAY);
            }
            let config = &self.ctx.config;
            if m.counters.unacked() > config.sm_max_unacked
                || m.counters.unacked_bytes() > config.sm_max_unacked_bytes
            {
                return Err(ConnError::stream(
                    SEC::PolicyViolation,
                    "too many unacknowledged stanzas",
                ));
            }
        }
        conn.queue(&b);
        Ok(())
    }

    /// Writes a stanza the session itself answers a client's with (an error reply to a
    /// malformed stanza, the legacy session result) and flushes: counted like every stanza
    /// the client gets (XEP-0198 §4), or the client's `h` would run ahead of ours.
    async fn answer(&mut self, conn: &mut Conn, el: &Element) -> Result<(), ConnError> {
        self.write_stanza(conn, rookery_proto::stream::to_bytes(el).into())
            .await?;
        conn.flush().await
    }

    /// Writes a nonza (stream management element) and flushes.
    async fn nonza(conn: &mut Conn, el: &Element) -> Result<(), ConnError> {
        conn.send(el).await
    }

    async fn sm_element(&mut self, conn: &mut Conn, el: Element) -> Result<(), ConnError> {
        match el.name() {
            "r" => {
                if let Some(m) = self.sm.as_ref() {
                    let h = m.counters.inbound();
                    // What the ack counts is kept: the stanzas were routed, and what the
                    // modules took on from them (the archive's rows) is committed.
                    self.ctx.core.settle().await;
                    Self::nonza(conn, &sm::ack(h)).await?;
                }
                Ok(())
            }
            "a" => {
                let Some(m) = self.sm.as_mut() else {
                    return Ok(());
                };
                let Ok(h) = sm::parse_h(&el) else {
                    return Err(ConnError::stream(
                        SEC::InvalidXml,
                        "<a/> needs a numeric 'h'",
                    ));
                };
                match m.counters.ack(h) {
                    Ok(()) => {
                        m.release_receipts();
                        m.requested = false;
                        m.ack_due = (m.counters.unacked() > 0).then(|| Instant::now() + ACK_DELAY);
                        Ok(())
                    }
                    Err(t) => {
                        tracing::info!(h = t.h, sent = t.sent, "client acked more than sent");
                        self.closing = Some(sm::too_high_error(t));
                        Err(ConnError::stream(
                            SEC::UndefinedCondition,
                            "handled-count-too-high",
                        ))
                    }
                }
            }
            "enable" => self.enable(conn, &el).await,
            // Resumption replaces binding; on a bound stream it is out of order.
            "resume" => Self::nonza(conn, &sm::failed("unexpected-request", None)).await,
            _ => Ok(()),
        }
    }

    /// `<enable/>` (§3). A second one (after `<enable/>`, Bind2's inline one or a
    /// resumption) ends the stream: "If a server receives a second <enable/> element it
    /// SHOULD respond with a stream error".
    async fn enable(&mut self, conn: &mut Conn, el: &Element) -> Result<(), ConnError> {
        if self.sm.is_some() {
            return Err(ConnError::stream(
                SEC::PolicyViolation,
                "stream management is already enabled",
            ));
        }
        let reply = self.enable_reply(el);
        // Outbound counting starts with the first stanza after <enabled/>.
        Self::nonza(conn, &reply).await
    }

    /// Enables stream management as `<enable/>` asks (§3; also inline in Bind2) and
    /// returns the answer, `<enabled/>` or `<failed/>`.
    fn enable_reply(&mut self, el: &Element) -> Element {
        let cfg = &self.ctx.config;
        if !cfg.stream_management {
            return sm::failed("feature-not-implemented", None);
        }
        let wants_resume = matches!(el.attr("resume"), Some("true" | "1"));
        let mut max = cfg.sm_resume_timeout_secs;
        if let Some(client_max) = el.attr("max").and_then(|v| v.trim().parse::<u64>().ok()) {
            if client_max > 0 {
                max = max.min(client_max);
            }
        }
        let resume = (wants_resume && max > 0).then(|| {
            let (id, handoff) = self.ctx.sm.register(self.jid);
            Resumable {
                id,
                max: Duration::from_secs(max),
                handoff,
            }
        });
        let reply = sm::enabled(resume.as_ref().map(|r| (r.id.as_str(), max)));
        self.sm = Some(Box::new(Managed {
            counters: Counters::new(),
            resume,
            requested: false,
            ack_due: None,
            parked: VecDeque::new(),
            receipts: Vec::new(),
        }));
        tracing::debug!(resumable = self.resumable(), "stream management enabled");
        reply
    }

    async fn csi_element(&mut self, conn: &mut Conn, el: &Element) -> Result<(), ConnError> {
        match el.name() {
            "inactive" => self.csi.set_inactive(),
            "active" => {
                let held = self.csi.set_active();
                if !held.is_empty() {
                    for b in held {
                        self.write_stanza(conn, b).await?;
                    }
                    self.batch_written(conn).await?;
                    conn.flush().await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// An answer to our XEP-0199 ping: swallowed (it is for the connection, not the router).
    fn is_ping_answer(&self, el: &Element) -> bool {
        el.is("iq", ns::CLIENT)
            && matches!(el.attr("type"), Some("result" | "error"))
            && self.ping_id.is_some()
            && el.attr("id") == self.ping_id.as_deref()
    }
}

impl Inbound for Client<'_> {
    /// Whatever `from` the client wrote is replaced by its full JID (RFC 6120 §8.1.2.1), so
    /// it cannot speak for anyone else.
    async fn element(&mut self, conn: &mut Conn, mut el: Element) -> Result<(), ConnError> {
        // Anything from the client answers a pending liveness check.
        self.keepalive.answered();
        if el.ns() == sm::NS {
            return self.sm_element(conn, el).await;
        }
        if el.ns() == csi::NS {
            return self.csi_element(conn, &el).await;
        }
        if el.ns() == ns::CLIENT && matches!(el.name(), "message" | "presence" | "iq") {
            if let Some(m) = self.sm.as_mut() {
                m.counters.received();
            }
        }
        if self.is_ping_answer(&el) {
            self.ping_id = None;
            return Ok(());
        }
        el.remove_attr("from");
        let mut stanza = match rookery_stream::conn::parse_stanza(el, self.jid.domain())? {
            Ok(s) => s,
            Err(reply) => {
                return match reply {
                    Some(r) => self.answer(conn, &r).await,
                    None => Ok(()),
                }
            }
        };
        stanza.set_from(self.jid.clone());
        if let Some(lang) = conn.lang() {
            stanza.default_lang(lang);
        }
        if is_legacy_session(self.ctx, &stanza) {
            return self.answer(conn, stanza.iq_result(None).element()).await;
        }
        self.ctx.core.route_from_session(stanza).await;
        Ok(())
    }

    async fn outbound(&mut self, conn: &mut Conn, item: Outbound) -> Result<(), ConnError> {
        let b = match item {
            Outbound::Bytes(b) => b,
            Outbound::Receipt(receipt) => {
                self.hold_receipt(receipt);
                return Ok(());
            }
        };
        if !self.csi.is_inactive() {
            return self.write_stanza(conn, b).await;
        }
        match self.csi.outbound(b, self.ctx.config.csi_max_held) {
            Decision::Held => Ok(()),
            Decision::Send(list) => {
                for b in list {
                    self.write_stanza(conn, b).await?;
                }
                Ok(())
            }
        }
    }

    async fn batch_written(&mut self, conn: &mut Conn) -> Result<(), ConnError> {
        let every = self.ctx.config.sm_ack_every.max(1) as usize;
        if let Some(m) = self.sm.as_mut() {
            if !m.requested && m.counters.unacked() >= every {
                conn.queue(&rookery_proto::stream::to_bytes(&sm::request()));
                m.requested = true;
                m.ack_due = None;
            }
        }
        Ok(())
    }

    fn deadline(&self, conn: &Conn) -> Option<Instant> {
        let mut d = self.keepalive.deadline(conn.last_read());
        if let Some(due) = self.sm.as_ref().and_then(|m| m.ack_due) {
            d = Some(d.map_or(due, |d: Instant| d.min(due)));
        }
        d
    }

    async fn timer(&mut self, conn: &mut Conn) -> Result<(), ConnError> {
        let now = Instant::now();
        let mut wrote = false;
        match self.keepalive.poll(conn.last_read(), now) {
            Due::Dead => {
                return Err(ConnError::stream(
                    SEC::ConnectionTimeout,
                    "no answer to the keepalive check",
                ));
            }
            Due::Check => {
                if let Some(m) = self.sm.as_mut() {
                    conn.queue(&rookery_proto::stream::to_bytes(&sm::request()));
                    m.requested = true;
                    m.ack_due = None;
                } else {
                    let id = format!("rk-ping-{}", self.keepalive.sent());
                    let iq = Stanza::iq(
                        IqType::Get,
                        &id,
                        Some(self.jid.domain_jid().into()),
                        Some(self.jid.clone()),
                        Element::new("ping", ns::PING),
                    );
                    conn.queue(&iq.to_bytes());
                    self.ping_id = Some(id);
                }
                wrote = true;
            }
            Due::Nothing => {}
        }
        if let Some(m) = self.sm.as_mut() {
            if m.ack_due.is_some_and(|d| now >= d) {
                m.ack_due = None;
                if !m.requested && m.counters.unacked() > 0 {
                    conn.queue(&rookery_proto::stream::to_bytes(&sm::request()));
                    m.requested = true;
                    wrote = true;
                }
            }
        }
        if wrote {
            conn.flush().await?;
        }
        Ok(())
    }

    async fn wake(&mut self) -> Result<(), ConnError> {
        let Some(m) = self.sm.as_mut() else {
            return std::future::pending().await;
        };
        let Some(r) = m.resume.as_mut() else {
            return std::future::pending().await;
        };
        let t = match r.handoff.recv().await {
            Claim::Resume(t) => t,
            // Only a hibernated session moves: this one has its connection.
            Claim::Move(mv) => {
                mv.refuse(HandoverRefusal::NotHandedOver);
                return Ok(());
            }
        };
        if let Some(failed) = refusal(&m.counters, t.h) {
            // Answered in `woken`, which runs to its end: this future must be cancel-safe,
            // and the settle before the answer could be cut off, and the connection with it.
            self.refused = Some(Box::new((t, failed)));
            return Ok(());
        }
        match accept(&mut m.counters, t) {
            Some((conn, sasl2)) => {
                self.taken_over = Some(conn);
                self.resumed_in_sasl2 = sasl2;
                Err(ConnError::Detached)
            }
            None => Ok(()),
        }
    }

    async fn woken(&mut self, _conn: &mut Conn) -> Result<(), ConnError> {
        if let Some(refused) = self.refused.take() {
            let (t, failed) = *refused;
            refuse(&self.ctx.core, t, failed).await;
        }
        Ok(())
    }

    fn write_timeout(&self) -> Duration {
        self.ping_timeout()
    }
}

/// The `<failed/>` that refuses a takeover whose `h` acknowledges more than was sent (§5),
/// or `None` when `h` is consistent.
fn refusal(counters: &Counters, h: u32) -> Option<Element> {
    let too_high = counters.check(h).err()?;
    Some(sm::too_high_failed(too_high, counters.inbound()))
}

/// Sends a takeover back with `failed`, once what its `h` counts is committed: as for `<a/>`
/// and `<resumed/>`, the client will not send those stanzas again.
async fn refuse(core: &rookery_core::Core, t: Takeover, failed: Element) {
    core.settle().await;
    let _ = t.reply.send(Verdict::Rejected {
        conn: t.conn,
        failed,
    });
}

/// Parks what comes for a session without a connection (`held` stanzas held back ahead of
/// the parked ones, `parked_bytes` the parked ones' bytes, kept); false when that makes it
/// hold more than `[c2s] sm_max_unacked` stanzas or `sm_max_unacked_bytes` (then it must
/// end).
fn park(
    ctx: &C2sContext,
    m: &mut Managed,
    held: usize,
    parked_bytes: &mut usize,
    item: Outbound,
) -> bool {
    match item {
        Outbound::Receipt(receipt) => m.hold_receipt(receipt, held + m.parked.len()),
        Outbound::Bytes(b) => {
            *parked_bytes += b.len();
            m.parked.push_back(b);
        }
    }
    m.parked.len() + m.counters.unacked() <= ctx.config.sm_max_unacked
        && *parked_bytes + m.counters.unacked_bytes() <= ctx.config.sm_max_unacked_bytes
}

/// Refuses another node's claim on this hibernated session (`mv`) whose `h` acknowledges
/// more than was sent, with what that node's client is told (its `<failed/>` is the one
/// [`refusal`] makes here, `inbound` its `h`), once what that `h` counts is committed (as
/// [`refuse`]).
async fn refuse_move(core: &rookery_core::Core, mv: sm::MoveOut, t: sm::TooHigh, inbound: u32) {
    core.settle().await;
    mv.refuse(HandoverRefusal::HandledCountTooHigh {
        h: t.h,
        sent: t.sent,
        inbound,
    });
}

/// Answers another node's claim on this hibernated session (`mv`), whose `h` fits
/// ([`refuse_move`] otherwise): the client's `h` is applied and what the session needs to
/// go on there ([`Moved`]) is sent, and the session is marked as moving (see
/// `Core::bind_remote`). Returns how many parked stanzas went with it, or `None` when it
/// stays (too large to hand over, or the asking node gave up).
fn hand_over(
    ctx: &C2sContext,
    jid: &Jid,
    m: &mut Managed,
    csi: &Csi,
    mv: sm::MoveOut,
    end: &SessionEnd,
) -> Option<usize> {
    let (previd, max) = m.resume.as_ref().map(|r| (r.id.clone(), r.max))?;
    // Its `h` fits (the caller checked).
    let _ = m.counters.ack(mv.h);
    m.release_receipts();
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    let moved = Moved {
        jid: jid.to_string(),
        previd,
        max_secs: max.as_secs(),
        inbound: m.counters.inbound(),
        sent: m.counters.sent_count(),
        unacked: m
            .counters
            .unacked_entries()
            .map(|u| (text(&u.stanza), u.sent_at))
            .collect(),
        pending: csi
            .held_stanzas()
            .chain(m.parked.iter())
            .map(text)
            .collect(),
        modules: ctx.core.session_states(jid),
    };
    // Plain strings and numbers: serializing cannot fail.
    let moved = serde_json::to_string(&moved).unwrap_or_default();
    if moved.len() > mv.max_bytes {
        tracing::info!(
            bytes = moved.len(),
            "hibernated session too large to hand over to another node"
        );
        mv.refuse(HandoverRefusal::NotHandedOver);
        return None;
    }
    end.kill.set_moving(true);
    if mv.reply.send(Ok(moved)).is_err() {
        end.kill.set_moving(false);
        return None;
    }
    tracing::info!("hibernated session handed over to another node");
    Some(m.parked.len())
}

/// After a handover: waits until the other node's session replaces this one in the
/// registry (true), parking what comes meanwhile, and refusing any other claim. False when
/// the session must end after all — it was closed (the other node gave up and said so), it
/// overflowed, or [`MOVE_GRACE`] passed: it still holds everything, and ends as an
/// unresumed session does.
async fn wait_for_move(
    ctx: &C2sContext,
    jid: &Jid,
    m: &mut Managed,
    held: usize,
    end: &mut SessionEnd,
    handoff: &Handoff,
) -> bool {
    let deadline = after(Instant::now(), MOVE_GRACE);
    let mut parked_bytes: usize = m.parked.iter().map(Bytes::len).sum();
    loop {
        tokio::select! {
            biased;
            _ = end.kill.fired() => {
                return ctx.core.session(jid).is_some_and(|h| h.is_remote());
            }
            claim = handoff.recv() => claim.refuse(sm::failed("item-not-found", None)),
            item = end.rx.recv() => match item {
                Some(item) => {
                    if !park(ctx, m, held, &mut parked_bytes, item) {
                        return false;
                    }
                }
                None => return false,
            },
            _ = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

/// Accepts a takeover whose `h` is consistent with what was sent (see [`refusal`]), applying
/// that ack (then [`Client::attach`] resends the rest).
fn accept(counters: &mut Counters, t: Takeover) -> Option<(Box<Conn>, Option<Box<Sasl2Resumed>>)> {
    let Takeover {
        conn,
        h,
        reply,
        sasl2,
    } = t;
    // The resuming connection may have given up waiting (its negotiation deadline): then
    // the connection is gone with it and the session goes on as it was.
    reply.send(Verdict::Accepted).ok()?;
    let _ = counters.ack(h);
    Some((conn, sasl2))
}

/// Tells the modules that a message waits in a hibernated session (XEP-0357 push wakes the
/// device up); other stanzas are not worth a wake-up.
async fn held_message(ctx: &C2sContext, jid: &Jid, b: &Bytes) {
    let Some(message) = Stanza::from_serialized(b) else {
        return;
    };
    if matches!(message.kind(), StanzaKind::Message(_)) {
        let event = rookery_core::Event::MessageHeld {
            account: jid.to_bare(),
            session: Some(jid.clone()),
            message,
        };
        ctx.core.emit(&event).await;
    }
}

/// Closes a connection the session no longer uses without holding the session up.
/// Whether an undelivered stanza of the session `jid` is routed again when the session ends:
/// messages and IQ requests, except copies, which the account's archive or its other
/// resources already have, and which routed again would reach them a second time (XEP-0198
/// §4 asks for the treatment of a stanza to an unavailable resource, not a duplicate): carbons
/// (XEP-0280, from the account's own bare JID) and archive query results (XEP-0313).
fn reroutable(stanza: &Stanza, jid: &Jid) -> bool {
    let el = stanza.element();
    match stanza.kind() {
        StanzaKind::Message(_) => {
            let carbon = stanza.from().is_some_and(|f| f.is_bare() && f.bare_eq(jid))
                && (el.has_child("sent", ns::CARBONS) || el.has_child("received", ns::CARBONS));
            !carbon && !el.has_child("result", ns::MAM)
        }
        StanzaKind::Iq(IqType::Get | IqType::Set) => true,
        _ => false,
    }
}

fn close_in_background(mut conn: Conn, error: Option<StreamError>) {
    tokio::spawn(
        async move {
            match error {
                Some(e) => conn.fail(&e).await,
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn.shutdown()).await;
                }
            }
        }
        .instrument(tracing::Span::current()),
    );
}

/// RFC 3921 session establishment, still sent by older clients: a no-op success.
fn is_legacy_session(ctx: &C2sContext, s: &Stanza) -> bool {
    s.kind() == StanzaKind::Iq(IqType::Set)
        && s.to().is_none_or(|t| ctx.core.is_local_domain(t.as_str()))
        && s.payload().is_some_and(|p| p.is("session", ns::SESSION))
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
