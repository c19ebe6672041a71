//! XEP-0115: Entity Capabilities — what each resource can do, learnt from the `<c/>` in its
//! presence, so PEP (XEP-0163) can tell who wants `node+notify`.
//!
//! - Each available resource's `node#ver` is kept in its session state.
//! - The features behind a `node#ver` are cached for the whole server. An unknown one is asked
//!   once with disco#info (XEP-0030) to the resource that announced it; the answer is checked
//!   against `ver` (§5: SHA-1 over the verification string of identities, features and
//!   extended forms) before it is cached, so one client cannot poison another's entry.
//!   Legacy `<c/>` without `hash` (§1.2) is cached under its `node#ver` as given.
//! - Other crates ask through [`Im::caps_of`], [`Im::wants_notify`] and
//!   [`Im::resources_wanting`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use dashmap::DashMap;
use rookery_core::{Core, Declaration, Module};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{ns, IqType, Stanza, StanzaKind};
use rookery_xml::Element;
use sha1::{Digest, Sha1};

use crate::state::Im;

/// How long to wait for a disco#info answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(20);
/// Most `node#ver` entries cached.
const MAX_ENTRIES: usize = 10_000;

/// What a `node#ver` stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapsInfo {
    /// The disco features.
    pub features: HashSet<String>,
}

/// The server-wide cache of `node#ver` → features.
#[derive(Debug, Default)]
pub struct CapsCache {
    known: DashMap<String, Arc<CapsInfo>>,
    asking: DashMap<String, ()>,
}

impl CapsCache {
    /// The features behind `key` (`node#ver`), if known.
    pub fn get(&self, key: &str) -> Option<Arc<CapsInfo>> {
        self.known.get(key).map(|e| e.value().clone())
    }

    /// Records `info` for `key`.
    pub fn insert(&self, key: &str, info: CapsInfo) {
        if self.known.len() >= MAX_ENTRIES {
            // Bounded: forget everything rather than grow without limit; entries are
            // re-learnt on the next presence that names them.
            self.known.clear();
        }
        self.known.insert(key.to_owned(), Arc::new(info));
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
    for form in query.children().filter(|c| c.is("x", ns::DATA_FORMS)) {
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

/// The `ver` a SHA-1 caps announcement must carry for `query`.
pub fn sha1_ver(query: &Element) -> String {
    let digest = Sha1::digest(verification_string(query).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// Records the caps in the available presence `stanza` of `from`, and asks for unknown ones.
pub fn observe(im: &Arc<Im>, core: &Arc<Core>, from: &Jid, stanza: &Stanza) {
    let Some(c) = stanza.element().get_child("c", ns::CAPS) else {
        im.session_mut(from, |s| s.caps = None);
        return;
    };
    let (Some(node), Some(ver)) = (c.attr("node"), c.attr("ver")) else {
        return;
    };
    let hash = c.attr("hash").map(str::to_owned);
    let key = format!("{node}#{ver}");
    im.session_mut(from, |s| s.caps = Some(Arc::from(key.as_str())));
    if im.caps.get(&key).is_some() || im.caps.asking.insert(key.clone(), ()).is_some() {
        return;
    }
    let im = im.clone();
    let core = core.clone();
    let from = from.clone();
    let ver = ver.to_owned();
    tokio::spawn(async move {
        let query = Element::new("query", ns::DISCO_INFO).with_attr("node", key.as_str());
        let answer = core
            .request(IqType::Get, from.clone(), query, QUERY_TIMEOUT)
            .await;
        if let Some(result) = answer.filter(|a| a.kind() == StanzaKind::Iq(IqType::Result)) {
            if let Some(q) = result.payload().filter(|q| q.is("query", ns::DISCO_INFO)) {
                let valid = match hash.as_deref() {
                    None => true,
                    Some("sha-1") => sha1_ver(q) == ver,
                    Some(_) => false, // other hashes are not verified: not cached
                };
                if valid {
                    let features = q
                        .children()
                        .filter(|c| c.is("feature", ns::DISCO_INFO))
                        .filter_map(|f| f.attr("var"))
                        .map(str::to_owned)
                        .collect();
                    im.caps.insert(&key, CapsInfo { features });
                } else {
                    tracing::debug!(%from, %key, "caps verification failed");
                }
            }
        }
        im.caps.asking.remove(&key);
    });
}

impl Im {
    /// The capabilities an available resource announced, once known.
    pub fn caps_of(&self, jid: &Jid) -> Option<Arc<CapsInfo>> {
        let key = self.session(jid, |s| s.caps.clone()).flatten()?;
        self.caps.get(&key)
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
    #![allow(clippy::unwrap_used)]
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
        assert_eq!(sha1_ver(&q), "QgayPKawpkPSDYmwT/WM94uAlu0=");
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
        assert_eq!(sha1_ver(&q), "q07IKJEyjvHSyhy//CH0CxmKi8w=");
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
