//! Plain TCP or TLS behind one type, so the connection code is written once.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{client, server};

/// The byte stream of a connection.
#[derive(Debug)]
pub enum Transport {
    /// Before STARTTLS.
    Plain(TcpStream),
    /// TLS, we are the server (after STARTTLS, or from the start on a direct-TLS port).
    Tls(Box<server::TlsStream<TcpStream>>),
    /// TLS, we are the client (outgoing server-to-server streams).
    TlsClient(Box<client::TlsStream<TcpStream>>),
    /// One end of an in-process pipe (`tokio::io::duplex`): the same stream code without a
    /// socket, so a harness can run a million client sessions in one process
    /// (`crates/harness`). Counted as secure: its bytes never leave the address space.
    Memory(tokio::io::DuplexStream),
}

/// Dispatches to the inner stream of every variant.
macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Transport::Plain($s) => $e,
            Transport::Tls($s) => {
                let $s = $s.as_mut();
                $e
            }
            Transport::TlsClient($s) => {
                let $s = $s.as_mut();
                $e
            }
            Transport::Memory($s) => $e,
        }
    };
}

impl Transport {
    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_) | Transport::TlsClient(_))
    }

    /// Whether the path to the peer is confidential: TLS, or an in-process pipe.
    pub fn is_secure(&self) -> bool {
        !matches!(self, Transport::Plain(_))
    }

    /// The RFC 9266 `tls-exporter` channel binding, available on TLS 1.3 only.
    pub fn channel_binding(&self) -> Option<Vec<u8>> {
        match self {
            Transport::Plain(_) | Transport::Memory(_) => None,
            Transport::Tls(t) => tls_exporter(t.get_ref().1).map(Vec::from),
            Transport::TlsClient(t) => tls_exporter(t.get_ref().1).map(Vec::from),
        }
    }
}

/// RFC 9266: 32 bytes exported with the label `EXPORTER-Channel-Binding` and no context, TLS
/// 1.3 only (on 1.2 the exporter is not bound to the handshake without extended master
/// secret). Public for the HTTPS listener, whose WebSocket sessions bind to it the same way.
pub fn tls_exporter<D>(conn: &rustls::ConnectionCommon<D>) -> Option<[u8; 32]> {
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    conn.export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
        .ok()
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}
