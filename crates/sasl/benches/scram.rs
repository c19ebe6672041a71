//! What one login costs the server: a SCRAM-SHA-1/-256 exchange verified against stored
//! keys (the server never runs PBKDF2 at login; the client does, once per salt), a PLAIN
//! login verified against Argon2id, and for scale the client side with PBKDF2 at 4096
//! iterations.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use base64::Engine;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rookery_sasl::{
    plain_message, Credentials, Mechanism, ScramClient, ScramHash, ServerSession, Step,
    DEFAULT_ITERATIONS,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const USER: &str = "juliet";
const PASSWORD: &str = "r0m30myr0m30";
const CLIENT_NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL";

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// One server-side exchange; the client's proof is computed from a precomputed salted
/// password (two HMACs and a hash), so the figure is the server's work plus that.
fn server_exchange(mech: Mechanism, hash: ScramHash, creds: &Credentials, salted: &[u8]) {
    let bare = format!("n={USER},r={CLIENT_NONCE}");
    let first = format!("n,,{bare}");
    let (mut server, step) = ServerSession::start(mech, None, false, first.as_bytes());
    assert!(matches!(step, Step::NeedCredentials { .. }));
    let Step::Challenge(server_first) = server.provide_credentials(Some(creds)) else {
        panic!("no challenge")
    };
    let server_first = String::from_utf8(server_first).unwrap();
    let nonce = server_first
        .split(',')
        .find_map(|p| p.strip_prefix("r="))
        .unwrap();
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let client_key = hash.hmac(salted, b"Client Key");
    let stored_key = hash.hash(&client_key);
    let signature = hash.hmac(&stored_key, auth_message.as_bytes());
    let proof = B64.encode(xor(&client_key, &signature));
    let step = server.respond(format!("{without_proof},p={proof}").as_bytes());
    assert!(matches!(step, Step::Success { .. }), "{step:?}");
    black_box(step);
}

fn bench(c: &mut Criterion) {
    let creds = Credentials::derive(PASSWORD, DEFAULT_ITERATIONS).unwrap();
    let mut group = c.benchmark_group("sasl_server");
    for (name, mech, hash) in [
        ("scram_sha1_verify", Mechanism::ScramSha1, ScramHash::Sha1),
        (
            "scram_sha256_verify",
            Mechanism::ScramSha256,
            ScramHash::Sha256,
        ),
    ] {
        let keys = creds.scram(hash);
        let salted = hash.salted_password(PASSWORD.as_bytes(), &keys.salt, keys.iterations);
        group.bench_function(name, |b| {
            b.iter(|| server_exchange(mech, hash, &creds, &salted))
        });
    }
    group.sample_size(20);
    group.bench_function("plain_verify_argon2id", |b| {
        let msg = plain_message(None, USER, PASSWORD);
        b.iter(|| {
            let (mut server, step) = ServerSession::start(Mechanism::Plain, None, false, &msg);
            assert!(matches!(step, Step::NeedCredentials { .. }));
            let step = server.provide_credentials(Some(&creds));
            assert!(matches!(step, Step::Success { .. }));
        })
    });
    group.finish();

    let mut group = c.benchmark_group("sasl_client");
    group.sample_size(20);
    group.bench_function("scram_sha256_login_4096_iterations", |b| {
        b.iter(|| {
            let mut client = ScramClient::new(Mechanism::ScramSha256, USER, PASSWORD, None);
            let first = client.client_first();
            let (mut server, _) = ServerSession::start(Mechanism::ScramSha256, None, false, &first);
            let Step::Challenge(sf) = server.provide_credentials(Some(&creds)) else {
                panic!("no challenge")
            };
            let fin = client.handle_challenge(&sf).unwrap();
            let Step::Success {
                additional_data: Some(v),
                ..
            } = server.respond(&fin)
            else {
                panic!("no success")
            };
            client.verify_success(&v).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
