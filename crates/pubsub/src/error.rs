//! Engine errors by cause, and the one table that maps each to the wire: (error type, RFC 6120
//! condition, pubsub-specific condition) as XEP-0060 lists them per use case (§5–§8 "Error
//! Cases"; the pubsub#errors namespace, §14.2).

use rookery_proto::rsm::RsmError;
use rookery_proto::{ErrorType, StanzaError, StanzaErrorCondition as C};
use rookery_xml::Element;

use crate::ns;

/// Why the engine refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PubsubError {
    /// The node does not exist (§6.1.3.12, §7.1.3.3, …).
    #[error("node does not exist")]
    NodeNotFound,
    /// The item does not exist (§7.2.3.5).
    #[error("item does not exist")]
    ItemNotFound,
    /// A node with that NodeID exists (§8.1.3).
    #[error("node already exists")]
    NodeExists,
    /// The request needs a NodeID (§7.2.3.3; instant nodes are then unsupported).
    #[error("node id required")]
    NodeIdRequired,
    /// An instant node was requested where the service needs a NodeID (§8.1.2).
    #[error("instant nodes not supported here")]
    InstantNotSupported,
    /// Insufficient privileges, or an outcast (§6.1.3.8, §7.1.3.1, §8.1.3.2, …).
    #[error("forbidden")]
    Forbidden,
    /// The `jid` of a subscription request is not the requester's (§6.1.3.1).
    #[error("jids do not match")]
    InvalidJid,
    /// An anonymous reader (the HTTP face without a token) asked for a node that is not
    /// `open`.
    #[error("authentication required")]
    AuthenticationRequired,
    /// Access model `presence` and no presence subscription (§6.1.3.2, §6.5.9.3).
    #[error("presence subscription required")]
    PresenceSubscriptionRequired,
    /// Access model `roster` and not in an allowed group (§6.1.3.3).
    #[error("not in an allowed roster group")]
    NotInRosterGroup,
    /// Access model `whitelist` and not affiliated (§6.1.3.4).
    #[error("closed node")]
    ClosedNode,
    /// A subscription request is already pending (§6.1.3.7).
    #[error("subscription pending")]
    PendingSubscription,
    /// The node's subscription limit is reached (§6.1.3.9).
    #[error("too many subscriptions")]
    TooManySubscriptions,
    /// Items of an `authorize`/`whitelist`-style node need a subscription (§6.5.9.1).
    #[error("subscription required to retrieve items")]
    NotSubscribedForItems,
    /// The entity has several subscriptions and gave no SubID (§6.2.3.1, §6.3.4.4).
    #[error("subid required")]
    SubidRequired,
    /// The SubID is not one of the entity's (§6.2.3.5, §6.3.4.5).
    #[error("invalid subid")]
    InvalidSubid,
    /// The entity is not subscribed (§6.2.3.2, §6.3.4.2).
    #[error("not subscribed")]
    NotSubscribed,
    /// Options were submitted that are not valid (§6.3.6).
    #[error("invalid subscription options")]
    InvalidOptions,
    /// A JID is required (§6.3.4.3).
    #[error("jid required")]
    JidRequired,
    /// The payload exceeds the service's limit (§7.1.3.4).
    #[error("payload too big")]
    PayloadTooBig,
    /// More than one payload element, or payload not an element (§7.1.3.5).
    #[error("invalid payload")]
    InvalidPayload,
    /// The node delivers payloads and none was given (§7.1.3.6).
    #[error("payload required")]
    PayloadRequired,
    /// An item is required (§7.1.3.6 "item required", §7.2.3.4).
    #[error("item required")]
    ItemRequired,
    /// A transient notification-only node was sent an item (§7.1.3.7).
    #[error("item forbidden")]
    ItemForbidden,
    /// publish-options preconditions not met (§7.1.5).
    #[error("precondition not met")]
    PreconditionNotMet,
    /// A configuration form with an invalid value (§8.2.5, §8.1.3).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The node does not persist items (§8.5.3.3, §7.2.3.6).
    #[error("node does not persist items")]
    NotPersistent,
    /// A malformed RSM `<set/>` (`bad-request`), or one asking for a page by `<index/>`
    /// (XEP-0059 §2.5: `feature-not-implemented`; pages here are anchored by ItemID).
    #[error("{0}")]
    Rsm(rookery_proto::rsm::RsmError),
    /// The request is malformed (missing attribute, unknown element).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// A change the service refuses (removing the last owner, §8.9.2.4 / §8.8.2.4).
    #[error("not acceptable: {0}")]
    NotAcceptable(&'static str),
    /// A limit of the service (nodes per service, payload bytes per PEP account).
    #[error("resource constraint")]
    ResourceConstraint,
    /// The creator owns as many nodes as one entity may (a local policy: `policy-violation`
    /// with XEP-0060's `<max-nodes-exceeded/>`, §14.2 schema).
    #[error("too many nodes owned")]
    MaxNodesExceeded,
    /// An optional feature this service does not implement (§5.1 `unsupported` + feature).
    #[error("unsupported feature {0}")]
    Unsupported(&'static str),
    /// The store failed; the request did not take effect.
    #[error("storage failure")]
    Storage,
}

/// A `<name xmlns='…pubsub#errors'/>` application condition.
fn app(name: &str) -> Element {
    Element::new(name, ns::ERRORS)
}

impl PubsubError {
    /// The table: each cause to (type, condition, pubsub condition), as XEP-0060 lists them.
    pub fn to_stanza_error(&self) -> StanzaError {
        use PubsubError as E;
        let (t, c, a): (ErrorType, C, Option<Element>) = match self {
            E::NodeNotFound | E::ItemNotFound => (ErrorType::Cancel, C::ItemNotFound, None),
            E::NodeExists => (ErrorType::Cancel, C::Conflict, None),
            E::NodeIdRequired => (
                ErrorType::Modify,
                C::BadRequest,
                Some(app("nodeid-required")),
            ),
            E::InstantNotSupported => (
                ErrorType::Modify,
                C::NotAcceptable,
                Some(app("nodeid-required")),
            ),
            E::Forbidden => (ErrorType::Auth, C::Forbidden, None),
            E::AuthenticationRequired => (ErrorType::Auth, C::NotAuthorized, None),
            E::InvalidJid => (ErrorType::Modify, C::BadRequest, Some(app("invalid-jid"))),
            E::PresenceSubscriptionRequired => (
                ErrorType::Auth,
                C::NotAuthorized,
                Some(app("presence-subscription-required")),
            ),
            E::NotInRosterGroup => (
                ErrorType::Auth,
                C::NotAuthorized,
                Some(app("not-in-roster-group")),
            ),
            E::ClosedNode => (ErrorType::Cancel, C::NotAllowed, Some(app("closed-node"))),
            E::PendingSubscription => (
                ErrorType::Auth,
                C::NotAuthorized,
                Some(app("pending-subscription")),
            ),
            E::TooManySubscriptions => (
                ErrorType::Wait,
                C::PolicyViolation,
                Some(app("too-many-subscriptions")),
            ),
            E::NotSubscribedForItems => (
                ErrorType::Auth,
                C::NotAuthorized,
                Some(app("not-subscribed")),
            ),
            E::SubidRequired => (
                ErrorType::Modify,
                C::BadRequest,
                Some(app("subid-required")),
            ),
            E::InvalidSubid => (
                ErrorType::Modify,
                C::NotAcceptable,
                Some(app("invalid-subid")),
            ),
            E::NotSubscribed => (
                ErrorType::Cancel,
                C::UnexpectedRequest,
                Some(app("not-subscribed")),
            ),
            E::InvalidOptions => (
                ErrorType::Modify,
                C::BadRequest,
                Some(app("invalid-options")),
            ),
            E::JidRequired => (ErrorType::Modify, C::BadRequest, Some(app("jid-required"))),
            E::PayloadTooBig => (
                ErrorType::Modify,
                C::NotAcceptable,
                Some(app("payload-too-big")),
            ),
            E::InvalidPayload => (
                ErrorType::Modify,
                C::BadRequest,
                Some(app("invalid-payload")),
            ),
            E::PayloadRequired => (
                ErrorType::Modify,
                C::BadRequest,
                Some(app("payload-required")),
            ),
            E::ItemRequired => (ErrorType::Modify, C::BadRequest, Some(app("item-required"))),
            E::ItemForbidden => (
                ErrorType::Modify,
                C::BadRequest,
                Some(app("item-forbidden")),
            ),
            E::PreconditionNotMet => (
                ErrorType::Cancel,
                C::Conflict,
                Some(app("precondition-not-met")),
            ),
            E::InvalidConfig(_) => (ErrorType::Modify, C::NotAcceptable, None),
            E::NotPersistent => (
                ErrorType::Cancel,
                C::FeatureNotImplemented,
                Some(app("unsupported").with_attr("feature", "persistent-items")),
            ),
            E::Rsm(RsmError::Index) => (ErrorType::Cancel, C::FeatureNotImplemented, None),
            E::BadRequest(_) | E::Rsm(_) => (ErrorType::Modify, C::BadRequest, None),
            E::NotAcceptable(_) => (ErrorType::Modify, C::NotAcceptable, None),
            E::ResourceConstraint => (ErrorType::Wait, C::ResourceConstraint, None),
            E::MaxNodesExceeded => (
                ErrorType::Cancel,
                C::PolicyViolation,
                Some(app("max-nodes-exceeded")),
            ),
            E::Unsupported(feature) => (
                ErrorType::Cancel,
                C::FeatureNotImplemented,
                Some(app("unsupported").with_attr("feature", *feature)),
            ),
            E::Storage => (ErrorType::Wait, C::InternalServerError, None),
        };
        let mut e = StanzaError::new(c).with_type(t);
        if let Some(a) = a {
            e = e.with_app(a);
        }
        match self {
            E::InvalidConfig(_) | E::BadRequest(_) | E::NotAcceptable(_) => {
                e.with_text(self.to_string())
            }
            _ => e,
        }
    }
}

impl From<PubsubError> for StanzaError {
    fn from(e: PubsubError) -> Self {
        e.to_stanza_error()
    }
}

impl From<crate::config::ConfigError> for PubsubError {
    fn from(e: crate::config::ConfigError) -> Self {
        PubsubError::InvalidConfig(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_examples() {
        let e = PubsubError::PreconditionNotMet.to_stanza_error();
        assert_eq!(
            e.to_element().to_string(),
            "<error type=\"cancel\"><conflict xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/>\
             <precondition-not-met xmlns=\"http://jabber.org/protocol/pubsub#errors\"/></error>"
        );
        let e = PubsubError::PresenceSubscriptionRequired.to_stanza_error();
        assert_eq!(e.error_type, ErrorType::Auth);
        assert_eq!(e.condition, C::NotAuthorized);
        let e = PubsubError::Unsupported("purge-nodes").to_stanza_error();
        assert_eq!(
            e.app.as_deref().and_then(|a| a.attr("feature")),
            Some("purge-nodes")
        );
    }
}
