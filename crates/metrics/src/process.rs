//! The `process_*` metrics every Prometheus client library exports (CPU seconds, resident
//! memory, open and maximum file descriptors, start time), read from `/proc/self` at scrape
//! time. On systems without `/proc` they are simply absent.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads the process's own figures on each scrape.
#[derive(Debug)]
pub struct Process;

/// What `/proc/self` says about the process.
#[derive(Debug, Default, PartialEq)]
struct Figures {
    cpu_seconds: f64,
    start_time_seconds: f64,
    resident_bytes: f64,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

impl Figures {
    fn read() -> Option<Figures> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as f64;
        let mut f = parse(&stat, &statm, &boot, ticks, page)?;
        f.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64);
        f.max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map(|n| n as f64);
        Some(f)
    }
}

/// Parses `/proc/self/stat` (proc(5): after the `)` closing the command name come the fields
/// from `state` on: utime is the 12th, stime the 13th, starttime the 20th), `statm` (the
/// second field is the resident set in pages) and `/proc/stat`'s `btime`.
fn parse(stat: &str, statm: &str, proc_stat: &str, ticks: f64, page: f64) -> Option<Figures> {
    let after_comm = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    let (utime, stime, start) = (field(11)?, field(12)?, field(19)?);
    let rss_pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let btime: f64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(Figures {
        cpu_seconds: (utime + stime) / ticks,
        start_time_seconds: btime + start / ticks,
        resident_bytes: rss_pages * page,
        open_fds: None,
        max_fds: None,
    })
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(f) = Figures::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(f.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                Some(f.resident_bytes),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                Some(f.start_time_seconds),
            ),
            ("process_open_fds", "Open file descriptors", f.open_fds),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                f.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_proc_files() {
        // A command name with spaces and parentheses must not shift the fields.
        let stat = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 0 0";
        let f = parse(
            stat,
            "1000 300 10 1 0 50 0",
            "cpu 1 2\nbtime 1700000000\n",
            100.0,
            4096.0,
        )
        .unwrap();
        assert_eq!(f.cpu_seconds, 3.0);
        assert_eq!(f.start_time_seconds, 1_700_000_010.0);
        assert_eq!(f.resident_bytes, 300.0 * 4096.0);
    }

    #[test]
    fn reads_this_process() {
        if std::path::Path::new("/proc/self/stat").exists() {
            let f = Figures::read().unwrap();
            assert!(f.resident_bytes > 0.0 && f.open_fds.unwrap() > 0.0);
        }
    }
}
