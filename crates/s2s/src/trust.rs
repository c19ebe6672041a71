//! The trust rule of incoming server-to-server streams (RFC 6120 §4.9.3.9, §8.1.1.2,
//! §13.4; XEP-0220 §4.3 for multiplexed domain pairs).
//!
//! An incoming stream may carry a stanza only when its `from` domain was authenticated on
//! this stream — for all our domains by SASL EXTERNAL, or for one (remote, local) pair by
//! dialback — and its `to` domain is hosted here. Anything else ends the stream:
//! `improper-addressing` without addresses, `host-unknown` for a domain we do not host,
//! `not-authorized` when nothing is authenticated on the stream yet (§4.9.3.12),
//! `invalid-from` for a domain the peer has not authenticated while others are.

use std::collections::HashSet;

use rookery_jid::Jid;
use rookery_proto::{StreamError, StreamErrorCondition};

/// What an incoming stream has authenticated so far.
#[derive(Debug, Default, Clone)]
pub struct Authenticated {
    /// Remote domains authenticated for every local domain (SASL EXTERNAL).
    domains: HashSet<String>,
    /// (remote, local) pairs authenticated by dialback.
    pairs: HashSet<(String, String)>,
}

impl Authenticated {
    /// Records a SASL EXTERNAL success for `remote`.
    pub fn add_domain(&mut self, remote: &str) {
        self.domains.insert(remote.to_string());
    }

    /// Records a dialback success for (`remote` → `local`).
    pub fn add_pair(&mut self, remote: &str, local: &str) {
        self.pairs.insert((remote.to_string(), local.to_string()));
    }

    /// Whether `remote` may send to `local` on this stream.
    pub fn allows(&self, remote: &str, local: &str) -> bool {
        self.domains.contains(remote)
            || self
                .pairs
                .contains(&(remote.to_string(), local.to_string()))
    }

    /// Whether `remote` is authenticated for any local domain.
    pub fn knows(&self, remote: &str) -> bool {
        self.domains.contains(remote) || self.pairs.iter().any(|(r, _)| r == remote)
    }

    /// The remote domains authenticated on this stream, sorted.
    pub fn remotes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .domains
            .iter()
            .chain(self.pairs.iter().map(|(r, _)| r))
            .cloned()
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Whether nothing was authenticated yet.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && self.pairs.is_empty()
    }
}

/// Applies the trust rule to a stanza's addresses; `hosted(domain)` says whether we serve a
/// domain (our own or a component's).
pub fn check(
    from: Option<&Jid>,
    to: Option<&Jid>,
    auth: &Authenticated,
    hosted: impl Fn(&str) -> bool,
) -> Result<(), StreamError> {
    let (Some(from), Some(to)) = (from, to) else {
        return Err(StreamError::with_text(
            StreamErrorCondition::ImproperAddressing,
            "stanzas between servers need 'from' and 'to'",
        ));
    };
    if !hosted(to.domain()) {
        return Err(StreamError::with_text(
            StreamErrorCondition::HostUnknown,
            "this server does not serve that domain",
        ));
    }
    if auth.is_empty() {
        return Err(StreamError::with_text(
            StreamErrorCondition::NotAuthorized,
            "nothing was authenticated on this stream",
        ));
    }
    if !auth.allows(from.domain(), to.domain()) {
        return Err(StreamError::with_text(
            StreamErrorCondition::InvalidFrom,
            "that domain was not authenticated on this stream",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn j(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn hosted(d: &str) -> bool {
        d == "here.test" || d == "pubsub.here.test"
    }

    fn cond(r: Result<(), StreamError>) -> Option<StreamErrorCondition> {
        r.err().map(|e| e.condition)
    }

    #[test]
    fn dialback_pairs_allow_only_their_local_domain() {
        let mut a = Authenticated::default();
        assert!(a.is_empty());
        a.add_pair("there.test", "here.test");
        let from = j("u@there.test/r");
        assert_eq!(
            check(Some(&from), Some(&j("v@here.test")), &a, hosted),
            Ok(())
        );
        assert_eq!(
            cond(check(Some(&from), Some(&j("pubsub.here.test")), &a, hosted)),
            Some(StreamErrorCondition::InvalidFrom)
        );
        a.add_pair("there.test", "pubsub.here.test");
        assert_eq!(
            check(Some(&from), Some(&j("pubsub.here.test")), &a, hosted),
            Ok(())
        );
    }

    #[test]
    fn sasl_allows_every_local_domain() {
        let mut a = Authenticated::default();
        a.add_domain("there.test");
        assert!(a.knows("there.test"));
        let from = j("there.test");
        assert_eq!(
            check(Some(&from), Some(&j("here.test")), &a, hosted),
            Ok(())
        );
        assert_eq!(
            check(Some(&from), Some(&j("pubsub.here.test")), &a, hosted),
            Ok(())
        );
    }

    #[test]
    fn nothing_authenticated_is_not_authorized() {
        let a = Authenticated::default();
        assert_eq!(
            cond(check(
                Some(&j("u@there.test")),
                Some(&j("here.test")),
                &a,
                hosted
            )),
            Some(StreamErrorCondition::NotAuthorized)
        );
    }

    #[test]
    fn spoofed_from_is_invalid_from() {
        let mut a = Authenticated::default();
        a.add_pair("there.test", "here.test");
        assert_eq!(
            cond(check(
                Some(&j("u@elsewhere.test")),
                Some(&j("here.test")),
                &a,
                hosted
            )),
            Some(StreamErrorCondition::InvalidFrom)
        );
        // Our own domain cannot be claimed either.
        assert_eq!(
            cond(check(
                Some(&j("u@here.test")),
                Some(&j("here.test")),
                &a,
                hosted
            )),
            Some(StreamErrorCondition::InvalidFrom)
        );
    }

    #[test]
    fn unknown_host_and_missing_addresses() {
        let mut a = Authenticated::default();
        a.add_domain("there.test");
        let from = j("there.test");
        assert_eq!(
            cond(check(Some(&from), Some(&j("u@other.test")), &a, hosted)),
            Some(StreamErrorCondition::HostUnknown)
        );
        assert_eq!(
            cond(check(None, Some(&j("here.test")), &a, hosted)),
            Some(StreamErrorCondition::ImproperAddressing)
        );
        assert_eq!(
            cond(check(Some(&from), None, &a, hosted)),
            Some(StreamErrorCondition::ImproperAddressing)
        );
    }
}
