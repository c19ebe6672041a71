//! XEP-0059 Result Set Management: a request's `<set/>` (`max`, `after`, `before`, empty
//! `before` for the last page) read into a [`Request`], and the `<set/>` of an answer. Shared
//! by the archives (XEP-0313) and pubsub item retrieval (XEP-0060 §6.5.4), which page the
//! same way.

use rookery_xml::Element;

use crate::ns::RSM;

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Anchor {
    /// From the start of the result set, forwards.
    #[default]
    First,
    /// After this id, forwards.
    After(String),
    /// The last page (an empty `<before/>`), backwards.
    Last,
    /// Before this id, backwards.
    Before(String),
}

impl Anchor {
    /// Whether the page is taken from the end (`before`).
    pub fn from_end(&self) -> bool {
        matches!(self, Anchor::Last | Anchor::Before(_))
    }
}

/// A request's `<set/>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// `<max/>`, if given (the responder may return fewer: §2.1).
    pub max: Option<u64>,
    /// Where the page starts.
    pub anchor: Anchor,
}

/// Why a `<set/>` is refused. Each user maps it to its own wire error once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RsmError {
    /// `<index/>` (§2.5): pages here are anchored by id; answered, not ignored.
    #[error("RSM index is not supported")]
    Index,
    /// `<max/>` is not a non-negative integer.
    #[error("RSM max is not a number")]
    BadMax,
    /// `<after/>` and `<before/>` together.
    #[error("RSM after and before together")]
    AfterAndBefore,
    /// An empty `<after/>` (only `<before/>` may be empty: §2.5).
    #[error("empty RSM after")]
    EmptyAfter,
}

/// Reads a `<set xmlns='http://jabber.org/protocol/rsm'/>`.
pub fn parse(set: &Element) -> Result<Request, RsmError> {
    if set.has_child("index", RSM) {
        return Err(RsmError::Index);
    }
    let max = match set.child_text("max", RSM) {
        Some(m) => Some(m.trim().parse().map_err(|_| RsmError::BadMax)?),
        None => None,
    };
    let after = set.child_text("after", RSM);
    let before = set.get_child("before", RSM).map(Element::text);
    let anchor = match (after, before) {
        (Some(_), Some(_)) => return Err(RsmError::AfterAndBefore),
        (Some(a), None) if a.trim().is_empty() => return Err(RsmError::EmptyAfter),
        (Some(a), None) => Anchor::After(a.trim().to_string()),
        (None, Some(b)) if b.trim().is_empty() => Anchor::Last,
        (None, Some(b)) => Anchor::Before(b.trim().to_string()),
        (None, None) => Anchor::First,
    };
    Ok(Request { max, anchor })
}

/// The `<set/>` of an answer (§2.1): `<first/>` and `<last/>` when the page holds results
/// (`first_index`, the position of the first in the whole set, when known) and `<count/>`
/// when known.
pub fn result_set(
    page: Option<(&str, &str)>,
    first_index: Option<u64>,
    count: Option<u64>,
) -> Element {
    let mut set = Element::new("set", RSM);
    if let Some((first, last)) = page {
        let mut f = Element::new("first", RSM).with_text(first);
        if let Some(i) = first_index {
            f.set_attr("index", i.to_string());
        }
        set.push_child(f);
        set.push_child(Element::new("last", RSM).with_text(last));
    }
    if let Some(c) = count {
        set.push_child(Element::new("count", RSM).with_text(c.to_string()));
    }
    set
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn set(inner: &str) -> Element {
        rookery_xml::first_element(
            format!("<set xmlns='http://jabber.org/protocol/rsm'>{inner}</set>").as_bytes(),
            rookery_xml::Limits::C2S,
        )
        .unwrap()
    }

    #[test]
    fn requests() {
        assert_eq!(parse(&set("")).unwrap(), Request::default());
        assert_eq!(
            parse(&set("<max> 5 </max><after>a</after>")).unwrap(),
            Request {
                max: Some(5),
                anchor: Anchor::After("a".into())
            }
        );
        assert_eq!(parse(&set("<before/>")).unwrap().anchor, Anchor::Last);
        assert_eq!(
            parse(&set("<before>b</before>")).unwrap().anchor,
            Anchor::Before("b".into())
        );
        assert_eq!(parse(&set("<index>3</index>")), Err(RsmError::Index));
        assert_eq!(parse(&set("<max>-1</max>")), Err(RsmError::BadMax));
        assert_eq!(
            parse(&set("<after>a</after><before/>")),
            Err(RsmError::AfterAndBefore)
        );
        assert_eq!(parse(&set("<after> </after>")), Err(RsmError::EmptyAfter));
    }

    #[test]
    fn answers() {
        let s = result_set(Some(("a", "b")), Some(0), Some(19));
        assert_eq!(s.get_child("first", RSM).unwrap().attr("index"), Some("0"));
        assert_eq!(s.child_text("last", RSM).as_deref(), Some("b"));
        assert_eq!(s.child_text("count", RSM).as_deref(), Some("19"));
        let empty = result_set(None, None, Some(3));
        assert!(!empty.has_child("first", RSM));
    }
}
