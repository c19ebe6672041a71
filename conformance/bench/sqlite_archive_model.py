#!/usr/bin/env python3
"""A model of what the message archive's rows cost SQLite alone, outside the server.

60,000 rows (30,000 messages between 100 pairs of 1,000 accounts, both directions), written
as the archiver does: 4,000-row transactions of 64-row INSERTs, on a WAL file with
synchronous = FULL, foreign keys on, a 4 MiB cache. Prints the CPU per row of one run; the
figures in docs/performance.md ("No statement journal, fewer checkpoints") are the best of
four runs of each variant:

    for v in before defer ignore ignore-defer current positions redesign redesign-nokey; do
      for r in 1 2 3 4; do python3 conformance/bench/sqlite_archive_model.py $v; done |
        sort -k2 -n | head -1; done

Variants: `before` (plain INSERT, immediate foreign key: SQLite keeps a statement journal),
`defer` (key deferred), `ignore` (INSERT OR IGNORE), `ignore-defer` (both), `current` (both,
and WHERE EXISTS on the account: what the server did after migration 0032), `positions`
(the same, with the row id given by the writer and the stanza-id derived from it: the index
of names leaves such rows out — what the server does since migration 0033), `redesign`
(rows keyed by an integer archive id with its own key, the row id given by the writer, only
the `with` and owner indexes), `redesign-nokey` (the same without the key).
"""
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time

variant = sys.argv[1]
path = os.path.join(tempfile.mkdtemp(), "model.db")
db = sqlite3.connect(path, isolation_level=None)
for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "temp_store=memory",
               "cache_size=-4096", "wal_autocheckpoint=4096"):
    db.execute(f"PRAGMA {pragma}")
db.execute("CREATE TABLE accounts (domain TEXT NOT NULL, username TEXT NOT NULL, x TEXT, "
           "PRIMARY KEY (domain, username)) STRICT")
db.execute("CREATE TABLE archives (id INTEGER PRIMARY KEY, domain TEXT NOT NULL, "
           "username TEXT NOT NULL, UNIQUE (domain, username), FOREIGN KEY (domain, username) "
           "REFERENCES accounts (domain, username) ON DELETE CASCADE) STRICT")
for i in range(1, 1001):
    db.execute("INSERT INTO accounts VALUES ('localhost', ?, ?)", (f"user{i}", "x" * 54))
    db.execute("INSERT INTO archives VALUES (?, 'localhost', ?)", (i, f"user{i}"))

redesign = variant.startswith("redesign")
if redesign:
    key = "" if variant == "redesign-nokey" else \
        " REFERENCES archives (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED"
    db.execute(f"CREATE TABLE m (id INTEGER PRIMARY KEY, archive INTEGER NOT NULL{key}, "
               "with_jid TEXT NOT NULL, ts INTEGER NOT NULL, stanza TEXT NOT NULL) STRICT")
    db.execute("CREATE INDEX m_with ON m (archive, with_jid, id)")
    db.execute("CREATE INDEX m_owner ON m (archive, id)")
    columns, width = "id, archive, with_jid, ts, stanza", 5
    select = "{values}" if variant == "redesign-nokey" else \
        "SELECT * FROM ({values}) AS v WHERE EXISTS (SELECT 1 FROM archives WHERE id = v.column2)"
else:
    current = variant in ("current", "positions")
    deferred = " DEFERRABLE INITIALLY DEFERRED" if "defer" in variant or current else ""
    db.execute("CREATE TABLE m (id INTEGER PRIMARY KEY AUTOINCREMENT, domain TEXT NOT NULL, "
               "username TEXT NOT NULL, stanza_id TEXT NOT NULL, with_jid TEXT NOT NULL, "
               "ts INTEGER NOT NULL, stanza TEXT NOT NULL, FOREIGN KEY (domain, username) "
               f"REFERENCES accounts (domain, username) ON DELETE CASCADE{deferred}) STRICT")
    named = " WHERE stanza_id <> ''" if variant == "positions" else ""
    db.execute(f"CREATE UNIQUE INDEX m_stanza_id ON m (domain, username, stanza_id){named}")
    db.execute("CREATE INDEX m_with ON m (domain, username, with_jid, id)")
    db.execute("CREATE INDEX m_owner ON m (domain, username, id)")
    db.execute("CREATE INDEX m_ts ON m (ts)")
    columns, width = "id, domain, username, stanza_id, with_jid, ts, stanza", 7
    select = "SELECT * FROM ({values}) AS v WHERE EXISTS (SELECT 1 FROM accounts " \
        "WHERE domain = v.column2 AND username = v.column3)" if current else "{values}"
ignore = "OR IGNORE " if "ignore" in variant or current or redesign else ""

rows, seq, start = [], 0, int(time.time() * 1000)
for n in range(30000):
    a, b = 2 * (n % 100) + 1, 2 * (n % 100) + 2
    if random.random() < 0.5:
        a, b = b, a
    stanza = (f"<message xmlns='jabber:client' type='chat' id='bench-{n}' from='user{a}@localhost/"
              f"bench' to='user{b}@localhost'><body>message {n} with some words in it to make it "
              "a realistic length</body></message>")
    ms = start + n // 2
    for owner, other in ((a, b), (b, a)):
        seq += 1
        if redesign:
            rows.append(((ms << 20) | (seq & 0xFFFFF), owner, f"user{other}@localhost",
                         ms // 1000, stanza))
        elif variant == "positions":
            rows.append(((ms << 20) | (seq & 0xFFFFF), "localhost", f"user{owner}", "",
                         f"user{other}@localhost", ms // 1000, stanza))
        else:
            rows.append((None, "localhost", f"user{owner}",
                         f"{ms:012x}{random.getrandbits(48):012x}", f"user{other}@localhost",
                         ms // 1000, stanza))

PER_INSERT = 64
values = "VALUES " + ", ".join(["(" + ", ".join(["?"] * width) + ")"] * PER_INSERT)
sql = f"INSERT {ignore}INTO m ({columns}) " + select.format(values=values)
before = time.process_time()
for first in range(0, len(rows), 4000):
    batch = rows[first:first + 4000]
    db.execute("BEGIN IMMEDIATE")
    for k in range(0, len(batch) - PER_INSERT + 1, PER_INSERT):
        db.execute(sql, [v for r in batch[k:k + PER_INSERT] for v in r])
    db.execute("COMMIT")
spent = time.process_time() - before
count = db.execute("SELECT count(*) FROM m").fetchone()[0]
db.close()
shutil.rmtree(os.path.dirname(path))
print(variant, f"{spent / count * 1e6:.2f} µs/row", count)
