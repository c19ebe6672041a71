//! XEP-0115: Entity Capabilities — what each resource can do, learnt from the `<c/>` in its
//! presence, so PEP (XEP-0163) can tell who wants `node+notify`.
//!
//! - Each available local resource's `node#ver` is kept in its session state.
//! - Resources on other servers are tracked from the presence their servers send to local
//!   accounts that have them in the roster, online or not ([`observe_remote`]): `node#ver` per remote full
//!   JID while it is available, forgotten on `unavailable` (or a presence error). The map is
//!   bounded ([`RemoteCaps`]), since nothing guarantees that a remote server ever tells us a
//!   resource went away (a lost s2s stream loses the unavailable presence).
//! - The features behind an announcement are cached for the whole server, under a key that
//!   says how far they can be trusted ([`Announced::key`]). An unknown one is asked once with
//!   disco#info (XEP-0030) `node#ver` to the resource that announced it — over s2s for a
//!   remote one. With a hash we support (sha-1, sha-256, sha-512) the answer must be well
//!   formed and hash to `ver` (§5.4) before it is cached under the hash and `node#ver` — a
//!   `ver` so verified means the same features whoever announces it. A legacy `<c/>` without
//!   `hash` (§1.2) cannot be verified: it is cached under `node#ver` apart from the hashed
//!   ones, so a client answering falsely for a legacy key poisons only that legacy key, never
//!   what a hashing client announces. An unsupported hash is cached for the announcing JID
//!   only (§5.4 step 2).
//! - Once the capabilities of an available resource are known — at its presence if its
//!   `node#ver` is cached, else when the answer is — the core's
//!   [`Event::ResourceCaps`] tells the modules that subscribed (PEP sends last items then,
//!   XEP-0163 §4.3.2), so nobody waits or polls for them.
//! - Other crates ask through [`Im::caps_of`], [`Im::wants_notify`],
//!   [`Im::resources_wanting`] and [`Im::remote_resources_wanting`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use rookery_core::{Core, Declaration, Event, Module};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{ns, IqType, PresenceType, Stanza, StanzaKind};
use rookery_xml::Element;
use sha1::{Digest, Sha1};

use crate::state::Im;

/// How long to wait for a disco#info answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(20);
/// Most `node#ver` entries cached.
const MAX_ENTRIES: usize = 10_000;
/// Most features one cached answer may list. Real clients announce 30–100; the cache is
/// server-wide and kept for the life of the process, so an answer over this is not cached
/// (nor verified) — else one account could fill [`MAX_ENTRIES`] with huge answers.
const MAX_FEATURES: usize = 256;
/// Most bytes of feature names one cached answer may hold, for the same reason as
/// [`MAX_FEATURES`] (256 features of 64 bytes).
const MAX_FEATURE_BYTES: usize = 16 * 1024;
/// Most bytes of feature names the whole cache holds: a budget beside [`MAX_ENTRIES`], so
/// that answers within [`MAX_FEATURE_BYTES`] cannot add up to [`MAX_ENTRIES`] times that
/// (hundreds of MB) either. Real clients cache a few KiB per entry, and servers see a few
/// hundred distinct ones, far below it.
const MAX_CACHE_BYTES: usize = 16 * 1024 * 1024;
/// Longest `node` of a `<c/>` taken: a URI naming the client software (XEP-0115 §4).
const MAX_NODE_BYTES: usize = 1024;
/// Longest `ver` of a `<c/>` taken: a base64 hash, 88 characters for sha-512 (§5.1).
const MAX_VER_BYTES: usize = 128;
/// Most remote resources whose capabilities are remembered.
const MAX_REMOTE: usize = 50_000;
/// Most resources remembered per remote bare JID.
const MAX_REMOTE_PER_CONTACT: usize = 16;
/// Most disco#info queries in flight; more `node#ver` wait for a later presence, so a peer
/// announcing new ones in a flood cannot pile up pending requests.
const MAX_ASKING: usize = 256;
/// Most resources told when one `node#ver` answer comes; more are not told (as if their
/// capabilities stayed unknown).
const MAX_WAITING: usize = 4096;

/// What a `node#ver` stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapsInfo {
    /// The disco features.
    pub features: HashSet<String>,
}

impl CapsInfo {
    /// The bytes of its feature names, as [`MAX_CACHE_BYTES`] counts them.
    fn bytes(&self) -> usize {
        self.features.iter().map(String::len).sum()
    }
}

/// A resource waiting for a `node#ver` answer: its JID and, for a resource on another
/// server, the local account its presence reached ([`Event::ResourceCaps`]).
type Waiter = (Jid, Option<BareJid>);

/// The server-wide cache of `node#ver` → features.
#[derive(Debug, Default)]
pub struct CapsCache {
    known: DashMap<String, Arc<CapsInfo>>,
    /// The [`CapsInfo::bytes`] of `known`, together.
    bytes: AtomicUsize,
    /// The `node#ver` being asked, with the resources to tell when the answer comes.
    asking: DashMap<String, Vec<Waiter>>,
}

impl CapsCache {
    /// The features behind `key` (`node#ver`), if known.
    pub fn get(&self, key: &str) -> Option<Arc<CapsInfo>> {
        self.known.get(key).map(|e| e.value().clone())
    }

    /// Records `info` for `key`.
    pub fn insert(&self, key: &str, info: CapsInfo) {
        let size = info.bytes();
        let replaced = self.known.get(key).map_or(0, |e| e.value().bytes());
        // Bounded by count and bytes: entries make room one by one (each re-learnt on the
        // next presence that names it), so that a flood of new keys costs the others one
        // query each at most, not all at once.
        while self.known.len() >= MAX_ENTRIES
            || (self.bytes.load(Ordering::Relaxed) + size).saturating_sub(replaced)
                > MAX_CACHE_BYTES
        {
            let Some(victim) = self.known.iter().next().map(|e| e.key().clone()) else {
                break;
            };
            self.remove(&victim);
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        if let Some(old) = self.known.insert(key.to_owned(), Arc::new(info)) {
            self.bytes.fetch_sub(old.bytes(), Ordering::Relaxed);
        }
    }

    /// Forgets `key`.
    fn remove(&self, key: &str) {
        if let Some((_, old)) = self.known.remove(key) {
            self.bytes.fetch_sub(old.bytes(), Ordering::Relaxed);
        }
    }
}

/// The `node#ver` of available resources on other servers, by bare JID.
///
/// Bounded: at most [`MAX_REMOTE_PER_CONTACT`] resources per bare JID (more are ignored) and
/// [`MAX_REMOTE`] in all; past that the map is emptied, like [`CapsCache`], and refilled by
/// the next presence of each contact. Stale entries (a remote server that never sent the
/// unavailable presence) cost at most a notification the remote server drops.
#[derive(Debug, Default)]
pub struct RemoteCaps {
    by_bare: DashMap<BareJid, Vec<(Jid, Arc<str>)>>,
    count: AtomicUsize,
}

impl RemoteCaps {
    /// Remembers that the remote full JID `jid` is available with caps `key`.
    pub fn set(&self, jid: &Jid, key: Arc<str>) {
        if self.count.load(Ordering::Relaxed) >= MAX_REMOTE {
            tracing::warn!(
                limit = MAX_REMOTE,
                "too many remote resources with capabilities; forgetting them all"
            );
            self.by_bare.clear();
            self.count.store(0, Ordering::Relaxed);
        }
        let mut entry = self.by_bare.entry(jid.to_bare()).or_default();
        let list = entry.value_mut();
        if let Some(slot) = list.iter_mut().find(|(j, _)| j == jid) {
            slot.1 = key;
        } else if list.len() < MAX_REMOTE_PER_CONTACT {
            list.push((jid.clone(), key));
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets the remote full JID `jid`, or every resource of it if it is bare.
    pub fn forget(&self, jid: &Jid) {
        let bare = jid.to_bare();
        let removed = if jid.is_bare() {
            self.by_bare.remove(&bare).map_or(0, |(_, v)| v.len())
        } else {
            let mut removed = 0;
            self.by_bare.remove_if_mut(&bare, |_, list| {
                let before = list.len();
                list.retain(|(j, _)| j != jid);
                removed = before - list.len();
                list.is_empty()
            });
            removed
        };
        if removed > 0 {
            // Saturating: a concurrent clear may have reset the count already.
            let _ = self
                .count
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                    Some(c.saturating_sub(removed))
                });
        }
    }

    /// The caps key of the remote full JID `jid`, while it is available.
    pub fn key(&self, jid: &Jid) -> Option<Arc<str>> {
        let list = self.by_bare.get(&jid.to_bare())?;
        list.iter().find(|(j, _)| j == jid).map(|(_, k)| k.clone())
    }

    /// The available resources of the remote bare JID `bare` whose caps we were told.
    pub fn resources(&self, bare: &BareJid) -> Vec<(Jid, Arc<str>)> {
        self.by_bare
            .get(bare)
            .map(|l| l.value().clone())
            .unwrap_or_default()
    }

    /// Number of remote resources remembered.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The XEP-0115 §5.1 verification string of a disco#info `<query/>`.
pub fn verification_string(query: &Element) -> String {
    let mut identities: Vec<String> = query
        .children()
        .filter(|c| c.is("identity", ns::DISCO_INFO))
        .map(|i| {
            format!(
                "{}/{}/{}/{}<",
                i.attr("category").unwrap_or_default(),
                i.attr("type").unwrap_or_default(),
                i.attr("xml:lang").unwrap_or_default(),
                i.attr("name").unwrap_or_default()
            )
        })
        .collect();
    identities.sort();
    let mut features: Vec<&str> = query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.attr("var"))
        .collect();
    features.sort_unstable();
    let mut forms: Vec<(String, String)> = Vec::new();
    // A form whose FORM_TYPE is missing or not hidden is ignored (§5.4 step 3.6).
    for form in query
        .children()
        .filter(|c| c.is("x", ns::DATA_FORMS))
        .filter(|f| form_type_of(f).is_some())
    {
        let mut form_type = String::new();
        let mut fields: Vec<(String, Vec<String>)> = Vec::new();
        for field in form.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
            let var = field.attr("var").unwrap_or_default().to_owned();
            let mut values: Vec<String> = field
                .children()
                .filter(|v| v.is("value", ns::DATA_FORMS))
                .map(Element::text)
                .collect();
            if var == "FORM_TYPE" {
                form_type = values.first().cloned().unwrap_or_default();
                continue;
            }
            values.sort();
            fields.push((var, values));
        }
        fields.sort();
        let mut s = String::new();
        for (var, values) in fields {
            s.push_str(&var);
            s.push('<');
            for v in values {
                s.push_str(&v);
                s.push('<');
            }
        }
        forms.push((form_type, s));
    }
    forms.sort();
    let mut out = identities.concat();
    for f in features {
        out.push_str(f);
        out.push('<');
    }
    for (form_type, fields) in forms {
        out.push_str(&form_type);
        out.push('<');
        out.push_str(&fields);
    }
    out
}

/// The FORM_TYPE of an extended-information form, if it has a hidden one (XEP-0128).
fn form_type_of(form: &Element) -> Option<Vec<String>> {
    let field = form
        .children()
        .find(|f| f.is("field", ns::DATA_FORMS) && f.attr("var") == Some("FORM_TYPE"))?;
    (field.attr("type") == Some("hidden")).then(|| {
        field
            .children()
            .filter(|v| v.is("value", ns::DATA_FORMS))
            .map(Element::text)
            .collect()
    })
}

/// Whether a disco#info answer is well formed for verification (§5.4 steps 3.3–3.5): no
/// identity twice (category/type/lang/name), no feature twice, no two forms of one
/// FORM_TYPE, no FORM_TYPE with differing values.
fn well_formed(query: &Element) -> bool {
    let mut identities = HashSet::new();
    let mut features = HashSet::new();
    let mut form_types = HashSet::new();
    for c in query.children() {
        let fresh = if c.is("identity", ns::DISCO_INFO) {
            identities.insert([
                c.attr("category").unwrap_or_default(),
                c.attr("type").unwrap_or_default(),
                c.attr("xml:lang").unwrap_or_default(),
                c.attr("name").unwrap_or_default(),
            ])
        } else if c.is("feature", ns::DISCO_INFO) {
            features.insert(c.attr("var").unwrap_or_default())
        } else if c.is("x", ns::DATA_FORMS) {
            match form_type_of(c) {
                Some(values) if values.iter().any(|v| Some(v) != values.first()) => false,
                Some(values) => form_types.insert(values.into_iter().next().unwrap_or_default()),
                None => true,
            }
        } else {
            true
        };
        if !fresh {
            return false;
        }
    }
    true
}

/// The hashes of §5.1 that are verified here (IANA names, as in the `hash` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CapsHash {
    Sha1,
    Sha256,
    Sha512,
}

impl CapsHash {
    fn named(name: &str) -> Option<CapsHash> {
        Some(match name {
            "sha-1" => CapsHash::Sha1,
            "sha-256" => CapsHash::Sha256,
            "sha-512" => CapsHash::Sha512,
            _ => return None,
        })
    }

    /// The `ver` an announcement hashed this way must carry for `query`.
    fn ver(self, query: &Element) -> String {
        let s = verification_string(query);
        let digest = match self {
            CapsHash::Sha1 => Sha1::digest(s.as_bytes()).to_vec(),
            CapsHash::Sha256 => sha2::Sha256::digest(s.as_bytes()).to_vec(),
            CapsHash::Sha512 => sha2::Sha512::digest(s.as_bytes()).to_vec(),
        };
        base64::engine::general_purpose::STANDARD.encode(digest)
    }
}

/// A `<c/>` as the cache sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Announced {
    /// Where its features are cached, `kind node#ver[ from]`: the kind is the hash for a
    /// supported one (verified, valid for everyone), `legacy` without a hash (taken as
    /// answered); an unsupported hash adds the announcing JID (its own). See [`client_of`].
    key: String,
    /// The disco#info node to ask: `node#ver` (§6.2).
    node: String,
    /// The hash to check the answer with, for a supported one.
    check: Option<(CapsHash, String)>,
}

/// The `<c/>` of a presence from `from`; `None` without one, or when it lacks `node` or
/// `ver`, or when either is longer than any real one ([`MAX_NODE_BYTES`],
/// [`MAX_VER_BYTES`]): they make the cache key, which must stay small.
fn announced(from: &Jid, stanza: &Stanza) -> Option<Announced> {
    let c = stanza.element().get_child("c", ns::CAPS)?;
    let (node, ver) = (c.attr("node")?, c.attr("ver")?);
    if node.len() > MAX_NODE_BYTES || ver.len() > MAX_VER_BYTES {
        tracing::info!(%from, "caps node or ver too long; ignored");
        return None;
    }
    let node = format!("{node}#{ver}");
    let (key, check) = match c.attr("hash") {
        None => (format!("legacy {node}"), None),
        Some(h) => match CapsHash::named(h) {
            Some(hash) => (format!("{h} {node}"), Some((hash, ver.to_owned()))),
            None => (format!("{h} {node} {from}"), None),
        },
    };
    Some(Announced { key, node, check })
}

/// The client software a caps key names: the `node` of its `node#ver` (XEP-0115 §4: a URI
/// that identifies the software).
pub fn client_of(key: &str) -> &str {
    let node_ver = key.split(' ').nth(1).unwrap_or_default();
    node_ver.rsplit_once('#').map_or(node_ver, |(node, _)| node)
}

/// Records the caps in the available presence `stanza` of the local resource `from`, and
/// asks for unknown ones; [`Event::ResourceCaps`] once they are known.
pub async fn observe(im: &Arc<Im>, core: &Arc<Core>, from: &Jid, stanza: &Stanza) {
    if stanza.element().get_child("c", ns::CAPS).is_none() {
        im.session_mut(from, |s| s.caps = None);
        return;
    }
    // A `<c/>` without `node` or `ver` changes nothing.
    let Some(announced) = announced(from, stanza) else {
        return;
    };
    im.session_mut(from, |s| s.caps = Some(Arc::from(announced.key.as_str())));
    learn(im, core, (from.clone(), None), announced, true).await;
}

/// Records the caps in presence that the resource of another server `stanza.from()` sent to
/// the local account `owner`: kept while it is available, if `owner` has it in the roster
/// (strangers' directed presence is not tracked), whether or not `owner` is online — PEP
/// does not tie notifications to the publisher's presence (XEP-0163 §3): a contact coming
/// online while the owner is away is owed the owner's last items all the same (§4.3.2), a
/// new OMEMO device list above all; forgotten on `unavailable` or an error, whoever
/// receives it. [`Event::ResourceCaps`] (for `owner`) once the capabilities of a tracked
/// resource are known — also when this presence was not the one that got it tracked
/// (`owner` without it in the roster).
///
/// Only presence addressed to the bare JID comes here, which is how servers send broadcasts
/// and probe answers (RFC 6121 §4.2.2, §4.3.2; our probes come from the bare JID).
pub async fn observe_remote(im: &Arc<Im>, core: &Arc<Core>, owner: &BareJid, stanza: &Stanza) {
    let Some(from) = stanza.from() else { return };
    match stanza.kind() {
        StanzaKind::Presence(PresenceType::Available) if from.is_full() => {}
        StanzaKind::Presence(PresenceType::Unavailable | PresenceType::Error) => {
            return im.remote_caps.forget(from);
        }
        _ => return,
    }
    let Some(announced) = announced(from, stanza) else {
        return im.remote_caps.forget(from);
    };
    let track = match im.roster_item(owner, &from.to_bare()).await {
        Ok(item) => item.is_some(),
        Err(e) => {
            tracing::error!(error = %e, "roster lookup for remote caps failed");
            false
        }
    };
    if track {
        im.remote_caps.set(from, Arc::from(announced.key.as_str()));
    }
    let waiter = (from.clone(), Some(owner.clone()));
    learn(im, core, waiter, announced, track).await;
}

/// The features a disco#info answer lists, or `None` when they are more than the cache
/// keeps for one entry ([`MAX_FEATURES`], [`MAX_FEATURE_BYTES`]).
fn features_of(query: &Element) -> Option<HashSet<String>> {
    let mut features = HashSet::new();
    let mut bytes = 0;
    let vars = query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.attr("var"));
    for var in vars {
        bytes += var.len();
        if features.len() >= MAX_FEATURES || bytes > MAX_FEATURE_BYTES {
            return None;
        }
        features.insert(var.to_owned());
    }
    Some(features)
}

/// Tells the subscribers of [`Event::ResourceCaps`] that the capabilities of the waiter's
/// resource are known, if `announced` is cached; else has it told when the answer comes,
/// asking the resource what it stands for if nobody is asking yet and `ask`. The answer is
/// cached once verified.
async fn learn(im: &Arc<Im>, core: &Arc<Core>, waiter: Waiter, announced: Announced, ask: bool) {
    let Announced { key, node, check } = announced;
    if im.caps.get(&key).is_some() {
        return tell(im, core, &key, waiter).await;
    }
    let full = im.caps.asking.len() >= MAX_ASKING;
    let from = waiter.0.clone();
    // Asked as the host of the account concerned (virtual hosting).
    let host = core.host_of(waiter.1.as_ref().unwrap_or(&from.to_bare()));
    match im.caps.asking.entry(key.clone()) {
        Entry::Occupied(mut waiting) => {
            if waiting.get().len() < MAX_WAITING {
                waiting.get_mut().push(waiter);
            }
            return;
        }
        Entry::Vacant(e) if ask && !full => {
            e.insert(vec![waiter]);
        }
        Entry::Vacant(_) => return,
    }
    let im = im.clone();
    let core = core.clone();
    tokio::spawn(async move {
        let query = Element::new("query", ns::DISCO_INFO).with_attr("node", node.as_str());
        let answer = core
            .request(IqType::Get, host, from.clone(), query, QUERY_TIMEOUT)
            .await;
        if let Some(result) = answer.filter(|a| a.kind() == StanzaKind::Iq(IqType::Result)) {
            if let Some(q) = result.payload().filter(|q| q.is("query", ns::DISCO_INFO)) {
                match features_of(q) {
                    None => tracing::info!(
                        %from,
                        %key,
                        max_features = MAX_FEATURES,
                        max_bytes = MAX_FEATURE_BYTES,
                        "caps answer too big; not cached"
                    ),
                    Some(features) => {
                        let valid = match &check {
                            None => true,
                            Some((hash, ver)) => well_formed(q) && hash.ver(q) == *ver,
                        };
                        if valid {
                            im.caps.insert(&key, CapsInfo { features });
                        } else {
                            tracing::debug!(%from, %key, "caps verification failed");
                        }
                    }
                }
            }
        } else {
            tracing::debug!(%from, %key, "no disco#info answer for caps");
        }
        let waiting = im.caps.asking.remove(&key).map(|(_, w)| w);
        if im.caps.get(&key).is_some() {
            for waiter in waiting.into_iter().flatten() {
                tell(&im, &core, &key, waiter).await;
            }
        }
    });
}

/// [`Event::ResourceCaps`] for the waiter, if its resource still announces `key` (it may
/// have gone, or changed capabilities, while the answer was awaited).
async fn tell(im: &Im, core: &Arc<Core>, key: &str, (resource, to): Waiter) {
    if im.caps_key(&resource).as_deref() == Some(key) {
        core.emit(&Event::ResourceCaps { resource, to }).await;
    }
}

impl Im {
    /// The `node#ver` an available resource (local, or remote as seen in its presence)
    /// announced.
    pub fn caps_key(&self, jid: &Jid) -> Option<Arc<str>> {
        match self.session(jid, |s| s.caps.clone()) {
            Some(key) => key,
            None => self.remote_caps.key(jid),
        }
    }

    /// The capabilities an available resource announced, once known.
    pub fn caps_of(&self, jid: &Jid) -> Option<Arc<CapsInfo>> {
        self.caps.get(&self.caps_key(jid)?)
    }

    /// Whether the resource `jid` announced interest in notifications for PEP `node`
    /// (`node+notify` among its features, XEP-0163 §4).
    pub fn wants_notify(&self, jid: &Jid, node: &str) -> bool {
        self.caps_of(jid).is_some_and(|c| {
            c.features
                .iter()
                .any(|f| f.strip_suffix("+notify") == Some(node))
        })
    }

    /// The available resources of `bare` that want notifications for `node`.
    pub fn resources_wanting(&self, core: &Core, bare: &BareJid, node: &str) -> Vec<Jid> {
        self.available_handles(core, bare)
            .into_iter()
            .map(|h| h.jid().clone())
            .filter(|j| self.wants_notify(j, node))
            .collect()
    }

    /// The resources of the remote contact `bare` that are available (as far as their
    /// presence told us) and want notifications for `node`.
    pub fn remote_resources_wanting(&self, bare: &BareJid, node: &str) -> Vec<Jid> {
        self.remote_caps
            .resources(bare)
            .into_iter()
            .map(|(j, _)| j)
            .filter(|j| self.wants_notify(j, node))
            .collect()
    }
}

/// The caps module: advertises the feature; the work happens on presence (see [`observe`]).
pub struct CapsModule {
    im: Arc<Im>,
}

impl CapsModule {
    /// A caps module on the shared state.
    pub fn new(im: Arc<Im>) -> Self {
        CapsModule { im }
    }
}

#[async_trait]
impl Module for CapsModule {
    fn name(&self) -> &'static str {
        "caps"
    }

    fn declare(&self) -> Declaration {
        let _ = &self.im;
        Declaration {
            server_features: vec![ns::CAPS],
            ..Declaration::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::util::parse_element;

    #[test]
    fn xep_0115_simple_example() {
        // XEP-0115 §5.2.
        let q = parse_element(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='client' name='Exodus 0.9.1' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/></query>",
        )
        .unwrap();
        assert_eq!(CapsHash::Sha1.ver(&q), "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }

    /// The cache holds at most [`MAX_CACHE_BYTES`] of feature names, making room one
    /// entry at a time, and counts a replaced entry once.
    #[test]
    fn the_cache_is_bounded_in_bytes() {
        let cache = CapsCache::default();
        let info = |i: usize| CapsInfo {
            features: (0..16)
                .map(|j| format!("{i}:{j}:{}", "x".repeat(1000)))
                .collect(),
        };
        let per_entry = info(0).bytes();
        let fit = MAX_CACHE_BYTES / per_entry;
        for i in 0..fit + 10 {
            cache.insert(&format!("k{i}"), info(i));
            assert!(cache.bytes.load(Ordering::Relaxed) <= MAX_CACHE_BYTES);
        }
        assert!(cache.known.len() <= fit);
        assert!(cache.get(&format!("k{}", fit + 9)).is_some());
        let before = cache.bytes.load(Ordering::Relaxed);
        cache.insert(&format!("k{}", fit + 9), info(fit + 9));
        assert_eq!(cache.bytes.load(Ordering::Relaxed), before);
    }

    /// An answer is kept up to [`MAX_FEATURES`] features and [`MAX_FEATURE_BYTES`] bytes of
    /// names, and refused whole beyond either.
    #[test]
    fn features_of_refuses_an_answer_over_the_bounds() {
        let query = |n: usize, len: usize| {
            let mut q = Element::new("query", ns::DISCO_INFO);
            for i in 0..n {
                let var = format!("{i:0len$}");
                q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", var));
            }
            q
        };
        assert_eq!(
            features_of(&query(MAX_FEATURES, 8)).unwrap().len(),
            MAX_FEATURES
        );
        assert!(features_of(&query(MAX_FEATURES + 1, 8)).is_none());
        assert!(features_of(&query(MAX_FEATURES, 64)).is_some());
        assert!(features_of(&query(MAX_FEATURES / 2, 129)).is_none());
    }

    #[test]
    fn xep_0115_complex_example() {
        // XEP-0115 §5.3.
        let q = parse_element(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
             <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/>\
             <x xmlns='jabber:x:data' type='result'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
             <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>\
             <field var='os'><value>Mac</value></field>\
             <field var='os_version'><value>10.5.1</value></field>\
             <field var='software'><value>Psi</value></field>\
             <field var='software_version'><value>0.11</value></field>\
             </x></query>",
        )
        .unwrap();
        assert_eq!(CapsHash::Sha1.ver(&q), "q07IKJEyjvHSyhy//CH0CxmKi8w=");
        assert!(well_formed(&q));
    }

    #[test]
    fn ill_formed_answers_and_ignored_forms() {
        // §5.4 steps 3.3–3.5: the same identity, feature or FORM_TYPE twice.
        for dup in [
            "<identity category='client' type='pc'/><identity category='client' type='pc'/>",
            "<feature var='urn:a'/><feature var='urn:a'/>",
            "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>\
             <value>urn:f</value></field></x><x xmlns='jabber:x:data' type='result'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:f</value></field></x>",
            "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>\
             <value>urn:f</value><value>urn:g</value></field></x>",
        ] {
            let q = parse_element(&format!(
                "<query xmlns='http://jabber.org/protocol/disco#info'>{dup}</query>"
            ))
            .unwrap();
            assert!(!well_formed(&q), "{dup}");
        }
        // Step 3.6: a form without a hidden FORM_TYPE is left out of the string.
        let plain = "<identity category='client' type='pc'/><feature var='urn:a'/>";
        let with_form = format!(
            "{plain}<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'>\
             <value>urn:f</value></field><field var='x'><value>1</value></field></x>"
        );
        let q = |body: &str| {
            parse_element(&format!(
                "<query xmlns='http://jabber.org/protocol/disco#info'>{body}</query>"
            ))
            .unwrap()
        };
        assert!(well_formed(&q(&with_form)));
        assert_eq!(
            verification_string(&q(&with_form)),
            verification_string(&q(plain))
        );
    }

    #[test]
    fn announcements_are_keyed_by_how_far_they_can_be_trusted() {
        let from = Jid::parse("a@localhost/r").unwrap();
        let c = |attrs: &str| {
            let p = crate::util::parse_element(&format!(
                "<presence xmlns='jabber:client'><c xmlns='http://jabber.org/protocol/caps' \
                 node='http://client.example' ver='V' {attrs}/></presence>"
            ))
            .unwrap();
            announced(&from, &Stanza::from_element(p).unwrap()).unwrap()
        };
        let hashed = c("hash='sha-1'");
        assert_eq!(hashed.key, "sha-1 http://client.example#V");
        assert_eq!(client_of(&hashed.key), "http://client.example");
        assert_eq!(hashed.node, "http://client.example#V");
        assert_eq!(hashed.check.unwrap().0, CapsHash::Sha1);
        // A legacy announcement never shares a key with a hashed one.
        let legacy = c("");
        assert_eq!(legacy.key, "legacy http://client.example#V");
        assert!(legacy.check.is_none());
        // An unsupported hash: the announcing JID's own.
        let other = c("hash='md5'");
        assert_eq!(other.key, "md5 http://client.example#V a@localhost/r");
        assert_eq!(client_of(&other.key), "http://client.example");
        assert!(other.check.is_none());
        assert_eq!(c("hash='sha-256'").check.unwrap().0, CapsHash::Sha256);
    }

    #[test]
    fn remote_caps_follow_presence_and_stay_bounded() {
        let r = RemoteCaps::default();
        let a1 = Jid::parse("a@remote.example/1").unwrap();
        let a2 = Jid::parse("a@remote.example/2").unwrap();
        r.set(&a1, Arc::from("n#v1"));
        r.set(&a2, Arc::from("n#v2"));
        r.set(&a1, Arc::from("n#v3"));
        assert_eq!(r.len(), 2);
        assert_eq!(r.key(&a1).as_deref(), Some("n#v3"));
        r.forget(&a1);
        assert_eq!(r.key(&a1), None);
        assert_eq!(r.resources(&a1.to_bare()).len(), 1);
        // A bare JID (presence error) forgets every resource.
        r.forget(&Jid::parse("a@remote.example").unwrap());
        assert!(r.is_empty());
        assert!(r.resources(&a1.to_bare()).is_empty());
        // Per contact and in all.
        for i in 0..(MAX_REMOTE_PER_CONTACT + 3) {
            r.set(
                &Jid::parse(&format!("b@remote.example/{i}")).unwrap(),
                Arc::from("k"),
            );
        }
        assert_eq!(r.len(), MAX_REMOTE_PER_CONTACT);
        for i in 0..(MAX_REMOTE + 3) {
            r.set(
                &Jid::parse(&format!("c{i}@remote.example/r")).unwrap(),
                Arc::from("k"),
            );
        }
        assert!(r.len() <= MAX_REMOTE);
    }

    /// Records the resources of the `ResourceCaps` events it is told.
    #[derive(Default)]
    struct Told(std::sync::Mutex<Vec<String>>);

    #[async_trait]
    impl Module for Told {
        fn name(&self) -> &'static str {
            "told"
        }
        fn declare(&self) -> Declaration {
            Declaration {
                events: vec![(
                    rookery_core::EventKind::ResourceCaps,
                    rookery_core::priority::DEFAULT,
                )],
                ..Declaration::default()
            }
        }
        async fn event(&self, _: &Arc<Core>, event: &Event) {
            if let Event::ResourceCaps { resource, .. } = event {
                self.0.lock().unwrap().push(resource.to_string());
            }
        }
    }

    impl Told {
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    #[tokio::test]
    async fn resource_caps_event_when_known_for_every_resource_that_waited() {
        let store = rookery_store::Store::open("sqlite::memory:").await.unwrap();
        let im = Arc::new(Im::new(crate::ImConfig::default(), store));
        let told = Arc::new(Told::default());
        let core = rookery_core::CoreBuilder::new(
            rookery_core::CoreConfig::default(),
            Arc::new(rookery_core::MemoryAccounts::new()),
        )
        .module(told.clone())
        .build()
        .unwrap();
        let mut ends = Vec::new();
        let mut bind = |name: &str| {
            let jid = Jid::parse(name).unwrap();
            let (h, end) = rookery_core::SessionHandle::new(core.next_session_id(), jid.clone(), 8);
            ends.push(end);
            im.session_bound(&jid);
            (jid, h)
        };
        let (r1, h1) = bind("a@localhost/1");
        let (r2, h2) = bind("b@localhost/2");
        let (r3, h3) = bind("c@localhost/3");
        for h in [h1, h2, h3] {
            core.bind(h).await;
        }
        // Legacy caps (no hash, XEP-0115 §1.2): cached as answered.
        let presence = crate::util::parse_stanza(
            "<presence><c xmlns='http://jabber.org/protocol/caps' node='x' ver='v'/></presence>",
        )
        .unwrap();
        observe(&im, &core, &r1, &presence).await;
        observe(&im, &core, &r2, &presence).await;
        // Not known yet: nobody told; r1 (the first to announce it) is asked.
        assert!(told.take().is_empty());
        let ask = loop {
            if let Ok(rookery_core::Outbound::Bytes(b)) = ends[0].rx.try_recv() {
                break String::from_utf8_lossy(&b).into_owned();
            }
            tokio::task::yield_now().await;
        };
        assert!(ask.contains("disco#info") && ask.contains("x#v"), "{ask}");
        let id = ask
            .split("id=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        core.route(
            crate::util::parse_stanza(&format!(
                "<iq from='a@localhost/1' to='localhost' type='result' id='{id}'>\
                 <query xmlns='http://jabber.org/protocol/disco#info' node='x#v'>\
                 <feature var='n+notify'/></query></iq>"
            ))
            .unwrap(),
        )
        .await;
        // The answer tells every resource that waited for it.
        let mut waited = Vec::new();
        for _ in 0..1000 {
            waited.extend(told.take());
            if waited.len() >= 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(waited, [r1.to_string(), r2.to_string()]);
        assert!(im.wants_notify(&r2, "n"));
        // Known now: the next resource is told at its presence.
        observe(&im, &core, &r3, &presence).await;
        assert_eq!(told.take(), [r3.to_string()]);
        // No caps, no event.
        let plain = crate::util::parse_stanza("<presence/>").unwrap();
        observe(&im, &core, &r3, &plain).await;
        assert!(told.take().is_empty());
    }

    #[test]
    fn cache_is_bounded() {
        let c = CapsCache::default();
        for i in 0..(MAX_ENTRIES + 5) {
            c.insert(&format!("n#{i}"), CapsInfo::default());
        }
        assert!(c.known.len() <= MAX_ENTRIES);
    }
}
