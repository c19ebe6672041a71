//! The entities of XEP-0060 §4: affiliations, subscription states, subscriptions with their
//! options (§6.3, FORM_TYPE `pubsub#subscribe_options`) and items.

use rookery_jid::Jid;
use rookery_xml::Element;

use crate::form::{parse_bool, Field, Form};
use crate::ns;

/// An affiliation (§4.1), most to least privileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Affiliation {
    /// Manages the node.
    Owner,
    /// Publishes and retracts; subscribes and retrieves.
    Publisher,
    /// Publishes and retracts own items only; may not subscribe or retrieve.
    PublishOnly,
    /// Subscribes and retrieves (the whitelist of `whitelist` nodes).
    Member,
    /// No affiliation.
    None,
    /// Banned.
    Outcast,
}

impl Affiliation {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Owner => "owner",
            Affiliation::Publisher => "publisher",
            Affiliation::PublishOnly => "publish-only",
            Affiliation::Member => "member",
            Affiliation::None => "none",
            Affiliation::Outcast => "outcast",
        }
    }

    /// Parses a wire value.
    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "owner" => Affiliation::Owner,
            "publisher" => Affiliation::Publisher,
            "publish-only" => Affiliation::PublishOnly,
            "member" => Affiliation::Member,
            "none" => Affiliation::None,
            "outcast" => Affiliation::Outcast,
            _ => return None,
        })
    }

    /// May publish under the `publishers` model.
    pub fn can_publish(self) -> bool {
        matches!(
            self,
            Affiliation::Owner | Affiliation::Publisher | Affiliation::PublishOnly
        )
    }

    /// Counts as whitelisted: subscribes and retrieves whatever the access model.
    pub fn is_member(self) -> bool {
        matches!(
            self,
            Affiliation::Owner | Affiliation::Publisher | Affiliation::Member
        )
    }
}

/// A subscription state (§4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubState {
    /// Approved.
    Subscribed,
    /// Awaiting the owner's approval (`authorize`).
    Pending,
    /// Awaiting the subscriber's configuration.
    Unconfigured,
}

impl SubState {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            SubState::Subscribed => "subscribed",
            SubState::Pending => "pending",
            SubState::Unconfigured => "unconfigured",
        }
    }

    /// Parses a wire value (`none` is not a state: it is the absence of a subscription).
    pub fn parse(s: &str) -> Option<SubState> {
        Some(match s {
            "subscribed" => SubState::Subscribed,
            "pending" => SubState::Pending,
            "unconfigured" => SubState::Unconfigured,
            _ => return None,
        })
    }
}

/// Subscription options (§6.3). Only what the engine honours is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubOptions {
    /// `pubsub#deliver`: whether notifications are sent at all.
    pub deliver: bool,
}

impl Default for SubOptions {
    fn default() -> Self {
        SubOptions { deliver: true }
    }
}

impl SubOptions {
    /// The options form (§6.3.2), or its stored `submit` copy.
    pub fn to_form(self, kind: &str) -> Form {
        Form::new(kind, ns::SUBSCRIBE_OPTIONS).with(
            Field::new(
                "pubsub#deliver",
                "boolean",
                if self.deliver { "1" } else { "0" },
            )
            .label("Enable delivery?"),
        )
    }

    /// Applies a submitted options form (§6.3.5); `None` if a value is invalid or the
    /// FORM_TYPE is not `subscribe_options`.
    pub fn apply(self, form: &Form) -> Option<SubOptions> {
        if !matches!(form.form_type(), None | Some(ns::SUBSCRIBE_OPTIONS)) {
            return None;
        }
        let mut next = self;
        for f in form.data_fields() {
            if f.var == "pubsub#deliver" {
                next.deliver = parse_bool(f.value().unwrap_or_default())?;
            }
        }
        Some(next)
    }

    /// The stored form: empty for the defaults.
    pub fn to_stored(self) -> String {
        if self == SubOptions::default() {
            return String::new();
        }
        self.to_form("submit").to_element().to_string()
    }

    /// Reads a stored form (defaults when empty or unreadable).
    pub fn from_stored(s: &str) -> SubOptions {
        crate::xml::parse(s)
            .and_then(|el| Form::parse(&el))
            .and_then(|f| SubOptions::default().apply(&f))
            .unwrap_or_default()
    }
}

/// A subscription (§4.2): one per SubID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The SubID.
    pub subid: String,
    /// The subscribed JID, bare or full as requested.
    pub jid: Jid,
    /// Its state.
    pub state: SubState,
    /// Its options.
    pub options: SubOptions,
}

/// A published item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The ItemID.
    pub id: String,
    /// Who published it (a JID, as text).
    pub publisher: String,
    /// The payload; `None` for notification-only nodes.
    pub payload: Option<Element>,
    /// Publication order within the node (higher is newer).
    pub seq: i64,
    /// When it was published, seconds since the Unix epoch.
    pub updated_at: i64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn options_round_trip() {
        let o = SubOptions { deliver: false };
        assert_eq!(SubOptions::from_stored(&o.to_stored()), o);
        assert_eq!(SubOptions::default().to_stored(), "");
        assert_eq!(SubOptions::from_stored(""), SubOptions::default());
        let mut bad = Form::new("submit", ns::SUBSCRIBE_OPTIONS);
        bad.push(Field::new("pubsub#deliver", "boolean", "perhaps"));
        assert_eq!(SubOptions::default().apply(&bad), None);
    }

    #[test]
    fn affiliation_order_and_rights() {
        for a in [
            "owner",
            "publisher",
            "publish-only",
            "member",
            "none",
            "outcast",
        ] {
            assert_eq!(Affiliation::parse(a).unwrap().as_str(), a);
        }
        assert!(Affiliation::PublishOnly.can_publish());
        assert!(!Affiliation::PublishOnly.is_member());
        assert!(!Affiliation::Outcast.is_member());
    }
}
