//! The service's one clock: [`Clock`], the time every part of the service reads (the
//! system's, or one a test sets), and whether the host clock is known to be synchronised.
//!
//! Synchronised or not: A reading is refused as too
//! old only by a synchronised clock (SPEC §13.3); until then it is held, so a gateway
//! host without a real-time clock that boots with last week's time (a Raspberry Pi before
//! NTP answers) judges nothing for good. A reading in the future is held whatever the
//! clock says, so this check only decides the stale side.
//!
//! The state is read at most once a second; a change is one log line, the
//! `vigie_host_clock_synchronised` gauge and a line in `/readyz`.

use crate::observe::health::Health;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Deserializer};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Wall-clock time in Unix milliseconds: the system's, or one a test sets and moves. The
/// composition root makes one and hands it to every part that judges or stamps time
/// (ingest, delivery, MQTT intake, the status pages).
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<AtomicU64>>);

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock standing at `ms` until [`Clock::set`] moves it.
    pub fn fixed(ms: u64) -> Self {
        Self(Some(Arc::new(AtomicU64::new(ms))))
    }

    /// Moves a fixed clock to `ms` (no effect on the system's).
    pub fn set(&self, ms: u64) {
        if let Some(t) = &self.0 {
            t.store(ms, Ordering::Relaxed);
        }
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Some(t) => t.load(Ordering::Relaxed),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }
}

/// Where the gateway learns whether its host clock is synchronised
/// (`clock.synchronised`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SyncSource {
    /// The kernel's NTP state (`adjtimex(2)`), as systemd's `timedatectl` reads it
    /// (`NTPSynchronized`): kept by systemd-timesyncd, chrony and ntpd alike.
    #[default]
    Kernel,
    /// A file that exists while the clock is synchronised, such as systemd-timesyncd's
    /// `/run/systemd/timesync/synchronized`.
    File(PathBuf),
    /// The clock is trusted as it is (time kept by means the kernel does not see).
    Always,
}

impl<'de> Deserialize<'de> for SyncSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "kernel" => Ok(Self::Kernel),
            "always" => Ok(Self::Always),
            path if path.starts_with('/') => Ok(Self::File(PathBuf::from(path))),
            _ => Err(serde::de::Error::custom(
                "expected \"kernel\", \"always\" or an absolute path to a file that exists while the clock is synchronised",
            )),
        }
    }
}

impl SyncSource {
    /// Asks now.
    pub fn synchronised(&self) -> bool {
        match self {
            Self::Kernel => kernel_synchronised(),
            Self::File(path) => path.exists(),
            Self::Always => true,
        }
    }
}

/// Whether the kernel considers the clock synchronised: systemd's rule (`ntp_synced()`),
/// the maximum error below 16 s, the value the kernel sets when no daemon disciplines it.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn kernel_synchronised() -> bool {
    // SAFETY: `timex` holds only integers, so all zeros is a valid value; `modes` 0 asks
    // and changes nothing; the kernel writes only into the struct passed, which we own.
    // No maintained crate wraps adjtimex (nix and rustix do not).
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    state >= 0 && tx.maxerror < 16_000_000
}

#[cfg(not(target_os = "linux"))]
fn kernel_synchronised() -> bool {
    false
}

/// How often the state is read again.
const RECHECK: Duration = Duration::from_secs(1);

/// The worker's view of the host clock: the source, read at most once a second, with
/// every change said once.
#[derive(Debug)]
pub struct HostClock {
    source: SyncSource,
    health: Arc<Health>,
    gauge: Gauge,
    state: Option<(bool, Instant)>,
}

impl HostClock {
    /// A clock read from `source`, reporting to `health` and `gauge`.
    pub fn new(source: SyncSource, health: Arc<Health>, gauge: Gauge) -> Self {
        Self {
            source,
            health,
            gauge,
            state: None,
        }
    }

    /// Whether the host clock is synchronised now (read again after a second).
    pub fn synchronised(&mut self) -> bool {
        let now = Instant::now();
        if let Some((synced, at)) = self.state
            && now.duration_since(at) < RECHECK
        {
            return synced;
        }
        let synced = self.source.synchronised();
        let before = self.state.map(|(s, _)| s);
        self.state = Some((synced, now));
        if before != Some(synced) {
            self.gauge.set(i64::from(synced));
            self.health.set_clock_synchronised(synced);
            if synced {
                tracing::info!(source = ?self.source, "host clock synchronised: readings are judged by their time again");
            } else {
                tracing::warn!(
                    source = ?self.source,
                    "readings held: host clock not synchronised; readings older than validation.max_age are held (not acknowledged) until it is"
                );
            }
        }
        synced
    }
}

/// A random number in `[0, 1)` for a retry's jitter (reconnections, alert messages).
pub fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_source_follows_the_file_and_reports_each_change_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let flag = dir.path().join("synchronized");
        let health = Arc::new(Health::default());
        let gauge = Gauge::default();
        let mut clock = HostClock::new(
            SyncSource::File(flag.clone()),
            health.clone(),
            gauge.clone(),
        );
        assert!(!clock.synchronised());
        assert_eq!(gauge.get(), 0);
        assert!(
            health
                .snapshot()
                .summary()
                .contains("readings held: host clock not synchronised")
        );
        std::fs::write(&flag, b"").unwrap_or_else(|e| panic!("{e}"));
        // Cached for a second, then read again.
        assert!(!clock.synchronised());
        clock.state = clock.state.map(|(s, at)| (s, at - RECHECK));
        assert!(clock.synchronised());
        assert_eq!(gauge.get(), 1);
        assert!(!health.snapshot().summary().contains("host clock"));
    }

    #[test]
    fn the_setting_takes_kernel_always_or_an_absolute_path() {
        #[derive(Debug, Deserialize)]
        struct S {
            s: SyncSource,
        }
        let parse = |v: &str| toml::from_str::<S>(&format!("s = {v:?}")).map(|s| s.s);
        assert_eq!(parse("kernel").ok(), Some(SyncSource::Kernel));
        assert_eq!(parse("always").ok(), Some(SyncSource::Always));
        assert_eq!(
            parse("/run/systemd/timesync/synchronized").ok(),
            Some(SyncSource::File(
                "/run/systemd/timesync/synchronized".into()
            ))
        );
        assert!(parse("ntp").is_err());
    }
}
