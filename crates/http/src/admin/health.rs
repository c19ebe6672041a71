//! `GET /health` (the process is alive and answering) and `GET /ready` (it can serve: the
//! store answers and every configured listener is bound), for load balancers, container
//! health checks and systemd watchdogs. Both carry the same JSON report.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::{AdminContext, Connections};

/// The JSON body of `/health` and `/ready`.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    /// `ok`, or `unavailable` when `/ready` fails.
    status: &'static str,
    version: &'static str,
    uptime_secs: u64,
    pid: u32,
    connections: Connections,
    /// `/ready` only: whether the store answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<bool>,
    /// `/ready` only: whether every listener is bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    listeners: Option<bool>,
}

fn report(ctx: &AdminContext, status: &'static str) -> Report {
    Report {
        status,
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: ctx.status.started.elapsed().as_secs(),
        pid: std::process::id(),
        connections: ctx.status.connections(),
        store: None,
        listeners: None,
    }
}

/// `GET /health`.
pub(super) async fn health(State(ctx): State<AdminContext>) -> Json<Report> {
    Json(report(&ctx, "ok"))
}

/// `GET /ready`.
pub(super) async fn ready(State(ctx): State<AdminContext>) -> (StatusCode, Json<Report>) {
    let store = match ctx.store.ping().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the store does not answer");
            false
        }
    };
    let listeners = ctx.status.is_listening();
    let ok = store && listeners;
    let mut r = report(&ctx, if ok { "ok" } else { "unavailable" });
    r.store = Some(store);
    r.listeners = Some(listeners);
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r))
}
