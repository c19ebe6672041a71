//! XEP-0352 client state indication (`urn:xmpp:csi:0`): while a client says it is inactive
//! (a phone in a pocket), stanzas that can wait are held back and sent together later, so
//! the radio wakes less often.
//!
//! What waits: presence updates (available and unavailable; a contact's status change is
//! only useful once someone looks) and messages that carry nothing a user would be alerted
//! for (chat states, receipts and markers without a body, pubsub notifications). Everything
//! else goes out at once: messages with a body, subject or encrypted payload, errors, IQs,
//! subscription requests. An urgent stanza first flushes what is held, so the client sees
//! stanzas in the order they were routed. A newer presence from the same sender replaces
//! the held one. The holding buffer is bounded; when it is full everything held is sent.
//! `<active/>` sends everything held.
//!
//! The classification reads the serialized bytes (the router serializes once and shares
//! the bytes), so holding a stanza costs no parse.

use std::collections::VecDeque;

use bytes::Bytes;

/// The XEP-0352 namespace.
pub use rookery_proto::ns::CSI as NS;

/// Held stanzas of an inactive client.
#[derive(Debug, Default)]
pub struct Csi {
    inactive: bool,
    held: VecDeque<Bytes>,
}

/// What to do with an outbound stanza.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Held back; nothing to write now.
    Held,
    /// Write these (what was held, oldest first, then possibly the new stanza) now.
    Send(Vec<Bytes>),
}

impl Csi {
    /// Whether the client said it is inactive.
    pub fn is_inactive(&self) -> bool {
        self.inactive
    }

    /// `<inactive/>`.
    pub fn set_inactive(&mut self) {
        self.inactive = true;
    }

    /// `<active/>` (or a resumed stream): returns what was held, to send now.
    pub fn set_active(&mut self) -> VecDeque<Bytes> {
        self.inactive = false;
        std::mem::take(&mut self.held)
    }

    /// Number of stanzas held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The stanzas held back, oldest first (a copy of them goes to the node a session
    /// moves to).
    pub fn held_stanzas(&self) -> impl Iterator<Item = &Bytes> {
        self.held.iter()
    }

    /// Takes what is held out (the session ends).
    pub fn take_held(&mut self) -> VecDeque<Bytes> {
        std::mem::take(&mut self.held)
    }

    /// Decides about an outbound stanza; `max_held` bounds the buffer.
    pub fn outbound(&mut self, stanza: Bytes, max_held: usize) -> Decision {
        if !self.inactive {
            return Decision::Send(vec![stanza]);
        }
        if is_urgent(&stanza) {
            let mut out: Vec<Bytes> = self.held.drain(..).collect();
            out.push(stanza);
            self.shrink();
            return Decision::Send(out);
        }
        if stanza.starts_with(b"<presence") {
            if let Some(from) = start_tag_attr(&stanza, "from") {
                let from = from.to_vec();
                self.held.retain(|h| {
                    !(h.starts_with(b"<presence") && start_tag_attr(h, "from") == Some(&from[..]))
                });
            }
        }
        self.held.push_back(stanza);
        if self.held.len() > max_held {
            let out = self.held.drain(..).collect();
            self.shrink();
            return Decision::Send(out);
        }
        Decision::Held
    }

    fn shrink(&mut self) {
        if self.held.capacity() > 32 {
            self.held = VecDeque::new();
        }
    }
}

/// Whether an inactive client must get this stanza now.
pub fn is_urgent(stanza: &[u8]) -> bool {
    let kind_presence = stanza.starts_with(b"<presence");
    let kind_message = stanza.starts_with(b"<message");
    if !kind_presence && !kind_message {
        return true; // IQs and anything else
    }
    let ty = start_tag_attr(stanza, "type");
    if kind_presence {
        // Subscription requests and errors need the user; status updates can wait.
        return !matches!(ty, None | Some(b"unavailable"));
    }
    if ty == Some(b"error") {
        return true;
    }
    const URGENT: [&[u8]; 5] = [
        b"<body",
        b"<subject",
        b"<encrypted",
        b"urn:xmpp:jingle-message",
        b"jabber:x:conference",
    ];
    URGENT.iter().any(|p| contains(stanza, p))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The value of attribute `name` in the start tag of serialized `stanza` (our writer quotes
/// with `"` and escapes `"` inside values, so the first `"` closes the value).
fn start_tag_attr<'a>(stanza: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let end = stanza.iter().position(|&c| c == b'>')?;
    let tag = stanza.get(..end)?;
    let mut pat = Vec::with_capacity(name.len() + 3);
    pat.push(b' ');
    pat.extend_from_slice(name.as_bytes());
    pat.extend_from_slice(b"=\"");
    let at = tag.windows(pat.len()).position(|w| w == pat.as_slice())?;
    let rest = tag.get(at + pat.len()..)?;
    let close = rest.iter().position(|&c| c == b'"')?;
    rest.get(..close)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn classification() {
        assert!(!is_urgent(
            b"<presence from=\"a@x/r\"><show>away</show></presence>"
        ));
        assert!(!is_urgent(
            b"<presence from=\"a@x/r\" type=\"unavailable\"/>"
        ));
        assert!(is_urgent(b"<presence from=\"a@x\" type=\"subscribe\"/>"));
        assert!(is_urgent(
            b"<message from=\"a@x/r\" type=\"chat\"><body>hi</body></message>"
        ));
        assert!(!is_urgent(
            b"<message from=\"a@x/r\" type=\"chat\"><composing xmlns=\"http://jabber.org/protocol/chatstates\"/></message>"
        ));
        assert!(is_urgent(b"<message from=\"a@x/r\" type=\"error\"/>"));
        assert!(is_urgent(b"<iq type=\"get\" id=\"1\"/>"));
        // An attribute value that merely contains the pattern does not count.
        assert_eq!(
            start_tag_attr(b"<presence xfrom=\"no\" from=\"yes\"/>", "from"),
            Some(&b"yes"[..])
        );
    }

    #[test]
    fn holds_while_inactive_and_flushes_in_order() {
        let mut c = Csi::default();
        let p1 = b("<presence from=\"a@x/1\"/>");
        assert_eq!(c.outbound(p1.clone(), 10), Decision::Send(vec![p1.clone()]));
        c.set_inactive();
        assert_eq!(c.outbound(p1.clone(), 10), Decision::Held);
        let p2 = b("<presence from=\"b@x/1\"/>");
        assert_eq!(c.outbound(p2.clone(), 10), Decision::Held);
        // A newer presence from a@x/1 replaces the held one (and moves behind b's).
        let p1b = b("<presence from=\"a@x/1\"><show>dnd</show></presence>");
        assert_eq!(c.outbound(p1b.clone(), 10), Decision::Held);
        assert_eq!(c.held(), 2);
        let m = b("<message from=\"c@x/1\"><body>x</body></message>");
        assert_eq!(c.outbound(m.clone(), 10), Decision::Send(vec![p2, p1b, m]));
        assert_eq!(c.held(), 0);
        let p3 = b("<presence from=\"d@x/1\"/>");
        assert_eq!(c.outbound(p3.clone(), 10), Decision::Held);
        assert_eq!(c.set_active(), VecDeque::from(vec![p3]));
        assert!(!c.is_inactive());
    }

    #[test]
    fn bounded() {
        let mut c = Csi::default();
        c.set_inactive();
        let ps = [
            b("<presence from=\"a@x/1\"/>"),
            b("<presence from=\"a@x/2\"/>"),
            b("<presence from=\"a@x/3\"/>"),
        ];
        assert_eq!(c.outbound(ps[0].clone(), 2), Decision::Held);
        assert_eq!(c.outbound(ps[1].clone(), 2), Decision::Held);
        assert_eq!(c.outbound(ps[2].clone(), 2), Decision::Send(ps.to_vec()));
        assert!(c.is_inactive());
    }
}
