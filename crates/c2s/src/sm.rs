//! XEP-0198 stream management (`urn:xmpp:sm:3`): the counters (§4), the resumption registry
//! (§5) and the wire elements.
//!
//! A resumable session keeps its `SessionHandle` registered with the core while no connection
//! is attached ("hibernation"): its task keeps draining the session queue into memory. A
//! `<resume/>` on a new, authenticated connection looks the SM-ID up in the [`Registry`] and
//! hands that connection to the session's task as a [`Takeover`]; the task checks `h`,
//! answers `<resumed/>`, resends what the client has not acknowledged and goes on with the
//! new connection. The old connection, if it is still open (a socket that merely went
//! silent), is closed. So a session's state always lives in one task, and resuming never
//! copies queues between tasks.

use std::collections::VecDeque;

use bytes::Bytes;
use dashmap::DashMap;
use rookery_core::HandoverRefusal;
use rookery_jid::{BareJid, Jid};
use rookery_proto::ns;
use rookery_stream::Conn;
use rookery_xml::Element;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify};

use crate::machine::Sasl2Resumed;

/// The XEP-0198 namespace, version 3.
pub use rookery_proto::ns::SM as NS;

/// `h` in an `<a/>` or `<resume/>` acknowledges more stanzas than were sent (§4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooHigh {
    /// The `h` the client sent.
    pub h: u32,
    /// The number of stanzas we sent (mod 2^32).
    pub sent: u32,
}

/// The counters of one managed stream. Every number is a sequence number mod 2^32 (§4: "h
/// wraps to zero after 2^32 - 1"), so all arithmetic wraps.
#[derive(Debug, Default)]
pub struct Counters {
    /// Stanzas received from the client since its `<enable/>`: the `h` we report.
    inbound: u32,
    /// Stanzas sent to the client since our `<enabled/>`.
    sent: u32,
    /// The last `h` the client acknowledged.
    acked: u32,
    /// Stanzas sent and not yet acknowledged, oldest first: `sent - acked` of them.
    unacked: VecDeque<Unacked>,
    /// Their bytes.
    unacked_bytes: usize,
}

/// A stanza sent to the client and not acknowledged yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unacked {
    /// The stanza as written.
    pub stanza: Bytes,
    /// When it was first written (Unix seconds): should the session end without an ack,
    /// the stanza is routed again with a `<delay/>` of this time (XEP-0198 §4, XEP-0203).
    pub sent_at: i64,
}

impl Counters {
    /// Counters starting at zero.
    pub fn new() -> Self {
        Counters::default()
    }

    /// Counters as if `inbound` stanzas had been received and `sent` sent and acknowledged
    /// (tests of the wrap-around).
    #[cfg(test)]
    fn starting_at(inbound: u32, sent: u32) -> Self {
        Counters {
            inbound,
            sent,
            acked: sent,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
        }
    }

    /// A stanza arrived from the client.
    pub fn received(&mut self) {
        self.inbound = self.inbound.wrapping_add(1);
    }

    /// The `h` to report.
    pub fn inbound(&self) -> u32 {
        self.inbound
    }

    /// The number of stanzas sent (mod 2^32).
    pub fn sent_count(&self) -> u32 {
        self.sent
    }

    /// A stanza was written to the client at `sent_at` (Unix seconds); a copy is kept until
    /// acknowledged.
    pub fn sent(&mut self, stanza: Bytes, sent_at: i64) {
        self.sent = self.sent.wrapping_add(1);
        self.unacked_bytes += stanza.len();
        self.unacked.push_back(Unacked { stanza, sent_at });
    }

    /// Stanzas sent and not acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// The bytes of the stanzas sent and not acknowledged.
    pub fn unacked_bytes(&self) -> usize {
        self.unacked_bytes
    }

    /// How many stanzas `h` newly acknowledges; an `h` behind the last one (a reordered or
    /// repeated ack) acknowledges none.
    pub fn check(&self, h: u32) -> Result<usize, TooHigh> {
        let newly = h.wrapping_sub(self.acked) as usize;
        if newly <= self.unacked.len() {
            return Ok(newly);
        }
        // Behind the last ack by less than half the sequence space: stale, not too high.
        if self.acked.wrapping_sub(h) < (1 << 31) {
            return Ok(0);
        }
        Err(TooHigh { h, sent: self.sent })
    }

    /// Applies an acknowledgement: the stanzas up to `h` are forgotten.
    pub fn ack(&mut self, h: u32) -> Result<(), TooHigh> {
        let newly = self.check(h)?;
        if newly > 0 {
            for u in self.unacked.drain(..newly) {
                self.unacked_bytes -= u.stanza.len();
            }
            self.acked = h;
            if self.unacked.is_empty() && self.unacked.capacity() > 32 {
                // Keep an idle session small after a burst.
                self.unacked = VecDeque::new();
            }
        }
        Ok(())
    }

    /// The unacknowledged stanzas, oldest first (to resend after resumption).
    pub fn unacked_stanzas(&self) -> impl Iterator<Item = &Bytes> {
        self.unacked.iter().map(|u| &u.stanza)
    }

    /// The unacknowledged stanzas with when each was written, oldest first (what a session
    /// moving to another node takes along).
    pub fn unacked_entries(&self) -> impl Iterator<Item = &Unacked> {
        self.unacked.iter()
    }

    /// The counters of a session that moved here from another node: `inbound` received,
    /// `sent` sent, of which `unacked` (the last ones) are not acknowledged.
    pub fn restore(inbound: u32, sent: u32, unacked: VecDeque<Unacked>) -> Self {
        let pending = u32::try_from(unacked.len()).unwrap_or(u32::MAX);
        Counters {
            inbound,
            sent,
            acked: sent.wrapping_sub(pending),
            unacked_bytes: unacked.iter().map(|u| u.stanza.len()).sum(),
            unacked,
        }
    }

    /// Takes the unacknowledged stanzas out (the session ends: they are undeliverable).
    pub fn take_unacked(&mut self) -> VecDeque<Unacked> {
        self.unacked_bytes = 0;
        std::mem::take(&mut self.unacked)
    }
}

/// A connection asking to take a hibernating (or silently dead) session over.
pub struct Takeover {
    /// The new connection, authenticated, post-SASL stream open, `<resume/>` read.
    pub conn: Box<Conn>,
    /// The client's `h` (required: §5 "MUST include an 'h' attribute").
    pub h: u32,
    /// The session's answer.
    pub reply: oneshot::Sender<Verdict>,
    /// Set when `<resume/>` came inline in SASL2: `<resumed/>` goes inside its `<success/>`.
    pub sasl2: Option<Box<Sasl2Resumed>>,
}

/// Another node of a cluster asking for the hibernated session, whose client resumed there
/// (see [`crate::elsewhere`]).
pub struct MoveOut {
    /// The client's `h`.
    pub h: u32,
    /// The most the answer may take (what the bus carries): a session with more to hand
    /// over stays, and ends as before.
    pub max_bytes: usize,
    /// The session's answer: what the other node needs to go on with it (a serialized
    /// [`crate::elsewhere::Moved`]), or why not.
    pub reply: oneshot::Sender<Result<String, HandoverRefusal>>,
}

/// What a resumable session's task is asked for.
pub enum Claim {
    /// A connection here resumes it.
    Resume(Takeover),
    /// Another node takes it over.
    Move(MoveOut),
}

impl From<Takeover> for Claim {
    fn from(t: Takeover) -> Claim {
        Claim::Resume(t)
    }
}

impl From<MoveOut> for Claim {
    fn from(m: MoveOut) -> Claim {
        Claim::Move(m)
    }
}

impl MoveOut {
    /// Refuses the move for `why`: the asking node answers its client `<failed/>`.
    pub fn refuse(self, why: HandoverRefusal) {
        let _ = self.reply.send(Err(why));
    }
}

impl Claim {
    /// Refuses the claim: a connection gets `failed`, another node a refusal.
    pub fn refuse(self, failed: Element) {
        match self {
            Claim::Resume(t) => {
                let _ = t.reply.send(Verdict::Rejected {
                    conn: t.conn,
                    failed,
                });
            }
            Claim::Move(m) => m.refuse(HandoverRefusal::NotHandedOver),
        }
    }
}

/// The session's answer to a [`Takeover`].
pub enum Verdict {
    /// The session now runs on the new connection (it sent `<resumed/>`).
    Accepted,
    /// Refused: the new connection gets its connection back and sends `failed`, then the
    /// client may bind a resource instead (§5).
    Rejected {
        /// The connection, returned.
        conn: Box<Conn>,
        /// The `<failed/>` element to send.
        failed: Element,
    },
}

/// Where a [`Claim`] waits for the session's task: one slot and a wake-up. (Far smaller than a
/// channel, and a resumable session keeps one for its whole life.)
#[derive(Default)]
pub struct Handoff {
    slot: Mutex<HandoffState>,
    notify: Notify,
}

#[derive(Default)]
struct HandoffState {
    pending: Option<Claim>,
    closed: bool,
}

impl Handoff {
    fn state(&self) -> std::sync::MutexGuard<'_, HandoffState> {
        // A panic while holding this lock leaves plain data behind: keep using it.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leaves `t` for the session; gives it back with the `<failed/>` condition when the
    /// session is gone or another claim is already waiting (so a client resuming here and
    /// on another node at once gets the session once).
    fn offer<T: Into<Claim>>(&self, t: T) -> Result<(), (T, &'static str)> {
        let mut st = self.state();
        if st.closed {
            return Err((t, "item-not-found"));
        }
        if st.pending.is_some() {
            return Err((t, "unexpected-request"));
        }
        st.pending = Some(t.into());
        drop(st);
        self.notify.notify_one();
        Ok(())
    }

    /// The next claim. Cancel-safe: a claim stays in the slot until taken.
    pub async fn recv(&self) -> Claim {
        loop {
            let notified = self.notify.notified();
            if let Some(t) = self.state().pending.take() {
                return t;
            }
            notified.await;
        }
    }

    /// No more claims; returns one that was waiting, to be refused.
    pub fn close(&self) -> Option<Claim> {
        let mut st = self.state();
        st.closed = true;
        st.pending.take()
    }
}

struct Slot {
    /// The session's full JID (its bare JID owns the SM-ID).
    jid: Jid,
    handoff: Arc<Handoff>,
}

/// How many hex digits an SM-ID has (128 random bits, [`Registry::register`]).
const ID_DIGITS: usize = 32;

/// Whether `id` is spelled as this server's SM-IDs are (any server of a cluster).
pub fn is_id(id: &str) -> bool {
    id.len() == ID_DIGITS && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resumable sessions by SM-ID.
#[derive(Default)]
pub struct Registry {
    slots: DashMap<String, Slot>,
}

impl Registry {
    /// Registers the resumable session `jid` that moved here from another node under the
    /// SM-ID it had there (so that its client can resume it again, here or elsewhere).
    pub fn register_as(&self, id: &str, jid: &Jid) -> Arc<Handoff> {
        let handoff = Arc::new(Handoff::default());
        self.slots.insert(
            id.to_string(),
            Slot {
                jid: jid.clone(),
                handoff: handoff.clone(),
            },
        );
        handoff
    }

    /// Registers the resumable session `jid`; returns its fresh SM-ID and where claims
    /// arrive.
    pub fn register(&self, jid: &Jid) -> (String, Arc<Handoff>) {
        let handoff = Arc::new(Handoff::default());
        loop {
            // 128 random bits: unguessable, and never reused while the server runs.
            let id = format!("{:0w$x}", rand::random::<u128>(), w = ID_DIGITS);
            if let dashmap::Entry::Vacant(v) = self.slots.entry(id.clone()) {
                v.insert(Slot {
                    jid: jid.clone(),
                    handoff: handoff.clone(),
                });
                return (id, handoff);
            }
        }
    }

    /// Forgets a session.
    pub fn remove(&self, id: &str) {
        self.slots.remove(id);
    }

    /// Number of resumable sessions (connected or not).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no session is resumable.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Hands `takeover` to the session `id` if `user` owns it. On failure the claim comes
    /// back with the `<failed/>` condition: `item-not-found` for an unknown SM-ID or another
    /// user's (a client learns nothing about other users' sessions).
    pub fn offer<T: Into<Claim>>(
        &self,
        id: &str,
        user: &BareJid,
        takeover: T,
    ) -> Result<(), (T, &'static str)> {
        let Some(handoff) = self.owned(id, user).map(|slot| slot.handoff.clone()) else {
            return Err((takeover, "item-not-found"));
        };
        handoff.offer(takeover)
    }

    /// The full JID of the resumable session `id` if `user` owns it.
    pub fn holder(&self, id: &str, user: &BareJid) -> Option<Jid> {
        self.owned(id, user).map(|slot| slot.jid.clone())
    }

    /// The slot of `id` if `user` owns it.
    fn owned(
        &self,
        id: &str,
        user: &BareJid,
    ) -> Option<dashmap::mapref::one::Ref<'_, String, Slot>> {
        self.slots
            .get(id)
            .filter(|slot| slot.jid.bare_str() == user.as_str())
    }
}

/// `<enabled/>` (§3), with `id` and `max` when the session is resumable.
pub fn enabled(resume: Option<(&str, u64)>) -> Element {
    let mut el = Element::new("enabled", NS);
    if let Some((id, max)) = resume {
        el.set_attr("id", id);
        el.set_attr("resume", "true");
        el.set_attr("max", max.to_string());
    }
    el
}

/// `<failed/>` with a stanza error condition (§6), and the `h` we handled when known.
pub fn failed(condition: &str, h: Option<u32>) -> Element {
    let mut el = Element::new("failed", NS).with_child(Element::new(condition, ns::STANZAS));
    if let Some(h) = h {
        el.set_attr("h", h.to_string());
    }
    el
}

/// The `<failed/>` refusing a resumption whose `h` acknowledges more than was sent (§4, §5):
/// `undefined-condition` with `<handled-count-too-high/>`, and the `h` of what the session
/// received (`inbound`). One answer whether the session was held here or on another node.
pub fn too_high_failed(t: TooHigh, inbound: u32) -> Element {
    failed("undefined-condition", Some(inbound)).with_child(
        Element::new("handled-count-too-high", NS)
            .with_attr("h", t.h.to_string())
            .with_attr("send-count", t.sent.to_string()),
    )
}

/// `<a h='...'/>`.
pub fn ack(h: u32) -> Element {
    Element::new("a", NS).with_attr("h", h.to_string())
}

/// `<r/>`.
pub fn request() -> Element {
    Element::new("r", NS)
}

/// `<resumed previd h/>` (§5).
pub fn resumed(previd: &str, h: u32) -> Element {
    Element::new("resumed", NS)
        .with_attr("previd", previd)
        .with_attr("h", h.to_string())
}

/// The stream error for an `h` higher than what was sent (§4): `undefined-condition` with
/// `<handled-count-too-high/>`, as bytes (our `StreamError` has no application condition).
pub fn too_high_error(t: TooHigh) -> Vec<u8> {
    let el = Element::new("error", ns::STREAM)
        .with_child(Element::new("undefined-condition", ns::STREAM_ERRORS))
        .with_child(
            Element::new("handled-count-too-high", NS)
                .with_attr("h", t.h.to_string())
                .with_attr("send-count", t.sent.to_string()),
        );
    let mut out = rookery_proto::stream::to_bytes(&el);
    out.extend_from_slice(rookery_proto::stream::CLOSE);
    out
}

/// An `h` attribute missing or not an unsigned 32-bit integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("'h' is missing or not a 32-bit unsigned integer")]
pub struct BadH;

/// Parses the `h` attribute `<a/>` and `<resume/>` must carry (an unsigned 32-bit integer);
/// absent or not a number is [`BadH`].
pub fn parse_h(el: &Element) -> Result<u32, BadH> {
    el.attr("h")
        .ok_or(BadH)?
        .trim()
        .parse::<u32>()
        .map_err(|_| BadH)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn acks_free_the_queue() {
        let mut c = Counters::new();
        for s in ["<message/>", "<presence/>", "<iq/>"] {
            c.sent(b(s), 0);
        }
        assert_eq!(c.unacked(), 3);
        c.ack(2).unwrap();
        assert_eq!(c.unacked(), 1);
        assert_eq!(c.unacked_stanzas().next().unwrap(), &b("<iq/>"));
        // A repeated (stale) ack changes nothing.
        c.ack(1).unwrap();
        c.ack(2).unwrap();
        assert_eq!(c.unacked(), 1);
        c.ack(3).unwrap();
        assert_eq!(c.unacked(), 0);
    }

    #[test]
    fn too_high_is_reported_with_the_send_count() {
        let mut c = Counters::new();
        c.sent(b("<message/>"), 0);
        assert_eq!(c.ack(5), Err(TooHigh { h: 5, sent: 1 }));
        assert_eq!(c.unacked(), 1);
    }

    #[test]
    fn counters_wrap_at_2_pow_32() {
        let mut c = Counters::starting_at(u32::MAX - 1, u32::MAX - 1);
        c.received();
        assert_eq!(c.inbound(), u32::MAX);
        c.received();
        assert_eq!(c.inbound(), 0);
        c.received();
        assert_eq!(c.inbound(), 1);

        // Four stanzas sent across the wrap: sequence numbers MAX, 0, 1, 2.
        for s in ["<a/>", "<b/>", "<c/>", "<d/>"] {
            c.sent(b(s), 0);
        }
        assert_eq!(c.sent_count(), 2);
        assert_eq!(c.check(u32::MAX), Ok(1));
        assert_eq!(c.check(1), Ok(3));
        c.ack(0).unwrap();
        assert_eq!(c.unacked(), 2);
        assert_eq!(c.unacked_stanzas().next().unwrap(), &b("<c/>"));
        // Stale across the wrap: an ack for MAX after one for 0.
        c.ack(u32::MAX).unwrap();
        assert_eq!(c.unacked(), 2);
        assert!(c.ack(3).is_err());
        c.ack(2).unwrap();
        assert_eq!(c.unacked(), 0);
    }

    #[test]
    fn counters_restored_on_another_node_go_on_as_before() {
        let mut c = Counters::new();
        c.received();
        for s in ["<a/>", "<b/>", "<c/>"] {
            c.sent(b(s), 7);
        }
        c.ack(1).unwrap();
        let unacked = c.unacked_entries().cloned().collect();
        let mut r = Counters::restore(c.inbound(), c.sent_count(), unacked);
        assert_eq!((r.inbound(), r.sent_count(), r.unacked()), (1, 3, 2));
        assert_eq!(r.unacked_bytes(), c.unacked_bytes());
        assert_eq!(r.check(1), Ok(0));
        assert!(r.check(4).is_err());
        r.ack(2).unwrap();
        assert_eq!(r.unacked_stanzas().next().unwrap(), &b("<c/>"));
    }

    #[test]
    fn a_moved_session_keeps_its_id() {
        let reg = Registry::default();
        let jid = Jid::parse("alice@localhost/phone").unwrap();
        let alice = BareJid::parse("alice@localhost").unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        let _handoff = reg.register_as(id, &jid);
        assert_eq!(reg.holder(id, &alice), Some(jid));
    }

    #[test]
    fn elements() {
        assert_eq!(
            enabled(Some(("abc", 300))).to_string(),
            "<enabled xmlns=\"urn:xmpp:sm:3\" id=\"abc\" resume=\"true\" max=\"300\"/>"
        );
        assert_eq!(
            failed("item-not-found", Some(3)).to_string(),
            "<failed xmlns=\"urn:xmpp:sm:3\" h=\"3\"><item-not-found \
             xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></failed>"
        );
        let e = String::from_utf8(too_high_error(TooHigh { h: 5, sent: 2 })).unwrap();
        assert!(e.contains("handled-count-too-high"), "{e}");
        assert!(e.starts_with("<stream:error>"), "{e}");
    }

    #[test]
    fn the_holder_of_an_id_is_told_to_its_owner_only() {
        let reg = Registry::default();
        let jid = Jid::parse("alice@localhost/phone").unwrap();
        let (id, _handoff) = reg.register(&jid);
        assert!(is_id(&id), "{id}");
        assert!(!is_id("0123") && !is_id(&format!("{id}0")) && !is_id(&"g".repeat(32)));
        let alice = BareJid::parse("alice@localhost").unwrap();
        let bob = BareJid::parse("bob@localhost").unwrap();
        assert_eq!(reg.holder(&id, &alice), Some(jid));
        assert_eq!(reg.holder(&id, &bob), None);
        assert_eq!(reg.holder("0123456789abcdef0123456789abcdef", &alice), None);
        reg.remove(&id);
        assert_eq!(reg.holder(&id, &alice), None);
    }
}
