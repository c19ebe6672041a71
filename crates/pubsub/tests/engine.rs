//! The engine alone (in-memory store, recording broadcaster, a fake roster): every XEP-0060
//! use case with its success and its error cases, and PEP auto-create.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rookery_jid::{BareJid, Jid};
use rookery_proto::rsm::{self, Anchor};
use rookery_proto::Stanza;
use rookery_pubsub::broadcast::{Broadcaster, EventKind, Notification};
use rookery_pubsub::config::{AccessModel, Profile};
use rookery_pubsub::engine::{ItemsPage, ItemsQuery, PublishRequest, SubscriptionChange};
use rookery_pubsub::form::{Field, Form};
use rookery_pubsub::model::{Affiliation, Item, SubState};
use rookery_pubsub::{ns, AccessPolicy, Engine, MemoryStore, NodeStore, PubsubError};
use rookery_xml::Element;

#[derive(Default)]
struct Recorder {
    notes: Mutex<Vec<Notification>>,
    sent: Mutex<Vec<Stanza>>,
}

#[async_trait]
impl Broadcaster for Recorder {
    async fn broadcast(&self, n: &Notification) {
        self.notes.lock().unwrap().push(n.clone());
    }
    async fn send(&self, stanza: Stanza) {
        self.sent.lock().unwrap().push(stanza);
    }
}

impl Recorder {
    fn take(&self) -> Vec<Notification> {
        std::mem::take(&mut *self.notes.lock().unwrap())
    }
    fn take_sent(&self) -> Vec<Stanza> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

#[derive(Default)]
struct FakeRoster {
    presence: HashSet<(String, String)>,
    groups: HashMap<(String, String), Vec<String>>,
}

#[async_trait]
impl AccessPolicy for FakeRoster {
    async fn has_presence_subscription(&self, owner: &BareJid, who: &BareJid) -> bool {
        self.presence
            .contains(&(owner.to_string(), who.to_string()))
    }
    async fn roster_groups(&self, owner: &BareJid, who: &BareJid) -> Option<Vec<String>> {
        self.groups
            .get(&(owner.to_string(), who.to_string()))
            .cloned()
    }
}

fn jid(s: &str) -> Jid {
    Jid::parse(s).unwrap()
}

fn bare(s: &str) -> BareJid {
    BareJid::parse(s).unwrap()
}

struct Setup {
    engine: Engine,
    rec: Arc<Recorder>,
    svc: BareJid,
}

impl Setup {
    /// Creates `node` as `owner`, configured with `fields` (none: the defaults).
    async fn create(&self, owner: &Jid, node: &str, fields: &[(&str, &str)]) -> String {
        let form = (!fields.is_empty()).then(|| config(fields));
        self.engine
            .create(&self.svc, owner, Some(node), form.as_ref())
            .await
            .unwrap()
    }

    /// Applies the configuration `fields` to `node` as `owner`.
    async fn configure(&self, owner: &Jid, node: &str, fields: &[(&str, &str)]) {
        self.engine
            .configure(&self.svc, owner, Some(node), &config(fields))
            .await
            .unwrap();
    }

    /// Every item of `node` as `who` retrieves them (§6.5.2).
    async fn items(&self, who: &Jid, node: &str) -> Result<Vec<Item>, PubsubError> {
        self.engine
            .items(&self.svc, who, node, &ItemsQuery::default())
            .await
            .map(|page| page.items)
    }

    /// Sets affiliations with `node` as its owner `owner` (§8.9.2).
    async fn affiliate(&self, owner: &Jid, node: &str, changes: &[(BareJid, Affiliation)]) {
        self.engine
            .set_node_affiliations(&self.svc, owner, Some(node), changes)
            .await
            .unwrap();
    }

    /// Publishes `req` as `who`; the ItemID.
    async fn publish(&self, who: &Jid, req: PublishRequest) -> String {
        self.engine.publish(&self.svc, who, req).await.unwrap()
    }
}

fn setup_with(profile: Profile, store: Arc<dyn NodeStore>) -> Setup {
    let rec = Arc::new(Recorder::default());
    let mut roster = FakeRoster::default();
    roster
        .presence
        .insert(("alice@example.org".into(), "bob@example.org".into()));
    roster.groups.insert(
        ("alice@example.org".into(), "carol@example.org".into()),
        vec!["Friends".into()],
    );
    roster.groups.insert(
        ("alice@example.org".into(), "bob@example.org".into()),
        vec!["Work".into()],
    );
    let engine = Engine::new(profile, store, rec.clone(), Arc::new(roster));
    Setup {
        engine,
        rec,
        svc: bare("pubsub.example.org"),
    }
}

fn setup() -> Setup {
    setup_with(
        Profile::service("example.org"),
        Arc::new(MemoryStore::new()),
    )
}

fn config(fields: &[(&str, &str)]) -> Form {
    let mut f = Form::new("submit", ns::NODE_CONFIG);
    for (k, v) in fields {
        f.push(Field {
            var: (*k).into(),
            values: vec![(*v).into()],
            ..Field::default()
        });
    }
    f
}

fn entry(text: &str) -> Element {
    Element::new("entry", "urn:test").with_text(text)
}

fn publish(node: &str, id: Option<&str>, payload: Option<Element>) -> PublishRequest {
    PublishRequest {
        node: Some(node.into()),
        has_item: true,
        item_id: id.map(str::to_string),
        payload,
        options: None,
    }
}

const ALICE: &str = "alice@example.org/home";
const BOB: &str = "bob@example.org/phone";
const CAROL: &str = "carol@example.org/pc";
const MALLORY: &str = "mallory@evil.example/x";

#[tokio::test]
async fn create_named_instant_and_errors() {
    let s = setup();
    let a = jid(ALICE);
    assert_eq!(s.create(&a, "news", &[]).await, "news");
    assert_eq!(
        s.engine.create(&s.svc, &a, Some("news"), None).await,
        Err(PubsubError::NodeExists)
    );
    let instant = s.engine.create(&s.svc, &a, None, None).await.unwrap();
    assert_eq!(instant.len(), 32);
    // Remote users may not create nodes by default.
    assert_eq!(
        s.engine
            .create(&s.svc, &jid(MALLORY), Some("x"), None)
            .await,
        Err(PubsubError::Forbidden)
    );
    // Create-and-configure; an invalid value refuses the node.
    s.create(
        &a,
        "configured",
        &[("pubsub#max_items", "5"), ("pubsub#title", "T")],
    )
    .await;
    let c = s
        .engine
        .configuration(&s.svc, &a, Some("configured"))
        .await
        .unwrap();
    assert_eq!(c.title, "T");
    assert!(matches!(
        s.engine
            .create(
                &s.svc,
                &a,
                Some("bad"),
                Some(&config(&[("pubsub#access_model", "nope")]))
            )
            .await,
        Err(PubsubError::InvalidConfig(_))
    ));
    let nodes = s.engine.list_nodes(&s.svc, &jid(BOB)).await.unwrap();
    assert_eq!(nodes.len(), 3);
    let affs = s.engine.affiliations_of(&s.svc, &a, None).await.unwrap();
    assert!(affs.iter().all(|(_, a)| *a == Affiliation::Owner));
    assert_eq!(affs.len(), 3);
}

#[tokio::test]
async fn publish_notifies_subscribers_with_or_without_payload() {
    let s = setup();
    let (a, b) = (jid(ALICE), jid(BOB));
    s.create(&a, "n", &[]).await;
    let o = s
        .engine
        .subscribe(&s.svc, &b, "n", &b.to_bare().into(), None)
        .await
        .unwrap();
    assert_eq!(o.subscription.state, SubState::Subscribed);
    // Subscribing again returns the same subscription.
    let again = s
        .engine
        .subscribe(&s.svc, &b, "n", &b.to_bare().into(), None)
        .await
        .unwrap();
    assert_eq!(again.subscription.subid, o.subscription.subid);

    let id = s
        .engine
        .publish(&s.svc, &a, publish("n", Some("i1"), Some(entry("one"))))
        .await
        .unwrap();
    assert_eq!(id, "i1");
    let notes = s.rec.take();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].kind, EventKind::Items);
    assert_eq!(notes[0].recipients.len(), 1);
    assert_eq!(notes[0].recipients[0].jid.as_str(), "bob@example.org");
    assert!(notes[0].recipients[0].subids.is_empty());
    let ev = notes[0].event.to_string();
    assert!(
        ev.contains("<item id=\"i1\"><entry xmlns=\"urn:test\">one</entry></item>"),
        "{ev}"
    );

    // Generated ids; payloads left out when the node says so.
    s.configure(&a, "n", &[("pubsub#deliver_payloads", "0")])
        .await;
    let id = s
        .engine
        .publish(&s.svc, &a, publish("n", None, Some(entry("two"))))
        .await
        .unwrap();
    assert_eq!(id.len(), 32);
    let ev = s.rec.take()[0].event.to_string();
    assert!(ev.contains(&format!("<item id=\"{id}\"/>")), "{ev}");
    // Items are still stored with their payload.
    let items = s.items(&b, "n").await.unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].payload, Some(entry("two")));
}

#[tokio::test]
async fn publish_errors() {
    let mut profile = Profile::service("example.org");
    profile.max_payload_bytes = 64;
    let s = setup_with(profile, Arc::new(MemoryStore::new()));
    let (a, b) = (jid(ALICE), jid(BOB));
    s.create(&a, "n", &[]).await;
    let e = |r: Result<String, PubsubError>| r.unwrap_err();
    assert_eq!(
        e(s.engine
            .publish(&s.svc, &b, publish("n", None, Some(entry("x"))))
            .await),
        PubsubError::Forbidden
    );
    assert_eq!(
        e(s.engine
            .publish(&s.svc, &a, publish("nope", None, Some(entry("x"))))
            .await),
        PubsubError::NodeNotFound
    );
    assert_eq!(
        e(s.engine
            .publish(
                &s.svc,
                &a,
                publish("n", None, Some(entry(&"x".repeat(100))))
            )
            .await),
        PubsubError::PayloadTooBig
    );
    assert_eq!(
        e(s.engine.publish(&s.svc, &a, publish("n", None, None)).await),
        PubsubError::PayloadRequired
    );
    let mut no_item = publish("n", None, None);
    no_item.has_item = false;
    assert_eq!(
        e(s.engine.publish(&s.svc, &a, no_item).await),
        PubsubError::ItemRequired
    );
    let mut no_node = publish("n", None, Some(entry("x")));
    no_node.node = None;
    assert_eq!(
        e(s.engine.publish(&s.svc, &a, no_node).await),
        PubsubError::NodeIdRequired
    );
    // Preconditions (§7.1.5).
    let mut with_opts = publish("n", None, Some(entry("x")));
    let mut opts = config(&[("pubsub#access_model", "whitelist")]);
    opts.fields[0].values = vec![ns::PUBLISH_OPTIONS.into()];
    with_opts.options = Some(opts.clone());
    assert_eq!(
        e(s.engine.publish(&s.svc, &a, with_opts.clone()).await),
        PubsubError::PreconditionNotMet
    );
    s.configure(&a, "n", &[("pubsub#access_model", "whitelist")])
        .await;
    s.engine.publish(&s.svc, &a, with_opts).await.unwrap();
    // A transient notification-only node refuses payloads.
    s.create(
        &a,
        "t",
        &[
            ("pubsub#persist_items", "0"),
            ("pubsub#deliver_payloads", "0"),
        ],
    )
    .await;
    assert_eq!(
        e(s.engine
            .publish(&s.svc, &a, publish("t", None, Some(entry("x"))))
            .await),
        PubsubError::ItemForbidden
    );
    let mut bare_notify = publish("t", None, None);
    bare_notify.has_item = false;
    s.engine.publish(&s.svc, &a, bare_notify).await.unwrap();
    assert_eq!(
        s.items(&a, "t").await.unwrap_err(),
        PubsubError::NotPersistent
    );
    // Publishers may publish; publish model "open" lets anyone.
    s.affiliate(&a, "n", &[(b.to_bare(), Affiliation::Publisher)])
        .await;
    s.publish(&b, publish("n", None, Some(entry("x")))).await;
    s.configure(&a, "t", &[("pubsub#publish_model", "open")])
        .await;
    let mut by_carol = publish("t", None, None);
    by_carol.has_item = false;
    s.engine
        .publish(&s.svc, &jid(CAROL), by_carol)
        .await
        .unwrap();
}

/// Audit 37 L8: a creator owning `max_nodes_per_owner` nodes is refused another; nodes it
/// was made owner of count, and giving one up (or deleting one) frees a place.
#[tokio::test]
async fn nodes_per_owner_are_capped() {
    let profile = Profile {
        max_nodes_per_owner: 2,
        ..Profile::service("example.org")
    };
    let s = setup_with(profile, Arc::new(MemoryStore::new()));
    let (a, b) = (jid(ALICE), jid(BOB));
    s.create(&a, "a1", &[]).await;
    s.create(&b, "b1", &[]).await;
    s.affiliate(&b, "b1", &[(a.to_bare(), Affiliation::Owner)])
        .await;
    let refused = s.engine.create(&s.svc, &a, Some("a2"), None).await;
    assert_eq!(refused, Err(PubsubError::MaxNodesExceeded));
    // Bob is not held back by Alice's nodes.
    s.create(&b, "b2", &[]).await;
    s.engine
        .set_node_affiliations(&s.svc, &a, Some("b1"), &[(a.to_bare(), Affiliation::None)])
        .await
        .unwrap();
    s.create(&a, "a2", &[]).await;
    s.engine.delete(&s.svc, &a, Some("a1"), None).await.unwrap();
    s.create(&a, "a3", &[]).await;
}

/// §6.5.4: an answer is a page — at most `max_page_items`, ending with the item that brings
/// it to `max_page_bytes` — and RSM walks the rest (the result set newest first).
#[tokio::test]
async fn retrieve_items_in_pages() {
    let profile = Profile {
        max_page_items: 3,
        max_page_bytes: 1000,
        ..Profile::service("example.org")
    };
    let s = setup_with(profile, Arc::new(MemoryStore::new()));
    let a = jid(ALICE);
    s.create(&a, "n", &[("pubsub#max_items", "max")]).await;
    for i in 0..8 {
        s.publish(&a, publish("n", Some(&format!("i{i}")), Some(entry("x"))))
            .await;
    }
    let page = |max: Option<u64>, rsm: Option<rsm::Request>| {
        let q = ItemsQuery {
            max,
            rsm,
            ..Default::default()
        };
        let e = &s.engine;
        let (svc, a) = (s.svc.clone(), a.clone());
        async move { e.items(&svc, &a, "n", &q).await }
    };
    let ids = |p: &ItemsPage| p.items.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    // No max_items: the newest page, not all the node asked for.
    let first = page(None, None).await.unwrap();
    assert_eq!(ids(&first), ["i7", "i6", "i5"]);
    assert_eq!(
        (first.count, first.first_index, first.complete),
        (8, Some(0), false)
    );
    assert!(first.more_older());
    assert!(page(Some(2), None).await.unwrap().complete);
    let after = |id: &str| rsm::Request {
        max: None,
        anchor: Anchor::After(id.into()),
    };
    let second = page(None, Some(after("i5"))).await.unwrap();
    assert_eq!(
        (ids(&second), second.first_index),
        (vec!["i4".into(), "i3".into(), "i2".into()], Some(3))
    );
    let last = page(None, Some(after("i2"))).await.unwrap();
    assert_eq!(ids(&last), ["i1", "i0"]);
    assert!(!last.more_older());
    let oldest = rsm::Request {
        max: Some(2),
        anchor: Anchor::Last,
    };
    let p = page(None, Some(oldest)).await.unwrap();
    assert_eq!(
        (ids(&p), p.first_index),
        (vec!["i1".into(), "i0".into()], Some(6))
    );
    let newer = rsm::Request {
        max: Some(2),
        anchor: Anchor::Before("i2".into()),
    };
    assert_eq!(ids(&page(None, Some(newer)).await.unwrap()), ["i4", "i3"]);
    assert_eq!(
        page(None, Some(after("gone"))).await.unwrap_err(),
        PubsubError::ItemNotFound
    );
    // Large payloads: the page ends with the item that reaches the byte budget.
    s.publish(
        &a,
        publish("n", Some("big1"), Some(entry(&"y".repeat(600)))),
    )
    .await;
    s.publish(
        &a,
        publish("n", Some("big2"), Some(entry(&"y".repeat(600)))),
    )
    .await;
    assert_eq!(ids(&page(None, None).await.unwrap()), ["big2", "big1"]);
}

#[tokio::test]
async fn retrieve_items_all_by_id_and_max() {
    let s = setup();
    let a = jid(ALICE);
    s.create(&a, "n", &[("pubsub#max_items", "3")]).await;
    for i in 1..=5 {
        s.publish(&a, publish("n", Some(&format!("i{i}")), Some(entry("x"))))
            .await;
    }
    let ids = |v: Vec<Item>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
    let all = s.items(&a, "n").await.unwrap();
    assert_eq!(ids(all), ["i5", "i4", "i3"]);
    let last = s
        .engine
        .items(
            &s.svc,
            &a,
            "n",
            &ItemsQuery {
                max: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(last.items), ["i5"]);
    let some = s
        .engine
        .items(
            &s.svc,
            &a,
            "n",
            &ItemsQuery {
                ids: vec!["i3".into(), "i1".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(some.items), ["i3"]);
    // Republishing an id moves it to the top without growing the node.
    s.publish(&a, publish("n", Some("i3"), Some(entry("y"))))
        .await;
    let all = s.items(&a, "n").await.unwrap();
    assert_eq!(ids(all), ["i3", "i5", "i4"]);
    assert_eq!(
        s.engine.item_ids(&s.svc, &a, "n").await.unwrap(),
        ["i3", "i5", "i4"]
    );
    // Lowering max_items trims at once.
    s.configure(&a, "n", &[("pubsub#max_items", "1")]).await;
    let all = s.items(&a, "n").await.unwrap();
    assert_eq!(ids(all), ["i3"]);
    assert_eq!(
        s.items(&a, "nope").await.unwrap_err(),
        PubsubError::NodeNotFound
    );
}

#[tokio::test]
async fn access_models_on_subscribe_and_items() {
    let s = setup();
    let a = jid(ALICE);
    let (b, c, m) = (jid(BOB), jid(CAROL), jid(MALLORY));
    let sub = |who: &Jid, node: &'static str| {
        let who = who.clone();
        let e = &s.engine;
        let svc = s.svc.clone();
        async move {
            e.subscribe(&svc, &who, node, &who.to_bare().into(), None)
                .await
        }
    };
    for (node, model) in [
        ("presence", "presence"),
        ("roster", "roster"),
        ("whitelist", "whitelist"),
        ("authorize", "authorize"),
    ] {
        let mut f = config(&[("pubsub#access_model", model)]);
        if model == "roster" {
            f.push(Field {
                var: "pubsub#roster_groups_allowed".into(),
                values: vec!["Friends".into()],
                ..Field::default()
            });
        }
        s.engine
            .create(&s.svc, &a, Some(node), Some(&f))
            .await
            .unwrap();
        s.publish(&a, publish(node, Some("x"), Some(entry("x"))))
            .await;
    }
    // presence: bob has a presence subscription to alice, carol not.
    assert!(sub(&b, "presence").await.is_ok());
    assert_eq!(
        sub(&c, "presence").await.unwrap_err(),
        PubsubError::PresenceSubscriptionRequired
    );
    assert_eq!(
        s.items(&c, "presence").await.unwrap_err(),
        PubsubError::PresenceSubscriptionRequired
    );
    // roster: carol is in group Friends, bob in Work.
    assert!(sub(&c, "roster").await.is_ok());
    assert_eq!(
        sub(&b, "roster").await.unwrap_err(),
        PubsubError::NotInRosterGroup
    );
    // whitelist: closed until bob is a member.
    assert_eq!(
        sub(&b, "whitelist").await.unwrap_err(),
        PubsubError::ClosedNode
    );
    s.affiliate(&a, "whitelist", &[(b.to_bare(), Affiliation::Member)])
        .await;
    assert!(sub(&b, "whitelist").await.is_ok());
    assert_eq!(
        s.items(&c, "whitelist").await.unwrap_err(),
        PubsubError::ClosedNode
    );
    // authorize: pending until the owner approves; items need the approval.
    let o = sub(&m, "authorize").await.unwrap();
    assert_eq!(o.subscription.state, SubState::Pending);
    let req = s.rec.take_sent();
    assert_eq!(req.len(), 1, "approval request to the owner");
    assert_eq!(req[0].to().unwrap().as_str(), "alice@example.org");
    assert!(req[0]
        .to_bytes()
        .windows(24)
        .any(|w| w == b"pubsub#subscribe_authori"));
    assert_eq!(
        sub(&m, "authorize").await.unwrap_err(),
        PubsubError::PendingSubscription
    );
    assert_eq!(
        s.items(&m, "authorize").await.unwrap_err(),
        PubsubError::NotSubscribedForItems
    );
    assert_eq!(
        s.engine
            .authorize(&s.svc, &b, "authorize", &m.to_bare().into(), None, true)
            .await,
        Err(PubsubError::Forbidden)
    );
    s.engine
        .authorize(&s.svc, &a, "authorize", &m.to_bare().into(), None, true)
        .await
        .unwrap();
    let told = s.rec.take_sent();
    assert!(told[0]
        .to_bytes()
        .windows(25)
        .any(|w| w == b"subscription=\"subscribed\""));
    assert_eq!(s.items(&m, "authorize").await.unwrap().len(), 1);
    // An outcast is forbidden everything.
    s.affiliate(&a, "authorize", &[(m.to_bare(), Affiliation::Outcast)])
        .await;
    assert_eq!(
        sub(&m, "authorize").await.unwrap_err(),
        PubsubError::Forbidden
    );
    assert!(s
        .engine
        .node_subscriptions(&s.svc, &a, Some("authorize"))
        .await
        .unwrap()
        .is_empty());
    // Changing the access model ends subscriptions it no longer admits.
    s.configure(&a, "presence", &[("pubsub#access_model", "whitelist")])
        .await;
    assert!(s
        .engine
        .subscriptions_of(&s.svc, &b, Some("presence"))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn subscribe_errors_subids_and_options() {
    let s = setup();
    let (a, b, c) = (jid(ALICE), jid(BOB), jid(CAROL));
    s.create(&a, "n", &[]).await;
    assert_eq!(
        s.engine
            .subscribe(&s.svc, &b, "n", &c, None)
            .await
            .unwrap_err(),
        PubsubError::InvalidJid
    );
    assert_eq!(
        s.engine
            .subscribe(&s.svc, &b, "x", &b, None)
            .await
            .unwrap_err(),
        PubsubError::NodeNotFound
    );
    assert_eq!(
        s.engine.unsubscribe(&s.svc, &b, "n", &b, None).await,
        Err(PubsubError::NotSubscribed)
    );
    let first = s.engine.subscribe(&s.svc, &b, "n", &b, None).await.unwrap();
    // A second subscription with options: multi-subscribe.
    let opts = {
        let mut f = Form::new("submit", ns::SUBSCRIBE_OPTIONS);
        f.push(Field::new("pubsub#deliver", "boolean", "1"));
        f
    };
    let second = s
        .engine
        .subscribe(&s.svc, &b, "n", &b, Some(&opts))
        .await
        .unwrap();
    assert_ne!(first.subscription.subid, second.subscription.subid);
    s.publish(&a, publish("n", None, Some(entry("x")))).await;
    let n = s.rec.take();
    assert_eq!(n[0].recipients.len(), 1);
    assert_eq!(n[0].recipients[0].subids.len(), 2, "SHIM SubID headers");
    assert_eq!(
        s.engine.unsubscribe(&s.svc, &b, "n", &b, None).await,
        Err(PubsubError::SubidRequired)
    );
    assert_eq!(
        s.engine
            .unsubscribe(&s.svc, &b, "n", &b, Some("bogus"))
            .await,
        Err(PubsubError::InvalidSubid)
    );
    assert_eq!(
        s.engine
            .unsubscribe(&s.svc, &c, "n", &b, Some(&first.subscription.subid))
            .await,
        Err(PubsubError::Forbidden)
    );
    s.engine
        .unsubscribe(&s.svc, &b, "n", &b, Some(&first.subscription.subid))
        .await
        .unwrap();
    // Options: get, set deliver=false, which stops notifications.
    assert_eq!(
        s.engine
            .options(&s.svc, &b, "n", None, None)
            .await
            .unwrap_err(),
        PubsubError::JidRequired
    );
    assert_eq!(
        s.engine
            .options(&s.svc, &c, "n", Some(&c), None)
            .await
            .unwrap_err(),
        PubsubError::NotSubscribed
    );
    let (_, subid, o) = s
        .engine
        .options(&s.svc, &b, "n", Some(&b), None)
        .await
        .unwrap();
    assert!(o.deliver);
    assert_eq!(subid, second.subscription.subid);
    let mut off = Form::new("submit", ns::SUBSCRIBE_OPTIONS);
    off.push(Field::new("pubsub#deliver", "boolean", "false"));
    s.engine
        .set_options(&s.svc, &b, "n", Some(&b), None, &off)
        .await
        .unwrap();
    let mut bad = Form::new("submit", ns::SUBSCRIBE_OPTIONS);
    bad.push(Field::new("pubsub#deliver", "boolean", "maybe"));
    assert_eq!(
        s.engine
            .set_options(&s.svc, &b, "n", Some(&b), None, &bad)
            .await,
        Err(PubsubError::InvalidOptions)
    );
    s.publish(&a, publish("n", None, Some(entry("x")))).await;
    assert!(s.rec.take()[0].recipients.is_empty());
    let subs = s.engine.subscriptions_of(&s.svc, &b, None).await.unwrap();
    assert_eq!(subs.len(), 1);
}

#[tokio::test]
async fn last_item_on_subscription() {
    let s = setup();
    let (a, b) = (jid(ALICE), jid(BOB));
    s.create(&a, "n", &[("pubsub#send_last_published_item", "on_sub")])
        .await;
    s.publish(&a, publish("n", Some("last"), Some(entry("x"))))
        .await;
    let o = s.engine.subscribe(&s.svc, &b, "n", &b, None).await.unwrap();
    let m = o.last_item.expect("last item");
    let text = String::from_utf8(m.to_bytes()).unwrap();
    assert!(text.contains("<item id=\"last\">"), "{text}");
    assert!(text.contains("urn:xmpp:delay"), "{text}");
}

#[tokio::test]
async fn retract_purge_delete_and_config_notifications() {
    let s = setup();
    let (a, b) = (jid(ALICE), jid(BOB));
    s.create(&a, "n", &[("pubsub#notify_config", "1")]).await;
    s.engine.subscribe(&s.svc, &b, "n", &b, None).await.unwrap();
    s.publish(&a, publish("n", Some("i"), Some(entry("x"))))
        .await;
    s.rec.take();
    // Retract: errors, then success with notification.
    assert_eq!(
        s.engine
            .retract(&s.svc, &b, Some("n"), Some("i"), None)
            .await,
        Err(PubsubError::Forbidden)
    );
    assert_eq!(
        s.engine
            .retract(&s.svc, &a, Some("n"), Some("zz"), None)
            .await,
        Err(PubsubError::ItemNotFound)
    );
    assert_eq!(
        s.engine.retract(&s.svc, &a, Some("n"), None, None).await,
        Err(PubsubError::ItemRequired)
    );
    assert_eq!(
        s.engine.retract(&s.svc, &a, None, Some("i"), None).await,
        Err(PubsubError::NodeIdRequired)
    );
    s.engine
        .retract(&s.svc, &a, Some("n"), Some("i"), Some(true))
        .await
        .unwrap();
    let n = s.rec.take();
    assert_eq!(n[0].kind, EventKind::Retract);
    assert!(n[0].event.to_string().contains("<retract id=\"i\"/>"));
    // notify='false' is honoured.
    s.publish(&a, publish("n", Some("j"), Some(entry("x"))))
        .await;
    s.rec.take();
    s.engine
        .retract(&s.svc, &a, Some("n"), Some("j"), Some(false))
        .await
        .unwrap();
    assert!(s.rec.take().is_empty());
    // Configuration change.
    s.configure(&a, "n", &[("pubsub#title", "New")]).await;
    let n = s.rec.take();
    assert_eq!(n[0].kind, EventKind::Configuration);
    assert_eq!(
        s.engine
            .configure(&s.svc, &b, Some("n"), &config(&[("pubsub#title", "x")]))
            .await,
        Err(PubsubError::Forbidden)
    );
    assert_eq!(
        s.engine
            .configuration(&s.svc, &b, Some("n"))
            .await
            .unwrap_err(),
        PubsubError::Forbidden
    );
    // Purge.
    assert_eq!(
        s.engine.purge(&s.svc, &b, Some("n")).await,
        Err(PubsubError::Forbidden)
    );
    s.engine.purge(&s.svc, &a, Some("n")).await.unwrap();
    assert_eq!(s.rec.take()[0].kind, EventKind::Purge);
    // Delete with redirect.
    assert_eq!(
        s.engine.delete(&s.svc, &b, Some("n"), None).await,
        Err(PubsubError::Forbidden)
    );
    s.engine
        .delete(
            &s.svc,
            &a,
            Some("n"),
            Some("xmpp:pubsub.example.org?;node=other"),
        )
        .await
        .unwrap();
    let n = s.rec.take();
    assert_eq!(n[0].kind, EventKind::Delete);
    assert_eq!(n[0].recipients.len(), 1);
    assert!(n[0]
        .event
        .to_string()
        .contains("<redirect uri=\"xmpp:pubsub.example.org?;node=other\"/>"));
    assert_eq!(
        s.engine.delete(&s.svc, &a, Some("n"), None).await,
        Err(PubsubError::NodeNotFound)
    );
    assert_eq!(
        s.engine
            .subscribe(&s.svc, &b, "n", &b, None)
            .await
            .unwrap_err(),
        PubsubError::NodeNotFound
    );
}

#[tokio::test]
async fn owner_manages_subscriptions_and_affiliations() {
    let s = setup();
    let (a, b, c) = (jid(ALICE), jid(BOB), jid(CAROL));
    s.create(&a, "n", &[]).await;
    assert_eq!(
        s.engine
            .node_subscriptions(&s.svc, &b, Some("n"))
            .await
            .unwrap_err(),
        PubsubError::Forbidden
    );
    s.engine
        .set_node_subscriptions(
            &s.svc,
            &a,
            Some("n"),
            &[SubscriptionChange {
                jid: c.clone(),
                state: Some(SubState::Subscribed),
                subid: None,
            }],
        )
        .await
        .unwrap();
    let subs = s
        .engine
        .node_subscriptions(&s.svc, &a, Some("n"))
        .await
        .unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].jid, c);
    assert_eq!(s.rec.take_sent().len(), 1, "carol told of her subscription");
    s.engine
        .set_node_subscriptions(
            &s.svc,
            &a,
            Some("n"),
            &[SubscriptionChange {
                jid: c.clone(),
                state: None,
                subid: None,
            }],
        )
        .await
        .unwrap();
    assert!(s
        .engine
        .node_subscriptions(&s.svc, &a, Some("n"))
        .await
        .unwrap()
        .is_empty());
    // Affiliations: the last owner stays.
    assert!(matches!(
        s.engine
            .set_node_affiliations(&s.svc, &a, Some("n"), &[(a.to_bare(), Affiliation::None)])
            .await,
        Err(PubsubError::NotAcceptable(_))
    ));
    s.affiliate(
        &a,
        "n",
        &[
            (b.to_bare(), Affiliation::Owner),
            (c.to_bare(), Affiliation::PublishOnly),
        ],
    )
    .await;
    let affs = s
        .engine
        .node_affiliations(&s.svc, &b, Some("n"))
        .await
        .unwrap();
    assert_eq!(affs.len(), 3);
    // Publish-only: publishes, retracts own items only, may not subscribe.
    s.publish(&c, publish("n", Some("c1"), Some(entry("x"))))
        .await;
    s.publish(&a, publish("n", Some("a1"), Some(entry("x"))))
        .await;
    assert_eq!(
        s.engine
            .retract(&s.svc, &c, Some("n"), Some("a1"), None)
            .await,
        Err(PubsubError::Forbidden)
    );
    s.engine
        .retract(&s.svc, &c, Some("n"), Some("c1"), None)
        .await
        .unwrap();
    assert_eq!(
        s.engine
            .subscribe(&s.svc, &c, "n", &c, None)
            .await
            .unwrap_err(),
        PubsubError::Forbidden
    );
    // An owner may subscribe someone else.
    s.engine
        .subscribe(&s.svc, &b, "n", &c.to_bare().into(), None)
        .await
        .unwrap_err();
    s.affiliate(&a, "n", &[(c.to_bare(), Affiliation::None)])
        .await;
    s.engine
        .subscribe(&s.svc, &b, "n", &c.to_bare().into(), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn pep_auto_create_with_publish_options_and_owner_only() {
    let rec = Arc::new(Recorder::default());
    let engine = Engine::new(
        Profile::pep("example.org"),
        Arc::new(MemoryStore::new()),
        rec.clone(),
        Arc::new(FakeRoster::default()),
    );
    let alice = bare("alice@example.org");
    let a = jid(ALICE);
    let mut opts = Form::new("submit", ns::PUBLISH_OPTIONS);
    for (k, v) in [
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ] {
        opts.push(Field::new(k, "text-single", v));
    }
    let mut req = publish("urn:xmpp:bookmarks:1", Some("room@muc"), Some(entry("b")));
    req.options = Some(opts.clone());
    engine.publish(&alice, &a, req.clone()).await.unwrap();
    let c = engine
        .configuration(&alice, &a, Some("urn:xmpp:bookmarks:1"))
        .await
        .unwrap();
    assert_eq!(c.access_model, AccessModel::Whitelist);
    // Same options again: preconditions met; a second bookmark is kept (max_items=max).
    req.item_id = Some("other@muc".into());
    engine.publish(&alice, &a, req).await.unwrap();
    let items = engine
        .items(&alice, &a, "urn:xmpp:bookmarks:1", &ItemsQuery::default())
        .await
        .unwrap()
        .items;
    assert_eq!(items.len(), 2);
    // Nobody else publishes or reads.
    let b = jid(BOB);
    assert_eq!(
        engine
            .publish(
                &alice,
                &b,
                publish("urn:xmpp:bookmarks:1", None, Some(entry("x")))
            )
            .await
            .unwrap_err(),
        PubsubError::Forbidden
    );
    assert_eq!(
        engine
            .publish(&alice, &b, publish("fresh", None, Some(entry("x"))))
            .await
            .unwrap_err(),
        PubsubError::NodeNotFound
    );
    assert_eq!(
        engine
            .items(&alice, &b, "urn:xmpp:bookmarks:1", &ItemsQuery::default())
            .await
            .unwrap_err(),
        PubsubError::ClosedNode
    );
    // Default PEP nodes: presence access, one item, last item on presence.
    engine
        .publish(
            &alice,
            &a,
            publish("http://jabber.org/protocol/tune", None, Some(entry("t"))),
        )
        .await
        .unwrap();
    let c = engine
        .configuration(&alice, &a, Some("http://jabber.org/protocol/tune"))
        .await
        .unwrap();
    assert_eq!(c.access_model, AccessModel::Presence);
    assert_eq!(
        engine.create(&alice, &a, None, None).await,
        Err(PubsubError::InstantNotSupported)
    );
    assert_eq!(
        engine.create(&alice, &b, Some("x"), None).await,
        Err(PubsubError::Forbidden)
    );
    let last = engine
        .last_items_for(&alice, &a, &|n| n == "http://jabber.org/protocol/tune")
        .await;
    assert_eq!(last.len(), 1);
    // The bookmarks node (send_last never) is not in the list even if wanted.
    let last = engine.last_items_for(&alice, &a, &|_| true).await;
    assert_eq!(last.len(), 1);
}

#[tokio::test]
async fn state_survives_a_new_engine_on_the_same_store() {
    let store: Arc<dyn NodeStore> = Arc::new(MemoryStore::new());
    let s = setup_with(Profile::service("example.org"), store.clone());
    let (a, b) = (jid(ALICE), jid(BOB));
    s.create(&a, "n", &[]).await;
    s.engine.subscribe(&s.svc, &b, "n", &b, None).await.unwrap();
    s.publish(&a, publish("n", Some("i1"), Some(entry("x"))))
        .await;
    let s2 = setup_with(Profile::service("example.org"), store);
    let items = s2.items(&b, "n").await.unwrap();
    assert_eq!(items.len(), 1);
    s2.publish(&a, publish("n", Some("i2"), Some(entry("x"))))
        .await;
    assert_eq!(
        s2.rec.take()[0].recipients.len(),
        1,
        "subscription survived"
    );
    let items = s2.items(&b, "n").await.unwrap();
    assert_eq!(items[0].id, "i2", "sequence continues after reload");
}

#[tokio::test]
async fn deleting_a_service_removes_its_nodes() {
    let store: Arc<dyn NodeStore> = Arc::new(MemoryStore::new());
    let rec = Arc::new(Recorder::default());
    let engine = Engine::new(
        Profile::pep("example.org"),
        store.clone(),
        rec,
        Arc::new(FakeRoster::default()),
    );
    let alice = bare("alice@example.org");
    let a = jid(ALICE);
    engine
        .publish(&alice, &a, publish("urn:x", None, Some(entry("x"))))
        .await
        .unwrap();
    assert_eq!(engine.list_nodes(&alice, &a).await.unwrap().len(), 1);
    engine.delete_service(&alice).await;
    assert!(engine.list_nodes(&alice, &a).await.unwrap().is_empty());
    assert!(store
        .load(
            "alice@example.org",
            &rookery_pubsub::NodeConfig::pep_default()
        )
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn watchers_see_committed_changes_in_order_and_access_is_checked() {
    use rookery_pubsub::engine::NodeEvent;
    let s = setup();
    let a = jid(ALICE);
    s.create(&a, "open", &[]).await;
    s.create(&a, "closed", &[("pubsub#access_model", "whitelist")])
        .await;
    // Anonymous readers see open nodes only; a JID as over XMPP.
    assert_eq!(
        s.engine.watch(&s.svc, None, "closed").await.err(),
        Some(PubsubError::AuthenticationRequired)
    );
    assert_eq!(
        s.engine
            .watch(&s.svc, Some(&bare("carol@example.org")), "closed")
            .await
            .err(),
        Some(PubsubError::ClosedNode)
    );
    assert!(s
        .engine
        .watch(&s.svc, Some(&bare("alice@example.org")), "closed")
        .await
        .is_ok());
    assert_eq!(
        s.engine
            .items_as(&s.svc, None, "closed", &ItemsQuery::default())
            .await
            .err(),
        Some(PubsubError::AuthenticationRequired)
    );
    let mut rx = s.engine.watch(&s.svc, None, "open").await.unwrap();
    s.publish(&a, publish("open", Some("1"), Some(entry("one"))))
        .await;
    s.publish(&a, publish("open", Some("2"), Some(entry("two"))))
        .await;
    s.engine
        .retract(&s.svc, &a, Some("open"), Some("1"), None)
        .await
        .unwrap();
    s.engine.purge(&s.svc, &a, Some("open")).await.unwrap();
    s.engine
        .delete(&s.svc, &a, Some("open"), None)
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Ok(ev) = rx.recv().await {
        seen.push(match ev {
            NodeEvent::Item(i) => format!("item {} {}", i.item.id, i.item.seq),
            NodeEvent::Retract(id) => format!("retract {id}"),
            NodeEvent::Purge => "purge".into(),
            NodeEvent::Delete => "delete".into(),
        });
    }
    assert_eq!(
        seen,
        ["item 1 1", "item 2 2", "retract 1", "purge", "delete"]
    );
}

/// Two nodes of a cluster: two engines over one store. What one commits, the other learns
/// from the notes the first sends its peers (`peers::Change`), keeping its watchers.
#[tokio::test]
async fn an_engine_follows_what_a_peer_committed_to_the_shared_store() {
    use rookery_pubsub::engine::NodeEvent;
    use rookery_pubsub::peers::NodeChange;
    let store: Arc<dyn NodeStore> = Arc::new(MemoryStore::new());
    let one = setup_with(Profile::service("example.org"), store.clone());
    let two = setup_with(Profile::service("example.org"), store);
    let (a, b) = (jid(ALICE), jid(BOB));
    one.create(&a, "n", &[]).await;
    // The second node loads the node (and a watcher attaches) before the subscription.
    let mut rx = two
        .engine
        .watch(&two.svc, Some(&bare("alice@example.org")), "n")
        .await
        .unwrap();
    one.engine
        .subscribe(&one.svc, &b, "n", &b, None)
        .await
        .unwrap();
    two.publish(&a, publish("n", Some("i1"), Some(entry("x"))))
        .await;
    assert!(
        two.rec.take()[0].recipients.is_empty(),
        "not told yet: the copy in memory is stale"
    );
    two.engine
        .peer_changed(&two.svc, Some("n"), NodeChange::State)
        .await;
    two.publish(&a, publish("n", Some("i2"), Some(entry("x"))))
        .await;
    assert_eq!(two.rec.take()[0].recipients.len(), 1, "the subscription");
    // Items published on the second node: the first takes count and sequence as told.
    one.engine
        .peer_changed(
            &one.svc,
            Some("n"),
            NodeChange::Items {
                count: 2,
                next_seq: 3,
            },
        )
        .await;
    one.publish(&a, publish("n", Some("i3"), Some(entry("x"))))
        .await;
    let items = one.items(&b, "n").await.unwrap();
    assert_eq!(items[0].id, "i3", "the sequence continued after the peer's");
    // Deleted on the first node: the second's watcher is told.
    one.engine
        .delete(&one.svc, &a, Some("n"), None)
        .await
        .unwrap();
    two.engine
        .peer_changed(&two.svc, Some("n"), NodeChange::State)
        .await;
    let mut seen = Vec::new();
    while let Ok(ev) = rx.recv().await {
        seen.push(matches!(ev, NodeEvent::Delete));
    }
    assert_eq!(seen, [false, false, true], "i1 and i2, then the deletion");
    assert_eq!(
        two.items(&b, "n").await.err(),
        Some(PubsubError::NodeNotFound)
    );
    // A service this engine never loaded is left to its first use.
    let other = bare("other.example.org");
    two.engine
        .peer_changed(&other, None, NodeChange::State)
        .await;
}

#[tokio::test]
async fn pep_items_keep_the_accounts_byte_budget() {
    // Each small item counts for 1 KiB (rookery_store::pubsub::MIN_ITEM_BYTES): two fit.
    let profile = Profile {
        max_stored_bytes: Some(2500),
        ..Profile::pep("example.org")
    };
    let engine = Engine::new(
        profile,
        Arc::new(MemoryStore::new()),
        Arc::new(Recorder::default()),
        Arc::new(FakeRoster::default()),
    );
    let (alice, a) = (bare("alice@example.org"), jid(ALICE));
    for node in ["a", "b"] {
        engine
            .publish(&alice, &a, publish(node, Some("1"), Some(entry("x"))))
            .await
            .unwrap();
    }
    // A new node's item: refused, and no node is left behind.
    let over = engine
        .publish(&alice, &a, publish("c", None, Some(entry("x"))))
        .await;
    assert_eq!(over.unwrap_err(), PubsubError::ResourceConstraint);
    let nodes = engine.list_nodes(&alice, &a).await.unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    // A new item that max_items (1) trims the old one for grows nothing: it passes; a
    // larger one (1,532 bytes) does not.
    engine
        .publish(&alice, &a, publish("a", Some("2"), Some(entry("y"))))
        .await
        .unwrap();
    let large = entry(&"z".repeat(1500));
    let over = engine
        .publish(&alice, &a, publish("a", Some("3"), Some(large)))
        .await;
    assert_eq!(over.unwrap_err(), PubsubError::ResourceConstraint);
    // A retraction frees its bytes.
    engine
        .retract(&alice, &a, Some("b"), Some("1"), None)
        .await
        .unwrap();
    engine
        .publish(&alice, &a, publish("c", None, Some(entry("x"))))
        .await
        .unwrap();
}
