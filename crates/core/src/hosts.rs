//! The domains this server hosts (virtual hosting, as Prosody's `VirtualHost` and
//! ejabberd's `hosts:`): the primary `domain` of the config first, then each `[[host]]`.
//!
//! [`Hosts`] is the one list every "is this domain ours" question asks
//! ([`crate::Core::is_local_domain`]); the store already keys accounts, rosters and nodes by
//! domain, so a host needs nothing of its own there.

use rookery_jid::{BareJid, JidError};
use serde::Deserialize;

/// An additional hosted domain as the core sees it (`[[host]]` in the config; the server
/// binary reads its certificate keys itself).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// The domain.
    pub domain: String,
    /// Whether unauthenticated clients may create accounts on this host (XEP-0077);
    /// unset: `[registration] enabled`.
    pub allow_registration: Option<bool>,
}

/// One hosted domain.
#[derive(Debug, Clone)]
pub struct Host {
    jid: BareJid,
    allow_registration: Option<bool>,
}

impl Host {
    /// The domain, normalized.
    pub fn domain(&self) -> &str {
        self.jid.domain()
    }

    /// The domain as a JID (the `from` of what the server says for this host).
    pub fn jid(&self) -> &BareJid {
        &self.jid
    }

    /// This host's registration policy, when it has its own.
    pub fn allow_registration(&self) -> Option<bool> {
        self.allow_registration
    }
}

/// Why the hosted domains cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// Not a valid domainpart (RFC 7622 §3.2).
    #[error("invalid domain {0:?}: {1}")]
    Invalid(String, JidError),
    /// The same domain twice (after normalization).
    #[error("domain {0:?} is hosted twice")]
    Duplicate(String),
}

/// The hosted domains, primary first. A handful at most: a linear scan answers "is it ours"
/// faster than hashing would, and without allocating.
#[derive(Debug, Clone)]
pub struct Hosts {
    primary: Host,
    others: Vec<Host>,
}

impl Hosts {
    /// `primary` (the config's `domain`) and the `extra` hosts, each normalized; fails on an
    /// invalid or repeated domain.
    pub fn new(primary: &str, extra: &[HostConfig]) -> Result<Hosts, HostsError> {
        let jid = |d: &str| {
            BareJid::new(None, d.trim()).map_err(|e| HostsError::Invalid(d.to_string(), e))
        };
        let mut hosts = Hosts {
            primary: Host {
                jid: jid(primary)?,
                allow_registration: None,
            },
            others: Vec::with_capacity(extra.len()),
        };
        for h in extra {
            let jid = jid(&h.domain)?;
            if hosts.contains(jid.domain()) {
                return Err(HostsError::Duplicate(jid.domain().to_string()));
            }
            hosts.others.push(Host {
                jid,
                allow_registration: h.allow_registration,
            });
        }
        Ok(hosts)
    }

    /// The primary host (the config's `domain`): what the server speaks as where no host
    /// was named.
    pub fn primary(&self) -> &Host {
        &self.primary
    }

    /// The host of `domain`, if it is hosted here.
    pub fn get(&self, domain: &str) -> Option<&Host> {
        self.iter().find(|h| h.domain() == domain)
    }

    /// Whether `domain` is hosted here.
    pub fn contains(&self, domain: &str) -> bool {
        self.get(domain).is_some()
    }

    /// Every host, primary first.
    pub fn iter(&self) -> impl Iterator<Item = &Host> {
        std::iter::once(&self.primary).chain(&self.others)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn extra(domain: &str, reg: Option<bool>) -> HostConfig {
        HostConfig {
            domain: domain.into(),
            allow_registration: reg,
        }
    }

    #[test]
    fn primary_first_normalized_and_looked_up_exactly() {
        let h = Hosts::new("Example.ORG", &[extra(" b.test ", Some(true))]).unwrap();
        assert_eq!(h.primary().domain(), "example.org");
        let names: Vec<&str> = h.iter().map(Host::domain).collect();
        assert_eq!(names, ["example.org", "b.test"]);
        assert!(h.contains("b.test"));
        assert!(!h.contains("pubsub.b.test"));
        assert!(!h.contains("test"));
        assert_eq!(h.get("b.test").unwrap().allow_registration(), Some(true));
        assert_eq!(h.primary().allow_registration(), None);
    }

    #[test]
    fn invalid_and_repeated_domains_are_refused() {
        assert!(matches!(
            Hosts::new("a.test", &[extra("A.test", None)]),
            Err(HostsError::Duplicate(d)) if d == "a.test"
        ));
        assert!(matches!(
            Hosts::new("a.test", &[extra("", None)]),
            Err(HostsError::Invalid(..))
        ));
    }
}
