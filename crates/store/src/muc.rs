//! Persistent multi-user chat rooms (XEP-0045): each room's configuration, subject and
//! affiliations, saved whole when they change (a room's lists are short) and loaded at start.

use crate::db::{with_pool, write_tx};
use crate::{now_unix, Store, StoreError};

/// An affiliation row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAffiliation {
    /// The bare JID.
    pub jid: String,
    /// `owner`, `admin`, `member` or `outcast`.
    pub affiliation: String,
    /// A reserved nickname.
    pub nick: Option<String>,
    /// The reason given.
    pub reason: Option<String>,
}

/// A stored room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoom {
    /// The room's localpart.
    pub room: String,
    /// The configuration (JSON, written and read by rookery-muc).
    pub config: String,
    /// The subject.
    pub subject: String,
    /// The nickname of who set it.
    pub subject_by: Option<String>,
    /// The XEP-0421 occupant id of who set it.
    pub subject_occupant_id: Option<String>,
    /// When it was set (Unix seconds).
    pub subject_at: Option<i64>,
    /// The creator's bare JID.
    pub creator: String,
    /// The occupant-id salt.
    pub salt: String,
    /// The affiliations.
    pub affiliations: Vec<StoredAffiliation>,
}

/// The rooms of every MUC service, from [`Store::muc`].
#[derive(Clone, Copy, Debug)]
pub struct Muc<'a> {
    store: &'a Store,
}

/// room, config, subject, subject_by, subject_occupant_id, subject_at, creator, salt.
type RoomRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    String,
    String,
);
type AffiliationRow = (String, String, String, Option<String>, Option<String>);

impl<'a> Muc<'a> {
    pub(crate) fn new(store: &'a Store) -> Muc<'a> {
        Muc { store }
    }

    /// Every stored room of `service`, with its affiliations.
    pub async fn rooms(&self, service: &str) -> Result<Vec<StoredRoom>, StoreError> {
        let (rooms, affs): (Vec<RoomRow>, Vec<AffiliationRow>) = with_pool!(self.store, pool => {
            let rooms = sqlx::query_as(
                "SELECT room, config, subject, subject_by, subject_occupant_id, subject_at, \
                 creator, salt FROM muc_rooms \
                 WHERE service = $1 ORDER BY room",
            )
            .bind(service)
            .fetch_all(pool)
            .await?;
            let affs = sqlx::query_as(
                "SELECT room, jid, affiliation, nick, reason FROM muc_affiliations \
                 WHERE service = $1 ORDER BY room, jid",
            )
            .bind(service)
            .fetch_all(pool)
            .await?;
            (rooms, affs)
        });
        let mut out: Vec<StoredRoom> = rooms
            .into_iter()
            .map(
                |(
                    room,
                    config,
                    subject,
                    subject_by,
                    subject_occupant_id,
                    subject_at,
                    creator,
                    salt,
                )| StoredRoom {
                    room,
                    config,
                    subject,
                    subject_by,
                    subject_occupant_id,
                    subject_at,
                    creator,
                    salt,
                    affiliations: Vec::new(),
                },
            )
            .collect();
        for (room, jid, affiliation, nick, reason) in affs {
            if let Ok(i) = out.binary_search_by(|r| r.room.as_str().cmp(room.as_str())) {
                if let Some(r) = out.get_mut(i) {
                    r.affiliations.push(StoredAffiliation {
                        jid,
                        affiliation,
                        nick,
                        reason,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Saves `room` of `service` whole (row and affiliations) in one transaction.
    pub async fn save(&self, service: &str, room: &StoredRoom) -> Result<(), StoreError> {
        let (service, room, now) = (service.to_owned(), room.clone(), now_unix());
        write_tx!(self.store, conn => {
            sqlx::query(
                "INSERT INTO muc_rooms \
                 (service, room, config, subject, subject_by, subject_occupant_id, subject_at, \
                 creator, salt, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (service, room) DO UPDATE SET config = excluded.config, \
                 subject = excluded.subject, subject_by = excluded.subject_by, \
                 subject_occupant_id = excluded.subject_occupant_id, \
                 subject_at = excluded.subject_at",
            )
            .bind(&service)
            .bind(&room.room)
            .bind(&room.config)
            .bind(&room.subject)
            .bind(&room.subject_by)
            .bind(&room.subject_occupant_id)
            .bind(room.subject_at)
            .bind(&room.creator)
            .bind(&room.salt)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            sqlx::query("DELETE FROM muc_affiliations WHERE service = $1 AND room = $2")
                .bind(&service)
                .bind(&room.room)
                .execute(&mut *conn)
                .await?;
            for a in &room.affiliations {
                sqlx::query(
                    "INSERT INTO muc_affiliations (service, room, jid, affiliation, nick, reason) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&service)
                .bind(&room.room)
                .bind(&a.jid)
                .bind(&a.affiliation)
                .bind(&a.nick)
                .bind(&a.reason)
                .execute(&mut *conn)
                .await?;
            }
        });
        Ok(())
    }

    /// Deletes room `room` of `service` and its affiliations; whether it existed.
    pub async fn delete(&self, service: &str, room: &str) -> Result<bool, StoreError> {
        let n = crate::db::execute(
            self.store,
            "DELETE FROM muc_rooms WHERE service = $1 AND room = $2",
            &[service, room],
        )
        .await?;
        Ok(n > 0)
    }
}
