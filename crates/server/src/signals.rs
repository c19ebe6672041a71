//! Signals and the service manager: what the process does for each signal, and the systemd
//! notifications of `Type=notify` (`deploy/rookery.service`).
//!
//! | signal | action |
//! |---|---|
//! | SIGTERM, SIGINT | clean shutdown (streams closed with `system-shutdown`) |
//! | SIGHUP | reload the configuration and certificate ([`crate::reload`]) |
//! | SIGUSR1, SIGUSR2 | logged and ignored (their default would end the process) |
//! | SIGPIPE | ignored (Rust's runtime does so; a closed socket is an I/O error) |
//! | SIGQUIT | left at its default, a core dump, for debugging a hung process |
//!
//! Without `NOTIFY_SOCKET` (not under systemd) the notifications do nothing.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::reload::Reloader;

/// Tells the service manager the server is serving.
pub fn ready() {
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// Tells the service manager the server is shutting down.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
}

/// Serves signals until SIGTERM or SIGINT: reloads on SIGHUP, and pings the systemd
/// watchdog (when the unit sets `WatchdogSec`) at half its interval, from the runtime itself,
/// so a runtime that stopped making progress is restarted.
pub async fn run_until_shutdown(reloader: &Reloader) {
    let watchdog = sd_notify::watchdog_enabled();
    let mut ping = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |d| d / 2));
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut streams = match [
            SignalKind::terminate(),
            SignalKind::hangup(),
            SignalKind::user_defined1(),
            SignalKind::user_defined2(),
        ]
        .map(signal)
        {
            [Ok(term), Ok(hup), Ok(usr1), Ok(usr2)] => Some((term, hup, usr1, usr2)),
            _ => {
                tracing::warn!("signal handlers not installed; only Ctrl-C stops the server");
                None
            }
        };
        loop {
            let Some((term, hup, usr1, usr2)) = streams.as_mut() else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = hup.recv() => reload(reloader),
                _ = usr1.recv() => tracing::info!("SIGUSR1 ignored"),
                _ = usr2.recv() => tracing::info!("SIGUSR2 ignored"),
                _ = ping.tick(), if watchdog.is_some() => notify(&[NotifyState::Watchdog]),
            }
        }
    }
    #[cfg(not(unix))]
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = ping.tick(), if watchdog.is_some() => notify(&[NotifyState::Watchdog]),
        }
    }
}

/// One reload, told to the service manager (`RELOADING=1` … `READY=1`).
fn reload(reloader: &Reloader) {
    let mut state = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        state.push(now);
    }
    notify(&state);
    // Reads files and parses a certificate: keep other tasks off this worker meanwhile.
    let _ = tokio::task::block_in_place(|| reloader.reload_logged());
    ready();
}
