//! The XEP-0133 service administration commands this server offers: their nodes, forms and
//! what each does, through `rookery_core::admin` (the same code as the REST admin API).

use std::sync::Arc;

use rookery_core::admin::{self, AdminError};
use rookery_core::Core;
use rookery_jid::{BareJid, Jid};
use rookery_proto::{StanzaError, StanzaErrorCondition};
use rookery_xml::Element;

use crate::form::{self, Field, Submitted};
use crate::Refusal;

/// The node user-stats had before it took the XEP's; still accepted.
const OLD_USER_STATS: &str = "http://jabber.org/protocol/admin#get-user-stats";

/// One XEP-0133 command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// §4.1 Add User.
    AddUser,
    /// §4.2 Delete User.
    DeleteUser,
    /// §4.7 Change User Password.
    ChangePassword,
    /// §4.11 Get User Statistics (online resources and their addresses).
    UserStats,
    /// §4.17 Get List of Online Users.
    OnlineUsers,
    /// §4.5 End User Session.
    EndSession,
    /// §4.23 Send Announcement to Online Users.
    Announce,
}

/// What a finished command tells the admin.
#[derive(Debug)]
pub struct Done {
    /// A short line (`<note type='info'/>`).
    pub note: String,
    /// A result form, for commands that report something.
    pub result: Option<Element>,
}

impl Command {
    /// Every command, in the order disco lists them.
    pub const ALL: [Command; 7] = [
        Command::AddUser,
        Command::DeleteUser,
        Command::ChangePassword,
        Command::UserStats,
        Command::OnlineUsers,
        Command::EndSession,
        Command::Announce,
    ];

    /// The command's node (XEP-0133 §4).
    pub fn node(self) -> &'static str {
        match self {
            Command::AddUser => "http://jabber.org/protocol/admin#add-user",
            Command::DeleteUser => "http://jabber.org/protocol/admin#delete-user",
            Command::ChangePassword => "http://jabber.org/protocol/admin#change-user-password",
            Command::UserStats => "http://jabber.org/protocol/admin#user-stats",
            Command::OnlineUsers => "http://jabber.org/protocol/admin#get-online-users-list",
            Command::EndSession => "http://jabber.org/protocol/admin#end-user-session",
            Command::Announce => "http://jabber.org/protocol/admin#announce",
        }
    }

    /// The command with `node`. User-stats also answers to `#get-user-stats`, its node here
    /// before it took XEP-0133 §4.11's, so that scripts written for that keep working.
    pub fn from_node(node: &str) -> Option<Command> {
        if node == OLD_USER_STATS {
            return Some(Command::UserStats);
        }
        Self::ALL.into_iter().find(|c| c.node() == node)
    }

    /// Its human-readable name.
    pub fn name(self) -> &'static str {
        match self {
            Command::AddUser => "Add a user",
            Command::DeleteUser => "Delete users",
            Command::ChangePassword => "Change a user's password",
            Command::UserStats => "Get user statistics",
            Command::OnlineUsers => "List online users",
            Command::EndSession => "End user sessions",
            Command::Announce => "Send an announcement to online users",
        }
    }

    /// The fields to fill in; none for a command that runs at once.
    pub fn fields(self) -> Vec<Field> {
        match self {
            Command::AddUser => vec![
                Field::input("accountjid", "jid-single", "The Jabber ID to add", true),
                Field::input("password", "text-private", "The password", true),
                Field::input(
                    "password-verify",
                    "text-private",
                    "Retype the password",
                    false,
                ),
            ],
            Command::DeleteUser => vec![Field::input(
                "accountjids",
                "jid-multi",
                "The Jabber IDs to delete",
                true,
            )],
            Command::ChangePassword => vec![
                Field::input("accountjid", "jid-single", "The Jabber ID", true),
                Field::input("password", "text-private", "The new password", true),
            ],
            Command::UserStats => vec![Field::input(
                "accountjid",
                "jid-single",
                "The Jabber ID",
                true,
            )],
            Command::OnlineUsers => Vec::new(),
            Command::EndSession => vec![Field::input(
                "accountjids",
                "jid-multi",
                "Accounts (every session) or full JIDs (one session)",
                true,
            )],
            Command::Announce => vec![
                Field::input("subject", "text-single", "Subject", false),
                Field::input("announcement", "text-multi", "Announcement", true),
            ],
        }
    }

    /// Runs the command with the submitted values.
    pub async fn run(
        self,
        core: &Arc<Core>,
        by: &Jid,
        form: &Submitted,
    ) -> Result<Done, StanzaError> {
        let done = |note: String| Ok(Done { note, result: None });
        match self {
            Command::AddUser => {
                let jid = account(form.value("accountjid"))?;
                let password = required(form.value("password"), "password")?;
                if form.value("password-verify").is_some_and(|v| v != password) {
                    return Err(bad_request("the passwords differ"));
                }
                admin::add_user(core, &jid, password.to_string())
                    .await
                    .map_err(to_stanza_error)?;
                tracing::info!(user = %jid, %by, "account created by an ad-hoc command");
                done(format!("created {jid}"))
            }
            Command::DeleteUser => {
                let jids = accounts(form.values("accountjids"))?;
                for jid in &jids {
                    admin::delete_user(core, jid)
                        .await
                        .map_err(to_stanza_error)?;
                    tracing::info!(user = %jid, %by, "account deleted by an ad-hoc command");
                }
                done(format!("deleted {} accounts", jids.len()))
            }
            Command::ChangePassword => {
                let jid = account(form.value("accountjid"))?;
                let password = required(form.value("password"), "password")?;
                admin::set_password(core, &jid, password.to_string())
                    .await
                    .map_err(to_stanza_error)?;
                tracing::info!(user = %jid, %by, "password changed by an ad-hoc command");
                done(format!("password changed for {jid}"))
            }
            Command::UserStats => {
                let jid = account(form.value("accountjid"))?;
                if !core.is_local_domain(jid.domain()) {
                    return Err(bad_request("accountjid is not an account of this server"));
                }
                let sessions = core.sessions_of(&jid);
                let resources = sessions.iter().map(|(h, _)| h.jid().to_string()).collect();
                let ips = sessions
                    .iter()
                    .filter_map(|(h, _)| h.origin().map(|(peer, _)| peer.ip().to_string()))
                    .collect();
                let fields = [
                    Field::result(
                        "accountjid",
                        "jid-single",
                        "The Jabber ID",
                        vec![jid.to_string()],
                    ),
                    Field::result(
                        "onlineresources",
                        "text-multi",
                        "Online resources",
                        resources,
                    ),
                    Field::result("ipaddresses", "text-multi", "IP addresses", ips),
                ];
                Ok(Done {
                    note: format!("{} online sessions", sessions.len()),
                    result: Some(form::build("result", self.name(), &fields)),
                })
            }
            Command::OnlineUsers => {
                let mut users: Vec<String> = core
                    .sessions()
                    .iter()
                    .map(|h| h.jid().to_bare().to_string())
                    .collect();
                users.sort_unstable();
                users.dedup();
                let note = format!("{} online users", users.len());
                let fields = [Field::result(
                    "onlineuserjids",
                    "jid-multi",
                    "The list of all online users",
                    users,
                )];
                Ok(Done {
                    note,
                    result: Some(form::build("result", self.name(), &fields)),
                })
            }
            Command::EndSession => {
                let given = form.values("accountjids");
                let jids = given
                    .iter()
                    .map(|j| Jid::parse(j.trim()).map_err(|_| bad_request("invalid JID")))
                    .collect::<Result<Vec<_>, _>>()?;
                if jids.is_empty() {
                    return Err(bad_request("accountjids is required"));
                }
                let ended: usize = jids
                    .iter()
                    .map(|j| admin::end_sessions(core, j, "ended by an administrator"))
                    .sum();
                tracing::info!(ended, %by, "sessions ended by an ad-hoc command");
                done(format!("ended {ended} sessions"))
            }
            Command::Announce => {
                let body = form.values("announcement").join("\n");
                if body.trim().is_empty() {
                    return Err(bad_request("announcement is required"));
                }
                let sent = admin::announce(core, form.value("subject"), &body);
                tracing::info!(sent, %by, "announcement sent by an ad-hoc command");
                done(format!("sent to {sent} sessions"))
            }
        }
    }
}

/// A submitted value that is missing or unusable (XEP-0050 "Possible Errors": `bad-payload`).
fn bad_request(text: &str) -> StanzaError {
    Refusal::BadPayload(text.to_owned()).into()
}

fn required<'a>(value: Option<&'a str>, var: &str) -> Result<&'a str, StanzaError> {
    value.ok_or_else(|| bad_request(&format!("{var} is required")))
}

/// The account a form names: a JID with a localpart (a bare domain names no account).
fn account(given: Option<&str>) -> Result<BareJid, StanzaError> {
    let given = required(given, "accountjid")?;
    let jid = BareJid::parse(given).map_err(|_| bad_request("invalid JID"))?;
    if jid.local().is_none() {
        return Err(bad_request("accountjid names no account"));
    }
    Ok(jid)
}

fn accounts(given: &[String]) -> Result<Vec<BareJid>, StanzaError> {
    let jids = given
        .iter()
        .map(|j| BareJid::parse(j.trim()).map_err(|_| bad_request("invalid JID")))
        .collect::<Result<Vec<_>, _>>()?;
    if jids.is_empty() {
        return Err(bad_request("accountjids is required"));
    }
    Ok(jids)
}

/// The one mapping of administration errors to stanza errors (RFC 6120 §8.3.3).
fn to_stanza_error(e: AdminError) -> StanzaError {
    let condition = match &e {
        // The form named an account elsewhere or a password the policy refuses.
        AdminError::NotLocal(_) | AdminError::Password(_) => return bad_request(&e.to_string()),
        AdminError::Exists(_) => StanzaErrorCondition::Conflict,
        AdminError::NotFound(_) => StanzaErrorCondition::ItemNotFound,
        AdminError::Accounts(_) => StanzaErrorCondition::InternalServerError,
    };
    StanzaError::new(condition).with_text(e.to_string())
}
