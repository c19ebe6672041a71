//! The archive module: hooks on the message path, the query and preference IQs of accounts
//! (XEP-0313 §4, §6), and the purge.
//!
//! # When a message is archived
//! - a local account's outgoing message: at `MessageFromLocal` (after blocking, which is
//!   `POLICY`), in the sender's archive;
//! - a message delivered to a local account: at `MessageToBare` / `MessageToFull` with
//!   priority `OBSERVE`, before delivery, offline storage and carbons (all `DEFAULT`), so that
//!   what they send on carries the archive's `<stanza-id/>`.
//!
//! The row goes to the [`Archiver`], which writes the rows of many messages in one
//! transaction off the message path: the hook only queues it. What a client is promised —
//! the XEP-0198 acknowledgement of what it sent — waits for the commit through
//! [`Module::settle`] (`Core::settle`), and a query settles before it reads, so a client
//! finds every `<stanza-id/>` it was given. See `archiver.rs` for why, the bounds and what a
//! crash may take.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;

use rookery_core::{
    priority, Core, Declaration, Event, EventKind, Flow, HookPoint, IqAnswer, IqReply, IqTarget,
    Module,
};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{IqType, Stanza, StanzaError, StanzaKind};
use rookery_store::mam::{NewArchived, Owner};
use rookery_store::Store;

use crate::archive;
use crate::archiver::{Archiver, Ticket};
use crate::config::MamConfig;
use crate::error::MamError;
use crate::ns;
use crate::prefs::{Decision, Default as PrefDefault, Prefs};
use crate::serve;

/// The cluster note a node sends after storing an account's preferences (its bare JID).
const PREFS_TOPIC: &str = "mam.prefs";

/// The archive module.
pub struct Mam {
    config: MamConfig,
    default: PrefDefault,
    store: Store,
    /// Writes the rows, many messages' in one transaction.
    archiver: Archiver,
    /// Preferences of accounts that archived or changed them since start (read once).
    prefs: DashMap<BareJid, Arc<Prefs>>,
}

impl std::fmt::Debug for Mam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mam")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The parts of a local account's bare JID the store keys on.
fn owner(jid: &BareJid) -> Option<(&str, &str)> {
    Some((jid.domain(), jid.local()?))
}

impl Mam {
    /// The module under `config` (checked), archiving into `store`; its archiver runs on the
    /// current tokio runtime (`Err` outside one).
    pub fn new(config: MamConfig, store: Store) -> Result<Mam, String> {
        config.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("the message archive needs a tokio runtime".into());
        }
        let default = PrefDefault::parse(&config.default).unwrap_or(PrefDefault::Always);
        let archiver = Archiver::spawn(store.clone(), Duration::from_millis(config.batch_delay_ms));
        Ok(Mam {
            config,
            default,
            archiver,
            store,
            prefs: DashMap::new(),
        })
    }

    /// Runs the purge now and then every `purge_interval_secs`, for as long as the runtime
    /// runs (nothing to purge without `max_age_days` or `max_messages_per_user`).
    pub fn spawn_purge(self: &Arc<Self>) {
        let age = self.config.max_age_days;
        let cap = self.config.max_messages_per_user;
        if age == 0 && cap == 0 {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut every =
                tokio::time::interval(Duration::from_secs(me.config.purge_interval_secs));
            loop {
                every.tick().await;
                let older = (age > 0).then(|| {
                    rookery_proto::time::now_unix()
                        - i64::try_from(age.saturating_mul(86_400)).unwrap_or(i64::MAX)
                });
                match me.store.mam().purge(older, (cap > 0).then_some(cap)).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(messages = n, "message archive purged"),
                    Err(e) => tracing::error!(error = %e, "message archive purge failed"),
                }
            }
        });
    }

    async fn prefs_of(&self, account: &BareJid) -> Result<Arc<Prefs>, MamError> {
        if let Some(p) = self.prefs.get(account) {
            return Ok(p.clone());
        }
        let (d, u) = owner(account).ok_or(MamError::Forbidden)?;
        let p = match self.store.mam().prefs(d, u).await? {
            Some(p) => Prefs {
                default: PrefDefault::parse(&p.default).unwrap_or(self.default),
                always: p.always,
                never: p.never,
            },
            None => Prefs::with_default(self.default),
        };
        let p = Arc::new(p);
        self.prefs.insert(account.clone(), p.clone());
        Ok(p)
    }

    /// Whether `account` archives messages with `with`.
    async fn wants(&self, account: &BareJid, with: &Jid) -> Result<bool, MamError> {
        Ok(match self.prefs_of(account).await?.decide(with) {
            Decision::Archive => true,
            Decision::Skip => false,
            Decision::IfInRoster => {
                let (d, u) = owner(account).ok_or(MamError::Forbidden)?;
                // XEP-0441 §4.3.1: the roster by the bare JID.
                self.store
                    .rosters()
                    .get(d, u, with.bare_str())
                    .await?
                    .is_some()
            }
        })
    }

    /// Queues `m` for `account`'s archive, with `with`, under the ticket's id; the archiver
    /// logs what it fails to write (the message still goes on: losing its copy beats losing
    /// it).
    async fn archive(&self, ticket: Ticket<'_>, account: &BareJid, with: &BareJid, m: &Stanza) {
        let Some((d, u)) = owner(account) else { return };
        let row = NewArchived {
            owner: Owner::Account {
                domain: d.to_string(),
                username: u.to_string(),
            },
            id: ticket.id().clone(),
            with_jid: with.as_str().to_string(),
            ts: rookery_proto::time::now_unix(),
            stanza: archive::serialized(m),
            real_jid: None,
        };
        ticket.queue(vec![row]).await;
    }

    /// Takes back the row of `m`, a message archived for its recipient on its way and then
    /// bounced ([`Event::MessageBounced`]).
    async fn withdraw(&self, m: &Stanza) {
        let Some(account) = m.to().map(Jid::to_bare) else {
            return;
        };
        let (Some((d, u)), Some(id)) = (owner(&account), archive::stamped_id(m, &account)) else {
            return;
        };
        let owner = Owner::Account {
            domain: d.to_string(),
            username: u.to_string(),
        };
        self.archiver.withdraw(owner, id.to_string()).await;
    }

    /// The decision for one direction: `account`'s archive, the other party `with`.
    async fn should_archive(&self, core: &Arc<Core>, account: &BareJid, with: &Jid) -> bool {
        if !core.is_local_domain(account.domain()) || account.local().is_none() {
            return false;
        }
        match self.wants(account, with).await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(account = %account, error = %e, "archive preferences");
                false
            }
        }
    }

    async fn query(
        &self,
        core: &Arc<Core>,
        account: &BareJid,
        iq: &Stanza,
    ) -> Result<IqReply, MamError> {
        let (d, u) = owner(account).ok_or(MamError::Forbidden)?;
        let owner = Owner::Account {
            domain: d.to_string(),
            username: u.to_string(),
        };
        // Read what was archived before the query, also rows still in a batch.
        self.archiver.settle().await;
        let fin = serve::answer(
            core,
            &self.store,
            &owner,
            account,
            iq,
            self.config.page_limit(),
        )
        .await?;
        Ok(IqReply::from(Some(fin)))
    }

    async fn prefs_iq(
        &self,
        core: &Arc<Core>,
        account: &BareJid,
        iq: &Stanza,
    ) -> Result<IqReply, MamError> {
        let payload = iq
            .payload()
            .ok_or_else(|| MamError::BadRequest("no prefs".into()))?;
        if iq.kind() == StanzaKind::Iq(IqType::Set) {
            let p = Prefs::parse(payload)?;
            let (d, u) = owner(account).ok_or(MamError::Forbidden)?;
            let stored = rookery_store::mam::Prefs {
                default: p.default.as_str().to_string(),
                always: p.always.clone(),
                never: p.never.clone(),
            };
            self.store.mam().set_prefs(d, u, &stored).await?;
            self.prefs.insert(account.clone(), Arc::new(p));
            // The other nodes of a cluster read them again: they archive what they route.
            core.tell_peers(PREFS_TOPIC, || account.to_string());
        }
        Ok(IqReply::from(Some(
            self.prefs_of(account).await?.to_element(),
        )))
    }
}

#[async_trait]
impl Module for Mam {
    fn name(&self) -> &'static str {
        "mam"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            iqs: vec![
                (IqTarget::Account, ns::MAM, "query"),
                (IqTarget::Account, ns::MAM, "prefs"),
                (IqTarget::Account, ns::MAM, "metadata"),
            ],
            hooks: vec![
                (HookPoint::MessageFromLocal, priority::OBSERVE),
                (HookPoint::MessageToBare, priority::OBSERVE),
                (HookPoint::MessageToFull, priority::OBSERVE),
            ],
            events: vec![
                (EventKind::AccountDeleted, priority::DEFAULT),
                (EventKind::ClusterNote, priority::DEFAULT),
                (EventKind::MessageBounced, priority::DEFAULT),
            ],
            account_features: vec![ns::MAM, ns::MAM_EXTENDED, ns::SID],
            settles: true,
            ..Declaration::default()
        }
    }

    async fn reply_iq(&self, core: &Arc<Core>, to: &BareJid, iq: &Stanza) -> IqAnswer {
        // Only the account itself reads or configures its archive.
        if iq.from().is_none_or(|f| f.bare_str() != to.as_str()) {
            return Err(StanzaError::from(MamError::Forbidden));
        }
        let result = match iq.payload() {
            Some(p) if p.is("prefs", ns::MAM) => self.prefs_iq(core, to, iq).await,
            _ => self.query(core, to, iq).await,
        };
        result.map_err(StanzaError::from)
    }

    async fn hook(&self, core: &Arc<Core>, point: HookPoint, stanza: Stanza) -> Flow {
        let (Some(from), Some(to)) = (stanza.from().cloned(), stanza.to().cloned()) else {
            return Flow::Continue(stanza);
        };
        match point {
            HookPoint::MessageFromLocal => {
                let account = from.to_bare();
                // A message to one's own account is archived once (§6.1.1), where it
                // arrives: that copy is the one stamped with the archive's id.
                let mut stanza = stanza;
                if archive::archivable(&stanza)
                    && to.bare_str() != account.as_str()
                    && self.should_archive(core, &account, &to).await
                {
                    let ticket = self.archiver.ticket().await;
                    // For the sender's sent carbons (the carbons module runs after this).
                    stanza.mark_sender_archive_id(ticket.id().stanza_id());
                    self.archive(ticket, &account, &to.to_bare(), &stanza).await;
                }
                Flow::Continue(stanza)
            }
            // Its first routing archived it (or not) and left only the archive's own
            // `<stanza-id/>` on it: it keeps that one, and has its one row (§5.1.1).
            HookPoint::MessageToBare | HookPoint::MessageToFull if stanza.is_routed_again() => {
                Flow::Continue(stanza)
            }
            HookPoint::MessageToBare | HookPoint::MessageToFull => {
                let account = to.to_bare();
                if !archive::archivable(&stanza)
                    || !self.should_archive(core, &account, &from).await
                {
                    return Flow::Continue(archive::unforged(stanza, &account));
                }
                let ticket = self.archiver.ticket().await;
                let mut stamped = archive::stamp(stanza, &account, ticket.id().stanza_id());
                self.archive(ticket, &account, &from.to_bare(), &stamped)
                    .await;
                // A bounce takes the row back (`Mam::withdraw`).
                stamped.mark_archived();
                Flow::Continue(stamped)
            }
            _ => Flow::Continue(stanza),
        }
    }

    async fn settle(&self) {
        self.archiver.settle().await;
    }

    async fn event(&self, _core: &Arc<Core>, event: &Event) {
        match event {
            // The rows went with the account (ON DELETE CASCADE); forget its preferences.
            Event::AccountDeleted(account) => {
                self.prefs.remove(account);
            }
            // Its recipient never took it: the copy archived on the way goes (§5.1).
            Event::MessageBounced(m) => self.withdraw(m).await,
            // Another node of a cluster stored new preferences: read them again when needed.
            Event::ClusterNote { topic, body } if topic == PREFS_TOPIC => {
                if let Ok(account) = BareJid::parse(body) {
                    self.prefs.remove(&account);
                }
            }
            _ => {}
        }
    }
}
