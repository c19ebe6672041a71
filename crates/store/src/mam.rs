//! Message archives (XEP-0313) of accounts and of multi-user chat rooms: rows appended in
//! batches, queried by the other party, time and position (RSM, XEP-0059) in either
//! direction, purged by age and per-archive cap; and the archiving preferences of accounts.
//! An account's rows go with it (`ON DELETE CASCADE`); a room's are cleared by its service.
//!
//! The two kinds of archive have a table each (an account's rows reference the account) with
//! the same columns but the two owner keys; every query is written once over [`Owner`].

use std::sync::Arc;

use rand::RngCore;

use crate::db::{with_conn, with_pool, write_tx, ReadConn};
use crate::page::{read_in_chunks, PageLimit};
use crate::{Backend, Store, StoreError};

/// Whose archive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A local account's.
    Account {
        /// Its domain.
        domain: String,
        /// Its username.
        username: String,
    },
    /// A multi-user chat room's.
    Room {
        /// The MUC service's domain.
        service: String,
        /// The room's localpart.
        room: String,
    },
    /// A pubsub node's history (XEP-0442): its retained items in publish order, read-only
    /// (the `pubsub_archive` view over the pubsub engine's items; positions are the items'
    /// sequence numbers, ids their ItemIDs, `with` the publisher's bare JID).
    Node {
        /// The pubsub service's JID.
        service: String,
        /// The node.
        node: String,
    },
}

/// The archive tables and their owner key columns (what the purge walks).
const TABLES: [(&str, &str, &str); 2] = [
    ("mam_messages", "domain", "username"),
    ("muc_archive", "service", "room"),
];
/// The table whose rows keep their sender's real JID (`real_jid`, a room's: XEP-0313
/// §5.1.2); the others have none.
const WITH_REAL_JIDS: &str = TABLES[1].0;
/// A node's history: a view, queried like the tables and never purged or written here.
const NODE_HISTORY: (&str, &str, &str) = ("pubsub_archive", "service", "node");

/// The most rows one query carries (see [`insert_sql`]): at most eight parameters a row stay far
/// below both drivers' limits (SQLite 32,766, PostgreSQL 65,535), and a batch of a few
/// hundred rows is a few queries.
const MAX_ROWS_PER_INSERT: usize = 64;

/// `rows` cut into the chunks one `INSERT` each: [`MAX_ROWS_PER_INSERT`] rows, then
/// power-of-two sizes for the rest. The sizes are few (7), so each table has few statement
/// texts and the connection's prepared-statement cache keeps them all (a statement per exact
/// row count would fill it with one-off texts and evict the other writes' statements).
fn chunks<'r, T>(rows: &'r [T]) -> impl Iterator<Item = &'r [T]> + 'r {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = rest.len().min(MAX_ROWS_PER_INSERT);
        // The largest power of two not above n (n ≥ 1).
        let size = 1 << (usize::BITS - 1 - n.leading_zeros());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// The `INSERT` of `n` rows into `table`: one statement of `n` rows, each row its id (on
/// SQLite only, see [`ArchiveId`]), its two owner keys, its stanza-id, `with`, time and stanza.
/// Built per chunk (a microsecond, against the rows' own work); the connection's statement
/// cache keys on the text, so each of [`chunks`]' few sizes is prepared once.
///
/// On SQLite the parameters are anonymous `?`s: sqlx binds a numbered one by asking SQLite
/// its name, which SQLite finds by walking the statement's list of names (8 % of the CPU
/// with hundreds of them). And the statement cannot fail midway: a statement of many rows
/// that could (a constraint of its third row failing after two were written) keeps a
/// statement journal, an undo copy of every page it touches, which cost a tenth of
/// archiving's CPU. So a row whose id is taken is skipped (`OR IGNORE`: positions are given
/// by one counter and names carry 48 random bits after the millisecond, never expected to
/// repeat), and so is an account's row whose account is gone (`WHERE EXISTS`: deleted while
/// its message waited for the batch — what it would have been archived for is gone with
/// it); the account's foreign key is deferred to the commit (migration 0032), where, with
/// the rows checked here, it never fails. A row without a position binds `NULL` as its id,
/// which SQLite numbers after the highest id ever given (`AUTOINCREMENT`). On PostgreSQL,
/// which keeps no such journal, the database numbers every row and a failing row fails the
/// statement: the archiver then writes the batch's messages one by one (`archiver.rs`).
fn insert_sql((t, k1, k2): (&str, &str, &str), n: usize, backend: Backend) -> String {
    let (id, width) = match backend {
        Backend::Sqlite => ("id, ", 7),
        Backend::Postgres => ("", 6),
    };
    let (real, width) = match t == WITH_REAL_JIDS {
        true => (", real_jid", width + 1),
        false => ("", width),
    };
    let columns = format!("{t} ({id}{k1}, {k2}, stanza_id, with_jid, ts, stanza{real})");
    let mut values = String::from("VALUES ");
    for i in 0..n {
        if i > 0 {
            values.push_str(", ");
        }
        values.push('(');
        for k in 0..width {
            if k > 0 {
                values.push_str(", ");
            }
            match backend {
                Backend::Sqlite => values.push('?'),
                Backend::Postgres => values.push_str(&format!("${}", i * width + k + 1)),
            }
        }
        values.push(')');
    }
    match backend {
        Backend::Postgres => format!("INSERT INTO {columns} {values}"),
        Backend::Sqlite if t == TABLES[0].0 => format!(
            "INSERT OR IGNORE INTO {columns} SELECT * FROM ({values}) AS v WHERE EXISTS \
             (SELECT 1 FROM accounts WHERE domain = v.column2 AND username = v.column3)"
        ),
        Backend::Sqlite => format!("INSERT OR IGNORE INTO {columns} {values}"),
    }
}

/// How many hex digits a stanza-id of a position numbered before [`Numbering`]'s key has:
/// names have 24 ([`new_name`]), so the two never look alike.
const POSITION_DIGITS: usize = 16;

/// How many characters a keyed stanza-id has: 64 bits in base64url, unlike both hex forms.
const KEYED_CHARS: usize = 11;

/// Rounds of [`Numbering`]'s Feistel network: four make a strong pseudorandom permutation
/// (Luby–Rackoff).
const ROUNDS: u8 = 4;

/// The low `digits` hex digits of `value`, by hand: `format!` with its padding cost a
/// microsecond an id, more than the rest of the archive hook's own work for a message.
fn hex(value: u128, digits: usize) -> String {
    (0..digits)
        .rev()
        .map(|k| char::from_digit(((value >> (4 * k)) & 0xf) as u32, 16).unwrap_or('0'))
        .collect()
}

/// A new name for an archived message (or any id that must not repeat): the time in
/// milliseconds (48 bits) and 48 random bits, 24 hex digits. The time first makes each new
/// name sort after an archive's earlier ones, so an index of names grows at its end (one
/// page written per archive and commit) instead of at a random place of every archive's
/// range; two names of one archive in the same millisecond are as unlikely alike as 48
/// random bits.
pub fn new_name() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let random = rand::thread_rng().next_u64() & 0xffff_ffff_ffff;
    hex(((ms & 0xffff_ffff_ffff) << 48) | u128::from(random), 24)
}

/// The position an id of the first form ([`POSITION_DIGITS`] lowercase hex digits, nothing
/// else) spells.
fn hex_position(stanza_id: &str) -> Option<i64> {
    let canonical = stanza_id.len() == POSITION_DIGITS
        && stanza_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    canonical
        .then(|| i64::from_str_radix(stanza_id, 16).ok())
        .flatten()
}

/// How the positions of an account archive on SQLite become stanza-ids, and back.
///
/// A position is the time in milliseconds shifted by 20 bits plus a count (the archiver's
/// numbering): in clear it would tell when a message came and how busy the server was, and
/// let anyone who knows the time guess ids (XEP-0313 §3: a UID that MUST be unpredictable;
/// XEP-0359 §8: nothing to infer from it). So the stanza-id is the position through a
/// keyed permutation of 64-bit numbers — a Feistel network of [`ROUNDS`] rounds whose
/// round function is SHA-256 of the key, the round and the half block — in [`KEYED_CHARS`]
/// base64url characters. The key is the database's (`mam_id_key`, 32 random bytes made at
/// the first use), so ids stay valid across restarts and for every process on the file.
///
/// Rows numbered before the key existed (below `first`) keep the ids they were given, 16
/// hex digits of the position (XEP-0359 §3: an id never changes, and clients deduplicate by
/// it): each form is read back only for its own rows, so an old-style guess at a new row
/// finds nothing.
#[derive(Clone)]
pub struct Numbering {
    key: [u8; 32],
    first: i64,
}

impl std::fmt::Debug for Numbering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Numbering")
            .field("first", &self.first)
            .finish_non_exhaustive()
    }
}

impl Numbering {
    /// The id of the row at `position`.
    pub fn numbered(&self, position: i64) -> ArchiveId {
        ArchiveId::Position(Numbered {
            position,
            stanza_id: self.stanza_id(position),
        })
    }

    /// The stanza-id of the row at `position`.
    fn stanza_id(&self, position: i64) -> String {
        match u64::try_from(position) {
            Ok(p) if position >= self.first => {
                use base64::Engine as _;
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(self.permuted(p).to_be_bytes())
            }
            _ => hex(position as u128, POSITION_DIGITS),
        }
    }

    /// The position `stanza_id` stands for, if it is one this numbering gave.
    fn position_of(&self, stanza_id: &str) -> Option<i64> {
        if let Some(p) = hex_position(stanza_id) {
            return (p < self.first).then_some(p);
        }
        if stanza_id.len() != KEYED_CHARS {
            return None;
        }
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(stanza_id)
            .ok()?;
        let block = u64::from_be_bytes(bytes.try_into().ok()?);
        let p = i64::try_from(self.unpermuted(block)).ok()?;
        (p >= self.first).then_some(p)
    }

    /// The round function: 32 bits of SHA-256(key, round, half).
    fn round(&self, round: u8, half: u32) -> u32 {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::new()
            .chain_update(self.key)
            .chain_update([round])
            .chain_update(half.to_be_bytes())
            .finalize()
            .into();
        let [a, b, c, d, ..] = digest;
        u32::from_be_bytes([a, b, c, d])
    }

    fn permuted(&self, block: u64) -> u64 {
        let (mut l, mut r) = ((block >> 32) as u32, block as u32);
        for i in 0..ROUNDS {
            (l, r) = (r, l ^ self.round(i, r));
        }
        (u64::from(l) << 32) | u64::from(r)
    }

    fn unpermuted(&self, block: u64) -> u64 {
        let (mut l, mut r) = ((block >> 32) as u32, block as u32);
        for i in (0..ROUNDS).rev() {
            (l, r) = (r ^ self.round(i, l), l);
        }
        (u64::from(l) << 32) | u64::from(r)
    }
}

/// Reads the key of [`Numbering`], making it first if there is none: its first position
/// is the one after every position given so far (those keep their ids).
async fn read_numbering(store: &Store) -> Result<Numbering, StoreError> {
    let mut fresh = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut fresh);
    let fresh = fresh.to_vec();
    let (key, first): (Vec<u8>, i64) = write_tx!(store, conn => {
        sqlx::query(
            "INSERT OR IGNORE INTO mam_id_key (id, key, first_position) VALUES (1, $1, \
             1 + MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'mam_messages'), 0), \
             COALESCE((SELECT MAX(id) FROM mam_messages), 0)))",
        )
        .bind(fresh.as_slice())
        .execute(&mut *conn)
        .await?;
        sqlx::query_as("SELECT key, first_position FROM mam_id_key WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?
    });
    let key = key
        .try_into()
        .map_err(|_| StoreError::Corrupt("the archive id key is not 32 bytes".into()))?;
    Ok(Numbering { key, first })
}

/// A position and its stanza-id ([`Numbering::numbered`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbered {
    position: i64,
    stanza_id: String,
}

impl Numbered {
    /// The row's position.
    pub fn position(&self) -> i64 {
        self.position
    }
}

/// The id of a new archived message: its XEP-0359 stanza-id, and where its row goes.
///
/// An account's archive on SQLite is written by one process, whose archiver numbers the rows
/// itself ([`Mam::last_position`]) and derives each stanza-id from the row's number
/// ([`Numbering`]): the row is found by its own key, and the archive keeps no index of
/// names, which was the largest of its four indexes' costs (a third of SQLite's work per
/// row, docs/performance.md, "Stanza-ids from positions"). Elsewhere the database numbers
/// the rows and a random name is the stanza-id: several PostgreSQL nodes write one archive
/// table, and a room's rows are written one at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveId {
    /// The row's position, given by the writer; stored with an empty name.
    Position(Numbered),
    /// A name unique in its archive ([`new_name`]); the database gives the position.
    Named(String),
}

impl ArchiveId {
    /// The stanza-id clients see.
    pub fn stanza_id(&self) -> &str {
        match self {
            ArchiveId::Position(n) => &n.stanza_id,
            ArchiveId::Named(n) => n,
        }
    }

    /// The position to store (`None`: the database's) and the name to store (empty for a
    /// position).
    fn stored(&self) -> (Option<i64>, &str) {
        match self {
            ArchiveId::Position(n) => (Some(n.position), ""),
            ArchiveId::Named(n) => (None, n),
        }
    }
}

impl Owner {
    /// (table, first key column, second key column).
    fn table(&self) -> (&'static str, &'static str, &'static str) {
        match self {
            Owner::Account { .. } => TABLES[0],
            Owner::Room { .. } => TABLES[1],
            Owner::Node { .. } => NODE_HISTORY,
        }
    }

    /// The two key values.
    fn keys(&self) -> (&str, &str) {
        match self {
            Owner::Account { domain, username } => (domain, username),
            Owner::Room { service, room } => (service, room),
            Owner::Node { service, node } => (service, node),
        }
    }
}

/// A message to archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewArchived {
    /// Whose archive.
    pub owner: Owner,
    /// Its position or name, unique per archive.
    pub id: ArchiveId,
    /// The other party's bare JID (in a room's archive: the sender's occupant JID).
    pub with_jid: String,
    /// When it was archived (Unix seconds).
    pub ts: i64,
    /// The message as serialized XML.
    pub stanza: String,
    /// In a room's archive, the sender's real bare JID (XEP-0313 §5.1.2, shown to those
    /// the room shows real JIDs); kept nowhere else.
    pub real_jid: Option<String>,
}

/// An archived message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// The row's position in the archive (ascending with time).
    pub id: i64,
    /// The archive's id for it (XEP-0359 stanza-id).
    pub stanza_id: String,
    /// The other party's bare JID.
    pub with_jid: String,
    /// When it was archived (Unix seconds).
    pub ts: i64,
    /// The message as serialized XML.
    pub stanza: String,
    /// In a room's archive, the sender's real bare JID, if known.
    pub real_jid: Option<String>,
}

/// A page of an archive ([`Mam::page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePage {
    /// The messages, in archive order.
    pub rows: Vec<Archived>,
    /// Whether more messages match past the page, in the direction it was read.
    pub more: bool,
}

/// What a query selects (every bound optional; positions are row ids, see [`Mam::position`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only messages with this bare JID.
    pub with: Option<String>,
    /// Only messages archived at or after this time.
    pub start: Option<i64>,
    /// Only messages archived at or before this time.
    pub end: Option<i64>,
    /// Only messages after this position.
    pub after: Option<i64>,
    /// Only messages before this position.
    pub before: Option<i64>,
    /// Only the messages with these stanza-ids (empty: any; ids not in the archive match
    /// nothing).
    pub ids: Vec<String>,
    /// Only messages whose stored stanza contains one of these strings (empty: any). An
    /// account's archive keeps the other party's bare JID as `with`; a query on a full JID
    /// narrows it by the stanza's `from` or `to` as serialized (rookery-mam `serve.rs`).
    pub stanza_contains: Vec<String>,
}

/// Archiving preferences (XEP-0313 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefs {
    /// `always`, `never` or `roster`.
    pub default: String,
    /// Bare JIDs always archived.
    pub always: Vec<String>,
    /// Bare JIDs never archived.
    pub never: Vec<String>,
}

/// The archives of every account, from [`Store::mam`].
#[derive(Clone, Copy, Debug)]
pub struct Mam<'a> {
    store: &'a Store,
}

/// A query parameter of either type both drivers bind.
enum Param {
    Text(String),
    Int(i64),
}

type Row = (i64, String, String, i64, String, Option<String>);

/// A row's stanza-id: the one stored, or for a numbered row (stored without one) the one its
/// position gives.
fn named(numbering: Option<&Numbering>, id: i64, stored: String) -> String {
    match numbering {
        Some(n) if stored.is_empty() => n.stanza_id(id),
        _ => stored,
    }
}

/// `$query` with the [`Param`]s `$params` bound in order.
macro_rules! bind_all {
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for p in $params {
            q = match p {
                Param::Text(s) => q.bind(s.as_str()),
                Param::Int(i) => q.bind(*i),
            };
        }
        q
    }};
}

impl<'a> Mam<'a> {
    pub(crate) fn new(store: &'a Store) -> Mam<'a> {
        Mam { store }
    }

    /// Appends `rows` in one transaction: committed, all of them, when this returns `Ok`
    /// (none of them when it returns `Err`) — but on SQLite a row whose account is gone or
    /// whose id its archive has already is skipped instead of failing the rest (see
    /// [`insert_sql`]). A node's history ([`Owner::Node`]) is not appended to: it is the
    /// node's items, and such rows are left out.
    ///
    /// The rows go in as multi-row `INSERT`s (see [`insert_sql`]), a table's rows in their
    /// order, so that archiving a batch of many messages costs a few statements rather than
    /// a statement (and on SQLite a round trip to the connection's thread) per row: that
    /// per-row cost was most of what archiving cost the message path (docs/performance.md,
    /// "Archiving cost"). `rows` is shared, not copied, by a SQLite batch that is run again
    /// without a failed job.
    ///
    /// Positions ([`ArchiveId::Position`]) are for SQLite's writer: on PostgreSQL a row with
    /// one is refused ([`StoreError::Corrupt`], nothing written).
    pub async fn append(&self, rows: impl Into<Arc<[NewArchived]>>) -> Result<(), StoreError> {
        let rows: Arc<[NewArchived]> = rows.into();
        if rows.iter().all(|r| matches!(r.owner, Owner::Node { .. })) {
            return Ok(());
        }
        let backend = self.store.backend();
        if backend == Backend::Postgres
            && rows.iter().any(|r| matches!(r.id, ArchiveId::Position(_)))
        {
            return Err(StoreError::Corrupt(
                "archive positions are given by SQLite's writer only".into(),
            ));
        }
        write_tx!(self.store, conn => {
            for table in TABLES {
                let mine: Vec<&NewArchived> =
                    rows.iter().filter(|r| r.owner.table() == table).collect();
                for chunk in chunks(&mine) {
                    let sql = insert_sql(table, chunk.len(), backend);
                    let mut q = sqlx::query(&sql);
                    for r in chunk {
                        let (a, b) = r.owner.keys();
                        let (position, name) = r.id.stored();
                        if backend == Backend::Sqlite {
                            q = q.bind(position);
                        }
                        q = q
                            .bind(a)
                            .bind(b)
                            .bind(name)
                            .bind(r.with_jid.as_str())
                            .bind(r.ts)
                            .bind(r.stanza.as_str());
                        if table.0 == WITH_REAL_JIDS {
                            q = q.bind(r.real_jid.as_deref());
                        }
                    }
                    q.execute(&mut *conn).await?;
                }
            }
        });
        Ok(())
    }

    /// Where the positions an archiver gives go on from: the highest id the account archive
    /// has ever had (SQLite's `AUTOINCREMENT` counter, or a row's if higher) — or `None` where
    /// the database gives them (PostgreSQL, see [`ArchiveId`]).
    pub async fn last_position(&self) -> Result<Option<i64>, StoreError> {
        if self.store.backend() != Backend::Sqlite {
            return Ok(None);
        }
        let last: i64 = with_pool!(self.store, pool => {
            sqlx::query_scalar(
                "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence \
                 WHERE name = 'mam_messages'), 0), COALESCE((SELECT MAX(id) FROM mam_messages), 0))",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(Some(last))
    }

    /// How this database's account archive positions become stanza-ids ([`Numbering`]),
    /// read (made at the first use) once per store; `None` where the database names the
    /// rows (PostgreSQL).
    pub async fn numbering(&self) -> Result<Option<&'a Numbering>, StoreError> {
        if self.store.backend() != Backend::Sqlite {
            return Ok(None);
        }
        let store = self.store;
        store
            .numbering
            .get_or_try_init(|| read_numbering(store))
            .await
            .map(Some)
    }

    /// The position of the message `stanza_id` in `owner`'s archive: the row whose
    /// position it was derived from, or the row of that name (the query of
    /// [`Filter::ids`]).
    pub async fn position(
        &self,
        owner: &Owner,
        stanza_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        let only = Filter {
            ids: vec![stanza_id.to_owned()],
            ..Filter::default()
        };
        // The row's id only: an anchor's message may weigh 256 KiB, and nothing of it is used.
        let numbering = self.numbering().await?;
        let (matching, params) = self.matching(owner, &only, numbering);
        let sql = format!("SELECT id {matching} ORDER BY id LIMIT 1");
        let id = with_pool!(self.store, pool => {
            bind_all!(sqlx::query_scalar(&sql), &params)
                .fetch_optional(pool)
                .await?
        });
        Ok(id)
    }

    /// Deletes the message `stanza_id` from `owner`'s archive (the row of a message that
    /// bounced after it was archived); whether there was one. A node's history is not
    /// written here.
    pub async fn remove(&self, owner: &Owner, stanza_id: &str) -> Result<bool, StoreError> {
        if matches!(owner, Owner::Node { .. }) {
            return Ok(false);
        }
        let Some(position) = self.position(owner, stanza_id).await? else {
            return Ok(false);
        };
        let (t, k1, k2) = owner.table();
        let (a, b) = owner.keys();
        let (a, b) = (a.to_owned(), b.to_owned());
        let sql = format!("DELETE FROM {t} WHERE {k1} = $1 AND {k2} = $2 AND id = $3");
        let gone = write_tx!(self.store, conn => {
            sqlx::query(&sql)
                .bind(a.as_str())
                .bind(b.as_str())
                .bind(position)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        });
        Ok(gone > 0)
    }

    /// Up to `limit` messages of `owner`'s archive matching `filter`, in archive order: the
    /// first ones, or with `from_end` the last ones — a [`Mam::page`] without a byte budget
    /// (the server's reads have one; this serves tests and tools).
    pub async fn query(
        &self,
        owner: &Owner,
        filter: &Filter,
        limit: u64,
        from_end: bool,
    ) -> Result<Vec<Archived>, StoreError> {
        let limit = PageLimit {
            max: limit,
            max_bytes: usize::MAX,
        };
        Ok(self.page(owner, filter, limit, from_end).await?.rows)
    }

    /// A page of `owner`'s archive matching `filter` within `limit` (a message counts the
    /// bytes of its stored stanza), in archive order: the first messages, or with `from_end`
    /// the last ones — a page that its bytes end early keeps those nearest to where it
    /// starts, so the next page goes on from its other end. The messages are read a few at
    /// a time ([`crate::page::read_in_chunks`]) and reading stops with the page: a query
    /// costs about a page of memory, where `limit.max` messages of the largest size would be
    /// 25 MiB.
    pub async fn page(
        &self,
        owner: &Owner,
        filter: &Filter,
        limit: PageLimit,
        from_end: bool,
    ) -> Result<ArchivePage, StoreError> {
        // The next read goes on past the messages read.
        let past = |rest: &mut Filter, r: &Archived| match from_end {
            true => rest.before = Some(r.id),
            false => rest.after = Some(r.id),
        };
        let size = |r: &Archived| r.stanza.len();
        // Numbering first: on a store in memory its first use writes, through the one
        // connection the page would hold.
        let numbering = self.numbering().await?;
        let read = |mut conn: ReadConn, rest: Filter, asked: u64| async move {
            let rows = self
                .read(&mut conn, numbering, owner, &rest, asked, from_end)
                .await;
            (conn, rows)
        };
        let conn = self.store.pool.read_conn().await?;
        let (mut rows, more) =
            read_in_chunks(limit, filter.clone(), conn, past, size, read).await?;
        if from_end {
            rows.reverse();
        }
        Ok(ArchivePage { rows, more })
    }

    /// Up to `limit` messages of `owner`'s archive matching `filter`, in the order read:
    /// from the first on, or with `from_end` from the last back, on `conn`.
    async fn read(
        &self,
        conn: &mut ReadConn,
        numbering: Option<&Numbering>,
        owner: &Owner,
        filter: &Filter,
        limit: u64,
        from_end: bool,
    ) -> Result<Vec<Archived>, StoreError> {
        let real = match owner.table().0 == WITH_REAL_JIDS {
            true => "real_jid",
            false => "CAST(NULL AS TEXT)",
        };

        let (matching, mut params) = self.matching(owner, filter, numbering);
        params.push(Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT id, stanza_id, with_jid, ts, stanza, {real} {matching} ORDER BY id {} LIMIT ${}",
            if from_end { "DESC" } else { "ASC" },
            params.len()
        );
        let rows: Vec<Row> = with_conn!(conn, c => {
            bind_all!(sqlx::query_as(&sql), &params).fetch_all(&mut *c).await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, stanza_id, with_jid, ts, stanza, real_jid)| Archived {
                id,
                stanza_id: named(numbering, id, stanza_id),
                with_jid,
                ts,
                stanza,
                real_jid,
            })
            .collect())
    }

    /// The stanza-id and time of the first message of `owner`'s archive, or with `last` of
    /// the last one (XEP-0313 metadata), its stanza not read.
    pub async fn edge(
        &self,
        owner: &Owner,
        last: bool,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let numbering = self.numbering().await?;
        let (matching, params) = self.matching(owner, &Filter::default(), numbering);
        let order = if last { "DESC" } else { "ASC" };
        let sql = format!("SELECT id, stanza_id, ts {matching} ORDER BY id {order} LIMIT 1");
        let row: Option<(i64, String, i64)> = with_pool!(self.store, pool => {
            bind_all!(sqlx::query_as(&sql), &params)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(id, stanza_id, ts)| (named(numbering, id, stanza_id), ts)))
    }

    /// How many messages of `owner`'s archive match `filter`, none of them read: what tells
    /// whether every id a query names is there, where reading those messages (a query may
    /// name a thousand) would hold them all in memory at once.
    pub async fn count(&self, owner: &Owner, filter: &Filter) -> Result<u64, StoreError> {
        let numbering = self.numbering().await?;
        let (matching, params) = self.matching(owner, filter, numbering);
        let sql = format!("SELECT COUNT(*) {matching}");
        let n: i64 = with_pool!(self.store, pool => {
            bind_all!(sqlx::query_scalar(&sql), &params).fetch_one(pool).await?
        });
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
    }

    /// `FROM … WHERE …` of the messages of `owner`'s archive that match `filter`, and its
    /// parameters.
    fn matching(
        &self,
        owner: &Owner,
        filter: &Filter,
        numbering: Option<&Numbering>,
    ) -> (String, Vec<Param>) {
        let (t, k1, k2) = owner.table();
        let (a, b) = owner.keys();
        let mut sql = format!("FROM {t} WHERE {k1} = $1 AND {k2} = $2");
        let mut params = vec![Param::Text(a.into()), Param::Text(b.into())];
        let mut push = |sql: &mut String, clause: &str, p: Param| {
            params.push(p);
            sql.push_str(&format!(" AND {clause} ${}", params.len()));
        };
        if let Some(w) = &filter.with {
            push(&mut sql, "with_jid =", Param::Text(w.clone()));
        }
        if let Some(t) = filter.start {
            push(&mut sql, "ts >=", Param::Int(t));
        }
        if let Some(t) = filter.end {
            push(&mut sql, "ts <=", Param::Int(t));
        }
        if let Some(i) = filter.after {
            push(&mut sql, "id >", Param::Int(i));
        }
        if let Some(i) = filter.before {
            push(&mut sql, "id <", Param::Int(i));
        }
        if !filter.stanza_contains.is_empty() {
            let find = match self.store.backend() {
                Backend::Sqlite => "instr",
                Backend::Postgres => "strpos",
            };
            let mut either = Vec::new();
            for text in &filter.stanza_contains {
                params.push(Param::Text(text.clone()));
                either.push(format!("{find}(stanza, ${}) > 0", params.len()));
            }
            sql.push_str(&format!(" AND ({})", either.join(" OR ")));
        }
        if !filter.ids.is_empty() {
            // A position's row is found by its key (and has no name), a name's by the index
            // of names — `<> ''` in so many words: SQLite's index leaves the unnamed rows out
            // (migration 0033) and is used only by a query that says so. A node's ids are its
            // items' names, whatever they look like.
            let (mut positions, mut names) = (Vec::new(), Vec::new());
            for id in &filter.ids {
                let position = numbering
                    .filter(|_| !matches!(owner, Owner::Node { .. }))
                    .and_then(|n| n.position_of(id));
                match position {
                    Some(p) => positions.push(Param::Int(p)),
                    None => names.push(Param::Text(id.clone())),
                }
            }
            let mut either = Vec::new();
            for (condition, values) in [
                ("stanza_id = '' AND id", positions),
                ("stanza_id <> '' AND stanza_id", names),
            ] {
                if values.is_empty() {
                    continue;
                }
                let first = params.len() + 1;
                params.extend(values);
                let list: Vec<String> = (first..=params.len()).map(|n| format!("${n}")).collect();
                either.push(format!("({condition} IN ({}))", list.join(", ")));
            }
            sql.push_str(&format!(" AND ({})", either.join(" OR ")));
        }
        (sql, params)
    }

    /// Deletes, in every archive (accounts' and rooms'), what was archived before
    /// `older_than` (Unix seconds; `None`: no age limit) and all but the newest `cap` messages
    /// of each archive (`None`: no cap). Returns how many messages went.
    pub async fn purge(
        &self,
        older_than: Option<i64>,
        cap: Option<u64>,
    ) -> Result<u64, StoreError> {
        let mut gone = 0;
        for (t, k1, k2) in TABLES {
            if let Some(ts) = older_than {
                let sql = format!("DELETE FROM {t} WHERE ts < $1");
                gone += write_tx!(self.store, conn => {
                    sqlx::query(&sql).bind(ts).execute(&mut *conn).await?.rows_affected()
                });
            }
            let Some(cap) = cap else { continue };
            let cap = i64::try_from(cap).unwrap_or(i64::MAX);
            let over_sql =
                format!("SELECT {k1}, {k2} FROM {t} GROUP BY {k1}, {k2} HAVING COUNT(*) > $1");
            let over: Vec<(String, String)> = with_pool!(self.store, pool => {
                sqlx::query_as(&over_sql).bind(cap).fetch_all(pool).await?
            });
            let sql = format!(
                "DELETE FROM {t} WHERE {k1} = $1 AND {k2} = $2 AND id <= \
                 (SELECT id FROM {t} WHERE {k1} = $1 AND {k2} = $2 \
                  ORDER BY id DESC LIMIT 1 OFFSET $3)"
            );
            for (a, b) in over {
                let sql = sql.clone();
                gone += write_tx!(self.store, conn => {
                    sqlx::query(&sql)
                        .bind(&a)
                        .bind(&b)
                        .bind(cap)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected()
                });
            }
        }
        Ok(gone)
    }

    /// Deletes `owner`'s whole archive.
    pub async fn clear(&self, owner: &Owner) -> Result<u64, StoreError> {
        let (t, k1, k2) = owner.table();
        let (a, b) = (owner.keys().0.to_owned(), owner.keys().1.to_owned());
        let sql = format!("DELETE FROM {t} WHERE {k1} = $1 AND {k2} = $2");
        let n = write_tx!(self.store, conn => {
            sqlx::query(&sql).bind(&a).bind(&b).execute(&mut *conn).await?.rows_affected()
        });
        Ok(n)
    }

    /// The preferences of `username@domain`, if set.
    pub async fn prefs(&self, domain: &str, username: &str) -> Result<Option<Prefs>, StoreError> {
        let row: Option<(String, String, String)> = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT default_, always, never FROM mam_prefs WHERE domain = $1 AND username = $2",
            )
            .bind(domain)
            .bind(username)
            .fetch_optional(pool)
            .await?
        });
        let lines = |s: String| -> Vec<String> {
            s.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        };
        Ok(row.map(|(default, always, never)| Prefs {
            default,
            always: lines(always),
            never: lines(never),
        }))
    }

    /// Sets the preferences of `username@domain` (committed when this returns).
    pub async fn set_prefs(
        &self,
        domain: &str,
        username: &str,
        p: &Prefs,
    ) -> Result<(), StoreError> {
        crate::db::execute(
            self.store,
            "INSERT INTO mam_prefs (domain, username, default_, always, never) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (domain, username) DO UPDATE SET \
             default_ = excluded.default_, always = excluded.always, never = excluded.never",
            &[
                domain,
                username,
                &p.default,
                &p.always.join("\n"),
                &p.never.join("\n"),
            ],
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn rows_go_in_chunks_of_few_sizes_in_order() {
        let rows: Vec<usize> = (0..203).collect();
        let sizes: Vec<usize> = chunks(&rows).map(<[usize]>::len).collect();
        assert_eq!(sizes, [64, 64, 64, 8, 2, 1]);
        let again: Vec<usize> = chunks(&rows).flatten().copied().collect();
        assert_eq!(again, rows);
        assert_eq!(chunks::<usize>(&[]).count(), 0);
    }

    #[test]
    fn an_insert_is_one_statement_of_all_its_rows() {
        assert_eq!(
            insert_sql(TABLES[1], 2, Backend::Postgres),
            "INSERT INTO muc_archive (service, room, stanza_id, with_jid, ts, stanza, real_jid) \
             VALUES ($1, $2, $3, $4, $5, $6, $7), ($8, $9, $10, $11, $12, $13, $14)"
        );
        assert_eq!(
            insert_sql(TABLES[1], 2, Backend::Sqlite),
            "INSERT OR IGNORE INTO muc_archive (id, service, room, stanza_id, with_jid, ts, \
             stanza, real_jid) VALUES (?, ?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?, ?)"
        );
        assert_eq!(
            insert_sql(TABLES[0], 1, Backend::Sqlite),
            "INSERT OR IGNORE INTO mam_messages (id, domain, username, stanza_id, with_jid, ts, \
             stanza) SELECT * FROM (VALUES (?, ?, ?, ?, ?, ?, ?)) AS v WHERE EXISTS (SELECT 1 \
             FROM accounts WHERE domain = v.column2 AND username = v.column3)"
        );
    }

    fn numbering(key: u8, first: i64) -> Numbering {
        Numbering {
            key: [key; 32],
            first,
        }
    }

    #[test]
    fn a_position_is_its_stanza_id_and_back() {
        let first = 1_765_000_000_000_i64 << 20;
        let n = numbering(1, first);
        // Keyed from `first` on: 11 base64url characters, read back, consecutive positions
        // unlike each other, another key another id (and not read back).
        let ids: Vec<String> = (0..4).map(|i| n.stanza_id(first + i)).collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(id.len(), KEYED_CHARS, "{id}");
            assert_eq!(n.position_of(id), Some(first + i as i64));
            assert_eq!(n.numbered(first + i as i64).stanza_id(), id);
        }
        assert!(
            ids[0][..6] != ids[1][..6] && ids[1][..6] != ids[2][..6],
            "{ids:?}"
        );
        let other = numbering(2, first);
        assert_ne!(other.stanza_id(first), ids[0]);
        assert_ne!(other.position_of(&ids[0]), Some(first));
        // Before `first`: the 16 hex digits they were given, and only those.
        let old = first - 1;
        let hex_id = n.stanza_id(old);
        assert_eq!(hex_id, hex(old as u128, POSITION_DIGITS));
        assert_eq!(n.position_of(&hex_id), Some(old));
        assert_eq!(n.stanza_id(7), "0000000000000007");
        // Each form only for its own rows: a new row spelled in hex, an old one keyed.
        assert_eq!(n.position_of(&hex(first as u128, POSITION_DIGITS)), None);
        let keyed_old = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(n.permuted(old as u64).to_be_bytes())
        };
        assert_eq!(n.position_of(&keyed_old), None);
        // Only the canonical spellings: no upper-case hex, no other length, not a name.
        assert_eq!(n.position_of("000000000000000A"), None);
        assert_eq!(n.position_of("0000000000000007 "), None);
        assert_eq!(n.position_of("8000000000000000"), None);
        assert_eq!(n.position_of(&new_name()), None);
        assert_eq!(n.position_of("!!!!!!!!!!!"), None);
        // A permutation: every block comes back.
        for block in [0, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(n.unpermuted(n.permuted(block)), block);
        }
    }

    #[test]
    fn a_name_is_the_millisecond_then_random_bits() {
        let (a, b) = (new_name(), new_name());
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        // Lower-case hex digits, the milliseconds first: later names sort after earlier ones.
        assert!(a.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        assert!(a[..12] <= b[..12]);
        let ms = u128::from_str_radix(&a[..12], 16).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert!(ms <= now && now - ms < 10_000);
    }
}
