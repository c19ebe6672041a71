//! Extensions are modules (design.md "Extensions are modules").
//!
//! A module declares, once at start-up, what it handles: the IQ payloads it answers (for the
//! server itself or on behalf of an account), the stanza hooks it wants and the events it
//! subscribes to (each with a [`priority`]: no module depends on the order modules are
//! added), the disco identities and features it adds. The router builds its tables from these declarations, so adding a
//! XEP never means editing the router, and disco#info never lies.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rookery_jid::{BareJid, Jid};
use rookery_proto::Stanza;
use rookery_proto::{StanzaError, StanzaErrorCondition};
use rookery_xml::Element;

use crate::event::{Event, EventKind};
use crate::router::Core;

/// Hook and event priorities (as Prosody's `module:hook(event, fn, priority)`): at one hook
/// point, or for one event kind, higher priorities run first; equal ones in the order the
/// modules were added. `docs/architecture.md` has the table of who runs where.
pub mod priority {
    /// Policy that must see a stanza before anything else acts on it: blocking (XEP-0191).
    pub const POLICY: i32 = 100;
    /// Observers that act on a stanza and pass it on, before the module that consumes it:
    /// PEP watching presence (XEP-0163 §4.3.2) before the IM layer handles it.
    pub const OBSERVE: i32 = 50;
    /// The module that does the stanza's job (and usually returns [`super::Flow::Handled`]).
    pub const DEFAULT: i32 = 0;
}

/// Who an IQ handler answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IqTarget {
    /// IQs to the server's domain (or with no `to`, where the RFC says the server answers).
    Server,
    /// IQs to a local account's bare JID, answered by the server on the account's behalf.
    Account,
}

/// Points in the routing path where a module may take a stanza over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookPoint {
    /// A message to a local bare JID (delivery policy, offline storage).
    MessageToBare,
    /// A message to a local full JID whose resource is not online.
    MessageToMissingResource,
    /// A presence stanza with no `to` from a local session (broadcast).
    PresenceBroadcast,
    /// A presence stanza addressed to a local account (subscriptions, probes, directed).
    /// A local account's presence broadcast to its local contacts' bare JIDs does not come
    /// here: [`Core::deliver_rendered`] hands it to their available resources itself.
    PresenceToAccount,
    /// A message sent by a local session (before routing; e.g. carbons, archiving). Run by
    /// [`Core::route_from_session`].
    MessageFromLocal,
    /// A presence stanza with a `to` sent by a local session (before routing): outbound
    /// subscription management, directed presence. Run by [`Core::route_from_session`].
    PresenceFromLocal,
    /// An IQ sent by a local session (before routing; e.g. blocking). Run by
    /// [`Core::route_from_session`].
    IqFromLocal,
    /// A message to a local full JID whose session is online, before it is delivered there
    /// (e.g. carbons).
    MessageToFull,
    /// An IQ request to a local full JID whose session is online, before it is delivered
    /// there (e.g. last activity, which the server refuses for the client to strangers).
    IqToFull,
    /// Any stanza addressed to a local account (bare or full JID), before the other hooks and
    /// before delivery: privacy and blocking.
    ToLocalAccount,
}

/// What a hook did with the stanza.
#[derive(Debug)]
pub enum Flow {
    /// Not handled: the next hook (or the router's default) gets it.
    Continue(Stanza),
    /// Handled; routing stops here.
    Handled,
}

/// A disco identity (XEP-0030 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Category, e.g. `server`.
    pub category: &'static str,
    /// Type, e.g. `im`.
    pub kind: &'static str,
    /// Human-readable name.
    pub name: Option<String>,
}

/// What a module registers with the core.
#[derive(Debug, Default)]
pub struct Declaration {
    /// IQ payloads this module answers: (target, namespace, element name).
    pub iqs: Vec<(IqTarget, &'static str, &'static str)>,
    /// Hooks this module wants, each with its [`priority`].
    pub hooks: Vec<(HookPoint, i32)>,
    /// Events this module subscribes to, each with its [`priority`].
    pub events: Vec<(EventKind, i32)>,
    /// Disco identities of the server.
    pub server_identities: Vec<Identity>,
    /// Disco features of the server.
    pub server_features: Vec<&'static str>,
    /// XEP-0128 extended-information forms in the server's disco#info (e.g. XEP-0157
    /// contact addresses), after its features.
    pub server_info: Vec<Element>,
    /// Disco features of every account (disco#info to a bare JID).
    pub account_features: Vec<&'static str>,
    /// Disco identities of every account, besides `account/registered` (e.g. `pubsub/pep`).
    pub account_identities: Vec<Identity>,
    /// Stream features offered to clients after authentication, next to `<bind/>` (e.g.
    /// XEP-0237 `<ver xmlns='urn:xmpp:features:rosterver'/>`).
    pub stream_features: Vec<Element>,
    /// Whether the module takes on writes it commits later, off the message path (the
    /// archive's rows): [`Core::settle`] then waits for it ([`Module::settle`]).
    pub settles: bool,
}

/// The payload of an IQ `result` (if any), or an error.
pub type IqResult = Result<Option<Element>, StanzaError>;

/// What an IQ handler answers: the `result` and the stanzas that must follow it (e.g.
/// XEP-0237 roster pushes after an empty roster result), which the router routes right
/// after the result, in order.
#[derive(Debug, Default)]
pub struct IqReply {
    /// The `result`.
    pub result: IqResultBody,
    /// Stanzas routed after the result.
    pub then: Vec<Stanza>,
}

/// The `result` of an [`IqReply`].
#[derive(Debug)]
pub enum IqResultBody {
    /// A `result` with this payload, if any, which the router builds and routes.
    Payload(Option<Element>),
    /// The whole `result` stanza, serialized by the module (its header from
    /// [`iq_result_for`]), for an IQ a session sent to its own account: a large answer (a
    /// whole roster) written straight from the module's state, without an element tree of
    /// it in between — that tree and its serialization cost several times the answer at
    /// each request. The router hands it to the session that asked.
    Serialized(Bytes),
}

impl Default for IqResultBody {
    fn default() -> Self {
        IqResultBody::Payload(None)
    }
}

impl IqReply {
    /// A result with `payload` and the stanzas to route after it.
    pub fn new(payload: Option<Element>, then: Vec<Stanza>) -> IqReply {
        IqReply {
            result: IqResultBody::Payload(payload),
            then,
        }
    }

    /// A result the module serialized itself ([`IqResultBody::Serialized`]) and the
    /// stanzas to route after it.
    pub fn serialized(result: Bytes, then: Vec<Stanza>) -> IqReply {
        IqReply {
            result: IqResultBody::Serialized(result),
            then,
        }
    }
}

impl From<Option<Element>> for IqReply {
    fn from(payload: Option<Element>) -> IqReply {
        IqReply::new(payload, Vec::new())
    }
}

/// The `result` the router sends for `iq`, handled for `to` (an account or a server), with
/// `payload`: an IQ without `to` was sent to the sender's account, which the result comes
/// from (RFC 6120 §10.3.3).
pub fn iq_result_for(iq: &Stanza, to: &BareJid, payload: Option<Element>) -> Stanza {
    let mut result = iq.iq_result(payload);
    if iq.to().is_none() {
        result.set_from(to.clone().into());
    }
    result
}

/// The answer of an IQ handler: a reply (with its follow-ups), or an error.
pub type IqAnswer = Result<IqReply, StanzaError>;

/// A protocol extension.
#[async_trait]
pub trait Module: Send + Sync + 'static {
    /// Short name, used in config and logs (e.g. `ping`).
    fn name(&self) -> &'static str;

    /// What this module handles.
    fn declare(&self) -> Declaration;

    /// Answers an IQ get/set this module declared. `to` is the account for
    /// [`IqTarget::Account`] handlers, the server domain for [`IqTarget::Server`].
    async fn handle_iq(&self, _core: &Arc<Core>, _to: &BareJid, _iq: &Stanza) -> IqResult {
        Err(StanzaError::new(StanzaErrorCondition::ServiceUnavailable))
    }

    /// What the router calls for an IQ get/set this module declared: the reply and the
    /// stanzas that follow it. By default [`Module::handle_iq`]'s result with none; a module
    /// whose answers have follow-ups implements this instead.
    async fn reply_iq(&self, core: &Arc<Core>, to: &BareJid, iq: &Stanza) -> IqAnswer {
        self.handle_iq(core, to, iq).await.map(IqReply::from)
    }

    /// Extra disco#items of `to` (the server or an account) shown to `from` at the root
    /// (no `node`): e.g. an account's PEP nodes (XEP-0163 §? / XEP-0030 §4).
    async fn disco_items(&self, _core: &Arc<Core>, _to: &BareJid, _from: &Jid) -> Vec<Element> {
        Vec::new()
    }

    /// Answers a disco#info or disco#items `query` with a `node` attribute for `to`, if the
    /// node is this module's (`None`: not mine; the next module is asked, and with no taker
    /// the answer is `item-not-found`).
    async fn disco_node(
        &self,
        _core: &Arc<Core>,
        _to: &BareJid,
        _from: &Jid,
        _query: &Element,
    ) -> Option<IqResult> {
        None
    }

    /// What this module keeps for the local session `jid` that must follow it to another
    /// node of a cluster, where its client resumed it (XEP-0198; [`Core::session_states`]),
    /// as text; `None` (the default): nothing.
    fn session_state(&self, _jid: &Jid) -> Option<String> {
        None
    }

    /// Takes over what [`Module::session_state`] gave on another node for the session `jid`,
    /// just bound here to go on there ([`Core::adopt_session_states`]).
    fn adopt_session_state(&self, _core: &Arc<Core>, _jid: &Jid, _state: &str) {}

    /// Whether the local account `owner` blocks `other` (XEP-0191). Asked of the modules
    /// hooked at [`HookPoint::ToLocalAccount`] for what bypasses the route table's hooks:
    /// the pre-rendered fan-out of [`Core::deliver_rendered`].
    async fn blocks(&self, _core: &Arc<Core>, _owner: &BareJid, _other: &Jid) -> bool {
        false
    }

    /// Whether the local account `owner` shares its presence with `other` (a `from` or
    /// `both` subscription in its roster, RFC 6121 §3), for what the server answers on the
    /// account's behalf only to those (XEP-0030 §8). `None`: this module keeps no rosters.
    async fn shares_presence(
        &self,
        _core: &Arc<Core>,
        _owner: &BareJid,
        _other: &BareJid,
    ) -> Option<bool> {
        None
    }

    /// [`Module::blocks`] when the answer is at hand without waiting (a cached block list),
    /// `None` (the default) when [`Module::blocks`] must be asked. Asked first, once per
    /// recipient of every fan-out: answering here spares an `async_trait` future's
    /// allocation per recipient.
    fn blocks_now(&self, _owner: &BareJid, _other: &Jid) -> Option<bool> {
        None
    }

    /// A declared hook.
    async fn hook(&self, _core: &Arc<Core>, _point: HookPoint, stanza: Stanza) -> Flow {
        Flow::Continue(stanza)
    }

    /// An event this module subscribed to.
    async fn event(&self, _core: &Arc<Core>, _event: &Event) {}

    /// Returns once what this module took on from the stanzas routed before the call is
    /// committed. Asked through [`Core::settle`] of the modules that declared
    /// [`Declaration::settles`]; the others hold nothing uncommitted.
    async fn settle(&self) {}
}
