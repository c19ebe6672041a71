//! Why a slot or an upload was refused, mapped once to XMPP (§5) and once to HTTP.

use rookery_proto::{ErrorType, StanzaError, StanzaErrorCondition as Cond};
use rookery_xml::Element;

use crate::NS;

/// A refused slot request or HTTP request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UploadError {
    /// The request is malformed.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The file is larger than `max_file_bytes`.
    #[error("file too large: the maximum file size is {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// The account's stored files would exceed its quota.
    #[error("quota reached: {used} of {quota} bytes in use")]
    QuotaReached {
        /// Bytes stored now.
        used: u64,
        /// The quota.
        quota: u64,
    },
    /// Only the server's own users may upload.
    #[error("only local accounts may upload files")]
    Forbidden,
    /// The PUT URL's signature does not match, or it expired.
    #[error("invalid or expired upload URL")]
    BadSignature,
    /// The body's length or type differs from the slot's.
    #[error("the upload does not match its slot: {0}")]
    Mismatch(&'static str),
    /// The slot was used already.
    #[error("this slot was used already")]
    Exists,
    /// No such file.
    #[error("not found")]
    NotFound,
    /// The disk said no.
    #[error("storage error")]
    Io,
}

impl UploadError {
    /// The stanza error of a refused slot request (§5).
    pub fn to_stanza_error(&self) -> StanzaError {
        let text = self.to_string();
        match self {
            UploadError::TooLarge { max } => StanzaError::new(Cond::NotAcceptable)
                .with_type(ErrorType::Modify)
                .with_text(text)
                .with_app(
                    Element::new("file-too-large", NS)
                        .with_child(Element::new("max-file-size", NS).with_text(max.to_string())),
                ),
            UploadError::QuotaReached { .. } => StanzaError::new(Cond::ResourceConstraint)
                .with_type(ErrorType::Wait)
                .with_text(text),
            UploadError::Forbidden => StanzaError::new(Cond::Forbidden).with_text(text),
            UploadError::Io => StanzaError::new(Cond::InternalServerError),
            _ => StanzaError::new(Cond::BadRequest).with_text(text),
        }
    }

    /// The HTTP status of a refused PUT or GET.
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode as S;
        match self {
            UploadError::BadRequest(_) | UploadError::Mismatch(_) => S::BAD_REQUEST,
            UploadError::TooLarge { .. } | UploadError::QuotaReached { .. } => S::PAYLOAD_TOO_LARGE,
            UploadError::Forbidden | UploadError::BadSignature => S::FORBIDDEN,
            UploadError::Exists => S::CONFLICT,
            UploadError::NotFound => S::NOT_FOUND,
            UploadError::Io => S::INTERNAL_SERVER_ERROR,
        }
    }
}
