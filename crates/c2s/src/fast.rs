//! XEP-0484 Fast Authentication Streamlining Tokens, inline in XEP-0388 SASL2: the `<fast/>`
//! inline feature listing the HT mechanisms (§2), `<request-token/>` beside any
//! authentication (§3.1), `<token/>` in the success (§3.2), and authentication with a token
//! (§3.3): one HT message, checked against the device's current token or the one it
//! replaced, with the mechanism the token was asked for (§3.3: a token for `-EXPR` is no
//! token for `-NONE`), and a `count` that must rise on every use of that token when the
//! client sends one (§3.3.1, replay protection; each token counts from zero, §3.1; xmpp.js
//! sends none, and is served).
//!
//! Tokens are per account and device (the `<user-agent id=…/>`): a request without a device
//! id gets no token. Rotation: a new token moves the current one to "previous", which stays
//! valid until the new one is used, so a client that lost the success carrying its new token
//! can still get in. The store keeps only keys (`rookery_sasl::ht`); this module decides,
//! the driver stores ([`TokenStore`], wired to `rookery-store` by the server).

use async_trait::async_trait;
use rookery_sasl::ht::{self, HtMechanism};
use rookery_xml::Element;

/// The FAST namespace.
pub const NS: &str = "urn:xmpp:fast:0";

/// One stored token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Its key.
    pub key: Vec<u8>,
    /// When it expires (Unix seconds).
    pub expires: i64,
    /// The mechanism it was asked for; `None` for a token stored before they were recorded.
    pub mechanism: Option<HtMechanism>,
    /// The highest `count` used with it (0: none yet).
    pub last_count: i64,
}

impl Token {
    /// Whether it may be used with `mechanism`: the one it was asked for (§3.3). A token of
    /// unknown mechanism (stored before they were) only with one without channel binding:
    /// it may have been asked for with binding, so it gets no more than an unbound token
    /// would, and a client that did ask for binding logs in once with its password.
    fn accepts(&self, mechanism: HtMechanism) -> bool {
        self.mechanism
            .map_or(!mechanism.is_bound(), |m| m == mechanism)
    }
}

/// The tokens of one device, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTokens {
    /// The current token.
    pub current: Token,
    /// The token it replaced, until the current one is used.
    pub previous: Option<Token>,
}

/// Which token an authentication used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Used {
    /// The current token (the previous one ends).
    Current,
    /// The previous token.
    Previous,
}

/// Where FAST tokens are kept.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// The tokens of `device` of `local@domain`.
    async fn get(
        &self,
        domain: &str,
        local: &str,
        device: &str,
    ) -> Result<Option<DeviceTokens>, String>;
    /// Stores a new current token for `device`, for `mechanism`, with no count used (the
    /// current one becomes the previous one, with its count), keeping at most `max_devices` devices per account (the last issued, by
    /// `issued_at_ms`, Unix milliseconds).
    #[allow(clippy::too_many_arguments, reason = "one row's columns")]
    async fn issue(
        &self,
        domain: &str,
        local: &str,
        device: &str,
        key: &[u8],
        expires: i64,
        mechanism: HtMechanism,
        issued_at_ms: i64,
        max_devices: u32,
    ) -> Result<(), String>;
    /// Forgets the tokens of `device`, which authenticated with the token whose key is `key`
    /// and asked to invalidate it; `false` when that token is no longer the device's.
    async fn invalidate(
        &self,
        domain: &str,
        local: &str,
        device: &str,
        key: &[u8],
    ) -> Result<bool, String>;
    /// Records a use of the token `used`, whose key is `key`, with `count`; `false` when
    /// `count` does not rise above that token's (a replay), or that token is no longer
    /// `used` (another login of the device issued a new one meanwhile).
    async fn use_token(
        &self,
        domain: &str,
        local: &str,
        device: &str,
        used: Used,
        key: &[u8],
        count: i64,
    ) -> Result<bool, String>;
}

/// The `<fast/>` inline feature: the HT mechanisms usable on this stream (`-EXPR` only with
/// channel binding).
pub fn feature(channel_binding: bool) -> Element {
    let mut f = Element::new("fast", NS);
    for m in mechanisms(channel_binding) {
        f.push_child(Element::new("mechanism", NS).with_text(m.name()));
    }
    f
}

/// The HT mechanisms usable on a stream with or without channel binding.
pub fn mechanisms(channel_binding: bool) -> impl Iterator<Item = HtMechanism> {
    HtMechanism::ALL
        .into_iter()
        .filter(move |m| channel_binding || !m.is_bound())
}

/// What an `<authenticate/>` says about FAST.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// `<request-token mechanism=…/>`: the mechanism the new token is for.
    pub request_token: Option<HtMechanism>,
    /// `<fast count=…/>`: authenticating with a token, and its count.
    pub fast: Option<Option<i64>>,
    /// `<fast invalidate='true'/>`: the token ends with this authentication (the device
    /// logs out; its other token goes too, and no new one is issued).
    pub invalidate: bool,
}

/// Reads a FAST element of an `<authenticate/>` on a stream with or without channel binding
/// into `r`; `Ok(false)` when `el` is not one, `Err` (a SASL condition) when it is malformed
/// or repeated, or asks a token for a mechanism not offered on this stream (§3.1: the token
/// could never be used).
pub fn parse_into(
    el: &Element,
    r: &mut Request,
    channel_binding: bool,
) -> Result<bool, &'static str> {
    if el.ns() != NS {
        return Ok(false);
    }
    match el.name() {
        "request-token" => {
            let m = el
                .attr("mechanism")
                .and_then(HtMechanism::from_name)
                .filter(|m| mechanisms(channel_binding).any(|offered| offered == *m))
                .ok_or("invalid-mechanism")?;
            if r.request_token.replace(m).is_some() {
                return Err("malformed-request");
            }
        }
        "fast" => {
            let count = match el.attr("count") {
                Some(c) => Some(
                    c.trim()
                        .parse::<i64>()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or("malformed-request")?,
                ),
                None => None,
            };
            if r.fast.replace(count).is_some() {
                return Err("malformed-request");
            }
            // An xs:boolean.
            r.invalidate = match el.attr("invalidate") {
                None | Some("false" | "0") => false,
                Some("true" | "1") => true,
                Some(_) => return Err("malformed-request"),
            };
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// A new token for a device: the token for the client and the key to store.
pub struct Issued {
    /// The token, sent once in `<token/>`.
    pub token: String,
    /// What the store keeps.
    pub key: Vec<u8>,
    /// When it expires (Unix seconds).
    pub expires: i64,
}

/// Without the token and its key: neither belongs in a log.
impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Makes a token valid for `lifetime_secs` from `now`.
pub fn issue(now: i64, lifetime_secs: u64) -> Issued {
    let token = ht::new_token();
    let key = ht::token_key(&token);
    let lifetime = i64::try_from(lifetime_secs).unwrap_or(i64::MAX);
    Issued {
        token,
        key,
        expires: now.saturating_add(lifetime),
    }
}

/// `<token/>` for the success (§3.2).
pub fn token_element(issued: &Issued) -> Element {
    Element::new("token", NS)
        .with_attr("token", issued.token.as_str())
        .with_attr("expiry", rookery_proto::time::format_utc(issued.expires))
}

/// Why a token proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No token of the device (usable with the mechanism) is proved.
    NoMatch,
    /// A token of the device is proved, but it has expired: the client holds a token we no
    /// longer trust, not a wrong one.
    Expired,
}

impl Refused {
    /// The SASL condition (XEP-0484 Business Rules: a token the server no longer trusts fails with
    /// `credentials-expired`, so the client falls back to its password).
    pub fn condition(self) -> &'static str {
        match self {
            Refused::NoMatch => "not-authorized",
            Refused::Expired => "credentials-expired",
        }
    }
}

/// Which unexpired token of `tokens`, usable with `mechanism`, the HT message proves on a
/// stream with `cb_data`.
pub fn check<'a>(
    tokens: &'a DeviceTokens,
    now: i64,
    mechanism: HtMechanism,
    cb_data: &[u8],
    initiator_hash: &[u8],
) -> Result<(Used, &'a Token), Refused> {
    let current = std::iter::once((Used::Current, &tokens.current));
    let previous = tokens.previous.iter().map(|p| (Used::Previous, p));
    let (used, token) = current
        .chain(previous)
        .filter(|(_, t)| t.accepts(mechanism))
        .find(|(_, t)| ht::verify(&t.key, cb_data, initiator_hash))
        .ok_or(Refused::NoMatch)?;
    if token.expires <= now {
        return Err(Refused::Expired);
    }
    Ok((used, token))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_requests() {
        let mut r = Request::default();
        let rt = Element::new("request-token", NS).with_attr("mechanism", "HT-SHA-256-NONE");
        assert_eq!(parse_into(&rt, &mut r, false), Ok(true));
        assert_eq!(parse_into(&rt, &mut r, false), Err("malformed-request"));
        let f = Element::new("fast", NS).with_attr("count", "7");
        assert_eq!(parse_into(&f, &mut r, false), Ok(true));
        assert_eq!(r.fast, Some(Some(7)));
        assert_eq!(r.request_token, Some(HtMechanism::Sha256None));
        let mut r = Request::default();
        let bad = Element::new("fast", NS).with_attr("count", "-1");
        assert_eq!(parse_into(&bad, &mut r, false), Err("malformed-request"));
        let unknown = Element::new("request-token", NS).with_attr("mechanism", "HT-MD5");
        assert_eq!(parse_into(&unknown, &mut r, true), Err("invalid-mechanism"));
        assert_eq!(
            parse_into(&Element::new("bind", "x"), &mut r, false),
            Ok(false)
        );
        // -EXPR only where it is offered: with channel binding.
        let expr = Element::new("request-token", NS).with_attr("mechanism", "HT-SHA-256-EXPR");
        assert_eq!(parse_into(&expr, &mut r, false), Err("invalid-mechanism"));
        assert_eq!(parse_into(&expr, &mut r, true), Ok(true));
        assert_eq!(r.request_token, Some(HtMechanism::Sha256Expr));
    }

    /// A stored token of `issued` for `mechanism`, none used yet.
    fn stored(issued: &Issued, mechanism: Option<HtMechanism>) -> Token {
        Token {
            key: issued.key.clone(),
            expires: issued.expires,
            mechanism,
            last_count: 0,
        }
    }

    fn proof(t: &Issued, cb: &[u8]) -> Vec<u8> {
        ht::parse(&ht::client_message("u", &t.token, cb))
            .unwrap()
            .initiator_hash
    }

    /// The current or previous token, if unexpired (a proved expired one is told apart);
    /// nothing else.
    #[test]
    fn checks_current_and_previous() {
        let a = issue(100, 50);
        let b = issue(100, 50);
        let none = Some(HtMechanism::Sha256None);
        let tokens = DeviceTokens {
            current: stored(&b, none),
            previous: Some(stored(&a, none)),
        };
        let check_none = |now, cb: &[u8], hash: &[u8]| {
            check(&tokens, now, HtMechanism::Sha256None, cb, hash).map(|(used, _)| used)
        };
        let (used, token) =
            check(&tokens, 120, HtMechanism::Sha256None, b"", &proof(&b, b"")).unwrap();
        assert_eq!((used, token), (Used::Current, &tokens.current));
        assert_eq!(check_none(120, b"", &proof(&a, b"")), Ok(Used::Previous));
        assert_eq!(check_none(150, b"", &proof(&a, b"")), Err(Refused::Expired));
        assert_eq!(
            check_none(120, b"cb", &proof(&b, b"")),
            Err(Refused::NoMatch)
        );
        let other = issue(100, 50);
        assert_eq!(
            check_none(150, b"", &proof(&other, b"")),
            Err(Refused::NoMatch)
        );
        assert!(token_element(&a).attr("expiry").unwrap().ends_with('Z'));
        assert_eq!(mechanisms(false).count(), 1);
        assert!(feature(true).children().count() == 2);
    }

    /// A token serves only the mechanism it was asked for (§3.3); one stored before
    /// mechanisms were, only mechanisms without channel binding.
    #[test]
    fn a_token_is_bound_to_its_mechanism() {
        let (none, expr) = (HtMechanism::Sha256None, HtMechanism::Sha256Expr);
        let t = issue(100, 50);
        let with = |mechanism| DeviceTokens {
            current: stored(&t, mechanism),
            previous: None,
        };
        let ok =
            |tokens: &DeviceTokens, m, cb: &[u8]| check(tokens, 120, m, cb, &proof(&t, cb)).is_ok();
        // Asked for -EXPR: a -NONE proof of the same token is refused.
        assert!(ok(&with(Some(expr)), expr, b"cb"));
        assert!(!ok(&with(Some(expr)), none, b""));
        // And the other way round.
        assert!(ok(&with(Some(none)), none, b""));
        assert!(!ok(&with(Some(none)), expr, b"cb"));
        // Unknown: -NONE only.
        assert!(ok(&with(None), none, b""));
        assert!(!ok(&with(None), expr, b"cb"));
    }
}
