//! The process's metrics: one registry of pre-registered handles every crate counts into,
//! encoded in the OpenMetrics text format (what Prometheus scrapes) by the admin listener.
//!
//! Layout:
//! - this file: [`Metrics`] (the handles and the registry), [`get`] and [`encode`];
//! - [`histogram`]: a lock-free fixed-bucket histogram for the message path;
//! - [`process`]: the `process_*` metrics read from `/proc` at scrape time.
//!
//! # Why a global, and why `prometheus-client`
//! A counter is one line where the thing happens (`rookery_metrics::get().offline_stored()`),
//! like `tracing`'s global dispatcher: nothing is threaded through the constructors of the
//! listeners, the router and the modules, which other work reshapes all the time. The handles
//! are registered once at first use; counting is an atomic add on a handle that already
//! exists: no lock, no hashing, no string formatting on the per-stanza path. That is why
//! `prometheus-client` (the Prometheus project's own crate) was picked over `metrics` +
//! `metrics-exporter-prometheus`: its counters are plain atomics held by the caller, with no
//! recorder lookup per increment and no background upkeep task, and it writes OpenMetrics
//! exactly. Its `Histogram` takes a write lock per observation, so the routing latency uses
//! [`histogram::Histogram`] instead, encoded through the same registry.
//!
//! Values that are states rather than events (sessions by transport, s2s streams) are not
//! counted here: the admin listener reads them from the running server at scrape time, so
//! they can never drift from the truth.

pub mod histogram;
pub mod process;

use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use rookery_proto::StanzaKind;

use crate::histogram::Histogram;

/// Label set of the login counter: `mechanism`, `result`.
type LoginLabels = [(&'static str, &'static str); 2];

/// Upper bounds of the routing latency buckets, in seconds: from 50 µs (a local message) to
/// 1 s (a stanza whose route waited on the store or a congested peer).
const ROUTING_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0,
];

/// Every metric of the process, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    logins: Family<LoginLabels, Counter>,
    /// Stanzas routed, indexed by [`kind_index`].
    routed: [Counter; 3],
    routing: Histogram,
    queue_overflows: Counter,
    sm_hibernations: Counter,
    sm_resumes: Counter,
    pubsub_publishes: Counter,
    pubsub_notifications: Counter,
    offline_stored: Counter,
    offline_delivered: Counter,
    /// Connections closed at accept, indexed by [`Refusal`].
    refused: [Counter; 2],
    negotiation_drops: Counter,
    /// Reloads, success then failure.
    reloads: [Counter; 2],
}

/// Why a listener closed a connection right after accepting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address holds its share (`max_connections_per_ip`).
    PerIp,
    /// Every slot was taken (`max_connections`, two ports racing for the last one).
    Full,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

fn kind_index(kind: StanzaKind) -> usize {
    match kind {
        StanzaKind::Message(_) => 0,
        StanzaKind::Presence(_) => 1,
        StanzaKind::Iq(_) => 2,
    }
}

impl Metrics {
    fn new() -> Metrics {
        let mut root = Registry::default();
        // Unprefixed, with the names every Prometheus client library uses for them.
        root.register_collector(Box::new(process::Process));
        let registry = root.sub_registry_with_prefix("rookery");
        registry.register(
            "build",
            "Version of the running server",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let logins = Family::<LoginLabels, Counter>::default();
        registry.register(
            "logins",
            "SASL authentications by mechanism and result (success or failure)",
            logins.clone(),
        );
        let routed_family = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "stanzas_routed",
            "Stanzas handed to the router, by kind",
            routed_family.clone(),
        );
        // The three handles are taken now, so routing never touches the family's lock.
        let routed = ["message", "presence", "iq"]
            .map(|kind| routed_family.get_or_create(&[("kind", kind)]).clone());
        let routing = Histogram::new(&ROUTING_BUCKETS);
        registry.register(
            "routing_duration_seconds",
            "Time from a stanza entering the router to its delivery (queued, stored or relayed)",
            routing.clone(),
        );
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let queue_overflows = counter(
            "queue_overflows",
            "Sessions disconnected because their outbound queue was full",
        );
        let sm_hibernations = counter(
            "sm_hibernations",
            "XEP-0198 sessions that lost their connection and wait to be resumed",
        );
        let sm_resumes = counter(
            "sm_resumes",
            "XEP-0198 sessions resumed on a new connection",
        );
        let pubsub_publishes = counter(
            "pubsub_publishes",
            "Items published (XEP-0060 service and PEP)",
        );
        let pubsub_notifications = counter(
            "pubsub_notifications",
            "Pubsub event notifications sent, one per recipient",
        );
        let offline_stored = counter("offline_stored", "Messages stored for offline accounts");
        let offline_delivered = counter(
            "offline_delivered",
            "Offline messages delivered to a session",
        );
        let refused_family = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed right after accept, by reason (per_ip, full)",
            refused_family.clone(),
        );
        let refused =
            ["per_ip", "full"].map(|r| refused_family.get_or_create(&[("reason", r)]).clone());
        let reload_family = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "reloads",
            "Configuration reloads, by result (success, failure)",
            reload_family.clone(),
        );
        let reloads =
            ["success", "failure"].map(|r| reload_family.get_or_create(&[("result", r)]).clone());
        let negotiation_drops = Counter::default();
        registry.register(
            "negotiation_drops",
            "Connections still negotiating dropped for newer ones (max_negotiating)",
            negotiation_drops.clone(),
        );
        Metrics {
            registry: root,
            refused,
            negotiation_drops,
            reloads,
            logins,
            routed,
            routing,
            queue_overflows,
            sm_hibernations,
            sm_resumes,
            pubsub_publishes,
            pubsub_notifications,
            offline_stored,
            offline_delivered,
        }
    }

    /// A SASL exchange ended; `mechanism` is the mechanism's name (`"other"` for one this
    /// server does not implement).
    pub fn login(&self, mechanism: &'static str, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.logins
            .get_or_create(&[("mechanism", mechanism), ("result", result)])
            .inc();
    }

    /// A stanza enters the router: counts it, and records the routing latency when the
    /// returned guard is dropped (at the end of the routing call).
    #[must_use = "the latency is recorded when the guard is dropped"]
    pub fn route(&self, kind: StanzaKind) -> RouteTimer {
        if let Some(c) = self.routed.get(kind_index(kind)) {
            c.inc();
        }
        RouteTimer {
            start: Instant::now(),
        }
    }

    /// A session was disconnected for not reading its outbound queue.
    pub fn queue_overflow(&self) {
        self.queue_overflows.inc();
    }

    /// A resumable session lost its connection (XEP-0198).
    pub fn sm_hibernation(&self) {
        self.sm_hibernations.inc();
    }

    /// A session was resumed on a new connection (XEP-0198).
    pub fn sm_resume(&self) {
        self.sm_resumes.inc();
    }

    /// An item was published.
    pub fn pubsub_publish(&self) {
        self.pubsub_publishes.inc();
    }

    /// `n` event notifications were sent.
    pub fn pubsub_notifications(&self, n: u64) {
        self.pubsub_notifications.inc_by(n);
    }

    /// A message was stored for an offline account.
    pub fn offline_stored(&self) {
        self.offline_stored.inc();
    }

    /// `n` offline messages were delivered to a session.
    pub fn offline_delivered(&self, n: u64) {
        self.offline_delivered.inc_by(n);
    }
}

impl Metrics {
    /// A connection was closed right after accept.
    pub fn connection_refused(&self, why: Refusal) {
        let i = match why {
            Refusal::PerIp => 0,
            Refusal::Full => 1,
        };
        if let Some(c) = self.refused.get(i) {
            c.inc();
        }
    }

    /// A negotiating connection was dropped to make room for a newer one.
    pub fn negotiation_drop(&self) {
        self.negotiation_drops.inc();
    }

    /// A configuration reload succeeded or was refused.
    pub fn reload(&self, success: bool) {
        if let Some(c) = self.reloads.get(usize::from(!success)) {
            c.inc();
        }
    }
}

/// Records the routing latency of one stanza when dropped (see [`Metrics::route`]).
#[derive(Debug)]
pub struct RouteTimer {
    start: Instant,
}

impl Drop for RouteTimer {
    fn drop(&mut self) {
        get().routing.observe(self.start.elapsed());
    }
}

/// The OpenMetrics content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Writes the process's metrics, then those of `server` (values a running server reads from
/// its state at scrape time), then the closing `# EOF`.
pub fn encode(server: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(8 * 1024);
    text::encode_registry(&mut out, &get().registry)?;
    text::encode_registry(&mut out, server)?;
    text::encode_eof(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rookery_proto::stanza::MessageType;

    #[test]
    fn counts_appear_in_the_text() {
        let m = get();
        m.login("SCRAM-SHA-1", true);
        m.login("SCRAM-SHA-1", false);
        drop(m.route(StanzaKind::Message(MessageType::Chat)));
        m.offline_stored();
        let text = encode(&Registry::default()).unwrap();
        assert!(text.contains("rookery_build_info{version=\""), "{text}");
        assert!(
            text.contains("rookery_logins_total{mechanism=\"SCRAM-SHA-1\",result=\"success\"} 1")
        );
        assert!(text.contains("rookery_stanzas_routed_total{kind=\"message\"} 1"));
        assert!(text.contains("rookery_stanzas_routed_total{kind=\"iq\"} 0"));
        assert!(text.contains("rookery_routing_duration_seconds_count 1"));
        assert!(text.contains("rookery_offline_stored_total 1"));
        m.connection_refused(Refusal::PerIp);
        m.reload(false);
        let text = encode(&Registry::default()).unwrap();
        assert!(text.contains("rookery_connections_refused_total{reason=\"per_ip\"} 1"));
        assert!(text.contains("rookery_connections_refused_total{reason=\"full\"} 0"));
        assert!(text.contains("rookery_reloads_total{result=\"failure\"} 1"));
        assert!(text.contains("rookery_negotiation_drops_total 0"));
        assert!(text.contains("\nprocess_open_fds "));
        assert!(text.ends_with("# EOF\n"));
    }
}
