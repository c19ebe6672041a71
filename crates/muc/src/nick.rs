//! Room nicknames by the PRECIS Nickname profile (RFC 8266), as XEP-0045 §7.2.1 asks.
//!
//! A nickname is kept as enforced (spaces trimmed and collapsed, NFKC) and compared by its
//! case-folded form, so `Alice` and `alice ` are the same occupant (RFC 8266 §2.4).

use std::borrow::Cow;

use precis_core::profile::PrecisFastInvocation;
use precis_profiles::Nickname;

use crate::error::MucError;

/// The longest nickname accepted, in bytes (a resourcepart is at most 1023).
pub const MAX_NICK_BYTES: usize = 1023;

/// A nickname as the room shows it, with its comparison key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nick {
    /// The enforced form (RFC 8266 §2.3).
    pub display: String,
    /// The comparison form (case-folded).
    pub key: String,
}

impl Nick {
    /// Enforces the profile on `raw`; [`MucError::InvalidNick`] if it is empty or rejected.
    pub fn parse(raw: &str) -> Result<Nick, MucError> {
        let display = match Nickname::enforce(raw) {
            Ok(Cow::Borrowed(s)) => s.to_string(),
            Ok(Cow::Owned(s)) => s,
            Err(_) => return Err(MucError::InvalidNick),
        };
        if display.is_empty() || display.len() > MAX_NICK_BYTES {
            return Err(MucError::InvalidNick);
        }
        let key = display.to_lowercase();
        Ok(Nick { display, key })
    }

    /// The comparison key of `raw`, if it is a valid nickname.
    pub fn key_of(raw: &str) -> Option<String> {
        Nick::parse(raw).ok().map(|n| n.key)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn enforced_and_compared() {
        let n = Nick::parse("  Thirdwitch  ").unwrap();
        assert_eq!(n.display, "Thirdwitch");
        assert_eq!(n.key, "thirdwitch");
        assert_eq!(Nick::key_of("THIRDWITCH"), Some("thirdwitch".into()));
        assert_eq!(Nick::parse("   "), Err(MucError::InvalidNick));
        assert_eq!(Nick::parse("bad\u{7}"), Err(MucError::InvalidNick));
    }
}
