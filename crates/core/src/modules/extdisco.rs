//! XEP-0215: External Service Discovery — the STUN/TURN servers an operator runs for
//! audio/video calls (XEP-0167 with XEP-0176 ICE), listed to the server's own users with
//! time-limited credentials.
//!
//! Credentials follow coturn's REST-API scheme (`use-auth-secret` / `static-auth-secret`, the
//! "TURN REST API" draft): the username is `<expiry unix time>:<user>`, the password
//! `base64(HMAC-SHA1(secret, username))`. The TURN server recomputes the password from the
//! shared secret and checks the expiry, so nothing has to be stored or synchronised here and
//! a leaked credential dies on its own. Credentials are included in the `<services/>` answer
//! (so a client needs one round trip) and also answered to `<credentials/>` requests (§3.3).

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rookery_jid::BareJid;
use rookery_proto::time::{format_utc, now_unix};
use rookery_proto::{ns, IqType, Stanza, StanzaError, StanzaErrorCondition as Cond, StanzaKind};
use rookery_xml::Element;
use serde::Deserialize;

use crate::module::{Declaration, IqResult, IqTarget, Module};
use crate::router::Core;

/// One `[[external_services]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExternalService {
    /// The service type from the XEP-0215 registry: `stun`, `turn`, `turns`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Host name or IP address clients connect to.
    pub host: String,
    /// Port (the type's default when absent).
    pub port: Option<u16>,
    /// `udp` or `tcp`.
    pub transport: Option<Transport>,
    /// A human-readable name.
    pub name: Option<String>,
    /// The TURN server's shared secret (coturn `static-auth-secret`): with it, each answer
    /// carries a username and password valid for `ttl_secs`.
    pub secret: Option<String>,
    /// Lifetime of computed credentials, in seconds.
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
}

fn default_ttl() -> u64 {
    86_400
}

/// The transport attribute (XEP-0215 §2).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (also for TLS, e.g. `turns`).
    Tcp,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

impl ExternalService {
    /// The `<service/>` element for `user` at time `now` (unix seconds).
    fn element(&self, user: &BareJid, now: i64) -> Element {
        let mut el = Element::new("service", ns::EXTDISCO)
            .with_attr("type", self.kind.as_str())
            .with_attr("host", self.host.as_str());
        if let Some(port) = self.port {
            el.set_attr("port", port.to_string());
        }
        if let Some(t) = self.transport {
            el.set_attr("transport", t.as_str());
        }
        if let Some(name) = &self.name {
            el.set_attr("name", name.as_str());
        }
        if let Some(secret) = &self.secret {
            let expires = now.saturating_add(i64::try_from(self.ttl_secs).unwrap_or(i64::MAX));
            let username = format!("{expires}:{user}");
            el.set_attr("password", turn_password(secret, &username));
            el.set_attr("username", username);
            el.set_attr("expires", format_utc(expires));
        }
        el
    }

    fn matches(&self, query: &Element) -> bool {
        query.attr("type").is_none_or(|t| t == self.kind)
            && query.attr("host").is_none_or(|h| h == self.host)
            && query
                .attr("port")
                .is_none_or(|p| p.parse::<u16>().ok() == self.port)
    }
}

/// coturn's REST-API password: `base64(HMAC-SHA1(secret, username))`.
pub fn turn_password(secret: &str, username: &str) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Answers `<services/>` and `<credentials/>` requests of the server's own users.
pub struct ExternalServices {
    /// The configured services.
    pub services: Vec<ExternalService>,
}

#[async_trait]
impl Module for ExternalServices {
    fn name(&self) -> &'static str {
        "external_services"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            iqs: vec![
                (IqTarget::Server, ns::EXTDISCO, "services"),
                (IqTarget::Server, ns::EXTDISCO, "credentials"),
            ],
            server_features: vec![ns::EXTDISCO],
            ..Declaration::default()
        }
    }

    async fn handle_iq(&self, core: &Arc<Core>, _to: &BareJid, iq: &Stanza) -> IqResult {
        if iq.kind() != StanzaKind::Iq(IqType::Get) {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        // Credentials open the operator's relay: only its own users get them (§7).
        let user = match iq.from() {
            Some(f) if f.local().is_some() && core.is_local_domain(f.domain()) => f.to_bare(),
            _ => return Err(StanzaError::new(Cond::Forbidden)),
        };
        let query = iq.payload().ok_or(StanzaError::new(Cond::BadRequest))?;
        let now = now_unix();
        let mut out = Element::new(query.name(), ns::EXTDISCO);
        if query.name() == "credentials" {
            // §3.3: credentials for one service, named by the child's host/type/port.
            let wanted = query
                .get_child("service", ns::EXTDISCO)
                .ok_or(StanzaError::new(Cond::BadRequest))?;
            let service = self
                .services
                .iter()
                .find(|s| s.matches(wanted))
                .ok_or(StanzaError::new(Cond::ItemNotFound))?;
            out.push_child(service.element(&user, now));
        } else {
            // §3.1/§3.2: all services, or those of one type.
            for s in self.services.iter().filter(|s| s.matches(query)) {
                out.push_child(s.element(&user, now));
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn turn() -> ExternalService {
        ExternalService {
            kind: "turn".into(),
            host: "turn.example.org".into(),
            port: Some(3478),
            transport: Some(Transport::Udp),
            name: None,
            secret: Some("north".into()),
            ttl_secs: 600,
        }
    }

    #[test]
    fn password_is_coturns_hmac_sha1() {
        // coturn: base64(hmac_sha1("north", "1700000600:alice@example.org")), computed with
        // `printf %s '1700000600:alice@example.org' | openssl dgst -sha1 -hmac north -binary | base64`.
        assert_eq!(
            turn_password("north", "1700000600:alice@example.org"),
            "S2AafjkWP6b4ks1nahocNfak2J8="
        );
    }

    #[test]
    fn credentials_expire_after_the_ttl() {
        let user: BareJid = "alice@example.org".parse().unwrap();
        let el = turn().element(&user, 1_700_000_000);
        assert_eq!(el.attr("username"), Some("1700000600:alice@example.org"));
        assert_eq!(el.attr("expires"), Some("2023-11-14T22:23:20Z"));
        assert_eq!(el.attr("transport"), Some("udp"));
    }

    #[test]
    fn stun_without_secret_has_no_credentials() {
        let stun = ExternalService {
            kind: "stun".into(),
            secret: None,
            ..turn()
        };
        let el = stun.element(&"a@b".parse().unwrap(), 0);
        assert!(el.attr("username").is_none() && el.attr("password").is_none());
    }
}
