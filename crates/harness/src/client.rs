//! The client end of an in-memory session: logs in the RFC 6120 way (SCRAM, restart, bind,
//! initial presence), then keeps nothing but its end of the pipe.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rookery_proto::ns;
use rookery_sasl::{Mechanism, SaltedPasswordCache, ScramClient};
use rookery_xml::{Element, Event, Limits, StreamParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::directory::{user, PASSWORD};

const SASL: &str = ns::SASL;

/// Longest wait for any one answer of the server.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

fn header(domain: &str) -> String {
    format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
         to='{domain}' version='1.0'>"
    )
}

/// A client during its login: the pipe and a parser of the server's stream.
struct Login {
    io: DuplexStream,
    parser: StreamParser,
}

impl Login {
    async fn send(&mut self, s: &str) -> anyhow::Result<()> {
        Ok(self.io.write_all(s.as_bytes()).await?)
    }

    /// The next top-level element from the server.
    async fn next(&mut self) -> anyhow::Result<Element> {
        let mut buf = [0u8; 4096];
        loop {
            match self.parser.next_event()? {
                Some(Event::Element(e)) => return Ok(e),
                Some(_) => continue,
                None => {}
            }
            let n = tokio::time::timeout(ANSWER_TIMEOUT, self.io.read(&mut buf))
                .await
                .context("no answer from the server")??;
            if n == 0 {
                bail!("the server closed the stream");
            }
            self.parser.feed(buf.get(..n).unwrap_or_default());
        }
    }

    /// The next element that is not a stanza pushed by the server (presence, messages).
    async fn answer(&mut self, name: &str, ns: &str) -> anyhow::Result<Element> {
        loop {
            let el = self.next().await?;
            if el.is(name, ns) {
                return Ok(el);
            }
            if el.is("failure", SASL) || el.is("error", ns::STREAM) {
                bail!("refused: {el}");
            }
        }
    }
}

/// Logs in account `i` of `domain` over `io` and sends initial presence; returns the pipe
/// once the server has handled everything sent (a ping answered), with nothing unread in it.
pub async fn login(
    io: DuplexStream,
    domain: &str,
    i: usize,
    cache: Arc<SaltedPasswordCache>,
) -> anyhow::Result<DuplexStream> {
    let mut c = Login {
        io,
        parser: StreamParser::new(Limits::S2S),
    };
    c.send(&header(domain)).await?;
    c.answer("features", ns::STREAM).await?;
    let mut scram =
        ScramClient::new(Mechanism::ScramSha256, &user(i), PASSWORD, None).with_cache(cache);
    let first = B64.encode(scram.client_first());
    c.send(&format!(
        "<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>{first}</auth>"
    ))
    .await?;
    let challenge = B64.decode(c.answer("challenge", SASL).await?.text())?;
    let response = B64.encode(
        scram
            .handle_challenge(&challenge)
            .map_err(|e| anyhow!("{e}"))?,
    );
    c.send(&format!("<response xmlns='{SASL}'>{response}</response>"))
        .await?;
    let success = B64.decode(c.answer("success", SASL).await?.text())?;
    scram.verify_success(&success).map_err(|e| anyhow!("{e}"))?;
    // The stream restarts (RFC 6120 §6.4.6): a fresh parser for the server's new header.
    c.parser = StreamParser::new(Limits::S2S);
    c.send(&header(domain)).await?;
    c.answer("features", ns::STREAM).await?;
    c.send(
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>h</resource></bind></iq>",
    )
    .await?;
    let bound = c.answer("iq", ns::CLIENT).await?;
    if bound.attr("type") != Some("result") {
        bail!("bind refused: {bound}");
    }
    c.send("<presence/><iq type='get' id='s'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await?;
    loop {
        let el = c.answer("iq", ns::CLIENT).await?;
        if el.attr("id") == Some("s") {
            return Ok(c.io);
        }
    }
}

/// Reads `io` until `marker` has arrived; what came before it (stanzas pushed earlier) is
/// discarded.
pub async fn wait_for(io: &mut DuplexStream, marker: &[u8]) -> anyhow::Result<()> {
    let mut seen: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    loop {
        let n = tokio::time::timeout(ANSWER_TIMEOUT, io.read(&mut buf))
            .await
            .with_context(|| format!("waited {:?} for a stanza", started.elapsed()))??;
        if n == 0 {
            bail!("the server closed the stream");
        }
        seen.extend_from_slice(buf.get(..n).unwrap_or_default());
        if seen.windows(marker.len()).any(|w| w == marker) {
            return Ok(());
        }
        // Keep only a tail long enough to hold a marker cut in two.
        let keep = seen.len().saturating_sub(marker.len());
        seen.drain(..keep);
    }
}
