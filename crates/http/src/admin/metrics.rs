//! `GET /metrics`: the process's counters (`rookery_metrics`) and, read from the running
//! server at scrape time, the gauges of its open connections (and, on a node of a cluster,
//! the sessions per node: `rookery_cluster_sessions{node}`).

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
                c.c2s_by_transport.to_vec(),
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
        if let Some(nodes) = self.0.cluster().as_ref().map(cluster_sessions) {
            let mut family = encoder.encode_descriptor(
                "rookery_cluster_sessions",
                "Client sessions per node of the cluster, as this node knows them",
                None,
                MetricType::Gauge,
            )?;
            for (node, v) in &nodes {
                let g = ConstGauge::new(i64::try_from(*v).unwrap_or(i64::MAX));
                g.encode(family.encode_family(&[("node", node.as_str())])?)?;
            }
        }
        Ok(())
    }
}

/// This node's sessions and those of the others, from the cluster's view
/// (`rookery_cluster::ClusterStatus` as JSON: `node`, `local_sessions`, `remote_sessions`).
fn cluster_sessions(view: &serde_json::Value) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    if let (Some(node), Some(n)) = (
        view.get("node").and_then(|v| v.as_str()),
        view.get("local_sessions").and_then(|v| v.as_u64()),
    ) {
        out.push((node.to_string(), n));
    }
    for pair in view
        .get("remote_sessions")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        if let (Some(node), Some(n)) = (
            pair.get(0).and_then(|v| v.as_str()),
            pair.get(1).and_then(|v| v.as_u64()),
        ) {
            out.push((node.to_string(), n));
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_sessions_read_the_cluster_view() {
        let view = serde_json::json!({
            "node": "a:5222", "connected": true, "peers": ["b:5222"],
            "local_sessions": 3, "remote_sessions": [["b:5222", 5], ["bad"]],
        });
        assert_eq!(
            cluster_sessions(&view),
            [("a:5222".to_string(), 3), ("b:5222".to_string(), 5)]
        );
        assert!(cluster_sessions(&serde_json::json!({})).is_empty());
    }
}
