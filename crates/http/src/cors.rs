//! CORS preflight answers (Fetch standard, "CORS protocol") for the public listener's routes
//! that browsers call from other origins (BOSH, file upload, the pubsub and presence API).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// A `204` preflight answer allowing `methods` (e.g. `"POST, OPTIONS"`) with a `Content-Type`
/// request header, cached by the browser for a day. The caller adds the
/// `Access-Control-Allow-Origin` its route allows.
pub fn preflight(methods: &'static str) -> Response {
    preflight_allowing(methods, "Content-Type")
}

/// [`preflight`] allowing the request `headers` named (e.g. `"Authorization, Content-Type"`).
pub fn preflight_allowing(methods: &'static str, headers: &'static str) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(headers),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}
