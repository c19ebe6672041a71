//! Discussion history for newcomers (XEP-0045 §7.2.14): the room keeps its last groupchat
//! messages (with a body; `[muc] history_length` of them, in memory) and sends an entering
//! occupant what its `<history/>` asks for — `maxstanzas`, `maxchars` (of the whole stanzas),
//! `seconds`, `since`, all of them at once if several are given — oldest first, each with a
//! `<delay/>` from the room (XEP-0203) unless it came with one. What it keeps is bounded in
//! bytes too (`[muc] history_max_bytes`): persistent rooms hold it in memory from startup, and
//! a newcomer gets it at once, into a session queue of bounded size.

use std::collections::VecDeque;

use rookery_jid::Jid;
use rookery_proto::time::{delay, parse_utc};
use rookery_proto::Stanza;
use rookery_xml::Element;

use super::Room;
use crate::ns;

/// A message in the history.
#[derive(Debug, Clone)]
pub struct Past {
    /// The message as broadcast (from the sender's room JID, no `to`).
    pub stanza: Stanza,
    /// When it was sent (Unix seconds).
    pub ts: i64,
    /// Its size as sent, in bytes (what `maxchars` counts).
    pub chars: usize,
}

/// The messages a room keeps for newcomers, oldest first, with their total size.
#[derive(Debug, Clone, Default)]
pub(super) struct History {
    messages: VecDeque<Past>,
    /// The sum of their `chars`.
    bytes: usize,
}

impl History {
    /// Adds `past`, then drops the oldest until at most `count` messages of at most `bytes`
    /// bytes in all are kept. A message larger than `bytes` alone is not kept, and costs
    /// the others nothing.
    fn push(&mut self, past: Past, count: usize, bytes: usize) {
        if past.chars > bytes {
            return;
        }
        self.bytes += past.chars;
        self.messages.push_back(past);
        while self.messages.len() > count || self.bytes > bytes {
            let Some(old) = self.messages.pop_front() else {
                break;
            };
            self.bytes -= old.chars;
        }
    }
}

impl Room {
    /// Keeps `stanza` (a broadcast groupchat message) for newcomers.
    pub(super) fn remember(&mut self, stanza: Stanza) {
        if self.limits.history == 0 {
            return;
        }
        let chars = stanza.to_bytes().len();
        let past = Past {
            stanza,
            ts: self.now,
            chars,
        };
        self.history
            .push(past, self.limits.history, self.limits.history_bytes);
    }

    /// The history an occupant entering with `join` (its `<x xmlns='…muc'/>`) gets, addressed
    /// to `to`. Without `<history/>` it gets all the room keeps.
    pub(super) fn history_for(&self, join: &Element, to: &Jid) -> Vec<Stanza> {
        let h = join.get_child("history", ns::MUC);
        let num = |name: &str| {
            h.and_then(|h| h.attr(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let max_stanzas = num("maxstanzas").unwrap_or(u64::MAX);
        let max_chars = num("maxchars").unwrap_or(u64::MAX);
        let not_before = [
            num("seconds").map(|s| {
                self.now
                    .saturating_sub(i64::try_from(s).unwrap_or(i64::MAX))
            }),
            h.and_then(|h| h.attr("since")).and_then(parse_utc),
        ]
        .into_iter()
        .flatten()
        .max();
        let mut picked = Vec::new();
        let (mut stanzas, mut chars) = (0u64, 0u64);
        for p in self.history.messages.iter().rev() {
            let size = u64::try_from(p.chars).unwrap_or(u64::MAX);
            if stanzas >= max_stanzas
                || chars.saturating_add(size) > max_chars
                || not_before.is_some_and(|t| p.ts < t)
            {
                break;
            }
            stanzas += 1;
            chars = chars.saturating_add(size);
            picked.push(p);
        }
        picked
            .into_iter()
            .rev()
            .map(|p| {
                let mut s = p.stanza.clone();
                s.set_to(to.clone());
                // §7.9: history an owner brought from a one-to-one chat carries its own
                // `<delay/>`, which the room does not add to.
                if !s.element().has_child("delay", rookery_proto::ns::DELAY) {
                    s.push_payload(delay(self.jid.as_str(), p.ts, None));
                }
                s
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn past(chars: usize) -> Past {
        let el = Element::new("message", rookery_xml::CONTENT_NS);
        Past {
            stanza: Stanza::from_element(el).unwrap(),
            ts: 0,
            chars,
        }
    }

    /// The oldest go first past the count or the bytes; one larger than the bytes alone is
    /// not kept and leaves the others.
    #[test]
    fn history_is_bounded_by_count_and_bytes() {
        let mut h = History::default();
        for _ in 0..3 {
            h.push(past(40), 10, 100);
        }
        assert_eq!((h.messages.len(), h.bytes), (2, 80));
        h.push(past(101), 10, 100);
        assert_eq!((h.messages.len(), h.bytes), (2, 80));
        for _ in 0..5 {
            h.push(past(1), 3, 100);
        }
        assert_eq!((h.messages.len(), h.bytes), (3, 3));
    }
}
