//! XEP-0198 resumption asked of another node of a cluster.
//!
//! A hibernated session lives in the task of the node that held its connection, and its
//! queue cannot move (docs/clustering.md): a client that reconnects to another node and asks
//! to resume is answered `<failed/>` there. Left alone, the old session would go on
//! hibernating on its node — holding the messages the client had not acknowledged and those
//! that arrived since — until its resumption timeout (minutes), while the client, bound anew
//! on the other node, waits for them. So the node that refused tells its peers which session
//! the client gave up, and the one holding it ends it at once, as its timeout would:
//! unavailable presence goes out and what it held is routed again (to the client's new
//! session, or offline storage). Only the session's owner can end it this way: the note
//! names the authenticated user, and a node acts on it only for a session of that user.

use std::sync::Arc;

use async_trait::async_trait;

use rookery_core::{priority, Core, Declaration, Event, EventKind, Module};
use rookery_jid::BareJid;
use rookery_proto::{StreamError, StreamErrorCondition};

use crate::sm;

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

/// Ends the sessions whose resumption their owner asked of another node.
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
