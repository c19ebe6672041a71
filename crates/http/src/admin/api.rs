//! The REST admin API under `/api/v1` (described in `docs/openapi.yaml`): users, sessions,
//! announcements and stats of the running server. Every route needs the bearer token.
//!
//! It acts through the same code as the protocol: a user deleted here is removed like an
//! in-band removal (XEP-0077 §3.2: sessions closed, contacts told), a kicked session gets a
//! stream error (RFC 6120 §4.9), an announcement is routed like any server message.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use rookery_core::admin;
use rookery_jid::{BareJid, Jid};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::{auth, services, AdminContext, Connections};

/// The `/api/v1` routes, behind the token check.
pub(super) fn router(ctx: AdminContext) -> Router<AdminContext> {
    Router::new()
        .route("/users", get(list_users).post(add_user))
        .route("/users/{jid}", axum::routing::delete(delete_user))
        .route("/users/{jid}/password", put(set_password))
        .route("/stats", get(stats))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{*jid}", axum::routing::delete(kick))
        .route("/announce", post(announce))
        .route("/reload", post(reload))
        .route("/s2s", get(services::s2s))
        .route("/s2s/{domain}", axum::routing::delete(services::close_s2s))
        .route("/components", get(services::components))
        .route(
            "/components/{domain}",
            axum::routing::delete(services::disconnect_component),
        )
        .route("/pubsub/nodes", get(services::pubsub_nodes))
        .route(
            "/pubsub/nodes/{*node}",
            axum::routing::delete(services::delete_pubsub_node),
        )
        // Errors carry the JSON body the document promises, these too; and behind the
        // token like the rest, so that route names cannot be probed without it.
        .fallback(|| async { ApiError::NotFound("route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(ctx, auth::require_token))
}

/// An account of a hosted domain, given as `alice` (the primary domain) or `alice@domain`.
fn account(ctx: &AdminContext, given: &str) -> Result<BareJid, ApiError> {
    let jid = if given.contains('@') {
        BareJid::parse(given)
    } else {
        BareJid::new(Some(given), ctx.core.domain())
    }
    .map_err(|e| ApiError::BadRequest(format!("invalid user {given:?}: {e}")))?;
    if jid.local().is_none() || !ctx.core.is_local_domain(jid.domain()) {
        return Err(ApiError::BadRequest(format!(
            "{given:?} is not an account of a hosted domain"
        )));
    }
    Ok(jid)
}

#[derive(Debug, Serialize)]
struct Users {
    users: Vec<String>,
}

async fn list_users(State(ctx): State<AdminContext>) -> Result<Json<Users>, ApiError> {
    let domain = ctx.core.domain();
    let names = ctx.store.accounts().list(domain).await?;
    Ok(Json(Users {
        users: names.into_iter().map(|n| format!("{n}@{domain}")).collect(),
    }))
}

#[derive(Debug, Deserialize)]
struct NewUser {
    username: String,
    password: String,
}

#[derive(Debug, Serialize)]
struct Created {
    jid: String,
}

async fn add_user(
    State(ctx): State<AdminContext>,
    new: Result<Json<NewUser>, JsonRejection>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let Json(new) = new?;
    let jid = account(&ctx, &new.username)?;
    admin::add_user(&ctx.core, &jid, new.password).await?;
    tracing::info!(user = %jid, "account created through the admin api");
    Ok((
        StatusCode::CREATED,
        Json(Created {
            jid: jid.to_string(),
        }),
    ))
}

async fn delete_user(
    State(ctx): State<AdminContext>,
    given: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(given) = given?;
    let jid = account(&ctx, &given)?;
    admin::delete_user(&ctx.core, &jid).await?;
    tracing::info!(user = %jid, "account deleted through the admin api");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct Password {
    password: String,
}

async fn set_password(
    State(ctx): State<AdminContext>,
    given: Result<Path<String>, PathRejection>,
    body: Result<Json<Password>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(given) = given?;
    let Json(body) = body?;
    let jid = account(&ctx, &given)?;
    admin::set_password(&ctx.core, &jid, body.password).await?;
    tracing::info!(user = %jid, "password changed through the admin api");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
struct Stats {
    version: &'static str,
    domain: String,
    uptime_secs: u64,
    users: u64,
    connections: Connections,
    /// Present when the node is one of a cluster (docs/clustering.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<serde_json::Value>,
}

async fn stats(State(ctx): State<AdminContext>) -> Result<Json<Stats>, ApiError> {
    let users = ctx.store.accounts().count(ctx.core.domain()).await?;
    Ok(Json(Stats {
        version: env!("CARGO_PKG_VERSION"),
        domain: ctx.core.domain().to_string(),
        uptime_secs: ctx.status.started.elapsed().as_secs(),
        users,
        connections: ctx.status.connections(),
        cluster: ctx.status.cluster(),
    }))
}

/// Reloads the configuration and certificate (the same as SIGHUP); a broken configuration
/// is refused with 422 and the reason, and the running one is kept.
async fn reload(State(ctx): State<AdminContext>) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(reload) = ctx.reload.clone() else {
        return Err(ApiError::Refused("this server cannot reload".into()));
    };
    // Reads files and parses certificates: off the async threads.
    tokio::task::spawn_blocking(move || reload())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map(Json)
        .map_err(ApiError::Refused)
}

#[derive(Debug, Deserialize)]
struct KickQuery {
    reason: Option<String>,
}

/// Closes one session with `policy-violation` and the reason as the error's text
/// (`rookery_core::admin::end_sessions`).
async fn kick(
    State(ctx): State<AdminContext>,
    given: Result<Path<String>, PathRejection>,
    Query(q): Query<KickQuery>,
) -> Result<StatusCode, ApiError> {
    let Path(given) = given?;
    let jid = Jid::parse(&given)
        .ok()
        .filter(Jid::is_full)
        .ok_or_else(|| ApiError::BadRequest(format!("{given:?} is not a full JID")))?;
    let reason = q
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "disconnected by an administrator".into());
    if admin::end_sessions(&ctx.core, &jid, &reason) == 0 {
        return Err(ApiError::NotFound(format!("session {jid}")));
    }
    tracing::info!(%jid, %reason, "session kicked through the admin api");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
struct Session {
    jid: String,
    resource: Option<String>,
    ip: Option<String>,
    transport: Option<&'static str>,
    client: Option<String>,
}

#[derive(Debug, Serialize)]
struct Sessions {
    sessions: Vec<Session>,
}

async fn list_sessions(State(ctx): State<AdminContext>) -> Json<Sessions> {
    let mut sessions: Vec<Session> = ctx
        .core
        .sessions()
        .into_iter()
        .map(|h| {
            let jid = h.jid();
            let origin = h.origin();
            Session {
                jid: jid.to_string(),
                resource: jid.resource().map(str::to_string),
                ip: origin.map(|(peer, _)| peer.ip().to_string()),
                transport: origin.map(|(_, t)| t.as_str()),
                client: (ctx.status.client)(jid),
            }
        })
        .collect();
    sessions.sort_by(|a, b| a.jid.cmp(&b.jid));
    Json(Sessions { sessions })
}

#[derive(Debug, Deserialize)]
struct Announcement {
    body: String,
    subject: Option<String>,
}

#[derive(Debug, Serialize)]
struct Announced {
    sent: usize,
}

/// An announcement to every online session (`rookery_core::admin::announce`).
async fn announce(
    State(ctx): State<AdminContext>,
    a: Result<Json<Announcement>, JsonRejection>,
) -> Result<Json<Announced>, ApiError> {
    let Json(a) = a?;
    if a.body.trim().is_empty() {
        return Err(ApiError::BadRequest("empty body".into()));
    }
    let sent = admin::announce(&ctx.core, a.subject.as_deref(), &a.body);
    tracing::info!(sent, "announcement sent through the admin api");
    Ok(Json(Announced { sent }))
}
