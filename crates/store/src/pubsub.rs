//! Publish-subscribe state (XEP-0060, XEP-0163): nodes with their configuration,
//! affiliations, subscriptions and items, for every pubsub service — the pubsub component
//! (service = its domain) and PEP (service = an account's bare JID).
//!
//! The store keeps what the engine in `rookery-pubsub` decides; it does not interpret
//! configurations or payloads (both are XML text). Items carry a sequence number the engine
//! assigns (unique and increasing per node), so "the last N items" is an index range scan,
//! however many items a node holds.

use crate::db::{execute, with_conn, with_pool, write_tx, ReadConn};
use crate::page::{read_in_chunks, Page, PageLimit};
use crate::websub::{enqueue, Change};
use crate::{now_unix, Store, StoreError};

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// The NodeID.
    pub node: String,
    /// The configuration (a submitted `jabber:x:data` form, as XML).
    pub config: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: i64,
}

/// An affiliation as stored (never `none`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffiliationRow {
    /// The NodeID.
    pub node: String,
    /// The affiliated bare JID.
    pub jid: String,
    /// `owner`, `publisher`, `publish-only`, `member` or `outcast`.
    pub affiliation: String,
}

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    /// The NodeID.
    pub node: String,
    /// The subscription id.
    pub subid: String,
    /// The subscribed JID (bare or full).
    pub jid: String,
    /// `subscribed`, `pending` or `unconfigured`.
    pub state: String,
    /// Subscription options (a submitted form, as XML), or empty.
    pub options: String,
}

/// A published item as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRow {
    /// The ItemID.
    pub id: String,
    /// Order of publication within the node (higher is newer).
    pub seq: i64,
    /// The publisher's JID.
    pub publisher: String,
    /// The payload as XML, `None` for a notification-only item.
    pub payload: Option<String>,
    /// Time of the last publication under this id, seconds since the Unix epoch.
    pub updated_at: i64,
}

/// The items of a node read by their ids ([`Pubsub::items_by_id`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ById<T> {
    /// The items found, newest first.
    pub items: Vec<T>,
    /// Whether every id asked for was looked up: none was left out because the page's
    /// budget was spent (XEP-0060 §6.5.4: a page that leaves items out says so).
    pub complete: bool,
}

/// Per-node item statistics, read when a service is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemStats {
    /// Number of items.
    pub count: u64,
    /// The highest sequence number (0 without items).
    pub max_seq: i64,
}

/// The pubsub tables, from [`Store::pubsub`].
#[derive(Clone, Copy, Debug)]
pub struct Pubsub<'a> {
    store: &'a Store,
}

type ItemTuple = (String, i64, String, Option<String>, i64);

/// Which end of a node's items a page starts from (bounds by sequence number, exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The newest items first, only those older than `below` when given.
    NewestFirst {
        /// Only items with a lower sequence number.
        below: Option<i64>,
    },
    /// The oldest items first, only those newer than `above` when given.
    OldestFirst {
        /// Only items with a higher sequence number.
        above: Option<i64>,
    },
}

const PAGE_NEWEST_FIRST: &str =
    "SELECT item_id, seq, publisher, payload, updated_at FROM pubsub_items \
     WHERE service = $1 AND node = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4";
const PAGE_OLDEST_FIRST: &str =
    "SELECT item_id, seq, publisher, payload, updated_at FROM pubsub_items \
     WHERE service = $1 AND node = $2 AND seq > $3 ORDER BY seq ASC LIMIT $4";

/// Deletes the `$3` oldest items of node `$2` of service `$1`.
const TRIM_OLDEST: &str = "DELETE FROM pubsub_items WHERE service = $1 AND node = $2 AND seq IN \
     (SELECT seq FROM pubsub_items WHERE service = $1 AND node = $2 ORDER BY seq ASC LIMIT $3)";

/// What every item of service `$1` counts for against its budget, read from an index.
const SERVICE_BYTES: &str = "SELECT CAST(COALESCE(SUM(counted_bytes), 0) AS BIGINT) \
     FROM pubsub_items WHERE service = $1";

/// What the `$4` oldest items of node `$2` of service `$1` other than `$3` count for: what
/// [`TRIM_OLDEST`] deletes after `$3` is published (it then is the newest).
const OLDEST_BYTES: &str = "SELECT CAST(COALESCE(SUM(counted_bytes), 0) AS BIGINT) FROM \
     (SELECT counted_bytes FROM pubsub_items WHERE service = $1 AND node = $2 \
     AND item_id <> $3 ORDER BY seq ASC LIMIT $4) AS oldest";

/// The least an item counts for against a byte budget, whatever its payload: without a
/// floor an account could hold a million items of a few bytes (`pep_max_nodes` ×
/// `pep_max_items`), and summing them at each publication took 70 ms of the SQLite writer.
/// With it, a budget bounds the items too (16,384 in 16 MiB).
pub const MIN_ITEM_BYTES: u64 = 1024;

/// What an item whose payload has `payload_len` bytes counts for against a byte budget.
pub fn counted_bytes(payload_len: usize) -> u64 {
    u64::try_from(payload_len)
        .unwrap_or(u64::MAX)
        .max(MIN_ITEM_BYTES)
}

/// Whether a service whose payloads hold `used` bytes may hold `after` within `budget`: it
/// stays within it, or it does not grow (a budget lowered since, or rows from before it, do
/// not block a replacement by something smaller).
pub fn within_budget(used: u64, after: u64, budget: u64) -> bool {
    after <= used.max(budget)
}

fn item_row((id, seq, publisher, payload, updated_at): ItemTuple) -> ItemRow {
    ItemRow {
        id,
        seq,
        publisher,
        payload,
        updated_at,
    }
}

/// What an item weighs in a page: its payload's bytes.
fn payload_bytes(row: &ItemRow) -> usize {
    row.payload.as_ref().map_or(0, String::len)
}

fn count(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
}

fn limit(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl<'a> Pubsub<'a> {
    /// The pubsub tables of `store`.
    pub(crate) fn new(store: &'a Store) -> Pubsub<'a> {
        Pubsub { store }
    }

    /// Creates a node with `owner` affiliated as owner, in one transaction;
    /// [`StoreError::Conflict`] if the node exists.
    pub async fn create_node(
        &self,
        service: &str,
        node: &str,
        config: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        let now = now_unix();
        let (service, node, config, owner) = (
            service.to_owned(),
            node.to_owned(),
            config.to_owned(),
            owner.to_owned(),
        );
        write_tx!(self.store, conn => {
            let inserted = sqlx::query(
                "INSERT INTO pubsub_nodes (service, node, config, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (service, node) DO NOTHING",
            )
            .bind(&service)
            .bind(&node)
            .bind(&config)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Err(StoreError::Conflict);
            }
            sqlx::query(
                "INSERT INTO pubsub_affiliations (service, node, jid, affiliation) \
                 VALUES ($1, $2, $3, 'owner')",
            )
            .bind(&service)
            .bind(&node)
            .bind(&owner)
            .execute(&mut *conn)
            .await?;
        });
        Ok(())
    }

    /// Replaces a node's configuration; `false` if there is no such node.
    pub async fn set_config(
        &self,
        service: &str,
        node: &str,
        config: &str,
    ) -> Result<bool, StoreError> {
        let n = execute(
            self.store,
            "UPDATE pubsub_nodes SET config = $3 WHERE service = $1 AND node = $2",
            &[service, node, config],
        )
        .await?;
        Ok(n > 0)
    }

    /// Deletes a node with its affiliations, subscriptions and items; `false` if there was
    /// no such node.
    pub async fn delete_node(&self, service: &str, node: &str) -> Result<bool, StoreError> {
        let n = execute(
            self.store,
            "DELETE FROM pubsub_nodes WHERE service = $1 AND node = $2",
            &[service, node],
        )
        .await?;
        Ok(n > 0)
    }

    /// Deletes every node of a service (for example when its account is deleted); returns
    /// how many there were.
    pub async fn delete_service(&self, service: &str) -> Result<u64, StoreError> {
        execute(
            self.store,
            "DELETE FROM pubsub_nodes WHERE service = $1",
            &[service],
        )
        .await
    }

    /// The nodes of a service, by NodeID.
    pub async fn nodes(&self, service: &str) -> Result<Vec<NodeRow>, StoreError> {
        let rows: Vec<(String, String, i64)> = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT node, config, created_at FROM pubsub_nodes WHERE service = $1 ORDER BY node",
            )
            .bind(service)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(node, config, created_at)| NodeRow {
                node,
                config,
                created_at,
            })
            .collect())
    }

    /// The affiliations of every node of a service.
    pub async fn affiliations(&self, service: &str) -> Result<Vec<AffiliationRow>, StoreError> {
        let rows: Vec<(String, String, String)> = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT node, jid, affiliation FROM pubsub_affiliations WHERE service = $1 \
                 ORDER BY node, jid",
            )
            .bind(service)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(node, jid, affiliation)| AffiliationRow {
                node,
                jid,
                affiliation,
            })
            .collect())
    }

    /// Sets (or with `None` removes) the affiliation of `jid` with a node.
    pub async fn set_affiliation(
        &self,
        service: &str,
        node: &str,
        jid: &str,
        affiliation: Option<&str>,
    ) -> Result<(), StoreError> {
        match affiliation {
            Some(a) => {
                execute(
                    self.store,
                    "INSERT INTO pubsub_affiliations (service, node, jid, affiliation) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (service, node, jid) \
                     DO UPDATE SET affiliation = excluded.affiliation",
                    &[service, node, jid, a],
                )
                .await?
            }
            None => {
                execute(
                    self.store,
                    "DELETE FROM pubsub_affiliations WHERE service = $1 AND node = $2 AND jid = $3",
                    &[service, node, jid],
                )
                .await?
            }
        };
        Ok(())
    }

    /// The subscriptions of every node of a service.
    pub async fn subscriptions(&self, service: &str) -> Result<Vec<SubscriptionRow>, StoreError> {
        let rows: Vec<(String, String, String, String, String)> = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT node, subid, jid, state, options FROM pubsub_subscriptions \
                 WHERE service = $1 ORDER BY node, jid, subid",
            )
            .bind(service)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(node, subid, jid, state, options)| SubscriptionRow {
                node,
                subid,
                jid,
                state,
                options,
            })
            .collect())
    }

    /// Creates or replaces (by subid) a subscription.
    pub async fn set_subscription(
        &self,
        service: &str,
        sub: &SubscriptionRow,
    ) -> Result<(), StoreError> {
        execute(
            self.store,
            "INSERT INTO pubsub_subscriptions (service, node, subid, jid, state, options) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (service, node, subid) \
             DO UPDATE SET jid = excluded.jid, state = excluded.state, options = excluded.options",
            &[
                service,
                &sub.node,
                &sub.subid,
                &sub.jid,
                &sub.state,
                &sub.options,
            ],
        )
        .await?;
        Ok(())
    }

    /// Removes a subscription; `false` if there was none with that subid.
    pub async fn remove_subscription(
        &self,
        service: &str,
        node: &str,
        subid: &str,
    ) -> Result<bool, StoreError> {
        let n = execute(
            self.store,
            "DELETE FROM pubsub_subscriptions WHERE service = $1 AND node = $2 AND subid = $3",
            &[service, node, subid],
        )
        .await?;
        Ok(n > 0)
    }

    /// Item count and highest sequence number of every node of a service that has items.
    pub async fn item_stats(&self, service: &str) -> Result<Vec<(String, ItemStats)>, StoreError> {
        let rows: Vec<(String, i64, i64)> = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT node, COUNT(*), MAX(seq) FROM pubsub_items WHERE service = $1 GROUP BY node",
            )
            .bind(service)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(node, n, max_seq)| {
                Ok((
                    node,
                    ItemStats {
                        count: count(n)?,
                        max_seq,
                    },
                ))
            })
            .collect()
    }

    /// What the items of a service count for against its byte budget (for PEP: the
    /// account's, see [`Pubsub::publish`]).
    pub async fn stored_bytes(&self, service: &str) -> Result<u64, StoreError> {
        let n: i64 = with_pool!(self.store, pool => {
            sqlx::query_scalar(SERVICE_BYTES)
                .bind(service)
                .fetch_one(pool)
                .await?
        });
        count(n)
    }

    /// Stores an item (replacing one with the same id) and, when the node keeps at most
    /// `max_items`, deletes the oldest items beyond that, in one transaction: when this
    /// returns, the publication is committed. `count_before` is the node's item count before
    /// this call (the engine tracks it). Returns whether an item with that id was replaced.
    ///
    /// With `max_bytes`, the payloads of the service's items (for PEP: one account's) may
    /// hold that many bytes together, each counting at least [`MIN_ITEM_BYTES`]: a
    /// publication that would leave them over it, and more than before, is not stored
    /// ([`StoreError::OverBudget`]). What it replaces and what the node's `max_items` then
    /// trims count as freed, so a new avatar in place of the old one passes while the account
    /// is at its budget. The check reads the sizes from an index in the same transaction; on
    /// PostgreSQL callers serialize publications to one service so the budget is exact (on
    /// SQLite the writer serializes every write).
    ///
    /// The same transaction writes the WebSub outbox rows of the item (one per live
    /// subscription of the node, see [`crate::websub`]), so an acknowledged item is never
    /// without its deliveries; the delivery worker is woken once it is committed.
    pub async fn publish(
        &self,
        service: &str,
        node: &str,
        item: &ItemRow,
        max_items: Option<u64>,
        count_before: u64,
        max_bytes: Option<u64>,
    ) -> Result<bool, StoreError> {
        let (service, node, item) = (service.to_owned(), node.to_owned(), item.clone());
        let now = now_unix();
        let size = counted_bytes(item.payload.as_ref().map_or(0, String::len));
        let published = write_tx!(self.store, conn => {
            let existing: Option<(i64, i64)> = sqlx::query_as(
                "SELECT seq, counted_bytes FROM pubsub_items \
                 WHERE service = $1 AND node = $2 AND item_id = $3",
            )
            .bind(&service)
            .bind(&node)
            .bind(&item.id)
            .fetch_optional(&mut *conn)
            .await?;
            let count_after = if existing.is_some() { count_before } else { count_before + 1 };
            let trimmed = max_items.map_or(0, |max| count_after.saturating_sub(max));
            if let Some(budget) = max_bytes {
                let used: i64 = sqlx::query_scalar(SERVICE_BYTES)
                    .bind(&service)
                    .fetch_one(&mut *conn)
                    .await?;
                let mut freed = existing.map_or(0, |(_, bytes)| bytes);
                if trimmed > 0 {
                    let oldest: i64 = sqlx::query_scalar(OLDEST_BYTES)
                        .bind(&service)
                        .bind(&node)
                        .bind(&item.id)
                        .bind(limit(trimmed))
                        .fetch_one(&mut *conn)
                        .await?;
                    freed = freed.saturating_add(oldest);
                }
                let used = count(used)?;
                let after = used.saturating_sub(count(freed)?).saturating_add(size);
                if !within_budget(used, after, budget) {
                    return Ok(None);
                }
            }
            sqlx::query(
                "INSERT INTO pubsub_items (service, node, item_id, seq, publisher, payload, \
                 updated_at, counted_bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (service, node, item_id) \
                 DO UPDATE SET seq = excluded.seq, publisher = excluded.publisher, \
                 payload = excluded.payload, updated_at = excluded.updated_at, \
                 counted_bytes = excluded.counted_bytes",
            )
            .bind(&service)
            .bind(&node)
            .bind(&item.id)
            .bind(item.seq)
            .bind(&item.publisher)
            .bind(item.payload.as_deref())
            .bind(item.updated_at)
            .bind(limit(size))
            .execute(&mut *conn)
            .await?;
            if trimmed > 0 {
                sqlx::query(TRIM_OLDEST)
                    .bind(&service)
                    .bind(&node)
                    .bind(limit(trimmed))
                    .execute(&mut *conn)
                    .await?;
            }
            let enqueued = enqueue!(
                conn,
                Change::Item,
                &service,
                &node,
                &item.id,
                item.payload.as_deref(),
                now
            );
            Some((existing.is_some(), enqueued))
        });
        let (replaced, enqueued) = published.ok_or(StoreError::OverBudget)?;
        if enqueued {
            self.store.websub.wake();
        }
        Ok(replaced)
    }

    /// Deletes the oldest items of a node so that at most `keep` remain, given its current
    /// `count` (after a configuration lowered `max_items`). Returns how many were deleted.
    pub async fn trim(
        &self,
        service: &str,
        node: &str,
        count: u64,
        keep: u64,
    ) -> Result<u64, StoreError> {
        if count <= keep {
            return Ok(0);
        }
        let (service, node) = (service.to_owned(), node.to_owned());
        let n = write_tx!(self.store, conn => {
            sqlx::query(TRIM_OLDEST)
                .bind(&service)
                .bind(&node)
                .bind(limit(count - keep))
                .execute(&mut *conn)
                .await?
                .rows_affected()
        });
        Ok(n)
    }

    /// Deletes one item; `false` if the node has no item with that id. The same transaction
    /// writes the retraction's WebSub outbox rows, as [`Pubsub::publish`] does the item's.
    pub async fn retract(&self, service: &str, node: &str, id: &str) -> Result<bool, StoreError> {
        let (service, node, id) = (service.to_owned(), node.to_owned(), id.to_owned());
        let now = now_unix();
        let (deleted, enqueued) = write_tx!(self.store, conn => {
            let n = sqlx::query(
                "DELETE FROM pubsub_items WHERE service = $1 AND node = $2 AND item_id = $3",
            )
            .bind(&service)
            .bind(&node)
            .bind(&id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            let enqueued = n > 0
                && enqueue!(conn, Change::Retract, &service, &node, &id, None::<&str>, now);
            (n > 0, enqueued)
        });
        if enqueued {
            self.store.websub.wake();
        }
        Ok(deleted)
    }

    /// Deletes every item of a node; returns how many there were. The same transaction
    /// writes the purge's WebSub outbox rows.
    pub async fn purge(&self, service: &str, node: &str) -> Result<u64, StoreError> {
        let (service, node) = (service.to_owned(), node.to_owned());
        let now = now_unix();
        let (n, enqueued) = write_tx!(self.store, conn => {
            let n = sqlx::query("DELETE FROM pubsub_items WHERE service = $1 AND node = $2")
                .bind(&service)
                .bind(&node)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            let enqueued = enqueue!(conn, Change::Purge, &service, &node, "", None::<&str>, now);
            (n, enqueued)
        });
        if enqueued {
            self.store.websub.wake();
        }
        Ok(n)
    }

    /// A page of a node's items in the order of `scan`: at most `limit.max` of them, and no
    /// more once their payloads reach `limit.max_bytes` (the item that reaches it is the
    /// last; a page holds at least one item when there is one). Rows are read a few at a time
    /// ([`Page::next_read`], as an archive's pages) and reading stops there, so a request
    /// costs about a page of memory however many items the node keeps.
    pub async fn items_page(
        &self,
        service: &str,
        node: &str,
        scan: Scan,
        limit: PageLimit,
    ) -> Result<Vec<ItemRow>, StoreError> {
        let (sql, bound) = match scan {
            Scan::NewestFirst { below } => (PAGE_NEWEST_FIRST, below.unwrap_or(i64::MAX)),
            Scan::OldestFirst { above } => (PAGE_OLDEST_FIRST, above.unwrap_or(i64::MIN)),
        };
        let past = |bound: &mut i64, row: &ItemRow| *bound = row.seq;
        let read = |mut conn: ReadConn, bound: i64, asked: u64| async move {
            let rows = async {
                let rows: Vec<ItemTuple> = with_conn!(&mut conn, c => {
                    sqlx::query_as(sql)
                        .bind(service)
                        .bind(node)
                        .bind(bound)
                        .bind(self::limit(asked))
                        .fetch_all(&mut *c)
                        .await?
                });
                Ok::<_, StoreError>(rows.into_iter().map(item_row).collect())
            }
            .await;
            (conn, rows)
        };
        let conn = self.store.pool.read_conn().await?;
        let (rows, _) = read_in_chunks(limit, bound, conn, past, payload_bytes, read).await?;
        Ok(rows)
    }

    /// The sequence number of the item `id` of a node, if it has one (an RSM anchor).
    pub async fn item_seq(
        &self,
        service: &str,
        node: &str,
        id: &str,
    ) -> Result<Option<i64>, StoreError> {
        let seq = with_pool!(self.store, pool => {
            sqlx::query_scalar(
                "SELECT seq FROM pubsub_items WHERE service = $1 AND node = $2 AND item_id = $3",
            )
            .bind(service)
            .bind(node)
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        Ok(seq)
    }

    /// How many items of a node are newer than `seq` (the RSM index of a page whose newest
    /// item is `seq`).
    pub async fn count_newer(
        &self,
        service: &str,
        node: &str,
        seq: i64,
    ) -> Result<u64, StoreError> {
        let n: i64 = with_pool!(self.store, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM pubsub_items WHERE service = $1 AND node = $2 AND seq > $3",
            )
            .bind(service)
            .bind(node)
            .bind(seq)
            .fetch_one(pool)
            .await?
        });
        count(n)
    }

    /// The items of a node with the given ids (those that exist), newest first — as many as
    /// fit `max_bytes` of payload (see [`Pubsub::items_page`]), taken in the order of `ids`.
    pub async fn items_by_id(
        &self,
        service: &str,
        node: &str,
        ids: &[String],
        max_bytes: usize,
    ) -> Result<ById<ItemRow>, StoreError> {
        let mut page: Page<ItemRow> = Page::new(PageLimit {
            max: u64::MAX,
            max_bytes,
        });
        let mut complete = true;
        for (n, id) in ids.iter().enumerate() {
            let row: Option<ItemTuple> = with_pool!(self.store, pool => {
                sqlx::query_as(
                    "SELECT item_id, seq, publisher, payload, updated_at FROM pubsub_items \
                     WHERE service = $1 AND node = $2 AND item_id = $3",
                )
                .bind(service)
                .bind(node)
                .bind(id)
                .fetch_optional(pool)
                .await?
            });
            if let Some(r) = row {
                let row = item_row(r);
                let bytes = payload_bytes(&row);
                if !page.rows().iter().any(|o| o.id == row.id) && !page.push(row, bytes) {
                    complete = n + 1 == ids.len();
                    break;
                }
            }
        }
        let mut items = page.into_rows();
        items.sort_by_key(|i| std::cmp::Reverse(i.seq));
        Ok(ById { items, complete })
    }

    /// The ids of a node's items, newest first, at most `max`.
    pub async fn item_ids(
        &self,
        service: &str,
        node: &str,
        max: u64,
    ) -> Result<Vec<String>, StoreError> {
        let ids = with_pool!(self.store, pool => {
            sqlx::query_scalar(
                "SELECT item_id FROM pubsub_items WHERE service = $1 AND node = $2 \
                 ORDER BY seq DESC LIMIT $3",
            )
            .bind(service)
            .bind(node)
            .bind(limit(max))
            .fetch_all(pool)
            .await?
        });
        Ok(ids)
    }
}
