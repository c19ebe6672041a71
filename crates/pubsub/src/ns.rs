//! Namespaces and form types of XEP-0060 (§14 XMPP Registrar Considerations) and the
//! neighbours it uses.

/// The main pubsub namespace.
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// Owner use cases.
pub const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
/// Event notifications.
pub const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// Pubsub-specific error conditions.
pub const ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// FORM_TYPE of node configuration forms.
pub const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// FORM_TYPE of publish-options (§7.1.5).
pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// FORM_TYPE of subscription options (§6.3).
pub const SUBSCRIBE_OPTIONS: &str = "http://jabber.org/protocol/pubsub#subscribe_options";
/// FORM_TYPE of subscription approval requests (§8.6).
pub const SUBSCRIBE_AUTHORIZATION: &str =
    "http://jabber.org/protocol/pubsub#subscribe_authorization";
/// FORM_TYPE of node meta-data in disco#info (§5.4).
pub const META_DATA: &str = "http://jabber.org/protocol/pubsub#meta-data";
/// XEP-0131 stanza headers (SubID headers on notifications, §12.? "Multiple subscriptions").
pub const SHIM: &str = "http://jabber.org/protocol/shim";
/// XEP-0004 data forms.
pub const DATA: &str = "jabber:x:data";
/// The `pubsub#` feature prefix.
pub const FEATURE_PREFIX: &str = "http://jabber.org/protocol/pubsub#";
