//! [`Core::deliver_rendered`], recipient shape by recipient shape: direct delivery to local
//! sessions from shared bytes, the route table for everything else, and XEP-0191 blocking in
//! both directions through [`Module::blocks`].
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::Arc;

use async_trait::async_trait;
use rookery_jid::{BareJid, Jid};
use rookery_proto::Stanza;
use rookery_sasl::Credentials;

use super::Template;
use crate::accounts::{Accounts, MemoryAccounts};
use crate::config::CoreConfig;

use crate::module::{priority, Declaration, Flow, HookPoint, Module};
use crate::router::tests::{Log, Route};
use crate::router::{Core, CoreBuilder};
use crate::session::{Outbound, SessionEnd, SessionHandle};

/// Logs the hooks the route table runs; `carol` blocks `pubsub.localhost`, `alice` blocks
/// `eve@remote`.
struct Blocker(Log);

#[async_trait]
impl Module for Blocker {
    fn name(&self) -> &'static str {
        "blocker"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            hooks: vec![
                (HookPoint::ToLocalAccount, priority::POLICY),
                (HookPoint::MessageToBare, priority::DEFAULT),
            ],
            ..Declaration::default()
        }
    }

    async fn blocks(&self, _core: &Arc<Core>, owner: &BareJid, other: &Jid) -> bool {
        matches!(
            (owner.as_str(), other.bare_str()),
            ("carol@localhost", "pubsub.localhost") | ("alice@localhost", "eve@remote")
        )
    }

    async fn hook(&self, _core: &Arc<Core>, point: HookPoint, stanza: Stanza) -> Flow {
        let to = stanza.to().map(|t| t.to_string()).unwrap_or_default();
        self.0.lock().unwrap().push(format!("{point:?} {to}"));
        Flow::Continue(stanza)
    }
}

/// alice online at `phone` (priority 1) and `pad` (priority 0), bob online but unavailable,
/// carol online and available at `pc`, dave offline; a component and the remote route.
async fn fixture() -> (Arc<Core>, Log, Vec<(Jid, SessionEnd)>) {
    let accounts = Arc::new(MemoryAccounts::new());
    let creds = Credentials::derive("pencil", 64).unwrap();
    for user in ["alice", "bob", "carol", "dave"] {
        accounts.create("localhost", user, &creds).await.unwrap();
    }
    let log = Log::default();
    let core = CoreBuilder::new(CoreConfig::default(), accounts)
        .module(Arc::new(Blocker(log.clone())))
        .build()
        .unwrap();
    core.register_domain("bot.localhost", Arc::new(Route("component", log.clone())));
    core.set_remote_route(Arc::new(Route("s2s", log.clone())));
    let mut ends = Vec::new();
    for (jid, prio) in [
        ("alice@localhost/phone", Some(1)),
        ("alice@localhost/pad", Some(0)),
        ("bob@localhost/pc", None),
        ("carol@localhost/pc", Some(0)),
    ] {
        let jid = Jid::parse(jid).unwrap();
        let (h, end) = SessionHandle::new(core.next_session_id(), jid.clone(), 16);
        core.bind(h).await;
        core.set_available(&jid, prio);
        ends.push((jid, end));
    }
    (core, log, ends)
}

/// What each session received.
fn received(ends: &mut [(Jid, SessionEnd)]) -> Vec<String> {
    let mut v = Vec::new();
    for (jid, end) in ends {
        while let Ok(Outbound::Bytes(b)) = end.rx.try_recv() {
            v.push(format!("{jid}: {}", String::from_utf8_lossy(&b)));
        }
    }
    v
}

fn jids(list: &[&str]) -> Vec<Jid> {
    list.iter().map(|j| Jid::parse(j).unwrap()).collect()
}

#[test]
fn template_splices_to_into_bytes_serialized_once() {
    let s = Stanza::from_serialized(
        b"<message xmlns='jabber:client' from='a@x' to='old@x' type='headline'><b/></message>",
    )
    .unwrap();
    let t = Template::new(s);
    assert!(t.stanza().to().is_none());
    assert_eq!(
        t.render("c@d/\"r"),
        &b"<message to=\"c@d/&quot;r\" from=\"a@x\" type=\"headline\"><b/></message>"[..]
    );
    let routed = t.addressed(&Jid::parse("e@f").unwrap());
    assert_eq!(routed.to().unwrap().as_str(), "e@f");
    assert_eq!(routed.element().attr("to"), Some("e@f"));
}

#[tokio::test]
async fn each_recipient_shape_takes_its_path() {
    let (core, log, mut ends) = fixture().await;
    let notification = Stanza::from_serialized(
        b"<message xmlns='jabber:client' from='pubsub.localhost' type='headline'><e/></message>",
    )
    .unwrap();
    let t = Template::new(notification);
    let to = jids(&[
        "alice@localhost",      // bare: every available resource of priority >= 0
        "carol@localhost/pc",   // full, online, but carol blocks the service
        "bob@localhost",        // bare, no available resource: a headline is dropped
        "alice@localhost/gone", // full, offline: the route table
        "friend@remote",        // another server
        "bot.localhost",        // a component
    ]);
    core.deliver_rendered(&t, &to).await;
    let got = received(&mut ends);
    assert_eq!(got.len(), 2, "{got:?}");
    for g in &got {
        assert!(
            g.contains("<message to=\"alice@localhost\" from=\"pubsub.localhost\""),
            "{g}"
        );
    }
    assert_eq!(
        *log.lock().unwrap(),
        [
            "ToLocalAccount alice@localhost/gone",
            "s2s friend@remote",
            "component bot.localhost",
        ]
    );
}

#[tokio::test]
async fn normal_messages_for_offline_accounts_go_to_the_route_table() {
    let (core, log, mut ends) = fixture().await;
    let m = Stanza::from_serialized(
        b"<message xmlns='jabber:client' from='pubsub.localhost' type='normal'><e/></message>",
    )
    .unwrap();
    core.deliver_rendered(&Template::new(m), &jids(&["dave@localhost"]))
        .await;
    assert!(received(&mut ends).is_empty());
    // No offline module here: the router's default bounces it to the sender (whose domain
    // this fixture does not host, hence the remote route).
    assert_eq!(
        *log.lock().unwrap(),
        [
            "ToLocalAccount dave@localhost",
            "MessageToBare dave@localhost",
            "s2s pubsub.localhost",
        ]
    );
}

#[tokio::test]
async fn a_local_sender_reaches_nobody_it_blocks_and_its_own_resources_always() {
    let (core, log, mut ends) = fixture().await;
    let p =
        Stanza::from_serialized(b"<presence xmlns='jabber:client' from='alice@localhost/phone'/>")
            .unwrap();
    let to = jids(&["eve@remote", "friend@remote", "alice@localhost/pad"]);
    core.deliver_rendered(&Template::new(p), &to).await;
    assert_eq!(*log.lock().unwrap(), ["s2s friend@remote"]);
    let got = received(&mut ends);
    assert_eq!(
        got,
        ["alice@localhost/pad: <presence to=\"alice@localhost/pad\" from=\"alice@localhost/phone\"/>"]
    );
}

#[tokio::test]
async fn a_local_presence_broadcast_reaches_the_available_resources_of_local_contacts() {
    let (core, log, mut ends) = fixture().await;
    let p = Stanza::from_serialized(b"<presence xmlns='jabber:client' from='carol@localhost/pc'/>")
        .unwrap();
    let t = Template::new(p);
    // alice: two available resources (priorities 1 and 0); bob: online but not available;
    // dave: offline.
    core.deliver_rendered(
        &t,
        &jids(&["alice@localhost", "bob@localhost", "dave@localhost"]),
    )
    .await;
    let got = received(&mut ends);
    assert_eq!(got.len(), 2, "{got:?}");
    for g in &got {
        assert!(g.starts_with("alice@localhost/"), "{g}");
        assert!(
            g.contains("<presence to=\"alice@localhost\" from=\"carol@localhost/pc\""),
            "{g}"
        );
    }
    // Straight to the sessions: no route table, no per-contact copy of the stanza.
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
}
