//! The bearer token of the admin API (RFC 6750 §2.1), compared in constant time so that
//! response timing does not reveal how much of a guess was right.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AdminContext;

/// The token of an `Authorization: Bearer <token>` header value (RFC 6750 §2.1; the scheme
/// is case-insensitive); `None` for any other scheme or shape. Shared with the public
/// listener's HTTP tokens.
pub fn bearer(header_value: Option<&str>) -> Option<&str> {
    let (scheme, rest) = header_value?.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Whether `header_value` is `Bearer <token>` with exactly this token.
pub(super) fn authorized(header_value: Option<&str>, token: &str) -> bool {
    let Some(given) = bearer(header_value) else {
        return false;
    };
    // An empty configured token would let an empty guess in: never accept one.
    !token.is_empty() && bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

/// Middleware: 401 unless the request carries the token.
pub(super) async fn require_token(
    State(ctx): State<AdminContext>,
    req: Request,
    next: Next,
) -> Response {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !authorized(value, &ctx.token) {
        let refused = if bearer(value).is_some() {
            ApiError::InvalidToken
        } else {
            ApiError::Unauthorized
        };
        return refused.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_passes() {
        assert!(authorized(Some("Bearer s3cret"), "s3cret"));
        assert!(authorized(Some("bearer s3cret"), "s3cret"));
        assert!(!authorized(Some("Bearer s3cre"), "s3cret"));
        assert!(!authorized(Some("Bearer s3cretx"), "s3cret"));
        assert!(!authorized(Some("Basic s3cret"), "s3cret"));
        assert!(!authorized(Some("s3cret"), "s3cret"));
        assert!(!authorized(None, "s3cret"));
        assert!(!authorized(Some("Bearer "), ""));
    }
}
