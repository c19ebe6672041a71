//! The HTTP side (XEP-0363 §6): `PUT` of a slot's file with its signed URL, `GET`/`HEAD`
//! of stored files, CORS for web clients (Converse.js uploads from its own origin; the URL's
//! signature, not the origin, is what authorizes).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rookery_proto::time::now_unix;
use serde::Deserialize;

use crate::error::UploadError;
use crate::files::chunks;
use crate::service::Upload;
use crate::slot::{encode_segment, is_id, safe_name, PutGrant};

/// Where files live on the HTTP listener.
pub const PATH: &str = "/upload/{owner}/{slot}/{name}";

/// A PUT waits at most this long for the next chunk of the body.
const IDLE: Duration = Duration::from_secs(60);

/// The upload routes, for the public listener.
pub fn router(upload: Arc<Upload>) -> Router {
    Router::new()
        .route(PATH, get(download).put(put).options(preflight))
        .with_state(upload)
}

impl IntoResponse for UploadError {
    fn into_response(self) -> Response {
        let mut r = (self.status(), self.to_string()).into_response();
        cors(r.headers_mut());
        r
    }
}

fn cors(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
}

async fn preflight() -> Response {
    let mut r = rookery_http::cors::preflight("GET, HEAD, PUT, OPTIONS");
    cors(r.headers_mut());
    r
}

/// The signed facts in a PUT URL's query.
#[derive(Deserialize)]
struct PutQuery {
    size: u64,
    #[serde(rename = "type", default)]
    content_type: String,
    expires: i64,
    sig: String,
}

/// A path's file name: exactly what [`safe_name`] produced for the slot (anything else,
/// e.g. a decoded `%2F`, is no file of ours).
fn checked_name(name: &str) -> Result<&str, UploadError> {
    match safe_name(name) {
        Ok(safe) if safe == name => Ok(name),
        _ => Err(UploadError::NotFound),
    }
}

async fn put(
    State(up): State<Arc<Upload>>,
    Path((owner, slot, name)): Path<(String, String, String)>,
    query: Result<Query<PutQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, UploadError> {
    let Ok(Query(q)) = query else {
        return Err(UploadError::BadSignature);
    };
    if !is_id(&owner) || !is_id(&slot) {
        return Err(UploadError::BadSignature);
    }
    let name = checked_name(&name).map_err(|_| UploadError::BadSignature)?;
    let grant = PutGrant {
        owner: &owner,
        slot: &slot,
        filename: name,
        size: q.size,
        content_type: &q.content_type,
        expires: q.expires,
    };
    if !up.signer.verify(&grant, &q.sig) || q.expires < now_unix() {
        return Err(UploadError::BadSignature);
    }
    // §6: the PUT carries the size and type of the request.
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|l| l != q.size) {
        return Err(UploadError::Mismatch(
            "Content-Length differs from the slot's size",
        ));
    }
    let declared_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|t| t.trim().to_ascii_lowercase());
    if !q.content_type.is_empty() && declared_type.as_deref() != Some(q.content_type.as_str()) {
        return Err(UploadError::Mismatch(
            "Content-Type differs from the slot's",
        ));
    }
    up.files
        .put(&grant, body.into_data_stream(), up.config.quota_bytes, IDLE)
        .await?;
    tracing::info!(owner = %owner, size = q.size, "file uploaded");
    let mut r = StatusCode::CREATED.into_response();
    cors(r.headers_mut());
    Ok(r)
}

/// Types a browser may show inline; everything else is offered as a download.
fn inline(content_type: &str) -> bool {
    let major = content_type.split('/').next().unwrap_or_default();
    matches!(major, "image" | "audio" | "video") && content_type != "image/svg+xml"
        || content_type == "text/plain"
}

async fn download(
    State(up): State<Arc<Upload>>,
    Path((owner, slot, name)): Path<(String, String, String)>,
) -> Result<Response, UploadError> {
    let name = checked_name(&name)?;
    let stored = up.files.open(&owner, &slot, name).await?;
    let content_type = stored
        .content_type
        .unwrap_or_else(|| "application/octet-stream".to_string());
    let disposition = format!(
        "{}; filename*=UTF-8''{}",
        if inline(&content_type) {
            "inline"
        } else {
            "attachment"
        },
        encode_segment(name)
    );
    let mut r = Response::new(Body::from_stream(chunks(stored.file)));
    let h = r.headers_mut();
    let value = |s: &str| HeaderValue::from_str(s).map_err(|_| UploadError::Io);
    h.insert(header::CONTENT_TYPE, value(&content_type)?);
    h.insert(header::CONTENT_LENGTH, value(&stored.len.to_string())?);
    h.insert(header::CONTENT_DISPOSITION, value(&disposition)?);
    // A stored file never changes (one slot, one PUT): cache it for good.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // An uploaded HTML or SVG file must not run script in the listener's origin.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    cors(h);
    Ok(r)
}
