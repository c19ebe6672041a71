//! XEP-0357 push registrations: per account, the (app server, node) pairs its devices
//! enabled, with the publish-options form each gave (serialized, empty when none).

use crate::db::{execute, with_pool};
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
        let rows: Vec<(String, String, String)> = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT service, node, options FROM push_registrations \
                 WHERE domain = $1 AND username = $2 ORDER BY service, node",
            )
            .bind(domain)
            .bind(username)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(service, node, options)| Registration {
                service,
                node,
                options,
            })
            .collect())
    }

    /// Adds (or replaces the options of) a registration.
    pub async fn enable(
        &self,
        domain: &str,
        username: &str,
        r: &Registration,
    ) -> Result<(), StoreError> {
        execute(
            self.store,
            "INSERT INTO push_registrations (domain, username, service, node, options) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (domain, username, service, node) \
             DO UPDATE SET options = excluded.options",
            &[domain, username, &r.service, &r.node, &r.options],
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
}
