-- Publish-subscribe nodes (XEP-0060) of every service: the pubsub component (service =
-- its domain, e.g. pubsub.example.org) and PEP (XEP-0163, service = the account's bare JID).
-- rookery-store pubsub.rs. Numbered 0010 to stay clear of the roster/offline migrations.
-- `config` is the node configuration as a submitted XEP-0004 form (jabber:x:data XML).
CREATE TABLE pubsub_nodes (
    service    TEXT    NOT NULL,
    node       TEXT    NOT NULL,
    config     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (service, node)
) STRICT, WITHOUT ROWID;

-- Affiliations (XEP-0060 §4.1) by bare JID; 'none' is never stored.
CREATE TABLE pubsub_affiliations (
    service     TEXT NOT NULL,
    node        TEXT NOT NULL,
    jid         TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    PRIMARY KEY (service, node, jid),
    FOREIGN KEY (service, node) REFERENCES pubsub_nodes (service, node) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- Subscriptions (XEP-0060 §4.2): one row per subid; `options` is a submitted
-- pubsub#subscribe_options form, or empty.
CREATE TABLE pubsub_subscriptions (
    service TEXT NOT NULL,
    node    TEXT NOT NULL,
    subid   TEXT NOT NULL,
    jid     TEXT NOT NULL,
    state   TEXT NOT NULL,
    options TEXT NOT NULL,
    PRIMARY KEY (service, node, subid),
    FOREIGN KEY (service, node) REFERENCES pubsub_nodes (service, node) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- Published items. `seq` orders them (newest = highest) and is unique per node; payloads are
-- serialized XML, NULL for notification-only items. A rowid table: payloads can be large.
CREATE TABLE pubsub_items (
    service    TEXT    NOT NULL,
    node       TEXT    NOT NULL,
    item_id    TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    publisher  TEXT    NOT NULL,
    payload    TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (service, node, item_id),
    FOREIGN KEY (service, node) REFERENCES pubsub_nodes (service, node) ON DELETE CASCADE
) STRICT;

CREATE UNIQUE INDEX pubsub_items_by_seq ON pubsub_items (service, node, seq);
