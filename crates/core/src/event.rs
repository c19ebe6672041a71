//! Typed events: facts one module establishes and others act on (design.md "Extensions are
//! modules"), instead of sleeping until another module has probably done its part or polling
//! its state.
//!
//! A module subscribes in its [`crate::Declaration`] (`events`, with a priority per kind, as
//! for hooks); [`crate::Core::emit`] calls the subscribers one after the other, in priority
//! order, and awaits each. An emitter emits only once the fact is committed (stored, routed),
//! so a subscriber reads the state the event speaks of.

use rookery_jid::{BareJid, Jid};
use rookery_proto::Stanza;

/// A session lifecycle event.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// A resource was bound.
    Bound(Jid),
    /// A session ended (for any reason, including a dead socket, or being replaced by a new
    /// session binding the same full JID: then `Closed` comes right before that `Bound`).
    Closed(Jid),
    /// A session went on on another node of a cluster (XEP-0198 resumption there,
    /// [`crate::Module::session_state`] carried what the modules kept for it): drop what is
    /// kept for it here and tell nobody, it did not end.
    Moved(Jid),
}

/// A session of another node of a cluster that ended with its node (see
/// [`Event::SessionsLost`]).
#[derive(Debug, Clone)]
pub struct LostSession {
    /// Its full JID.
    pub jid: Jid,
    /// Whether it had sent available presence (its node replicated that).
    pub available: bool,
}

/// Something that happened, for the modules that subscribed to its [`EventKind`].
#[derive(Debug, Clone)]
pub enum Event {
    /// A session was bound or ended (emitted by the core).
    Session(SessionEvent),
    /// `owner` approved `contact`'s presence subscription (RFC 6121 §3.1.4): emitted by the
    /// IM layer after its roster recorded the approval and the `subscribed` was routed.
    /// `contact` may be an account on another server.
    SubscriptionApproved {
        /// The local account that approved.
        owner: BareJid,
        /// The account now subscribed to `owner`'s presence.
        contact: BareJid,
    },
    /// `owner`'s roster item for `contact` changed — its presence subscription state or its
    /// groups — or was removed: emitted by the IM layer once the change is stored and
    /// pushed. Access rules that follow the roster are checked again (XEP-0163 §8.1: a PEP
    /// subscriber that lost access loses its subscription).
    RosterItemChanged {
        /// The local account whose roster changed.
        owner: BareJid,
        /// The contact the item is about.
        contact: BareJid,
    },
    /// The XEP-0115 capabilities of an available resource are known: emitted by the IM
    /// layer after it processed the resource's available presence, if its `node#ver` was
    /// known, else once the disco#info answer was verified and cached. Not emitted for a
    /// presence without capabilities, nor when they stay unknown.
    ResourceCaps {
        /// The resource (a local session, or a resource on another server).
        resource: Jid,
        /// For a resource on another server, the local account its presence reached;
        /// `None` for a local session (whose presence was broadcast).
        to: Option<BareJid>,
    },
    /// An account is about to be deleted in-band (XEP-0077 §3.2): its sessions are closing
    /// and its data is still in the store. Subscribers tell others what they must learn of
    /// it while it can still be read (e.g. contacts get `unavailable`, `unsubscribe` and
    /// `unsubscribed`, RFC 6121 §3.3) and forget the sessions' state, so that nothing is
    /// recorded for the account once it is gone.
    AccountRemoving(BareJid),
    /// An account was deleted (its rows are gone): subscribers drop what they keep for it in
    /// memory or elsewhere (e.g. its PEP nodes).
    AccountDeleted(BareJid),
    /// Another node of a cluster changed this account's roster, pending subscription
    /// requests or block list in the store (emitted by the cluster when it hears of it):
    /// subscribers drop what they cached of the account and read the store again.
    AccountChanged(BareJid),
    /// The last session of an account on another node of a cluster ended, and it has none
    /// here either (emitted by the cluster): subscribers drop what they kept in memory for it
    /// while it had sessions. (A local session's end is [`Event::Session`].)
    AccountOffline(BareJid),
    /// The sessions of a node of a cluster that died (killed, cut off from the bus until its
    /// lease ran out): emitted by the cluster on one node only, the rooms' home (the oldest
    /// node alive), once they left the registry. Their own node can no longer do what a
    /// session's end asks of it; subscribers do the part the other nodes cannot do each for
    /// themselves — e.g. contacts on other servers get `unavailable` (RFC 6121 §4.5.2),
    /// whereas each node's sessions that were shown a lost session's presence are told by
    /// their own node.
    SessionsLost(Vec<LostSession>),
    /// A note a module on another node of a cluster sent to its peers
    /// ([`crate::Core::tell_peers`] there; emitted by the cluster in the order that node sent
    /// them): e.g. "this pubsub node changed in the store". `topic` says which module it is
    /// for; `body` is that module's business.
    ClusterNote {
        /// Which module the note is for.
        topic: String,
        /// What it says, in that module's encoding.
        body: String,
    },
    /// A message for a local account was kept for it instead of reaching a client: stored
    /// offline (XEP-0160, emitted by the IM layer once committed) or parked by a session
    /// whose connection is gone while it waits for XEP-0198 resumption (emitted by the client
    /// listener). What wakes a device up (XEP-0357 push) listens to it.
    MessageHeld {
        /// The account.
        account: BareJid,
        /// The hibernating session that parked it; `None` when it was stored offline (no
        /// session of the account could take it).
        session: Option<Jid>,
        /// The message.
        message: Stanza,
    },
    /// A message its recipient's archive took in this routing ([`Stanza::is_archived`])
    /// was answered with an error instead of reaching the recipient or being kept for it
    /// (emitted by [`crate::Core::reply_error`] before the error goes): the archive takes
    /// its copy back (XEP-0313 §5.1: what the entity never took is not in its archive).
    MessageBounced(Stanza),
    /// A session was bound with XEP-0386 Bind2, whose client takes what it missed from the
    /// account's archive (§4.2: the server clears the offline messages "as they will be
    /// provided by MAM"): emitted by the client listener before the bind is answered, so
    /// that what the archive holds is not delivered again at the session's initial presence.
    BoundFromArchive(Jid),
}

/// What a module subscribes to: one per [`Event`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// [`Event::Session`].
    Session,
    /// [`Event::SubscriptionApproved`].
    SubscriptionApproved,
    /// [`Event::RosterItemChanged`].
    RosterItemChanged,
    /// [`Event::ResourceCaps`].
    ResourceCaps,
    /// [`Event::AccountRemoving`].
    AccountRemoving,
    /// [`Event::AccountDeleted`].
    AccountDeleted,
    /// [`Event::AccountChanged`].
    AccountChanged,
    /// [`Event::AccountOffline`].
    AccountOffline,
    /// [`Event::SessionsLost`].
    SessionsLost,
    /// [`Event::ClusterNote`].
    ClusterNote,
    /// [`Event::MessageHeld`].
    MessageHeld,
    /// [`Event::MessageBounced`].
    MessageBounced,
    /// [`Event::BoundFromArchive`].
    BoundFromArchive,
}

impl Event {
    /// The kind subscribers name.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Session(_) => EventKind::Session,
            Event::SubscriptionApproved { .. } => EventKind::SubscriptionApproved,
            Event::RosterItemChanged { .. } => EventKind::RosterItemChanged,
            Event::ResourceCaps { .. } => EventKind::ResourceCaps,
            Event::AccountRemoving(_) => EventKind::AccountRemoving,
            Event::AccountDeleted(_) => EventKind::AccountDeleted,
            Event::AccountChanged(_) => EventKind::AccountChanged,
            Event::AccountOffline(_) => EventKind::AccountOffline,
            Event::SessionsLost(_) => EventKind::SessionsLost,
            Event::ClusterNote { .. } => EventKind::ClusterNote,
            Event::MessageHeld { .. } => EventKind::MessageHeld,
            Event::MessageBounced(_) => EventKind::MessageBounced,
            Event::BoundFromArchive(_) => EventKind::BoundFromArchive,
        }
    }
}
