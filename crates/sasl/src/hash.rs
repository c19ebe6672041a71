//! The SCRAM key derivation (RFC 5802 §3), written once for SHA-1, SHA-256 and SHA-512.
//!
//! ```text
//! SaltedPassword  := Hi(Normalize(password), salt, i)      (PBKDF2-HMAC, RFC 2898)
//! ClientKey       := HMAC(SaltedPassword, "Client Key")
//! StoredKey       := H(ClientKey)
//! ServerKey       := HMAC(SaltedPassword, "Server Key")
//! ClientSignature := HMAC(StoredKey, AuthMessage)
//! ClientProof     := ClientKey XOR ClientSignature
//! ServerSignature := HMAC(ServerKey, AuthMessage)
//! ```
//! Server, client and [`crate::Credentials::derive`] all go through [`ScramHash`], so the
//! two ends cannot drift apart.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

/// The hash function of a SCRAM mechanism family.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum ScramHash {
    /// SHA-1 (`SCRAM-SHA-1`, RFC 5802).
    Sha1,
    /// SHA-256 (`SCRAM-SHA-256`, RFC 7677).
    Sha256,
    /// SHA-512 (`SCRAM-SHA-512`).
    Sha512,
}

/// The keys derived from a salted password.
pub(crate) struct DerivedKeys {
    pub(crate) client_key: Vec<u8>,
    pub(crate) stored_key: Vec<u8>,
    pub(crate) server_key: Vec<u8>,
}

impl ScramHash {
    /// All three, weakest first.
    pub const ALL: [ScramHash; 3] = [ScramHash::Sha1, ScramHash::Sha256, ScramHash::Sha512];

    /// Output length of the hash in bytes (the length of keys, proofs and signatures).
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
            ScramHash::Sha512 => 64,
        }
    }

    /// `H(data)`.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `HMAC(key, data)`.
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => hmac_with::<Hmac<Sha1>>(key, data),
            ScramHash::Sha256 => hmac_with::<Hmac<Sha256>>(key, data),
            ScramHash::Sha512 => hmac_with::<Hmac<Sha512>>(key, data),
        }
    }

    /// `Hi(password, salt, iterations)`: PBKDF2 with this hash's HMAC, one output block.
    ///
    /// `password` must already be normalized ([`crate::normalize_password`]).
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
            ScramHash::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out)
            }
        }
        out
    }

    /// `ClientKey`, `StoredKey` and `ServerKey` from a salted password.
    pub(crate) fn keys(self, salted_password: &[u8]) -> DerivedKeys {
        let client_key = self.hmac(salted_password, b"Client Key");
        let stored_key = self.hash(&client_key);
        let server_key = self.hmac(salted_password, b"Server Key");
        DerivedKeys {
            client_key,
            stored_key,
            server_key,
        }
    }
}

/// HMAC of `data` under `key`.
fn hmac_with<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length (RFC 2104 §2: longer keys are hashed, shorter ones
    // padded), so `new_from_slice` cannot fail for the `Hmac<D>` types used above.
    #[allow(clippy::expect_used)]
    let mut mac =
        <M as hmac::digest::KeyInit>::new_from_slice(key).expect("hmac accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// `a XOR b` for equal-length inputs (shorter length wins otherwise).
pub(crate) fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lengths_match_digests() {
        for h in ScramHash::ALL {
            assert_eq!(h.hash(b"x").len(), h.output_len());
            assert_eq!(h.hmac(b"k", b"x").len(), h.output_len());
            assert_eq!(h.salted_password(b"p", b"s", 1).len(), h.output_len());
        }
    }

    #[test]
    fn rfc6070_pbkdf2_sha1_vector() {
        // RFC 6070 test case 2: "password"/"salt", c = 2.
        let out = ScramHash::Sha1.salted_password(b"password", b"salt", 2);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957");
    }
}
