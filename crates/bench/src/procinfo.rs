//! Resident memory and CPU time of a process, read from `/proc/PID` (Linux).

use std::io;

use serde_json::{json, Value};

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Resident set size (`VmRSS`), in KiB.
    pub rss_kb: u64,
    /// User plus system CPU time, in seconds.
    pub cpu_s: f64,
    /// Threads.
    pub threads: u64,
}

impl Sample {
    /// As JSON.
    pub fn json(&self) -> Value {
        json!({ "rss_kb": self.rss_kb, "cpu_s": (self.cpu_s * 100.0).round() / 100.0, "threads": self.threads })
    }
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`.
pub fn sample(pid: u32) -> io::Result<Sample> {
    read(&format!("/proc/{pid}"))
}

/// The sum of the readings of `pids` (the nodes of a cluster on one machine); `None`
/// without PIDs or when one cannot be read.
pub fn sample_all(pids: &[u32]) -> Option<Sample> {
    let mut total: Option<Sample> = None;
    for &pid in pids {
        let s = sample(pid).ok()?;
        total = Some(match total {
            None => s,
            Some(t) => Sample {
                rss_kb: t.rss_kb + s.rss_kb,
                cpu_s: t.cpu_s + s.cpu_s,
                threads: t.threads + s.threads,
            },
        });
    }
    total
}

/// Reads this process.
pub fn own() -> io::Result<Sample> {
    read("/proc/self")
}

fn read(dir: &str) -> io::Result<Sample> {
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    Ok(Sample {
        rss_kb: field("VmRSS:"),
        threads: field("Threads:"),
        cpu_s: cpu_seconds(&stat).unwrap_or(0.0),
    })
}

/// utime + stime (fields 14 and 15 of `stat`, counted after the parenthesized command name,
/// which may itself contain spaces and parentheses).
fn cpu_seconds(stat: &str) -> Option<f64> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Some((utime + stime) as f64 / hz as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let stat = "1234 (we ird) name)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        let hz = rustix::param::clock_ticks_per_second() as f64;
        assert_eq!(cpu_seconds(stat), Some(300.0 / hz));
    }

    #[test]
    fn sums_several_processes() {
        // A child of one thread, not this process: the test harness starts and ends threads
        // between two samples.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap_or_else(|e| unreachable!("spawns sleep: {e}"));
        let pid = child.id();
        let one = sample_all(&[pid]);
        let two = sample_all(&[pid, pid]);
        let _ = child.kill();
        let _ = child.wait();
        let (one, two) = one
            .zip(two)
            .unwrap_or_else(|| unreachable!("reads the child"));
        assert_eq!((one.threads, two.threads), (1, 2));
        assert!(sample_all(&[]).is_none());
    }

    #[test]
    fn reads_itself() {
        let s = own().ok();
        assert!(s.is_some_and(|s| s.rss_kb > 0 && s.threads > 0));
    }
}
