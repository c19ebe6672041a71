//! `rookery-harness --sessions N`: binds N client sessions in this process over in-memory
//! pipes and prints what they cost (see the crate's documentation and
//! `docs/performance.md`).

use clap::Parser;
use rookery_harness::Options;

/// In-process load harness: the real c2s session code over in-memory pipes.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Sessions to bind.
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// One-to-one messages to time, one at a time, between random sessions.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Users whose presence broadcast is timed.
    #[arg(long, default_value_t = 20)]
    broadcasters: usize,
    /// Contacts in each broadcaster's roster, all online.
    #[arg(long, default_value_t = 1_000)]
    contacts: usize,
    /// PBKDF2 iterations of the stored SCRAM verifiers (the server's default).
    #[arg(long, default_value_t = rookery_sasl::DEFAULT_ITERATIONS)]
    iterations: u32,
    /// Worker threads of the runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let opts = Options {
        sessions: args.sessions,
        concurrency: args.concurrency,
        messages: args.messages,
        broadcasters: args.broadcasters,
        contacts: args.contacts,
        iterations: args.iterations,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let report = runtime.block_on(rookery_harness::run(&opts))?;
    print!("{report}");
    Ok(())
}
