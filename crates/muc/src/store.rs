//! Where persistent rooms are kept: [`RoomStore`], and [`SqlRooms`] over `rookery-store`.
//! Temporary rooms are never stored.

use async_trait::async_trait;
use rookery_jid::BareJid;
use rookery_store::muc::{StoredAffiliation, StoredRoom};
use rookery_store::{Store, StoreError};

use crate::role::Affiliation;
use crate::room::{Affiliated, Snapshot, Subject};

/// Persistent rooms of one service.
#[async_trait]
pub trait RoomStore: Send + Sync + 'static {
    /// Every stored room of `service`: (localpart, snapshot). Rooms that cannot be read are
    /// skipped with a log line rather than stopping the service.
    async fn load(&self, service: &str) -> Result<Vec<(String, Snapshot)>, StoreError>;
    /// Saves room `room` (committed when this returns).
    async fn save(&self, service: &str, room: &str, s: &Snapshot) -> Result<(), StoreError>;
    /// Deletes room `room`.
    async fn delete(&self, service: &str, room: &str) -> Result<(), StoreError>;
}

/// [`RoomStore`] over the SQL store.
#[derive(Debug, Clone)]
pub struct SqlRooms(pub Store);

fn to_row(room: &str, s: &Snapshot) -> Result<StoredRoom, StoreError> {
    Ok(StoredRoom {
        room: room.to_string(),
        config: serde_json::to_string(&s.config).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        subject: s.subject.text.clone(),
        subject_by: s.subject.by.clone(),
        subject_occupant_id: s.subject.occupant_id.clone(),
        subject_at: s.subject.at,
        creator: s.creator.as_str().to_string(),
        salt: s.salt.clone(),
        affiliations: s
            .affiliations
            .iter()
            .map(|(jid, a)| StoredAffiliation {
                jid: jid.as_str().to_string(),
                affiliation: a.affiliation.as_str().to_string(),
                nick: a.nick.clone(),
                reason: a.reason.clone(),
            })
            .collect(),
    })
}

fn from_row(r: StoredRoom) -> Result<Snapshot, String> {
    let config = serde_json::from_str(&r.config).map_err(|e| format!("config: {e}"))?;
    let creator = BareJid::parse(&r.creator).map_err(|e| format!("creator: {e}"))?;
    let mut affiliations = Vec::new();
    for a in r.affiliations {
        let jid = BareJid::parse(&a.jid).map_err(|e| format!("affiliation jid: {e}"))?;
        let affiliation = Affiliation::parse(&a.affiliation)
            .ok_or_else(|| format!("affiliation {:?}", a.affiliation))?;
        affiliations.push((
            jid,
            Affiliated {
                affiliation,
                nick: a.nick,
                reason: a.reason,
            },
        ));
    }
    Ok(Snapshot {
        config,
        affiliations,
        subject: Subject {
            text: r.subject,
            by: r.subject_by,
            occupant_id: r.subject_occupant_id,
            at: r.subject_at,
        },
        creator,
        salt: r.salt,
    })
}

#[async_trait]
impl RoomStore for SqlRooms {
    async fn load(&self, service: &str) -> Result<Vec<(String, Snapshot)>, StoreError> {
        let mut out = Vec::new();
        for r in self.0.muc().rooms(service).await? {
            let name = r.room.clone();
            match from_row(r) {
                Ok(s) => out.push((name, s)),
                Err(e) => tracing::error!(room = %name, error = %e, "skipping unreadable room"),
            }
        }
        Ok(out)
    }

    async fn save(&self, service: &str, room: &str, s: &Snapshot) -> Result<(), StoreError> {
        self.0.muc().save(service, &to_row(room, s)?).await
    }

    async fn delete(&self, service: &str, room: &str) -> Result<(), StoreError> {
        self.0.muc().delete(service, room).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::roomconfig::RoomConfig;

    #[tokio::test]
    async fn rooms_round_trip_through_sqlite() {
        let store = SqlRooms(Store::open("sqlite::memory:").await.unwrap());
        let snap = Snapshot {
            config: RoomConfig {
                persistent: true,
                members_only: true,
                ..RoomConfig::default()
            },
            affiliations: vec![(
                BareJid::parse("crone@shakespeare.lit").unwrap(),
                Affiliated {
                    affiliation: Affiliation::Owner,
                    nick: Some("crone".into()),
                    reason: None,
                },
            )],
            subject: Subject {
                text: "Fire burn".into(),
                by: Some("crone".into()),
                occupant_id: Some("o1".into()),
                at: Some(1_700_000_000),
            },
            creator: BareJid::parse("crone@shakespeare.lit").unwrap(),
            salt: "s".into(),
        };
        store.save("conf.lit", "coven", &snap).await.unwrap();
        store.save("conf.lit", "coven", &snap).await.unwrap();
        let loaded = store.load("conf.lit").await.unwrap();
        assert_eq!(loaded.len(), 1);
        let (name, back) = loaded.first().unwrap();
        assert_eq!(name, "coven");
        assert_eq!(back.config, snap.config);
        assert_eq!(back.affiliations, snap.affiliations);
        assert_eq!(back.subject, snap.subject);
        store.delete("conf.lit", "coven").await.unwrap();
        assert!(store.load("conf.lit").await.unwrap().is_empty());
    }
}
