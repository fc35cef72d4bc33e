//! Quarantine: every rejected frame, and every line a database refused for good, kept with
//! its reason so an operator can see it and, after a fix (a device registered late, a
//! clock corrected, a database created), replay it.
//!
//! JSON lines in `<dir>/current.jsonl`; when that file passes half the limit it becomes
//! `previous.jsonl` (replacing the one before, whose entries are counted as evicted). So
//! the quarantine holds at most `max_bytes` and always the newest entries.
//!
//! Failure-atomic like the buffer: [`Quarantine::add`] only queues an entry in memory;
//! [`Quarantine::sync`] writes the queue and fsyncs, and on any failure cuts the file back
//! to its last durable length and keeps the queue for the next try. The ingest worker
//! syncs it in the same group commit as the buffer, before acknowledging.
//!
//! Replay deletes nothing before the re-submission is durable: [`Quarantine::mark`] notes
//! where the entries to replay end, the caller re-submits them (and syncs what it
//! re-quarantines), and only then [`Quarantine::drop_before`] removes them. A crash in
//! between leaves them twice at worst, never zero times.
//!
//! Only the running service writes; `quarantine list` only reads.

use crate::fs::{FsFile, Open, SharedFs};
use crate::pure::reason::Reason;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// Where a quarantined entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// An MQTT message the gateway rejected; `topic` is its topic, `payload` the frame.
    #[default]
    Mqtt,
    /// Line protocol a database refused for good (or recovered from a damaged buffer
    /// record); `topic` is the tenant, `payload` the lines.
    Database,
    /// Damaged buffer bytes with nothing recoverable: kept for inspection, not replayed.
    Buffer,
}

/// One quarantined frame or line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Receive time, Unix milliseconds.
    pub received_ms: u64,
    /// Where it came from.
    #[serde(default)]
    pub origin: Origin,
    /// MQTT topic, or the tenant for [`Origin::Database`].
    pub topic: String,
    /// Reason code (see `pure::reason`).
    pub reason: String,
    /// Human detail.
    pub detail: String,
    /// The payload, hex.
    pub payload: String,
}

impl Entry {
    /// An MQTT message rejected for `reason`.
    pub fn rejected(received_ms: u64, topic: &str, payload: &[u8], reason: &Reason) -> Self {
        Self {
            received_ms,
            origin: Origin::Mqtt,
            topic: topic.to_string(),
            reason: reason.code().into(),
            detail: reason.detail(),
            payload: hex::encode(payload),
        }
    }

    /// Entries written before `origin` existed named database entries `database:<tenant>`.
    fn upgrade(mut self) -> Self {
        if let Some(tenant) = self.topic.strip_prefix("database:") {
            self.origin = Origin::Database;
            self.topic = tenant.to_string();
        }
        self
    }
}

/// Where the entries present at [`Quarantine::mark`] end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    rotations: u64,
    len: u64,
}

/// The on-disk quarantine.
#[derive(Debug)]
pub struct Quarantine {
    fs: SharedFs,
    dir: PathBuf,
    max_bytes: u64,
    /// `current.jsonl`, or `None` after a failure that needs it opened again.
    file: Option<Box<dyn FsFile>>,
    /// Durable length of `current.jsonl`.
    size: u64,
    /// Encoded entries not yet durable.
    queued: Vec<u8>,
    /// Rotations so far (a mark names the file it was taken in).
    rotations: u64,
}

const CURRENT: &str = "current.jsonl";
const PREVIOUS: &str = "previous.jsonl";

impl Quarantine {
    /// Opens or creates the quarantine in `dir`.
    pub fn open(fs: SharedFs, dir: &Path, max_bytes: u64) -> io::Result<Self> {
        fs.create_dir_all(dir)?;
        let mut q = Self {
            fs,
            dir: dir.to_path_buf(),
            max_bytes,
            file: None,
            size: 0,
            queued: Vec::new(),
            rotations: 0,
        };
        q.reopen()?;
        Ok(q)
    }

    fn reopen(&mut self) -> io::Result<()> {
        let f = self.fs.open(&self.dir.join(CURRENT), Open::Append)?;
        self.size = f.size()?;
        self.file = Some(f);
        self.fs.sync_dir(&self.dir)
    }

    /// Queues an entry; durable after a successful [`Self::sync`].
    pub fn add(&mut self, entry: &Entry) {
        // Serialising plain strings and numbers cannot fail.
        if serde_json::to_writer(&mut self.queued, entry).is_ok() {
            self.queued.push(b'\n');
        }
    }

    /// Adds `entry` and makes it durable now; on failure it is withdrawn (nothing of it on
    /// disk, nothing queued), so a caller that retries adds it exactly once. Returns the
    /// entries rotation evicted.
    pub fn write(&mut self, entry: &Entry) -> io::Result<u64> {
        let before = self.queued.len();
        self.add(entry);
        self.sync().inspect_err(|_| self.queued.truncate(before))
    }

    /// True when entries wait for [`Self::sync`].
    pub fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Writes and fsyncs the queued entries. Returns how many old entries rotation
    /// evicted. On failure nothing of the queue is on disk and the queue is kept.
    pub fn sync(&mut self) -> io::Result<u64> {
        if self.queued.is_empty() {
            return Ok(0);
        }
        if self.file.is_none() {
            self.reopen()?;
        }
        let mut evicted = 0;
        if self.size > 0 && self.size + self.queued.len() as u64 > self.max_bytes / 2 {
            evicted = self.rotate()?;
        }
        let Some(file) = self.file.as_mut() else {
            unreachable!("opened above")
        };
        let written = file.write_all(&self.queued).and_then(|()| file.sync_data());
        if let Err(e) = written {
            if file
                .set_len(self.size)
                .and_then(|()| file.sync_data())
                .is_err()
            {
                self.file = None;
            }
            return Err(e);
        }
        self.size += self.queued.len() as u64;
        self.queued.clear();
        Ok(evicted)
    }

    fn rotate(&mut self) -> io::Result<u64> {
        let previous = self.dir.join(PREVIOUS);
        let evicted = self
            .fs
            .read(&previous)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
            .unwrap_or(0);
        self.file = None;
        self.fs.rename(&self.dir.join(CURRENT), &previous)?;
        self.rotations += 1;
        let f = self.fs.open(&self.dir.join(CURRENT), Open::Truncate)?;
        self.fs.sync_dir(&self.dir)?;
        self.file = Some(f);
        self.size = 0;
        Ok(evicted)
    }

    /// Every durable entry and where they end, for a replay.
    pub fn mark(&mut self) -> io::Result<(Vec<Entry>, Mark)> {
        self.sync()?;
        let (entries, _) = read_all_on(self.fs.as_ref(), &self.dir)?;
        let mark = Mark {
            rotations: self.rotations,
            len: self.size,
        };
        Ok((entries, mark))
    }

    /// Removes the entries that were there at `mark`, keeping those added since. Call it
    /// once their re-submission is durable.
    pub fn drop_before(&mut self, mark: Mark) -> io::Result<()> {
        self.sync()?;
        let current = self.fs.read(&self.dir.join(CURRENT))?;
        let keep = match self.rotations - mark.rotations {
            0 => current
                .get(mark.len as usize..)
                .unwrap_or_default()
                .to_vec(),
            1 => {
                let previous = self.fs.read(&self.dir.join(PREVIOUS))?;
                let mut keep = previous
                    .get(mark.len as usize..)
                    .unwrap_or_default()
                    .to_vec();
                keep.extend_from_slice(&current);
                keep
            }
            // Everything that was there has been evicted already.
            _ => current,
        };
        let tmp = self.dir.join("current.jsonl.tmp");
        let mut f = self.fs.open(&tmp, Open::Truncate)?;
        f.write_all(&keep)?;
        f.sync_data()?;
        self.file = None;
        self.fs.rename(&tmp, &self.dir.join(CURRENT))?;
        match self.fs.remove(&self.dir.join(PREVIOUS)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.fs.sync_dir(&self.dir)?;
        self.reopen()
    }
}

/// Rewrites the quarantine in `dir` with the service stopped (`erase`): `edit` gets each
/// entry and returns it, changed or not, or `None` to remove it. A file with a change is
/// replaced atomically, keeping its owner, group and mode; lines that do not parse stay.
/// With `apply` false nothing is written. Returns how many entries changed or went.
pub fn rewrite_offline(
    dir: &Path,
    apply: bool,
    mut edit: impl FnMut(Entry) -> Option<Entry>,
) -> io::Result<u64> {
    let mut changed = 0;
    for name in [PREVIOUS, CURRENT] {
        let path = dir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut out = Vec::with_capacity(bytes.len());
        let mut edits = 0;
        for line in bytes.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            let Ok(entry) = serde_json::from_slice::<Entry>(line).map(Entry::upgrade) else {
                out.extend_from_slice(line);
                out.push(b'\n');
                continue;
            };
            match edit(entry.clone()) {
                Some(kept) if kept == entry => out.extend_from_slice(line),
                Some(kept) => {
                    edits += 1;
                    serde_json::to_writer(&mut out, &kept).map_err(io::Error::other)?;
                }
                None => {
                    edits += 1;
                    continue;
                }
            }
            out.push(b'\n');
        }
        if edits > 0 && apply {
            crate::fs::replace_for_group(&path, &out, 0o600, "vigie")?;
        }
        changed += edits;
    }
    Ok(changed)
}

/// Reads every entry, oldest first. Lines that do not parse are skipped and counted.
pub fn read_all(dir: &Path) -> io::Result<(Vec<Entry>, usize)> {
    read_all_on(&crate::fs::RealFs, dir)
}

pub(crate) fn read_all_on(fs: &dyn crate::fs::Fs, dir: &Path) -> io::Result<(Vec<Entry>, usize)> {
    let mut entries = Vec::new();
    let mut bad = 0;
    for name in [PREVIOUS, CURRENT] {
        let bytes = match fs.read(&dir.join(name)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in bytes.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Entry>(line) {
                Ok(e) => entries.push(e.upgrade()),
                Err(_) => bad += 1,
            }
        }
    }
    Ok((entries, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::model::{Fault, ModelFs};
    use std::sync::Arc;

    fn entry(i: u64) -> Entry {
        Entry {
            received_ms: i,
            origin: Origin::Mqtt,
            topic: "vigie/v1/lyon/aq-1/up".into(),
            reason: "unknown_device".into(),
            detail: "unknown_device".into(),
            payload: "11223344".into(),
        }
    }

    #[test]
    fn bounded_keeps_newest_and_counts_evictions() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Quarantine::open(crate::fs::real(), dir.path(), 2_000).unwrap();
        let mut evicted = 0;
        for i in 0..100 {
            q.add(&entry(i));
            evicted += q.sync().unwrap();
        }
        let (entries, bad) = read_all(dir.path()).unwrap();
        assert_eq!(bad, 0);
        assert_eq!(
            entries.len() as u64 + evicted,
            100,
            "every entry kept or counted"
        );
        assert_eq!(entries.last().unwrap().received_ms, 99);
        let on_disk: u64 = [CURRENT, PREVIOUS]
            .iter()
            .map(|n| {
                std::fs::metadata(dir.path().join(n))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum();
        assert!(on_disk <= 2_000, "{on_disk}");
    }

    #[test]
    fn replay_removes_only_what_was_there_at_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Quarantine::open(crate::fs::real(), dir.path(), 1 << 20).unwrap();
        for i in 0..3 {
            q.add(&entry(i));
        }
        let (entries, mark) = q.mark().unwrap();
        assert_eq!(entries.len(), 3);
        // Re-rejected during the replay, and a new rejection.
        q.add(&entry(1));
        q.add(&entry(7));
        q.sync().unwrap();
        // A crash here keeps all five: nothing removed before the re-submission is durable.
        assert_eq!(read_all(dir.path()).unwrap().0.len(), 5);
        q.drop_before(mark).unwrap();
        assert_eq!(read_all(dir.path()).unwrap().0, vec![entry(1), entry(7)]);
    }

    #[test]
    fn a_failed_write_leaves_nothing_and_the_retry_writes_once() {
        for fault in [
            Fault::NoSpace,
            Fault::Io,
            Fault::ShortWrite,
            Fault::FailedSync,
        ] {
            for at in 0..4 {
                let fs = ModelFs::new();
                let shared: SharedFs = Arc::new(fs.clone());
                let mut q = Quarantine::open(shared, Path::new("q"), 1 << 20).unwrap();
                q.add(&entry(1));
                q.sync().unwrap();
                q.add(&entry(2));
                fs.fail_at(fs.ops() + at, fault);
                let mut tries = 0;
                while q.sync().is_err() {
                    tries += 1;
                    assert!(tries < 5);
                }
                fs.power_cut();
                let (got, bad) = read_all_on(&fs, Path::new("q")).unwrap();
                assert_eq!(
                    (got, bad),
                    (vec![entry(1), entry(2)], 0),
                    "{fault:?} at {at}"
                );
            }
        }
    }

    #[test]
    fn an_offline_rewrite_removes_and_changes_entries_in_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Quarantine::open(crate::fs::real(), dir.path(), 1_000).unwrap();
        for i in 0..12 {
            q.add(&entry(i));
            q.sync().unwrap();
        }
        let (before, _) = read_all(dir.path()).unwrap();
        assert!(dir.path().join(PREVIOUS).exists(), "rotated once at least");
        let touched = before.iter().filter(|e| e.received_ms % 3 != 2).count() as u64;
        let edit = |e: Entry| match e.received_ms % 3 {
            0 => None,
            1 => Some(Entry {
                payload: "00".into(),
                ..e
            }),
            _ => Some(e),
        };
        // A dry run counts and writes nothing.
        assert_eq!(rewrite_offline(dir.path(), false, edit).unwrap(), touched);
        assert_eq!(read_all(dir.path()).unwrap().0, before);
        assert_eq!(rewrite_offline(dir.path(), true, edit).unwrap(), touched);
        let want: Vec<_> = before.into_iter().filter_map(edit).collect();
        assert_eq!(read_all(dir.path()).unwrap().0, want);
    }

    #[test]
    fn old_database_entries_are_read_with_their_origin() {
        let dir = tempfile::tempdir().unwrap();
        let old = "{\"received_ms\":1,\"topic\":\"database:lyon\",\"reason\":\"database_rejected\",\"detail\":\"HTTP 400\",\"payload\":\"00\"}\n";
        std::fs::write(dir.path().join(CURRENT), old).unwrap();
        let (got, _) = read_all(dir.path()).unwrap();
        assert_eq!(
            (got[0].origin, got[0].topic.as_str()),
            (Origin::Database, "lyon")
        );
    }
}
