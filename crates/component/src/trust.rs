//! The `from` trust rule for components (XEP-0114 §3, design.md "Errors, limits, trust").
//!
//! XEP-0114 lets a component send from its own domain and from any JID at it (users of a
//! gateway, rooms of a MUC service), and nothing else. The XEP names no error for a stanza
//! that breaks the rule; RFC 6120 §4.9.3.9 defines `<invalid-from/>` for exactly this (an
//! address the peer is not authorized to use), so the stream is closed with it, as Prosody and
//! ejabberd do: a component that forges addresses is broken or compromised, and bouncing single
//! stanzas would let it keep probing. Subdomains of the component (`a.bot.example`) are not
//! its own: the router would not bring replies to them back to it.
//!
//! A stanza without `from` is stamped with the component's domain (COMPAT: XEP-0114 says
//! stanzas MUST carry it, but older components omit it and Prosody accepts that); one without
//! `to` gets `bad-request`, since a component has no account for the server to act for.

use rookery_jid::Jid;

/// What to do with the `from` of a stanza a component sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromRule {
    /// Keep it: the address is in the component's domain.
    Keep,
    /// There is none: stamp the component's domain.
    Stamp,
    /// Not the component's: close the stream with `invalid-from`.
    Reject,
}

/// Applies the rule for a component serving `domain` (normalized) to a stanza's `from`.
pub fn check_from(domain: &str, from: Option<&Jid>) -> FromRule {
    match from {
        None => FromRule::Stamp,
        Some(f) if f.domain() == domain => FromRule::Keep,
        Some(_) => FromRule::Reject,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rule(from: &str) -> FromRule {
        check_from("bot.example.org", Some(&Jid::parse(from).unwrap()))
    }

    #[test]
    fn own_domain_and_jids_at_it_are_allowed() {
        assert_eq!(rule("bot.example.org"), FromRule::Keep);
        assert_eq!(rule("user@bot.example.org"), FromRule::Keep);
        assert_eq!(rule("user@bot.example.org/res"), FromRule::Keep);
        assert_eq!(rule("bot.example.org/res"), FromRule::Keep);
        // JIDs are normalized before the comparison.
        assert_eq!(rule("User@BOT.Example.ORG"), FromRule::Keep);
    }

    #[test]
    fn anything_else_is_rejected() {
        assert_eq!(rule("example.org"), FromRule::Reject);
        assert_eq!(rule("alice@example.org"), FromRule::Reject);
        assert_eq!(rule("other.example.org"), FromRule::Reject);
        assert_eq!(rule("sub.bot.example.org"), FromRule::Reject);
        assert_eq!(rule("bot.example.org.evil"), FromRule::Reject);
        assert_eq!(rule("bot.example.org@evil.example/x"), FromRule::Reject);
    }

    #[test]
    fn missing_from_is_stamped() {
        assert_eq!(check_from("bot.example.org", None), FromRule::Stamp);
    }
}
