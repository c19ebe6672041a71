//! XEP-0198 resumption asked of another node of a cluster (docs/clustering.md, "Resumption
//! on another node").
//!
//! A hibernated session lives in the task of the node that held its connection. When its
//! client reconnects to another node and asks to resume, that node asks the nodes where the
//! user has sessions to hand it over ([`take_over`], `Core::take_over`): the one holding the
//! SM-ID, for a hibernated session of that user only, answers with what the session needs to
//! go on unchanged — a [`Moved`] — and waits for the new node to bind the full JID (its task
//! then routes what arrived meanwhile to the new node, and ends without unavailable presence
//! and without routing again what it handed over). The new node binds the JID, answers
//! `<resumed/>` and resends the queue, as a local resumption does.
//!
//! If that fails (no node answers in time, the session is attached, the bus is down) the
//! client is answered `<failed/>`, and the node that refused tells its peers which session
//! the client gave up: the one holding it ends it at once, as its timeout would —
//! unavailable presence goes out and what it held is routed again (to the client's new
//! session, or offline storage). A session handed over whose new node never binds it ends
//! the same way after [`MOVE_GRACE`]. Only the session's owner can end or move it: the
//! requests name the authenticated user, and a node acts only for a session of that user.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use rookery_core::cluster::HANDOVER_TIMEOUT;
use rookery_core::{
    priority, Core, Declaration, Event, EventKind, HandoverAsk, HandoverRefusal, Module,
    SessionSource,
};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{StreamError, StreamErrorCondition};

use crate::sm::{self, MoveOut, Unacked};

/// How long a session handed over waits for its new node to bind it before it ends as if it
/// had not been resumed: well past what that node waits for the answer
/// ([`HANDOVER_TIMEOUT`]), so that a late answer is never taken on both nodes.
pub const MOVE_GRACE: Duration = Duration::from_secs(3 * HANDOVER_TIMEOUT.as_secs());

/// What a hibernated session hands over to the node where its client resumed it: all a
/// resumed session needs to go on as if resumed here (stanzas as our serialization, which is
/// UTF-8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    /// The full JID.
    pub jid: String,
    /// The SM-ID, kept: the client may resume again later.
    pub previd: String,
    /// The resumption timeout it was granted, in seconds.
    pub max_secs: u64,
    /// Stanzas received from the client (the `h` of `<resumed/>`).
    pub inbound: u32,
    /// Stanzas sent to it.
    pub sent: u32,
    /// Those of them not acknowledged (after the client's `h`), with when each was written.
    pub unacked: Vec<(String, i64)>,
    /// Stanzas not written yet: held back (XEP-0352) and queued while hibernating.
    pub pending: Vec<String>,
    /// What the modules keep for the session (`Core::session_states`).
    pub modules: Vec<(String, String)>,
}

impl Moved {
    /// Takes out the unacknowledged stanzas as the counters keep them (each stanza's text
    /// becomes its bytes without a copy).
    pub fn take_unacked(&mut self) -> VecDeque<Unacked> {
        std::mem::take(&mut self.unacked)
            .into_iter()
            .map(|(s, sent_at)| Unacked {
                stanza: Bytes::from(s),
                sent_at,
            })
            .collect()
    }
}

/// Asks the other nodes of a cluster to hand over the hibernated session `previd` of `user`
/// whose client asked here to resume it with `h`; else why none did (then the caller
/// answers `<failed/>` and calls [`tell_peers`]). A made-up id does not cross the bus, and
/// an answer for another account's JID is not taken.
pub async fn take_over(
    core: &Core,
    user: &BareJid,
    previd: &str,
    h: u32,
) -> Result<(Jid, Moved), HandoverRefusal> {
    if !sm::is_id(previd) {
        return Err(HandoverRefusal::NotHandedOver);
    }
    let ask = HandoverAsk {
        user: user.clone(),
        previd: previd.to_string(),
        h,
    };
    let text = core.take_over(ask).await?;
    let moved: Moved = serde_json::from_str(&text).map_err(|e| {
        tracing::warn!(error = %e, "unreadable session handed over");
        HandoverRefusal::NotHandedOver
    })?;
    Jid::parse(&moved.jid)
        .ok()
        .filter(|j| j.is_full() && j.bare_str() == user.as_str() && moved.previd == previd)
        .map(|jid| (jid, moved))
        .ok_or(HandoverRefusal::NotHandedOver)
}

/// The `<failed/>` for a resumption no node handed over: as a refusal by the session here
/// would be ([`sm::too_high_failed`]) when the node holding it found the client's `h` too
/// high, else `item-not-found` (nobody holds it, as far as this node can tell).
pub fn failed(why: HandoverRefusal) -> rookery_xml::Element {
    match why {
        HandoverRefusal::HandledCountTooHigh { h, sent, inbound } => {
            sm::too_high_failed(sm::TooHigh { h, sent }, inbound)
        }
        HandoverRefusal::NotHandedOver => sm::failed("item-not-found", None),
    }
}

/// The cluster note's topic.
const TOPIC: &str = "c2s-resume";

/// Tells the other nodes that `user` asked here to resume `previd`, which this node does not
/// hold. Nothing without a cluster; nothing for an id not spelled as ours ([`sm::is_id`]): a
/// client's made-up id does not cross the bus.
pub fn tell_peers(core: &Core, user: &BareJid, previd: &str) {
    if sm::is_id(previd) {
        core.tell_peers(TOPIC, || format!("{user} {previd}"));
    }
}

/// Ends the sessions whose resumption their owner asked of another node, and hands them
/// over to a node that asks ([`SessionSource`]).
pub struct ResumedElsewhere {
    sm: Arc<sm::Registry>,
}

impl ResumedElsewhere {
    /// Acts on the sessions of `sm` (the client listener's registry).
    pub fn new(sm: Arc<sm::Registry>) -> ResumedElsewhere {
        ResumedElsewhere { sm }
    }
}

#[async_trait]
impl Module for ResumedElsewhere {
    fn name(&self) -> &'static str {
        "c2s-resume-elsewhere"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            events: vec![(EventKind::ClusterNote, priority::DEFAULT)],
            ..Declaration::default()
        }
    }

    async fn event(&self, core: &Arc<Core>, event: &Event) {
        let Event::ClusterNote { topic, body } = event else {
            return;
        };
        if topic != TOPIC {
            return;
        }
        let Some((user, previd)) = body
            .split_once(' ')
            .and_then(|(u, id)| Some((BareJid::parse(u).ok()?, id)))
        else {
            return tracing::warn!("unreadable resumption note from a peer");
        };
        let Some(jid) = self.sm.holder(previd, &user) else {
            return;
        };
        if let Some(session) = core.session(&jid).filter(|s| !s.is_remote()) {
            tracing::info!(%jid, "session resumed on another node: ended here");
            session.close(StreamError::with_text(
                StreamErrorCondition::Conflict,
                "the client resumed on another node",
            ));
        }
    }
}

#[async_trait]
impl SessionSource for ResumedElsewhere {
    /// Hands the claim to the session's task, which answers only while it hibernates.
    async fn hand_over(
        &self,
        ask: &HandoverAsk,
        max_bytes: usize,
    ) -> Result<String, HandoverRefusal> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let claim = MoveOut {
            h: ask.h,
            max_bytes,
            reply,
        };
        if let Err((claim, _)) = self.sm.offer(&ask.previd, &ask.user, claim) {
            claim.refuse(HandoverRefusal::NotHandedOver);
            return Err(HandoverRefusal::NotHandedOver);
        }
        answer.await.unwrap_or(Err(HandoverRefusal::NotHandedOver))
    }
}
