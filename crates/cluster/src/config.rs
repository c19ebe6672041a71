//! `[cluster]`: whether this node is one of several, how it reaches the bus and how fast a
//! dead node is noticed (docs/configuration.md, docs/clustering.md).

use std::time::Duration;

use serde::Deserialize;

/// The `[cluster]` section. Without `nats_url` the server is a single node and starts no
/// cluster code at all.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The NATS server(s) of the cluster bus, e.g. `nats://10.0.0.5:4222` (several separated
    /// by commas). Unset: a single node.
    pub nats_url: Option<String>,
    /// This node's name on the bus, unique in the cluster; default: host name and c2s port
    /// (`host:5222`).
    pub node_id: Option<String>,
    /// How long a node may stay silent before the others take it for dead (milliseconds).
    pub lease_ms: u64,
    /// How often a node says it is alive (milliseconds); at most half the lease.
    pub heartbeat_ms: u64,
    /// How long a forwarder holds the stanzas for one node after sending it a batch
    /// (milliseconds), so that the next batch carries all that came meanwhile; 0 (the
    /// default) sends each at once. A stanza after a quiet spell goes at once either way.
    /// Trades cross-node latency for fewer bus messages (docs/clustering.md).
    pub batch_delay_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats_url: None,
            node_id: None,
            lease_ms: 6_000,
            heartbeat_ms: 1_000,
            batch_delay_ms: 0,
        }
    }
}

/// The longest `batch_delay_ms`: every cross-node stanza may wait that long and up to a
/// millisecond more (the timer's resolution), and issue 18 asks for a cross-node p99 of
/// 5 ms.
pub const MAX_BATCH_DELAY_MS: u64 = 4;

/// A `[cluster]` section that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The heartbeat does not fit twice into the lease: one lost heartbeat would kill a node.
    #[error("[cluster] heartbeat_ms ({heartbeat}) must be at least 100 and at most half of lease_ms ({lease})")]
    Timing {
        /// `heartbeat_ms`.
        heartbeat: u64,
        /// `lease_ms`.
        lease: u64,
    },
    /// A batch delay past what a cross-node stanza may wait.
    #[error("[cluster] batch_delay_ms ({0}) must be at most {MAX_BATCH_DELAY_MS}")]
    BatchDelay(u64),
    /// A node id is one NATS subject token.
    #[error("[cluster] node_id {0:?} must be non-empty, without spaces, '.', '*' or '>'")]
    NodeId(String),
}

impl ClusterConfig {
    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        self.nats_url
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty())
    }

    /// The lease.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// The pause between two batches to one node.
    pub fn batch_delay(&self) -> Duration {
        Duration::from_millis(self.batch_delay_ms)
    }

    /// Checks the timing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_ms < 100 || self.heartbeat_ms.saturating_mul(2) > self.lease_ms {
            return Err(ConfigError::Timing {
                heartbeat: self.heartbeat_ms,
                lease: self.lease_ms,
            });
        }
        if self.batch_delay_ms > MAX_BATCH_DELAY_MS {
            return Err(ConfigError::BatchDelay(self.batch_delay_ms));
        }
        if let Some(id) = &self.node_id {
            valid_node_id(id)?;
        }
        Ok(())
    }

    /// The node id: the configured one, else `host:port` (the host name with its dots made
    /// dashes, so that the id stays one subject token).
    pub fn node_id(&self, host: &str, c2s_port: u16) -> Result<String, ConfigError> {
        let id = match &self.node_id {
            Some(id) => id.clone(),
            None => format!("{}:{c2s_port}", host.trim().replace('.', "-")),
        };
        valid_node_id(&id)?;
        Ok(id)
    }
}

fn valid_node_id(id: &str) -> Result<(), ConfigError> {
    let bad = |c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>');
    if id.is_empty() || id.chars().any(bad) {
        return Err(ConfigError::NodeId(id.to_string()));
    }
    Ok(())
}

/// The host name of this machine (Linux), for the default node id.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "rookery".to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_are_a_single_node_with_a_lease_under_ten_seconds() {
        let c = ClusterConfig::default();
        assert!(!c.enabled());
        assert!(c.lease() <= Duration::from_secs(10));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn node_id_defaults_to_host_and_port_as_one_token() {
        let c = ClusterConfig::default();
        assert_eq!(
            c.node_id("xmpp1.example.org", 5222).unwrap(),
            "xmpp1-example-org:5222"
        );
        let named = ClusterConfig {
            node_id: Some("a b".into()),
            ..ClusterConfig::default()
        };
        assert!(named.validate().is_err());
    }

    #[test]
    fn a_heartbeat_longer_than_half_the_lease_is_refused() {
        let c = ClusterConfig {
            lease_ms: 1000,
            heartbeat_ms: 600,
            ..ClusterConfig::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::Timing { .. })));
    }

    #[test]
    fn a_batch_delay_is_off_by_default_and_bounded() {
        assert!(ClusterConfig::default().batch_delay().is_zero());
        let c = ClusterConfig {
            batch_delay_ms: MAX_BATCH_DELAY_MS + 1,
            ..ClusterConfig::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::BatchDelay(5)));
    }
}
