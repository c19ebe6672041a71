//! XEP-0363 HTTP File Upload: a client asks the service at `upload.<domain>` for a slot over
//! XMPP, PUTs the file to the URL it gets, and shares the GET URL in a message.
//!
//! Layout:
//! - [`config`]: the `[upload]` section;
//! - [`slot`]: requests, safe file names and signed PUT URLs, without I/O;
//! - [`files`]: the files on disk (quota, atomic writes, expiry, account deletion);
//! - [`service`]: the XMPP side (disco, slot requests) and the account-deletion module;
//! - [`http`]: the HTTP side (PUT, GET/HEAD, CORS) on the public listener;
//! - [`error`]: refusals, mapped once to stanza errors and once to HTTP statuses.

pub mod config;
pub mod error;
pub mod files;
pub mod http;
pub mod service;
pub mod slot;

pub use config::UploadConfig;
pub use service::Upload;

/// XEP-0363's namespace.
pub const NS: &str = "urn:xmpp:http:upload:0";
