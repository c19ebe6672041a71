//! The accept loop every listener shares (c2s on both ports, s2s on both ports, components),
//! with the connection limits of its kind of listener.
//!
//! [`CapLimits`] are three caps, all changeable while the server runs (reload):
//! - **open connections**: at the cap the loop stops accepting, so new connections wait in the
//!   kernel's listen backlog instead of being accepted only to fail later with `EMFILE`
//!   (mini-redis' `Listener` works the same way);
//! - **connections per address** (IPv6 per /64, as [`IpKey`]): one more from an address at its
//!   cap is closed right after `accept`, so one host cannot take every slot;
//! - **connections still negotiating** (no bound stream yet): when full, the *oldest*
//!   negotiating connection is dropped for the new one. Sockets that never speak then cost
//!   the server a slot only until newer ones push them out, while a real client, which
//!   negotiates in milliseconds, is through before its turn comes.
//!
//! A connection counts as negotiating until its bound-stream loop starts: [`crate::pump::run`]
//! calls [`established`], which finds the connection's slot in a task-local the accept loop
//! set. The listeners' negotiation code needs no handle for it, and a stream that is not from
//! an accept loop (an outgoing s2s stream) is simply not counted.
//!
//! Listeners of one kind share one [`ConnectionCap`]: the two c2s ports count together, and so
//! do the two s2s ports.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};

use crate::limit::IpKey;

/// Descriptors kept back from the automatic cap for everything that is not an accepted
/// connection: the store, log files, listening sockets, outgoing s2s streams, DNS.
const RESERVED_FDS: u64 = 50;

/// Pause after a failed `accept` (e.g. `EMFILE` from descriptors used elsewhere), instead
/// of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The limits of one kind of listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapLimits {
    /// Connections open at once; 0: automatic ([`CapLimits::automatic`]).
    pub max_connections: usize,
    /// Connections open at once from one address (IPv6: one /64); 0: no limit.
    pub max_per_ip: usize,
    /// Connections still negotiating at once; 0: no limit.
    pub max_negotiating: usize,
}

impl CapLimits {
    /// The process's open-file limit less a few descriptors for everything else: as high as
    /// the process can go anyway, so the cap changes nothing until accepting would fail.
    pub fn automatic() -> usize {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let n = soft.saturating_sub(RESERVED_FDS).max(1);
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// With 0s resolved: the automatic connection cap, `usize::MAX` for "no limit".
    fn resolved(self) -> CapLimits {
        let or_max = |n: usize| if n == 0 { usize::MAX } else { n };
        CapLimits {
            max_connections: if self.max_connections == 0 {
                Self::automatic()
            } else {
                self.max_connections
            },
            max_per_ip: or_max(self.max_per_ip),
            max_negotiating: or_max(self.max_negotiating),
        }
    }
}

/// The connections of the listeners sharing it, within their [`CapLimits`].
#[derive(Debug, Clone)]
pub struct ConnectionCap {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Signalled when a connection ends or the limits change: a waiting loop looks again.
    freed: Notify,
}

#[derive(Debug)]
struct State {
    limits: CapLimits,
    open: usize,
    by_ip: HashMap<IpKey, usize>,
    /// Negotiating connections by admission order (oldest first), with the switch that drops
    /// one.
    negotiating: BTreeMap<u64, oneshot::Sender<()>>,
    next_id: u64,
    /// Whether "cap reached" was logged since the cap last had room (one line per episode).
    warned: bool,
}

/// Why [`ConnectionCap::admit`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Every connection slot is taken (two loops sharing the cap raced for the last one).
    Full,
    /// The peer's address holds its share.
    PerIp,
}

impl ConnectionCap {
    /// A cap of `max` connections, no other limit; 0 means automatic.
    pub fn new(max: usize) -> Self {
        Self::with_limits(CapLimits {
            max_connections: max,
            max_per_ip: 0,
            max_negotiating: 0,
        })
    }

    /// A cap with all three limits.
    pub fn with_limits(limits: CapLimits) -> Self {
        ConnectionCap {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    limits: limits.resolved(),
                    open: 0,
                    by_ip: HashMap::new(),
                    negotiating: BTreeMap::new(),
                    next_id: 0,
                    warned: false,
                }),
                freed: Notify::new(),
            }),
        }
    }

    /// Applies new limits from now on (reload). Connections already open stay open: a lower
    /// cap only holds back new ones until enough have ended.
    pub fn set_limits(&self, limits: CapLimits) {
        self.inner.lock().limits = limits.resolved();
        self.inner.freed.notify_waiters();
    }

    /// The connection cap.
    pub fn max(&self) -> usize {
        self.inner.lock().limits.max_connections
    }

    /// A share of the cap for one connection from `ip` accepted outside [`accept_loop`] (a
    /// WebSocket or BOSH session of the HTTP listener), if the limits allow one now; the
    /// connection holds it until it ends. The per-address limit applies; the negotiation
    /// cap does not (no accept loop could drop such a connection for a newer one).
    pub fn try_acquire(&self, ip: IpAddr) -> Option<Permit> {
        let (slot, _evicted) = self.admit(ip).ok()?;
        slot.established();
        Some(Permit(slot))
    }

    /// Connections open now under this cap.
    pub fn in_use(&self) -> usize {
        self.inner.lock().open
    }

    /// Connections open now that are still negotiating.
    pub fn negotiating(&self) -> usize {
        self.inner.lock().negotiating.len()
    }

    /// Waits until a connection may be accepted.
    async fn room(&self) {
        loop {
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut st = self.inner.lock();
                if st.open < st.limits.max_connections {
                    st.warned = false;
                    return;
                }
                if !st.warned {
                    st.warned = true;
                    tracing::warn!(
                        max = st.limits.max_connections,
                        "connection cap reached; not accepting"
                    );
                }
            }
            freed.await;
        }
    }

    /// Takes a slot for a connection from `ip`; the receiver fires when the connection is
    /// dropped to make room for a newer negotiating one.
    fn admit(&self, ip: IpAddr) -> Result<(Slot, oneshot::Receiver<()>), Refused> {
        let key = IpKey::from(ip);
        let mut st = self.inner.lock();
        if st.open >= st.limits.max_connections {
            return Err(Refused::Full);
        }
        let from_ip = st.by_ip.get(&key).copied().unwrap_or(0);
        if from_ip >= st.limits.max_per_ip {
            return Err(Refused::PerIp);
        }
        while st.negotiating.len() >= st.limits.max_negotiating {
            let Some((_, evict)) = st.negotiating.pop_first() else {
                break;
            };
            // The task may have ended already; then there is nothing to drop.
            let _ = evict.send(());
        }
        let id = st.next_id;
        st.next_id = st.next_id.wrapping_add(1);
        let (evict, evicted) = oneshot::channel();
        st.negotiating.insert(id, evict);
        st.open += 1;
        st.by_ip.insert(key, from_ip + 1);
        Ok((
            Slot {
                cap: self.inner.clone(),
                key,
                id,
            },
            evicted,
        ))
    }
}

impl Inner {
    /// The state; a panic while it was held cannot leave it inconsistent (every change is a
    /// few plain assignments), so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's share of a [`ConnectionCap`] taken with [`ConnectionCap::try_acquire`],
/// given back when dropped.
#[derive(Debug)]
pub struct Permit(#[allow(dead_code, reason = "held for its Drop")] Slot);

/// One accepted connection's share of a [`ConnectionCap`], given back when its task ends.
#[derive(Debug)]
struct Slot {
    cap: Arc<Inner>,
    key: IpKey,
    id: u64,
}

impl Slot {
    /// The connection is past negotiation: it can no longer be dropped for a newer one.
    fn established(&self) {
        self.cap.lock().negotiating.remove(&self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut st = self.cap.lock();
            st.open = st.open.saturating_sub(1);
            st.negotiating.remove(&self.id);
            if let Some(n) = st.by_ip.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.by_ip.remove(&self.key);
                }
            }
        }
        self.cap.freed.notify_waiters();
    }
}

tokio::task_local! {
    /// The slot of the connection this task serves, for [`established`].
    static SLOT: Slot;
}

/// Marks the connection served by the current task as negotiated (its stream is bound), so
/// the negotiation cap no longer counts it or drops it. Outside an accept loop's task
/// (an outgoing stream) it does nothing.
pub fn established() {
    let _ = SLOT.try_with(Slot::established);
}

/// Accepts connections on `listener` until the task is dropped, within `cap`; each one
/// (with `TCP_NODELAY` set) runs `serve` in a task of its own.
pub async fn accept_loop<F, Fut>(listener: TcpListener, cap: ConnectionCap, mut serve: F)
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().ok();
    loop {
        cap.room().await;
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let (slot, evicted) = match cap.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(why) => {
                // Closed without a word: nothing was negotiated, and a stream error would
                // cost more than the connection is owed.
                tracing::debug!(?addr, %peer, ?why, "connection refused");
                rookery_metrics::get().connection_refused(match why {
                    Refused::PerIp => rookery_metrics::Refusal::PerIp,
                    Refused::Full => rookery_metrics::Refusal::Full,
                });
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let conn = serve(tcp, peer);
        tokio::spawn(SLOT.scope(slot, async move {
            tokio::select! {
                () = conn => {}
                Ok(()) = evicted => {
                    tracing::debug!(%peer, "dropped while negotiating: newer connections need the slot");
                    rookery_metrics::get().negotiation_drop();
                }
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::sync::mpsc;

    #[test]
    fn automatic_is_below_the_fd_limit() {
        let cap = ConnectionCap::new(0);
        assert_eq!(cap.max(), CapLimits::automatic());
        assert!(cap.max() >= 1);
        assert_eq!(ConnectionCap::new(7).max(), 7);
    }

    /// A listener whose connections report (peer port) when accepted, call [`established`]
    /// when their client sends `b`, and end when it closes.
    async fn serve_on(
        cap: &ConnectionCap,
    ) -> (
        SocketAddr,
        mpsc::UnboundedReceiver<u16>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(accept_loop(listener, cap.clone(), move |mut tcp, peer| {
            let accepted = accepted.clone();
            async move {
                let _ = accepted.send(peer.port());
                let mut buf = [0u8; 16];
                while let Ok(n @ 1..) = tcp.read(&mut buf).await {
                    if buf.get(..n).is_some_and(|b| b.contains(&b'b')) {
                        established();
                    }
                }
            }
        }));
        (addr, seen, task)
    }

    /// Reads until the server closes the connection.
    async fn closed(mut tcp: TcpStream) {
        let mut buf = [0u8; 16];
        while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    }

    /// At the cap the loop accepts nothing more; when a connection ends, the next waiting
    /// one is accepted.
    #[tokio::test]
    async fn holds_at_most_the_cap() {
        let cap = ConnectionCap::new(2);
        let (addr, mut seen, task) = serve_on(&cap).await;
        let a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let _c = TcpStream::connect(addr).await.unwrap();
        seen.recv().await.unwrap();
        seen.recv().await.unwrap();
        assert_eq!(cap.in_use(), 2);
        // The third waits in the backlog until one of the first two ends.
        assert!(seen.try_recv().is_err());
        drop(a);
        seen.recv().await.unwrap();
        assert_eq!(cap.in_use(), 2);
        // A higher cap (reload) lets the loop accept again at once.
        cap.set_limits(CapLimits {
            max_connections: 3,
            max_per_ip: 0,
            max_negotiating: 0,
        });
        let _d = TcpStream::connect(addr).await.unwrap();
        seen.recv().await.unwrap();
        assert_eq!(cap.in_use(), 3);
        task.abort();
    }

    /// One address past its share is closed at once; another address is still served.
    #[tokio::test]
    async fn closes_what_is_over_the_share_of_an_address() {
        let cap = ConnectionCap::with_limits(CapLimits {
            max_connections: 0,
            max_per_ip: 2,
            max_negotiating: 0,
        });
        let (addr, mut seen, task) = serve_on(&cap).await;
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        seen.recv().await.unwrap();
        seen.recv().await.unwrap();
        closed(TcpStream::connect(addr).await.unwrap()).await;
        assert_eq!(cap.in_use(), 2);
        // 127.0.0.2 is another address on Linux loopback.
        let other = tokio::net::TcpSocket::new_v4().unwrap();
        if other.bind("127.0.0.2:0".parse().unwrap()).is_ok() {
            let _c = other.connect(addr).await.unwrap();
            seen.recv().await.unwrap();
            assert_eq!(cap.in_use(), 3);
        }
        task.abort();
    }

    /// When the negotiation cap is full, the oldest negotiating connection is dropped; an
    /// established one never is.
    #[tokio::test]
    async fn drops_the_oldest_negotiating_connection() {
        use tokio::io::AsyncWriteExt;
        let cap = ConnectionCap::with_limits(CapLimits {
            max_connections: 0,
            max_per_ip: 0,
            max_negotiating: 2,
        });
        let (addr, mut seen, task) = serve_on(&cap).await;
        let mut bound = TcpStream::connect(addr).await.unwrap();
        seen.recv().await.unwrap();
        bound.write_all(b"b").await.unwrap();
        let oldest = TcpStream::connect(addr).await.unwrap();
        seen.recv().await.unwrap();
        // Established once the server read the `b`: wait for the count, not for time.
        while cap.negotiating() != 1 {
            tokio::task::yield_now().await;
        }
        let _newer = TcpStream::connect(addr).await.unwrap();
        seen.recv().await.unwrap();
        let _newest = TcpStream::connect(addr).await.unwrap();
        seen.recv().await.unwrap();
        closed(oldest).await;
        // The dropped connection's slot is given back as its task ends.
        while cap.in_use() != 3 {
            tokio::task::yield_now().await;
        }
        assert_eq!(cap.negotiating(), 2);
        task.abort();
    }
}
