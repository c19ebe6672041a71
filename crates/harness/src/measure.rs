//! Readings of this process (`/proc/self`, Linux) and percentiles.

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One reading of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Resident set size, in bytes.
    pub rss_bytes: u64,
}

/// Resident memory now.
pub fn read() -> anyhow::Result<Reading> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .context("/proc/self/statm")?;
    Ok(Reading {
        rss_bytes: pages * rustix::param::page_size() as u64,
    })
}

/// Resident memory once the tasks of the last step are done with (after a second).
pub async fn settled() -> anyhow::Result<Reading> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    read()
}

/// CPU time of this process (user and system, all threads) so far.
pub fn cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields 14 and 15, counted after the parenthesized command name.
    let after = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .context("/proc/self/stat")?;
    let mut fields = after.split_whitespace().skip(11);
    let mut next =
        || -> anyhow::Result<u64> { Ok(fields.next().context("/proc/self/stat")?.parse()?) };
    let ticks = next()? + next()?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Ok(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// The `p`th percentile (0–100) of `samples`, nearest rank; zero for no samples.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut v = samples.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v.get(rank.saturating_sub(1)).copied().unwrap_or_default()
}

/// Resident memory per pipe pair of `count` pairs kept open, each having carried about
/// what a login carries (1 KiB to the client at once, 512 bytes to the server): the share
/// of the harness's transport in a session's figure, which a TCP session pays in the kernel
/// instead.
pub async fn pipes(count: usize) -> anyhow::Result<u64> {
    let before = settled().await?;
    let mut pairs = Vec::with_capacity(count);
    let mut buf = [0u8; 1024];
    for _ in 0..count {
        let (mut a, mut b) = tokio::io::duplex(super::PIPE_BYTES);
        b.write_all(&[b' '; 1024]).await?;
        a.read_exact(&mut buf).await?;
        a.write_all(&[b' '; 512]).await?;
        b.read_exact(buf.get_mut(..512).context("buffer")?).await?;
        pairs.push((a, b));
    }
    let after = settled().await?;
    let vec_bytes =
        (count * std::mem::size_of::<(tokio::io::DuplexStream, tokio::io::DuplexStream)>()) as u64;
    Ok(after
        .rss_bytes
        .saturating_sub(before.rss_bytes)
        .saturating_sub(vec_bytes)
        / count.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let ms = |n| Duration::from_millis(n);
        let v: Vec<_> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&v, 50.0), ms(50));
        assert_eq!(percentile(&v, 99.0), ms(99));
        assert_eq!(percentile(&v, 100.0), ms(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
