//! Deadlines from configured durations.
//!
//! `Instant + Duration` panics when the sum does not fit the clock, and a timeout of
//! i64::MAX seconds is how a TOML file says "never" (TOML integers are signed 64-bit). So
//! every deadline made from an operator's duration goes through [`after`], which saturates
//! instead: a duration the clock cannot add counts as [`FAR_FUTURE`], a time no connection
//! lives to see.

use std::time::Duration;

use tokio::time::Instant;

/// What "never" becomes: about 30 years, the cap tokio puts on its own sleeps.
pub const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

/// `at + d`, or `at +` [`FAR_FUTURE`] when `d` does not fit the clock.
pub fn after(at: Instant, d: Duration) -> Instant {
    at.checked_add(d).unwrap_or_else(|| at + FAR_FUTURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_what_fits_and_saturates_the_rest() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(after(now, Duration::from_secs(u64::MAX)), now + FAR_FUTURE);
        assert_eq!(after(now, Duration::MAX), now + FAR_FUTURE);
    }
}
