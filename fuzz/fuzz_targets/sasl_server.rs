//! SASL server: arbitrary client messages never panic, and never authenticate without the
//! password (the fuzzer does not know it, so any `Success` is a bug).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rookery_sasl::{Credentials, Mechanism, ServerSession, Step};

fn creds() -> &'static Credentials {
    static C: OnceLock<Credentials> = OnceLock::new();
    C.get_or_init(|| Credentials::derive("a secret the fuzzer cannot guess", 4096).expect("derive"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mech = Mechanism::ALL[usize::from(selector) % Mechanism::ALL.len()];
    let cb = (selector & 0x80 != 0).then(|| vec![7u8; 32]);
    // Messages are separated by 0xff (never valid UTF-8) so one input drives a whole exchange.
    let mut parts = rest.split(|&b| b == 0xff);
    let first = parts.next().unwrap_or_default();
    let (mut session, mut step) = ServerSession::start(mech, cb, selector & 0x40 != 0, first);
    for _ in 0..4 {
        step = match step {
            Step::NeedCredentials { .. } => session.provide_credentials(Some(creds())),
            Step::Challenge(_) => match parts.next() {
                Some(p) => session.respond(p),
                None => return,
            },
            Step::Success { .. } => panic!("authenticated without the password"),
            Step::Failure(_) => return,
        };
    }
});
