//! The harness end to end at a small size: every session binds, every timed message and
//! presence arrives. Counted, not timed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rookery_harness::Options;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_sessions() {
    let opts = Options {
        sessions: 2_000,
        concurrency: 64,
        messages: 200,
        broadcasters: 3,
        contacts: 100,
        // Cheap verifiers for a debug build; the exchange is the same.
        iterations: 1,
    };
    let report = rookery_harness::run(&opts).await.unwrap();
    assert_eq!(report.sessions, 2_000);
    assert_eq!(report.registry, 2_000);
    assert_eq!(report.message_latencies.len(), 200);
    assert_eq!(report.broadcast_times.len(), 3);
    assert_eq!(report.broadcast_deliveries, 300);
    assert!(report.bound.rss_bytes > report.before.rss_bytes);
}
