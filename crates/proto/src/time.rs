//! XEP-0082 date-time profiles and XEP-0203 delayed-delivery stamps.
//!
//! The server only ever writes times (delay stamps, last activity, pubsub meta-data), always
//! in UTC with second precision (XEP-0082 §3.2 `CCYY-MM-DDThh:mm:ssZ`), so this is a
//! formatter and no parser.

use rookery_xml::Element;

use crate::ns;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn delay_carries_stamp_and_reason() {
        let d = delay("localhost", 0, Some("Offline Storage"));
        assert!(d.is("delay", ns::DELAY));
        assert_eq!(d.attr("stamp"), Some("1970-01-01T00:00:00Z"));
        assert_eq!(d.attr("from"), Some("localhost"));
        assert_eq!(d.text(), "Offline Storage");
    }
}
