//! The accept loop every listener shares (c2s on both ports, s2s on both ports, components),
//! with a cap on the connections it holds open at once.
//!
//! The cap is a semaphore: a permit is taken *before* `accept`, and a connection's task holds
//! its permit until it ends. At the cap the loop stops accepting, so new connections wait in
//! the kernel's listen backlog instead of being accepted only to fail later with `EMFILE`
//! (mini-redis' `Listener` works the same way). Listeners of one kind share one cap: the two
//! c2s ports count together, and so do the two s2s ports.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Descriptors kept back from the automatic cap for everything that is not an accepted
/// connection: the store, log files, listening sockets, outgoing s2s streams, DNS.
const RESERVED_FDS: u64 = 50;

/// Pause after a failed `accept` (e.g. `EMFILE` from descriptors used elsewhere), instead
/// of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The most connections the listeners sharing it hold open at once.
#[derive(Debug, Clone)]
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
    max: usize,
}

impl ConnectionCap {
    /// A cap of `max` connections; 0 means automatic ([`ConnectionCap::automatic`]).
    pub fn new(max: usize) -> Self {
        let max = if max == 0 { Self::automatic() } else { max };
        let max = max.min(Semaphore::MAX_PERMITS);
        ConnectionCap {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// The process's open-file limit less a few descriptors for everything else: as high as
    /// the process can go anyway, so the cap changes nothing until accepting would fail.
    pub fn automatic() -> usize {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let n = soft.saturating_sub(RESERVED_FDS).max(1);
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A permit for one connection taken on outside [`accept_loop`] (a WebSocket upgraded
    /// by the HTTP listener), if the cap allows one now; the connection holds it until it
    /// ends.
    pub fn try_acquire(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Connections open now under this cap.
    pub fn in_use(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }
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
        let permit = match cap.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                tracing::warn!(
                    ?addr,
                    max = cap.max,
                    "connection cap reached; not accepting"
                );
                match cap.permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    // Never closed: the semaphore lives as long as `cap`.
                    Err(_) => return,
                }
            }
        };
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let conn = serve(tcp, peer);
                tokio::spawn(async move {
                    conn.await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
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
        assert_eq!(cap.max(), ConnectionCap::automatic());
        assert!(cap.max() >= 1);
        assert_eq!(ConnectionCap::new(7).max(), 7);
    }

    /// At the cap the loop accepts nothing more; when a connection ends, the next waiting
    /// one is accepted.
    #[tokio::test]
    async fn holds_at_most_the_cap() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cap = ConnectionCap::new(2);
        let (accepted, mut seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(accept_loop(listener, cap.clone(), move |mut tcp, _| {
            let accepted = accepted.clone();
            async move {
                let _ = accepted.send(());
                // Serve until the client closes.
                let mut buf = [0u8; 16];
                while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            }
        }));
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
        task.abort();
    }
}
