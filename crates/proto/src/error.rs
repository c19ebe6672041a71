//! Error conditions: stanza errors (RFC 6120 §8.3) and stream errors (RFC 6120 §4.9).
//!
//! Both are closed enums of the conditions the RFC defines. Code elsewhere produces these
//! values from its own error enums (one `From` at each crate boundary); only this module knows
//! how they look on the wire.

use rookery_xml::{Element, CONTENT_NS};

use crate::ns;

/// Declares a condition enum with its wire names, both ways.
macro_rules! conditions {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }
        impl $name {
            /// The element name of this condition on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire,)* }
            }
            /// The condition with element name `s`.
            pub fn from_name(s: &str) -> Option<Self> {
                match s { $($wire => Some($name::$variant),)* _ => None }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

conditions!(
    /// RFC 6120 §8.3.3 stanza error conditions.
    StanzaErrorCondition {
        /// §8.3.3.1
        BadRequest => "bad-request",
        /// §8.3.3.2
        Conflict => "conflict",
        /// §8.3.3.3
        FeatureNotImplemented => "feature-not-implemented",
        /// §8.3.3.4
        Forbidden => "forbidden",
        /// §8.3.3.5
        Gone => "gone",
        /// §8.3.3.6
        InternalServerError => "internal-server-error",
        /// §8.3.3.7
        ItemNotFound => "item-not-found",
        /// §8.3.3.8
        JidMalformed => "jid-malformed",
        /// §8.3.3.9
        NotAcceptable => "not-acceptable",
        /// §8.3.3.10
        NotAllowed => "not-allowed",
        /// §8.3.3.11
        NotAuthorized => "not-authorized",
        /// §8.3.3.12
        PolicyViolation => "policy-violation",
        /// §8.3.3.13
        RecipientUnavailable => "recipient-unavailable",
        /// §8.3.3.14
        Redirect => "redirect",
        /// §8.3.3.15
        RegistrationRequired => "registration-required",
        /// §8.3.3.16
        RemoteServerNotFound => "remote-server-not-found",
        /// §8.3.3.17
        RemoteServerTimeout => "remote-server-timeout",
        /// §8.3.3.18
        ResourceConstraint => "resource-constraint",
        /// §8.3.3.19
        ServiceUnavailable => "service-unavailable",
        /// §8.3.3.20
        SubscriptionRequired => "subscription-required",
        /// §8.3.3.21
        UndefinedCondition => "undefined-condition",
        /// §8.3.3.22
        UnexpectedRequest => "unexpected-request",
    }
);

impl StanzaErrorCondition {
    /// The error type RFC 6120 §8.3.3 gives in its examples for this condition.
    pub fn default_type(self) -> ErrorType {
        use StanzaErrorCondition::*;
        match self {
            BadRequest | JidMalformed | NotAcceptable | Redirect | Gone => ErrorType::Modify,
            Conflict
            | FeatureNotImplemented
            | ItemNotFound
            | NotAllowed
            | ServiceUnavailable
            | RemoteServerNotFound => ErrorType::Cancel,
            Forbidden | NotAuthorized | RegistrationRequired | SubscriptionRequired => {
                ErrorType::Auth
            }
            InternalServerError | UndefinedCondition => ErrorType::Cancel,
            PolicyViolation => ErrorType::Modify,
            RecipientUnavailable | RemoteServerTimeout | ResourceConstraint | UnexpectedRequest => {
                ErrorType::Wait
            }
        }
    }
}

conditions!(
    /// RFC 6120 §8.3.2 error types.
    ErrorType {
        /// Do not retry.
        Cancel => "cancel",
        /// Proceed (the condition was only a warning).
        Continue => "continue",
        /// Retry after changing the data sent.
        Modify => "modify",
        /// Retry after providing credentials.
        Auth => "auth",
        /// Retry after waiting.
        Wait => "wait",
    }
);

/// A stanza error (RFC 6120 §8.3): type, defined condition, optional text and app condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{condition} ({error_type}){}", text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
pub struct StanzaError {
    /// The error type.
    pub error_type: ErrorType,
    /// The defined condition.
    pub condition: StanzaErrorCondition,
    /// Human-readable text (English).
    pub text: Option<String>,
    /// An application-specific condition element (e.g. a pubsub error child); boxed to keep
    /// `Result<_, StanzaError>` small.
    pub app: Option<Box<Element>>,
}

impl StanzaError {
    /// An error with the condition's default type and no text.
    pub fn new(condition: StanzaErrorCondition) -> Self {
        StanzaError {
            error_type: condition.default_type(),
            condition,
            text: None,
            app: None,
        }
    }

    /// Adds a human-readable text.
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Overrides the error type.
    #[must_use]
    pub fn with_type(mut self, t: ErrorType) -> Self {
        self.error_type = t;
        self
    }

    /// Adds an application-specific condition.
    #[must_use]
    pub fn with_app(mut self, app: Element) -> Self {
        self.app = Some(Box::new(app));
        self
    }

    /// The `<error/>` child of an error stanza.
    pub fn to_element(&self) -> Element {
        let mut el = Element::new("error", CONTENT_NS)
            .with_attr("type", self.error_type.as_str())
            .with_child(Element::new(self.condition.as_str(), ns::STANZAS));
        if let Some(text) = &self.text {
            el.push_child(
                Element::new("text", ns::STANZAS)
                    .with_attr("xml:lang", "en")
                    .with_text(text.clone()),
            );
        }
        if let Some(app) = &self.app {
            el.push_child(app.as_ref().clone());
        }
        el
    }

    /// Reads an `<error/>` child back (for errors routed through the server).
    pub fn from_element(el: &Element) -> Option<StanzaError> {
        let error_type = ErrorType::from_name(el.attr("type")?)?;
        let condition = el
            .children()
            .filter(|c| c.ns() == ns::STANZAS)
            .find_map(|c| StanzaErrorCondition::from_name(c.name()))?;
        Some(StanzaError {
            error_type,
            condition,
            text: el.child_text("text", ns::STANZAS),
            app: el
                .children()
                .find(|c| c.ns() != ns::STANZAS)
                .map(|c| Box::new(c.clone())),
        })
    }
}

impl From<StanzaErrorCondition> for StanzaError {
    fn from(c: StanzaErrorCondition) -> Self {
        StanzaError::new(c)
    }
}

conditions!(
    /// RFC 6120 §4.9.3 stream error conditions.
    StreamErrorCondition {
        /// §4.9.3.1
        BadFormat => "bad-format",
        /// §4.9.3.2
        BadNamespacePrefix => "bad-namespace-prefix",
        /// §4.9.3.3
        Conflict => "conflict",
        /// §4.9.3.4
        ConnectionTimeout => "connection-timeout",
        /// §4.9.3.5
        HostGone => "host-gone",
        /// §4.9.3.6
        HostUnknown => "host-unknown",
        /// §4.9.3.7
        ImproperAddressing => "improper-addressing",
        /// §4.9.3.8
        InternalServerError => "internal-server-error",
        /// §4.9.3.9
        InvalidFrom => "invalid-from",
        /// §4.9.3.10
        InvalidNamespace => "invalid-namespace",
        /// §4.9.3.11
        InvalidXml => "invalid-xml",
        /// §4.9.3.12
        NotAuthorized => "not-authorized",
        /// §4.9.3.13
        NotWellFormed => "not-well-formed",
        /// §4.9.3.14
        PolicyViolation => "policy-violation",
        /// §4.9.3.15
        RemoteConnectionFailed => "remote-connection-failed",
        /// §4.9.3.16
        Reset => "reset",
        /// §4.9.3.17
        ResourceConstraint => "resource-constraint",
        /// §4.9.3.18
        RestrictedXml => "restricted-xml",
        /// §4.9.3.19
        SeeOtherHost => "see-other-host",
        /// §4.9.3.20
        SystemShutdown => "system-shutdown",
        /// §4.9.3.21
        UndefinedCondition => "undefined-condition",
        /// §4.9.3.22
        UnsupportedEncoding => "unsupported-encoding",
        /// §4.9.3.23
        UnsupportedFeature => "unsupported-feature",
        /// §4.9.3.24
        UnsupportedStanzaType => "unsupported-stanza-type",
        /// §4.9.3.25
        UnsupportedVersion => "unsupported-version",
    }
);

/// A stream error (RFC 6120 §4.9): the condition and optional text. Fatal to the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream error {condition}{}", text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
pub struct StreamError {
    /// The defined condition.
    pub condition: StreamErrorCondition,
    /// Human-readable text (English).
    pub text: Option<String>,
}

impl StreamError {
    /// A stream error with `condition` and no text.
    pub fn new(condition: StreamErrorCondition) -> Self {
        StreamError {
            condition,
            text: None,
        }
    }

    /// A stream error with `condition` and a human-readable text.
    pub fn with_text(condition: StreamErrorCondition, text: impl Into<String>) -> Self {
        StreamError {
            condition,
            text: Some(text.into()),
        }
    }

    /// The `<stream:error/>` element.
    pub fn to_element(&self) -> Element {
        let mut el = Element::new("error", ns::STREAM)
            .with_child(Element::new(self.condition.as_str(), ns::STREAM_ERRORS));
        if let Some(text) = &self.text {
            el.push_child(
                Element::new("text", ns::STREAM_ERRORS)
                    .with_attr("xml:lang", "en")
                    .with_text(text.clone()),
            );
        }
        el
    }
}

impl From<&rookery_xml::XmlError> for StreamError {
    fn from(e: &rookery_xml::XmlError) -> Self {
        let condition = StreamErrorCondition::from_name(e.condition())
            .unwrap_or(StreamErrorCondition::NotWellFormed);
        StreamError::with_text(condition, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanza_error_round_trips() {
        let e = StanzaError::new(StanzaErrorCondition::ServiceUnavailable).with_text("nope");
        let el = e.to_element();
        assert_eq!(
            el.to_string(),
            "<error type=\"cancel\"><service-unavailable xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/>\
             <text xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\" xml:lang=\"en\">nope</text></error>"
        );
        assert_eq!(StanzaError::from_element(&el), Some(e));
    }

    #[test]
    fn xml_errors_map_to_stream_conditions() {
        let e = rookery_xml::XmlError::Restricted("doctype");
        assert_eq!(
            StreamError::from(&e).condition,
            StreamErrorCondition::RestrictedXml
        );
    }
}
