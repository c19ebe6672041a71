//! W3C WebSub hub state (crate `rookery-websub`): verified subscriptions of callback URLs to
//! pubsub nodes, and the delivery outbox.
//!
//! The outbox is what makes delivery *at least once, never lost* (design.md, "The HTTP
//! face"): [`Pubsub::publish`](crate::pubsub::Pubsub::publish) writes one row per live
//! subscription of the node in the transaction that stores the item, and a row is deleted
//! only by [`WebSub::delivered`], after the callback answered 2xx. A crash at any point
//! leaves either no item (the publisher got no acknowledgement) or the item with its rows.
//!
//! Each subscription's rows form a queue in publication order; the worker sends its head
//! only, so one callback sees the items of a topic in order. The retry state (`attempts`,
//! `retry_at`) is the head's and lives on the subscription row.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::db::{with_pool, write_tx};
use crate::{now_unix, Store, StoreError};

/// Subscription state: deliveries succeed (or have not failed `max_attempts` times yet).
pub const ACTIVE: &str = "active";
/// Subscription state: the head delivery failed `max_attempts` times; still retried at the
/// longest back-off, visible to the subscriber and in the logs.
pub const FAILING: &str = "failing";

/// A subscription to create or renew (W3C WebSub §5.1, once its intent is verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubscription {
    /// The pubsub service (`pubsub.<domain>` or an account's bare JID).
    pub service: String,
    /// The NodeID.
    pub node: String,
    /// The topic URL as the subscriber named it (sent back in `Link: rel="self"`).
    pub topic: String,
    /// The callback URL.
    pub callback: String,
    /// `hub.secret`, for `X-Hub-Signature`.
    pub secret: Option<String>,
    /// The bare JID the subscriber authenticated as; `None` for anonymous.
    pub caller: Option<String>,
    /// The granted lease.
    pub lease_seconds: i64,
    /// When the lease ends, seconds since the Unix epoch.
    pub expires_at: i64,
}

/// The host of a callback URL as the per-host cap counts it: lowercased, without scheme,
/// user info, port, path or query (`https://u@Hooks.Example:8443/a` → `hooks.example`), so
/// that varying those does not make another host.
pub fn callback_host(callback: &str) -> String {
    let rest = callback.split_once("://").map_or(callback, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.rsplit_once(':') {
        Some((h, port))
            if !host_port.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            h
        }
        _ => host_port,
    };
    host.to_ascii_lowercase()
}

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    /// Its key in the outbox.
    pub id: i64,
    /// The subscription itself.
    pub sub: NewSubscription,
    /// [`ACTIVE`] or [`FAILING`].
    pub state: String,
    /// Failed attempts of the head delivery.
    pub attempts: i64,
    /// When the head delivery may be tried again, ms since the epoch (0: now).
    pub retry_at: i64,
    /// The last delivery error, if the head delivery failed.
    pub last_error: Option<String>,
    /// Deliveries owed.
    pub pending: i64,
}

/// What a delivery announces (column `websub_items.event`, migration 0031).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// An item was published (or replaced): the delivery carries its payload.
    Item,
    /// The item was retracted.
    Retract,
    /// Every item of the node was deleted.
    Purge,
}

impl Change {
    /// The stored (and sent) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Item => "item",
            Change::Retract => "retract",
            Change::Purge => "purge",
        }
    }

    fn from_db(s: &str) -> Change {
        match s {
            "retract" => Change::Retract,
            "purge" => Change::Purge,
            _ => Change::Item,
        }
    }
}

/// The delivery at the head of a subscription's queue, with what sending it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The subscription.
    pub sub: i64,
    /// Its pubsub service.
    pub service: String,
    /// Its node.
    pub node: String,
    /// The bare JID it was made by (`None`: anonymous).
    pub caller: Option<String>,
    /// The publication (its outbox key).
    pub item: i64,
    /// What it announces.
    pub change: Change,
    /// The ItemID (empty for a purge).
    pub item_id: String,
    /// The payload as XML (`None` for a notification-only item).
    pub payload: Option<String>,
    /// The topic URL.
    pub topic: String,
    /// The callback URL.
    pub callback: String,
    /// The secret to sign with.
    pub secret: Option<String>,
    /// Failed attempts so far.
    pub attempts: i64,
}

/// A subscription removed because its lease ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// The topic URL.
    pub topic: String,
    /// The callback URL.
    pub callback: String,
}

/// Wakes the delivery worker when a publication wrote outbox rows (cheaper and quicker than
/// polling the outbox).
#[derive(Debug, Default)]
pub(crate) struct Signal(Notify);

/// The WebSub tables, from [`Store::websub`].
#[derive(Clone, Copy, Debug)]
pub struct WebSub<'a> {
    store: &'a Store,
}

type SubTuple = (
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    i64,
    String,
    i64,
    i64,
    Option<String>,
    i64,
);

const SUB_COLUMNS: &str = "s.id, s.service, s.node, s.topic, s.callback, s.secret, s.caller, \
     s.lease_seconds, s.expires_at, s.state, s.attempts, s.retry_at, s.last_error, \
     (SELECT COUNT(*) FROM websub_outbox o WHERE o.sub = s.id)";

fn sub_row(t: SubTuple) -> SubscriptionRow {
    let (id, service, node, topic, callback, secret, caller, lease_seconds, expires_at) =
        (t.0, t.1, t.2, t.3, t.4, t.5, t.6, t.7, t.8);
    SubscriptionRow {
        id,
        sub: NewSubscription {
            service,
            node,
            topic,
            callback,
            secret,
            caller,
            lease_seconds,
            expires_at,
        },
        state: t.9,
        attempts: t.10,
        retry_at: t.11,
        last_error: t.12,
        pending: t.13,
    }
}

/// Writes, inside the transaction of a publication, one outbox row per live subscription of
/// the node; returns whether it wrote any. A node without WebSub subscribers costs one
/// indexed count.
macro_rules! enqueue {
    ($conn:ident, $change:expr, $service:expr, $node:expr, $item_id:expr, $payload:expr, $now:expr) => {{
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM websub_subscriptions \
             WHERE service = $1 AND node = $2 AND expires_at > $3",
        )
        .bind($service)
        .bind($node)
        .bind($now)
        .fetch_one(&mut *$conn)
        .await?;
        if live > 0 {
            let item: i64 = sqlx::query_scalar(
                "INSERT INTO websub_items (service, node, item_id, payload, created_at, event) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind($service)
            .bind($node)
            .bind($item_id)
            .bind($payload)
            .bind($now)
            .bind($crate::websub::Change::as_str($change))
            .fetch_one(&mut *$conn)
            .await?;
            sqlx::query(
                "INSERT INTO websub_outbox (sub, item) SELECT id, $4 FROM websub_subscriptions \
                 WHERE service = $1 AND node = $2 AND expires_at > $3",
            )
            .bind($service)
            .bind($node)
            .bind($now)
            .bind(item)
            .execute(&mut *$conn)
            .await?;
        }
        live > 0
    }};
}
pub(crate) use enqueue;

impl Signal {
    pub(crate) fn wake(&self) {
        self.0.notify_one();
    }
}

impl<'a> WebSub<'a> {
    /// The WebSub tables of `store`.
    pub(crate) fn new(store: &'a Store) -> WebSub<'a> {
        WebSub { store }
    }

    /// Waits until a publication wrote outbox rows (returns at once if one did since the
    /// last call).
    pub async fn wait_for_work(&self) {
        self.signal().0.notified().await;
    }

    fn signal(&self) -> &Arc<Signal> {
        &self.store.websub
    }

    /// Creates a subscription, or renews the one of that callback on that node (new lease
    /// and secret, state active; owed deliveries are kept). Returns its id, or `None` if the
    /// node does not exist (any more).
    pub async fn upsert(&self, s: &NewSubscription) -> Result<Option<i64>, StoreError> {
        let (s, now) = (s.clone(), now_unix());
        let id = write_tx!(self.store, conn => {
            sqlx::query_scalar(
                "INSERT INTO websub_subscriptions (service, node, topic, callback, secret, caller, \
                 lease_seconds, expires_at, state, created_at, callback_host) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10 WHERE EXISTS \
                 (SELECT 1 FROM pubsub_nodes WHERE service = $1 AND node = $2) \
                 ON CONFLICT (service, node, callback) DO UPDATE SET topic = excluded.topic, \
                 secret = excluded.secret, caller = excluded.caller, \
                 lease_seconds = excluded.lease_seconds, expires_at = excluded.expires_at, \
                 callback_host = excluded.callback_host \
                 RETURNING id",
            )
            .bind(&s.service)
            .bind(&s.node)
            .bind(&s.topic)
            .bind(&s.callback)
            .bind(s.secret.as_deref())
            .bind(s.caller.as_deref())
            .bind(s.lease_seconds)
            .bind(s.expires_at)
            .bind(now)
            .bind(callback_host(&s.callback))
            .fetch_optional(&mut *conn)
            .await?
        });
        Ok(id)
    }

    /// Removes the subscription of `callback` to a node, with what it was owed and the
    /// node's publications no subscription owes any more; `false` if there was none.
    pub async fn remove(
        &self,
        service: &str,
        node: &str,
        callback: &str,
    ) -> Result<bool, StoreError> {
        let (service, node, callback) = (service.to_owned(), node.to_owned(), callback.to_owned());
        let n = write_tx!(self.store, conn => {
            let n = sqlx::query(
                "DELETE FROM websub_subscriptions WHERE service = $1 AND node = $2 AND callback = $3",
            )
            .bind(&service)
            .bind(&node)
            .bind(&callback)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            sqlx::query(
                "DELETE FROM websub_items WHERE service = $1 AND node = $2 AND NOT EXISTS \
                 (SELECT 1 FROM websub_outbox o WHERE o.item = websub_items.id)",
            )
            .bind(&service)
            .bind(&node)
            .execute(&mut *conn)
            .await?;
            n
        });
        Ok(n > 0)
    }

    /// The subscription of `callback` to a node.
    pub async fn get(
        &self,
        service: &str,
        node: &str,
        callback: &str,
    ) -> Result<Option<SubscriptionRow>, StoreError> {
        let sql = format!(
            "SELECT {SUB_COLUMNS} FROM websub_subscriptions s \
             WHERE s.service = $1 AND s.node = $2 AND s.callback = $3"
        );
        let row: Option<SubTuple> = with_pool!(self.store, pool => {
            sqlx::query_as(&sql)
                .bind(service)
                .bind(node)
                .bind(callback)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(sub_row))
    }

    /// Live subscriptions (lease not ended at `now`) of a node: what the hub caps per topic.
    pub async fn count_for_topic(
        &self,
        service: &str,
        node: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        let n = with_pool!(self.store, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM websub_subscriptions \
                 WHERE service = $1 AND node = $2 AND expires_at > $3",
            )
            .bind(service)
            .bind(node)
            .bind(now)
            .fetch_one(pool)
            .await?
        });
        Ok(n)
    }

    /// Live subscriptions, on any node, whose callback is on the host of `callback` (see
    /// [`callback_host`]): what the hub caps per callback host.
    pub async fn count_for_callback_host(
        &self,
        callback: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        let host = callback_host(callback);
        let n = with_pool!(self.store, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM websub_subscriptions \
                 WHERE callback_host = $1 AND expires_at > $2",
            )
            .bind(&host)
            .bind(now)
            .fetch_one(pool)
            .await?
        });
        Ok(n)
    }

    /// Subscriptions with deliveries owed whose head may be tried at `now_ms`, at most
    /// `limit`.
    pub async fn due(&self, now_ms: i64, limit: i64) -> Result<Vec<i64>, StoreError> {
        let ids = with_pool!(self.store, pool => {
            sqlx::query_scalar(
                "SELECT s.id FROM websub_subscriptions s WHERE s.retry_at <= $1 \
                 AND EXISTS (SELECT 1 FROM websub_outbox o WHERE o.sub = s.id) LIMIT $2",
            )
            .bind(now_ms)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(ids)
    }

    /// The earliest retry time after `now_ms` of a subscription with deliveries owed.
    pub async fn next_retry(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        let t: Option<i64> = with_pool!(self.store, pool => {
            sqlx::query_scalar(
                "SELECT MIN(s.retry_at) FROM websub_subscriptions s WHERE s.retry_at > $1 \
                 AND EXISTS (SELECT 1 FROM websub_outbox o WHERE o.sub = s.id)",
            )
            .bind(now_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(t)
    }

    /// The oldest delivery owed to subscription `sub`, unless its lease ended before `now`
    /// (seconds).
    pub async fn head(&self, sub: i64, now: i64) -> Result<Option<Delivery>, StoreError> {
        type Row = (
            i64,
            String,
            Option<String>,
            String,
            String,
            Option<String>,
            i64,
            String,
            String,
            Option<String>,
            String,
        );
        let row: Option<Row> = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT i.id, i.item_id, i.payload, s.topic, s.callback, s.secret, s.attempts, \
                 s.service, s.node, s.caller, i.event \
                 FROM websub_outbox o JOIN websub_items i ON i.id = o.item \
                 JOIN websub_subscriptions s ON s.id = o.sub \
                 WHERE o.sub = $1 AND s.expires_at > $2 ORDER BY o.item LIMIT 1",
            )
            .bind(sub)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|r| Delivery {
            sub,
            item: r.0,
            change: Change::from_db(&r.10),
            item_id: r.1,
            payload: r.2,
            topic: r.3,
            callback: r.4,
            secret: r.5,
            attempts: r.6,
            service: r.7,
            node: r.8,
            caller: r.9,
        }))
    }

    /// Records that the callback took delivery `item` of `sub` (answered 2xx): deletes its
    /// row (and the publication once no subscription owes it) and clears the retry state.
    pub async fn delivered(&self, sub: i64, item: i64) -> Result<(), StoreError> {
        write_tx!(self.store, conn => {
            sqlx::query("DELETE FROM websub_outbox WHERE sub = $1 AND item = $2")
                .bind(sub)
                .bind(item)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "DELETE FROM websub_items WHERE id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM websub_outbox WHERE item = $1)",
            )
            .bind(item)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE websub_subscriptions SET state = 'active', attempts = 0, retry_at = 0, \
                 last_error = NULL WHERE id = $1 AND (attempts <> 0 OR state <> 'active')",
            )
            .bind(sub)
            .execute(&mut *conn)
            .await?;
        });
        Ok(())
    }

    /// Records a failed attempt of the head delivery of `sub`: the attempt count, when to try
    /// again (ms since the epoch), the state and the error.
    pub async fn failed(
        &self,
        sub: i64,
        attempts: i64,
        retry_at: i64,
        state: &'static str,
        error: &str,
    ) -> Result<(), StoreError> {
        let error = error.to_owned();
        write_tx!(self.store, conn => {
            sqlx::query(
                "UPDATE websub_subscriptions SET attempts = $2, retry_at = $3, state = $4, \
                 last_error = $5 WHERE id = $1",
            )
            .bind(sub)
            .bind(attempts)
            .bind(retry_at)
            .bind(state)
            .bind(&error)
            .execute(&mut *conn)
            .await?;
        });
        Ok(())
    }

    /// Removes the subscriptions whose lease ended at `now` (seconds), with what they were
    /// owed, and the publications no subscription owes any more.
    pub async fn expire(&self, now: i64) -> Result<Vec<Expired>, StoreError> {
        // Read first: the worker calls this every second, and most calls find nothing.
        let ended: i64 = with_pool!(self.store, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM websub_subscriptions WHERE expires_at <= $1")
                .bind(now)
                .fetch_one(pool)
                .await?
        });
        if ended == 0 {
            return Ok(Vec::new());
        }
        let gone: Vec<(String, String)> = write_tx!(self.store, conn => {
            let gone = sqlx::query_as(
                "DELETE FROM websub_subscriptions WHERE expires_at <= $1 RETURNING topic, callback",
            )
            .bind(now)
            .fetch_all(&mut *conn)
            .await?;
            sqlx::query(
                "DELETE FROM websub_items WHERE NOT EXISTS \
                 (SELECT 1 FROM websub_outbox o WHERE o.item = websub_items.id)",
            )
            .execute(&mut *conn)
            .await?;
            gone
        });
        Ok(gone
            .into_iter()
            .map(|(topic, callback)| Expired { topic, callback })
            .collect())
    }

    /// Publications still stored (owed to some subscription); for tests and the admin view.
    pub async fn pending_items(&self) -> Result<i64, StoreError> {
        let n = with_pool!(self.store, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM websub_items")
                .fetch_one(pool)
                .await?
        });
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::callback_host;

    #[test]
    fn callback_host_drops_user_info_port_and_path() {
        assert_eq!(
            callback_host("https://u:p@Hooks.Example:8443/a?b#c"),
            "hooks.example"
        );
        assert_eq!(callback_host("http://h.example"), "h.example");
        assert_eq!(callback_host("http://[::1]:80/x"), "[::1]");
        assert_eq!(callback_host("http://[::1]/x"), "[::1]");
    }
}
