//! The tables built once from the modules' declarations (design.md "Extensions are
//! modules"): who answers which IQ payload, which modules a hook point runs and an event
//! reaches, in priority order, and the disco identities and features (XEP-0030 §3) and stream
//! features the server advertises.

use std::collections::HashMap;
use std::sync::Arc;

use rookery_xml::Element;

use crate::event::EventKind;
use crate::module::{HookPoint, Identity, IqTarget, Module};

/// The modules and what they declared.
pub struct Tables {
    modules: Vec<Arc<dyn Module>>,
    iq_routes: HashMap<(IqTarget, &'static str, &'static str), usize>,
    hooks: HashMap<HookPoint, Vec<usize>>,
    events: HashMap<EventKind, Vec<usize>>,
    settlers: Vec<usize>,
    identities: Vec<Identity>,
    server_features: Vec<&'static str>,
    server_info: Vec<Element>,
    account_features: Vec<&'static str>,
    account_identities: Vec<Identity>,
    stream_features: Vec<Element>,
}

impl Tables {
    /// Builds the tables from `modules`: at each hook point and for each event kind, higher
    /// priorities first, equal ones in module order.
    pub fn new(modules: Vec<Arc<dyn Module>>) -> Tables {
        let mut iq_routes = HashMap::new();
        let mut hooks = Ranked::default();
        let mut events = Ranked::default();
        let mut identities = vec![Identity {
            category: "server",
            kind: "im",
            name: Some("Rookery".into()),
        }];
        let mut server_features = Vec::new();
        let mut server_info = Vec::new();
        let mut account_features = Vec::new();
        let mut account_identities = Vec::new();
        let mut stream_features = Vec::new();
        let mut settlers = Vec::new();
        for (i, m) in modules.iter().enumerate() {
            let d = m.declare();
            for (target, ns, name) in d.iqs {
                if iq_routes.insert((target, ns, name), i).is_some() {
                    tracing::warn!(module = m.name(), ns, name, "IQ handler registered twice");
                }
            }
            for (point, priority) in d.hooks {
                hooks.add(point, priority, i);
            }
            for (kind, priority) in d.events {
                events.add(kind, priority, i);
            }
            identities.extend(d.server_identities);
            server_features.extend(d.server_features);
            server_info.extend(d.server_info);
            account_features.extend(d.account_features);
            account_identities.extend(d.account_identities);
            stream_features.extend(d.stream_features);
            if d.settles {
                settlers.push(i);
            }
        }
        server_features.sort_unstable();
        server_features.dedup();
        account_features.sort_unstable();
        account_features.dedup();
        Tables {
            modules,
            iq_routes,
            hooks: hooks.into_order(),
            events: events.into_order(),
            settlers,
            identities,
            server_features,
            server_info,
            account_features,
            account_identities,
            stream_features,
        }
    }

    /// The modules, in the order they were added.
    pub fn modules(&self) -> &[Arc<dyn Module>] {
        &self.modules
    }

    /// The module answering IQ payload `{ns}name` for `target`.
    pub fn iq_handler(&self, target: IqTarget, ns: &str, name: &str) -> Option<&Arc<dyn Module>> {
        // The map is covariant in its key, so it can be searched with borrowed strings.
        let routes: &HashMap<(IqTarget, &str, &str), usize> = &self.iq_routes;
        let &i = routes.get(&(target, ns, name))?;
        self.modules.get(i)
    }

    /// The modules hooked at `point`, in order.
    pub fn hooked(&self, point: HookPoint) -> impl Iterator<Item = &Arc<dyn Module>> {
        self.indexed(self.hooks.get(&point).map_or(&[][..], Vec::as_slice))
    }

    /// The modules subscribed to events of `kind`, in order.
    pub fn subscribers(&self, kind: EventKind) -> impl Iterator<Item = &Arc<dyn Module>> {
        self.indexed(self.events.get(&kind).map_or(&[][..], Vec::as_slice))
    }

    /// The modules that declared [`crate::Declaration::settles`], in module order.
    pub fn settlers(&self) -> impl Iterator<Item = &Arc<dyn Module>> {
        self.indexed(&self.settlers)
    }

    fn indexed<'a>(&'a self, list: &'a [usize]) -> impl Iterator<Item = &'a Arc<dyn Module>> {
        list.iter().filter_map(|&i| self.modules.get(i))
    }

    /// Server disco identities.
    pub fn identities(&self) -> &[Identity] {
        &self.identities
    }

    /// Server disco features, sorted and without duplicates.
    pub fn server_features(&self) -> &[&'static str] {
        &self.server_features
    }

    /// Server disco#info extension forms (XEP-0128), in module order.
    pub fn server_info(&self) -> &[Element] {
        &self.server_info
    }

    /// Account disco features, sorted and without duplicates.
    pub fn account_features(&self) -> &[&'static str] {
        &self.account_features
    }

    /// Account disco identities other than `account/registered`.
    pub fn account_identities(&self) -> &[Identity] {
        &self.account_identities
    }

    /// Stream features offered after authentication.
    pub fn stream_features(&self) -> &[Element] {
        &self.stream_features
    }
}

/// Modules by key (hook point or event kind), with their priorities, as declared.
struct Ranked<K>(HashMap<K, Vec<(i32, usize)>>);

impl<K> Default for Ranked<K> {
    fn default() -> Self {
        Ranked(HashMap::new())
    }
}

impl<K: std::hash::Hash + Eq> Ranked<K> {
    fn add(&mut self, key: K, priority: i32, module: usize) {
        self.0.entry(key).or_default().push((priority, module));
    }

    /// Module indexes per key, higher priorities first; the sort is stable, so equal
    /// priorities keep module order.
    fn into_order(self) -> HashMap<K, Vec<usize>> {
        self.0
            .into_iter()
            .map(|(k, mut v)| {
                v.sort_by_key(|&(p, _)| std::cmp::Reverse(p));
                (k, v.into_iter().map(|(_, i)| i).collect())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;
    use crate::module::{priority, Declaration};
    use async_trait::async_trait;

    struct M(&'static str, fn() -> Declaration);

    #[async_trait]
    impl Module for M {
        fn name(&self) -> &'static str {
            self.0
        }
        fn declare(&self) -> Declaration {
            (self.1)()
        }
    }

    #[test]
    fn tables_follow_the_declarations_in_module_order() {
        let a = M("a", || Declaration {
            iqs: vec![(IqTarget::Server, "urn:a", "query")],
            hooks: vec![(HookPoint::MessageToBare, priority::DEFAULT)],
            server_features: vec!["urn:b", "urn:a"],
            ..Declaration::default()
        });
        let b = M("b", || Declaration {
            iqs: vec![(IqTarget::Account, "urn:a", "query")],
            hooks: vec![
                (HookPoint::MessageToBare, priority::DEFAULT),
                (HookPoint::ToLocalAccount, priority::DEFAULT),
            ],
            server_features: vec!["urn:a"],
            events: vec![(EventKind::Session, priority::DEFAULT)],
            ..Declaration::default()
        });
        let t = Tables::new(vec![Arc::new(a), Arc::new(b)]);
        let name = |m: Option<&Arc<dyn Module>>| m.map(|m| m.name());
        assert_eq!(
            name(t.iq_handler(IqTarget::Server, "urn:a", "query")),
            Some("a")
        );
        assert_eq!(
            name(t.iq_handler(IqTarget::Account, "urn:a", "query")),
            Some("b")
        );
        assert_eq!(name(t.iq_handler(IqTarget::Server, "urn:a", "other")), None);
        let hooked: Vec<_> = t
            .hooked(HookPoint::MessageToBare)
            .map(|m| m.name())
            .collect();
        assert_eq!(hooked, ["a", "b"]);
        assert_eq!(t.hooked(HookPoint::IqFromLocal).count(), 0);
        assert_eq!(t.server_features(), ["urn:a", "urn:b"]);
        assert_eq!(
            t.subscribers(EventKind::Session)
                .map(|m| m.name())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(t.identities()[0].category, "server");
    }

    #[test]
    fn higher_priorities_run_first_and_ties_keep_module_order() {
        let low = M("low", || Declaration {
            hooks: vec![(HookPoint::PresenceBroadcast, priority::DEFAULT)],
            events: vec![(EventKind::AccountDeleted, -10)],
            ..Declaration::default()
        });
        let tie = M("tie", || Declaration {
            hooks: vec![(HookPoint::PresenceBroadcast, priority::DEFAULT)],
            events: vec![(EventKind::AccountDeleted, priority::DEFAULT)],
            ..Declaration::default()
        });
        let high = M("high", || Declaration {
            hooks: vec![(HookPoint::PresenceBroadcast, priority::OBSERVE)],
            events: vec![(EventKind::AccountDeleted, priority::POLICY)],
            ..Declaration::default()
        });
        let t = Tables::new(vec![Arc::new(low), Arc::new(tie), Arc::new(high)]);
        let hooked: Vec<_> = t
            .hooked(HookPoint::PresenceBroadcast)
            .map(|m| m.name())
            .collect();
        assert_eq!(hooked, ["high", "low", "tie"]);
        let subscribed: Vec<_> = t
            .subscribers(EventKind::AccountDeleted)
            .map(|m| m.name())
            .collect();
        assert_eq!(subscribed, ["high", "tie", "low"]);
        assert_eq!(t.subscribers(EventKind::Session).count(), 0);
    }
}
