//! Archive queries (XEP-0313 §4): the form (`with`, `start`, `end`, and the `#extended`
//! `before-id`, `after-id`, `ids`), RSM paging (XEP-0059: `max`, `after`, `before`, empty
//! `before` for the last page) and `#extended`'s `<flip-page/>` read into a [`Query`]; the
//! result messages and the `<fin/>`.

use rookery_jid::{BareJid, Jid};
use rookery_proto::form::{Field, Form};
use rookery_proto::time::{format_utc, parse_utc};
use rookery_xml::{Element, CONTENT_NS};

use crate::error::MamError;
use crate::ns;

pub use rookery_proto::rsm::Anchor;
use rookery_proto::rsm::{self, RsmError};

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    /// The client's `queryid`, echoed in each result.
    pub queryid: Option<String>,
    /// Only messages with this JID (as given: an account's archive compares its bare JID, a
    /// room's the occupant JID).
    pub with: Option<Jid>,
    /// Only messages from this time (Unix seconds).
    pub start: Option<i64>,
    /// Only messages until this time.
    pub end: Option<i64>,
    /// Only messages after this archive id (`after-id`).
    pub after_id: Option<String>,
    /// Only messages before this archive id (`before-id`).
    pub before_id: Option<String>,
    /// Only these archive ids (`ids`).
    pub ids: Vec<String>,
    /// The page size (at most the server's page limit).
    pub max: u64,
    /// Where the page starts.
    pub anchor: Anchor,
    /// `<flip-page/>` (§4.3.4, `#extended`): the page's results are sent newest first. Which
    /// results the page holds, and its `<fin/>`, do not change.
    pub flip: bool,
}

/// The most ids one `ids` field may name (each is a bound parameter of one SQL query).
pub const MAX_IDS: usize = 1000;

fn bad(why: impl Into<String>) -> MamError {
    MamError::BadRequest(why.into())
}

/// Reads a `<query/>`; the page size is at most `max_page` (a larger `max` is lowered, not
/// refused: XEP-0059 §2.1 lets the responder return fewer).
pub fn parse(q: &Element, max_page: u64) -> Result<Query, MamError> {
    let mut query = Query {
        queryid: q.attr("queryid").map(str::to_string),
        max: max_page,
        flip: q.get_child("flip-page", ns::MAM).is_some(),
        ..Query::default()
    };
    if let Some(form) = Form::child_of(q) {
        if form.form_type().is_some_and(|t| t != ns::MAM) {
            return Err(bad("the form is not urn:xmpp:mam:2"));
        }
        for f in form.data_fields() {
            let value = f.value().map(str::trim).filter(|v| !v.is_empty());
            match (f.var.as_str(), value) {
                ("with" | "start" | "end" | "after-id" | "before-id", None) => {}
                ("with", Some(v)) => {
                    query.with = Some(Jid::parse(v).map_err(|_| bad("'with' is not a JID"))?);
                }
                ("start", Some(v)) => {
                    query.start =
                        Some(start_of(v).ok_or_else(|| bad("'start' is not a date-time"))?)
                }
                ("end", Some(v)) => {
                    query.end = Some(parse_utc(v).ok_or_else(|| bad("'end' is not a date-time"))?)
                }
                ("after-id", Some(v)) => query.after_id = Some(v.to_string()),
                ("before-id", Some(v)) => query.before_id = Some(v.to_string()),
                ("ids", _) if f.values.len() > MAX_IDS => {
                    return Err(bad(format!("more than {MAX_IDS} ids")))
                }
                ("ids", _) if f.values.iter().all(|v| v.trim().is_empty()) => {
                    return Err(bad("'ids' names no id"))
                }
                ("ids", _) => query.ids = f.values.iter().map(|v| v.trim().to_string()).collect(),
                (other, _) => {
                    return Err(MamError::Unsupported(format!("unknown field {other:?}")))
                }
            }
        }
    }
    if let Some(set) = q.get_child("set", ns::RSM) {
        let r = rsm::parse(set).map_err(|e| match e {
            RsmError::Index => MamError::Unsupported(e.to_string()),
            _ => bad(e.to_string()),
        })?;
        query.max = r.max.map_or(max_page, |m| m.min(max_page));
        query.anchor = r.anchor;
    }
    Ok(query)
}

/// The first whole second at or after the date-time `v` (§4.1.2: "equal to or later than"
/// `start`): the archive keeps whole seconds, so a message of 12:00:00 is not at or after
/// 12:00:00.5, where dropping the fraction would say it is.
fn start_of(v: &str) -> Option<i64> {
    let whole = parse_utc(v)?;
    let fraction = v
        .split_once('.')
        .map(|(_, f)| f.bytes().take_while(u8::is_ascii_digit))
        .is_some_and(|mut digits| digits.any(|d| d != b'0'));
    Some(whole + i64::from(fraction))
}

/// The search form (§4.1.1, answered to a query `get`).
pub fn fields() -> Element {
    let form = Form::new("form", ns::MAM)
        .with(Field {
            var: "with".into(),
            kind: Some("jid-single"),
            ..Field::default()
        })
        .with(Field {
            var: "start".into(),
            kind: Some("text-single"),
            ..Field::default()
        })
        .with(Field {
            var: "end".into(),
            kind: Some("text-single"),
            ..Field::default()
        })
        .with(Field {
            var: "before-id".into(),
            kind: Some("text-single"),
            ..Field::default()
        })
        .with(Field {
            var: "after-id".into(),
            kind: Some("text-single"),
            ..Field::default()
        })
        .with(Field {
            // §4.1.5: a list open to the client's values, none offered.
            var: "ids".into(),
            kind: Some("list-multi"),
            open: true,
            ..Field::default()
        });
    Element::new("query", ns::MAM).with_child(form.to_element())
}

/// One result message (§4.2): the archived `message` forwarded with its archive time, from
/// the archive to `to`.
pub fn result(
    archive: &BareJid,
    to: &Jid,
    queryid: Option<&str>,
    id: &str,
    ts: i64,
    message: Element,
) -> Element {
    let mut r = Element::new("result", ns::MAM).with_attr("id", id);
    if let Some(q) = queryid {
        r.set_attr("queryid", q);
    }
    r.push_child(
        Element::new("forwarded", ns::FORWARD)
            .with_child(Element::new("delay", ns::DELAY).with_attr("stamp", format_utc(ts)))
            .with_child(message),
    );
    Element::new("message", CONTENT_NS)
        .with_attr("from", archive.as_str())
        .with_attr("to", to.as_str())
        .with_attr("id", rookery_store::mam::new_name())
        .with_child(r)
}

/// The `<fin/>` (§4.3): `complete` when the page is the last in its direction; RSM `first`
/// and `last` when it holds results.
pub fn fin(first: Option<&str>, last: Option<&str>, complete: bool) -> Element {
    let set = rsm::result_set(first.zip(last), None, None);
    let mut fin = Element::new("fin", ns::MAM).with_child(set);
    if complete {
        fin.set_attr("complete", "true");
    }
    fin
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn q(xml: &str) -> Element {
        rookery_xml::first_element(
            format!("<iq xmlns='jabber:client'>{xml}</iq>").as_bytes(),
            rookery_xml::Limits::S2S,
        )
        .unwrap()
        .children()
        .next()
        .unwrap()
        .clone()
    }

    #[test]
    fn forms_and_paging_are_read() {
        let query = parse(
            &q("<query xmlns='urn:xmpp:mam:2' queryid='f27'>\
                <x xmlns='jabber:x:data' type='submit'>\
                <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
                <field var='with'><value>juliet@capulet.lit/balcony</value></field>\
                <field var='start'><value>2010-06-07T00:00:00Z</value></field></x>\
                <set xmlns='http://jabber.org/protocol/rsm'><max>100000</max><before/></set></query>"),
            100,
        )
        .unwrap();
        assert_eq!(query.queryid.as_deref(), Some("f27"));
        assert_eq!(
            query.with.as_ref().map(Jid::as_str),
            Some("juliet@capulet.lit/balcony")
        );
        assert_eq!(query.start, Some(1_275_868_800));
        assert_eq!(start_of("2010-06-07T00:00:00.000Z"), Some(1_275_868_800));
        assert_eq!(start_of("2010-06-07T00:00:00.25Z"), Some(1_275_868_801));
        assert_eq!(start_of("2010-06-07T02:00:00.5+02:00"), Some(1_275_868_801));
        assert_eq!(query.max, 100);
        assert_eq!(query.anchor, Anchor::Last);
        let after = parse(
            &q("<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>5</max><after>abc</after></set></query>"),
            100,
        )
        .unwrap();
        assert_eq!((after.max, after.anchor), (5, Anchor::After("abc".into())));
        assert!(!after.flip);
        let flipped = parse(
            &q("<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><before/></set><flip-page/></query>"),
            100,
        )
        .unwrap();
        assert!(flipped.flip && flipped.anchor == Anchor::Last);
        for unsupported in [
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='color'><value>red</value></field></x></query>",
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='color'/></x></query>",
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><index>5</index></set></query>",
        ] {
            assert!(
                matches!(parse(&q(unsupported), 100), Err(MamError::Unsupported(_))),
                "{unsupported}"
            );
        }
        for bad in [
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='start'><value>yesterday</value></field></x></query>",
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='with'><value>@@</value></field></x></query>",
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>-1</max></set></query>",
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:other</value></field></x></query>",
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='ids'/></x></query>",
        ] {
            assert!(parse(&q(bad), 100).is_err(), "{bad}");
        }
    }

    #[test]
    fn fin_says_complete_and_bounds() {
        let f = fin(Some("a"), Some("b"), true);
        assert_eq!(f.attr("complete"), Some("true"));
        let set = f.get_child("set", ns::RSM).unwrap();
        assert_eq!(set.child_text("first", ns::RSM).as_deref(), Some("a"));
        assert!(fin(None, None, false).attr("complete").is_none());
    }
}
