//! Pages of rows bounded in count and in bytes, for the reads whose rows can be large
//! (pubsub items, archived messages: up to 256 KiB each). A count alone lets one request of
//! a hundred such rows hold 25 MiB; a page instead ends with the row whose bytes bring it to
//! a budget, so a request costs about a page of memory however large its rows are.

/// How large a page may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit {
    /// At most this many rows.
    pub max: u64,
    /// No row after the one whose bytes bring the page's bytes to this (so a page holds at
    /// least one row when `max` allows any).
    pub max_bytes: usize,
}

impl PageLimit {
    /// Whether a page that holds `taken` rows of `bytes` takes another.
    pub fn admits(&self, taken: usize, bytes: usize) -> bool {
        (taken as u64) < self.max && bytes < self.max_bytes
    }
}

/// A page being filled: the rows so far and the bytes they hold.
#[derive(Debug)]
pub(crate) struct Page<T> {
    limit: PageLimit,
    bytes: usize,
    largest: usize,
    rows: Vec<T>,
}

/// The most rows one read of a chunked page asks for ([`Page::next_read`]): what a read
/// may hold beyond the page's budget when rows much larger than those before them follow
/// (32 of the largest stanzas, 8 MiB). Each read is a statement (on SQLite a round trip to
/// the connection's thread): a page of 50 small messages is three reads, five at 16 rows —
/// 0.2 ms more server CPU per query (docs/performance.md, "Pages read in chunks").
const CHUNK: u64 = 32;

impl<T> Page<T> {
    pub(crate) fn new(limit: PageLimit) -> Page<T> {
        Page {
            limit,
            bytes: 0,
            largest: 0,
            rows: Vec::new(),
        }
    }

    /// Whether the page takes another row.
    pub(crate) fn admits(&self) -> bool {
        self.limit.admits(self.rows.len(), self.bytes)
    }

    /// Adds a row of `bytes`; whether the page takes more after it.
    pub(crate) fn push(&mut self, row: T, bytes: usize) -> bool {
        self.bytes = self.bytes.saturating_add(bytes);
        self.largest = self.largest.max(bytes);
        self.rows.push(row);
        self.admits()
    }

    /// The rows so far.
    pub(crate) fn rows(&self) -> &[T] {
        &self.rows
    }

    /// The rows taken.
    pub(crate) fn into_rows(self) -> Vec<T> {
        self.rows
    }

    /// How many rows the next read of a page read in chunks should ask for: the rows the
    /// page may still take and one past them (which tells whether more follow) — at most
    /// [`CHUNK`], and at most as many rows as large as the largest so far fill the bytes
    /// left, and one past them (two before any row is read: what a row weighs is not known
    /// yet). So a page reads few rows beyond those it keeps, also on the database's side,
    /// which a streamed query would not stop at the budget: SQLite's driver reads up to 50
    /// rows ahead of its reader, and PostgreSQL sends every row of the `LIMIT`. A full page
    /// asks for one row only.
    pub(crate) fn next_read(&self) -> u64 {
        if !self.admits() {
            return 1;
        }
        let left = self.limit.max - self.rows.len() as u64;
        let by_bytes = match self.largest {
            0 => 2,
            largest => (((self.limit.max_bytes - self.bytes) / largest) as u64).saturating_add(2),
        };
        left.saturating_add(1).min(CHUNK).min(by_bytes)
    }
}

/// Reads a page in chunks of [`Page::next_read`] rows on one connection: `read(conn, at,
/// n)` gives up to `n` rows from the place `at`, which `past` then moves beyond a row read,
/// and hands `conn` back for the next chunk; `size` is what a row weighs. Reading stops with
/// the page; the rows in the order read, and whether more follow them (a full page reads one
/// row past itself to know).
pub(crate) async fn read_in_chunks<T, C, S, E, Fut>(
    limit: PageLimit,
    mut at: C,
    mut conn: S,
    past: impl Fn(&mut C, &T),
    size: impl Fn(&T) -> usize,
    read: impl Fn(S, C, u64) -> Fut,
) -> Result<(Vec<T>, bool), E>
where
    C: Clone,
    Fut: std::future::Future<Output = (S, Result<Vec<T>, E>)>,
{
    let mut page = Page::new(limit);
    loop {
        let asked = page.next_read();
        let (back, rows) = read(conn, at.clone(), asked).await;
        conn = back;
        let rows = rows?;
        let ended = (rows.len() as u64) < asked;
        for row in rows {
            if !page.admits() {
                return Ok((page.rows, true));
            }
            past(&mut at, &row);
            let bytes = size(&row);
            page.push(row, bytes);
        }
        if ended {
            return Ok((page.rows, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_ends_with_the_row_that_reaches_its_budget() {
        let mut page = Page::new(PageLimit {
            max: 3,
            max_bytes: 100,
        });
        assert!(page.push("a", 60));
        assert!(!page.push("b", 60), "120 bytes reach the budget");
        assert_eq!(page.rows(), ["a", "b"]);
        let mut one = Page::new(PageLimit {
            max: 3,
            max_bytes: 10,
        });
        assert!(!one.push("huge", 1000), "one row always fits");
        let mut counted = Page::new(PageLimit {
            max: 2,
            max_bytes: 1000,
        });
        assert!(counted.push(1, 1) && !counted.push(2, 1));
    }

    #[test]
    fn chunked_reads_ask_for_what_may_still_fit_and_one_more() {
        let limit = |max, max_bytes| PageLimit { max, max_bytes };
        // Nothing read yet: two rows (one, and whether more follow).
        assert_eq!(Page::<()>::new(limit(100, 1000)).next_read(), 2);
        assert_eq!(Page::<()>::new(limit(1, 1000)).next_read(), 2);
        assert_eq!(Page::<()>::new(limit(0, 1000)).next_read(), 1);
        // Small rows: a chunk, or the count left and one.
        let mut small = Page::new(limit(100, 1000));
        small.push((), 10);
        assert_eq!(small.next_read(), CHUNK);
        let mut counted = Page::new(limit(3, 1000));
        counted.push((), 10);
        assert_eq!(counted.next_read(), 3);
        // 300 bytes of rows of at most 200 taken: three more such rows stay below 1000, the
        // fourth ends the page, a fifth tells whether more follow.
        let mut page = Page::new(limit(100, 1000));
        page.push((), 100);
        page.push((), 200);
        assert_eq!(page.next_read(), 5);
        // Full: only whether more follow.
        page.push((), 800);
        assert_eq!(page.next_read(), 1);
    }
}
