//! The server side of every mechanism: one state machine, [`ServerSession`], driven by the
//! caller with the client's messages (RFC 6120 §6.4) and the stored [`Credentials`].
//!
//! ```text
//! start(mech, cb, plus_advertised, initial)
//!   ├─ empty initial response ─► Challenge([])  ─► respond(first message) ─┐
//!   └─ first message ──────────────────────────────────────────────────────┴─► NeedCredentials
//! provide_credentials(creds)
//!   ├─ SCRAM ─► Challenge(server-first) ─► respond(client-final) ─► Success(v=…) | Failure
//!   └─ PLAIN ─► Success | Failure
//! ```
//! SCRAM follows RFC 5802 §5 and §9 with the `tls-exporter` channel binding of RFC 9266;
//! PLAIN follows RFC 4616 and is verified against Argon2id.

use std::fmt;
use std::sync::OnceLock;

use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::channel_binding::ChannelBindings;
use crate::credentials::{dummy_verify, normalize_password, SALT_LEN};
use crate::hash::{xor, ScramHash};
use crate::plain::{self, PlainMessage};
use crate::scram::{self, b64, CbFlag};
use crate::{Credentials, Failure, Mechanism, ScramKeys, Step, DEFAULT_ITERATIONS};

/// Random bytes in a server nonce (encoded as 32 base64 characters).
const NONCE_BYTES: usize = 24;

/// One server-side SASL exchange.
///
/// Created by [`ServerSession::start`] from the client's `<auth/>`; every method returns
/// the next [`Step`]. After [`Step::Success`] or [`Step::Failure`] the session is finished
/// and further calls return [`Failure::MalformedRequest`].
pub struct ServerSession {
    mech: Mechanism,
    channel_binding: ChannelBindings,
    plus_advertised: bool,
    server_nonce: String,
    /// XEP-0474 (SSDP): what the server offered on this stream, hashed into `d=` of the
    /// server-first-message so a client can detect a stripped mechanism or binding type.
    downgrade_protection: Option<String>,
    state: State,
}

/// Where a session is in its exchange.
enum State {
    /// SCRAM without initial response: waiting for client-first-message.
    ScramFirst(ScramHash),
    /// SCRAM: client-first parsed, waiting for the caller's credentials.
    ScramCredentials(ScramStart),
    /// SCRAM: server-first sent, waiting for client-final-message.
    ScramFinal(ScramExchange),
    /// PLAIN without initial response: waiting for the message.
    PlainMessage,
    /// PLAIN: message parsed, waiting for the caller's credentials.
    PlainCredentials(PlainMessage),
    /// Success or failure has been returned.
    Done,
}

/// What SCRAM keeps from the client-first-message.
struct ScramStart {
    hash: ScramHash,
    /// What the client must send in `c=`: its gs2-header, then the binding data if any.
    expected_cb: Vec<u8>,
    username: String,
    authzid: Option<String>,
    client_nonce: String,
    bare: String,
}

/// What SCRAM keeps once the server-first-message is sent.
struct ScramExchange {
    start: ScramStart,
    server_first: String,
    nonce: String,
    keys: ScramKeys,
    /// False when the keys are fake (unknown user): the proof then always fails.
    known: bool,
}

impl ServerSession {
    /// Starts an exchange for the `<auth mechanism=…/>` the client sent.
    ///
    /// - `channel_binding`: what the TLS connection can bind to (`tls-exporter` on TLS 1.3,
    ///   `tls-server-end-point` where the certificate is known), empty otherwise; a
    ///   `-PLUS` exchange binds to the type its gs2 header names. A `-PLUS` mechanism
    ///   without any fails with [`Failure::InvalidMechanism`] (it should not have been
    ///   advertised).
    /// - `plus_advertised`: whether the server advertised any `-PLUS` mechanism on this
    ///   stream, for the downgrade check of the `y` flag (RFC 5802 §6).
    /// - `initial_response`: the decoded `<auth/>` text; empty means no initial response,
    ///   in which case the session answers with an empty challenge and expects the first
    ///   message in [`ServerSession::respond`].
    pub fn start(
        mech: Mechanism,
        channel_binding: impl Into<ChannelBindings>,
        plus_advertised: bool,
        initial_response: &[u8],
    ) -> (ServerSession, Step) {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        Self::start_with_nonce(
            mech,
            channel_binding.into(),
            plus_advertised,
            initial_response,
            b64(&nonce),
        )
    }

    /// [`ServerSession::start`] with a given server nonce, for test vectors.
    pub(crate) fn start_with_nonce(
        mech: Mechanism,
        channel_binding: ChannelBindings,
        plus_advertised: bool,
        initial_response: &[u8],
        server_nonce: String,
    ) -> (ServerSession, Step) {
        let mut session = ServerSession {
            mech,
            channel_binding,
            plus_advertised,
            server_nonce,
            downgrade_protection: None,
            state: State::Done,
        };
        let step = match mech.scram_hash() {
            None if initial_response.is_empty() => {
                session.state = State::PlainMessage;
                Step::Challenge(Vec::new())
            }
            None => session.plain_message(initial_response),
            Some(_) if mech.is_plus() && session.channel_binding.is_empty() => {
                Step::Failure(Failure::InvalidMechanism)
            }
            Some(hash) if initial_response.is_empty() => {
                session.state = State::ScramFirst(hash);
                Step::Challenge(Vec::new())
            }
            Some(hash) => session.scram_client_first(hash, initial_response),
        };
        (session, step)
    }

    /// Adds XEP-0474 (0.4.0+) downgrade protection to a SCRAM exchange: the
    /// server-first-message carries `h=`, the base64 hash (the mechanism's own hash function)
    /// of [`ssdp_string`] of the offered `mechanisms` and `channel_bindings`. The client compares
    /// it with what it saw offered; as the server-first-message is part of the SCRAM
    /// AuthMessage, a man in the middle cannot change it without breaking the signature.
    /// Call it before the credentials are provided; it does nothing for PLAIN.
    pub fn protect_downgrade(&mut self, mechanisms: &[&str], channel_bindings: &[&str]) {
        self.downgrade_protection = Some(ssdp_string(mechanisms, channel_bindings));
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// Whether the exchange is over (success or failure was returned).
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Hands over the stored credentials asked for by [`Step::NeedCredentials`]; `None` for
    /// an unknown user.
    ///
    /// An unknown user is not revealed here: SCRAM answers with a plausible salt and fails
    /// at the proof; PLAIN spends the time of one Argon2 verification before failing.
    pub fn provide_credentials(&mut self, creds: Option<&Credentials>) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::ScramCredentials(start) => self.scram_server_first(start, creds),
            State::PlainCredentials(msg) => plain_verify(msg, creds),
            // The caller did not follow the steps: a server-side bug, not the client's.
            _ => Step::Failure(Failure::TemporaryAuthFailure),
        }
    }

    /// Feeds the client's `<response/>` payload (already base64-decoded).
    pub fn respond(&mut self, response: &[u8]) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::ScramFirst(hash) => self.scram_client_first(hash, response),
            State::ScramFinal(exchange) => scram_client_final(exchange, response),
            State::PlainMessage => self.plain_message(response),
            State::ScramCredentials(_) | State::PlainCredentials(_) => {
                Step::Failure(Failure::TemporaryAuthFailure)
            }
            State::Done => Step::Failure(Failure::MalformedRequest),
        }
    }

    /// Handles a PLAIN message.
    fn plain_message(&mut self, msg: &[u8]) -> Step {
        match plain::parse(msg) {
            Some(msg) => {
                let username = msg.authcid.clone();
                self.state = State::PlainCredentials(msg);
                Step::NeedCredentials { username }
            }
            None => Step::Failure(Failure::MalformedRequest),
        }
    }

    /// Handles a client-first-message: syntax, the gs2 channel-binding flag against the
    /// mechanism and the connection, then asks for credentials.
    fn scram_client_first(&mut self, hash: ScramHash, msg: &[u8]) -> Step {
        let Some(first) = std::str::from_utf8(msg)
            .ok()
            .and_then(scram::parse_client_first)
        else {
            return Step::Failure(Failure::MalformedRequest);
        };
        let mut expected_cb = first.gs2_header.as_bytes().to_vec();
        let bindable = !self.channel_binding.is_empty();
        match (&first.cb_flag, self.mech.is_plus()) {
            (CbFlag::Used(name), true) => match self.channel_binding.data(name) {
                Some(data) => expected_cb.extend_from_slice(data),
                // A type this connection does not have (tls-unique, …).
                None => return Step::Failure(Failure::MalformedRequest),
            },
            // Binding asked for with a non-PLUS mechanism, or a PLUS mechanism without.
            (CbFlag::Used(_), false) | (_, true) => {
                return Step::Failure(Failure::MalformedRequest)
            }
            // The client supports binding and believes the server does not, yet this server
            // offered -PLUS on a connection that has binding data: someone stripped the
            // -PLUS mechanisms on the way (RFC 5802 §6).
            (CbFlag::SupportedNotUsed, false) if bindable && self.plus_advertised => {
                return Step::Failure(Failure::NotAuthorized)
            }
            (CbFlag::SupportedNotUsed | CbFlag::No, false) => {}
        }
        let username = first.username;
        self.state = State::ScramCredentials(ScramStart {
            hash,
            expected_cb,
            username: username.clone(),
            authzid: first.authzid,
            client_nonce: first.nonce.to_owned(),
            bare: first.bare.to_owned(),
        });
        Step::NeedCredentials { username }
    }

    /// Sends the server-first-message, with fake keys for an unknown user.
    fn scram_server_first(&mut self, start: ScramStart, creds: Option<&Credentials>) -> Step {
        let hash = start.hash;
        let (keys, known) = match creds {
            Some(creds) => {
                let keys = creds.scram(hash);
                if !keys.is_valid_for(hash) {
                    return Step::Failure(Failure::TemporaryAuthFailure);
                }
                (keys.clone(), true)
            }
            None => (fake_keys(hash, &start.username), false),
        };
        let nonce = format!("{}{}", start.client_nonce, self.server_nonce);
        let mut server_first = format!("r={nonce},s={},i={}", b64(&keys.salt), keys.iterations);
        if let Some(ssdp) = &self.downgrade_protection {
            // RFC 5802 §7: extensions follow the iteration count.
            server_first.push_str(",h=");
            server_first.push_str(&b64(&hash.hash(ssdp.as_bytes())));
        }
        let challenge = server_first.clone().into_bytes();
        self.state = State::ScramFinal(ScramExchange {
            start,
            server_first,
            nonce,
            keys,
            known,
        });
        Step::Challenge(challenge)
    }
}

/// Handles a client-final-message: nonce, channel binding and proof.
fn scram_client_final(exchange: ScramExchange, msg: &[u8]) -> Step {
    let Some(fin) = std::str::from_utf8(msg)
        .ok()
        .and_then(scram::parse_client_final)
    else {
        return Step::Failure(Failure::MalformedRequest);
    };
    let ScramExchange {
        start,
        server_first,
        nonce,
        keys,
        known,
    } = exchange;
    let hash = start.hash;
    if fin.nonce != nonce || fin.proof.len() != hash.output_len() {
        return Step::Failure(Failure::NotAuthorized);
    }
    let auth_message = format!("{},{},{}", start.bare, server_first, fin.without_proof);
    let client_signature = hash.hmac(&keys.stored_key, auth_message.as_bytes());
    let client_key = xor(&fin.proof, &client_signature);
    let proof_ok = hash.hash(&client_key).ct_eq(&keys.stored_key);
    let cb_ok = fin.channel_binding.ct_eq(&start.expected_cb);
    if !bool::from(proof_ok & cb_ok) || !known {
        return Step::Failure(Failure::NotAuthorized);
    }
    let server_signature = hash.hmac(&keys.server_key, auth_message.as_bytes());
    Step::Success {
        username: start.username,
        authzid: start.authzid,
        additional_data: Some(format!("v={}", b64(&server_signature)).into_bytes()),
    }
}

/// The string XEP-0474 "Server Sends Downgrade Protection Hash" hashes (0.4.0+): the
/// mechanisms sorted by octet and joined with %x1E, then — when channel-binding types were
/// advertised (XEP-0440) — %x1F and the types, sorted and joined with %x1E. (The delimiters
/// cannot occur in XML, so no name can fake them; 0.3 used `,` and `|`.)
pub fn ssdp_string(mechanisms: &[&str], channel_bindings: &[&str]) -> String {
    let sorted = |names: &[&str]| {
        let mut v = names.to_vec();
        v.sort_unstable();
        v.join("\u{1e}")
    };
    let mut s = sorted(mechanisms);
    if !channel_bindings.is_empty() {
        s.push('\u{1f}');
        s.push_str(&sorted(channel_bindings));
    }
    s
}

/// Verifies a PLAIN password against the Argon2 hash.
fn plain_verify(msg: PlainMessage, creds: Option<&Credentials>) -> Step {
    // Normalize before looking at the account, so that the time taken by an invalid
    // password does not depend on whether the user exists.
    let Ok(password) = normalize_password(&msg.password) else {
        return Step::Failure(Failure::NotAuthorized);
    };
    let Some(creds) = creds else {
        dummy_verify(password.as_bytes());
        return Step::Failure(Failure::NotAuthorized);
    };
    match creds.verify_password(&password) {
        Ok(true) => Step::Success {
            username: msg.authcid,
            authzid: msg.authzid,
            additional_data: None,
        },
        Ok(false) => Step::Failure(Failure::NotAuthorized),
        Err(_) => Step::Failure(Failure::TemporaryAuthFailure),
    }
}

/// Keys for an unknown user: the salt is derived from the username under a per-process
/// random key, so repeated attempts see the same salt as they would for a real account;
/// the stored and server keys are random, so no proof can match.
fn fake_keys(hash: ScramHash, username: &str) -> ScramKeys {
    static PROCESS_KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = PROCESS_KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        key
    });
    let label = format!("{hash:?}\0{username}");
    let mut salt = ScramHash::Sha256.hmac(key, label.as_bytes());
    salt.truncate(SALT_LEN);
    let random = |len: usize| {
        let mut v = vec![0u8; len];
        rand::rngs::OsRng.fill_bytes(&mut v);
        v
    };
    ScramKeys {
        salt,
        iterations: DEFAULT_ITERATIONS,
        stored_key: random(hash.output_len()),
        server_key: random(hash.output_len()),
    }
}

impl fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::ScramFirst(_) | State::PlainMessage => "awaiting-first-message",
            State::ScramCredentials(_) | State::PlainCredentials(_) => "awaiting-credentials",
            State::ScramFinal(_) => "awaiting-final-message",
            State::Done => "finished",
        };
        f.debug_struct("ServerSession")
            .field("mechanism", &self.mech)
            .field("channel_binding", &self.channel_binding)
            .field("plus_advertised", &self.plus_advertised)
            .field("state", &state)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn creds_with_salt(hash: ScramHash, password: &str, salt_b64: &str) -> Credentials {
        let salt = base64::engine::general_purpose::STANDARD
            .decode(salt_b64)
            .unwrap();
        let keys = ScramKeys::derive(hash, password, &salt, 4096).unwrap();
        Credentials {
            scram_sha1: keys.clone(),
            scram_sha256: keys.clone(),
            scram_sha512: keys,
            argon2: String::new(),
        }
    }

    /// Runs a whole exchange with fixed messages and checks every server message.
    fn check_vector(
        mech: Mechanism,
        creds: &Credentials,
        server_nonce: &str,
        client_first: &str,
        server_first: &str,
        client_final: &str,
        server_final: &str,
    ) {
        let (mut s, step) = ServerSession::start_with_nonce(
            mech,
            ChannelBindings::default(),
            false,
            client_first.as_bytes(),
            server_nonce.into(),
        );
        assert_eq!(
            step,
            Step::NeedCredentials {
                username: "user".into()
            }
        );
        assert_eq!(
            s.provide_credentials(Some(creds)),
            Step::Challenge(server_first.as_bytes().to_vec())
        );
        assert_eq!(
            s.respond(client_final.as_bytes()),
            Step::Success {
                username: "user".into(),
                authzid: None,
                additional_data: Some(server_final.as_bytes().to_vec()),
            }
        );
        assert!(s.is_finished());
        assert_eq!(
            s.respond(client_final.as_bytes()),
            Step::Failure(Failure::MalformedRequest)
        );
    }

    #[test]
    fn rfc5802_scram_sha1_vector() {
        let creds = creds_with_salt(ScramHash::Sha1, "pencil", "QSXCR+Q6sek8bf92");
        check_vector(
            Mechanism::ScramSha1,
            &creds,
            "3rfcNHYJY1ZVvWVs7j",
            "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        );
    }

    #[test]
    fn rfc7677_scram_sha256_vector() {
        let creds = creds_with_salt(ScramHash::Sha256, "pencil", "W22ZaJ0SNY7soEsUEjb6gQ==");
        check_vector(
            Mechanism::ScramSha256,
            &creds,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        );
    }

    #[test]
    fn fake_salt_is_stable_per_user_and_hash() {
        let a = fake_keys(ScramHash::Sha1, "nobody");
        let b = fake_keys(ScramHash::Sha1, "nobody");
        let c = fake_keys(ScramHash::Sha256, "nobody");
        let d = fake_keys(ScramHash::Sha1, "someone");
        assert_eq!(a.salt, b.salt);
        assert_ne!(a.salt, c.salt);
        assert_ne!(a.salt, d.salt);
        assert_eq!(a.salt.len(), SALT_LEN);
        assert_ne!(a.stored_key, b.stored_key);
    }

    /// A -PLUS exchange binds to the type its gs2 header names, if the connection has it.
    #[test]
    fn binds_to_the_type_the_client_names() {
        let end_point_only = || ChannelBindings {
            exporter: None,
            server_end_point: Some(vec![7; 32]),
        };
        let start = |first: &[u8]| {
            ServerSession::start(Mechanism::ScramSha256Plus, end_point_only(), true, first).1
        };
        assert!(matches!(
            start(b"p=tls-server-end-point,,n=u,r=abc"),
            Step::NeedCredentials { .. }
        ));
        assert_eq!(
            start(b"p=tls-exporter,,n=u,r=abc"),
            Step::Failure(Failure::MalformedRequest)
        );
        // Binding data of either type is a reason to refuse `y` after -PLUS was offered.
        let (_, step) = ServerSession::start(
            Mechanism::ScramSha256,
            end_point_only(),
            true,
            b"y,,n=u,r=a",
        );
        assert_eq!(step, Step::Failure(Failure::NotAuthorized));
    }

    /// XEP-0474: `h=` follows the iteration count and hashes the sorted offer.
    #[test]
    fn downgrade_protection_in_server_first() {
        assert_eq!(
            ssdp_string(
                &["SCRAM-SHA-256", "PLAIN", "SCRAM-SHA-1"],
                &["tls-exporter"]
            ),
            "PLAIN\u{1e}SCRAM-SHA-1\u{1e}SCRAM-SHA-256\u{1f}tls-exporter"
        );
        assert_eq!(ssdp_string(&["SCRAM-SHA-1"], &[]), "SCRAM-SHA-1");
        // The XEP's own example (0.5.0 "Full Example").
        let example = ssdp_string(
            &["SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"],
            &["tls-server-end-point", "tls-exporter"],
        );
        assert_eq!(
            b64(&ScramHash::Sha1.hash(example.as_bytes())),
            "G6k/rBLDqgOhRRaCuuatSDFkJ08="
        );
        let creds = creds_with_salt(ScramHash::Sha256, "pencil", "W22ZaJ0SNY7soEsUEjb6gQ==");
        let (mut s, _) = ServerSession::start(Mechanism::ScramSha256, None, false, b"n,,n=u,r=abc");
        s.protect_downgrade(&["SCRAM-SHA-256", "PLAIN"], &[]);
        let Step::Challenge(first) = s.provide_credentials(Some(&creds)) else {
            panic!("no challenge");
        };
        let want = b64(&ScramHash::Sha256.hash(b"PLAIN\x1eSCRAM-SHA-256"));
        let first = String::from_utf8(first).unwrap();
        assert!(first.ends_with(&format!(",i=4096,h={want}")), "{first}");
    }

    #[test]
    fn out_of_order_calls() {
        let (mut s, step) = ServerSession::start(Mechanism::ScramSha256, None, false, b"");
        assert_eq!(step, Step::Challenge(Vec::new()));
        assert_eq!(
            s.provide_credentials(None),
            Step::Failure(Failure::TemporaryAuthFailure)
        );
        assert!(s.is_finished());
        let (mut s, _) = ServerSession::start(Mechanism::ScramSha256, None, false, b"n,,n=u,r=abc");
        assert_eq!(
            s.respond(b"c=biws"),
            Step::Failure(Failure::TemporaryAuthFailure)
        );
    }
}
