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
