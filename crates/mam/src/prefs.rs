//! Archiving preferences (XEP-0313 §6): a default and the JIDs always or never archived.

use rookery_jid::BareJid;
use rookery_xml::Element;

use crate::error::MamError;
use crate::ns;

/// The archiving default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Default {
    /// Archive every message.
    Always,
    /// Archive messages with contacts in the roster.
    Roster,
    /// Archive nothing (but the `always` list).
    Never,
}

impl Default {
    /// Parses the wire value.
    pub fn parse(s: &str) -> Option<Default> {
        Some(match s {
            "always" => Default::Always,
            "roster" => Default::Roster,
            "never" => Default::Never,
            _ => return None,
        })
    }

    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Default::Always => "always",
            Default::Roster => "roster",
            Default::Never => "never",
        }
    }
}

/// An account's preferences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefs {
    /// The default.
    pub default: Default,
    /// Bare JIDs always archived.
    pub always: Vec<String>,
    /// Bare JIDs never archived (this list wins over `always`).
    pub never: Vec<String>,
}

/// What to do with a message, before asking the roster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Archive it.
    Archive,
    /// Do not.
    Skip,
    /// Archive it if the other party is in the roster.
    IfInRoster,
}

impl Prefs {
    /// Preferences with `default` and empty lists.
    pub fn with_default(default: Default) -> Prefs {
        Prefs {
            default,
            always: Vec::new(),
            never: Vec::new(),
        }
    }

    /// Whether a message with `with` (a bare JID) is archived.
    pub fn decide(&self, with: &str) -> Decision {
        if self.never.iter().any(|j| j == with) {
            Decision::Skip
        } else if self.always.iter().any(|j| j == with) {
            Decision::Archive
        } else {
            match self.default {
                Default::Always => Decision::Archive,
                Default::Never => Decision::Skip,
                Default::Roster => Decision::IfInRoster,
            }
        }
    }

    /// Reads a `<prefs/>` (§6.1): `bad-request` for an unknown default or a bad JID.
    pub fn parse(el: &Element) -> Result<Prefs, MamError> {
        let default = el.attr("default").and_then(Default::parse).ok_or_else(|| {
            MamError::BadRequest("default must be always, roster or never".into())
        })?;
        let list = |name: &str| -> Result<Vec<String>, MamError> {
            let mut v = Vec::new();
            if let Some(l) = el.get_child(name, ns::MAM) {
                for j in l.children().filter(|c| c.is("jid", ns::MAM)) {
                    let jid = BareJid::parse(j.text().trim())
                        .map_err(|_| MamError::BadRequest(format!("invalid jid in <{name}/>")))?;
                    v.push(jid.as_str().to_string());
                }
            }
            Ok(v)
        };
        Ok(Prefs {
            default,
            always: list("always")?,
            never: list("never")?,
        })
    }

    /// The `<prefs/>` element.
    pub fn to_element(&self) -> Element {
        let list = |name: &str, jids: &[String]| {
            let mut l = Element::new(name, ns::MAM);
            for j in jids {
                l.push_child(Element::new("jid", ns::MAM).with_text(j.clone()));
            }
            l
        };
        Element::new("prefs", ns::MAM)
            .with_attr("default", self.default.as_str())
            .with_child(list("always", &self.always))
            .with_child(list("never", &self.never))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lists_and_defaults_decide() {
        let p = Prefs {
            default: Default::Roster,
            always: vec!["romeo@x".into(), "tybalt@x".into()],
            never: vec!["tybalt@x".into()],
        };
        assert_eq!(p.decide("romeo@x"), Decision::Archive);
        assert_eq!(p.decide("tybalt@x"), Decision::Skip);
        assert_eq!(p.decide("nurse@x"), Decision::IfInRoster);
        assert_eq!(Prefs::parse(&p.to_element()).unwrap(), p);
        let bad = Element::new("prefs", ns::MAM).with_attr("default", "sometimes");
        assert!(Prefs::parse(&bad).is_err());
    }
}
