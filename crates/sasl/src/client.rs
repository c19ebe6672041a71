//! The client side: [`ScramClient`] for every SCRAM mechanism (RFC 5802 §5, RFC 7677,
//! RFC 9266 `tls-exporter`) and [`plain_message`] (RFC 4616). Used by tests, the load
//! generator and any component that logs in to an XMPP server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::channel_binding::TLS_EXPORTER;
use crate::hash::{xor, ScramHash};
use crate::scram::{self, b64, escape_saslname, ServerFinal};
use crate::{normalize_password, Mechanism, SaslError, MAX_CLIENT_ITERATIONS};

/// Random bytes in a client nonce (encoded as 32 base64 characters).
const NONCE_BYTES: usize = 24;

/// Builds a `PLAIN` message: `[authzid] NUL authcid NUL password` (RFC 4616 §2).
///
/// The password is sent as given; the server normalizes it.
pub fn plain_message(authzid: Option<&str>, authcid: &str, password: &str) -> Vec<u8> {
    crate::plain::build(authzid, authcid, password)
}

/// The client side of one SCRAM exchange.
///
/// ```text
/// client_first()            ─► <auth mechanism='SCRAM-…'>…</auth>
/// handle_challenge(server)  ─► <response>…</response>
/// verify_success(v=…)       ◄─ <success>…</success>
/// ```
/// Errors of construction (a non-SCRAM mechanism, `-PLUS` without binding data) are
/// reported by [`ScramClient::handle_challenge`].
pub struct ScramClient {
    mech: Mechanism,
    username: String,
    password: String,
    authzid: Option<String>,
    channel_binding: Option<Vec<u8>>,
    nonce: String,
    state: ClientState,
    cache: Option<Arc<SaltedPasswordCache>>,
}

/// `SaltedPassword` values already computed, shared by many [`ScramClient`]s.
///
/// PBKDF2 is most of a SCRAM client's work by design (4096 iterations and up). A load
/// generator logs in thousands of accounts that share one password and, when created in bulk
/// (`rookery user add-bulk`), one salt and iteration count too: the result is the same for
/// all of them, so computing it once keeps the generator from saturating the machine it
/// measures. Keyed by hash, password, salt and iteration count, so a server that salts each
/// account differently only gets misses. Bounded: once `capacity` entries are held it is
/// emptied before the next insertion, so it never grows with the number of accounts.
#[derive(Debug)]
pub struct SaltedPasswordCache {
    capacity: usize,
    entries: Mutex<HashMap<SaltKey, Vec<u8>>>,
}

/// What `SaltedPassword` depends on (the password already normalized).
#[derive(Debug, PartialEq, Eq, Hash)]
struct SaltKey {
    hash: ScramHash,
    password: String,
    salt: Vec<u8>,
    iterations: u32,
}

impl SaltedPasswordCache {
    /// A cache holding at most `capacity` results (at least one).
    pub fn new(capacity: usize) -> SaltedPasswordCache {
        SaltedPasswordCache {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `Hi(password, salt, iterations)` from the cache, or computed and remembered.
    /// Computed outside the lock, so clients missing at once only cost CPU, never wait.
    fn salted_password(
        &self,
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Vec<u8> {
        let key = SaltKey {
            hash,
            password: password.to_owned(),
            salt: salt.to_vec(),
            iterations,
        };
        if let Some(v) = self.entries.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return v;
        }
        let value = hash.salted_password(password.as_bytes(), salt, iterations);
        if let Ok(mut m) = self.entries.lock() {
            if m.len() >= self.capacity {
                m.clear();
            }
            m.insert(key, value.clone());
        }
        value
    }
}

/// Where a client is in its exchange.
enum ClientState {
    /// client-first-message not built yet.
    Initial,
    /// client-first-message sent; this is its gs2-header and bare part.
    SentFirst { gs2_header: String, bare: String },
    /// client-final-message sent; this is the server signature to expect.
    SentFinal { server_signature: Vec<u8> },
    /// Verified, or failed.
    Done,
}

impl ScramClient {
    /// A client for `mech` logging in as `username` with `password`.
    ///
    /// `channel_binding` is the `tls-exporter` keying material of the TLS connection, if it
    /// has one (TLS 1.3). With a `-PLUS` mechanism it is required and used; with a plain
    /// SCRAM mechanism its presence makes the client send the `y` flag ("I could bind but
    /// you did not offer -PLUS"), which lets the server detect a downgrade.
    pub fn new(
        mech: Mechanism,
        username: &str,
        password: &str,
        channel_binding: Option<Vec<u8>>,
    ) -> ScramClient {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        ScramClient {
            mech,
            username: username.to_owned(),
            password: password.to_owned(),
            authzid: None,
            channel_binding,
            nonce: b64(&nonce),
            state: ClientState::Initial,
            cache: None,
        }
    }

    /// Takes `SaltedPassword` from `cache` (filling it on a miss) instead of always running
    /// PBKDF2: for load generators that log in many accounts with the same credentials.
    pub fn with_cache(mut self, cache: Arc<SaltedPasswordCache>) -> ScramClient {
        self.cache = Some(cache);
        self
    }

    /// Asks to act as `authzid` (sent as `a=` in the gs2-header).
    pub fn with_authzid(mut self, authzid: &str) -> ScramClient {
        self.authzid = Some(authzid.to_owned());
        self
    }

    /// Replaces the random client nonce, to reproduce published test vectors.
    ///
    /// Never use a fixed nonce for a real login. `nonce` must be printable ASCII without
    /// commas, or the server will reject the message.
    pub fn with_nonce(mut self, nonce: &str) -> ScramClient {
        self.nonce = nonce.to_owned();
        self
    }

    /// The mechanism this client speaks.
    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// The client-first-message, to send as the initial response of `<auth/>`.
    pub fn client_first(&mut self) -> Vec<u8> {
        let flag = if self.mech.is_plus() {
            format!("p={TLS_EXPORTER}")
        } else if self.channel_binding.is_some() {
            "y".to_owned()
        } else {
            "n".to_owned()
        };
        let authzid = self
            .authzid
            .as_deref()
            .map(|a| format!("a={}", escape_saslname(a)))
            .unwrap_or_default();
        let gs2_header = format!("{flag},{authzid},");
        let bare = format!("n={},r={}", escape_saslname(&self.username), self.nonce);
        let message = format!("{gs2_header}{bare}").into_bytes();
        self.state = ClientState::SentFirst { gs2_header, bare };
        message
    }

    /// Handles the server-first-message (the `<challenge/>`), returning the
    /// client-final-message to send as `<response/>`.
    ///
    /// Checks that the server nonce extends ours, and that the iteration count is between 1
    /// and [`MAX_CLIENT_ITERATIONS`].
    pub fn handle_challenge(&mut self, challenge: &[u8]) -> Result<Vec<u8>, SaslError> {
        let ClientState::SentFirst { gs2_header, bare } =
            std::mem::replace(&mut self.state, ClientState::Done)
        else {
            return Err(SaslError::OutOfOrder);
        };
        let hash = self
            .mech
            .scram_hash()
            .ok_or(SaslError::NotScram(self.mech))?;
        let mut cbind_input = gs2_header.into_bytes();
        if self.mech.is_plus() {
            let data = self
                .channel_binding
                .as_deref()
                .ok_or(SaslError::MissingChannelBinding(self.mech))?;
            cbind_input.extend_from_slice(data);
        }
        let server_first = std::str::from_utf8(challenge)
            .map_err(|_| SaslError::MalformedServerMessage("not utf-8"))?;
        let first = scram::parse_server_first(server_first)
            .ok_or(SaslError::MalformedServerMessage("server-first-message"))?;
        match first.nonce.strip_prefix(self.nonce.as_str()) {
            Some(server_part) if !server_part.is_empty() => {}
            _ => return Err(SaslError::NonceMismatch),
        }
        if first.iterations == 0 || first.iterations > MAX_CLIENT_ITERATIONS {
            return Err(SaslError::InvalidIterations(first.iterations));
        }
        let password = normalize_password(&self.password)?;
        let salted = match &self.cache {
            Some(c) => c.salted_password(hash, &password, &first.salt, first.iterations),
            None => hash.salted_password(password.as_bytes(), &first.salt, first.iterations),
        };
        let keys = hash.keys(&salted);
        let without_proof = format!("c={},r={}", b64(&cbind_input), first.nonce);
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let client_signature = hash.hmac(&keys.stored_key, auth_message.as_bytes());
        let proof = xor(&keys.client_key, &client_signature);
        let server_signature = hash.hmac(&keys.server_key, auth_message.as_bytes());
        self.state = ClientState::SentFinal { server_signature };
        Ok(format!("{without_proof},p={}", b64(&proof)).into_bytes())
    }

    /// Checks the server-final-message carried by `<success/>`: the server proves it knows
    /// the credentials too (mutual authentication).
    pub fn verify_success(&mut self, additional_data: &[u8]) -> Result<(), SaslError> {
        let ClientState::SentFinal { server_signature } =
            std::mem::replace(&mut self.state, ClientState::Done)
        else {
            return Err(SaslError::OutOfOrder);
        };
        let text = std::str::from_utf8(additional_data)
            .map_err(|_| SaslError::MalformedServerMessage("not utf-8"))?;
        match scram::parse_server_final(text) {
            Some(ServerFinal::Verifier(v)) if bool::from(v.ct_eq(&server_signature)) => Ok(()),
            Some(ServerFinal::Verifier(_)) => Err(SaslError::InvalidServerSignature),
            Some(ServerFinal::Error(e)) => Err(SaslError::ServerError(e)),
            None => Err(SaslError::MalformedServerMessage("server-final-message")),
        }
    }
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mech)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn rfc5802_client_vector() {
        let mut c = ScramClient::new(Mechanism::ScramSha1, "user", "pencil", None)
            .with_nonce("fyko+d2lbbFgONRv9qkxdawL");
        assert_eq!(c.client_first(), b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
        let fin = c
            .handle_challenge(
                b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(fin).unwrap(),
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        assert_eq!(c.verify_success(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="), Ok(()));
    }

    #[test]
    fn rfc7677_client_vector() {
        let mut c = ScramClient::new(Mechanism::ScramSha256, "user", "pencil", None)
            .with_nonce("rOprNGfwEbeRWgbNEkqO");
        assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let fin = c
            .handle_challenge(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        assert_eq!(
            String::from_utf8(fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            c.verify_success(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Ok(())
        );
    }

    #[test]
    fn gs2_header_flags_and_escaping() {
        let mut c = ScramClient::new(Mechanism::ScramSha256, "a,b=c", "p", None).with_nonce("N");
        assert_eq!(c.client_first(), b"n,,n=a=2Cb=3Dc,r=N");
        let mut c = ScramClient::new(Mechanism::ScramSha256, "u", "p", Some(vec![1]))
            .with_nonce("N")
            .with_authzid("x@y");
        assert_eq!(c.client_first(), b"y,a=x@y,n=u,r=N");
        let mut c =
            ScramClient::new(Mechanism::ScramSha256Plus, "u", "p", Some(vec![1])).with_nonce("N");
        assert_eq!(c.client_first(), b"p=tls-exporter,,n=u,r=N");
    }

    #[test]
    fn rejects_bad_server_messages() {
        let first = |mech, cb| {
            let mut c = ScramClient::new(mech, "user", "pencil", cb).with_nonce("abc");
            c.client_first();
            c
        };
        let mut c = first(Mechanism::ScramSha1, None);
        assert_eq!(
            c.handle_challenge(b"r=xyz123,s=QUJD,i=4096"),
            Err(SaslError::NonceMismatch)
        );
        let mut c = first(Mechanism::ScramSha1, None);
        assert_eq!(
            c.handle_challenge(b"r=abc,s=QUJD,i=4096"),
            Err(SaslError::NonceMismatch)
        );
        let mut c = first(Mechanism::ScramSha1, None);
        assert_eq!(
            c.handle_challenge(b"r=abcd,s=QUJD,i=0"),
            Err(SaslError::InvalidIterations(0))
        );
        let mut c = first(Mechanism::ScramSha1, None);
        assert_eq!(
            c.handle_challenge(b"r=abcd,s=QUJD,i=4294967295"),
            Err(SaslError::InvalidIterations(u32::MAX))
        );
        let mut c = first(Mechanism::ScramSha1, None);
        assert!(matches!(
            c.handle_challenge(b"\xff"),
            Err(SaslError::MalformedServerMessage(_))
        ));
        let mut c = first(Mechanism::ScramSha1Plus, None);
        assert_eq!(
            c.handle_challenge(b"r=abcd,s=QUJD,i=1"),
            Err(SaslError::MissingChannelBinding(Mechanism::ScramSha1Plus))
        );
        let mut c = first(Mechanism::Plain, None);
        assert_eq!(
            c.handle_challenge(b"r=abcd,s=QUJD,i=1"),
            Err(SaslError::NotScram(Mechanism::Plain))
        );
        let mut c = first(Mechanism::ScramSha1, None);
        c.handle_challenge(b"r=abcd,s=QUJD,i=1").unwrap();
        assert_eq!(
            c.verify_success(b"e=invalid-proof"),
            Err(SaslError::ServerError("invalid-proof".into()))
        );
        let mut c = first(Mechanism::ScramSha1, None);
        c.handle_challenge(b"r=abcd,s=QUJD,i=1").unwrap();
        assert_eq!(
            c.verify_success(b"v=QUJD"),
            Err(SaslError::InvalidServerSignature)
        );
        assert_eq!(c.verify_success(b"v=QUJD"), Err(SaslError::OutOfOrder));
        let mut c = ScramClient::new(Mechanism::ScramSha1, "u", "p", None);
        assert_eq!(
            c.handle_challenge(b"r=a,s=QUJD,i=1"),
            Err(SaslError::OutOfOrder)
        );
    }

    #[test]
    fn cached_salted_password_gives_the_same_proof_and_stays_bounded() {
        let cache = Arc::new(SaltedPasswordCache::new(2));
        let run = |cache: Option<&Arc<SaltedPasswordCache>>, salt: &str| {
            let mut c = ScramClient::new(Mechanism::ScramSha1, "user", "pencil", None)
                .with_nonce("fyko+d2lbbFgONRv9qkxdawL");
            if let Some(cache) = cache {
                c = c.with_cache(cache.clone());
            }
            c.client_first();
            let challenge = format!("r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s={salt},i=4096");
            c.handle_challenge(challenge.as_bytes()).unwrap()
        };
        let plain = run(None, "QSXCR+Q6sek8bf92");
        assert_eq!(run(Some(&cache), "QSXCR+Q6sek8bf92"), plain, "miss");
        assert_eq!(run(Some(&cache), "QSXCR+Q6sek8bf92"), plain, "hit");
        assert_eq!(cache.len(), 1);
        assert_ne!(
            run(Some(&cache), "QUJD"),
            plain,
            "another salt is another key"
        );
        assert_eq!(cache.len(), 2);
        run(Some(&cache), "QUJDRA==");
        assert_eq!(cache.len(), 1, "emptied when full, then refilled");
        assert_eq!(run(Some(&cache), "QSXCR+Q6sek8bf92"), plain);
    }

    #[test]
    fn plain_message_layout() {
        assert_eq!(plain_message(None, "u", "p"), b"\0u\0p");
        assert_eq!(plain_message(Some("a"), "u", "p"), b"a\0u\0p");
    }
}
