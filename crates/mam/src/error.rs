//! Why a query or preference change is refused, mapped once to the wire (XEP-0313 §4, §6).

use rookery_proto::{StanzaError, StanzaErrorCondition as C};

/// A refusal, named by its cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MamError {
    /// A malformed query: bad date or JID, bad RSM (`bad-request`).
    #[error("{0}")]
    BadRequest(String),
    /// What the archive does not implement: a form field it does not know (§4.1.5), an RSM
    /// `<index/>` (XEP-0059 §2.5) — `feature-not-implemented`.
    #[error("{0}")]
    Unsupported(String),
    /// Another account's archive (`forbidden`).
    #[error("not your archive")]
    Forbidden,
    /// An RSM `after`/`before` or `after-id`/`before-id` not in the archive (§4.1.6:
    /// `item-not-found`).
    #[error("no such message in the archive")]
    NotFound,
    /// The store failed (`internal-server-error`).
    #[error("archive unavailable")]
    Store,
}

impl From<MamError> for StanzaError {
    fn from(e: MamError) -> StanzaError {
        let c = match &e {
            MamError::BadRequest(_) => C::BadRequest,
            MamError::Unsupported(_) => C::FeatureNotImplemented,
            MamError::Forbidden => C::Forbidden,
            MamError::NotFound => C::ItemNotFound,
            MamError::Store => C::InternalServerError,
        };
        StanzaError::new(c).with_text(e.to_string())
    }
}

impl From<rookery_store::StoreError> for MamError {
    fn from(e: rookery_store::StoreError) -> MamError {
        tracing::error!(error = %e, "message archive store");
        MamError::Store
    }
}
