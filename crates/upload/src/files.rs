//! Uploaded files on disk: `<dir>/<owner id>/<slot id>/<file name>`, the declared type in
//! `<dir>/<owner id>/<slot id>.type`. One directory per account makes its quota a directory
//! walk and its deletion one `remove_dir_all`; one per slot keeps the client's file name
//! (for `Content-Disposition`) without letting two uploads collide.
//!
//! An upload is written to `<slot id>.part`, synced, then renamed into place: a file is
//! either complete or absent, and the `201 Created` the uploader gets means it is on disk.
//! The `.part` file is also the slot's lock (see [`Files::put`]).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::UploadError;
use crate::slot::{is_id, PutGrant};

/// A stored file opened for reading.
#[derive(Debug)]
pub struct Stored {
    /// The open file.
    pub file: fs::File,
    /// Its length.
    pub len: u64,
    /// The type declared at upload, if any.
    pub content_type: Option<String>,
}

/// The upload directory.
#[derive(Debug, Clone)]
pub struct Files {
    root: PathBuf,
}

fn io_err(e: io::Error) -> UploadError {
    tracing::warn!(error = %e, "upload storage");
    UploadError::Io
}

impl Files {
    /// Files under `root` (created on first upload).
    pub fn new(root: PathBuf) -> Files {
        Files { root }
    }

    fn owner_dir(&self, owner: &str) -> PathBuf {
        self.root.join(owner)
    }

    /// Bytes stored for `owner` (finished uploads only).
    pub async fn used(&self, owner: &str) -> Result<u64, UploadError> {
        let mut total = 0;
        let mut slots = match fs::read_dir(self.owner_dir(owner)).await {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(e)),
        };
        while let Some(slot) = slots.next_entry().await.map_err(io_err)? {
            if !slot.file_type().await.map_err(io_err)?.is_dir() {
                continue;
            }
            let mut files = fs::read_dir(slot.path()).await.map_err(io_err)?;
            while let Some(f) = files.next_entry().await.map_err(io_err)? {
                total += f.metadata().await.map_err(io_err)?.len();
            }
        }
        Ok(total)
    }

    /// Stores `body` for the slot `g` grants: exactly `g.size` bytes, each chunk within
    /// `idle` of the previous one, the owner's total within `quota`.
    ///
    /// The lock of a slot is an advisory lock on its `.part` file: one PUT at a time writes
    /// it, and a PUT whose process died (`kill -9` mid-body) holds it no more, so the slot,
    /// still unused, takes the file again. A slot whose directory holds its file is used.
    pub async fn put<S, E>(
        &self,
        g: &PutGrant<'_>,
        body: S,
        quota: u64,
        idle: Duration,
    ) -> Result<(), UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let used = self.used(g.owner).await?;
        if used.saturating_add(g.size) > quota {
            return Err(UploadError::QuotaReached { used, quota });
        }
        let dir = self.owner_dir(g.owner);
        fs::create_dir_all(&dir).await.map_err(io_err)?;
        let part = dir.join(format!("{}.part", g.slot));
        let slot_dir = dir.join(g.slot);
        let Some(mut file) = lock(&part).await? else {
            return Err(UploadError::Exists);
        };
        // Under the lock: a finished upload, or one cut off earlier (its `.part` and `.type`
        // are rewritten, its empty directory kept).
        if holds_file(&slot_dir).await? {
            let _ = fs::remove_file(&part).await;
            return Err(UploadError::Exists);
        }
        let mut result = fs::create_dir_all(&slot_dir).await.map_err(io_err);
        if result.is_ok() {
            result = self.write(g, &mut file, &part, &slot_dir, body, idle).await;
        }
        if result.is_err() {
            // Still under the lock, so that no other PUT's `.part` goes.
            let _ = fs::remove_file(&part).await;
            let _ = fs::remove_file(dir.join(format!("{}.type", g.slot))).await;
            let _ = fs::remove_dir_all(&slot_dir).await;
        }
        drop(file);
        result
    }

    async fn write<S, E>(
        &self,
        g: &PutGrant<'_>,
        file: &mut fs::File,
        part: &Path,
        slot_dir: &Path,
        mut body: S,
        idle: Duration,
    ) -> Result<(), UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        file.set_len(0).await.map_err(io_err)?;
        let mut written: u64 = 0;
        loop {
            let chunk = match tokio::time::timeout(idle, body.next()).await {
                Err(_) => return Err(UploadError::Mismatch("the body stalled")),
                Ok(None) => break,
                Ok(Some(Err(_))) => return Err(UploadError::Mismatch("the body was cut off")),
                Ok(Some(Ok(c))) => c,
            };
            written = written.saturating_add(chunk.len() as u64);
            if written > g.size {
                return Err(UploadError::Mismatch(
                    "the body is longer than the slot's size",
                ));
            }
            file.write_all(&chunk).await.map_err(io_err)?;
        }
        if written != g.size {
            return Err(UploadError::Mismatch(
                "the body is shorter than the slot's size",
            ));
        }
        file.sync_all().await.map_err(io_err)?;
        let type_path = part.with_file_name(format!("{}.type", g.slot));
        if g.content_type.is_empty() {
            // Left by a PUT cut off earlier that declared one.
            match fs::remove_file(&type_path).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(e)),
                _ => {}
            }
        } else {
            fs::write(&type_path, g.content_type)
                .await
                .map_err(io_err)?;
        }
        fs::rename(part, slot_dir.join(g.filename))
            .await
            .map_err(io_err)?;
        // The rename is durable once the directory is.
        fs::File::open(slot_dir)
            .await
            .map_err(io_err)?
            .sync_all()
            .await
            .map_err(io_err)?;
        Ok(())
    }

    /// Opens `owner/slot/name` for reading.
    pub async fn open(&self, owner: &str, slot: &str, name: &str) -> Result<Stored, UploadError> {
        if !is_id(owner) || !is_id(slot) {
            return Err(UploadError::NotFound);
        }
        let dir = self.owner_dir(owner);
        let path = dir.join(slot).join(name);
        let file = match fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(UploadError::NotFound),
            Err(e) => return Err(io_err(e)),
        };
        let len = file.metadata().await.map_err(io_err)?.len();
        let content_type = match fs::read_to_string(dir.join(format!("{slot}.type"))).await {
            Ok(t) => Some(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(e)),
        };
        Ok(Stored {
            file,
            len,
            content_type,
        })
    }

    /// Deletes every file of `owner` (its account is gone).
    pub async fn remove_owner(&self, owner: &str) -> Result<(), UploadError> {
        match fs::remove_dir_all(self.owner_dir(owner)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(e)),
            _ => Ok(()),
        }
    }

    /// Deletes the uploads finished before `cutoff` and the unfinished ones older than it
    /// (a crash between the slot directory and the rename); returns how many went.
    pub async fn purge(&self, cutoff: SystemTime) -> Result<usize, UploadError> {
        let mut removed = 0;
        let mut owners = match fs::read_dir(&self.root).await {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(e)),
        };
        while let Some(owner) = owners.next_entry().await.map_err(io_err)? {
            let mut entries = match fs::read_dir(owner.path()).await {
                Ok(d) => d,
                Err(_) => continue,
            };
            while let Some(e) = entries.next_entry().await.map_err(io_err)? {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                if !is_id(name) {
                    continue;
                }
                let modified = e.metadata().await.and_then(|m| m.modified());
                if modified.is_ok_and(|m| m < cutoff) {
                    let _ = fs::remove_dir_all(e.path()).await;
                    let _ = fs::remove_file(owner.path().join(format!("{name}.type"))).await;
                    let _ = fs::remove_file(owner.path().join(format!("{name}.part"))).await;
                    removed += 1;
                }
            }
            // An owner left without files: its directory goes too (fails if not empty).
            let _ = fs::remove_dir(owner.path()).await;
        }
        Ok(removed)
    }
}

/// Opens `part` (created if missing) with an exclusive advisory lock; `None` while another
/// PUT holds it. The kernel drops the lock with its holder, a killed process included.
async fn lock(part: &Path) -> Result<Option<fs::File>, UploadError> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(part)
        .await
        .map_err(io_err)?;
    let file = file.into_std().await;
    match file.try_lock() {
        Ok(()) => Ok(Some(fs::File::from_std(file))),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(e)),
    }
}

/// Whether the slot directory `dir` holds its file (only a finished upload puts one there).
async fn holds_file(dir: &Path) -> Result<bool, UploadError> {
    match fs::read_dir(dir).await {
        Ok(mut entries) => Ok(entries.next_entry().await.map_err(io_err)?.is_some()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(e)),
    }
}

/// Reads `file` in chunks, as an HTTP body stream.
pub fn chunks(file: fs::File) -> impl Stream<Item = io::Result<Bytes>> + Send {
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::slot::{owner_id, slot_id};

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, io::Error>> + Unpin {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn a_put_is_stored_once_counted_and_purged() {
        let tmp = tempfile::tempdir().unwrap();
        let files = Files::new(tmp.path().to_path_buf());
        let owner = owner_id(&"a@b".parse().unwrap());
        let slot = slot_id();
        let g = PutGrant {
            owner: &owner,
            slot: &slot,
            filename: "x.txt",
            size: 5,
            content_type: "text/plain",
            expires: 0,
        };
        let idle = Duration::from_secs(5);
        files
            .put(&g, body(&[b"he", b"llo"]), 100, idle)
            .await
            .unwrap();
        assert_eq!(files.used(&owner).await.unwrap(), 5);
        assert_eq!(
            files.put(&g, body(&[b"hello"]), 100, idle).await,
            Err(UploadError::Exists)
        );
        let stored = files.open(&owner, &slot, "x.txt").await.unwrap();
        assert_eq!(
            (stored.len, stored.content_type.as_deref()),
            (5, Some("text/plain"))
        );
        // Over quota, wrong lengths: nothing left behind.
        let other = slot_id();
        let g2 = PutGrant {
            slot: &other,
            ..g.clone()
        };
        assert!(matches!(
            files.put(&g2, body(&[b"hello"]), 9, idle).await,
            Err(UploadError::QuotaReached { used: 5, quota: 9 })
        ));
        assert!(matches!(
            files.put(&g2, body(&[b"hell"]), 100, idle).await,
            Err(UploadError::Mismatch(_))
        ));
        assert!(matches!(
            files.put(&g2, body(&[b"hello!"]), 100, idle).await,
            Err(UploadError::Mismatch(_))
        ));
        assert_eq!(files.used(&owner).await.unwrap(), 5);
        assert_eq!(
            files.open(&owner, &other, "x.txt").await.unwrap_err(),
            UploadError::NotFound
        );
        // A PUT cut off by a crash left the directory and a partial `.part`: the slot,
        // unused, takes the file; one held by a running PUT does not.
        let cut = slot_id();
        let g3 = PutGrant {
            slot: &cut,
            ..g.clone()
        };
        let dir = tmp.path().join(&owner);
        std::fs::create_dir(dir.join(&cut)).unwrap();
        std::fs::write(dir.join(format!("{cut}.part")), b"partial content").unwrap();
        let running = std::fs::File::open(dir.join(format!("{cut}.part"))).unwrap();
        running.lock().unwrap();
        assert_eq!(
            files.put(&g3, body(&[b"hello"]), 100, idle).await,
            Err(UploadError::Exists)
        );
        drop(running);
        files.put(&g3, body(&[b"hello"]), 100, idle).await.unwrap();
        assert_eq!(files.open(&owner, &cut, "x.txt").await.unwrap().len, 5);
        assert!(!dir.join(format!("{cut}.part")).exists());
        assert_eq!(files.used(&owner).await.unwrap(), 10);
        let later = SystemTime::now() + Duration::from_secs(60);
        assert_eq!(files.purge(later).await.unwrap(), 2);
        assert_eq!(files.used(&owner).await.unwrap(), 0);
        assert!(!tmp.path().join(&owner).exists());
    }
}
