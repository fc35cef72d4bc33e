//! systemd's notification protocol (`Type=notify`), a no-op outside systemd.

use sd_notify::NotifyState;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Start-up is done.
pub fn ready() {
    let _ = sd_notify::notify(false, &[NotifyState::Ready]);
}

/// Shutdown has begun (stop consuming, flush, acknowledge).
pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

/// Keep-alive pings at half the unit's `WatchdogSec` while the runtime runs; a hung
/// runtime stops them and systemd restarts the service. An essential thread that dies
/// stops the whole service already (with an error, so `Restart=on-failure` applies).
pub async fn watchdog(stopping: CancellationToken) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_micros(usec / 2));
    loop {
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tick.tick() => {
                let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
            }
        }
    }
}
