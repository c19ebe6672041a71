//! `GET /metrics`: the process's counters (`rookery_metrics`) and, read from the running
//! server at scrape time, the gauges of its open connections.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::Status;

/// The connection gauges, read from [`Status`] on each scrape.
#[derive(Debug)]
struct ConnectionGauges(Arc<Status>);

/// One gauge family: name, help, label name, and (label value, value) pairs.
type GaugeFamily<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, usize)>);

impl Collector for ConnectionGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = self.0.connections();
        let families: [GaugeFamily; 3] = [
            (
                "rookery_sessions",
                "Bound client sessions by transport",
                "transport",
                vec![("tcp", c.c2s)],
            ),
            (
                "rookery_s2s_streams",
                "Server-to-server streams by direction",
                "direction",
                vec![("incoming", c.s2s_incoming), ("outgoing", c.s2s_outgoing)],
            ),
            (
                "rookery_components",
                "Connected external components",
                "state",
                vec![("connected", c.components)],
            ),
        ];
        for (name, help, label, values) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (value_label, v) in values {
                let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
                g.encode(family.encode_family(&[(label, value_label)])?)?;
            }
        }
        Ok(())
    }
}

/// The registry of this server's state gauges.
pub(super) fn server_registry(status: Arc<Status>) -> Arc<Registry> {
    let mut r = Registry::default();
    r.register_collector(Box::new(ConnectionGauges(status)));
    Arc::new(r)
}

/// `GET /metrics`.
pub(super) async fn metrics(State(server): State<Arc<Registry>>) -> Response {
    match rookery_metrics::encode(&server) {
        Ok(text) => (
            [(header::CONTENT_TYPE, rookery_metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
