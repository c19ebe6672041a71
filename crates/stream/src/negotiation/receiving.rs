//! Steps of the receiving entity shared by every listener: answering the peer's stream
//! header and judging it (RFC 6120 §4.7, with the checks of [`crate::header`]), and the
//! STARTTLS offer and its `<proceed/>` (§5.4.2, §5.4.3.3).

use rookery_proto::{ns, StreamError, StreamErrorCondition as SEC};
use rookery_xml::{Element, StreamHeader};

use super::Action;
use crate::conn::new_stream_id;
use crate::header;

/// How a role judged the `to` of a header, and how to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The domain to speak as, when the header named another hosted domain than the default.
    pub from: Option<String>,
    /// The `to` of our header (the peer's `from`, as the role reads it).
    pub to: Option<String>,
    /// Whether we serve the domain the header's `to` named (or it named none).
    pub host_ok: bool,
}

/// Answers a stream header and judges it: our header goes first, so an error can follow
/// on an open stream; then the errors in the order the RFC gives them: namespace
/// (§4.9.3.10), host (§4.9.3.6), version (§4.9.3.25). Returns the actions and the stream id
/// we gave, and whether the header passed (no [`Action::Fail`] among the actions).
pub fn answer_header<Q, D>(
    header: &StreamHeader,
    content_ns: &str,
    answer: Answer,
) -> (Vec<Action<Q, D>>, String, bool) {
    let id = new_stream_id();
    let mut actions = vec![Action::SendHeader {
        from: answer.from,
        to: answer.to,
        id: id.clone(),
    }];
    let verdict = header::check_namespace(header, content_ns)
        .and_then(|()| {
            if answer.host_ok {
                Ok(())
            } else {
                Err(StreamError::with_text(
                    SEC::HostUnknown,
                    "this server does not serve that domain",
                ))
            }
        })
        .and_then(|()| header::check_version(header));
    let ok = verdict.is_ok();
    if let Err(e) = verdict {
        actions.push(Action::Fail(e));
    }
    (actions, id, ok)
}

/// The `<starttls/>` feature, with `<required/>` when TLS is mandatory (§5.3.1).
pub fn starttls_feature(required: bool) -> Element {
    let mut starttls = Element::new("starttls", ns::TLS);
    if required {
        starttls.push_child(Element::new("required", ns::TLS));
    }
    starttls
}

/// Whether `el` asks for STARTTLS.
pub fn is_starttls(el: &Element) -> bool {
    el.is("starttls", ns::TLS)
}

/// The answer to `<starttls/>`: `<proceed/>`, then the handshake (§5.4.2.3).
pub fn proceed<Q, D>() -> [Action<Q, D>; 2] {
    [
        Action::Send(Element::new("proceed", ns::TLS)),
        Action::StartTls,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(to: Option<&str>, version: &str) -> StreamHeader {
        let mut attrs = vec![("version".to_string(), version.to_string())];
        if let Some(t) = to {
            attrs.push(("to".to_string(), t.to_string()));
        }
        StreamHeader {
            default_ns: ns::CLIENT.into(),
            prefixes: Vec::new(),
            attrs,
        }
    }

    fn ok_answer(host_ok: bool) -> Answer {
        Answer {
            from: None,
            to: Some("peer".into()),
            host_ok,
        }
    }

    /// Our header goes out before any error, and the errors come in the RFC's order.
    #[test]
    fn header_first_then_the_first_error() {
        let (a, id, ok) =
            answer_header::<(), ()>(&header(None, "1.0"), ns::CLIENT, ok_answer(true));
        assert!(ok);
        assert_eq!(id.len(), 32);
        assert!(matches!(&a[..], [Action::SendHeader { to: Some(t), .. }] if t == "peer"));

        let (a, _, ok) =
            answer_header::<(), ()>(&header(None, "2.0"), ns::SERVER, ok_answer(false));
        assert!(!ok);
        assert!(
            matches!(&a[..], [Action::SendHeader { .. }, Action::Fail(e)] if e.condition == SEC::InvalidNamespace)
        );
        let (a, _, _) = answer_header::<(), ()>(&header(None, "2.0"), ns::CLIENT, ok_answer(false));
        assert!(matches!(&a[..], [_, Action::Fail(e)] if e.condition == SEC::HostUnknown));
        let (a, _, _) = answer_header::<(), ()>(&header(None, "2.0"), ns::CLIENT, ok_answer(true));
        assert!(matches!(&a[..], [_, Action::Fail(e)] if e.condition == SEC::UnsupportedVersion));
    }

    #[test]
    fn starttls_offer_and_proceed() {
        assert!(starttls_feature(true).has_child("required", ns::TLS));
        assert!(!starttls_feature(false).has_child("required", ns::TLS));
        let [send, start] = proceed::<(), ()>();
        assert!(matches!(send, Action::Send(el) if el.is("proceed", ns::TLS)));
        assert_eq!(start, Action::StartTls);
    }
}
