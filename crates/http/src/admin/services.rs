//! Federation, components and the pubsub service through the admin API: what the server
//! binary tells the router about them ([`Services`]), and the `/api/v1` routes over it.
//! The HTTP crate knows these parts only through the trait, so it depends on none of them.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::AdminContext;

/// An outgoing server-to-server stream.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct S2sStream {
    /// Our domain on it.
    pub local: String,
    /// The peer's domain.
    pub remote: String,
    /// `pending`, `dialback` or `sasl-external`.
    pub auth: &'static str,
}

/// The server-to-server streams.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct S2sList {
    /// The outgoing streams.
    pub outgoing: Vec<S2sStream>,
    /// How many incoming connections there are (negotiating or bound).
    pub incoming: usize,
    /// The bound incoming streams: the remote domains each authenticated (empty while it
    /// has authenticated none).
    pub incoming_streams: Vec<S2sIncoming>,
}

/// A bound incoming server-to-server stream.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct S2sIncoming {
    /// The peer domains authenticated on it.
    pub remote: Vec<String>,
}

/// A declared component.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Component {
    /// Its domain.
    pub domain: String,
    /// Its disco name, if declared.
    pub name: Option<String>,
    /// Whether it is connected now.
    pub connected: bool,
}

/// A node of the pubsub service.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PubsubNode {
    /// The node's name.
    pub node: String,
    /// Its title.
    pub title: String,
}

/// What the admin API may ask of federation, components and the pubsub service.
#[async_trait]
pub trait Services: Send + Sync {
    /// The s2s streams; `None` without federation.
    fn s2s(&self) -> Option<S2sList>;
    /// Closes every stream with the remote `domain` (`policy-violation` with `reason`); how
    /// many there were, `None` without federation.
    fn close_s2s(&self, domain: &str, reason: &str) -> Option<usize>;
    /// The declared components.
    fn components(&self) -> Vec<Component>;
    /// Disconnects the component serving `domain` (`policy-violation`); whether one was
    /// connected.
    fn disconnect_component(&self, domain: &str, reason: &str) -> bool;
    /// The nodes of the pubsub service at `service` (the primary host's without it); `None`
    /// when there is no such service.
    async fn pubsub_nodes(&self, service: Option<&str>) -> Option<Result<Vec<PubsubNode>, String>>;
    /// Deletes a node of the service at `service` (the primary's without it; subscribers are
    /// told, XEP-0060 §8.4); `Ok(false)` when there is no such node, `None` when there is no
    /// such service.
    async fn delete_pubsub_node(
        &self,
        service: Option<&str>,
        node: &str,
    ) -> Option<Result<bool, String>>;
}

/// The server's services, for the router.
pub type SharedServices = Arc<dyn Services>;

pub(super) async fn s2s(State(ctx): State<AdminContext>) -> Result<Json<S2sList>, ApiError> {
    ctx.services
        .s2s()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("federation ([s2s] enabled)".into()))
}

#[derive(Debug, Serialize)]
pub(super) struct S2sClosed {
    closed: usize,
}

/// `DELETE /s2s/{domain}`: closes every stream with that server, both directions.
pub(super) async fn close_s2s(
    State(ctx): State<AdminContext>,
    domain: Result<Path<String>, PathRejection>,
) -> Result<Json<S2sClosed>, ApiError> {
    let Path(domain) = domain?;
    let closed = ctx
        .services
        .close_s2s(&domain, "closed by an administrator")
        .ok_or_else(|| ApiError::NotFound("federation ([s2s] enabled)".into()))?;
    if closed == 0 {
        return Err(ApiError::NotFound(format!("a stream with {domain}")));
    }
    tracing::info!(%domain, closed, "s2s streams closed through the admin api");
    Ok(Json(S2sClosed { closed }))
}

#[derive(Debug, Serialize)]
pub(super) struct Components {
    components: Vec<Component>,
}

pub(super) async fn components(State(ctx): State<AdminContext>) -> Json<Components> {
    Json(Components {
        components: ctx.services.components(),
    })
}

pub(super) async fn disconnect_component(
    State(ctx): State<AdminContext>,
    domain: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(domain) = domain?;
    if !ctx.services.components().iter().any(|c| c.domain == domain) {
        return Err(ApiError::NotFound(format!("component {domain}")));
    }
    if !ctx
        .services
        .disconnect_component(&domain, "disconnected by an administrator")
    {
        return Err(ApiError::NotFound(format!("a connection for {domain}")));
    }
    tracing::info!(%domain, "component disconnected through the admin api");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
pub(super) struct Nodes {
    nodes: Vec<PubsubNode>,
}

/// `?service=`: a pubsub service other than the primary host's (virtual hosting).
#[derive(Debug, Deserialize)]
pub(super) struct ServiceQuery {
    service: Option<String>,
}

fn disabled() -> ApiError {
    ApiError::NotFound("the pubsub service ([pubsub] enabled, or the one `service` names)".into())
}

pub(super) async fn pubsub_nodes(
    State(ctx): State<AdminContext>,
    Query(q): Query<ServiceQuery>,
) -> Result<Json<Nodes>, ApiError> {
    let nodes = ctx
        .services
        .pubsub_nodes(q.service.as_deref())
        .await
        .ok_or_else(disabled)?
        .map_err(ApiError::Internal)?;
    Ok(Json(Nodes { nodes }))
}

pub(super) async fn delete_pubsub_node(
    State(ctx): State<AdminContext>,
    node: Result<Path<String>, PathRejection>,
    Query(q): Query<ServiceQuery>,
) -> Result<StatusCode, ApiError> {
    let Path(node) = node?;
    let deleted = ctx
        .services
        .delete_pubsub_node(q.service.as_deref(), &node)
        .await
        .ok_or_else(disabled)?
        .map_err(ApiError::Internal)?;
    if !deleted {
        return Err(ApiError::NotFound(format!("node {node}")));
    }
    tracing::info!(%node, "pubsub node deleted through the admin api");
    Ok(StatusCode::NO_CONTENT)
}

/// Services of a server without federation, components or pubsub (tests).
#[derive(Debug, Default)]
pub struct NoServices;

#[async_trait]
impl Services for NoServices {
    fn s2s(&self) -> Option<S2sList> {
        None
    }

    fn close_s2s(&self, _domain: &str, _reason: &str) -> Option<usize> {
        None
    }

    fn components(&self) -> Vec<Component> {
        Vec::new()
    }

    fn disconnect_component(&self, _domain: &str, _reason: &str) -> bool {
        false
    }

    async fn pubsub_nodes(&self, _: Option<&str>) -> Option<Result<Vec<PubsubNode>, String>> {
        None
    }

    async fn delete_pubsub_node(
        &self,
        _: Option<&str>,
        _node: &str,
    ) -> Option<Result<bool, String>> {
        None
    }
}
