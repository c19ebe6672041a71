//! Small helpers shared by the IM modules: stored XML back into elements, XEP-0082 time
//! stamps, XEP-0203 delay elements, and the "own account only" check of IQ handlers.

use rookery_jid::BareJid;
use rookery_proto::{ns, Stanza, StanzaError, StanzaErrorCondition as Cond};
use rookery_xml::{Element, Limits};

/// Parses one element serialized by [`Element::to_bytes`] (stored offline messages, vCards,
/// private XML). `None` if it is not a single well-formed element.
pub fn parse_element(xml: &str) -> Option<Element> {
    rookery_xml::first_element(
        xml.as_bytes(),
        Limits {
            max_stanza_bytes: xml.len() + 1024,
            max_depth: 64,
            max_attrs: 256,
            max_elements: 1_000_000,
        },
    )
}

/// Parses a stored stanza.
pub fn parse_stanza(xml: &str) -> Option<Stanza> {
    Stanza::from_element(parse_element(xml)?).ok()
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An XEP-0082 date-time in UTC (`1970-01-01T00:00:00Z`) for Unix seconds `t`.
pub fn format_utc(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// An XEP-0203 `<delay/>` from `from` stamped at Unix time `t`.
pub fn delay(from: &str, t: i64, reason: Option<&str>) -> Element {
    let mut d = Element::new("delay", ns::DELAY)
        .with_attr("from", from)
        .with_attr("stamp", format_utc(t));
    if let Some(r) = reason {
        d.push_text(r);
    }
    d
}

/// A stanza error with a human-readable text.
pub fn err(c: Cond, text: &str) -> StanzaError {
    StanzaError::new(c).with_text(text)
}

/// For IQs a user may only send about their own account (roster, block list, carbons,
/// private storage): the requesting account, or `forbidden` when `to` is someone else.
pub fn own_account(iq: &Stanza, to: &BareJid) -> Result<BareJid, StanzaError> {
    let from = iq
        .from()
        .map(|f| f.to_bare())
        .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
    if &from != to || from.local().is_none() {
        return Err(err(Cond::Forbidden, "only for your own account"));
    }
    Ok(from)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rookery_xml::CONTENT_NS;

    #[test]
    fn utc_stamps() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn elements_round_trip_through_text() {
        let el = Element::new("message", CONTENT_NS)
            .with_attr("to", "a@b")
            .with_child(Element::new("body", CONTENT_NS).with_text("x < y & \"z\""))
            .with_child(Element::new("delay", ns::DELAY).with_attr("stamp", "s"));
        let text = String::from_utf8(el.to_bytes()).unwrap();
        assert_eq!(parse_element(&text).unwrap(), el);
        assert!(parse_element("<a>").is_none());
        assert!(parse_element("not xml").is_none());
    }
}
