//! Errors of the admin API, mapped once to a status code and a JSON body
//! `{"error": "<message>"}`.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rookery_core::admin::AdminError;
use rookery_core::AccountError;
use rookery_store::StoreError;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No bearer token.
    #[error("a bearer token is required")]
    Unauthorized,
    /// A bearer token that is not the admin token.
    #[error("invalid bearer token")]
    InvalidToken,
    /// The request is malformed (bad JID, empty password …).
    #[error("{0}")]
    BadRequest(String),
    /// The user or session does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The route exists, but not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The user already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// The store failed.
    #[error("store error: {0}")]
    Store(#[from] StoreError),
    /// The core's account directory failed.
    #[error("{0}")]
    Account(#[from] AccountError),
    /// The server refused the request as a whole (a reload of a broken configuration); the
    /// running state is unchanged.
    #[error("{0}")]
    Refused(String),
    /// Deriving credentials failed (the blocking task died).
    #[error("internal error: {0}")]
    Internal(String),
}

/// A body that is not the JSON the route takes (not JSON, the wrong shape, or not labelled
/// `application/json`) is the client's mistake: 400 with what was wrong, as every other
/// malformed request, instead of axum's mix of 400, 415 and 422 in plain text.
impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

/// A path segment that does not read (not UTF-8 once percent-decoded): 400 with the JSON
/// body like any malformed request, not axum's plain text.
impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::NotLocal(_) | AdminError::Password(_) => {
                ApiError::BadRequest(e.to_string())
            }
            AdminError::Exists(jid) => ApiError::Conflict(jid),
            AdminError::NotFound(what) => ApiError::NotFound(what),
            AdminError::Accounts(e) => ApiError::Account(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized | ApiError::InvalidToken => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Store(StoreError::Conflict) | ApiError::Account(AccountError::Conflict) => {
                StatusCode::CONFLICT
            }
            ApiError::Store(_) | ApiError::Account(_) | ApiError::Internal(_) => {
                tracing::error!(error = %self, "admin api");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = Json(serde_json::json!({ "error": self.to_string() }));
        // RFC 6750 §3: a 401 names the scheme, and the error when a token was given.
        let challenge = match &self {
            ApiError::Unauthorized => Some("Bearer"),
            ApiError::InvalidToken => Some("Bearer error=\"invalid_token\""),
            _ => None,
        };
        if let Some(c) = challenge {
            return (status, [(header::WWW_AUTHENTICATE, c)], body).into_response();
        }
        (status, body).into_response()
    }
}
