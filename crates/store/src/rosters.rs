//! Rosters (RFC 6121 §2) with their subscription states (§3, Appendix A), versions
//! (XEP-0237) and stored inbound subscription requests (§3.1.3).
//!
//! Per account:
//! - `roster_items`: one row per contact (a normalized bare JID), with its name, groups,
//!   subscription, pending-out flag (`ask='subscribe'`), pre-approval flag (§3.4) and the roster
//!   version at which it last changed;
//! - `roster_versions`: the account's roster version, a counter bumped by every change;
//! - `roster_removed`: the version at which each removed contact was removed, so a client that
//!   presents an older version can be sent only what changed (XEP-0237 §4);
//! - `roster_pending_in`: inbound subscription requests not yet answered ("pending in"), kept
//!   apart from the items because a request does not put the requester in the roster.
//!
//! Every change that bumps the version is one transaction: the item (or its tombstone) and the
//! new version are committed together. Callers serialize changes to one account's roster.

use crate::db::{execute, with_pool, write_tx, Pool};
use crate::pg_batch::{BatchWrite, Outcomes};
use crate::writer::BoxFuture;
use crate::{now_unix, Store, StoreError};

/// The subscription state of a roster item (RFC 6121 §2.1.2.5), without the pending flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Subscription {
    /// Neither side is subscribed.
    #[default]
    None,
    /// The user is subscribed to the contact's presence.
    To,
    /// The contact is subscribed to the user's presence.
    From,
    /// Both.
    Both,
}

impl Subscription {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// Parses the attribute value (`remove` is not a state and gives `None`).
    pub fn parse(s: &str) -> Option<Subscription> {
        Some(match s {
            "none" => Subscription::None,
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => return None,
        })
    }

    /// Whether the user receives the contact's presence (`to` or `both`).
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// Whether the contact receives the user's presence (`from` or `both`).
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }
}

/// One roster item as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RosterItem {
    /// The contact's normalized bare JID.
    pub contact: String,
    /// The user-assigned name, if any.
    pub name: Option<String>,
    /// The subscription state.
    pub subscription: Subscription,
    /// Pending out: the user asked to subscribe and has no answer yet (`ask='subscribe'`).
    pub ask: bool,
    /// Pre-approved (RFC 6121 §3.4): a future request from the contact is approved at once.
    pub approved: bool,
    /// Group names, in the order the client gave them, without duplicates.
    pub groups: Vec<String>,
    /// The roster version at which this item last changed (set by the store).
    pub ver: i64,
}

/// What a roster write ([`Rosters::put`]) does with the stored inbound subscription request
/// from the item's contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Leaves it as it is (a roster set, an outbound change).
    Keep,
    /// Forgets it: the write answers it.
    Forget,
}

/// The whole roster of an account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    /// The current version (0 for a roster that never changed).
    pub ver: i64,
    /// The items, ordered by contact.
    pub items: Vec<RosterItem>,
}

/// A stored inbound subscription request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIn {
    /// The requester's bare JID.
    pub contact: String,
    /// The request as received (serialized XML), to redeliver it unchanged.
    pub stanza: String,
}

/// Group names are joined with U+001F, a character XML 1.0 forbids in text, so no group name
/// can contain it.
const GROUP_SEP: char = '\u{1f}';

fn join_groups(groups: &[String]) -> String {
    let mut out = String::new();
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push(GROUP_SEP);
        }
        out.push_str(g);
    }
    out
}

fn split_groups(s: &str) -> Vec<String> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split(GROUP_SEP).map(str::to_owned).collect()
    }
}

/// Columns of `roster_items` as read.
type ItemRow = (String, Option<String>, String, bool, bool, String, i64);

const ITEM_COLUMNS: &str = "contact, name, subscription, ask_out, approved, groups, ver";

/// A row of [`Rosters::load`]: the roster version and an item's columns as in [`ItemRow`],
/// all `NULL` on the one row of a roster without items.
type LoadRow = (
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<bool>,
    Option<String>,
    Option<i64>,
);

fn item_from_row(row: ItemRow) -> Result<RosterItem, StoreError> {
    let (contact, name, subscription, ask, approved, groups, ver) = row;
    let subscription = Subscription::parse(&subscription)
        .ok_or_else(|| StoreError::Corrupt(format!("subscription {subscription:?}")))?;
    Ok(RosterItem {
        contact,
        name,
        subscription,
        ask,
        approved,
        groups: split_groups(&groups),
        ver,
    })
}

const BUMP_VERSION: &str =
    "INSERT INTO roster_versions (domain, username, ver) VALUES ($1, $2, 1) \
     ON CONFLICT (domain, username) DO UPDATE SET ver = roster_versions.ver + 1 RETURNING ver";

/// [`Rosters::put`] on SQLite: the version bump, the item at the new version, the
/// tombstone's removal and (when `$9` is true, [`Request::Forget`]) the inbound request's
/// removal, sent as one call of statements (one round trip to the connection's thread
/// instead of four; the writer's batch transaction makes them atomic), the new version read
/// last because only the statement that yields the row is sure to run before the caller has
/// it. Parameters as [`PUT_POSTGRES`].
const PUT_SQLITE: &str = "\
     INSERT INTO roster_versions (domain, username, ver) VALUES ($1, $2, 1) \
     ON CONFLICT (domain, username) DO UPDATE SET ver = roster_versions.ver + 1; \
     INSERT INTO roster_items \
     (domain, username, contact, name, subscription, ask_out, approved, groups, ver) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
     (SELECT ver FROM roster_versions WHERE domain = $1 AND username = $2)) \
     ON CONFLICT (domain, username, contact) DO UPDATE SET name = $4, subscription = $5, \
     ask_out = $6, approved = $7, groups = $8, ver = excluded.ver; \
     DELETE FROM roster_removed WHERE domain = $1 AND username = $2 AND contact = $3; \
     DELETE FROM roster_pending_in WHERE $9 AND domain = $1 AND username = $2 AND contact = $3; \
     SELECT ver FROM roster_versions WHERE domain = $1 AND username = $2";

/// [`Rosters::put`] on PostgreSQL: the same writes as one statement of data-modifying
/// CTEs (PostgreSQL takes one statement per prepared query; SQLite has no writing CTEs), so
/// it is atomic without a transaction and costs one round trip.
const PUT_POSTGRES: &str = "\
     WITH v AS (INSERT INTO roster_versions (domain, username, ver) VALUES ($1, $2, 1) \
       ON CONFLICT (domain, username) DO UPDATE SET ver = roster_versions.ver + 1 \
       RETURNING ver), \
     i AS (INSERT INTO roster_items \
       (domain, username, contact, name, subscription, ask_out, approved, groups, ver) \
       SELECT $1, $2, $3, $4, $5, $6, $7, $8, v.ver FROM v \
       ON CONFLICT (domain, username, contact) DO UPDATE SET name = $4, subscription = $5, \
       ask_out = $6, approved = $7, groups = $8, ver = excluded.ver), \
     d AS (DELETE FROM roster_removed WHERE domain = $1 AND username = $2 AND contact = $3), \
     p AS (DELETE FROM roster_pending_in \
       WHERE $9 AND domain = $1 AND username = $2 AND contact = $3) \
     SELECT ver FROM v";

/// [`Rosters::put`] on PostgreSQL for a batch of puts ([`crate::pg_batch`]): the parameters
/// of [`PUT_POSTGRES`] as arrays, one element per put, in queue order. Each account's version
/// goes up by its number of puts in the batch and its puts take the versions in between, in
/// order; an item put more than once takes its last put (one `INSERT` may not change a row
/// twice); every put answering a request forgets it. Returns each put's position (from 1)
/// and version.
const PUT_MANY_POSTGRES: &str = "\
     WITH p AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
       $5::text[], $6::bool[], $7::bool[], $8::text[], $9::bool[]) WITH ORDINALITY \
       AS t(domain, username, contact, name, subscription, ask_out, approved, groups, forget, \
       ord)), \
     n AS (SELECT domain, username, count(*) AS puts FROM p GROUP BY domain, username), \
     v AS (INSERT INTO roster_versions (domain, username, ver) \
       SELECT domain, username, puts FROM n ORDER BY domain, username \
       ON CONFLICT (domain, username) DO UPDATE SET ver = roster_versions.ver + excluded.ver \
       RETURNING domain, username, ver), \
     pv AS (SELECT p.*, v.ver - count(*) OVER w + row_number() OVER (w ORDER BY p.ord) \
       AS item_ver FROM p JOIN v USING (domain, username) \
       WINDOW w AS (PARTITION BY p.domain, p.username)), \
     last AS (SELECT DISTINCT ON (domain, username, contact) * FROM pv \
       ORDER BY domain, username, contact, ord DESC), \
     i AS (INSERT INTO roster_items \
       (domain, username, contact, name, subscription, ask_out, approved, groups, ver) \
       SELECT domain, username, contact, name, subscription, ask_out, approved, groups, \
       item_ver FROM last ORDER BY domain, username, contact \
       ON CONFLICT (domain, username, contact) DO UPDATE SET name = excluded.name, \
       subscription = excluded.subscription, ask_out = excluded.ask_out, \
       approved = excluded.approved, groups = excluded.groups, ver = excluded.ver), \
     d AS (DELETE FROM roster_removed r USING last \
       WHERE r.domain = last.domain AND r.username = last.username \
       AND r.contact = last.contact), \
     f AS (DELETE FROM roster_pending_in r USING pv \
       WHERE pv.forget AND r.domain = pv.domain AND r.username = pv.username \
       AND r.contact = pv.contact) \
     SELECT ord, item_ver FROM pv";

/// One [`Rosters::put`], owned so that it can wait in a queue (SQLite's writer, PostgreSQL's
/// batches).
#[derive(Clone)]
pub(crate) struct Put {
    domain: String,
    username: String,
    contact: String,
    name: Option<String>,
    subscription: &'static str,
    ask: bool,
    approved: bool,
    groups: String,
    forget: bool,
}

impl Put {
    /// `query` ([`PUT_SQLITE`] or [`PUT_POSTGRES`]) with this put's parameters.
    fn bind<'q, DB, O>(
        &'q self,
        query: sqlx::query::QueryScalar<'q, DB, O, <DB as sqlx::Database>::Arguments<'q>>,
    ) -> sqlx::query::QueryScalar<'q, DB, O, <DB as sqlx::Database>::Arguments<'q>>
    where
        DB: sqlx::Database,
        &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        query
            .bind(self.domain.as_str())
            .bind(self.username.as_str())
            .bind(self.contact.as_str())
            .bind(self.name.as_deref())
            .bind(self.subscription)
            .bind(self.ask)
            .bind(self.approved)
            .bind(self.groups.as_str())
            .bind(self.forget)
    }
}

impl BatchWrite for Put {
    type Out = i64;

    fn run_one<'a>(
        &'a self,
        conn: &'a mut sqlx::PgConnection,
    ) -> BoxFuture<'a, Result<i64, StoreError>> {
        Box::pin(async move {
            Ok(self
                .bind(sqlx::query_scalar(PUT_POSTGRES))
                .fetch_one(conn)
                .await?)
        })
    }

    fn run_many<'a>(
        batch: &'a [Put],
        conn: &'a mut sqlx::PgConnection,
    ) -> BoxFuture<'a, Result<Outcomes<i64>, StoreError>> {
        Box::pin(async move {
            let column = |f: fn(&Put) -> &str| batch.iter().map(f).collect::<Vec<_>>();
            let flag = |f: fn(&Put) -> bool| batch.iter().map(f).collect::<Vec<_>>();
            let names: Vec<Option<&str>> = batch.iter().map(|p| p.name.as_deref()).collect();
            let rows: Vec<(i64, i64)> = sqlx::query_as(PUT_MANY_POSTGRES)
                .bind(column(|p| &p.domain))
                .bind(column(|p| &p.username))
                .bind(column(|p| &p.contact))
                .bind(names)
                .bind(column(|p| p.subscription))
                .bind(flag(|p| p.ask))
                .bind(flag(|p| p.approved))
                .bind(column(|p| &p.groups))
                .bind(flag(|p| p.forget))
                .fetch_all(conn)
                .await?;
            let mut vers = vec![None; batch.len()];
            for (ord, ver) in rows {
                let slot = usize::try_from(ord - 1).ok().and_then(|i| vers.get_mut(i));
                if let Some(slot) = slot {
                    *slot = Some(ver);
                }
            }
            // Committed: a put without its row (which the statement cannot produce) is told
            // so rather than run again.
            Ok(vers
                .into_iter()
                .map(|v| {
                    v.ok_or_else(|| {
                        StoreError::Corrupt("a batched roster put returned no version".into())
                    })
                })
                .collect())
        })
    }
}

/// One [`Rosters::set_pending_in`], owned so that it can wait in a queue.
#[derive(Clone)]
pub(crate) struct NewRequest {
    domain: String,
    username: String,
    contact: String,
    stanza: String,
    created_at: i64,
}

/// [`Rosters::set_pending_in`] alone (both backends): stores or replaces the request,
/// keeping when it first came.
const SET_PENDING_IN: &str =
    "INSERT INTO roster_pending_in (domain, username, contact, stanza, created_at) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (domain, username, contact) DO UPDATE SET stanza = $4";

impl NewRequest {
    /// [`SET_PENDING_IN`] with this request's parameters.
    fn bind<'q, DB>(
        &'q self,
        query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    ) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
    where
        DB: sqlx::Database,
        &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        query
            .bind(self.domain.as_str())
            .bind(self.username.as_str())
            .bind(self.contact.as_str())
            .bind(self.stanza.as_str())
            .bind(self.created_at)
    }
}

impl BatchWrite for NewRequest {
    type Out = ();

    fn run_one<'a>(
        &'a self,
        conn: &'a mut sqlx::PgConnection,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.bind(sqlx::query(SET_PENDING_IN)).execute(conn).await?;
            Ok(())
        })
    }

    /// One `INSERT` over arrays; a request stored twice in the batch keeps its last stanza
    /// (one `INSERT` may not change a row twice).
    fn run_many<'a>(
        batch: &'a [NewRequest],
        conn: &'a mut sqlx::PgConnection,
    ) -> BoxFuture<'a, Result<Outcomes<()>, StoreError>> {
        Box::pin(async move {
            let column = |f: fn(&NewRequest) -> &str| batch.iter().map(f).collect::<Vec<_>>();
            let created: Vec<i64> = batch.iter().map(|r| r.created_at).collect();
            sqlx::query(
                "INSERT INTO roster_pending_in (domain, username, contact, stanza, created_at) \
                 SELECT DISTINCT ON (domain, username, contact) \
                 domain, username, contact, stanza, created_at \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
                 WITH ORDINALITY AS t(domain, username, contact, stanza, created_at, ord) \
                 ORDER BY domain, username, contact, ord DESC \
                 ON CONFLICT (domain, username, contact) DO UPDATE SET stanza = excluded.stanza",
            )
            .bind(column(|r| &r.domain))
            .bind(column(|r| &r.username))
            .bind(column(|r| &r.contact))
            .bind(column(|r| &r.stanza))
            .bind(created)
            .execute(conn)
            .await?;
            Ok(batch.iter().map(|_| Ok(())).collect())
        })
    }
}

/// The rosters of every account, from [`Store::rosters`].
#[derive(Clone, Copy, Debug)]
pub struct Rosters<'a> {
    store: &'a Store,
}

impl<'a> Rosters<'a> {
    /// The rosters of `store`.
    pub(crate) fn new(store: &'a Store) -> Rosters<'a> {
        Rosters { store }
    }

    /// The whole roster of `username@domain` (empty, version 0, if it has none).
    ///
    /// One statement, so the version and the items come from one snapshot without a
    /// transaction: a login reads it, and on SQLite every statement of a transaction is a
    /// hand-off to the connection's thread and back. Every change to the items bumps the
    /// version, so a roster with items has a version row to join them to.
    pub async fn load(&self, domain: &str, username: &str) -> Result<Roster, StoreError> {
        let rows: Vec<LoadRow> = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT v.ver, i.contact, i.name, i.subscription, i.ask_out, i.approved, \
                 i.groups, i.ver FROM roster_versions v LEFT JOIN roster_items i \
                 ON i.domain = v.domain AND i.username = v.username \
                 WHERE v.domain = $1 AND v.username = $2 ORDER BY i.contact",
            )
            .bind(domain)
            .bind(username)
            .fetch_all(pool)
            .await?
        });
        let mut roster = Roster {
            ver: rows.first().map_or(0, |r| r.0),
            items: Vec::with_capacity(rows.len()),
        };
        for row in rows {
            let (
                _,
                Some(contact),
                name,
                Some(subscription),
                Some(ask),
                Some(approved),
                Some(groups),
                Some(ver),
            ) = row
            else {
                continue; // the version row of a roster without items
            };
            roster.items.push(item_from_row((
                contact,
                name,
                subscription,
                ask,
                approved,
                groups,
                ver,
            ))?);
        }
        Ok(roster)
    }

    /// The current roster version of `username@domain` (0 if it never changed).
    pub async fn version(&self, domain: &str, username: &str) -> Result<i64, StoreError> {
        let ver: Option<i64> = with_pool!(self.store, pool => {
            sqlx::query_scalar("SELECT ver FROM roster_versions WHERE domain = $1 AND username = $2")
                .bind(domain)
                .bind(username)
                .fetch_optional(pool)
                .await?
        });
        Ok(ver.unwrap_or(0))
    }

    /// One item of the roster of `username@domain`.
    pub async fn get(
        &self,
        domain: &str,
        username: &str,
        contact: &str,
    ) -> Result<Option<RosterItem>, StoreError> {
        let row: Option<ItemRow> = with_pool!(self.store, pool => {
            sqlx::query_as(&format!(
                "SELECT {ITEM_COLUMNS} FROM roster_items \
                 WHERE domain = $1 AND username = $2 AND contact = $3"
            ))
            .bind(domain)
            .bind(username)
            .bind(contact)
            .fetch_optional(pool)
            .await?
        });
        row.map(item_from_row).transpose()
    }

    /// Adds or replaces `item` (its `ver` is ignored); returns the new roster version, which
    /// is also the item's. With [`Request::Forget`] the inbound subscription request from the
    /// item's contact goes in the same write: what approving or refusing a request changes
    /// (RFC 6121 §3.1.4, §3.2) is one store round trip, not two — a subscription set-up is a
    /// handful of such writes per approval, and they are most of its cost.
    pub async fn put(
        &self,
        domain: &str,
        username: &str,
        item: &RosterItem,
        request: Request,
    ) -> Result<i64, StoreError> {
        let put = Put {
            domain: domain.to_owned(),
            username: username.to_owned(),
            contact: item.contact.clone(),
            name: item.name.clone(),
            subscription: item.subscription.as_str(),
            ask: item.ask,
            approved: item.approved,
            groups: join_groups(&item.groups),
            forget: request == Request::Forget,
        };
        match &self.store.pool {
            Pool::Sqlite { writer, .. } => {
                writer
                    .run(move |conn| {
                        Box::pin(async move {
                            Ok(put
                                .bind(sqlx::query_scalar(PUT_SQLITE))
                                .fetch_one(conn)
                                .await?)
                        })
                    })
                    .await
            }
            Pool::Postgres { roster_puts, .. } => roster_puts.run(put).await,
        }
    }

    /// Removes `contact` from the roster; returns the new roster version, or `None` if the
    /// contact was not in the roster (nothing changed).
    pub async fn remove(
        &self,
        domain: &str,
        username: &str,
        contact: &str,
    ) -> Result<Option<i64>, StoreError> {
        let (domain, username, contact) =
            (domain.to_owned(), username.to_owned(), contact.to_owned());
        let ver: Option<i64> = write_tx!(self.store, conn => {
            let deleted = sqlx::query(
                "DELETE FROM roster_items WHERE domain = $1 AND username = $2 AND contact = $3",
            )
            .bind(&domain)
            .bind(&username)
            .bind(&contact)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if deleted == 0 {
                None
            } else {
                let ver: i64 = sqlx::query_scalar(BUMP_VERSION)
                    .bind(&domain)
                    .bind(&username)
                    .fetch_one(&mut *conn)
                    .await?;
                sqlx::query(
                    "INSERT INTO roster_removed (domain, username, contact, ver) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (domain, username, contact) DO UPDATE SET ver = $4",
                )
                .bind(&domain)
                .bind(&username)
                .bind(&contact)
                .bind(ver)
                .execute(&mut *conn)
                .await?;
                Some(ver)
            }
        });
        Ok(ver)
    }

    /// Contacts removed after version `since`, each with the version of its removal, oldest
    /// first (XEP-0237 pushes for a client that presents `since`).
    pub async fn removed_since(
        &self,
        domain: &str,
        username: &str,
        since: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT contact, ver FROM roster_removed \
                 WHERE domain = $1 AND username = $2 AND ver > $3 ORDER BY ver",
            )
            .bind(domain)
            .bind(username)
            .bind(since)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Stores (or replaces) the inbound subscription request from `contact`.
    pub async fn set_pending_in(
        &self,
        domain: &str,
        username: &str,
        contact: &str,
        stanza: &str,
    ) -> Result<(), StoreError> {
        let request = NewRequest {
            domain: domain.to_owned(),
            username: username.to_owned(),
            contact: contact.to_owned(),
            stanza: stanza.to_owned(),
            created_at: now_unix(),
        };
        match &self.store.pool {
            Pool::Sqlite { writer, .. } => {
                writer
                    .run(move |conn| {
                        Box::pin(async move {
                            request
                                .bind(sqlx::query(SET_PENDING_IN))
                                .execute(conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .await
            }
            Pool::Postgres { pending_in, .. } => pending_in.run(request).await,
        }
    }

    /// Forgets the inbound subscription request from `contact`; `false` if there was none.
    pub async fn remove_pending_in(
        &self,
        domain: &str,
        username: &str,
        contact: &str,
    ) -> Result<bool, StoreError> {
        let n = execute(
            self.store,
            "DELETE FROM roster_pending_in WHERE domain = $1 AND username = $2 AND contact = $3",
            &[domain, username, contact],
        )
        .await?;
        Ok(n > 0)
    }

    /// Whether there is a stored inbound subscription request from `contact`.
    pub async fn has_pending_in(
        &self,
        domain: &str,
        username: &str,
        contact: &str,
    ) -> Result<bool, StoreError> {
        let found: Option<String> = with_pool!(self.store, pool => {
            sqlx::query_scalar(
                "SELECT contact FROM roster_pending_in \
                 WHERE domain = $1 AND username = $2 AND contact = $3",
            )
            .bind(domain)
            .bind(username)
            .bind(contact)
            .fetch_optional(pool)
            .await?
        });
        Ok(found.is_some())
    }

    /// The contacts with a stored inbound subscription request to `username@domain`: what
    /// an account load needs, without reading each request's stanza.
    pub async fn pending_in_contacts(
        &self,
        domain: &str,
        username: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(with_pool!(self.store, pool => {
            sqlx::query_scalar(
                "SELECT contact FROM roster_pending_in WHERE domain = $1 AND username = $2",
            )
            .bind(domain)
            .bind(username)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Every stored inbound subscription request of `username@domain`, oldest first.
    pub async fn pending_in(
        &self,
        domain: &str,
        username: &str,
    ) -> Result<Vec<PendingIn>, StoreError> {
        let rows: Vec<(String, String)> = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT contact, stanza FROM roster_pending_in \
                 WHERE domain = $1 AND username = $2 ORDER BY created_at, contact",
            )
            .bind(domain)
            .bind(username)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(contact, stanza)| PendingIn { contact, stanza })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_round_trip() {
        for g in [
            vec![],
            vec!["a".to_string()],
            vec!["a b".into(), "".into(), "ü".into()],
        ] {
            let joined = join_groups(&g);
            if g.is_empty() {
                assert!(split_groups(&joined).is_empty());
            } else {
                assert_eq!(split_groups(&joined), g);
            }
        }
    }
}
