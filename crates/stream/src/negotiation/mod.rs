//! Stream negotiation as sans-IO state machines (RFC 6120 §4.3), in the manner of
//! `quinn-proto` and `rustls`: a machine takes [`Input`]s (the peer's stream header, its
//! elements, "TLS is up", the answer to a request) and returns [`Action`]s (send this, start
//! TLS, restart the stream, look this up, done, fail). It never touches a socket, a clock or
//! a store, so every negotiation path is a unit test that feeds elements and reads actions.
//!
//! Layout:
//! - this file: the vocabulary ([`Input`], [`Action`], [`Machine`]) and [`drive`], the one
//!   async driver that runs any machine over a [`Conn`] using only its public methods, so
//!   another framing of the same stream (WebSocket, BOSH) reuses it as is;
//! - [`receiving`]: the steps of the receiving entity every listener shares: answering and
//!   checking the peer's header (§4.7), the STARTTLS offer and `<proceed/>` (§5.4);
//! - [`sasl`]: SASL on both sides (§6.4): the receiving exchange over any
//!   [`sasl::SaslServer`] (SCRAM/PLAIN for clients, EXTERNAL for servers) and the
//!   initiating side's answers to challenges;
//! - [`sasl2`]: the wire of XEP-0388 SASL2 (feature, `<authenticate/>`, success, failure);
//!   its exchange is [`sasl::Exchange`] in the SASL2 namespace.
//!
//! The role-specific steps live next to their protocols and use these: client binding and
//! XEP-0198 resumption in `rookery-c2s`, dialback and the initiating server in `rookery-s2s`.

pub mod receiving;
pub mod sasl;
pub mod sasl2;

use std::collections::VecDeque;
use std::future::Future;

use rookery_proto::{StreamError, StreamErrorCondition as SEC};
use rookery_sasl::ChannelBindings;
use rookery_xml::{Element, Event, Limits, StreamHeader};

use crate::conn::{Conn, ConnError};

/// What a machine is fed.
#[derive(Debug)]
pub enum Input<R> {
    /// The peer opened a stream (or reopened it after a restart).
    Header(StreamHeader),
    /// A top-level element.
    Element(Element),
    /// The TLS handshake asked for by [`Action::StartTls`] succeeded; the stream starts over
    /// (RFC 6120 §5.4.3.3). Carries the channel bindings of the new session (XEP-0440).
    TlsDone {
        /// What the new session can bind to ([`Effects::channel_bindings`]).
        channel_binding: ChannelBindings,
    },
    /// The answer to an [`Action::Request`].
    Reply(R),
}

/// What a machine asks its driver to do, in order.
#[derive(Debug, PartialEq)]
pub enum Action<Q, D> {
    /// Send our stream header as the receiving entity, speaking as `from` (when set, else the
    /// connection's domain) to `to`, with stream id `id`.
    SendHeader {
        /// The domain we speak as (a hosted domain the peer named), if not the default.
        from: Option<String>,
        /// The `to` of our header (the peer's `from`).
        to: Option<String>,
        /// The stream id.
        id: String,
    },
    /// Write these bytes as they are (the initiating side's header, built by its role).
    SendRaw(Vec<u8>),
    /// Send a top-level element.
    Send(Element),
    /// Run the TLS handshake, then feed [`Input::TlsDone`].
    StartTls,
    /// Start a new stream on the same transport: nothing the old parser buffered is parsed
    /// (RFC 6120 §6.4.6).
    Restart,
    /// Change the parser limits (wider once authenticated).
    Limits(Limits),
    /// Asynchronous work of the role (a credential lookup, a registration, a certificate
    /// check); its answer comes back as [`Input::Reply`].
    Request(Q),
    /// Negotiation is over (or paused for work that needs the connection itself).
    Done(D),
    /// End the stream with this error.
    Fail(StreamError),
}

/// A negotiation state machine of one role.
pub trait Machine {
    /// Asynchronous work it asks for.
    type Request;
    /// The answer to a request.
    type Reply;
    /// What it hands over at the end.
    type Done;

    /// What to do before any input, each time a driver takes the machine on (the
    /// initiating side opens the stream itself). Nothing by default.
    fn start(&mut self) -> Vec<Action<Self::Request, Self::Done>> {
        Vec::new()
    }

    /// Takes one input and says what to do.
    fn handle(&mut self, input: Input<Self::Reply>) -> Vec<Action<Self::Request, Self::Done>>;
}

/// The asynchronous side of a role: performs what its machine asks for.
pub trait Effects<M: Machine> {
    /// Performs `request` (the connection is at hand for its address or its TLS state).
    fn perform(
        &mut self,
        conn: &mut Conn,
        request: M::Request,
    ) -> impl Future<Output = Result<M::Reply, ConnError>> + Send;

    /// Runs the TLS handshake on `conn` (server or client side, as the role is).
    fn start_tls(&mut self, conn: Conn) -> impl Future<Output = Result<Conn, ConnError>> + Send;

    /// What `conn` can bind to: [`Conn::channel_bindings`], by default; a role that knows
    /// the certificate it served adds `tls-server-end-point`.
    fn channel_bindings(&self, conn: &Conn) -> ChannelBindings {
        conn.channel_bindings()
    }
}

/// The stream error for an input of the wrong kind: an element where a header belongs.
pub fn expected_header() -> StreamError {
    StreamError::with_text(SEC::BadFormat, "expected a stream header")
}

/// The stream error for an input of the wrong kind: a header where an element belongs.
pub fn unexpected_header() -> StreamError {
    StreamError::with_text(SEC::BadFormat, "unexpected stream header")
}

/// Runs `machine` on the connection in `holder` until it is done or fails.
///
/// `holder` always holds the current connection (the TLS upgrade replaces it), so the caller
/// can still end the stream with an error after a failure. Only `Conn`'s public methods are
/// used: any framing of a stream negotiates through here. Every element is sent with its
/// own flush, as the steps are a dialogue and the peer waits for each.
pub async fn drive<M, E>(
    holder: &mut Option<Conn>,
    machine: &mut M,
    effects: &mut E,
) -> Result<M::Done, ConnError>
where
    M: Machine + Send,
    M::Request: Send,
    M::Reply: Send,
    E: Effects<M> + Send,
{
    let no_conn = || ConnError::stream(SEC::InternalServerError, "no connection");
    let mut inputs: VecDeque<Input<M::Reply>> = VecDeque::new();
    let mut actions = machine.start();
    loop {
        for action in actions.drain(..) {
            let conn = holder.as_mut().ok_or_else(no_conn)?;
            match action {
                Action::SendHeader { from, to, id } => {
                    if let Some(from) = from {
                        conn.set_domain(&from);
                    }
                    conn.send_header(to.as_deref(), &id).await?;
                }
                Action::SendRaw(bytes) => conn.write(&bytes).await?,
                Action::Send(el) => conn.send(&el).await?,
                Action::StartTls => {
                    let plain = holder.take().ok_or_else(no_conn)?;
                    let tls = effects.start_tls(plain).await?;
                    tracing::debug!("TLS established");
                    inputs.push_back(Input::TlsDone {
                        channel_binding: effects.channel_bindings(&tls),
                    });
                    *holder = Some(tls);
                }
                Action::Restart => conn.restart(),
                Action::Limits(limits) => conn.set_limits(limits),
                Action::Request(q) => {
                    inputs.push_back(Input::Reply(effects.perform(conn, q).await?));
                }
                Action::Done(d) => return Ok(d),
                Action::Fail(e) => return Err(ConnError::Stream(e)),
            }
        }
        let input = match inputs.pop_front() {
            Some(i) => i,
            None => match holder.as_mut().ok_or_else(no_conn)?.next_event().await? {
                Event::StreamOpen(h) => Input::Header(h),
                Event::Element(el) => Input::Element(el),
                Event::StreamClose => return Err(ConnError::StreamClosed),
            },
        };
        actions = machine.handle(input);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rookery_proto::ns;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::transport::Transport;

    /// Answers the header with features, asks for a lookup on `<go/>`, is done with its
    /// answer; anything else fails.
    struct Toy;

    impl Machine for Toy {
        type Request = &'static str;
        type Reply = usize;
        type Done = usize;

        fn handle(&mut self, input: Input<usize>) -> Vec<Action<&'static str, usize>> {
            match input {
                Input::Header(_) => vec![
                    Action::SendHeader {
                        from: Some("other.test".into()),
                        to: None,
                        id: "s1".into(),
                    },
                    Action::Send(rookery_proto::stream::features()),
                ],
                Input::Element(el) if el.name() == "go" => {
                    vec![Action::Request("length of this")]
                }
                Input::Reply(n) => vec![Action::Restart, Action::Done(n)],
                _ => vec![Action::Fail(StreamError::new(SEC::NotAuthorized))],
            }
        }
    }

    struct Work;

    impl Effects<Toy> for Work {
        async fn perform(&mut self, _conn: &mut Conn, q: &'static str) -> Result<usize, ConnError> {
            Ok(q.len())
        }

        async fn start_tls(&mut self, conn: Conn) -> Result<Conn, ConnError> {
            Ok(conn)
        }
    }

    async fn pair() -> (Option<Conn>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, addr) = listener.accept().await.unwrap();
        let conn = Conn::new(
            Transport::Plain(tcp),
            addr,
            Limits::PRE_AUTH,
            "example.test",
            ns::CLIENT,
        );
        (Some(conn), peer)
    }

    const HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

    /// Actions run in order on the connection; a request's answer is fed back; done ends it.
    #[tokio::test]
    async fn executes_actions_and_feeds_replies() {
        let (mut holder, mut peer) = pair().await;
        peer.write_all(HEADER).await.unwrap();
        peer.write_all(b"<go/>").await.unwrap();
        let done = drive(&mut holder, &mut Toy, &mut Work).await.unwrap();
        assert_eq!(done, "length of this".len());
        assert_eq!(holder.unwrap().domain(), "other.test");
        let mut got = vec![0u8; 4096];
        let n = peer.read(&mut got).await.unwrap();
        let got = String::from_utf8_lossy(got.get(..n).unwrap()).into_owned();
        assert!(
            got.contains("from='other.test'") && got.contains("id='s1'"),
            "{got}"
        );
    }

    /// A failure is the stream error for the caller to send; the connection stays in the
    /// holder for it.
    #[tokio::test]
    async fn fail_returns_the_stream_error() {
        let (mut holder, mut peer) = pair().await;
        peer.write_all(HEADER).await.unwrap();
        peer.write_all(b"<stop/>").await.unwrap();
        let e = drive(&mut holder, &mut Toy, &mut Work).await.err().unwrap();
        assert!(matches!(e, ConnError::Stream(se) if se.condition == SEC::NotAuthorized));
        assert!(holder.is_some());
    }
}
