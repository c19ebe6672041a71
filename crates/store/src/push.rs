//! XEP-0357 push registrations: per account, the (app server, node) pairs its devices
//! enabled, with the publish-options form each gave (serialized, empty when none) and the
//! resource of the session that enabled it (the device); and per account, the XEP-0357
//! `message-count` — in the store rather than in a node's memory, so that it is the
//! account's whichever node of a cluster holds a message or binds a resource.

use crate::db::{execute, with_pool, write_one};
use crate::{Store, StoreError};

/// One registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The app server's JID.
    pub service: String,
    /// The node on it.
    pub node: String,
    /// The publish-options form, serialized (empty: none).
    pub options: String,
    /// The resource of the session that enabled it last (empty: unknown, a registration
    /// older than the column).
    pub resource: String,
}

type Row = (String, String, String, String);

fn registration((service, node, options, resource): Row) -> Registration {
    Registration {
        service,
        node,
        options,
        resource,
    }
}

/// Push registrations, from [`Store::push`].
#[derive(Clone, Copy, Debug)]
pub struct Push<'a> {
    store: &'a Store,
}

impl<'a> Push<'a> {
    pub(crate) fn new(store: &'a Store) -> Push<'a> {
        Push { store }
    }

    /// The registrations of `username@domain`, by service and node.
    pub async fn list(
        &self,
        domain: &str,
        username: &str,
    ) -> Result<Vec<Registration>, StoreError> {
        let rows: Vec<Row> = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT service, node, options, resource FROM push_registrations \
                 WHERE domain = $1 AND username = $2 ORDER BY service, node",
            )
            .bind(domain)
            .bind(username)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(registration).collect())
    }

    /// Every registration, as `(domain, username, registration)`: what the push module keeps
    /// in memory so that the message path asks no store question for accounts without one.
    pub async fn all(&self) -> Result<Vec<(String, String, Registration)>, StoreError> {
        let rows: Vec<(String, String, String, String, String, String)> = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT domain, username, service, node, options, resource \
                 FROM push_registrations ORDER BY domain, username, service, node",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(d, u, service, node, options, resource)| {
                (d, u, registration((service, node, options, resource)))
            })
            .collect())
    }

    /// Adds a registration, or replaces the options and the resource of one (a device
    /// enables again after each login, with the resource it was bound to).
    pub async fn enable(
        &self,
        domain: &str,
        username: &str,
        r: &Registration,
    ) -> Result<(), StoreError> {
        execute(
            self.store,
            "INSERT INTO push_registrations (domain, username, service, node, options, resource) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (domain, username, service, node) \
             DO UPDATE SET options = excluded.options, resource = excluded.resource",
            &[
                domain,
                username,
                &r.service,
                &r.node,
                &r.options,
                &r.resource,
            ],
        )
        .await?;
        Ok(())
    }

    /// Removes the registrations of `service` (all its nodes when `node` is `None`); how
    /// many there were.
    pub async fn disable(
        &self,
        domain: &str,
        username: &str,
        service: &str,
        node: Option<&str>,
    ) -> Result<u64, StoreError> {
        match node {
            Some(node) => {
                execute(
                    self.store,
                    "DELETE FROM push_registrations WHERE domain = $1 AND username = $2 \
                     AND service = $3 AND node = $4",
                    &[domain, username, service, node],
                )
                .await
            }
            None => {
                execute(
                    self.store,
                    "DELETE FROM push_registrations WHERE domain = $1 AND username = $2 \
                     AND service = $3",
                    &[domain, username, service],
                )
                .await
            }
        }
    }

    /// One more message held or pushed for `username@domain`: the account's
    /// `message-count` with it. One statement, so that nodes counting at once each get a
    /// number of their own.
    pub async fn count_one(&self, domain: &str, username: &str) -> Result<u64, StoreError> {
        let (domain, username) = (domain.to_owned(), username.to_owned());
        let held: i64 = write_one!(self.store, conn => {
            sqlx::query_scalar(
                "INSERT INTO push_counts (domain, username, held) VALUES ($1, $2, 1) \
                 ON CONFLICT (domain, username) DO UPDATE SET held = push_counts.held + 1 \
                 RETURNING held",
            )
            .bind(&domain)
            .bind(&username)
            .fetch_one(&mut *conn)
            .await?
        });
        Ok(held.unsigned_abs())
    }

    /// A resource of `username@domain` was bound: its `message-count` starts again.
    pub async fn reset_count(&self, domain: &str, username: &str) -> Result<(), StoreError> {
        execute(
            self.store,
            "DELETE FROM push_counts WHERE domain = $1 AND username = $2",
            &[domain, username],
        )
        .await?;
        Ok(())
    }
}
