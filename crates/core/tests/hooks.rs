//! The hook points and helpers the IM modules rely on: `route_from_session` and the
//! *FromLocal hooks, `ToLocalAccount`, `MessageToFull`, `Closed` before `Bound` on session
//! replacement, hook and event priorities, IQ follow-ups routed after the result,
//! `Core::request`, `SessionHandle::send_paced`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rookery_core::session::SessionEnd;
use rookery_core::{
    priority, Core, CoreBuilder, CoreConfig, Declaration, Event, EventKind, Flow, HookPoint,
    IqAnswer, IqReply, IqTarget, MemoryAccounts, Module, Outbound, SessionEvent, SessionHandle,
};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{IqType, Stanza, StanzaKind};
use rookery_xml::{Element, CONTENT_NS};

/// Records every hook call and session event; drops stanzas whose body is "drop".
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<String>>,
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

#[async_trait]
impl Module for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            iqs: vec![(IqTarget::Account, "urn:test", "q")],
            hooks: [
                HookPoint::MessageFromLocal,
                HookPoint::PresenceFromLocal,
                HookPoint::IqFromLocal,
                HookPoint::ToLocalAccount,
                HookPoint::MessageToFull,
                HookPoint::PresenceBroadcast,
            ]
            .into_iter()
            .map(|p| (p, priority::DEFAULT))
            .collect(),
            events: vec![(EventKind::Session, priority::DEFAULT)],
            stream_features: vec![Element::new("f", "urn:test")],
            ..Declaration::default()
        }
    }

    async fn reply_iq(&self, _core: &Arc<Core>, to: &BareJid, iq: &Stanza) -> IqAnswer {
        self.log.lock().unwrap().push("iq".into());
        // A follow-up stanza: must reach the client after the result.
        let follow_up = Stanza::from_serialized(
            format!(
                "<message from='{to}' to='{}'><body>follow-up</body></message>",
                iq.from().unwrap()
            )
            .as_bytes(),
        )
        .unwrap();
        Ok(IqReply::new(None, vec![follow_up]))
    }

    async fn hook(&self, _core: &Arc<Core>, point: HookPoint, stanza: Stanza) -> Flow {
        self.log.lock().unwrap().push(format!("{point:?}"));
        let body = stanza.element().child_text("body", CONTENT_NS);
        if body.as_deref() == Some(&format!("drop-{point:?}")) {
            return Flow::Handled;
        }
        if point == HookPoint::PresenceBroadcast {
            return Flow::Handled;
        }
        Flow::Continue(stanza)
    }

    async fn event(&self, _core: &Arc<Core>, event: &Event) {
        let s = match event {
            Event::Session(SessionEvent::Bound(j)) => format!("bound {j}"),
            Event::Session(SessionEvent::Closed(j)) => format!("closed {j}"),
            other => format!("{:?}", other.kind()),
        };
        self.log.lock().unwrap().push(s);
    }
}

async fn setup() -> (Arc<Core>, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let core = CoreBuilder::new(CoreConfig::default(), Arc::new(MemoryAccounts::new()))
        .module(rec.clone())
        .build()
        .unwrap();
    (core, rec)
}

async fn bind(core: &Arc<Core>, jid: &str, cap: usize) -> (Jid, SessionEnd) {
    let jid = Jid::parse(jid).unwrap();
    let (h, end) = SessionHandle::new(core.next_session_id(), jid.clone(), cap);
    core.bind(h).await;
    core.set_available(&jid, Some(0));
    (jid, end)
}

fn stanza(xml: &str) -> Stanza {
    Stanza::from_serialized(xml.as_bytes()).unwrap()
}

fn received(end: &mut SessionEnd) -> Vec<String> {
    let mut v = Vec::new();
    while let Ok(Outbound::Bytes(b)) = end.rx.try_recv() {
        v.push(String::from_utf8_lossy(&b).into_owned());
    }
    v
}

#[tokio::test]
async fn hooks_of_stanzas_from_sessions_and_to_accounts() {
    let (core, rec) = setup().await;
    assert_eq!(core.stream_features().len(), 1);
    let (_a, mut a_end) = bind(&core, "a@localhost/r", 16).await;
    let (_b, mut b_end) = bind(&core, "b@localhost/r", 16).await;
    rec.take();
    let cases: &[(&str, &[&str], bool)] = &[
        (
            "<message from='a@localhost/r' to='b@localhost/r'><body>x</body></message>",
            &["MessageFromLocal", "ToLocalAccount", "MessageToFull"],
            true,
        ),
        (
            "<message from='a@localhost/r' to='b@localhost/r'><body>drop-ToLocalAccount</body></message>",
            &["MessageFromLocal", "ToLocalAccount"],
            false,
        ),
        (
            "<message from='a@localhost/r' to='b@localhost/r'><body>drop-MessageFromLocal</body></message>",
            &["MessageFromLocal"],
            false,
        ),
        (
            "<message from='a@localhost/r' to='b@localhost/r'><body>drop-MessageToFull</body></message>",
            &["MessageFromLocal", "ToLocalAccount", "MessageToFull"],
            false,
        ),
        (
            "<presence from='a@localhost/r' to='b@localhost/r'/>",
            &["PresenceFromLocal", "ToLocalAccount"],
            true,
        ),
        ("<presence from='a@localhost/r'/>", &["PresenceBroadcast"], false),
        (
            "<iq from='a@localhost/r' to='b@localhost/r' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
            &["IqFromLocal", "ToLocalAccount"],
            true,
        ),
    ];
    for (xml, hooks, delivered) in cases {
        core.route_from_session(stanza(xml)).await;
        assert_eq!(&rec.take(), hooks, "{xml}");
        assert_eq!(!received(&mut b_end).is_empty(), *delivered, "{xml}");
    }
    // `route` (server-generated stanzas) skips the FromLocal hooks.
    core.route(stanza(
        "<message from='a@localhost/r' to='b@localhost/r'><body>y</body></message>",
    ))
    .await;
    assert_eq!(rec.take(), ["ToLocalAccount", "MessageToFull"]);
    let _ = received(&mut a_end);
}

#[tokio::test]
async fn iq_follow_ups_are_routed_after_the_result() {
    let (core, rec) = setup().await;
    let (_a, mut a_end) = bind(&core, "a@localhost/r", 16).await;
    rec.take();
    core.route_from_session(stanza(
        "<iq from='a@localhost/r' type='get' id='q1'><q xmlns='urn:test'/></iq>",
    ))
    .await;
    // The result, then the follow-up, each through the route table (and its hooks).
    assert_eq!(
        rec.take(),
        [
            "IqFromLocal",
            "iq",
            "ToLocalAccount",
            "ToLocalAccount",
            "MessageToFull"
        ]
    );
    let got = received(&mut a_end);
    assert_eq!(got.len(), 2);
    assert!(
        got[0].contains("type=\"result\"") && got[0].contains("q1"),
        "{got:?}"
    );
    assert!(got[1].contains("follow-up"), "{got:?}");
}

/// Logs its name at one hook point and for account deletion, at a given priority.
struct Ranked {
    name: &'static str,
    priority: i32,
    log: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Module for Ranked {
    fn name(&self) -> &'static str {
        self.name
    }

    fn declare(&self) -> Declaration {
        Declaration {
            hooks: vec![(HookPoint::PresenceBroadcast, self.priority)],
            events: vec![(EventKind::AccountDeleted, self.priority)],
            ..Declaration::default()
        }
    }

    async fn hook(&self, _core: &Arc<Core>, _point: HookPoint, stanza: Stanza) -> Flow {
        self.log.lock().unwrap().push(format!("hook {}", self.name));
        Flow::Continue(stanza)
    }

    async fn event(&self, _core: &Arc<Core>, _event: &Event) {
        self.log
            .lock()
            .unwrap()
            .push(format!("event {}", self.name));
    }
}

#[tokio::test]
async fn hooks_and_events_run_by_priority_then_module_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let ranked = |name, priority| {
        Arc::new(Ranked {
            name,
            priority,
            log: log.clone(),
        })
    };
    // Added lowest first: the priorities, not the order of addition, decide.
    let core = CoreBuilder::new(CoreConfig::default(), Arc::new(MemoryAccounts::new()))
        .module(ranked("default-1", priority::DEFAULT))
        .module(ranked("observe", priority::OBSERVE))
        .module(ranked("default-2", priority::DEFAULT))
        .module(ranked("policy", priority::POLICY))
        .build()
        .unwrap();
    bind(&core, "a@localhost/r", 4).await;
    core.route_from_session(stanza("<presence from='a@localhost/r'/>"))
        .await;
    core.emit(&Event::AccountDeleted(
        BareJid::parse("a@localhost").unwrap(),
    ))
    .await;
    let order = ["policy", "observe", "default-1", "default-2"];
    let expected: Vec<String> = order
        .iter()
        .map(|n| format!("hook {n}"))
        .chain(order.iter().map(|n| format!("event {n}")))
        .collect();
    assert_eq!(*log.lock().unwrap(), expected);
}

#[tokio::test]
async fn events_reach_only_their_subscribers() {
    let (core, rec) = setup().await;
    // The recorder subscribed to session events only.
    core.emit(&Event::AccountDeleted(
        BareJid::parse("a@localhost").unwrap(),
    ))
    .await;
    assert!(rec.take().is_empty());
    bind(&core, "a@localhost/r", 4).await;
    assert_eq!(rec.take(), ["bound a@localhost/r"]);
}

#[tokio::test]
async fn closed_comes_before_bound_when_a_session_is_replaced() {
    let (core, rec) = setup().await;
    let (jid, _e1) = bind(&core, "a@localhost/r", 4).await;
    let (h, _e2) = SessionHandle::new(core.next_session_id(), jid.clone(), 4);
    let old = core.bind(h.clone()).await;
    assert!(old.is_some());
    assert_eq!(
        rec.take(),
        [
            "bound a@localhost/r",
            "closed a@localhost/r",
            "bound a@localhost/r"
        ]
    );
    // The old connection's own unbind finds nothing to report.
    core.unbind(&jid, old.unwrap().id()).await;
    assert!(rec.take().is_empty());
    core.unbind(&jid, h.id()).await;
    assert_eq!(rec.take(), ["closed a@localhost/r"]);
}

#[tokio::test]
async fn request_gets_its_answer_and_only_its_answer() {
    let (core, _rec) = setup().await;
    let (a, mut a_end) = bind(&core, "a@localhost/r", 16).await;
    let c2 = core.clone();
    let a2 = a.clone();
    let waiter = tokio::spawn(async move {
        c2.request(
            IqType::Get,
            BareJid::parse("localhost").unwrap(),
            a2,
            Element::new("query", "http://jabber.org/protocol/disco#info"),
            Duration::from_secs(5),
        )
        .await
    });
    // The request reaches the client.
    let req = loop {
        if let Some(r) = received(&mut a_end).pop() {
            break r;
        }
        tokio::task::yield_now().await;
    };
    let id = req
        .split("id=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    // An answer from someone else with the right id is ignored...
    let (_b, _b_end) = bind(&core, "b@localhost/r", 4).await;
    core.route(stanza(&format!(
        "<iq from='b@localhost/r' to='localhost' type='result' id='{id}'/>"
    )))
    .await;
    // ...the client's own answer (without `to`, as clients may send it) is taken.
    core.route(stanza(&format!(
        "<iq from='a@localhost/r' type='result' id='{id}'/>"
    )))
    .await;
    let answer = waiter.await.unwrap().expect("answered");
    assert_eq!(answer.kind(), StanzaKind::Iq(IqType::Result));
    assert_eq!(answer.from(), Some(&a));
    // No answer: None after the timeout.
    let none = core
        .request(
            IqType::Get,
            BareJid::parse("localhost").unwrap(),
            a.clone(),
            Element::new("x", "urn:test"),
            Duration::from_millis(20),
        )
        .await;
    assert!(none.is_none());
}

#[tokio::test(start_paused = true)]
async fn send_paced_leaves_room_and_gives_up_on_a_stuck_client() {
    let jid = Jid::parse("a@localhost/r").unwrap();
    let (h, mut end) = SessionHandle::new(1, jid, 4);
    assert!(
        h.send_paced(bytes::Bytes::from_static(b"1"), Duration::from_secs(1))
            .await
    );
    assert!(
        h.send_paced(bytes::Bytes::from_static(b"2"), Duration::from_secs(1))
            .await
    );
    assert!(h.send(bytes::Bytes::from_static(b"3")));
    // More than half full: the next paced send waits for the reader...
    let h2 = h.clone();
    let t = tokio::spawn(async move {
        h2.send_paced(bytes::Bytes::from_static(b"4"), Duration::from_secs(1))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!t.is_finished());
    // ...while ordinary sends still fit.
    assert!(h.send(bytes::Bytes::from_static(b"x")));
    let _ = end.rx.recv().await;
    let _ = end.rx.recv().await;
    assert!(t.await.unwrap());
    // Nobody reads: the session is killed after the timeout.
    assert!(h.send(bytes::Bytes::from_static(b"y")));
    assert!(
        !h.send_paced(bytes::Bytes::from_static(b"z"), Duration::from_secs(1))
            .await
    );
    assert!(h.is_closed());
}
