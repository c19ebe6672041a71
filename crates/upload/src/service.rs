//! The upload service at `upload.<domain>` (XEP-0363 §4–§5): disco, slot requests from the
//! server's own users, and the files of a deleted account removed with it.

use std::path::Path;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rookery_core::modules::disco::{feature, identity};
use rookery_core::{
    priority, Core, Declaration, DomainRoute, Event, EventKind, Module, Undelivered,
};
use rookery_jid::Jid;
use rookery_proto::form::{Field, Form};
use rookery_proto::time::now_unix;
use rookery_proto::{
    ns as pns, IqType, MessageType, Stanza, StanzaError, StanzaErrorCondition as Cond, StanzaKind,
};
use rookery_xml::Element;

use crate::config::UploadConfig;
use crate::error::UploadError;
use crate::files::Files;
use crate::slot::{encode_segment, owner_id, slot_id, PutGrant, Signer, SlotRequest};
use crate::NS;

/// The upload service: slots over XMPP, files over HTTP ([`crate::http`]).
pub struct Upload {
    pub(crate) config: UploadConfig,
    jid: String,
    base_url: String,
    pub(crate) files: Files,
    pub(crate) signer: Signer,
    core: OnceLock<Weak<Core>>,
}

/// The key file's length in bytes.
const KEY_LEN: usize = 32;

/// Reads the signing key from `path`, or creates it (mode 0600) on first start.
fn load_key(path: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(k) if k.len() == KEY_LEN => return Ok(k),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a {KEY_LEN}-byte key", path.display()),
            ))
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let key: [u8; KEY_LEN] = rand::random();
    if !create_key(path, &key)? {
        // Another node of a cluster, starting at the same time on the shared file, made it
        // first: its key is everybody's, and complete (it is linked only once written).
        return load_key(path);
    }
    tracing::info!(path = %path.display(), "generated the upload signing key");
    Ok(key.to_vec())
}

/// Makes `path` hold `key` as one step: written and synced under a name of this process's
/// own, then linked to `path` only if nothing is there (a crash leaves no short key that
/// would stop every later start, and no key is ever replaced). `false` when `path` existed.
fn create_key(path: &Path, key: &[u8]) -> std::io::Result<bool> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".{}.{:x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let tmp = path.with_file_name(name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let written = opts.open(&tmp).and_then(|mut file| {
        std::io::Write::write_all(&mut file, key)?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    }
    // The link is durable once the directory is.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(true)
}

impl Upload {
    /// The service for `domain`: files under `[upload] dir` (default `<data_dir>/upload`),
    /// URLs on `[upload] url` or `default_url`, the signing key in `[upload] key_file`
    /// (default `<data_dir>/upload.key`).
    pub fn new(
        config: UploadConfig,
        domain: &str,
        data_dir: &Path,
        default_url: &str,
    ) -> std::io::Result<Arc<Upload>> {
        let key = load_key(
            &config
                .key_file
                .clone()
                .unwrap_or_else(|| data_dir.join("upload.key")),
        )?;
        let root = config
            .dir
            .clone()
            .unwrap_or_else(|| data_dir.join("upload"));
        let base_url = config
            .url
            .clone()
            .unwrap_or_else(|| default_url.to_string())
            .trim_end_matches('/')
            .to_string();
        Ok(Arc::new(Upload {
            jid: config
                .domain
                .clone()
                .unwrap_or_else(|| format!("upload.{domain}")),
            base_url,
            files: Files::new(root),
            signer: Signer::new(key),
            config,
            core: OnceLock::new(),
        }))
    }

    /// The service's JID.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// Routes the service's domain to it and starts the hourly purge of expired files.
    pub fn attach(self: &Arc<Self>, core: &Arc<Core>) {
        let _ = self.core.set(Arc::downgrade(core));
        core.register_domain(&self.jid, self.clone());
        if self.config.expire_after_secs > 0 {
            let me = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    tick.tick().await;
                    let Some(up) = me.upgrade() else { return };
                    let age = Duration::from_secs(up.config.expire_after_secs);
                    let cutoff = SystemTime::now()
                        .checked_sub(age)
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    match up.files.purge(cutoff).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(files = n, "expired uploads deleted"),
                        Err(e) => tracing::warn!(error = %e, "purging expired uploads"),
                    }
                }
            });
        }
    }

    /// The module that deletes an account's files with the account.
    pub fn module(self: &Arc<Self>) -> Arc<dyn Module> {
        Arc::new(AccountFiles(self.clone()))
    }

    /// §4: a slot for `from`, or why not.
    async fn slot(&self, core: &Core, from: &Jid, req: &Element) -> Result<Element, UploadError> {
        if from.local().is_none() || !core.is_local_domain(from.domain()) {
            return Err(UploadError::Forbidden);
        }
        let req = SlotRequest::parse(req)?;
        if req.size > self.config.max_file_bytes {
            return Err(UploadError::TooLarge {
                max: self.config.max_file_bytes,
            });
        }
        let owner = owner_id(&from.to_bare());
        let used = self.files.used(&owner).await?;
        if used.saturating_add(req.size) > self.config.quota_bytes {
            return Err(UploadError::QuotaReached {
                used,
                quota: self.config.quota_bytes,
            });
        }
        let slot = slot_id();
        let expires = now_unix()
            .saturating_add(i64::try_from(self.config.put_valid_secs).unwrap_or(i64::MAX));
        let content_type = req.content_type.as_deref().unwrap_or("");
        let sig = self.signer.sign(&PutGrant {
            owner: &owner,
            slot: &slot,
            filename: &req.filename,
            size: req.size,
            content_type,
            expires,
        });
        let get = format!(
            "{}/upload/{owner}/{slot}/{}",
            self.base_url,
            encode_segment(&req.filename)
        );
        let put = format!(
            "{get}?size={}&type={}&expires={expires}&sig={sig}",
            req.size,
            encode_segment(content_type)
        );
        tracing::debug!(user = %from.to_bare(), size = req.size, "upload slot");
        Ok(Element::new("slot", NS)
            .with_child(Element::new("put", NS).with_attr("url", put))
            .with_child(Element::new("get", NS).with_attr("url", get)))
    }

    fn disco_info(&self) -> Element {
        let mut q = Element::new("query", pns::DISCO_INFO).with_child(identity(
            "store",
            "file",
            Some("HTTP File Upload"),
        ));
        for f in [pns::DISCO_INFO, pns::DISCO_ITEMS, NS] {
            q.push_child(feature(f));
        }
        // §3: the size limit, so clients can refuse large files before asking.
        let form = Form::new("result", NS).with(Field::new(
            "max-file-size",
            "text-single",
            self.config.max_file_bytes.to_string(),
        ));
        q.push_child(form.to_element());
        q
    }
}

fn unavailable(stanza: Stanza) -> Box<Undelivered> {
    Undelivered::new(stanza, StanzaError::new(Cond::ServiceUnavailable))
}

#[async_trait]
impl DomainRoute for Upload {
    async fn deliver(&self, stanza: Stanza) -> Result<(), Box<Undelivered>> {
        let Some(core) = self.core.get().and_then(Weak::upgrade) else {
            return Err(unavailable(stanza));
        };
        let Some(from) = stanza.from().cloned() else {
            return Ok(());
        };
        if stanza.kind() != StanzaKind::Iq(IqType::Get)
            || stanza.to().and_then(Jid::local).is_some()
        {
            return match stanza.kind() {
                StanzaKind::Iq(IqType::Get | IqType::Set)
                | StanzaKind::Message(MessageType::Normal | MessageType::Chat) => {
                    Err(unavailable(stanza))
                }
                _ => Ok(()),
            };
        }
        let Some(payload) = stanza.payload() else {
            return Err(unavailable(stanza));
        };
        let answer = if payload.is("request", NS) {
            match self.slot(&core, &from, payload).await {
                Ok(slot) => Some(slot),
                Err(e) => {
                    core.reply_error(&stanza, e.to_stanza_error()).await;
                    return Ok(());
                }
            }
        } else if payload.is("query", pns::DISCO_INFO) && payload.attr("node").is_none() {
            Some(self.disco_info())
        } else if payload.is("query", pns::DISCO_ITEMS) && payload.attr("node").is_none() {
            Some(Element::new("query", pns::DISCO_ITEMS))
        } else if payload.is("ping", pns::PING) {
            None
        } else {
            return Err(unavailable(stanza));
        };
        core.route(stanza.iq_result(answer)).await;
        Ok(())
    }

    fn name(&self) -> Option<String> {
        Some("HTTP File Upload".into())
    }
}

/// Deletes an account's files when the account is deleted.
struct AccountFiles(Arc<Upload>);

#[async_trait]
impl Module for AccountFiles {
    fn name(&self) -> &'static str {
        "upload"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            events: vec![(EventKind::AccountDeleted, priority::DEFAULT)],
            ..Declaration::default()
        }
    }

    async fn event(&self, _core: &Arc<Core>, event: &Event) {
        if let Event::AccountDeleted(jid) = event {
            if let Err(e) = self.0.files.remove_owner(&owner_id(jid)).await {
                tracing::warn!(user = %jid, error = %e, "deleting the uploads of an account");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_key_appears_whole_once_and_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload.key");
        assert!(create_key(&path, &[1; KEY_LEN]).unwrap());
        assert!(!create_key(&path, &[2; KEY_LEN]).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), [1; KEY_LEN]);
        // Nodes starting together on a shared file all get the one key.
        let other = dir.path().join("shared.key");
        let keys: Vec<Vec<u8>> = std::thread::scope(|s| {
            let starts: Vec<_> = (0..8).map(|_| s.spawn(|| load_key(&other))).collect();
            starts
                .into_iter()
                .map(|t| t.join().unwrap().unwrap())
                .collect()
        });
        assert!(keys
            .iter()
            .all(|k| Some(k) == keys.first() && k.len() == KEY_LEN));
        // Only the keys remain: no temporary file left behind.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["shared.key", "upload.key"]);
    }
}
