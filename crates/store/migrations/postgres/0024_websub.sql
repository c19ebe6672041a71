-- W3C WebSub hub (rookery-store websub.rs, crate rookery-websub): verified subscriptions of a
-- callback URL to a pubsub node, and the delivery outbox. Outbox rows are written in the
-- same transaction as the item they announce (pubsub.rs `publish`) and deleted only after
-- the callback answered 2xx: at least once, never lost. Everything goes with the node
-- (ON DELETE CASCADE from pubsub_nodes).

-- One row per (topic node, callback). `caller` is the bare JID the subscriber authenticated
-- as (NULL: anonymous). `retry_at` (ms since the epoch, 0 = now) and `attempts` belong to the
-- delivery at the head of the subscription's outbox; `state` is 'active' or 'failing'.
CREATE TABLE websub_subscriptions (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service       TEXT COLLATE "C" NOT NULL,
    node          TEXT COLLATE "C" NOT NULL,
    topic         TEXT   NOT NULL,
    callback      TEXT   NOT NULL,
    secret        TEXT,
    caller        TEXT,
    lease_seconds BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    state         TEXT   NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    retry_at      BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT,
    created_at    BIGINT NOT NULL,
    UNIQUE (service, node, callback),
    FOREIGN KEY (service, node) REFERENCES pubsub_nodes (service, node) ON DELETE CASCADE
);

CREATE INDEX websub_subscriptions_by_expiry ON websub_subscriptions (expires_at);

-- The content of one publication, kept once however many callbacks it goes to; deleted
-- with its last outbox row. `id` orders publications (per node, in commit order).
CREATE TABLE websub_items (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service    TEXT COLLATE "C" NOT NULL,
    node       TEXT COLLATE "C" NOT NULL,
    item_id    TEXT   NOT NULL,
    payload    TEXT,
    created_at BIGINT NOT NULL,
    FOREIGN KEY (service, node) REFERENCES pubsub_nodes (service, node) ON DELETE CASCADE
);

-- A delivery still owed: publication `item` to subscription `sub`.
CREATE TABLE websub_outbox (
    sub  BIGINT NOT NULL REFERENCES websub_subscriptions (id) ON DELETE CASCADE,
    item BIGINT NOT NULL REFERENCES websub_items (id) ON DELETE CASCADE,
    PRIMARY KEY (sub, item)
);

CREATE INDEX websub_outbox_by_item ON websub_outbox (item);
