//! Who is calling the public HTTP API: anonymous, or the holder of a bearer token (RFC 6750
//! §2.1) that names a JID and scopes (`rookery token issue`, stored hashed by
//! `rookery_store::tokens`). What the caller may then do is the pubsub engine's decision,
//! exactly as over XMPP; the token's scopes only narrow it.
//!
//! [`Caller`] is an axum extractor: a handler that takes one has already refused (`401`) a
//! request whose token is unknown, revoked or expired — a bad token is never treated as no
//! token. The token comes in the `Authorization` header or, for a browser's `EventSource`
//! (which cannot set headers), in the `access_token` query parameter (RFC 6750 §2.3; the
//! server logs no request URIs).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use rookery_jid::BareJid;
use rookery_store::tokens::Scope;
use rookery_store::Store;

use crate::WebContext;

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No `Authorization` header: what `open` nodes allow anyone.
    Anonymous,
    /// A valid token's holder.
    Token {
        /// The account the token names.
        jid: BareJid,
        /// What it allows.
        scopes: Vec<Scope>,
    },
}

impl Caller {
    /// The JID to ask the engine about for `scope`: `None` for an anonymous caller,
    /// `Err(403)` when the token lacks the scope.
    pub fn jid_for(&self, scope: Scope) -> Result<Option<&BareJid>, AuthError> {
        match self {
            Caller::Anonymous => Ok(None),
            Caller::Token { jid, scopes } if scopes.contains(&scope) => Ok(Some(jid)),
            Caller::Token { .. } => Err(AuthError::InsufficientScope(scope)),
        }
    }
}

/// Why a request's credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is malformed, unknown, revoked or expired (RFC 6750 §3.1 `invalid_token`).
    #[error("invalid token")]
    InvalidToken,
    /// The operation needs a token (RFC 6750 §3 without an error code).
    #[error("authentication required")]
    Required,
    /// The token lacks the scope the operation needs (RFC 6750 §3.1 `insufficient_scope`).
    #[error("token lacks the {} scope", .0.as_str())]
    InsufficientScope(Scope),
    /// The token store failed.
    #[error("token store unavailable")]
    Store,
}

impl AuthError {
    /// The status and the `WWW-Authenticate` challenge (RFC 6750 §3).
    pub fn status_and_challenge(&self) -> (StatusCode, Option<String>) {
        match self {
            AuthError::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                Some("Bearer error=\"invalid_token\"".into()),
            ),
            AuthError::Required => (StatusCode::UNAUTHORIZED, Some("Bearer".into())),
            AuthError::InsufficientScope(s) => (
                StatusCode::FORBIDDEN,
                Some(format!(
                    "Bearer error=\"insufficient_scope\", scope=\"{}\"",
                    s.as_str()
                )),
            ),
            AuthError::Store => (StatusCode::SERVICE_UNAVAILABLE, None),
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (status, challenge) = self.status_and_challenge();
        let condition = match status {
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::UNAUTHORIZED => "not-authorized",
            _ => "internal-server-error",
        };
        let body = axum::Json(serde_json::json!({
            "error": condition,
            "text": self.to_string(),
        }));
        let mut r = (status, body).into_response();
        if let Some(c) = challenge.and_then(|c| c.parse().ok()) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        r
    }
}

/// Checks the bearer token of `authorization` (the header's value) against `store` at `now`
/// (seconds since the Unix epoch). No header is [`Caller::Anonymous`]; a header that is not
/// a valid token is an error.
pub async fn check(
    store: &Store,
    authorization: Option<&str>,
    now: i64,
) -> Result<Caller, AuthError> {
    if authorization.is_none() {
        return Ok(Caller::Anonymous);
    }
    let secret = rookery_http::bearer(authorization).ok_or(AuthError::InvalidToken)?;
    let token = store
        .tokens()
        .verify(secret, now)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "checking an HTTP token failed");
            AuthError::Store
        })?
        .ok_or(AuthError::InvalidToken)?;
    let jid = BareJid::parse(&format!("{}@{}", token.username, token.domain))
        .map_err(|_| AuthError::InvalidToken)?;
    Ok(Caller::Token {
        jid,
        scopes: token.scopes,
    })
}

/// The `access_token` query parameter of `uri` (RFC 6750 §2.3), if any.
fn query_token(uri: &axum::http::Uri) -> Option<String> {
    let q: axum::extract::Query<std::collections::HashMap<String, String>> =
        axum::extract::Query::try_from_uri(uri).ok()?;
    q.0.get("access_token").cloned()
}

impl FromRequestParts<Arc<WebContext>> for Caller {
    type Rejection = AuthError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &Arc<WebContext>,
    ) -> Result<Self, Self::Rejection> {
        let value = match parts.headers.get(header::AUTHORIZATION) {
            None => query_token(&parts.uri).map(|t| format!("Bearer {t}")),
            Some(v) => Some(v.to_str().map_err(|_| AuthError::InvalidToken)?.to_string()),
        };
        check(
            &ctx.store,
            value.as_deref(),
            rookery_proto::time::now_unix(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn scopes_narrow_what_a_token_may_do() {
        let c = Caller::Token {
            jid: BareJid::parse("a@example.org").unwrap(),
            scopes: vec![Scope::Read],
        };
        assert!(c.jid_for(Scope::Read).unwrap().is_some());
        assert_eq!(
            c.jid_for(Scope::Publish),
            Err(AuthError::InsufficientScope(Scope::Publish))
        );
        assert_eq!(Caller::Anonymous.jid_for(Scope::Publish), Ok(None));
        let uri: axum::http::Uri = "/p/s/n?last_event_id=1&access_token=ab%20c"
            .parse()
            .unwrap();
        assert_eq!(query_token(&uri).as_deref(), Some("ab c"));
        assert_eq!(query_token(&"/p/s/n".parse().unwrap()), None);
        assert_eq!(
            AuthError::InvalidToken.status_and_challenge().0,
            StatusCode::UNAUTHORIZED
        );
    }
}
