//! Archiving preferences (XEP-0313 §6): a default and the JIDs always or never archived.

use rookery_jid::Jid;
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
    /// JIDs always archived: a bare JID stands for all its resources, a full one for itself
    /// (XEP-0441 §4.3.1).
    pub always: Vec<String>,
    /// JIDs never archived (this list wins over `always`), matched as `always`.
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

    /// Whether a message with `with` (the other party's address as the message has it) is
    /// archived.
    pub fn decide(&self, with: &Jid) -> Decision {
        // A listed full JID is compared with the address as it is, a listed bare one with
        // the address stripped of its resource (a bare JID never contains '/').
        let listed = |j: &String| {
            if j.contains('/') {
                j == with.as_str()
            } else {
                j == with.bare_str()
            }
        };
        if self.never.iter().any(listed) {
            Decision::Skip
        } else if self.always.iter().any(listed) {
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
                    let jid = Jid::parse(j.text().trim())
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
            always: vec![
                "romeo@x".into(),
                "tybalt@x".into(),
                "nurse@x/balcony".into(),
            ],
            never: vec!["tybalt@x".into(), "romeo@x/exile".into()],
        };
        let decide = |j: &str| p.decide(&Jid::parse(j).unwrap());
        assert_eq!(decide("romeo@x/garden"), Decision::Archive);
        assert_eq!(decide("romeo@x/exile"), Decision::Skip);
        assert_eq!(decide("tybalt@x"), Decision::Skip);
        assert_eq!(decide("tybalt@x/street"), Decision::Skip);
        assert_eq!(decide("nurse@x/balcony"), Decision::Archive);
        assert_eq!(decide("nurse@x"), Decision::IfInRoster);
        assert_eq!(decide("nurse@x/kitchen"), Decision::IfInRoster);
        assert_eq!(Prefs::parse(&p.to_element()).unwrap(), p);
        let bad = Element::new("prefs", ns::MAM).with_attr("default", "sometimes");
        assert!(Prefs::parse(&bad).is_err());
    }
}
