//! XEP-0050 Ad-Hoc Commands offering the XEP-0133 Service Administration commands to the
//! JIDs in `admins = [...]`: an administrator manages the server from any XMPP client that
//! speaks XEP-0050 (Gajim, Psi, Conversations' console …), as with Prosody's and ejabberd's.
//!
//! Layout:
//! - [`form`]: the XEP-0004 data forms the commands use;
//! - [`commands`]: the commands, each acting through `rookery_core::admin` (the REST admin
//!   API's code).
//!
//! Discovery (XEP-0050 §2): the server advertises the commands feature; disco#items of the
//! node `http://jabber.org/protocol/commands` lists the commands to an administrator and
//! nothing to anyone else; disco#info of a command node names it (`automation/command-node`).
//!
//! Execution (§3, §4): every command here has one stage. `execute` without a form answers with
//! the form to fill in (`status='executing'`, a `sessionid`, `complete` as the only action);
//! the submitted form (with `complete` or `execute`) runs it (`status='completed'`, a note, a
//! result form for commands that report). `cancel` answers `canceled`. The form carries
//! everything a command needs; [`session`] only remembers which `sessionid`s were issued and
//! which ended, for the errors of "Possible Errors" ([`Refusal`]). Anyone not in `admins` gets `forbidden`
//! (XEP-0133 §5).

pub mod commands;
pub mod form;
pub mod session;

use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use rookery_core::module::{Declaration, IqResult, IqTarget, Module};
use rookery_core::modules::disco::{feature, identity};
use rookery_core::Core;
use rookery_jid::{BareJid, Jid};
use rookery_proto::{ns, IqType, Stanza, StanzaError, StanzaErrorCondition, StanzaKind};
use rookery_xml::Element;

use crate::commands::Command;
use crate::form::Submitted;
use crate::session::Sessions;

/// The XEP-0050 namespace, also the node listing the commands.
pub const NS: &str = "http://jabber.org/protocol/commands";

/// The JIDs allowed to run the commands; replaced on reload.
#[derive(Debug, Default)]
pub struct Admins(RwLock<Arc<Vec<BareJid>>>);

impl Admins {
    /// The administrators `jids`.
    pub fn new(jids: Vec<BareJid>) -> Arc<Admins> {
        Arc::new(Admins(RwLock::new(Arc::new(jids))))
    }

    /// Replaces the list (reload).
    pub fn set(&self, jids: Vec<BareJid>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(jids);
    }

    /// Whether `jid`'s account is an administrator.
    pub fn contains(&self, jid: &Jid) -> bool {
        let bare = jid.to_bare();
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&bare)
    }
}

/// The ad-hoc commands module.
pub struct AdHoc {
    admins: Arc<Admins>,
    sessions: Sessions,
}

impl AdHoc {
    /// Commands for `admins`.
    pub fn new(admins: Arc<Admins>) -> AdHoc {
        AdHoc {
            admins,
            sessions: Sessions::default(),
        }
    }

    /// The sender, if it may run commands.
    fn admin<'a>(&self, from: Option<&'a Jid>) -> Result<&'a Jid, StanzaError> {
        from.filter(|f| self.admins.contains(f))
            .ok_or_else(|| StanzaError::new(StanzaErrorCondition::Forbidden))
    }
}

/// The `action` of a `<command/>` (XEP-0050 "`<command/>` Element").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Execute,
    Cancel,
    Prev,
    Next,
    Complete,
}

impl Action {
    /// The action named `given`; `execute` when absent (the default), and
    /// `malformed-action` for a name outside the five the XEP defines.
    fn parse(given: Option<&str>) -> Result<Action, Refusal> {
        match given.unwrap_or("execute") {
            "execute" => Ok(Action::Execute),
            "cancel" => Ok(Action::Cancel),
            "prev" => Ok(Action::Prev),
            "next" => Ok(Action::Next),
            "complete" => Ok(Action::Complete),
            _ => Err(Refusal::MalformedAction),
        }
    }
}

/// Why a command request is refused: the conditions of XEP-0050's "Possible Errors" that need a
/// `<command/>`-namespaced child, mapped to the wire once, by the `From` below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An action outside the five the XEP defines.
    MalformedAction,
    /// An action this stage does not offer (`prev`, `next`).
    BadAction,
    /// The submitted form lacks a required field or holds an unusable value.
    BadPayload(String),
    /// A `sessionid` this responder did not issue to this requester for this command.
    BadSessionid,
    /// A `sessionid` whose session was completed, canceled or timed out.
    SessionExpired,
}

impl From<Refusal> for StanzaError {
    fn from(r: Refusal) -> StanzaError {
        use StanzaErrorCondition::{BadRequest, NotAllowed};
        let (condition, specific, text) = match r {
            Refusal::MalformedAction => (BadRequest, "malformed-action", None),
            Refusal::BadAction => (BadRequest, "bad-action", None),
            Refusal::BadPayload(why) => (BadRequest, "bad-payload", Some(why)),
            Refusal::BadSessionid => (BadRequest, "bad-sessionid", None),
            Refusal::SessionExpired => (NotAllowed, "session-expired", None),
        };
        let e = StanzaError::new(condition).with_app(Element::new(specific, NS));
        match text {
            Some(t) => e.with_text(t),
            None => e,
        }
    }
}

/// A `<command/>` answer for `node` in session `sessionid` with `status`.
fn answer(node: &str, sessionid: &str, status: &str) -> Element {
    Element::new("command", NS)
        .with_attr("node", node)
        .with_attr("sessionid", sessionid)
        .with_attr("status", status)
}

#[async_trait]
impl Module for AdHoc {
    fn name(&self) -> &'static str {
        "adhoc"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            iqs: vec![(IqTarget::Server, NS, "command")],
            server_features: vec![NS],
            ..Declaration::default()
        }
    }

    async fn handle_iq(&self, core: &Arc<Core>, _to: &BareJid, iq: &Stanza) -> IqResult {
        // A command is run by an IQ set ("Executing Commands"); a get runs nothing.
        if iq.kind() != StanzaKind::Iq(IqType::Set) {
            return Err(StanzaError::new(StanzaErrorCondition::BadRequest));
        }
        let by = self.admin(iq.from())?;
        let request = iq
            .payload()
            .ok_or_else(|| StanzaError::new(StanzaErrorCondition::BadRequest))?;
        let node = request.attr("node").unwrap_or_default();
        let command = Command::from_node(node)
            .ok_or_else(|| StanzaError::new(StanzaErrorCondition::ItemNotFound))?;
        let action = Action::parse(request.attr("action"))?;
        let sessionid = match request.attr("sessionid") {
            Some(id) => {
                self.sessions.check(id, by, command)?;
                id.to_string()
            }
            None => self.sessions.open(by, command),
        };
        let submitted = match action {
            Action::Cancel => {
                self.sessions.end(&sessionid, by, command);
                return Ok(Some(answer(node, &sessionid, "canceled")));
            }
            // "Possible Errors" `bad-action`: the one stage offers `complete` only.
            Action::Prev | Action::Next => return Err(Refusal::BadAction.into()),
            Action::Execute | Action::Complete => Submitted::from_command(request),
        };
        let fields = command.fields();
        let submitted = match submitted {
            Some(s) => s,
            None if fields.is_empty() => Submitted::default(),
            None => {
                let actions = Element::new("actions", NS)
                    .with_attr("execute", "complete")
                    .with_child(Element::new("complete", NS));
                return Ok(Some(
                    answer(node, &sessionid, "executing")
                        .with_child(actions)
                        .with_child(form::build("form", command.name(), &fields)),
                ));
            }
        };
        // A refused form leaves the session open: the admin may correct it and submit again.
        let done = command.run(core, by, &submitted).await?;
        self.sessions.end(&sessionid, by, command);
        let mut out = answer(node, &sessionid, "completed").with_child(
            Element::new("note", NS)
                .with_attr("type", "info")
                .with_text(done.note),
        );
        if let Some(result) = done.result {
            out.push_child(result);
        }
        Ok(Some(out))
    }

    async fn disco_node(
        &self,
        _core: &Arc<Core>,
        to: &BareJid,
        from: &Jid,
        query: &Element,
    ) -> Option<IqResult> {
        if to.local().is_some() {
            return None;
        }
        let node = query.attr("node")?;
        let command = Command::from_node(node);
        if node != NS && command.is_none() {
            return None;
        }
        let mut out = Element::new("query", query.ns()).with_attr("node", node);
        if query.ns() == ns::DISCO_ITEMS {
            // XEP-0050 §2.2: only the commands the requester may run.
            if node == NS && self.admins.contains(from) {
                for c in Command::ALL {
                    out.push_child(
                        Element::new("item", ns::DISCO_ITEMS)
                            .with_attr("jid", to.as_str())
                            .with_attr("node", c.node())
                            .with_attr("name", c.name()),
                    );
                }
            }
            return Some(Ok(Some(out)));
        }
        match command {
            // §2.3: a command node is an `automation/command-node` with both features.
            Some(c) => {
                if let Err(e) = self.admin(Some(from)) {
                    return Some(Err(e));
                }
                out.push_child(identity("automation", "command-node", Some(c.name())));
                out.push_child(feature(NS));
                out.push_child(feature(ns::DATA_FORMS));
            }
            None => out.push_child(identity("automation", "command-list", None)),
        }
        Some(Ok(Some(out)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rookery_core::{CoreBuilder, CoreConfig, MemoryAccounts};
    use rookery_proto::IqType;

    fn core(admins: &Arc<Admins>) -> Arc<Core> {
        CoreBuilder::new(CoreConfig::default(), Arc::new(MemoryAccounts::new()))
            .module(Arc::new(AdHoc::new(admins.clone())))
            .build()
            .unwrap()
    }

    fn command(from: &str, node: &str, form: Option<Element>) -> Stanza {
        let mut c = Element::new("command", NS)
            .with_attr("node", node)
            .with_attr("action", "execute");
        if let Some(f) = form {
            c.push_child(f);
        }
        Stanza::iq(IqType::Set, "1", Jid::parse(from).ok(), None, c)
    }

    #[tokio::test]
    async fn an_admin_gets_the_form_then_the_result_and_others_are_forbidden() {
        let admins = Admins::new(vec![BareJid::parse("root@localhost").unwrap()]);
        let core = core(&admins);
        let m = AdHoc::new(admins.clone());
        let to = BareJid::parse("localhost").unwrap();
        let add = Command::AddUser.node();
        let form = m
            .handle_iq(&core, &to, &command("root@localhost/x", add, None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(form.attr("status"), Some("executing"));
        let mut x = form.get_child("x", ns::DATA_FORMS).unwrap().clone();
        x.set_attr("type", "submit");
        for f in x.children_mut() {
            match f.attr("var") {
                Some("accountjid") => {
                    f.push_child(Element::new("value", ns::DATA_FORMS).with_text("new@localhost"))
                }
                Some("password") => {
                    f.push_child(Element::new("value", ns::DATA_FORMS).with_text("pw"))
                }
                _ => {}
            }
        }
        let done = m
            .handle_iq(&core, &to, &command("root@localhost/x", add, Some(x)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.attr("status"), Some("completed"));
        assert!(core.accounts().exists("localhost", "new").await.unwrap());
        let e = m
            .handle_iq(&core, &to, &command("new@localhost/x", add, None))
            .await
            .unwrap_err();
        assert_eq!(e.condition, StanzaErrorCondition::Forbidden);
        // Reloaded without root: forbidden from now on.
        admins.set(Vec::new());
        assert!(m
            .handle_iq(&core, &to, &command("root@localhost/x", add, None))
            .await
            .is_err());
    }
}
