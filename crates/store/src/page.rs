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
    rows: Vec<T>,
}

impl<T> Page<T> {
    pub(crate) fn new(limit: PageLimit) -> Page<T> {
        Page {
            limit,
            bytes: 0,
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
}
