//! Device state: what the gateway knows of each device from its traffic (last reading,
//! battery, online, counts, gaps, rejections by reason). The ingest worker updates it as
//! frames become durable; `/devices` serves it as JSON, `devices list` prints it, and
//! `/metrics` renders its per-device gauges from it (see [`crate::observe::metrics`]).
//!
//! It is saved to `data_dir/devices.json` (atomically, at most every
//! [`SAVE_INTERVAL`] while traffic flows, and at shutdown) and restored at start, so "last
//! seen" survives a restart. It is a convenience view, not part of the delivery promise: a
//! power cut may lose the last few seconds of it, never a reading.

pub use vigie_core::condition::book::*;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use vigie_core::fleet::DeviceEntry;

/// Longest time a change waits before it is saved while traffic flows.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(10);

/// File name in `data_dir`.
pub const FILE_NAME: &str = "devices.json";

#[derive(Debug, Default)]
struct Inner {
    book: DeviceBook,
    /// The registry's devices, as last loaded.
    roster: Vec<Listing>,
    /// Bumped at each load of the registry.
    roster_version: u64,
    path: Option<PathBuf>,
    dirty: bool,
    saved_at: Option<Instant>,
}

/// The shared device state: the worker writes, the HTTP server and metrics read.
#[derive(Debug, Default)]
pub struct Devices(Mutex<Inner>);

impl Devices {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Restores the state saved in `data_dir` (none yet: empty) and saves there from now
    /// on. An unreadable file is logged and replaced, never fatal: it holds no reading.
    pub fn restore(&self, data_dir: &Path) {
        let path = data_dir.join(FILE_NAME);
        let book = match std::fs::read_to_string(&path) {
            Ok(text) => DeviceBook::from_json(&text).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "device state unreadable; starting afresh");
                DeviceBook::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DeviceBook::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "device state unreadable; starting afresh");
                DeviceBook::default()
            }
        };
        let mut inner = self.lock();
        inner.book = book;
        inner.path = Some(path);
    }

    /// Changes the state.
    pub fn update<R>(&self, f: impl FnOnce(&mut DeviceBook) -> R) -> R {
        let mut inner = self.lock();
        inner.dirty = true;
        f(&mut inner.book)
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&DeviceBook) -> R) -> R {
        f(&self.lock().book)
    }

    /// Sets the registered devices (at start and at each registry reload).
    pub fn set_roster<'a>(&self, entries: impl IntoIterator<Item = &'a DeviceEntry>) {
        let mut inner = self.lock();
        inner.roster = entries.into_iter().map(Listing::of).collect();
        inner.roster_version += 1;
    }

    /// The registered devices and how many registry loads they come from.
    pub fn roster(&self) -> (u64, Vec<Listing>) {
        let inner = self.lock();
        (inner.roster_version, inner.roster.clone())
    }

    /// Reads the registered devices and their state.
    pub fn read_all<R>(&self, f: impl FnOnce(&[Listing], &DeviceBook) -> R) -> R {
        let inner = self.lock();
        f(&inner.roster, &inner.book)
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> DeviceBook {
        self.lock().book.clone()
    }

    /// Saves if something changed and the last save is older than [`SAVE_INTERVAL`].
    pub fn save_if_due(&self) {
        let due = self
            .lock()
            .saved_at
            .is_none_or(|t| t.elapsed() >= SAVE_INTERVAL);
        if due {
            self.save();
        }
    }

    /// Saves if something changed since the last save. Failures are logged (the disk may
    /// be full; readings have their own, durable path).
    pub fn save(&self) {
        let mut inner = self.lock();
        let Some(path) = inner.path.clone() else {
            return;
        };
        if !inner.dirty {
            return;
        }
        let text = inner.book.to_json();
        inner.saved_at = Some(Instant::now());
        match crate::store::fs::write_atomic(&path, text.as_bytes(), 0o640) {
            Ok(()) => inner.dirty = false,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot save the device state")
            }
        }
    }
}

/// Reads the state a stopped (or running) gateway saved in `data_dir`.
pub fn load_saved(data_dir: &Path) -> std::io::Result<DeviceBook> {
    let text = std::fs::read_to_string(data_dir.join(FILE_NAME))?;
    DeviceBook::from_json(&text).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_is_restored_and_a_broken_file_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let devices = Devices::default();
        devices.restore(dir.path());
        devices.update(|b| b.status("lyon", "bin-2", true, 1));
        devices.save_if_due();
        let again = Devices::default();
        again.restore(dir.path());
        assert_eq!(again.snapshot(), devices.snapshot());
        assert_eq!(load_saved(dir.path()).unwrap(), devices.snapshot());

        std::fs::write(dir.path().join(FILE_NAME), "{ not json").unwrap();
        let broken = Devices::default();
        broken.restore(dir.path());
        assert_eq!(broken.snapshot(), DeviceBook::default());
    }
}
