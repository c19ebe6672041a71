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
/// XEP-0004: data forms.
pub const DATA_FORMS: &str = "jabber:x:data";
/// RFC 6121 §2: roster.
pub const ROSTER: &str = "jabber:iq:roster";
/// XEP-0237: roster versioning (stream feature).
pub const ROSTER_VER: &str = "urn:xmpp:features:rosterver";
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
/// XEP-0054: vcard-temp.
pub const VCARD: &str = "vcard-temp";
/// XEP-0012: last activity.
pub const LAST: &str = "jabber:iq:last";
/// XEP-0049: private XML storage.
pub const PRIVATE: &str = "jabber:iq:private";
/// XEP-0115: entity capabilities.
pub const CAPS: &str = "http://jabber.org/protocol/caps";
