//! What crosses the bus, and its encoding.
//!
//! Two kinds of message (docs/clustering.md, "On the bus"):
//! - **control** ([`Control`], JSON on `rookery.<domain>.control`, every node subscribes):
//!   heartbeats, join requests, the session registry's changes (bound, unbound,
//!   availability) and snapshots, the component connections, "this account's cached data
//!   changed", and modules' notes to their peers. Small and rare next to stanzas, so readable beats compact;
//! - **handover** ([`HandoverRequest`], [`HandoverReply`], JSON, NATS request/reply on
//!   `rookery.<domain>.handover.<id>`): a node asks the one holding a hibernated XEP-0198
//!   session to hand it over;
//! - **stanza batches** (binary, on `rookery.<domain>.node.<id>`, acknowledged cumulatively on
//!   the reply subject each names, `node.rs`): the
//!   serialized stanzas for that node's sessions, each with the full JID of the session it is
//!   for (a message to a bare JID reaches each resource with the bare JID as `to`, so the
//!   bytes alone do not say which session takes them). A frame is
//!   `u16 jid length · jid · u32 stanza length · stanza`, big-endian.
//!
//! Everything read from the bus is checked: a truncated frame or a JID that does not parse
//! is a [`WireError`], never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rookery_core::HandoverRefusal;
use rookery_jid::Jid;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One session's entry in a registry snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The full JID.
    pub jid: String,
    /// When it was bound (milliseconds since the Unix epoch): of two sessions of one full JID
    /// on two nodes, the later bind wins (RFC 6120 §7.7.2.2, across nodes).
    pub at: u64,
    /// Its presence priority once available.
    pub priority: Option<i8>,
    /// Whether it enabled XEP-0280 carbons.
    #[serde(default)]
    pub carbons: bool,
}

/// A control message. `node` is the sender, `epoch` its start time (a restarted node has a
/// new one, so its old sessions are known to be gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Control {
    /// "I am alive".
    Heartbeat {
        /// Sender.
        node: String,
        /// Sender's epoch.
        epoch: u64,
    },
    /// "I (re)joined: everybody, send me your sessions" (answered with [`Control::Sessions`]).
    Hello {
        /// Sender.
        node: String,
        /// Sender's epoch.
        epoch: u64,
    },
    /// A session was bound on the sender.
    Bound {
        /// Sender.
        node: String,
        /// Sender's epoch.
        epoch: u64,
        /// The session.
        session: SessionInfo,
    },
    /// A session of the sender ended.
    Unbound {
        /// Sender.
        node: String,
        /// Sender's epoch.
        epoch: u64,
        /// Its full JID.
        jid: String,
    },
    /// A session of the sender changed availability.
    Available {
        /// Sender.
        node: String,
        /// Sender's epoch.
        epoch: u64,
        /// Its full JID.
        jid: String,
        /// `Some(priority)` available, `None` unavailable.
        priority: Option<i8>,
    },
    /// The sender committed a change to an account's roster, pending requests or block list:
    /// drop what is cached of it.
    Changed {
        /// Sender.
        node: String,
        /// Sender's epoch.
        epoch: u64,
        /// The bare JID.
        account: String,
    },
    /// A connection serving `domain` (an XEP-0114 component) attached to the sender (`up`)
    /// or left it.
    Route {
        /// Sender.
        node: String,
        /// Sender's epoch.
        epoch: u64,
        /// The component's domain.
        domain: String,
        /// Attached or left.
        up: bool,
    },
    /// A module's note to its peers (`Core::tell_peers`): one bus message reaches every
    /// node, which hands it to its modules in the order sent.
    Note {
        /// Sender.
        node: String,
        /// Sender's epoch.
        epoch: u64,
        /// Which module it is for.
        topic: String,
        /// What it says.
        body: String,
    },
    /// A session of the sender enabled (`on`) or disabled XEP-0280 carbons.
    Carbons {
        /// Sender.
        node: String,
        /// Sender's epoch.
        epoch: u64,
        /// Its full JID.
        jid: String,
        /// Enabled.
        on: bool,
    },
    /// End the session `jid` where it is bound (an operator's kick, an account removed
    /// through the sender): the node holding it closes it with this stream error; its
    /// `unbound` follows as for any session's end.
    Close {
        /// Sender.
        node: String,
        /// Sender's epoch.
        epoch: u64,
        /// The session's full JID.
        jid: String,
        /// The stream error's condition (RFC 6120 §4.9.3, by its element name).
        condition: String,
        /// Its text.
        text: Option<String>,
    },
    /// Part of the sender's complete list of sessions; the part with `last` set ends it, and
    /// the receiver drops what it held for the sender that the list did not name.
    Sessions {
        /// Sender.
        node: String,
        /// Sender's epoch.
        epoch: u64,
        /// The first part of a list.
        first: bool,
        /// The last part of a list.
        last: bool,
        /// The sessions of this part.
        sessions: Vec<SessionInfo>,
    },
}

impl Control {
    /// The sending node and its epoch.
    pub fn sender(&self) -> (&str, u64) {
        match self {
            Control::Heartbeat { node, epoch }
            | Control::Hello { node, epoch }
            | Control::Bound { node, epoch, .. }
            | Control::Unbound { node, epoch, .. }
            | Control::Available { node, epoch, .. }
            | Control::Changed { node, epoch, .. }
            | Control::Note { node, epoch, .. }
            | Control::Route { node, epoch, .. }
            | Control::Close { node, epoch, .. }
            | Control::Carbons { node, epoch, .. }
            | Control::Sessions { node, epoch, .. } => (node, *epoch),
        }
    }

    /// JSON.
    pub fn encode(&self) -> Bytes {
        to_json(self)
    }

    /// From JSON.
    pub fn decode(bytes: &[u8]) -> Result<Control, WireError> {
        from_json(bytes)
    }
}

/// A request to the node holding a hibernated session to hand it over (XEP-0198 resumption
/// on the sender; NATS request/reply on `rookery.<domain>.handover.<node>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverRequest {
    /// The authenticated user asking.
    pub user: String,
    /// The SM-ID named.
    pub previd: String,
    /// The client's `h`.
    pub h: u32,
}

/// The answer to a [`HandoverRequest`]: `{"t":"taken","session":…}`, the session's JSON
/// as its listener wrote it, or `{"t":"refused","reason":{"why":…}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", try_from = "ReplyFields")]
pub enum HandoverReply {
    /// Handed over: the session as its listener serialized it (JSON).
    Taken {
        /// What the asking node's listener reads, carried as it is: its stanzas are
        /// escaped once, by the listener, not a second time as a string in this reply.
        session: Box<RawValue>,
    },
    /// Not handed over.
    Refused {
        /// Why (absent from a node of an earlier version: not handed over).
        #[serde(default)]
        reason: RefusalReason,
    },
}

/// Why a node did not hand a hibernated session over (`rookery_core::HandoverRefusal` on
/// the bus).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum RefusalReason {
    /// The client's `h` acknowledges more than the session sent (XEP-0198 §4).
    HandledCountTooHigh {
        /// The client's `h`.
        h: u32,
        /// The stanzas the session sent.
        sent: u32,
        /// The stanzas it received from the client.
        inbound: u32,
    },
    /// Not held there, another user's, attached, claimed meanwhile, too large (and any
    /// reason a later version adds: serde's `other` is the last variant).
    #[default]
    #[serde(other)]
    NotHandedOver,
}

impl From<HandoverRefusal> for RefusalReason {
    fn from(r: HandoverRefusal) -> Self {
        match r {
            HandoverRefusal::NotHandedOver => RefusalReason::NotHandedOver,
            HandoverRefusal::HandledCountTooHigh { h, sent, inbound } => {
                RefusalReason::HandledCountTooHigh { h, sent, inbound }
            }
        }
    }
}

impl From<RefusalReason> for HandoverRefusal {
    fn from(r: RefusalReason) -> Self {
        match r {
            RefusalReason::NotHandedOver => HandoverRefusal::NotHandedOver,
            RefusalReason::HandledCountTooHigh { h, sent, inbound } => {
                HandoverRefusal::HandledCountTooHigh { h, sent, inbound }
            }
        }
    }
}

/// A [`HandoverReply`] as read: serde's internally tagged enums buffer their fields, which
/// a [`RawValue`] cannot be read from, so the reply is read as a plain struct.
#[derive(Deserialize)]
struct ReplyFields {
    t: ReplyKind,
    session: Option<Box<RawValue>>,
    #[serde(default)]
    reason: RefusalReason,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ReplyKind {
    Taken,
    Refused,
}

impl TryFrom<ReplyFields> for HandoverReply {
    type Error = String;

    fn try_from(f: ReplyFields) -> Result<Self, String> {
        match (f.t, f.session) {
            (ReplyKind::Taken, Some(session)) => Ok(HandoverReply::Taken {
                session: unquoted(session)?,
            }),
            (ReplyKind::Taken, None) => Err("a handover taken without its session".into()),
            (ReplyKind::Refused, _) => Ok(HandoverReply::Refused { reason: f.reason }),
        }
    }
}

/// A node of an earlier version sent the session's JSON as a JSON string: its text.
fn unquoted(session: Box<RawValue>) -> Result<Box<RawValue>, String> {
    if !session.get().starts_with('"') {
        return Ok(session);
    }
    serde_json::from_str::<String>(session.get())
        .and_then(RawValue::from_string)
        .map_err(|e| e.to_string())
}

/// JSON for a typed message of the bus.
fn to_json(value: &impl Serialize) -> Bytes {
    // Serializing plain strings and numbers cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// A typed message of the bus from JSON.
fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(bytes).map_err(|e| WireError::Control(e.to_string()))
}

impl HandoverRequest {
    /// JSON.
    pub fn encode(&self) -> Bytes {
        to_json(self)
    }

    /// From JSON.
    pub fn decode(bytes: &[u8]) -> Result<HandoverRequest, WireError> {
        from_json(bytes)
    }
}

impl HandoverReply {
    /// Handed over: `session`, its listener's JSON (checked, as what the asking node reads
    /// must be).
    pub fn taken(session: String) -> Result<HandoverReply, WireError> {
        let session =
            RawValue::from_string(session).map_err(|e| WireError::Control(e.to_string()))?;
        Ok(HandoverReply::Taken { session })
    }

    /// Not handed over, for `why`.
    pub fn refused(why: HandoverRefusal) -> HandoverReply {
        HandoverReply::Refused { reason: why.into() }
    }

    /// JSON.
    pub fn encode(&self) -> Bytes {
        to_json(self)
    }

    /// From JSON.
    pub fn decode(bytes: &[u8]) -> Result<HandoverReply, WireError> {
        from_json(bytes)
    }
}

/// A message from the bus that does not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// A control message (or handover request or reply) that is not one.
    #[error("bad control message: {0}")]
    Control(String),
    /// A stanza batch cut short.
    #[error("truncated stanza batch")]
    Truncated,
    /// A frame whose JID is not a JID.
    #[error("bad JID in stanza batch")]
    Jid,
}

/// Encodes stanzas for sessions of one node into one bus message.
pub fn encode_batch(frames: &[(Jid, Bytes)]) -> Bytes {
    let size: usize = frames
        .iter()
        .map(|(j, b)| 6 + j.as_str().len() + b.len())
        .sum();
    let mut out = BytesMut::with_capacity(size);
    for (jid, bytes) in frames {
        // A JID is at most 3 × 1023 bytes (RFC 7622 §3.1) and a stanza is bounded by the
        // stanza limit: both fit their length fields.
        out.put_u16(u16::try_from(jid.as_str().len()).unwrap_or(u16::MAX));
        out.put_slice(jid.as_str().as_bytes());
        out.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        out.put_slice(bytes);
    }
    out.freeze()
}

/// Decodes a stanza batch; the stanzas share the message's buffer.
pub fn decode_batch(mut payload: Bytes) -> Result<Vec<(Jid, Bytes)>, WireError> {
    let mut frames = Vec::new();
    while payload.has_remaining() {
        let jid_len = usize::from(payload.try_get_u16().map_err(|_| WireError::Truncated)?);
        if payload.remaining() < jid_len {
            return Err(WireError::Truncated);
        }
        let jid = payload.split_to(jid_len);
        let jid = std::str::from_utf8(&jid)
            .ok()
            .and_then(|s| Jid::parse(s).ok())
            .ok_or(WireError::Jid)?;
        let len = payload.try_get_u32().map_err(|_| WireError::Truncated)?;
        let len = usize::try_from(len).map_err(|_| WireError::Truncated)?;
        if payload.remaining() < len {
            return Err(WireError::Truncated);
        }
        frames.push((jid, payload.split_to(len)));
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_batch_round_trips() {
        let frames = vec![
            (
                Jid::parse("a@localhost/x").unwrap(),
                Bytes::from_static(b"<message to='a@localhost'/>"),
            ),
            (Jid::parse("b@localhost/y").unwrap(), Bytes::new()),
        ];
        assert_eq!(decode_batch(encode_batch(&frames)).unwrap(), frames);
    }

    #[test]
    fn every_truncation_of_a_batch_is_an_error_not_a_panic() {
        let frames = vec![(
            Jid::parse("a@localhost/x").unwrap(),
            Bytes::from_static(b"<presence/>"),
        )];
        let full = encode_batch(&frames);
        for cut in 1..full.len() {
            assert!(decode_batch(full.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut bad = BytesMut::new();
        bad.put_u16(3);
        bad.put_slice(b"@@@");
        bad.put_u32(0);
        assert_eq!(decode_batch(bad.freeze()), Err(WireError::Jid));
    }

    #[test]
    fn control_messages_are_tagged_json() {
        let c = Control::Available {
            node: "n1".into(),
            epoch: 7,
            jid: "a@localhost/x".into(),
            priority: Some(5),
        };
        let json = c.encode();
        assert!(std::str::from_utf8(&json)
            .unwrap()
            .contains("\"t\":\"available\""));
        assert_eq!(Control::decode(&json).unwrap(), c);
        assert_eq!(c.sender(), ("n1", 7));
        assert!(Control::decode(b"{\"t\":\"nope\"}").is_err());
    }

    #[test]
    fn handover_messages_round_trip() {
        let ask = HandoverRequest {
            user: "a@localhost".into(),
            previd: "0123".into(),
            h: 7,
        };
        assert_eq!(HandoverRequest::decode(&ask.encode()).unwrap(), ask);
        assert!(HandoverRequest::decode(b"{}").is_err());
    }

    /// The session's text, were `reply` a handover.
    fn session_of(reply: &HandoverReply) -> Option<&str> {
        match reply {
            HandoverReply::Taken { session } => Some(session.get()),
            HandoverReply::Refused { .. } => None,
        }
    }

    /// The reason, were `reply` a refusal.
    fn reason_of(reply: &HandoverReply) -> Option<RefusalReason> {
        match reply {
            HandoverReply::Refused { reason } => Some(*reason),
            HandoverReply::Taken { .. } => None,
        }
    }

    #[test]
    fn a_handed_over_session_is_carried_as_json_not_as_a_string_of_it() {
        let session = r#"{"unacked":[["<message><body>a \"b\"</body></message>",1]]}"#;
        let taken = HandoverReply::taken(session.to_string()).unwrap();
        let json = taken.encode();
        // Written once: the session's own escapes, no second layer.
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            format!(r#"{{"t":"taken","session":{session}}}"#)
        );
        let back = HandoverReply::decode(&json).unwrap();
        assert_eq!(session_of(&back), Some(session));
        // Not JSON: not sent as if it were.
        assert!(HandoverReply::taken("<session/>".into()).is_err());
        // A node of the previous version sends it as a string: read as the same session.
        let old = serde_json::json!({"t": "taken", "session": session}).to_string();
        let back = HandoverReply::decode(old.as_bytes()).unwrap();
        assert_eq!(session_of(&back), Some(session));
        assert!(HandoverReply::decode(br#"{"t":"taken"}"#).is_err());
    }

    #[test]
    fn a_refusal_says_why_and_reads_without_a_reason_from_an_earlier_version() {
        let why = HandoverRefusal::HandledCountTooHigh {
            h: 9,
            sent: 4,
            inbound: 2,
        };
        let refused = HandoverReply::refused(why);
        let back = HandoverReply::decode(&refused.encode()).unwrap();
        assert_eq!(reason_of(&back).map(HandoverRefusal::from), Some(why));
        let plain = HandoverReply::refused(HandoverRefusal::NotHandedOver);
        let back = HandoverReply::decode(&plain.encode()).unwrap();
        assert_eq!(reason_of(&back), Some(RefusalReason::NotHandedOver));
        // The previous version's refusal, and a reason a later one may add.
        for json in [
            r#"{"t":"refused"}"#,
            r#"{"t":"refused","reason":{"why":"something_new","x":1}}"#,
        ] {
            let back = HandoverReply::decode(json.as_bytes()).unwrap();
            assert_eq!(
                reason_of(&back),
                Some(RefusalReason::NotHandedOver),
                "{json}"
            );
        }
        // And the previous version reads a refusal with a reason as its refusal.
        #[derive(Debug, PartialEq, Deserialize)]
        #[serde(tag = "t", rename_all = "snake_case")]
        enum Previous {
            Taken { session: String },
            Refused,
        }
        let read: Previous = serde_json::from_slice(&refused.encode()).unwrap();
        assert_eq!(read, Previous::Refused);
    }
}
