//! A room's configuration and its `muc#roomconfig` form (XEP-0045 §10.2, the field registry of
//! §15.5.3): the form owners get, and a submitted form applied all or nothing.

use serde::{Deserialize, Serialize};

use rookery_proto::form::{parse_bool, Field, Form};

use crate::error::{bounded, MucError};
use crate::ns;

/// Who sees occupants' real JIDs (`muc#roomconfig_whois`, §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Whois {
    /// Semi-anonymous: moderators only.
    Moderators,
    /// Non-anonymous: every occupant.
    Anyone,
}

/// Who may send private messages (`muc#roomconfig_allowpm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllowPm {
    /// Every occupant.
    Anyone,
    /// Participants and moderators.
    Participants,
    /// Moderators only.
    Moderators,
    /// Nobody.
    None,
}

impl AllowPm {
    fn as_str(self) -> &'static str {
        match self {
            AllowPm::Anyone => "anyone",
            AllowPm::Participants => "participants",
            AllowPm::Moderators => "moderators",
            AllowPm::None => "none",
        }
    }
}

/// A room's settings (stored as JSON with a persistent room; unknown keys default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomConfig {
    /// Natural-language name.
    pub name: String,
    /// Short description.
    pub description: String,
    /// Kept when the last occupant leaves (and across restarts).
    pub persistent: bool,
    /// Listed in the service's disco#items.
    pub public: bool,
    /// Only members (and above) may enter.
    pub members_only: bool,
    /// Only occupants with voice may speak; newcomers without affiliation are visitors.
    pub moderated: bool,
    /// The password to enter, if any.
    pub password: Option<String>,
    /// The most occupants (admins and owners may always enter).
    pub max_occupants: u32,
    /// Who sees real JIDs.
    pub whois: Whois,
    /// Whether participants may change the subject.
    pub change_subject: bool,
    /// Whether occupants may invite others (in a members-only room).
    pub allow_invites: bool,
    /// Who may send private messages.
    pub allow_pm: AllowPm,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            moderated: false,
            password: None,
            max_occupants: 200,
            whois: Whois::Moderators,
            change_subject: false,
            allow_invites: false,
            allow_pm: AllowPm::Anyone,
        }
    }
}

/// The `muc#roomconfig_maxusers` values offered (any number up to the service limit is
/// accepted).
/// Longest room name, in bytes: shown in every disco#items listing of the service and kept
/// in memory (and the store) for the life of the room; a name is a line, not a page.
const MAX_NAME_BYTES: usize = 1024;
/// Longest room description, in bytes (as [`MAX_NAME_BYTES`], a paragraph or a few).
const MAX_DESCRIPTION_BYTES: usize = 4096;

const MAX_USERS_OPTIONS: [u32; 6] = [10, 20, 50, 100, 200, 1000];

fn boolean(var: &str, label: &str, v: bool) -> Field {
    Field::new(var, "boolean", if v { "1" } else { "0" }).label(label)
}

impl RoomConfig {
    /// The configuration form (§10.2 example 163): current values, the choices of list fields.
    pub fn to_form(&self, limit: u32) -> Form {
        let mut max = Field::new(
            "muc#roomconfig_maxusers",
            "list-single",
            self.max_occupants.to_string(),
        )
        .label("Maximum number of occupants");
        let options: Vec<String> = MAX_USERS_OPTIONS
            .iter()
            .filter(|n| **n <= limit)
            .map(u32::to_string)
            .collect();
        max.options = options.into_iter().map(|o| (None, o)).collect();
        Form::new("form", ns::ROOMCONFIG)
            .with(
                Field::new("muc#roomconfig_roomname", "text-single", self.name.clone())
                    .label("Name"),
            )
            .with(
                Field::new(
                    "muc#roomconfig_roomdesc",
                    "text-single",
                    self.description.clone(),
                )
                .label("Description"),
            )
            .with(boolean(
                "muc#roomconfig_persistentroom",
                "Persistent",
                self.persistent,
            ))
            .with(boolean(
                "muc#roomconfig_publicroom",
                "Listed in the directory",
                self.public,
            ))
            .with(boolean(
                "muc#roomconfig_membersonly",
                "Members only",
                self.members_only,
            ))
            .with(boolean(
                "muc#roomconfig_moderatedroom",
                "Moderated",
                self.moderated,
            ))
            .with(boolean(
                "muc#roomconfig_passwordprotectedroom",
                "Password protected",
                self.password.is_some(),
            ))
            .with(
                Field::new(
                    "muc#roomconfig_roomsecret",
                    "text-private",
                    self.password.clone().unwrap_or_default(),
                )
                .label("Password"),
            )
            .with(max)
            .with(
                Field::new(
                    "muc#roomconfig_whois",
                    "list-single",
                    match self.whois {
                        Whois::Moderators => "moderators",
                        Whois::Anyone => "anyone",
                    },
                )
                .label("Who may see real JIDs")
                .options(&["moderators", "anyone"]),
            )
            .with(boolean(
                "muc#roomconfig_changesubject",
                "Participants may change the subject",
                self.change_subject,
            ))
            .with(boolean(
                "muc#roomconfig_allowinvites",
                "Occupants may invite",
                self.allow_invites,
            ))
            .with(
                Field::new(
                    "muc#roomconfig_allowpm",
                    "list-single",
                    self.allow_pm.as_str(),
                )
                .label("Who may send private messages")
                .options(&["anyone", "participants", "moderators", "none"]),
            )
    }

    /// This configuration with the submitted `form` applied (fields not in it keep their
    /// values; unknown fields are ignored, §10.2). `bad-request` for a wrong `FORM_TYPE` or
    /// a value out of range, and nothing is changed.
    pub fn apply(&self, form: &Form, limit: u32) -> Result<RoomConfig, MucError> {
        if form.form_type().is_some_and(|t| t != ns::ROOMCONFIG) {
            return Err(MucError::BadRequest("not a muc#roomconfig form"));
        }
        let mut c = self.clone();
        let flag = |var: &'static str, cur: bool| -> Result<bool, MucError> {
            match form.value(var) {
                None => Ok(cur),
                Some(v) => {
                    parse_bool(v).ok_or(MucError::BadRequest("a boolean field is not 0 or 1"))
                }
            }
        };
        if let Some(v) = form.value("muc#roomconfig_roomname") {
            bounded(v, MAX_NAME_BYTES, "the room name")?;
            c.name = v.to_string();
        }
        if let Some(v) = form.value("muc#roomconfig_roomdesc") {
            bounded(v, MAX_DESCRIPTION_BYTES, "the room description")?;
            c.description = v.to_string();
        }
        c.persistent = flag("muc#roomconfig_persistentroom", c.persistent)?;
        c.public = flag("muc#roomconfig_publicroom", c.public)?;
        c.members_only = flag("muc#roomconfig_membersonly", c.members_only)?;
        c.moderated = flag("muc#roomconfig_moderatedroom", c.moderated)?;
        c.change_subject = flag("muc#roomconfig_changesubject", c.change_subject)?;
        c.allow_invites = flag("muc#roomconfig_allowinvites", c.allow_invites)?;
        let protected = flag("muc#roomconfig_passwordprotectedroom", c.password.is_some())?;
        let secret = form
            .value("muc#roomconfig_roomsecret")
            .map(str::to_string)
            .or(c.password.take())
            .filter(|s| !s.is_empty());
        c.password = match (protected, secret) {
            (false, _) => None,
            (true, Some(s)) => Some(s),
            (true, None) => {
                return Err(MucError::BadRequest(
                    "a password-protected room needs a password",
                ))
            }
        };
        if let Some(v) = form.value("muc#roomconfig_maxusers") {
            let n: u32 = match v.trim() {
                "none" | "" => limit,
                n => n
                    .parse()
                    .map_err(|_| MucError::BadRequest("maxusers is not a number"))?,
            };
            if n == 0 || n > limit {
                return Err(MucError::BadRequest("maxusers out of range"));
            }
            c.max_occupants = n;
        }
        if let Some(v) = form.value("muc#roomconfig_whois") {
            c.whois = match v {
                "moderators" => Whois::Moderators,
                "anyone" => Whois::Anyone,
                _ => return Err(MucError::BadRequest("whois is moderators or anyone")),
            };
        }
        if let Some(v) = form.value("muc#roomconfig_allowpm") {
            c.allow_pm = match v {
                "anyone" => AllowPm::Anyone,
                "participants" => AllowPm::Participants,
                "moderators" => AllowPm::Moderators,
                "none" => AllowPm::None,
                _ => return Err(MucError::BadRequest("unknown allowpm value")),
            };
        }
        Ok(c)
    }

    /// The disco#info features of a room with this configuration (§6.4, §15.5.1).
    pub fn features(&self) -> [&'static str; 6] {
        [
            if self.password.is_some() {
                "muc_passwordprotected"
            } else {
                "muc_unsecured"
            },
            if self.members_only {
                "muc_membersonly"
            } else {
                "muc_open"
            },
            if self.moderated {
                "muc_moderated"
            } else {
                "muc_unmoderated"
            },
            match self.whois {
                Whois::Anyone => "muc_nonanonymous",
                Whois::Moderators => "muc_semianonymous",
            },
            if self.persistent {
                "muc_persistent"
            } else {
                "muc_temporary"
            },
            if self.public {
                "muc_public"
            } else {
                "muc_hidden"
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn submit(fields: &[(&str, &str)]) -> Form {
        let mut f = Form::new("submit", ns::ROOMCONFIG);
        for (k, v) in fields {
            f.push(Field::new(k, "text-single", *v));
        }
        f
    }

    #[test]
    fn form_round_trips_and_validates() {
        let c = RoomConfig::default();
        let form = Form::parse(&c.to_form(1000).to_element()).unwrap();
        assert_eq!(c.apply(&form, 1000).unwrap(), c);
        let changed = c
            .apply(
                &submit(&[
                    ("muc#roomconfig_membersonly", "1"),
                    ("muc#roomconfig_passwordprotectedroom", "1"),
                    ("muc#roomconfig_roomsecret", "cauldron"),
                    ("muc#roomconfig_whois", "anyone"),
                    ("muc#roomconfig_maxusers", "20"),
                ]),
                1000,
            )
            .unwrap();
        assert!(changed.members_only);
        assert_eq!(changed.password.as_deref(), Some("cauldron"));
        assert_eq!(changed.whois, Whois::Anyone);
        assert_eq!(changed.max_occupants, 20);
        assert_eq!(changed.features()[0], "muc_passwordprotected");
        for bad in [
            ("muc#roomconfig_maxusers", "5000"),
            ("muc#roomconfig_maxusers", "many"),
            ("muc#roomconfig_whois", "everyone"),
            ("muc#roomconfig_moderatedroom", "yes"),
            ("muc#roomconfig_passwordprotectedroom", "1"),
        ] {
            assert!(c.apply(&submit(&[bad]), 1000).is_err(), "{bad:?}");
        }
        let wrong = Form::new("submit", "urn:example");
        assert!(c.apply(&wrong, 1000).is_err());
    }
}
