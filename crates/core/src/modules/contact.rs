//! XEP-0157: Contact Addresses for XMPP Services — the addresses an operator publishes (abuse,
//! admin, feedback, sales, security, support) as an XEP-0128 extended-info form in the
//! server's disco#info, so clients and other servers know whom to tell about spam or a
//! security problem.

use async_trait::async_trait;
use rookery_proto::form::{Field, Form};
use serde::Deserialize;

use crate::module::{Declaration, Module};

/// The `FORM_TYPE` of the form (XEP-0157 §4).
pub const FORM_TYPE: &str = "http://jabber.org/network/serverinfo";

/// `[contact]`: URIs per role (`mailto:`, `xmpp:`, `https:` …). Empty lists are left out of
/// the form; with every list empty there is no form at all.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ContactConfig {
    /// Where to report abuse (spam, harassment).
    pub abuse: Vec<String>,
    /// The service's administrators.
    pub admin: Vec<String>,
    /// Feedback about the service.
    pub feedback: Vec<String>,
    /// Sales.
    pub sales: Vec<String>,
    /// Security reports.
    pub security: Vec<String>,
    /// User support.
    pub support: Vec<String>,
}

impl ContactConfig {
    /// The extended-info form, or `None` when no address is configured.
    pub fn form(&self) -> Option<Form> {
        let roles = [
            ("abuse-addresses", &self.abuse),
            ("admin-addresses", &self.admin),
            ("feedback-addresses", &self.feedback),
            ("sales-addresses", &self.sales),
            ("security-addresses", &self.security),
            ("support-addresses", &self.support),
        ];
        if roles.iter().all(|(_, v)| v.is_empty()) {
            return None;
        }
        let mut form = Form::new("result", FORM_TYPE);
        for (var, uris) in roles {
            if !uris.is_empty() {
                form.push(Field {
                    var: var.to_string(),
                    kind: Some("list-multi"),
                    values: uris.clone(),
                    ..Field::default()
                });
            }
        }
        Some(form)
    }
}

/// Publishes the configured addresses in the server's disco#info.
pub struct Contact {
    /// The configured addresses.
    pub config: ContactConfig,
}

#[async_trait]
impl Module for Contact {
    fn name(&self) -> &'static str {
        "contact"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            server_info: self
                .config
                .form()
                .map(|f| f.to_element())
                .into_iter()
                .collect(),
            ..Declaration::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn no_addresses_no_form() {
        assert!(ContactConfig::default().form().is_none());
    }

    #[test]
    fn only_configured_roles_are_listed() {
        let c = ContactConfig {
            abuse: vec!["mailto:abuse@example.org".into()],
            security: vec![
                "xmpp:sec@example.org".into(),
                "https://example.org/sec".into(),
            ],
            ..ContactConfig::default()
        };
        let form = c.form().unwrap();
        assert_eq!(form.form_type(), Some(FORM_TYPE));
        assert_eq!(
            form.get("security-addresses").unwrap().values,
            ["xmpp:sec@example.org", "https://example.org/sec"]
        );
        assert!(form.get("admin-addresses").is_none());
    }
}
