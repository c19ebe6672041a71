//! Node configuration (XEP-0060 §8.2, FORM_TYPE `pubsub#node_config`, field registry §16.4.4)
//! and the service profiles that give each kind of service its defaults and policies.
//!
//! A configuration travels as a XEP-0004 form everywhere: the owner's configure form, the
//! `<create/>` and publish-options forms, the stored copy (a submitted form) and the
//! meta-data of disco#info. [`NodeConfig::apply`] reads every one of them, so there is one
//! parser and one set of rules.

use rookery_jid::BareJid;

use crate::form::{parse_bool, Field, Form};
use crate::ns;

/// Who may subscribe and retrieve items (§4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessModel {
    /// Anyone.
    Open,
    /// Entities subscribed to the owner's presence (RFC 6121 `from` or `both`).
    Presence,
    /// Contacts in the owner's roster groups listed in `roster_groups_allowed`.
    Roster,
    /// Affiliated entities only (member, publisher, owner).
    Whitelist,
    /// Anyone may ask; the owner approves each subscription.
    Authorize,
}

impl AccessModel {
    /// The form value.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Roster => "roster",
            AccessModel::Whitelist => "whitelist",
            AccessModel::Authorize => "authorize",
        }
    }

    /// Parses a form value.
    pub fn parse(s: &str) -> Option<AccessModel> {
        Some(match s.trim() {
            "open" => AccessModel::Open,
            "presence" => AccessModel::Presence,
            "roster" => AccessModel::Roster,
            "whitelist" => AccessModel::Whitelist,
            "authorize" => AccessModel::Authorize,
            _ => return None,
        })
    }
}

/// Who may publish (§16.4.4 `pubsub#publish_model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublishModel {
    /// Owners, publishers and publish-only affiliates.
    Publishers,
    /// The above and subscribers.
    Subscribers,
    /// Anyone (except outcasts).
    Open,
}

impl PublishModel {
    /// The form value.
    pub fn as_str(self) -> &'static str {
        match self {
            PublishModel::Publishers => "publishers",
            PublishModel::Subscribers => "subscribers",
            PublishModel::Open => "open",
        }
    }

    /// Parses a form value.
    pub fn parse(s: &str) -> Option<PublishModel> {
        Some(match s.trim() {
            "publishers" => PublishModel::Publishers,
            "subscribers" => PublishModel::Subscribers,
            "open" => PublishModel::Open,
            _ => return None,
        })
    }
}

/// When the last published item is sent (§16.4.4 `pubsub#send_last_published_item`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendLast {
    /// Never.
    Never,
    /// When an entity subscribes.
    OnSub,
    /// When an entity subscribes and when a subscriber (or, for PEP, an interested contact)
    /// becomes available.
    OnSubAndPresence,
}

impl SendLast {
    /// The form value.
    pub fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }

    /// Parses a form value.
    pub fn parse(s: &str) -> Option<SendLast> {
        Some(match s.trim() {
            "never" => SendLast::Never,
            "on_sub" => SendLast::OnSub,
            "on_sub_and_presence" => SendLast::OnSubAndPresence,
            _ => return None,
        })
    }
}

/// The `type` of notification messages (§16.4.4 `pubsub#notification_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationType {
    /// `headline`: never stored offline (the default).
    Headline,
    /// `normal`: may be stored offline.
    Normal,
}

impl NotificationType {
    /// The form (and message `type`) value.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationType::Headline => "headline",
            NotificationType::Normal => "normal",
        }
    }

    /// Parses a form value.
    pub fn parse(s: &str) -> Option<NotificationType> {
        Some(match s.trim() {
            "headline" => NotificationType::Headline,
            "normal" => NotificationType::Normal,
            _ => return None,
        })
    }
}

/// `pubsub#max_items`: a number, or `max` (the service's limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaxItems {
    /// At most this many.
    Count(u64),
    /// As many as the service allows.
    Max,
}

impl MaxItems {
    /// The number of items kept under the service limit `limit`.
    pub fn effective(self, limit: u64) -> u64 {
        match self {
            MaxItems::Count(n) => n.min(limit),
            MaxItems::Max => limit,
        }
    }

    fn parse(s: &str) -> Option<MaxItems> {
        let s = s.trim();
        if s == "max" {
            return Some(MaxItems::Max);
        }
        s.parse::<u64>().ok().map(MaxItems::Count)
    }

    fn as_string(self) -> String {
        match self {
            MaxItems::Count(n) => n.to_string(),
            MaxItems::Max => "max".into(),
        }
    }
}

/// The configuration of a leaf node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// `pubsub#title`.
    pub title: String,
    /// `pubsub#description`.
    pub description: String,
    /// `pubsub#type`: the payload namespace, informative.
    pub payload_type: String,
    /// `pubsub#access_model`.
    pub access_model: AccessModel,
    /// `pubsub#roster_groups_allowed` (for [`AccessModel::Roster`]).
    pub roster_groups_allowed: Vec<String>,
    /// `pubsub#publish_model`.
    pub publish_model: PublishModel,
    /// `pubsub#persist_items`.
    pub persist_items: bool,
    /// `pubsub#max_items`.
    pub max_items: MaxItems,
    /// `pubsub#deliver_payloads`.
    pub deliver_payloads: bool,
    /// `pubsub#deliver_notifications`.
    pub deliver_notifications: bool,
    /// `pubsub#notify_retract`: retractions (and purges) are notified.
    pub notify_retract: bool,
    /// `pubsub#notify_delete`.
    pub notify_delete: bool,
    /// `pubsub#notify_config`.
    pub notify_config: bool,
    /// `pubsub#notify_sub`: owners are told of subscription changes.
    pub notify_sub: bool,
    /// `pubsub#send_last_published_item`.
    pub send_last_published_item: SendLast,
    /// `pubsub#notification_type`.
    pub notification_type: NotificationType,
}

/// Why a submitted configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field has a value outside its type or options.
    #[error("invalid value for {0}")]
    InvalidValue(String),
    /// The form is not a node configuration form.
    #[error("wrong FORM_TYPE")]
    WrongFormType,
    /// A text field longer than [`MAX_TEXT_BYTES`], or more roster groups than
    /// [`MAX_ROSTER_GROUPS`].
    #[error("{0} too long")]
    TooLong(String),
}

/// The longest value of a free-text field (`pubsub#title`, `pubsub#description`,
/// `pubsub#type`, each roster group), in bytes. The title is each node's name in the
/// service's disco#items, which lists up to 1000 nodes: 1 KiB keeps that answer about 1 MiB
/// (a 256 KiB title made one answer of 100 nodes 24 MB). Generous for a name, a sentence
/// or a namespace.
pub const MAX_TEXT_BYTES: usize = 1024;
/// The most groups in `pubsub#roster_groups_allowed`.
pub const MAX_ROSTER_GROUPS: usize = 64;

/// `TooLong` for the first free-text field of `form` over its bound. Only submitted forms
/// are checked: a configuration stored before the bound still loads whole.
fn check_text_bounds(form: &Form) -> Result<(), ConfigError> {
    for field in form.data_fields() {
        let text = matches!(
            field.var.as_str(),
            "pubsub#title" | "pubsub#description" | "pubsub#type" | "pubsub#roster_groups_allowed"
        );
        let too_long = field.values.len() > MAX_ROSTER_GROUPS
            || field.values.iter().any(|v| v.len() > MAX_TEXT_BYTES);
        if text && too_long {
            return Err(ConfigError::TooLong(field.var.clone()));
        }
    }
    Ok(())
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

impl NodeConfig {
    /// XEP-0060's own defaults for a pubsub service node.
    pub fn service_default() -> NodeConfig {
        NodeConfig {
            title: String::new(),
            description: String::new(),
            payload_type: String::new(),
            access_model: AccessModel::Open,
            roster_groups_allowed: Vec::new(),
            publish_model: PublishModel::Publishers,
            persist_items: true,
            max_items: MaxItems::Count(100),
            deliver_payloads: true,
            deliver_notifications: true,
            notify_retract: true,
            notify_delete: true,
            notify_config: false,
            notify_sub: false,
            send_last_published_item: SendLast::Never,
            notification_type: NotificationType::Headline,
        }
    }

    /// XEP-0163 §4's defaults for PEP nodes: presence access, one item, the last item sent
    /// on subscription and presence.
    pub fn pep_default() -> NodeConfig {
        NodeConfig {
            access_model: AccessModel::Presence,
            max_items: MaxItems::Count(1),
            send_last_published_item: SendLast::OnSubAndPresence,
            ..NodeConfig::service_default()
        }
    }

    /// The fields with their current values, in form order: (var, type, label, options,
    /// values).
    fn fields(&self) -> Vec<Field> {
        let f = |var: &str, kind: &'static str, label: &str, value: String| {
            Field::new(var, kind, value).label(label)
        };
        vec![
            f(
                "pubsub#title",
                "text-single",
                "A friendly name for the node",
                self.title.clone(),
            ),
            f(
                "pubsub#description",
                "text-single",
                "A description of the node",
                self.description.clone(),
            ),
            f(
                "pubsub#type",
                "text-single",
                "The type of node data (payload namespace)",
                self.payload_type.clone(),
            ),
            f(
                "pubsub#access_model",
                "list-single",
                "Who may subscribe and retrieve items",
                self.access_model.as_str().into(),
            )
            .options(&["authorize", "open", "presence", "roster", "whitelist"]),
            Field {
                var: "pubsub#roster_groups_allowed".into(),
                kind: Some("list-multi"),
                label: Some("Roster groups allowed to subscribe".into()),
                values: self.roster_groups_allowed.clone(),
                ..Field::default()
            },
            f(
                "pubsub#publish_model",
                "list-single",
                "Who may publish",
                self.publish_model.as_str().into(),
            )
            .options(&["publishers", "subscribers", "open"]),
            f(
                "pubsub#persist_items",
                "boolean",
                "Persist items to storage",
                bool_str(self.persist_items).into(),
            ),
            f(
                "pubsub#max_items",
                "text-single",
                "Maximum number of items to persist ('max' for the service limit)",
                self.max_items.as_string(),
            ),
            f(
                "pubsub#deliver_payloads",
                "boolean",
                "Deliver payloads with event notifications",
                bool_str(self.deliver_payloads).into(),
            ),
            f(
                "pubsub#deliver_notifications",
                "boolean",
                "Deliver event notifications",
                bool_str(self.deliver_notifications).into(),
            ),
            f(
                "pubsub#notify_retract",
                "boolean",
                "Notify subscribers when items are removed from the node",
                bool_str(self.notify_retract).into(),
            ),
            f(
                "pubsub#notify_delete",
                "boolean",
                "Notify subscribers when the node is deleted",
                bool_str(self.notify_delete).into(),
            ),
            f(
                "pubsub#notify_config",
                "boolean",
                "Notify subscribers when the node configuration changes",
                bool_str(self.notify_config).into(),
            ),
            f(
                "pubsub#notify_sub",
                "boolean",
                "Notify owners about new subscribers and unsubscribes",
                bool_str(self.notify_sub).into(),
            ),
            f(
                "pubsub#send_last_published_item",
                "list-single",
                "When to send the last published item",
                self.send_last_published_item.as_str().into(),
            )
            .options(&["never", "on_sub", "on_sub_and_presence"]),
            f(
                "pubsub#notification_type",
                "list-single",
                "The type of notification messages",
                self.notification_type.as_str().into(),
            )
            .options(&["headline", "normal"]),
        ]
    }

    /// The configuration form an owner fills in (§8.2.1), or a `result` of it.
    pub fn to_form(&self, kind: &str) -> Form {
        let mut form = Form::new(kind, ns::NODE_CONFIG);
        for f in self.fields() {
            form.push(f);
        }
        form
    }

    /// The submitted form kept in the store.
    pub fn to_stored(&self) -> String {
        self.to_form("submit").to_element().to_string()
    }

    /// Applies the fields of a submitted form (node_config or publish-options; an unknown
    /// FORM_TYPE is refused, a missing one accepted). Unknown fields are ignored, as
    /// XEP-0004 lets a form processor do; an invalid value refuses the whole form and leaves
    /// `self` unchanged, as does a free-text value over [`MAX_TEXT_BYTES`].
    pub fn apply(&mut self, form: &Form) -> Result<(), ConfigError> {
        check_text_bounds(form)?;
        self.apply_fields(form)
    }

    /// [`NodeConfig::apply`] without the size bounds (for stored forms).
    fn apply_fields(&mut self, form: &Form) -> Result<(), ConfigError> {
        match form.form_type() {
            None | Some(ns::NODE_CONFIG) | Some(ns::PUBLISH_OPTIONS) => {}
            Some(_) => return Err(ConfigError::WrongFormType),
        }
        let mut next = self.clone();
        for field in form.data_fields() {
            let bad = || ConfigError::InvalidValue(field.var.clone());
            let v = field.value().unwrap_or_default();
            let boolean = || parse_bool(v).ok_or_else(bad);
            match field.var.as_str() {
                "pubsub#title" => next.title = v.to_string(),
                "pubsub#description" => next.description = v.to_string(),
                "pubsub#type" => next.payload_type = v.to_string(),
                "pubsub#access_model" => {
                    next.access_model = AccessModel::parse(v).ok_or_else(bad)?
                }
                "pubsub#roster_groups_allowed" => {
                    next.roster_groups_allowed = field.values.clone();
                }
                "pubsub#publish_model" => {
                    next.publish_model = PublishModel::parse(v).ok_or_else(bad)?
                }
                "pubsub#persist_items" => next.persist_items = boolean()?,
                "pubsub#max_items" => next.max_items = MaxItems::parse(v).ok_or_else(bad)?,
                "pubsub#deliver_payloads" => next.deliver_payloads = boolean()?,
                "pubsub#deliver_notifications" => next.deliver_notifications = boolean()?,
                "pubsub#notify_retract" => next.notify_retract = boolean()?,
                "pubsub#notify_delete" => next.notify_delete = boolean()?,
                "pubsub#notify_config" => next.notify_config = boolean()?,
                "pubsub#notify_sub" => next.notify_sub = boolean()?,
                "pubsub#send_last_published_item" => {
                    next.send_last_published_item = SendLast::parse(v).ok_or_else(bad)?
                }
                "pubsub#notification_type" => {
                    next.notification_type = NotificationType::parse(v).ok_or_else(bad)?
                }
                _ => {}
            }
        }
        *self = next;
        Ok(())
    }

    /// Reads a stored configuration over `base` (fields added by later versions keep their
    /// defaults).
    pub fn from_stored(base: &NodeConfig, stored: &str) -> Option<NodeConfig> {
        let el = crate::xml::parse(stored)?;
        let form = Form::parse(&el)?;
        let mut c = base.clone();
        c.apply_fields(&form).ok()?;
        Some(c)
    }

    /// Whether every field of `form` is one of the configuration's: publish-options with
    /// another field are refused (§7.1.5 "MUST reject the publication upon encountering
    /// unknown fields"), whether the node exists ([`NodeConfig::meets`]) or is created
    /// with them (auto-create), where [`NodeConfig::apply`] alone would ignore it.
    pub fn knows_every_field(&self, form: &Form) -> bool {
        let known = self.fields();
        form.data_fields()
            .all(|f| known.iter().any(|k| k.var == f.var))
    }

    /// XEP-0060 §7.1.5: whether every field of a publish-options form matches this
    /// configuration. A field this service does not know is a precondition not met, as is
    /// an invalid value. `limit` is the service's item limit (`max` means it).
    pub fn meets(&self, options: &Form, limit: u64) -> bool {
        if !self.knows_every_field(options) {
            return false;
        }
        let current = self.fields();
        options.data_fields().all(|want| {
            let Some(have) = current.iter().find(|f| f.var == want.var) else {
                return false;
            };
            match have.kind {
                Some("boolean") => {
                    want.value().and_then(parse_bool) == have.value().and_then(parse_bool)
                }
                Some("list-multi") => {
                    let mut a = want.values.clone();
                    let mut b = have.values.clone();
                    a.sort();
                    b.sort();
                    a == b
                }
                _ if want.var == "pubsub#max_items" => {
                    match want.value().and_then(MaxItems::parse) {
                        Some(m) => m.effective(limit) == self.max_items.effective(limit),
                        None => false,
                    }
                }
                _ => want.value().unwrap_or_default().trim() == have.value().unwrap_or_default(),
            }
        })
    }
}

/// Who may create nodes on a service (§8.1, "create-nodes").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreatePolicy {
    /// Accounts of the hosted domain.
    Local,
    /// Any entity that can reach the service.
    Anyone,
    /// Only these bare JIDs.
    Only(Vec<BareJid>),
}

/// What kind of service an engine serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// A pubsub service on its own domain (XEP-0060).
    Service,
    /// Personal eventing on every account (XEP-0163): the account owns its nodes, they are
    /// created on first publish, and contacts receive notifications by their interest.
    Pep,
}

/// The default items per page: PEP's `max_items` limit, so that a node of small items
/// (bookmarks, XEP-0402) still comes whole to clients that do not page.
const PAGE_ITEMS: u64 = 1_000;
/// The default page byte budget: the default largest payload, so a page holds at most about
/// 512 KiB of payload — what common servers accept as one stanza over s2s.
const PAGE_BYTES: usize = 256 * 1024;

/// The default byte budget of one account's PEP items: 16 MiB holds an avatar of the
/// largest payload with thousands of bookmarks, OMEMO bundles and the like many times over.
const PEP_STORED_BYTES: u64 = 16 * 1024 * 1024;

/// The configuration of an engine: the defaults and limits of its nodes and who may create
/// them. This is all that separates a pubsub service from PEP (design.md point 9).
#[derive(Debug, Clone)]
pub struct Profile {
    /// Service or PEP.
    pub kind: ServiceKind,
    /// The configuration of new nodes.
    pub defaults: NodeConfig,
    /// Who may create nodes (PEP: only the account itself, whatever this says).
    pub create: CreatePolicy,
    /// The hosted domains, every virtual host (for [`CreatePolicy::Local`]).
    pub local_domains: Vec<String>,
    /// Services that belong to one host (virtual hosting: `pubsub.b.test` is host
    /// `b.test`'s): for a service listed here only that host's accounts are local; for any
    /// other, the accounts of every `local_domains`.
    pub service_hosts: Vec<(BareJid, String)>,
    /// The most items a node keeps (`max_items = max`).
    pub max_items_limit: u64,
    /// The largest payload accepted, in bytes of serialized XML (`payload-too-big` above).
    pub max_payload_bytes: usize,
    /// The most subscriptions one node holds (`too-many-subscriptions` above).
    pub max_subscriptions_per_node: usize,
    /// The most nodes one service holds (`resource-constraint` above; per account for PEP).
    pub max_nodes: usize,
    /// The most nodes of a service one bare JID may own when it creates another
    /// (`policy-violation` above): without it one account could take all `max_nodes` and
    /// lock every other creator out. Not used by PEP, where `max_nodes` is per account.
    pub max_nodes_per_owner: usize,
    /// The most items one answer to an items request holds (XEP-0060 §6.5.4: the rest is
    /// paged with RSM), whatever `max_items` asks.
    pub max_page_items: u64,
    /// The payload bytes after which a page of items ends (the item that reaches it is the
    /// last; a page holds at least one): what bounds the memory of one request when items
    /// are large.
    pub max_page_bytes: usize,
    /// The most payload bytes the stored items of one service hold together, each counting
    /// at least [`rookery_store::pubsub::MIN_ITEM_BYTES`]; a publication that would take
    /// them past it (and grow them) gets `resource-constraint`. PEP only,
    /// where a service is one account: without it `max_nodes` × `max_items_limit` ×
    /// `max_payload_bytes` let an account store 256 GB. `None` on the pubsub service,
    /// whose nodes of every owner share one service.
    pub max_stored_bytes: Option<u64>,
}

impl Profile {
    /// The pubsub service defaults for `local_domain`.
    pub fn service(local_domain: &str) -> Profile {
        Profile {
            kind: ServiceKind::Service,
            defaults: NodeConfig::service_default(),
            create: CreatePolicy::Local,
            local_domains: vec![local_domain.to_string()],
            service_hosts: Vec::new(),
            max_items_limit: 10_000,
            max_payload_bytes: 256 * 1024,
            max_subscriptions_per_node: 100_000,
            max_nodes: 100_000,
            max_nodes_per_owner: 100,
            max_page_items: PAGE_ITEMS,
            max_page_bytes: PAGE_BYTES,
            max_stored_bytes: None,
        }
    }

    /// Whether accounts of `domain` are local to the service `svc` (for
    /// [`CreatePolicy::Local`]): its own host's, or any hosted domain's for a service of no
    /// one host.
    pub fn is_local(&self, svc: &BareJid, domain: &str) -> bool {
        match self.service_hosts.iter().find(|(s, _)| s == svc) {
            Some((_, host)) => host == domain,
            None => self.local_domains.iter().any(|d| d == domain),
        }
    }

    /// The PEP defaults for `local_domain`.
    pub fn pep(local_domain: &str) -> Profile {
        Profile {
            kind: ServiceKind::Pep,
            defaults: NodeConfig::pep_default(),
            create: CreatePolicy::Local,
            local_domains: vec![local_domain.to_string()],
            service_hosts: Vec::new(),
            max_items_limit: 1_000,
            max_payload_bytes: 256 * 1024,
            max_subscriptions_per_node: 10_000,
            max_nodes: 1_000,
            max_nodes_per_owner: 1_000,
            max_page_items: PAGE_ITEMS,
            max_page_bytes: PAGE_BYTES,
            max_stored_bytes: Some(PEP_STORED_BYTES),
        }
    }
}

/// The `[pubsub]` section of `rookery.toml` (every key in docs/configuration.md).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PubsubConfig {
    /// Serve the pubsub service (XEP-0060) on its own domain.
    pub enabled: bool,
    /// The service's domain; empty means `pubsub.<domain>`.
    pub host: String,
    /// Who may create nodes on the service: `local` (accounts of the domain), `anyone`, or
    /// `listed` (the bare JIDs in `creators`).
    pub create_nodes: String,
    /// The accounts that may create nodes when `create_nodes = "listed"`.
    pub creators: Vec<String>,
    /// The most items a service node keeps (what `pubsub#max_items = max` means).
    pub max_items: u64,
    /// The largest payload accepted, in bytes of XML (service and PEP).
    pub max_payload_bytes: usize,
    /// The most subscriptions one service node holds.
    pub max_subscriptions: usize,
    /// The most nodes on the service.
    pub max_nodes: usize,
    /// The most service nodes one account may own and still create another (nodes it was
    /// made owner of count too; it may give them up). 100, as many rooms as one account may
    /// create on the MUC service: plenty for a person or a bot, and 1,000 accounts are
    /// needed to fill the default `max_nodes`.
    pub max_nodes_per_user: usize,
    /// Personal eventing (XEP-0163) on every account.
    pub pep: bool,
    /// The most items one PEP node keeps (bookmarks with `max_items = max` keep this many).
    pub pep_max_items: u64,
    /// The most PEP nodes one account may have.
    pub pep_max_nodes: usize,
    /// The most payload bytes one account's PEP items hold together (each at least 1 KiB).
    pub pep_max_bytes_per_user: u64,
    /// The most items one answer to an items request holds, service and PEP (more are paged
    /// with RSM, XEP-0060 §6.5.4; over HTTP with `Link: rel="next"`).
    pub max_page_items: u64,
    /// The payload bytes after which a page of items ends (at least one item), service and
    /// PEP: bounds the memory and size of one answer when items are large.
    pub max_page_bytes: usize,
}

impl Default for PubsubConfig {
    fn default() -> Self {
        let s = Profile::service("");
        let p = Profile::pep("");
        PubsubConfig {
            enabled: true,
            host: String::new(),
            create_nodes: "local".into(),
            creators: Vec::new(),
            max_items: s.max_items_limit,
            max_payload_bytes: s.max_payload_bytes,
            max_subscriptions: s.max_subscriptions_per_node,
            max_nodes: s.max_nodes,
            max_nodes_per_user: s.max_nodes_per_owner,
            pep: true,
            pep_max_items: p.max_items_limit,
            pep_max_nodes: p.max_nodes,
            pep_max_bytes_per_user: PEP_STORED_BYTES,
            max_page_items: s.max_page_items,
            max_page_bytes: s.max_page_bytes,
        }
    }
}

impl PubsubConfig {
    /// The service's domain for the hosted `domain`.
    pub fn service_host(&self, domain: &str) -> String {
        if self.host.is_empty() {
            format!("pubsub.{domain}")
        } else {
            self.host.clone()
        }
    }

    /// The service profile; fails on an unknown `create_nodes` or an invalid creator JID.
    pub fn service_profile(&self, domain: &str) -> Result<Profile, String> {
        let create = match self.create_nodes.as_str() {
            "local" => CreatePolicy::Local,
            "anyone" => CreatePolicy::Anyone,
            "listed" => CreatePolicy::Only(
                self.creators
                    .iter()
                    .map(|c| BareJid::parse(c).map_err(|e| format!("creator {c:?}: {e}")))
                    .collect::<Result<_, _>>()?,
            ),
            other => {
                return Err(format!(
                    "create_nodes = {other:?}: use \"local\", \"anyone\" or \"listed\""
                ))
            }
        };
        Ok(Profile {
            create,
            max_items_limit: self.max_items.max(1),
            max_payload_bytes: self.max_payload_bytes,
            max_subscriptions_per_node: self.max_subscriptions,
            max_nodes: self.max_nodes,
            max_nodes_per_owner: self.max_nodes_per_user,
            max_page_items: self.max_page_items.max(1),
            max_page_bytes: self.max_page_bytes.max(1),
            ..Profile::service(domain)
        })
    }

    /// The PEP profile.
    pub fn pep_profile(&self, domain: &str) -> Profile {
        Profile {
            max_items_limit: self.pep_max_items.max(1),
            max_payload_bytes: self.max_payload_bytes,
            max_nodes: self.pep_max_nodes,
            max_nodes_per_owner: self.pep_max_nodes,
            max_page_items: self.max_page_items.max(1),
            max_page_bytes: self.max_page_bytes.max(1),
            max_stored_bytes: Some(self.pep_max_bytes_per_user),
            ..Profile::pep(domain)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn submit(fields: &[(&str, &str)]) -> Form {
        let mut f = Form::new("submit", ns::PUBLISH_OPTIONS);
        for (k, v) in fields {
            f.push(Field {
                var: (*k).into(),
                values: vec![(*v).into()],
                ..Field::default()
            });
        }
        f
    }

    #[test]
    fn a_service_of_one_host_counts_that_hosts_accounts_as_local() {
        let mut p = Profile::service("a.test");
        p.local_domains = vec!["a.test".into(), "b.test".into()];
        let (a, b) = (
            BareJid::parse("pubsub.a.test").unwrap(),
            BareJid::parse("pubsub.b.test").unwrap(),
        );
        let other = BareJid::parse("elsewhere.a.test").unwrap();
        p.service_hosts = vec![(a.clone(), "a.test".into()), (b.clone(), "b.test".into())];
        assert!(p.is_local(&a, "a.test") && !p.is_local(&a, "b.test"));
        assert!(p.is_local(&b, "b.test") && !p.is_local(&b, "a.test"));
        assert!(!p.is_local(&b, "c.test"));
        // A service of no one host: every hosted domain.
        assert!(p.is_local(&other, "a.test") && p.is_local(&other, "b.test"));
    }

    #[test]
    fn apply_and_store_round_trip() {
        let mut c = NodeConfig::service_default();
        c.apply(&submit(&[
            ("pubsub#access_model", "whitelist"),
            ("pubsub#max_items", "max"),
            ("pubsub#title", "Bookmarks <&>"),
            ("pubsub#notify_retract", "false"),
            ("pubsub#unknown", "x"),
        ]))
        .unwrap();
        assert_eq!(c.access_model, AccessModel::Whitelist);
        assert_eq!(c.max_items, MaxItems::Max);
        assert!(!c.notify_retract);
        let back = NodeConfig::from_stored(&NodeConfig::pep_default(), &c.to_stored()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn invalid_values_leave_the_config_unchanged() {
        let mut c = NodeConfig::service_default();
        let before = c.clone();
        let e = c
            .apply(&submit(&[
                ("pubsub#title", "x"),
                ("pubsub#max_items", "-1"),
            ]))
            .unwrap_err();
        assert_eq!(e, ConfigError::InvalidValue("pubsub#max_items".into()));
        assert_eq!(c, before);
        assert!(c
            .apply(&submit(&[("pubsub#persist_items", "maybe")]))
            .is_err());
        let mut wrong = Form::new("submit", "urn:other");
        wrong.push(Field::new("pubsub#title", "text-single", "x"));
        assert_eq!(c.apply(&wrong), Err(ConfigError::WrongFormType));
    }

    #[test]
    fn text_fields_are_bounded_when_submitted_not_when_stored() {
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        let mut c = NodeConfig::service_default();
        for var in ["pubsub#title", "pubsub#description", "pubsub#type"] {
            assert_eq!(
                c.apply(&submit(&[(var, &long)])),
                Err(ConfigError::TooLong(var.into()))
            );
        }
        c.apply(&submit(&[("pubsub#title", &long[1..])])).unwrap();
        // A configuration stored before the bound keeps its title (and access model).
        let mut old = NodeConfig::service_default();
        old.title = long.clone();
        old.access_model = AccessModel::Whitelist;
        let back = NodeConfig::from_stored(&NodeConfig::service_default(), &old.to_stored());
        assert_eq!(back, Some(old));
    }

    #[test]
    fn preconditions() {
        let mut c = NodeConfig::pep_default();
        c.apply(&submit(&[
            ("pubsub#access_model", "whitelist"),
            ("pubsub#max_items", "max"),
        ]))
        .unwrap();
        assert!(c.meets(
            &submit(&[
                ("pubsub#access_model", "whitelist"),
                ("pubsub#persist_items", "true"),
                ("pubsub#max_items", "max"),
            ]),
            1000
        ));
        assert!(c.meets(&submit(&[("pubsub#max_items", "1000")]), 1000));
        assert!(!c.meets(&submit(&[("pubsub#access_model", "open")]), 1000));
        assert!(!c.meets(&submit(&[("pubsub#persist_items", "0")]), 1000));
        assert!(!c.meets(&submit(&[("pubsub#no_such_field", "1")]), 1000));
    }
}
