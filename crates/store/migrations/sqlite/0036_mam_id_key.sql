-- The key that turns an account archive's row positions into unpredictable stanza-ids
-- (XEP-0313 §3, XEP-0359 §8; rookery_store::mam::Numbering): made at the first use, one row.
-- `first_position` is the first position numbered with it: rows before it keep the ids they
-- were given (16 hex digits of the position; XEP-0359 §3, an id never changes).
-- PostgreSQL names its rows (random ids) and has no such table.
CREATE TABLE mam_id_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key BLOB NOT NULL,
    first_position INTEGER NOT NULL
);
