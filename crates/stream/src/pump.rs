//! The loop of a bound stream: inbound elements go to the listener's [`Inbound`] policy;
//! bytes the router queued for this stream are written in batches with one flush; the kill
//! switch and the idle timeout end it with a stream error.
//!
//! The policy can also see every outbound stanza before it is written (stream management
//! counts and keeps them, client state indication holds some back), ask for a timer (pings,
//! ack requests) and add one more wake-up source (a resuming connection taking the session
//! over; an outgoing server stream's own typed queue and its dialback verification requests,
//! acted on in [`Inbound::woken`]). Every hook has a default that does nothing special, so a listener implements only
//! [`Inbound::element`] unless it needs more.

use std::future::Future;
use std::time::Duration;

use rookery_core::deadline::after;
use rookery_core::session::{Queue, SessionEnd};
use rookery_core::Outbound;
use rookery_proto::StreamErrorCondition as SEC;
use rookery_xml::Element;
use tokio::time::Instant;

use crate::conn::{Conn, ConnError};

/// Most bytes gathered from the queue before one write and flush. Bounded so a busy queue
/// cannot keep the loop from reading; four full TLS records.
pub const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// How long a batch of writes may stall (the peer stopped reading) by default.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a listener does with each element its peer sends once the stream is bound: the
/// trust rule for `from` and the routing call live in implementations of this trait.
pub trait Inbound {
    /// Handles one top-level element; an error ends the stream.
    fn element(
        &mut self,
        conn: &mut Conn,
        el: Element,
    ) -> impl Future<Output = Result<(), ConnError>> + Send;

    /// Adds one item the router queued for this stream to the connection's write buffer
    /// ([`Conn::queue`]; the loop flushes once per wake-up). The default queues it as is.
    fn outbound(
        &mut self,
        conn: &mut Conn,
        item: Outbound,
    ) -> impl Future<Output = Result<(), ConnError>> + Send {
        async move {
            match item {
                Outbound::Bytes(b) => {
                    conn.queue(&b);
                    Ok(())
                }
                // What came before it is handed to the connection: let it go.
                Outbound::Receipt(_) => Ok(()),
            }
        }
    }

    /// Called after a batch of [`Inbound::outbound`] calls, right before the flush (e.g. to
    /// queue an ack request).
    fn batch_written(
        &mut self,
        _conn: &mut Conn,
    ) -> impl Future<Output = Result<(), ConnError>> + Send {
        async { Ok(()) }
    }

    /// When [`Inbound::timer`] should run next, if ever. Asked again after every event, so
    /// it can depend on [`Conn::last_read`].
    fn deadline(&self, _conn: &Conn) -> Option<Instant> {
        None
    }

    /// The deadline passed; an error ends the stream (e.g. a ping went unanswered).
    fn timer(&mut self, _conn: &mut Conn) -> impl Future<Output = Result<(), ConnError>> + Send {
        async { Ok(()) }
    }

    /// One more event source, polled beside the socket and the queue; an error ends the
    /// loop (e.g. [`ConnError::Detached`] when the session moves to another connection).
    /// Must be cancel-safe: the loop drops it whenever another event comes first.
    fn wake(&mut self) -> impl Future<Output = Result<(), ConnError>> + Send {
        std::future::pending()
    }

    /// Acts on what [`Inbound::wake`] brought, with the connection at hand (e.g. writes a
    /// request or stanzas it received from a channel of its own). Separate from `wake`
    /// because `wake` races the socket read, which holds the connection; this runs after
    /// it won, within [`Inbound::write_timeout`]. An error ends the stream.
    fn woken(&mut self, _conn: &mut Conn) -> impl Future<Output = Result<(), ConnError>> + Send {
        async { Ok(()) }
    }

    /// Longest a batch of writes may take; a peer that stops reading is disconnected
    /// after this, with `connection-timeout`.
    fn write_timeout(&self) -> Duration {
        DEFAULT_WRITE_TIMEOUT
    }
}

/// Runs the stream until it ends; returns why. `idle` of zero disables the idle timeout
/// (measured from the last bytes read, so whitespace keepalives count).
///
/// An idle stream waits in the `select!` below for its whole life, and its task's future is
/// as large as the largest state it can be in. So the work done once an event came (the
/// policy's handling, which may route through the whole core, and the writes) is boxed:
/// one allocation per event, freed when it is done, instead of kilobytes held by every idle
/// connection.
pub async fn run<H: Inbound + Send>(
    conn: &mut Conn,
    end: &mut SessionEnd,
    idle: Duration,
    handler: &mut H,
) -> ConnError {
    // Bound: the listener's negotiation cap no longer counts this connection.
    crate::listen::established();
    loop {
        let idle_deadline = (!idle.is_zero()).then(|| after(conn.last_read(), idle));
        let timer = handler.deadline(conn);
        tokio::select! {
            biased;
            reason = end.kill.fired() => {
                // Flush what was queued before the kill (e.g. the reply to the request that
                // caused it), then end the stream.
                let limit = handler.write_timeout();
                let drained = drain(conn, &mut end.rx, usize::MAX, handler);
                let _ = Box::pin(tokio::time::timeout(limit, drained)).await;
                return ConnError::Stream(reason);
            }
            out = end.rx.recv() => match out {
                Some(item) => {
                    let limit = handler.write_timeout();
                    let r = Box::pin(tokio::time::timeout(limit, async {
                        handler.outbound(conn, item).await?;
                        drain(conn, &mut end.rx, WRITE_BATCH_BYTES, handler).await
                    })).await;
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return e,
                        Err(_) => return write_stalled(),
                    }
                }
                None => return ConnError::stream(SEC::InternalServerError, "session queue closed"),
            },
            ev = conn.next_element() => match ev {
                Ok(el) => {
                    if let Err(e) = Box::pin(handler.element(conn, el)).await {
                        return e;
                    }
                }
                Err(e) => return e,
            },
            r = handler.wake() => {
                if let Err(e) = r {
                    return e;
                }
                let limit = handler.write_timeout();
                match Box::pin(tokio::time::timeout(limit, handler.woken(conn))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return e,
                    Err(_) => return write_stalled(),
                }
            }
            // One sleep for both deadlines, not one each: every idle stream's future holds it.
            // The policy's timer goes first when both are due.
            _ = sleep_until(earliest(timer, idle_deadline)) => {
                if timer.is_some_and(|t| t <= Instant::now()) {
                    let limit = handler.write_timeout();
                    match Box::pin(tokio::time::timeout(limit, handler.timer(conn))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return e,
                        Err(_) => return write_stalled(),
                    }
                    continue;
                }
                // The idle deadline was computed when this iteration began; bytes that arrived
                // since without completing an element (whitespace keepalives) moved it.
                if after(conn.last_read(), idle) > Instant::now() {
                    continue;
                }
                return ConnError::stream(SEC::ConnectionTimeout, "idle timeout");
            }
        }
    }
}

fn write_stalled() -> ConnError {
    ConnError::stream(SEC::ConnectionTimeout, "the peer stopped reading")
}

/// Ends the connection the way `reason` calls for: answer a peer's close, send a stream
/// error, or just log a lost connection.
pub async fn finish(conn: &mut Conn, reason: ConnError) {
    match reason {
        ConnError::StreamClosed => {
            tracing::info!("stream closed by peer");
            conn.close().await
        }
        ConnError::Stream(e) => conn.fail(&e).await,
        e => tracing::info!(error = %e, "connection lost"),
    }
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Gathers the stanzas queued for this stream through the policy, until the queue is empty or
/// `max` bytes wait, then writes them with one write and one flush.
async fn drain<H: Inbound + Send>(
    conn: &mut Conn,
    rx: &mut Queue,
    max: usize,
    handler: &mut H,
) -> Result<(), ConnError> {
    while conn.queued() < max {
        match rx.try_recv() {
            Ok(item) => handler.outbound(conn, item).await?,
            Err(_) => break,
        }
    }
    handler.batch_written(conn).await?;
    conn.flush().await
}
