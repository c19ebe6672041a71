//! XEP-0077: In-Band Registration — account creation before authentication (off unless
//! configured, rate-limited per IP), password change and account removal after it.
//!
//! In a cluster the rate limit is the cluster's: a node tells its peers of each address that
//! registered an account (a module note), and each takes it as registered there.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use rookery_jid::BareJid;
use rookery_proto::{
    ns, IqType, Stanza, StanzaError, StanzaErrorCondition as Cond, StanzaKind, StreamError,
    StreamErrorCondition,
};
use rookery_sasl::{Credentials, DEFAULT_ITERATIONS};
use rookery_xml::Element;

use crate::accounts::AccountError;
use crate::config::RegistrationConfig;
use crate::event::{Event, EventKind};
use crate::module::{Declaration, IqResult, IqTarget, Module};
use crate::router::Core;

/// The note topic (see [`Core::tell_peers`]).
const TOPIC: &str = "register";

/// The registration module. Listeners call [`Register::register`] for unauthenticated
/// streams; authenticated users reach [`Module::handle_iq`].
pub struct Register {
    config: RegistrationConfig,
    last_by_ip: DashMap<IpAddr, Instant>,
}

fn err(c: Cond, text: &str) -> StanzaError {
    StanzaError::new(c).with_text(text)
}

fn store_err(e: AccountError) -> StanzaError {
    match e {
        AccountError::Conflict => err(Cond::Conflict, "username already taken"),
        other => {
            tracing::error!(error = %other, "registration store error");
            StanzaError::new(Cond::InternalServerError)
        }
    }
}

impl Register {
    /// A registration module with `config`.
    pub fn new(config: RegistrationConfig) -> Self {
        Register {
            config,
            last_by_ip: DashMap::new(),
        }
    }

    /// Whether unauthenticated clients may register on `host`: its `[[host]]`
    /// `allow_registration`, else `[registration] enabled` (never on a domain not hosted).
    pub fn open(&self, core: &Core, host: &str) -> bool {
        core.hosts()
            .get(host)
            .is_some_and(|h| h.allow_registration().unwrap_or(self.config.enabled))
    }

    /// The registration form for unauthenticated clients (XEP-0077 §3.1).
    pub fn form(&self) -> Element {
        Element::new("query", ns::REGISTER)
            .with_child(
                Element::new("instructions", ns::REGISTER)
                    .with_text("Choose a username and password."),
            )
            .with_child(Element::new("username", ns::REGISTER))
            .with_child(Element::new("password", ns::REGISTER))
    }

    fn check_password(&self, password: &str) -> Result<(), StanzaError> {
        if password.chars().count() < self.config.min_password_len {
            return Err(err(Cond::NotAcceptable, "password too short"));
        }
        Ok(())
    }

    /// Handles a `jabber:iq:register` IQ on an unauthenticated stream to `host` from `ip`.
    pub async fn register(
        &self,
        core: &Arc<Core>,
        host: &str,
        ip: IpAddr,
        iq: &Stanza,
    ) -> IqResult {
        if !self.open(core, host) {
            return Err(StanzaError::new(Cond::ServiceUnavailable));
        }
        let query = iq
            .payload()
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        match iq.kind() {
            StanzaKind::Iq(IqType::Get) => Ok(Some(self.form())),
            StanzaKind::Iq(IqType::Set) => {
                let (username, password) = username_password(query);
                if username.is_empty() || password.is_empty() {
                    return Err(err(Cond::NotAcceptable, "username and password required"));
                }
                let local = rookery_jid::normalize_local(&username)
                    .map_err(|_| err(Cond::JidMalformed, "invalid username"))?;
                self.check_password(&password)?;
                let now = Instant::now();
                let min = Duration::from_secs(self.config.min_interval_secs);
                if let Some(last) = self.last_by_ip.get(&ip) {
                    if now.duration_since(*last) < min {
                        return Err(err(Cond::ResourceConstraint, "too many registrations")
                            .with_type(rookery_proto::ErrorType::Wait));
                    }
                }
                let creds = derive(&password)?;
                core.accounts()
                    .create(host, &local, &creds)
                    .await
                    .map_err(store_err)?;
                self.registered(ip, now);
                core.tell_peers(TOPIC, || ip.to_string());
                tracing::info!(user = %local, host, %ip, "account registered in-band");
                Ok(None)
            }
            _ => Err(StanzaError::new(Cond::BadRequest)),
        }
    }
}

impl Register {
    /// `ip` registered an account at `now` (here, or on another node of a cluster).
    fn registered(&self, ip: IpAddr, now: Instant) {
        let min = Duration::from_secs(self.config.min_interval_secs);
        self.last_by_ip.insert(ip, now);
        // Forget old entries so the map stays bounded by the recent rate.
        self.last_by_ip.retain(|_, t| now.duration_since(*t) < min);
    }
}

/// The `<username/>` and `<password/>` of a registration form (empty when left out).
fn username_password(query: &Element) -> (String, String) {
    let field = |name| query.child_text(name, ns::REGISTER).unwrap_or_default();
    (field("username"), field("password"))
}

fn derive(password: &str) -> Result<Credentials, StanzaError> {
    Credentials::derive(password, DEFAULT_ITERATIONS)
        .map_err(|_| err(Cond::NotAcceptable, "invalid password"))
}

#[async_trait]
impl Module for Register {
    fn name(&self) -> &'static str {
        "register"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            iqs: vec![
                (IqTarget::Server, ns::REGISTER, "query"),
                (IqTarget::Account, ns::REGISTER, "query"),
            ],
            server_features: vec![ns::REGISTER],
            events: vec![(EventKind::ClusterNote, crate::priority::DEFAULT)],
            ..Declaration::default()
        }
    }

    /// Another node's registration counts against its address here too.
    async fn event(&self, _core: &Arc<Core>, event: &Event) {
        let Event::ClusterNote { topic, body } = event else {
            return;
        };
        if topic == TOPIC {
            match body.parse() {
                Ok(ip) => self.registered(ip, Instant::now()),
                Err(_) => tracing::warn!(body, "unreadable registration note from a peer"),
            }
        }
    }

    /// XEP-0077 §3.2 (cancel) and §3.3 (password change) for the authenticated user.
    async fn handle_iq(&self, core: &Arc<Core>, to: &BareJid, iq: &Stanza) -> IqResult {
        let from = iq
            .from()
            .cloned()
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        let user = from.to_bare();
        // The request acts on the sender's own account: it is addressed to the server (or has
        // no `to`) or to the sender's bare JID. Sent to another account it is not ours to
        // answer (and must not act on the sender's account either).
        if to != &user && to.as_str() != user.domain() {
            return Err(StanzaError::new(Cond::ServiceUnavailable));
        }
        let Some(local) = user.local().map(str::to_string) else {
            return Err(StanzaError::new(Cond::NotAllowed));
        };
        if !core.is_local_domain(user.domain()) {
            return Err(StanzaError::new(Cond::NotAllowed));
        }
        let query = iq
            .payload()
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        match iq.kind() {
            StanzaKind::Iq(IqType::Get) => Ok(Some(
                Element::new("query", ns::REGISTER)
                    .with_child(Element::new("registered", ns::REGISTER))
                    .with_child(Element::new("username", ns::REGISTER).with_text(local)),
            )),
            StanzaKind::Iq(IqType::Set) if query.has_child("remove", ns::REGISTER) => {
                // §3.2: `<remove/>` must be alone — anything beside it is a client that means
                // something else, and an account is not deleted on a guess.
                if query.children().count() != 1 {
                    return Err(err(
                        Cond::BadRequest,
                        "<remove/> must be the only child of <query/>",
                    ));
                }
                // The requesting session still takes this result (it is blocked in routing
                // it) and writes it before its stream error.
                remove_account(core, &user).await.map_err(store_err)?;
                tracing::info!(user = %user, "account removed in-band");
                Ok(None)
            }
            StanzaKind::Iq(IqType::Set) => {
                let (username, password) = username_password(query);
                // §3.3: incomplete information is bad-request; another account's name is
                // not the requester's to change.
                if username.is_empty() || password.is_empty() {
                    return Err(err(Cond::BadRequest, "username and password are required"));
                }
                if rookery_jid::normalize_local(&username).ok().as_deref() != Some(&local) {
                    return Err(err(Cond::NotAllowed, "username does not match the account"));
                }
                self.check_password(&password)?;
                let creds = derive(&password)?;
                core.accounts()
                    .set_credentials(user.domain(), &local, &creds)
                    .await
                    .map_err(store_err)?;
                tracing::info!(user = %user, "password changed");
                Ok(None)
            }
            _ => Err(StanzaError::new(Cond::BadRequest)),
        }
    }
}

/// Removes an account of the running server: in-band (XEP-0077 §3.2) and through the admin
/// API. `false` if there was no such account. Order matters. The sessions are told to close
/// first (`not-authorized`), so they send nothing more. Then the modules tell the contacts
/// while the roster can still be read, and forget the sessions' presence, so their end
/// records no last activity for a deleted account. Then the store, then what modules keep
/// elsewhere.
pub async fn remove_account(core: &Arc<Core>, user: &BareJid) -> Result<bool, AccountError> {
    let Some(local) = user.local() else {
        return Ok(false);
    };
    for (h, _) in core.sessions_of(user) {
        core.end_session(
            &h,
            StreamError::with_text(StreamErrorCondition::NotAuthorized, "account removed"),
        );
    }
    core.emit(&Event::AccountRemoving(user.clone())).await;
    let existed = core.accounts().delete(user.domain(), local).await?;
    core.emit(&Event::AccountDeleted(user.clone())).await;
    Ok(existed)
}
