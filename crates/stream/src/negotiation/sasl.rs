//! SASL in XMPP streams (RFC 6120 §6.4), both sides, over any mechanism.
//!
//! Receiving side: an [`Exchange`] carries one authentication attempt from `<auth/>` to
//! success or failure: challenges out, `<response/>`/`<abort/>` in, credential lookups asked
//! of the role. The mechanism is a [`SaslServer`]: `rookery_sasl`'s SCRAM/PLAIN session for
//! clients, EXTERNAL for servers. What a success means (the identity, the authzid rule) and
//! what a failure costs (counting, limits) are the role's.
//!
//! Initiating side: [`auth`] builds the request and [`reply`] classifies what the receiving
//! server answered.

use base64::Engine;
use rookery_proto::ns;
use rookery_sasl::{Credentials, ServerSession, Step};
use rookery_xml::Element;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A mechanism's server side, stepped by an [`Exchange`].
pub trait SaslServer {
    /// Feeds the client's decoded `<response/>`.
    fn respond(&mut self, response: &[u8]) -> Step;
    /// Hands over the credentials asked for by [`Step::NeedCredentials`].
    fn provide_credentials(&mut self, creds: Option<&Credentials>) -> Step;
}

impl SaslServer for ServerSession {
    fn respond(&mut self, response: &[u8]) -> Step {
        ServerSession::respond(self, response)
    }

    fn provide_credentials(&mut self, creds: Option<&Credentials>) -> Step {
        ServerSession::provide_credentials(self, creds)
    }
}

/// Where an exchange stands after an input.
#[derive(Debug, PartialEq)]
pub enum Progress {
    /// Send this `<challenge/>` and feed the next element to [`Exchange::element`].
    Challenge(Element),
    /// Look up this authentication identity's credentials and feed them to
    /// [`Exchange::credentials`].
    NeedCredentials(String),
    /// The mechanism succeeded; the role checks the identity before sending [`success`].
    Success {
        /// The authentication identity.
        username: String,
        /// The authorization identity asked for, if any.
        authzid: Option<String>,
        /// Data for `<success/>`.
        additional_data: Option<Vec<u8>>,
    },
    /// The attempt failed with this SASL condition (§6.5); send [`failure`].
    Failure(&'static str),
}

impl Progress {
    /// The progress a mechanism step means, in RFC 6120 SASL.
    pub fn from_step(step: Step) -> Progress {
        Progress::from_step_in(step, ns::SASL)
    }

    /// The progress a mechanism step means, its challenge in namespace `ns` (RFC 6120
    /// SASL, or XEP-0388 SASL2, whose `<challenge/>` has the same shape).
    pub fn from_step_in(step: Step, ns: &str) -> Progress {
        match step {
            Step::Challenge(data) => {
                let text = if data.is_empty() && ns == ns::SASL {
                    // RFC 6120 §6.4.2: "=" for empty data. SASL2 has no such convention
                    // (XEP-0388 "SASL Data Encoding": an empty element is the empty
                    // string), so there the base64 of nothing, "", is sent.
                    "=".to_string()
                } else {
                    B64.encode(&data)
                };
                Progress::Challenge(Element::new("challenge", ns).with_text(text))
            }
            Step::NeedCredentials { username } => Progress::NeedCredentials(username),
            Step::Success {
                username,
                authzid,
                additional_data,
            } => Progress::Success {
                username,
                authzid,
                additional_data,
            },
            Step::Failure(f) => Progress::Failure(f.condition()),
        }
    }
}

/// One authentication attempt on the receiving side.
#[derive(Debug)]
pub struct Exchange<S> {
    server: S,
    /// The namespace of `<challenge/>`, `<response/>` and `<abort/>`: RFC 6120 SASL or
    /// XEP-0388 SASL2, which share their shape.
    ns: &'static str,
}

impl<S: SaslServer> Exchange<S> {
    /// An RFC 6120 exchange over a mechanism session that was just started.
    pub fn new(server: S) -> Self {
        Exchange::in_ns(server, ns::SASL)
    }

    /// An exchange whose challenges and responses are in namespace `ns` (XEP-0388 SASL2).
    pub fn in_ns(server: S, ns: &'static str) -> Self {
        Exchange { server, ns }
    }

    /// The progress the mechanism's first step means, in this exchange's namespace.
    pub fn first(&self, step: Step) -> Progress {
        Progress::from_step_in(step, self.ns)
    }

    /// The namespace of the exchange: RFC 6120 SASL or XEP-0388 SASL2.
    pub fn ns(&self) -> &'static str {
        self.ns
    }

    /// The mechanism session.
    pub fn server_mut(&mut self) -> &mut S {
        &mut self.server
    }

    /// The peer's answer to a challenge: `<response/>` goes to the mechanism; `<abort/>` ends
    /// the attempt with `aborted`, anything else with `malformed-request` (§6.4.2, §6.4.3;
    /// XEP-0388 §2.4).
    pub fn element(&mut self, el: &Element) -> Progress {
        if el.is("abort", self.ns) {
            return Progress::Failure("aborted");
        }
        if !el.is("response", self.ns) {
            return Progress::Failure("malformed-request");
        }
        match decode(el) {
            Ok(data) => Progress::from_step_in(self.server.respond(&data), self.ns),
            Err(condition) => Progress::Failure(condition),
        }
    }

    /// The credentials the exchange asked for (`None`: no such account).
    pub fn credentials(&mut self, creds: Option<&Credentials>) -> Progress {
        Progress::from_step_in(self.server.provide_credentials(creds), self.ns)
    }
}

/// The mechanism an `<auth/>` names.
pub fn mechanism(auth: &Element) -> Option<&str> {
    auth.attr("mechanism")
}

/// The initial response of an `<auth/>`: `None` when it carries none, empty for `=`
/// (§6.4.2); `incorrect-encoding` when it is not base64.
pub fn initial_response(auth: &Element) -> Result<Option<Vec<u8>>, &'static str> {
    if auth.text().trim().is_empty() {
        return Ok(None);
    }
    decode(auth).map(Some)
}

/// The base64 payload of a SASL element (`=` is empty).
pub(crate) fn decode(el: &Element) -> Result<Vec<u8>, &'static str> {
    let text = el.text();
    let t = text.trim();
    if t == "=" {
        return Ok(Vec::new());
    }
    B64.decode(t).map_err(|_| "incorrect-encoding")
}

/// `<success/>`, with the mechanism's additional data.
pub fn success(additional_data: Option<Vec<u8>>) -> Element {
    let mut success = Element::new("success", ns::SASL);
    if let Some(d) = additional_data {
        success.push_text(B64.encode(d));
    }
    success
}

/// `<failure/>` with a condition.
pub fn failure(condition: &str) -> Element {
    Element::new("failure", ns::SASL).with_child(Element::new(condition, ns::SASL))
}

/// The `<mechanisms/>` feature listing `names`.
pub fn mechanisms<'a>(names: impl IntoIterator<Item = &'a str>) -> Element {
    let mut mechs = Element::new("mechanisms", ns::SASL);
    for name in names {
        mechs.push_child(Element::new("mechanism", ns::SASL).with_text(name));
    }
    mechs
}

/// Whether a `<features/>` offers `mechanism`.
pub fn offers(features: &Element, mechanism: &str) -> bool {
    features.get_child("mechanisms", ns::SASL).is_some_and(|m| {
        m.children()
            .any(|c| c.name() == "mechanism" && c.text().trim() == mechanism)
    })
}

/// The initiating side's `<auth/>` with its initial response.
pub fn auth(mechanism: &str, initial: &[u8]) -> Element {
    Element::new("auth", ns::SASL)
        .with_attr("mechanism", mechanism)
        .with_text(B64.encode(initial))
}

/// What the receiving server answered to the initiating side.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// `<challenge/>`.
    Challenge,
    /// `<success/>`.
    Success,
    /// `<failure/>`.
    Failure,
    /// Something that has no place in a SASL exchange.
    Other,
}

/// Classifies an element the initiating side received during SASL.
pub fn reply(el: &Element) -> Reply {
    if el.ns() != ns::SASL {
        return Reply::Other;
    }
    match el.name() {
        "challenge" => Reply::Challenge,
        "success" => Reply::Success,
        "failure" => Reply::Failure,
        _ => Reply::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rookery_sasl::Mechanism;

    fn el(name: &str, text: &str) -> Element {
        Element::new(name, ns::SASL).with_text(text)
    }

    #[test]
    fn initial_response_none_empty_or_decoded() {
        assert_eq!(initial_response(&el("auth", "")), Ok(None));
        assert_eq!(initial_response(&el("auth", "=")), Ok(Some(Vec::new())));
        assert_eq!(
            initial_response(&el("auth", "YQ==")),
            Ok(Some(b"a".to_vec()))
        );
        assert_eq!(
            initial_response(&el("auth", "!!")),
            Err("incorrect-encoding")
        );
    }

    /// PLAIN without an initial response: an empty challenge (`=`), then the response
    /// asks for credentials; abort, bad base64 and strays end the attempt.
    #[test]
    fn challenge_response_abort() {
        let (server, step) = ServerSession::start(Mechanism::Plain, None, false, b"");
        let p = Progress::from_step(step);
        assert_eq!(p, Progress::Challenge(el("challenge", "=")));
        // In SASL2 an empty challenge is an empty element.
        let sasl2 =
            Progress::from_step_in(Step::Challenge(Vec::new()), crate::negotiation::sasl2::NS);
        assert!(
            matches!(&sasl2, Progress::Challenge(c) if c.text().is_empty()),
            "{sasl2:?}"
        );
        let mut x = Exchange::new(server);
        assert_eq!(
            x.element(&el("response", "AGFsaWNlAHNlY3JldA==")),
            Progress::NeedCredentials("alice".into())
        );
        assert_eq!(x.credentials(None), Progress::Failure("not-authorized"));

        let (server, _) = ServerSession::start(Mechanism::Plain, None, false, b"");
        let mut x = Exchange::new(server);
        assert_eq!(x.element(&el("abort", "")), Progress::Failure("aborted"));
        assert_eq!(
            x.element(&el("auth", "")),
            Progress::Failure("malformed-request")
        );
        assert_eq!(
            x.element(&el("response", "%%")),
            Progress::Failure("incorrect-encoding")
        );
    }

    #[test]
    fn initiating_side() {
        let features = rookery_proto::stream::features().with_child(mechanisms(["EXTERNAL"]));
        assert!(offers(&features, "EXTERNAL"));
        assert!(!offers(&features, "PLAIN"));
        assert_eq!(auth("EXTERNAL", b"a.test").text(), "YS50ZXN0");
        assert_eq!(reply(&el("success", "")), Reply::Success);
        assert_eq!(reply(&el("failure", "")), Reply::Failure);
        assert_eq!(reply(&el("challenge", "")), Reply::Challenge);
        assert_eq!(reply(&Element::new("success", ns::TLS)), Reply::Other);
        assert_eq!(success(Some(b"v".to_vec())).text(), "dg==");
        assert!(failure("aborted").has_child("aborted", ns::SASL));
    }
}
