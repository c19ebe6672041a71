//! Service administration, one implementation for every face an administrator uses: the REST
//! admin API (`rookery-http`) and XEP-0133 ad-hoc commands (`rookery-adhoc`). Each operation
//! acts through the same code as the protocol: accounts through the core's account directory
//! (as in-band registration), removal as in-band removal (XEP-0077 §3.2), a session ended with
//! a stream error (RFC 6120 §4.9).

use std::sync::Arc;

use bytes::Bytes;
use rookery_jid::{BareJid, Jid};
use rookery_proto::{ns, StreamError, StreamErrorCondition};
use rookery_sasl::{Credentials, DEFAULT_ITERATIONS};
use rookery_xml::Element;

use crate::accounts::AccountError;
use crate::modules::register::remove_account;
use crate::router::Core;

/// Why an administrative operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The JID is not an account of the served domain.
    #[error("{0} is not an account of this server")]
    NotLocal(String),
    /// The password cannot be used.
    #[error("invalid password: {0}")]
    Password(String),
    /// The account already exists.
    #[error("{0} already exists")]
    Exists(String),
    /// No such account or session.
    #[error("{0} not found")]
    NotFound(String),
    /// The account directory failed.
    #[error("{0}")]
    Accounts(AccountError),
}

impl From<AccountError> for AdminError {
    fn from(e: AccountError) -> Self {
        AdminError::Accounts(e)
    }
}

/// `jid`'s localpart if it is an account of a domain `core` hosts (any virtual host).
fn local_of<'a>(core: &Core, jid: &'a BareJid) -> Result<&'a str, AdminError> {
    jid.local()
        .filter(|_| core.is_local_domain(jid.domain()))
        .ok_or_else(|| AdminError::NotLocal(jid.to_string()))
}

/// Derives SASL credentials off the async threads: it is deliberately slow.
async fn credentials(password: String) -> Result<Credentials, AdminError> {
    if password.is_empty() {
        return Err(AdminError::Password("empty".into()));
    }
    tokio::task::spawn_blocking(move || Credentials::derive(&password, DEFAULT_ITERATIONS))
        .await
        .map_err(|e| AdminError::Password(e.to_string()))?
        .map_err(|e| AdminError::Password(e.to_string()))
}

/// Creates the account `jid` with `password`.
pub async fn add_user(core: &Arc<Core>, jid: &BareJid, password: String) -> Result<(), AdminError> {
    let local = local_of(core, jid)?;
    let creds = credentials(password).await?;
    match core.accounts().create(jid.domain(), local, &creds).await {
        Ok(()) => Ok(()),
        Err(AccountError::Conflict) => Err(AdminError::Exists(jid.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Replaces the password of `jid`. Sessions already logged in stay.
pub async fn set_password(
    core: &Arc<Core>,
    jid: &BareJid,
    password: String,
) -> Result<(), AdminError> {
    let local = local_of(core, jid)?;
    let creds = credentials(password).await?;
    if core
        .accounts()
        .set_credentials(jid.domain(), local, &creds)
        .await?
    {
        Ok(())
    } else {
        Err(AdminError::NotFound(jid.to_string()))
    }
}

/// Removes the account `jid` as in-band removal does (sessions closed, contacts told).
pub async fn delete_user(core: &Arc<Core>, jid: &BareJid) -> Result<(), AdminError> {
    local_of(core, jid)?;
    if remove_account(core, jid).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(jid.to_string()))
    }
}

/// Ends the session `jid` (a full JID), or every session of an account (a bare JID), with
/// `policy-violation` and `reason` as the error's text (RFC 6120 §4.9.3.14): the client sees
/// why, and a well-behaved one does not reconnect at once. How many sessions were ended.
pub fn end_sessions(core: &Core, jid: &Jid, reason: &str) -> usize {
    let sessions = if jid.is_full() {
        core.session(jid).into_iter().collect()
    } else {
        core.sessions_of(&jid.to_bare())
            .into_iter()
            .map(|(h, _)| h)
            .collect::<Vec<_>>()
    };
    for s in &sessions {
        core.end_session(
            s,
            StreamError::with_text(StreamErrorCondition::PolicyViolation, reason),
        );
    }
    sessions.len()
}

/// Writes a `normal` message from the server's domain into every online session's queue
/// (RFC 6121 §5.2.2: a standalone message, no reply expected); how many sessions took it.
/// Straight to the sessions, not through the router: it is for every resource, and no
/// per-recipient rule (carbons, blocking the server's own domain) applies to it.
pub fn announce(core: &Core, subject: Option<&str>, body: &str) -> usize {
    let mut sent = 0;
    for session in core.sessions() {
        let mut message = Element::new("message", ns::CLIENT)
            .with_attr("from", core.domain())
            .with_attr("to", session.jid().as_str())
            .with_attr("type", "normal");
        if let Some(subject) = subject.filter(|s| !s.is_empty()) {
            message.push_child(Element::new("subject", ns::CLIENT).with_text(subject));
        }
        message.push_child(Element::new("body", ns::CLIENT).with_text(body));
        if session.send(Bytes::from(message.to_bytes())) {
            sent += 1;
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{CoreBuilder, CoreConfig, MemoryAccounts};

    #[tokio::test]
    async fn accounts_are_created_changed_and_removed_only_on_the_served_domain() {
        let core = CoreBuilder::new(CoreConfig::default(), Arc::new(MemoryAccounts::new()))
            .build()
            .unwrap();
        let alice = BareJid::new(Some("alice"), core.domain()).unwrap();
        add_user(&core, &alice, "pw".into()).await.unwrap();
        assert!(matches!(
            add_user(&core, &alice, "pw".into()).await,
            Err(AdminError::Exists(_))
        ));
        set_password(&core, &alice, "new".into()).await.unwrap();
        assert!(matches!(
            set_password(&core, &alice, String::new()).await,
            Err(AdminError::Password(_))
        ));
        let remote = BareJid::new(Some("alice"), "elsewhere.example").unwrap();
        assert!(matches!(
            add_user(&core, &remote, "pw".into()).await,
            Err(AdminError::NotLocal(_))
        ));
        delete_user(&core, &alice).await.unwrap();
        assert!(matches!(
            delete_user(&core, &alice).await,
            Err(AdminError::NotFound(_))
        ));
        assert_eq!(announce(&core, None, "hello"), 0);
    }
}
