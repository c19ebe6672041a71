//! Client ↔ server exchanges through the public API only: every SCRAM mechanism with and
//! without channel binding, the failure paths, and PLAIN.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::OnceLock;

use rookery_sasl::{
    plain_message, Credentials, Failure, Mechanism, ScramClient, ServerSession, Step,
    DEFAULT_ITERATIONS,
};

const USER: &str = "juliet";
const PASSWORD: &str = "r0m30myr0m30";
const CB: &[u8] = b"tls-exporter keying material, 32b";

fn creds() -> &'static Credentials {
    static CREDS: OnceLock<Credentials> = OnceLock::new();
    CREDS.get_or_init(|| Credentials::derive(PASSWORD, DEFAULT_ITERATIONS).unwrap())
}

const SCRAM: [Mechanism; 6] = [
    Mechanism::ScramSha1,
    Mechanism::ScramSha1Plus,
    Mechanism::ScramSha256,
    Mechanism::ScramSha256Plus,
    Mechanism::ScramSha512,
    Mechanism::ScramSha512Plus,
];

/// The server's view of a connection.
struct Conn {
    cb: Option<Vec<u8>>,
    plus_advertised: bool,
}

impl Conn {
    fn tls13() -> Conn {
        Conn {
            cb: Some(CB.to_vec()),
            plus_advertised: true,
        }
    }
    fn no_binding() -> Conn {
        Conn {
            cb: None,
            plus_advertised: false,
        }
    }
}

/// Runs a full exchange; returns the server's last step (and checks the server signature
/// on success). `challenges` collects the server-first-messages.
fn exchange(
    conn: Conn,
    client: &mut ScramClient,
    creds: Option<&Credentials>,
    challenges: &mut Vec<Vec<u8>>,
) -> Step {
    let first = client.client_first();
    let (mut server, step) =
        ServerSession::start(client.mechanism(), conn.cb, conn.plus_advertised, &first);
    let Step::NeedCredentials { username } = step else {
        return step;
    };
    assert_eq!(username, USER);
    let step = server.provide_credentials(creds);
    let Step::Challenge(challenge) = step else {
        return step;
    };
    challenges.push(challenge.clone());
    let fin = client.handle_challenge(&challenge).unwrap();
    let step = server.respond(&fin);
    if let Step::Success {
        additional_data: Some(data),
        ..
    } = &step
    {
        client.verify_success(data).unwrap();
    }
    step
}

fn run(conn: Conn, mech: Mechanism, password: &str, cb: Option<&[u8]>) -> Step {
    let mut client = ScramClient::new(mech, USER, password, cb.map(<[u8]>::to_vec));
    exchange(conn, &mut client, Some(creds()), &mut Vec::new())
}

fn success(step: &Step) -> bool {
    matches!(step, Step::Success { username, authzid: None, additional_data: Some(_) } if username == USER)
}

#[test]
fn every_scram_mechanism_round_trips() {
    for mech in SCRAM {
        if mech.is_plus() {
            let step = run(Conn::tls13(), mech, PASSWORD, Some(CB));
            assert!(success(&step), "{mech}: {step:?}");
        } else {
            // Without binding on either side, and on a TLS 1.3 connection whose server did
            // not advertise -PLUS (client sends 'y').
            let step = run(Conn::no_binding(), mech, PASSWORD, None);
            assert!(success(&step), "{mech}: {step:?}");
            let conn = Conn {
                cb: Some(CB.to_vec()),
                plus_advertised: false,
            };
            let step = run(conn, mech, PASSWORD, Some(CB));
            assert!(success(&step), "{mech} y-flag: {step:?}");
            // Client without binding support on a connection that has it: fine ('n').
            let step = run(Conn::tls13(), mech, PASSWORD, None);
            assert!(success(&step), "{mech} n-flag: {step:?}");
        }
    }
}

#[test]
fn wrong_password_is_not_authorized() {
    for mech in SCRAM {
        let cb = mech.is_plus().then_some(CB);
        assert_eq!(
            run(Conn::tls13(), mech, "wrong", cb),
            Step::Failure(Failure::NotAuthorized),
            "{mech}"
        );
    }
}

#[test]
fn unknown_user_is_indistinguishable_until_the_proof() {
    for mech in [
        Mechanism::ScramSha1,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
    ] {
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        let step = exchange(
            Conn::no_binding(),
            &mut ScramClient::new(mech, USER, "wrong", None),
            Some(creds()),
            &mut known,
        );
        assert_eq!(step, Step::Failure(Failure::NotAuthorized));
        for _ in 0..2 {
            let step = exchange(
                Conn::no_binding(),
                &mut ScramClient::new(mech, USER, PASSWORD, None),
                None,
                &mut unknown,
            );
            assert_eq!(step, Step::Failure(Failure::NotAuthorized), "{mech}");
        }
        // Same shape: nonce length, salt length, iteration count.
        let shape = |msg: &[u8]| {
            let text = String::from_utf8(msg.to_vec()).unwrap();
            text.split(',')
                .map(|attr| {
                    if attr.starts_with("i=") {
                        attr.to_owned()
                    } else {
                        format!("{}{}", &attr[..2], attr.len())
                    }
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(&known[0]), shape(&unknown[0]), "{mech}");
        // And the same salt on every attempt, as for a real account.
        let salt = |msg: &[u8]| {
            String::from_utf8(msg.to_vec())
                .unwrap()
                .split(',')
                .nth(1)
                .map(str::to_owned)
        };
        assert_eq!(salt(&unknown[0]), salt(&unknown[1]));
        assert_ne!(salt(&unknown[0]), salt(&known[0]));
    }
}

#[test]
fn channel_binding_mismatch_fails() {
    for mech in [
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha512Plus,
    ] {
        // A man in the middle terminates TLS: the client's exporter differs from the server's.
        let step = run(
            Conn::tls13(),
            mech,
            PASSWORD,
            Some(b"the other tls session"),
        );
        assert_eq!(step, Step::Failure(Failure::NotAuthorized), "{mech}");
    }
}

#[test]
fn plus_mechanism_without_binding_data_is_invalid() {
    let (_, step) = ServerSession::start(Mechanism::ScramSha256Plus, None, false, b"");
    assert_eq!(step, Step::Failure(Failure::InvalidMechanism));
}

#[test]
fn downgrade_y_flag_is_refused() {
    // The client could bind (it sends 'y') but did not see -PLUS, while the server offered
    // it on a connection with binding data: the mechanism list was tampered with.
    for mech in [
        Mechanism::ScramSha1,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
    ] {
        let step = run(Conn::tls13(), mech, PASSWORD, Some(CB));
        assert_eq!(step, Step::Failure(Failure::NotAuthorized), "{mech}");
    }
}

#[test]
fn gs2_flag_must_match_mechanism() {
    let start =
        |mech, msg: &str| ServerSession::start(mech, Some(CB.to_vec()), true, msg.as_bytes()).1;
    let malformed = Step::Failure(Failure::MalformedRequest);
    // Binding requested with a non-PLUS mechanism.
    assert_eq!(
        start(Mechanism::ScramSha256, "p=tls-exporter,,n=juliet,r=abc"),
        malformed
    );
    // PLUS mechanism without binding requested.
    assert_eq!(
        start(Mechanism::ScramSha256Plus, "n,,n=juliet,r=abc"),
        malformed
    );
    assert_eq!(
        start(Mechanism::ScramSha256Plus, "y,,n=juliet,r=abc"),
        malformed
    );
    // Unsupported binding types.
    for cb in ["tls-unique", "tls-server-end-point", "TLS-EXPORTER"] {
        let msg = format!("p={cb},,n=juliet,r=abc");
        assert_eq!(start(Mechanism::ScramSha256Plus, &msg), malformed, "{cb}");
    }
    assert_eq!(
        start(Mechanism::ScramSha256Plus, "p=tls-exporter,,n=juliet,r=abc"),
        Step::NeedCredentials {
            username: USER.into()
        }
    );
}

#[test]
fn tampered_c_attribute_fails() {
    // The client claims 'n' in the gs2-header but sends a different c= (for example a
    // middlebox rewrote the header): the c= check catches it.
    let mut client = ScramClient::new(Mechanism::ScramSha256, USER, PASSWORD, None);
    let first = client.client_first();
    let (mut server, _) = ServerSession::start(Mechanism::ScramSha256, None, false, &first);
    let Step::Challenge(challenge) = server.provide_credentials(Some(creds())) else {
        panic!("expected challenge")
    };
    let fin = String::from_utf8(client.handle_challenge(&challenge).unwrap()).unwrap();
    let tampered = fin.replacen("c=biws", "c=eSws", 1); // "y,,"
    assert_eq!(
        server.respond(tampered.as_bytes()),
        Step::Failure(Failure::NotAuthorized)
    );
}

#[test]
fn empty_initial_response_then_first_message() {
    for mech in SCRAM {
        let cb = mech.is_plus().then(|| CB.to_vec());
        let mut client = ScramClient::new(mech, USER, PASSWORD, cb.clone());
        let (mut server, step) = ServerSession::start(mech, cb, true, b"");
        assert_eq!(step, Step::Challenge(Vec::new()));
        assert_eq!(
            server.respond(&client.client_first()),
            Step::NeedCredentials {
                username: USER.into()
            }
        );
        let Step::Challenge(ch) = server.provide_credentials(Some(creds())) else {
            panic!("expected challenge")
        };
        let step = server.respond(&client.handle_challenge(&ch).unwrap());
        assert!(success(&step), "{mech}: {step:?}");
    }
}

#[test]
fn scram_authzid_and_escaped_username() {
    let mut client = ScramClient::new(Mechanism::ScramSha256, "a,b=c", PASSWORD, None)
        .with_authzid("romeo@example.net");
    let first = client.client_first();
    let (mut server, step) = ServerSession::start(Mechanism::ScramSha256, None, false, &first);
    assert_eq!(
        step,
        Step::NeedCredentials {
            username: "a,b=c".into()
        }
    );
    let Step::Challenge(ch) = server.provide_credentials(Some(creds())) else {
        panic!("expected challenge")
    };
    let step = server.respond(&client.handle_challenge(&ch).unwrap());
    let Step::Success {
        username,
        authzid,
        additional_data: Some(v),
    } = step
    else {
        panic!("expected success, got {step:?}")
    };
    assert_eq!(username, "a,b=c");
    assert_eq!(authzid.as_deref(), Some("romeo@example.net"));
    client.verify_success(&v).unwrap();
}

#[test]
fn malformed_scram_messages() {
    let malformed = Step::Failure(Failure::MalformedRequest);
    for bad in [
        &b"\xff\xfe"[..],
        b"n,,",
        b"n,,n=juliet",
        b"n,,n=juliet,r=",
        b"n,,m=ext,n=juliet,r=abc",
        b"n,,n=jul=iet,r=abc",
        b"q,,n=juliet,r=abc",
        b"n,,n=juliet,r=a\x01b",
        b"\0",
    ] {
        let (mut s, step) = ServerSession::start(Mechanism::ScramSha1, None, false, bad);
        assert_eq!(step, malformed, "{bad:?}");
        assert!(s.is_finished());
        assert_eq!(s.respond(b"anything"), malformed);
    }
    // Bad client-final-messages after a good start.
    let (mut s, _) = ServerSession::start(Mechanism::ScramSha1, None, false, b"n,,n=juliet,r=abc");
    let Step::Challenge(ch) = s.provide_credentials(Some(creds())) else {
        panic!("expected challenge")
    };
    let nonce = String::from_utf8(ch)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    let (mut s2, _) = ServerSession::start(Mechanism::ScramSha1, None, false, b"n,,n=juliet,r=abc");
    s2.provide_credentials(Some(creds()));
    assert_eq!(s.respond(format!("c=biws,{nonce}").as_bytes()), malformed);
    // Wrong nonce, short proof: not authorized.
    assert_eq!(
        s2.respond(b"c=biws,r=abcdef,p=AAAA"),
        Step::Failure(Failure::NotAuthorized)
    );
}

/// Every truncation and many single-byte corruptions of a valid exchange end in a step,
/// never a panic, and never in success.
#[test]
fn corrupted_messages_never_panic_or_succeed() {
    for mech in [Mechanism::ScramSha256, Mechanism::ScramSha256Plus] {
        let cb = mech.is_plus().then(|| CB.to_vec());
        let mut client = ScramClient::new(mech, USER, PASSWORD, cb.clone());
        let first = client.client_first();
        let (mut server, _) = ServerSession::start(mech, cb.clone(), true, &first);
        let Step::Challenge(ch) = server.provide_credentials(Some(creds())) else {
            panic!("expected challenge")
        };
        let fin = client.handle_challenge(&ch).unwrap();
        let variants = |msg: &[u8]| {
            let mut out = Vec::new();
            for i in 0..msg.len() {
                out.push(msg[..i].to_vec());
                for b in [b',', b'=', 0, 0xff, b'A'] {
                    let mut m = msg.to_vec();
                    if m[i] != b {
                        m[i] = b;
                        out.push(m);
                    }
                }
            }
            out
        };
        for bad_first in variants(&first) {
            let (mut s, step) = ServerSession::start(mech, cb.clone(), true, &bad_first);
            if matches!(step, Step::NeedCredentials { .. }) {
                if let Step::Challenge(_) = s.provide_credentials(Some(creds())) {
                    // A first message that still parses must not let an old final through.
                    assert!(!matches!(s.respond(&fin), Step::Success { .. }));
                }
            }
        }
        for bad_fin in variants(&fin) {
            let (mut s, _) = ServerSession::start(mech, cb.clone(), true, &first);
            let _ = s.provide_credentials(Some(creds()));
            let step = s.respond(&bad_fin);
            assert!(!matches!(step, Step::Success { .. }), "{bad_fin:?}");
        }
    }
}

#[test]
fn plain_right_wrong_unknown_malformed() {
    let creds = creds();
    let plain = |msg: &[u8], creds: Option<&Credentials>| {
        let (mut s, step) = ServerSession::start(Mechanism::Plain, None, false, msg);
        match step {
            Step::NeedCredentials { username } => {
                assert_eq!(username, USER);
                s.provide_credentials(creds)
            }
            other => other,
        }
    };
    assert_eq!(
        plain(&plain_message(None, USER, PASSWORD), Some(creds)),
        Step::Success {
            username: USER.into(),
            authzid: None,
            additional_data: None
        }
    );
    assert_eq!(
        plain(
            &plain_message(Some("juliet@example.com"), USER, PASSWORD),
            Some(creds)
        ),
        Step::Success {
            username: USER.into(),
            authzid: Some("juliet@example.com".into()),
            additional_data: None
        }
    );
    let not_authorized = Step::Failure(Failure::NotAuthorized);
    assert_eq!(
        plain(&plain_message(None, USER, "wrong"), Some(creds)),
        not_authorized
    );
    assert_eq!(
        plain(&plain_message(None, USER, PASSWORD), None),
        not_authorized
    );
    assert_eq!(
        plain(&plain_message(None, USER, "bell\u{7}"), Some(creds)),
        not_authorized
    );
    for bad in [
        &b"juliet\0pw"[..],
        b"\0juliet\0",
        b"\0\0pw",
        b"\0juliet\0pw\0x",
        b"\0ju\xffliet\0pw",
    ] {
        assert_eq!(
            plain(bad, Some(creds)),
            Step::Failure(Failure::MalformedRequest),
            "{bad:?}"
        );
    }
    // No initial response: empty challenge, then the message.
    let (mut s, step) = ServerSession::start(Mechanism::Plain, None, false, b"");
    assert_eq!(step, Step::Challenge(Vec::new()));
    assert_eq!(
        s.respond(&plain_message(None, USER, PASSWORD)),
        Step::NeedCredentials {
            username: USER.into()
        }
    );
    assert!(matches!(
        s.provide_credentials(Some(creds)),
        Step::Success { .. }
    ));
    // A corrupt stored hash is a server problem.
    let mut corrupt = creds.clone();
    corrupt.argon2 = "not a phc string".into();
    assert_eq!(
        plain(&plain_message(None, USER, PASSWORD), Some(&corrupt)),
        Step::Failure(Failure::TemporaryAuthFailure)
    );
}

#[test]
fn corrupt_scram_record_is_temporary_failure() {
    let mut corrupt = creds().clone();
    corrupt.scram_sha256.stored_key.truncate(3);
    let mut client = ScramClient::new(Mechanism::ScramSha256, USER, PASSWORD, None);
    let step = exchange(
        Conn::no_binding(),
        &mut client,
        Some(&corrupt),
        &mut Vec::new(),
    );
    assert_eq!(step, Step::Failure(Failure::TemporaryAuthFailure));
}

#[test]
fn failure_conditions() {
    assert_eq!(Failure::NotAuthorized.condition(), "not-authorized");
    assert_eq!(
        Failure::TemporaryAuthFailure.condition(),
        "temporary-auth-failure"
    );
    assert_eq!(
        Failure::from_condition("malformed-request"),
        Some(Failure::MalformedRequest)
    );
    assert_eq!(Failure::from_condition("bogus"), None);
}
