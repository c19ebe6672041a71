//! Sans-IO SASL for Rookery: the server side of the mechanisms an XMPP server offers
//! (RFC 6120 §6), and a client side for tests and the load generator.
//!
//! # Why sans-IO
//! Authentication is a pure exchange of byte strings. Keeping it free of sockets, tokio and
//! SQL means every step (including every malformed input) is testable in memory, fuzzable,
//! and reusable by the c2s listener, the admin CLI and the load generator alike. The caller
//! owns the I/O: it base64-decodes `<auth/>`/`<response/>` payloads, feeds them to a
//! [`ServerSession`], and turns each [`Step`] into `<challenge/>`, `<success/>` or
//! `<failure/>`. When the session needs the stored verifiers it says so with
//! [`Step::NeedCredentials`]; the caller looks them up (in `rookery-store`) and hands them
//! back with [`ServerSession::provide_credentials`].
//!
//! # Mechanisms
//! - `SCRAM-SHA-1`, `SCRAM-SHA-256`, `SCRAM-SHA-512` (RFC 5802, RFC 7677, and the SHA-512
//!   variant registered by draft-melnikov-scram-sha-512) and their `-PLUS` forms with the
//!   `tls-exporter` (RFC 9266) or `tls-server-end-point` (RFC 5929) channel binding
//!   ([`channel_binding`]).
//! - `PLAIN` (RFC 4616), verified against an Argon2id hash, never a stored password.
//!
//! # Layout
//! - [`mechanism`]: the [`Mechanism`] names and their order of preference.
//! - [`hash`]: [`ScramHash`], the one implementation of the SCRAM key derivation
//!   (`Hi`, `ClientKey`, `StoredKey`, `ServerKey`) shared by server, client and
//!   [`Credentials::derive`].
//! - [`credentials`]: what is stored per account ([`Credentials`], [`ScramKeys`]) and the
//!   password normalization (RFC 8265 OpaqueString).
//! - `scram` (private): parsing and formatting of SCRAM messages.
//! - [`server`]: [`ServerSession`], the server state machine for every mechanism.
//! - [`client`]: [`ScramClient`], [`SaltedPasswordCache`] and [`plain_message`].
//! - [`ht`]: the HT-* token mechanisms of XEP-0484 FAST (one message each way, so no
//!   session state machine).
//!
//! # Security notes
//! - Proofs and signatures are compared in constant time (`subtle`).
//! - An unknown user is not revealed before the proof: the server answers with a salt
//!   derived from the username under a per-process random key and fails at the proof with
//!   `not-authorized`, exactly as for a wrong password.
//! - A client that says it supports channel binding (`y` flag) while the server advertised a
//!   `-PLUS` mechanism on a connection that has binding data is refused (downgrade attack,
//!   RFC 5802 §6).
//! - No input from the network can panic: parsing uses no indexing, `unwrap` or `expect`.

pub mod channel_binding;
pub mod client;
pub mod credentials;
pub mod hash;
pub mod ht;
pub mod mechanism;
mod plain;
mod scram;
pub mod server;

pub use channel_binding::ChannelBindings;
pub use client::{plain_message, SaltedPasswordCache, ScramClient};
pub use credentials::{normalize_password, Credentials, ScramKeys};
pub use hash::ScramHash;
pub use mechanism::Mechanism;
pub use server::ServerSession;

/// The PBKDF2 iteration count used when deriving new SCRAM credentials.
///
/// 4096 is what ejabberd and Prosody use, and the minimum RFC 7677 §4 asks for.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// The highest iteration count [`ScramClient`] accepts from a server, so that a hostile
/// server cannot make the client spin for minutes.
pub const MAX_CLIENT_ITERATIONS: u32 = 10_000_000;

/// Why an authentication attempt failed, one variant per RFC 6120 §6.5 condition.
///
/// The server session produces [`Failure::MalformedRequest`] and
/// [`Failure::NotAuthorized`] and friends; the caller uses the others (for example
/// [`Failure::Aborted`] on `<abort/>`, [`Failure::InvalidAuthzid`] after checking
/// [`Step::Success`]'s `authzid`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Failure {
    /// `<aborted/>`: the client sent `<abort/>` (§6.5.1).
    Aborted,
    /// `<account-disabled/>`: the account is disabled (§6.5.2).
    AccountDisabled,
    /// `<credentials-expired/>`: the credentials have expired (§6.5.3).
    CredentialsExpired,
    /// `<encryption-required/>`: the mechanism needs TLS first (§6.5.4).
    EncryptionRequired,
    /// `<incorrect-encoding/>`: the data was not valid base64 (§6.5.5).
    IncorrectEncoding,
    /// `<invalid-authzid/>`: the authorization identity is not allowed (§6.5.6).
    InvalidAuthzid,
    /// `<invalid-mechanism/>`: the mechanism is not offered (§6.5.7).
    InvalidMechanism,
    /// `<malformed-request/>`: the message did not follow the mechanism's syntax (§6.5.8).
    MalformedRequest,
    /// `<mechanism-too-weak/>`: policy requires a stronger mechanism (§6.5.9).
    MechanismTooWeak,
    /// `<not-authorized/>`: wrong credentials or unknown user (§6.5.10).
    NotAuthorized,
    /// `<temporary-auth-failure/>`: a server-side problem, try again later (§6.5.11).
    TemporaryAuthFailure,
}

impl Failure {
    /// The element name of this condition inside `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`.
    pub fn condition(self) -> &'static str {
        match self {
            Failure::Aborted => "aborted",
            Failure::AccountDisabled => "account-disabled",
            Failure::CredentialsExpired => "credentials-expired",
            Failure::EncryptionRequired => "encryption-required",
            Failure::IncorrectEncoding => "incorrect-encoding",
            Failure::InvalidAuthzid => "invalid-authzid",
            Failure::InvalidMechanism => "invalid-mechanism",
            Failure::MalformedRequest => "malformed-request",
            Failure::MechanismTooWeak => "mechanism-too-weak",
            Failure::NotAuthorized => "not-authorized",
            Failure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }

    /// The condition for an element name, the inverse of [`Failure::condition`].
    pub fn from_condition(name: &str) -> Option<Failure> {
        Some(match name {
            "aborted" => Failure::Aborted,
            "account-disabled" => Failure::AccountDisabled,
            "credentials-expired" => Failure::CredentialsExpired,
            "encryption-required" => Failure::EncryptionRequired,
            "incorrect-encoding" => Failure::IncorrectEncoding,
            "invalid-authzid" => Failure::InvalidAuthzid,
            "invalid-mechanism" => Failure::InvalidMechanism,
            "malformed-request" => Failure::MalformedRequest,
            "mechanism-too-weak" => Failure::MechanismTooWeak,
            "not-authorized" => Failure::NotAuthorized,
            "temporary-auth-failure" => Failure::TemporaryAuthFailure,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.condition())
    }
}

/// What the caller does next, as decided by a [`ServerSession`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Step {
    /// Send `<challenge/>` with these bytes (base64-encoded by the caller; empty means `=`),
    /// then feed the client's `<response/>` to [`ServerSession::respond`].
    Challenge(Vec<u8>),
    /// Look up the stored credentials of this authentication identity and call
    /// [`ServerSession::provide_credentials`] (with `None` if there is no such account).
    ///
    /// `username` is the raw authcid (SCRAM `=2C`/`=3D` already unescaped); the caller
    /// normalizes it as a JID localpart (RFC 7622) before the lookup.
    NeedCredentials {
        /// The authentication identity as sent by the client.
        username: String,
    },
    /// Authentication succeeded: send `<success/>` carrying `additional_data` if any
    /// (RFC 6120 §6.3.10; for SCRAM it is the server-final-message `v=…`).
    ///
    /// The caller must still check `authzid`: if it is present and is not the bare JID of
    /// `username` (or one the account may act for) it fails with
    /// [`Failure::InvalidAuthzid`].
    Success {
        /// The authentication identity (raw authcid, as in [`Step::NeedCredentials`]).
        username: String,
        /// The authorization identity the client asked for, if it sent a non-empty one.
        authzid: Option<String>,
        /// Data for the `<success/>` element, if any.
        additional_data: Option<Vec<u8>>,
    },
    /// Authentication failed: send `<failure/>` with this condition. The session is over.
    Failure(Failure),
}

/// Errors of credential derivation and of the client side.
///
/// The server side never returns errors: it answers with [`Step::Failure`].
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum SaslError {
    /// The PBKDF2 iteration count is zero or above [`MAX_CLIENT_ITERATIONS`].
    #[error("invalid iteration count {0}")]
    InvalidIterations(u32),
    /// The password is empty or contains characters the OpaqueString profile (RFC 8265 §4.2)
    /// does not allow.
    #[error("password is not a valid opaquestring (rfc 8265)")]
    InvalidPassword,
    /// Argon2 hashing failed.
    #[error("argon2 hashing failed: {0}")]
    Argon2(String),
    /// The mechanism given to [`ScramClient`] is not a SCRAM mechanism.
    #[error("{0} is not a scram mechanism")]
    NotScram(Mechanism),
    /// A `-PLUS` mechanism was chosen without channel binding data.
    #[error("{0} requires channel binding data")]
    MissingChannelBinding(Mechanism),
    /// The server's message does not follow the SCRAM syntax.
    #[error("malformed server message: {0}")]
    MalformedServerMessage(&'static str),
    /// The server nonce does not extend the client nonce (RFC 5802 §5.1 `r`).
    #[error("server nonce does not extend the client nonce")]
    NonceMismatch,
    /// The server answered with `e=` (RFC 5802 §7 server-error).
    #[error("server reported error: {0}")]
    ServerError(String),
    /// The server signature is wrong: the server does not know the password.
    #[error("server signature does not match")]
    InvalidServerSignature,
    /// A client method was called out of order.
    #[error("scram client method called out of order")]
    OutOfOrder,
}
