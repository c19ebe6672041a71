//! RFC 7622: parsing never panics, and normalization is idempotent: a parsed JID's string
//! form parses back to the same JID, with the same parts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rookery_jid::Jid;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(jid) = Jid::parse(s) else {
        return;
    };
    let again = Jid::parse(jid.as_str()).expect("normalized form must parse");
    assert_eq!(jid, again);
    assert_eq!(jid.local(), again.local());
    assert_eq!(jid.domain(), again.domain());
    assert_eq!(jid.resource(), again.resource());
});
