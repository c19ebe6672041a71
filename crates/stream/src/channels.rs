//! A [`MessageTransport`] made of two bounded channels: the connection's tests feed and read
//! a message-framed connection through it. (The web transports drive their own: the
//! WebSocket its socket, BOSH its session's request window.)

use std::collections::VecDeque;
use std::io;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::message::{Frame, MessageTransport};

/// The connection's ends of the two channels to a transport adapter.
pub struct Channels {
    /// Messages from the peer; the adapter dropping its sender ends the input.
    incoming: mpsc::Receiver<Bytes>,
    /// Frames for the peer; `None` once the connection closed its output, which the adapter
    /// sees as the channel closed.
    outgoing: Option<PollSender<Frame>>,
}

impl Channels {
    /// The connection's ends: `incoming` of the adapter's messages, `outgoing` for frames.
    /// Bounded both: a full `incoming` holds the peer back, a full `outgoing` the
    /// connection.
    pub fn new(incoming: mpsc::Receiver<Bytes>, outgoing: mpsc::Sender<Frame>) -> Self {
        Channels {
            incoming,
            outgoing: Some(PollSender::new(outgoing)),
        }
    }
}

/// The adapter is gone (or we closed): nothing can be sent.
fn gone() -> io::Error {
    io::ErrorKind::BrokenPipe.into()
}

impl MessageTransport for Channels {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.incoming.poll_recv(cx)
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        frames: &mut VecDeque<Frame>,
    ) -> Poll<io::Result<()>> {
        let Some(tx) = &mut self.outgoing else {
            return Poll::Ready(Err(gone()));
        };
        while !frames.is_empty() {
            // A reserved slot survives a dropped poll: the next one sends into it.
            ready!(tx.poll_reserve(cx)).map_err(|_| gone())?;
            if let Some(frame) = frames.pop_front() {
                tx.send_item(frame).map_err(|_| gone())?;
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        self.outgoing = None;
        Poll::Ready(())
    }
}
