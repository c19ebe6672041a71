//! The route table of [`super`], row by row, with an in-memory account directory: which
//! hooks run, which handler answers, who receives what, for each `to` shape.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rookery_jid::{BareJid, Jid};
use rookery_proto::Stanza;
use rookery_sasl::Credentials;

use crate::accounts::{Accounts, MemoryAccounts};
use crate::config::CoreConfig;
use crate::domains::{DomainRoute, Undelivered};
use crate::module::{priority, Declaration, Flow, HookPoint, IqResult, IqTarget, Module};
use crate::router::{Core, CoreBuilder};
use crate::session::{Outbound, SessionEnd, SessionHandle};

/// What the test modules and routes saw, in order (shared with `fanout_tests.rs`).
pub(crate) type Log = Arc<Mutex<Vec<String>>>;

/// The sender of every row; replies to it are not logged, only received.
const BOB: &str = "bob@localhost/pc";

/// Logs every hook point and IQ it sees, and continues.
struct Rec(Log);

const POINTS: [HookPoint; 10] = [
    HookPoint::MessageToBare,
    HookPoint::MessageToMissingResource,
    HookPoint::PresenceBroadcast,
    HookPoint::PresenceToAccount,
    HookPoint::MessageFromLocal,
    HookPoint::PresenceFromLocal,
    HookPoint::IqFromLocal,
    HookPoint::MessageToFull,
    HookPoint::IqToFull,
    HookPoint::ToLocalAccount,
];

#[async_trait]
impl Module for Rec {
    fn name(&self) -> &'static str {
        "rec"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            iqs: vec![
                (IqTarget::Server, "urn:s", "q"),
                (IqTarget::Account, "urn:a", "q"),
            ],
            hooks: POINTS.iter().map(|&p| (p, priority::DEFAULT)).collect(),
            ..Declaration::default()
        }
    }

    async fn handle_iq(&self, _core: &Arc<Core>, to: &BareJid, iq: &Stanza) -> IqResult {
        let ns = iq.payload().map(|p| p.ns().to_string()).unwrap_or_default();
        self.0.lock().unwrap().push(format!("iq {ns} for {to}"));
        Ok(None)
    }

    async fn hook(&self, _core: &Arc<Core>, point: HookPoint, stanza: Stanza) -> Flow {
        if stanza.to().map(Jid::as_str) != Some(BOB) {
            self.0.lock().unwrap().push(format!("{point:?}"));
        }
        Flow::Continue(stanza)
    }
}

/// A domain route logging what it takes (shared with `fanout_tests.rs`).
pub(crate) struct Route(pub(crate) &'static str, pub(crate) Log);

#[async_trait]
impl DomainRoute for Route {
    async fn deliver(&self, stanza: Stanza) -> Result<(), Box<Undelivered>> {
        let to = stanza.to().map(|t| t.to_string()).unwrap_or_default();
        self.1.lock().unwrap().push(format!("{} {to}", self.0));
        Ok(())
    }
}

struct Fixture {
    core: Arc<Core>,
    log: Log,
    alice: SessionEnd,
    bob: SessionEnd,
}

/// alice (online at `phone`, available), bob (online at `pc`, the sender) and carol (offline)
/// have accounts; `svc.localhost` is a registered domain; `remote` adds the s2s route.
async fn fixture(remote: bool) -> Fixture {
    let accounts = Arc::new(MemoryAccounts::new());
    let creds = Credentials::derive("pencil", 64).unwrap();
    for user in ["alice", "bob", "carol"] {
        accounts.create("localhost", user, &creds).await.unwrap();
    }
    let log = Log::default();
    let core = CoreBuilder::new(CoreConfig::default(), accounts)
        .module(Arc::new(Rec(log.clone())))
        .build()
        .unwrap();
    core.register_domain("svc.localhost", Arc::new(Route("svc", log.clone())));
    if remote {
        core.set_remote_route(Arc::new(Route("s2s", log.clone())));
    }
    let mut ends = Vec::new();
    for jid in ["alice@localhost/phone", BOB] {
        let jid = Jid::parse(jid).unwrap();
        let (h, end) = SessionHandle::new(core.next_session_id(), jid.clone(), 16);
        core.bind(h).await;
        core.set_available(&jid, Some(0));
        ends.push(end);
    }
    let bob = ends.pop().unwrap();
    let alice = ends.pop().unwrap();
    Fixture {
        core,
        log,
        alice,
        bob,
    }
}

fn received(end: &mut SessionEnd) -> Vec<String> {
    let mut v = Vec::new();
    while let Ok(Outbound::Bytes(b)) = end.rx.try_recv() {
        v.push(String::from_utf8_lossy(&b).into_owned());
    }
    v
}

/// One row: bob's stanza (with `{to}` attribute text), the hooks/handlers/routes that saw
/// it, and a fragment of what alice and bob receive (`""`: nothing).
struct Row {
    row: &'static str,
    stanza: &'static str,
    log: &'static [&'static str],
    alice: &'static str,
    bob: &'static str,
}

async fn check(rows: &[Row], remote: bool) {
    for r in rows {
        let mut f = fixture(remote).await;
        let stanza = Stanza::from_serialized(r.stanza.as_bytes()).unwrap();
        f.core.route(stanza).await;
        let log = std::mem::take(&mut *f.log.lock().unwrap());
        assert_eq!(log, r.log, "{}: log", r.row);
        for (who, end, want) in [("alice", &mut f.alice, r.alice), ("bob", &mut f.bob, r.bob)] {
            let got = received(end);
            if want.is_empty() {
                assert!(got.is_empty(), "{}: {who} got {got:?}", r.row);
            } else {
                assert!(
                    got.len() == 1 && got[0].contains(want),
                    "{}: {who} got {got:?}, wanted {want:?}",
                    r.row
                );
            }
        }
    }
}

#[tokio::test]
async fn iq_rows() {
    check(
        &[
            Row {
                row: "iq, no to, account payload: account handler",
                stanza: "<iq xmlns='jabber:client' from='bob@localhost/pc' type='get' id='1'><q xmlns='urn:a'/></iq>",
                log: &["iq urn:a for bob@localhost"],
                alice: "",
                bob: "type=\"result\"",
            },
            Row {
                row: "iq, no to, other payload: server handler",
                stanza: "<iq xmlns='jabber:client' from='bob@localhost/pc' type='get' id='1'><q xmlns='urn:s'/></iq>",
                log: &["iq urn:s for localhost"],
                alice: "",
                bob: "type=\"result\"",
            },
            Row {
                row: "iq, server domain: server handler",
                stanza: "<iq xmlns='jabber:client' from='bob@localhost/pc' to='localhost' type='set' id='1'><q xmlns='urn:s'/></iq>",
                log: &["iq urn:s for localhost"],
                alice: "",
                bob: "type=\"result\"",
            },
            Row {
                row: "iq, server domain, unknown payload: service-unavailable",
                stanza: "<iq xmlns='jabber:client' from='bob@localhost/pc' to='localhost' type='get' id='1'><x xmlns='urn:x'/></iq>",
                log: &[],
                alice: "",
                bob: "service-unavailable",
            },
            Row {
                row: "iq, local bare JID: account handler on the account's behalf",
                stanza: "<iq xmlns='jabber:client' from='bob@localhost/pc' to='alice@localhost' type='get' id='1'><q xmlns='urn:a'/></iq>",
                log: &["ToLocalAccount", "iq urn:a for alice@localhost"],
                alice: "",
                bob: "type=\"result\"",
            },
            Row {
                row: "iq, bare JID of no account: service-unavailable",
                stanza: "<iq xmlns='jabber:client' from='bob@localhost/pc' to='nobody@localhost' type='get' id='1'><q xmlns='urn:a'/></iq>",
                log: &["ToLocalAccount"],
                alice: "",
                bob: "service-unavailable",
            },
            Row {
                row: "iq, local full JID online: IqToFull, then that session",
                stanza: "<iq xmlns='jabber:client' from='bob@localhost/pc' to='alice@localhost/phone' type='get' id='1'><q xmlns='urn:a'/></iq>",
                log: &["ToLocalAccount", "IqToFull"],
                alice: "id=\"1\"",
                bob: "",
            },
            Row {
                row: "iq, local full JID offline: service-unavailable",
                stanza: "<iq xmlns='jabber:client' from='bob@localhost/pc' to='alice@localhost/tablet' type='get' id='1'><q xmlns='urn:a'/></iq>",
                log: &["ToLocalAccount"],
                alice: "",
                bob: "service-unavailable",
            },
            Row {
                row: "iq result to the server, no request waiting: dropped",
                stanza: "<iq xmlns='jabber:client' from='bob@localhost/pc' to='localhost' type='result' id='rk-1'/>",
                log: &[],
                alice: "",
                bob: "",
            },
        ],
        true,
    )
    .await;
}

#[tokio::test]
async fn message_rows() {
    check(
        &[
            Row {
                row: "message, local full JID online: MessageToFull, then the session",
                stanza: "<message xmlns='jabber:client' from='bob@localhost/pc' to='alice@localhost/phone' type='chat'><body>x</body></message>",
                log: &["ToLocalAccount", "MessageToFull"],
                alice: "<body>x</body>",
                bob: "",
            },
            Row {
                row: "message, local bare JID: MessageToBare, then the available resource",
                stanza: "<message xmlns='jabber:client' from='bob@localhost/pc' to='alice@localhost' type='chat'><body>x</body></message>",
                log: &["ToLocalAccount", "MessageToBare"],
                alice: "<body>x</body>",
                bob: "",
            },
            Row {
                row: "message, bare JID of an offline account: bounced (§8.5.2.2.1)",
                stanza: "<message xmlns='jabber:client' from='bob@localhost/pc' to='carol@localhost' type='chat'><body>x</body></message>",
                log: &["ToLocalAccount", "MessageToBare"],
                alice: "",
                bob: "service-unavailable",
            },
            Row {
                row: "message, bare JID of no account: bounced, no hooks (§8.5.2.2.3)",
                stanza: "<message xmlns='jabber:client' from='bob@localhost/pc' to='nobody@localhost' type='chat'><body>x</body></message>",
                log: &["ToLocalAccount"],
                alice: "",
                bob: "service-unavailable",
            },
            Row {
                row: "headline, bare JID of no account: silently dropped",
                stanza: "<message xmlns='jabber:client' from='bob@localhost/pc' to='nobody@localhost' type='headline'><body>x</body></message>",
                log: &["ToLocalAccount"],
                alice: "",
                bob: "",
            },
            Row {
                row: "chat, local full JID offline: MessageToMissingResource, then as to the bare JID (§8.5.3.2.1)",
                stanza: "<message xmlns='jabber:client' from='bob@localhost/pc' to='alice@localhost/tablet' type='chat'><body>x</body></message>",
                log: &["ToLocalAccount", "MessageToMissingResource", "MessageToBare"],
                alice: "<body>x</body>",
                bob: "",
            },
            Row {
                row: "normal, local full JID offline: service-unavailable, not another resource (§8.5.3.2.1)",
                stanza: "<message xmlns='jabber:client' from='bob@localhost/pc' to='alice@localhost/tablet'><body>x</body></message>",
                log: &["ToLocalAccount", "MessageToMissingResource"],
                alice: "",
                bob: "service-unavailable",
            },
            Row {
                row: "headline, local full JID offline: silently ignored (§8.5.3.2.1)",
                stanza: "<message xmlns='jabber:client' from='bob@localhost/pc' to='alice@localhost/tablet' type='headline'><body>x</body></message>",
                log: &["ToLocalAccount", "MessageToMissingResource"],
                alice: "",
                bob: "",
            },
            Row {
                row: "groupchat, local full JID offline: service-unavailable",
                stanza: "<message xmlns='jabber:client' from='bob@localhost/pc' to='alice@localhost/tablet' type='groupchat'><body>x</body></message>",
                log: &["ToLocalAccount", "MessageToMissingResource"],
                alice: "",
                bob: "service-unavailable",
            },
            Row {
                row: "chat to the server domain: service-unavailable",
                stanza: "<message xmlns='jabber:client' from='bob@localhost/pc' to='localhost' type='chat'><body>x</body></message>",
                log: &[],
                alice: "",
                bob: "service-unavailable",
            },
            Row {
                row: "message, no to: as to the sender's bare JID (RFC 6120 §10.3.1)",
                stanza: "<message xmlns='jabber:client' from='bob@localhost/pc' type='chat'><body>x</body></message>",
                log: &["MessageToBare"],
                alice: "",
                bob: "<body>x</body>",
            },
        ],
        true,
    )
    .await;
}

#[tokio::test]
async fn presence_rows() {
    check(
        &[
            Row {
                row: "presence, no to: PresenceBroadcast",
                stanza: "<presence xmlns='jabber:client' from='bob@localhost/pc'/>",
                log: &["PresenceBroadcast"],
                alice: "",
                bob: "",
            },
            Row {
                row: "subscription presence, local full JID online: PresenceToAccount",
                stanza: "<presence xmlns='jabber:client' from='bob@localhost/pc' to='alice@localhost/phone' type='subscribe'/>",
                log: &["ToLocalAccount", "PresenceToAccount"],
                alice: "",
                bob: "",
            },
            Row {
                row: "directed presence, local full JID online: that session",
                stanza: "<presence xmlns='jabber:client' from='bob@localhost/pc' to='alice@localhost/phone'/>",
                log: &["ToLocalAccount"],
                alice: "<presence",
                bob: "",
            },
            Row {
                row: "presence, local bare JID: PresenceToAccount",
                stanza: "<presence xmlns='jabber:client' from='bob@localhost/pc' to='alice@localhost' type='probe'/>",
                log: &["ToLocalAccount", "PresenceToAccount"],
                alice: "",
                bob: "",
            },
            Row {
                row: "presence, local full JID offline: PresenceToAccount",
                stanza: "<presence xmlns='jabber:client' from='bob@localhost/pc' to='alice@localhost/tablet'/>",
                log: &["ToLocalAccount", "PresenceToAccount"],
                alice: "",
                bob: "",
            },
        ],
        true,
    )
    .await;
}

#[tokio::test]
async fn domain_rows() {
    let to_svc = "<message xmlns='jabber:client' from='bob@localhost/pc' to='svc.localhost' type='chat'><body>x</body></message>";
    let to_remote = "<message xmlns='jabber:client' from='bob@localhost/pc' to='juliet@example.org' type='chat'><body>x</body></message>";
    check(
        &[
            Row {
                row: "any, a registered domain: its route",
                stanza: to_svc,
                log: &["svc svc.localhost"],
                alice: "",
                bob: "",
            },
            Row {
                row: "any, another domain: the remote route",
                stanza: to_remote,
                log: &["s2s juliet@example.org"],
                alice: "",
                bob: "",
            },
        ],
        true,
    )
    .await;
    check(
        &[Row {
            row: "any, another domain, no remote route: remote-server-not-found",
            stanza: to_remote,
            log: &[],
            alice: "",
            bob: "remote-server-not-found",
        }],
        false,
    )
    .await;
}

/// The default without a presence module records availability for §8.5.2 delivery.
#[tokio::test]
async fn broadcast_presence_sets_the_priority_used_for_bare_jid_delivery() {
    let f = fixture(true).await;
    let bob = BareJid::parse("bob@localhost").unwrap();
    let pres =
        "<presence xmlns='jabber:client' from='bob@localhost/pc'><priority>7</priority></presence>";
    f.core
        .route(Stanza::from_serialized(pres.as_bytes()).unwrap())
        .await;
    assert_eq!(f.core.sessions_of(&bob)[0].1, Some(7));
    let gone = "<presence xmlns='jabber:client' from='bob@localhost/pc' type='unavailable'/>";
    f.core
        .route(Stanza::from_serialized(gone.as_bytes()).unwrap())
        .await;
    assert_eq!(f.core.sessions_of(&bob)[0].1, None);
}

/// A domain route that cannot take a stanza hands it back: the sender's error carries the
/// original payload although the router kept no copy.
#[tokio::test]
async fn a_bounced_stanza_comes_back_to_its_sender_whole() {
    struct Refuse;
    #[async_trait]
    impl DomainRoute for Refuse {
        async fn deliver(&self, stanza: Stanza) -> Result<(), Box<Undelivered>> {
            let e = rookery_proto::StanzaError::new(
                rookery_proto::StanzaErrorCondition::ServiceUnavailable,
            );
            Err(Undelivered::new(stanza, e))
        }
    }
    let mut f = fixture(false).await;
    f.core.register_domain("down.localhost", Arc::new(Refuse));
    let m = "<message xmlns='jabber:client' from='bob@localhost/pc' to='down.localhost' id='m1'><body>hi</body></message>";
    f.core
        .route(Stanza::from_serialized(m.as_bytes()).unwrap())
        .await;
    let got = received(&mut f.bob);
    assert_eq!(got.len(), 1, "{got:?}");
    for want in [
        "type=\"error\"",
        "id=\"m1\"",
        "<body>hi</body>",
        "service-unavailable",
    ] {
        assert!(got[0].contains(want), "{want} in {}", got[0]);
    }
}

/// What a node of a cluster told its link, for the tests.
#[derive(Default)]
struct FakeLink {
    told: std::sync::Mutex<Vec<String>>,
}

impl crate::ClusterLink for FakeLink {
    fn node(&self) -> &str {
        "n1"
    }
    fn answer_elsewhere(&self, node: &str, answer: &Stanza) {
        let id = answer.id().unwrap_or_default().to_string();
        self.told
            .lock()
            .unwrap()
            .push(format!("answer {id} to {node}"));
    }
    fn bound(&self, jid: &Jid, _id: crate::SessionId) {
        self.told.lock().unwrap().push(format!("bound {jid}"));
    }
    fn unbound(&self, jid: &Jid) {
        self.told.lock().unwrap().push(format!("unbound {jid}"));
    }
    fn availability(&self, jid: &Jid, priority: Option<i8>) {
        self.told
            .lock()
            .unwrap()
            .push(format!("available {jid} {priority:?}"));
    }
    fn account_changed(&self, account: &BareJid) {
        self.told.lock().unwrap().push(format!("changed {account}"));
    }
    fn domain_connection(&self, domain: &str, up: bool) {
        self.told
            .lock()
            .unwrap()
            .push(format!("component {domain} {up}"));
    }
    fn note(&self, topic: &str, body: String) {
        self.told
            .lock()
            .unwrap()
            .push(format!("note {topic} {body}"));
    }
    fn carbons(&self, jid: &Jid, on: bool) {
        self.told
            .lock()
            .unwrap()
            .push(format!("carbons {jid} {on}"));
    }
    fn close_elsewhere(&self, jid: &Jid, reason: &rookery_proto::StreamError) {
        self.told
            .lock()
            .unwrap()
            .push(format!("close {jid} {}", reason.condition.as_str()));
    }
    fn home(&self) -> Option<String> {
        None
    }
    fn to_domain_on(&self, node: &str, domain: &Jid, _stanza: bytes::Bytes) -> bool {
        self.told
            .lock()
            .unwrap()
            .push(format!("to {domain} on {node}"));
        true
    }

    fn take_over(&self, ask: crate::HandoverAsk) -> crate::cluster::Handover {
        self.told
            .lock()
            .unwrap()
            .push(format!("take over {} of {}", ask.previd, ask.user));
        Box::pin(async { Err(crate::HandoverRefusal::NotHandedOver) })
    }
}

/// In a cluster: the link hears of local sessions, a remote session routes like a local one
/// (its forwarder gets the bytes) without being announced, and an answer to another
/// node's request is handed over instead of being dropped.
#[tokio::test]
async fn a_cluster_link_hears_of_local_sessions_and_answers_for_other_nodes() {
    let f = fixture(false).await;
    let link = Arc::new(FakeLink::default());
    f.core.set_cluster(link.clone());
    let carol: Jid = Jid::parse("carol@localhost/tab").unwrap();
    let (forwarder, mut bus) = tokio::sync::mpsc::unbounded_channel();
    let h = SessionHandle::forwarded(f.core.next_session_id(), carol.clone(), forwarder);
    assert!(f.core.bind_remote(h.clone()).await.is_none());
    f.core.set_remote_available(&carol, Some(0));
    let m = "<message xmlns='jabber:client' from='bob@localhost/pc' to='carol@localhost' type='chat'><body>hi</body></message>";
    f.core
        .route(Stanza::from_serialized(m.as_bytes()).unwrap())
        .await;
    let (to, _) = bus.try_recv().unwrap();
    assert_eq!(
        (to, bus.try_recv().is_err()),
        (carol.clone(), true),
        "bare-JID delivery reaches the remote resource, once"
    );
    assert_eq!(f.core.session_count(), 2, "remote sessions are not counted");
    let r = "<iq xmlns='jabber:client' type='result' id='rk-n2-7' from='carol@localhost/tab' to='localhost'/>";
    f.core
        .route(Stanza::from_serialized(r.as_bytes()).unwrap())
        .await;
    let dave = Jid::parse("dave@localhost/x").unwrap();
    let (h, _end) = SessionHandle::new(f.core.next_session_id(), dave.clone(), 16);
    f.core.bind(h.clone()).await;
    f.core.set_available(&dave, Some(1));
    f.core.unbind(&dave, h.id()).await;
    assert!(!f.core.unbind_remote(&carol, 0), "not that handle");
    assert!(f.core.is_clustered());
    f.core.tell_peers("pubsub", || "n".to_string());
    assert_eq!(
        *link.told.lock().unwrap(),
        [
            "answer rk-n2-7 to n2",
            "bound dave@localhost/x",
            "available dave@localhost/x Some(1)",
            "unbound dave@localhost/x",
            "note pubsub n",
        ]
    );
}

/// A local session that handed itself over to another node (XEP-0198 resumption there) is
/// replaced by that node's session without an end told to anyone; one that did not is
/// closed and its end told.
#[tokio::test]
async fn a_session_replaced_by_its_move_to_another_node_did_not_end() {
    let f = fixture(false).await;
    let link = Arc::new(FakeLink::default());
    f.core.set_cluster(link.clone());
    for moving in [true, false] {
        let erin = Jid::parse("erin@localhost/phone").unwrap();
        let (h, end) = SessionHandle::new(f.core.next_session_id(), erin.clone(), 16);
        f.core.bind(h.clone()).await;
        end.kill.set_moving(moving);
        let (forwarder, _bus) = tokio::sync::mpsc::unbounded_channel();
        let remote = SessionHandle::forwarded(f.core.next_session_id(), erin.clone(), forwarder);
        let replaced = f.core.bind_remote(remote).await.unwrap();
        assert_eq!(replaced.id(), h.id());
        assert!(replaced.is_closed(), "its task is woken either way");
        assert!(f.core.session(&erin).unwrap().is_remote());
        let told = std::mem::take(&mut *link.told.lock().unwrap());
        let unbound = told.contains(&"unbound erin@localhost/phone".to_string());
        assert_eq!(unbound, !moving, "{told:?}");
        f.core
            .unbind_remote(&erin, f.core.session(&erin).unwrap().id());
    }
}

/// Virtual hosting: an account of a second host is local (a message from the primary host
/// reaches its session, never the remote route), and the server's IQ handlers answer as the
/// host addressed, or as the sender's host when the IQ has no `to`.
#[tokio::test]
async fn a_second_host_is_local_and_answered_as_itself() {
    let accounts = Arc::new(MemoryAccounts::new());
    let creds = Credentials::derive("pencil", 64).unwrap();
    accounts.create("localhost", "bob", &creds).await.unwrap();
    accounts
        .create("second.test", "dave", &creds)
        .await
        .unwrap();
    let log = Log::default();
    let config = CoreConfig {
        host: vec![crate::HostConfig {
            domain: "second.test".into(),
            allow_registration: None,
        }],
        ..CoreConfig::default()
    };
    let core = CoreBuilder::new(config, accounts)
        .module(Arc::new(Rec(log.clone())))
        .build()
        .unwrap();
    core.set_remote_route(Arc::new(Route("s2s", log.clone())));
    assert!(core.is_local_domain("second.test") && core.is_local_domain("localhost"));
    assert!(!core.is_local_domain("third.test"));
    let dave = Jid::parse("dave@second.test/r").unwrap();
    let (h, mut end) = SessionHandle::new(core.next_session_id(), dave.clone(), 16);
    core.bind(h).await;
    core.set_available(&dave, Some(0));

    let to_dave = "<message xmlns='jabber:client' from='bob@localhost/pc' to='dave@second.test' type='chat'><body>x</body></message>";
    core.route(Stanza::from_serialized(to_dave.as_bytes()).unwrap())
        .await;
    let got = received(&mut end);
    assert!(
        got.len() == 1 && got[0].contains("<body>x</body>"),
        "{got:?}"
    );

    for iq in [
        "<iq xmlns='jabber:client' from='dave@second.test/r' to='second.test' type='get' id='1'><q xmlns='urn:s'/></iq>",
        "<iq xmlns='jabber:client' from='dave@second.test/r' type='get' id='1'><q xmlns='urn:s'/></iq>",
    ] {
        core.route(Stanza::from_serialized(iq.as_bytes()).unwrap())
            .await;
        let got = received(&mut end);
        assert!(got.len() == 1 && got[0].contains("type=\"result\""), "{got:?}");
    }
    let log = std::mem::take(&mut *log.lock().unwrap());
    assert!(!log.iter().any(|l| l.starts_with("s2s")), "{log:?}");
    let answered: Vec<&String> = log.iter().filter(|l| l.starts_with("iq ")).collect();
    assert_eq!(
        answered,
        ["iq urn:s for second.test", "iq urn:s for second.test"]
    );
}
