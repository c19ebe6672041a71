//! Namespace URIs, named after the spec that defines them.

/// RFC 6120 §4.8.2: client content namespace.
pub const CLIENT: &str = "jabber:client";
/// RFC 6120 §4.8.2: server content namespace.
pub const SERVER: &str = "jabber:server";
/// XEP-0114: component content namespace.
pub const COMPONENT: &str = "jabber:component:accept";
/// RFC 6120 §4.8.1: stream namespace.
pub const STREAM: &str = "http://etherx.jabber.org/streams";
/// RFC 6120 §4.9.3: stream error conditions.
pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// RFC 6120 §8.3.3: stanza error conditions.
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// RFC 6120 §5: STARTTLS.
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// RFC 6120 §6: SASL.
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// RFC 6120 §7: resource binding.
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// RFC 3921 §3 (kept optional by draft-cridland-xmpp-session): legacy session establishment.
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// XEP-0440: SASL channel-binding type capability.
pub const SASL_CB: &str = "urn:xmpp:sasl-cb:0";
/// XEP-0059: result set management.
pub const RSM: &str = "http://jabber.org/protocol/rsm";
/// XEP-0030: service discovery, info.
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0030: service discovery, items.
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// XEP-0199: ping.
pub const PING: &str = "urn:xmpp:ping";
/// XEP-0092: software version.
pub const VERSION: &str = "jabber:iq:version";
/// XEP-0077: in-band registration (IQ payload).
pub const REGISTER: &str = "jabber:iq:register";
/// XEP-0077: in-band registration (stream feature).
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
/// XEP-0203: delayed delivery.
pub const DELAY: &str = "urn:xmpp:delay";
/// XEP-0359: unique and stable stanza IDs.
pub const SID: &str = "urn:xmpp:sid:0";
/// XEP-0004: data forms.
pub const DATA_FORMS: &str = "jabber:x:data";
/// XEP-0122 data forms validation.
pub const XDATA_VALIDATE: &str = "http://jabber.org/protocol/xdata-validate";
/// RFC 6121 §2: roster.
pub const ROSTER: &str = "jabber:iq:roster";
/// XEP-0237: roster versioning (stream feature).
pub const ROSTER_VER: &str = "urn:xmpp:features:rosterver";
/// XEP-0215: external service discovery.
pub const EXTDISCO: &str = "urn:xmpp:extdisco:2";
/// RFC 6121 §3.4.1: the stream feature announcing subscription pre-approval support.
pub const PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";
/// XEP-0160: offline message storage (disco feature, not a namespace).
pub const MSGOFFLINE: &str = "msgoffline";
/// XEP-0191: blocking command.
pub const BLOCKING: &str = "urn:xmpp:blocking";
/// XEP-0191: the application error condition for stanzas to a blocked entity.
pub const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
/// XEP-0280: message carbons.
pub const CARBONS: &str = "urn:xmpp:carbons:2";
/// XEP-0297: stanza forwarding.
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0334: message processing hints.
pub const HINTS: &str = "urn:xmpp:hints";
/// XEP-0085: chat state notifications.
pub const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// XEP-0184: message delivery receipts.
pub const RECEIPTS: &str = "urn:xmpp:receipts";
/// XEP-0333: chat markers.
pub const CHAT_MARKERS: &str = "urn:xmpp:chat-markers:0";
/// XEP-0249: direct MUC invitations.
pub const CONFERENCE: &str = "jabber:x:conference";
/// XEP-0313: message archive management (v2).
pub const MAM: &str = "urn:xmpp:mam:2";
/// XEP-0045: the occupant-facing `<x/>` (private messages, mediated invitations).
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// XEP-0054: vcard-temp.
pub const VCARD: &str = "vcard-temp";
/// XEP-0012: last activity.
pub const LAST: &str = "jabber:iq:last";
/// XEP-0049: private XML storage.
pub const PRIVATE: &str = "jabber:iq:private";
/// XEP-0115: entity capabilities.
pub const CAPS: &str = "http://jabber.org/protocol/caps";
/// XEP-0131: stanza headers (SubID headers on pubsub notifications, XEP-0060 §12.17).
pub const SHIM: &str = "http://jabber.org/protocol/shim";
/// XEP-0198: stream management.
pub const SM: &str = "urn:xmpp:sm:3";
/// XEP-0352: client state indication.
pub const CSI: &str = "urn:xmpp:csi:0";
/// XEP-0220: server dialback.
pub const DIALBACK: &str = "jabber:server:dialback";
/// XEP-0220 §2.2: the dialback stream feature.
pub const DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";

/// XEP-0060 (§14 XMPP Registrar Considerations): namespaces and form types of
/// publish-subscribe, kept under one name so the engine reads `ns::pubsub::EVENT`.
pub mod pubsub {
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
    /// The `pubsub#` feature prefix.
    pub const FEATURE_PREFIX: &str = "http://jabber.org/protocol/pubsub#";
}
