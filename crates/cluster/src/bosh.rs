//! BOSH sessions served by any node (docs/clustering.md, "BOSH on any node").
//!
//! A BOSH session lives in the node that created it: its request window and its stream are
//! that node's memory. A request for it that reaches another node (a load balancer spreads
//! a client's requests) is passed whole to the holder with NATS request/reply on
//! `rookery.<domain>.bosh.<holder>`; the holder serves it as one of its own listener's and
//! its answer (a held request's too, up to `wait` later) comes back as the reply. Which
//! node holds a session its `sid` says (the web crate puts the node's id into the sids it
//! makes), so finding it costs nothing.
//!
//! On the bus a request is the HTTP request's body as the client sent it (already held to
//! the BOSH body limit by the node that read it); a reply is [`BoshAnswer`]: the response's
//! `Content-Type`, a line feed, then the response's body — or nothing at all when that did
//! not fit the bus's payload limit (NATS `max_payload`), so that the asking node knows at
//! once instead of after its timeout.

use std::future::Future;
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::Request;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;

use crate::node::{Cluster, StartError};
use crate::wire::WireError;

/// How often a request passed to another node looks whether the bus is still up and its
/// holder still alive, while the holder holds it (up to `wait`).
const WATCH: Duration = Duration::from_secs(1);

/// A BOSH response as the node holding the session made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoshAnswer {
    /// Its `Content-Type` (the session's, XEP-0124 §7.1 `content`).
    pub content_type: String,
    /// The `<body/>`.
    pub body: Bytes,
}

impl BoshAnswer {
    /// `content type · '\n' · body` (a header value has no line feed).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.content_type.len() + 1 + self.body.len());
        out.put_slice(self.content_type.as_bytes());
        out.put_u8(b'\n');
        out.put_slice(&self.body);
        out.freeze()
    }

    /// From [`BoshAnswer::encode`]'s bytes; the body shares the message's buffer.
    pub fn decode(mut payload: Bytes) -> Result<BoshAnswer, WireError> {
        let bad = || WireError::Control("bad BOSH answer".into());
        let line = payload.iter().position(|b| *b == b'\n').ok_or_else(bad)?;
        let head = payload.split_to(line);
        let content_type = String::from_utf8(head.to_vec()).map_err(|_| bad())?;
        payload.advance(1);
        Ok(BoshAnswer {
            content_type,
            body: payload,
        })
    }
}

/// Why a request passed to another node got no answer from it.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// This node's bus connection is down.
    #[error("the cluster bus is not connected")]
    BusDown,
    /// Nobody serves the holder's subject: the node is dead (killed, or left), though its
    /// lease may not have expired yet.
    #[error("node {0} does not answer on the bus")]
    Gone(String),
    /// The holder took longer than the caller allowed.
    #[error("node {0} did not answer in time")]
    TimedOut(String),
    /// The request is over the bus's payload limit (NATS `max_payload`).
    #[error("request over the bus's payload limit")]
    TooLarge,
    /// The holder's answer was over the bus's payload limit.
    #[error("the answer of node {0} was over the bus's payload limit (NATS max_payload)")]
    AnswerTooLarge(String),
    /// The bus failed otherwise, or the answer did not read.
    #[error("{0}")]
    Bus(String),
}

/// This node's end of the BOSH relay: passes requests to the nodes holding their sessions,
/// and serves the ones passed here ([`BoshRelay::serve`]).
#[derive(Clone)]
pub struct BoshRelay {
    cluster: Cluster,
}

impl Cluster {
    /// The BOSH relay over this node's bus.
    pub fn bosh_relay(&self) -> BoshRelay {
        BoshRelay {
            cluster: self.clone(),
        }
    }
}

impl BoshRelay {
    /// This node's id.
    pub fn node(&self) -> &str {
        self.cluster.node()
    }

    /// Whether `node` is another node of the cluster, alive as far as this node knows.
    pub fn is_alive(&self, node: &str) -> bool {
        self.cluster.is_alive(node)
    }

    /// `rookery.<domain>.bosh.<node>`.
    fn subject(&self, node: &str) -> String {
        format!("rookery.{}.bosh.{node}", self.cluster.domain())
    }

    /// Passes the request `body` to `node` and waits at most `timeout` for its answer. A
    /// bus that is down or a node that is gone fails at once, not after `timeout`; one that
    /// goes while the request is held there fails within [`WATCH`] of the bus going down or
    /// of the node's lease expiring (a held request gets no "no responders" from the bus).
    pub async fn pass(
        &self,
        node: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<BoshAnswer, RelayError> {
        self.reachable(node)?;
        let request = Request::new().payload(body).timeout(Some(timeout));
        let asked = self
            .cluster
            .client()
            .send_request(self.subject(node), request);
        tokio::pin!(asked);
        let mut watch = tokio::time::interval_at(tokio::time::Instant::now() + WATCH, WATCH);
        let reply = loop {
            tokio::select! {
                reply = &mut asked => break reply,
                _ = watch.tick() => self.reachable(node)?,
            }
        };
        let reply = reply.map_err(|e| match e.kind() {
            RequestErrorKind::NoResponders => RelayError::Gone(node.to_string()),
            RequestErrorKind::TimedOut => RelayError::TimedOut(node.to_string()),
            RequestErrorKind::MaxPayloadExceeded => RelayError::TooLarge,
            _ => RelayError::Bus(e.to_string()),
        })?;
        if reply.payload.is_empty() {
            return Err(RelayError::AnswerTooLarge(node.to_string()));
        }
        BoshAnswer::decode(reply.payload).map_err(|e| RelayError::Bus(e.to_string()))
    }

    /// Whether a request to `node` can be answered: the bus is up and the node alive.
    fn reachable(&self, node: &str) -> Result<(), RelayError> {
        if !self.cluster.is_connected() {
            return Err(RelayError::BusDown);
        }
        if !self.cluster.is_alive(node) {
            return Err(RelayError::Gone(node.to_string()));
        }
        Ok(())
    }

    /// Serves the requests other nodes pass to this one: each, in a task of its own, is
    /// answered with what `handle` makes of its body.
    pub async fn serve<F, Fut>(&self, handle: F) -> Result<(), StartError>
    where
        F: Fn(Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = BoshAnswer> + Send + 'static,
    {
        let mut sub = self
            .cluster
            .client()
            .subscribe(self.subject(self.node()))
            .await
            .map_err(|e| StartError::Subscribe(e.to_string()))?;
        let client = self.cluster.client().clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(reply) = msg.reply else { continue };
                let (answer, client) = (handle(msg.payload), client.clone());
                tokio::spawn(async move {
                    let answer = fitting(answer.await.encode(), client.server_info().max_payload);
                    if let Err(e) = client.publish(reply, answer).await {
                        // The asking node times out and ends its client's session.
                        tracing::warn!(error = %e, "BOSH answer to another node not sent");
                    }
                });
            }
        });
        Ok(())
    }
}

/// `answer` when it fits the bus's payload limit `max`; else nothing, which the asking node
/// reads as [`RelayError::AnswerTooLarge`] (and a log line here says why).
fn fitting(answer: Bytes, max: usize) -> Bytes {
    if answer.len() <= max {
        return answer;
    }
    tracing::error!(
        bytes = answer.len(),
        max_payload = max,
        "BOSH answer to another node over the bus's payload limit: its client's session ends \
         (raise nats-server's max_payload, docs/clustering.md)"
    );
    Bytes::new()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_answer_round_trips_and_a_broken_one_is_an_error() {
        let a = BoshAnswer {
            content_type: "text/xml; charset=utf-8".into(),
            body: Bytes::from_static(b"<body xmlns='http://jabber.org/protocol/httpbind'/>\n"),
        };
        assert_eq!(BoshAnswer::decode(a.encode()).unwrap(), a);
        assert!(BoshAnswer::decode(Bytes::from_static(b"no line feed")).is_err());
        assert!(BoshAnswer::decode(Bytes::from_static(b"\xff\n<body/>")).is_err());
    }

    #[test]
    fn an_answer_over_the_payload_limit_is_sent_as_nothing() {
        let answer = Bytes::from_static(b"text/xml\n<body/>");
        assert_eq!(fitting(answer.clone(), answer.len()), answer);
        assert!(fitting(answer.clone(), answer.len() - 1).is_empty());
    }
}
