//! Quarantine: every rejected frame, and every line a database refused for good, kept with
//! its reason so an operator can see it and, after a fix (a device registered late, a
//! clock corrected, a database created), replay it.
//!
//! JSON lines in `<dir>/current.jsonl`; when that file passes half the limit it becomes
//! `previous.jsonl` (replacing the one before, whose entries are counted as evicted). So
//! the quarantine holds at most `max_bytes` and always the newest entries.
//!
//! Except the entries of **acknowledged** frames (refused after their tag verified: SPEC
//! §12): their device forgot them, so the quarantine holds their only copy, and rotation
//! never evicts them. It carries them from the file it drops into the new `current.jsonl`
//! (written first as `next.jsonl`, fsynced, then renamed: a crash in between leaves them
//! in one file or the other, and [`Quarantine::open`] finishes the move). They have a
//! bound of their own: a quarter of `max_bytes` in all and a sixteenth per device
//! ([`Quarantine::admits_kept`]); a frame whose entry would pass it is held instead of
//! refused (not acknowledged: its device keeps it), so one device flooding refusals
//! cannot push out another's.
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

use crate::store::fs::{FsFile, Open, SharedFs};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use vigie_core::judge::reason::Reason;

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
    /// Reason code (see `vigie_core::judge::reason`).
    pub reason: String,
    /// Human detail.
    pub detail: String,
    /// The payload, hex.
    pub payload: String,
    /// The frame was acknowledged to its device (refused after its tag verified): this
    /// entry is its only copy, never evicted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acknowledged: bool,
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
            acknowledged: reason.after_authentication(),
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
    /// Bytes of acknowledged entries (durable or queued), by topic, and in all.
    kept: std::collections::HashMap<String, u64>,
    kept_total: u64,
}

const CURRENT: &str = "current.jsonl";
const PREVIOUS: &str = "previous.jsonl";
/// The acknowledged entries a rotation carries over, before they become `current.jsonl`.
const NEXT: &str = "next.jsonl";

/// The encoded size of an entry for `payload` on `topic` (its JSON line, about).
pub fn entry_bytes(topic: &str, payload: &[u8]) -> u64 {
    (topic.len() + 2 * payload.len() + 160) as u64
}

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
            kept: Default::default(),
            kept_total: 0,
        };
        q.reopen()?;
        q.count_kept()?;
        Ok(q)
    }

    /// A rotation a crash interrupted: `next.jsonl` holds the acknowledged entries it
    /// carried. Once `current.jsonl` was renamed away it is the new current; before that,
    /// the entries are still in the files and it goes.
    fn finish_rotation(&self) -> io::Result<()> {
        let next = self.dir.join(NEXT);
        match self.fs.read(&next) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        match self.fs.read(&self.dir.join(CURRENT)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.fs.rename(&next, &self.dir.join(CURRENT))?
            }
            _ => self.fs.remove(&next)?,
        }
        self.fs.sync_dir(&self.dir)
    }

    /// Counts the acknowledged entries on disk, by topic.
    fn count_kept(&mut self) -> io::Result<()> {
        let (entries, _) = read_all_on(self.fs.as_ref(), &self.dir)?;
        self.kept.clear();
        self.kept_total = 0;
        for e in entries.iter().filter(|e| e.acknowledged) {
            let n = (e.topic.len() + e.payload.len() + 160) as u64;
            *self.kept.entry(e.topic.clone()).or_default() += n;
            self.kept_total += n;
        }
        Ok(())
    }

    /// Whether the entry of an acknowledged frame of `bytes` ([`entry_bytes`]) on `topic`
    /// fits the acknowledged entries' bounds: a quarter of the quarantine in all, a
    /// sixteenth per device. If not, the frame is to be held, not refused.
    pub fn admits_kept(&self, topic: &str, bytes: u64) -> bool {
        let device = self.kept.get(topic).copied().unwrap_or(0);
        self.kept_total + bytes <= self.max_bytes / 4 && device + bytes <= self.max_bytes / 16
    }

    fn reopen(&mut self) -> io::Result<()> {
        // Before `current.jsonl` is made anew: it may be missing because a rotation
        // stopped between its renames, with the carried entries in `next.jsonl`.
        self.finish_rotation()?;
        let mut f = self.fs.open(&self.dir.join(CURRENT), Open::Append)?;
        self.size = f.size()?;
        // A tail torn by a crash (a line without its newline) is cut, or the next
        // entry would be appended to it and both lost to the reader.
        if self.size > 0 {
            let text = self.fs.read(&self.dir.join(CURRENT))?;
            if text.last() != Some(&b'\n') {
                let keep = text.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
                f.set_len(keep as u64)?;
                f.sync_data()?;
                tracing::warn!(
                    cut = text.len() - keep,
                    "quarantine: a torn last line was cut (a crash during a write)"
                );
                self.size = keep as u64;
            }
        }
        self.file = Some(f);
        self.fs.sync_dir(&self.dir)
    }

    /// Queues an entry; durable after a successful [`Self::sync`].
    pub fn add(&mut self, entry: &Entry) {
        // Serialising plain strings and numbers cannot fail.
        if serde_json::to_writer(&mut self.queued, entry).is_ok() {
            self.queued.push(b'\n');
        }
        if entry.acknowledged {
            // Counted once queued (a withdrawn one stays counted until the next count:
            // the bound errs on the safe side).
            let n = (entry.topic.len() + entry.payload.len() + 160) as u64;
            *self.kept.entry(entry.topic.clone()).or_default() += n;
            self.kept_total += n;
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

    /// `current` becomes `previous`; the entries of the old `previous` are evicted,
    /// except those of acknowledged frames, carried into the new `current` first.
    fn rotate(&mut self) -> io::Result<u64> {
        let previous = self.dir.join(PREVIOUS);
        let old = match self.fs.read(&previous) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (mut carried, mut evicted) = (Vec::new(), 0);
        for line in old.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Entry>(line) {
                Ok(e) if e.acknowledged => {
                    carried.extend_from_slice(line);
                    carried.push(b'\n');
                }
                _ => evicted += 1,
            }
        }
        self.file = None;
        let next = self.dir.join(NEXT);
        let mut f = self.fs.open(&next, Open::Truncate)?;
        f.write_all(&carried)?;
        f.sync_data()?;
        drop(f);
        self.fs.rename(&self.dir.join(CURRENT), &previous)?;
        self.rotations += 1;
        self.fs.rename(&next, &self.dir.join(CURRENT))?;
        self.reopen()?;
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
        self.reopen()?;
        self.count_kept()
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
            crate::store::fs::replace_for_group(&path, &out, 0o600, "vigie")?;
        }
        changed += edits;
    }
    Ok(changed)
}

/// Reads every entry, oldest first. Lines that do not parse are skipped and counted.
pub fn read_all(dir: &Path) -> io::Result<(Vec<Entry>, usize)> {
    read_all_on(&crate::store::fs::RealFs, dir)
}

pub(crate) fn read_all_on(
    fs: &dyn crate::store::fs::Fs,
    dir: &Path,
) -> io::Result<(Vec<Entry>, usize)> {
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
    use crate::store::fs::model::{Fault, ModelFs};
    use std::sync::Arc;

    fn entry(i: u64) -> Entry {
        Entry {
            received_ms: i,
            origin: Origin::Mqtt,
            topic: "vigie/v1/lyon/aq-1/up".into(),
            reason: "unknown_device".into(),
            detail: "unknown_device".into(),
            payload: "11223344".into(),
            acknowledged: false,
        }
    }

    /// The entry of an acknowledged frame (refused after its tag verified) of `device`.
    fn acked(i: u64, device: &str) -> Entry {
        Entry {
            topic: format!("vigie/v1/lyon/{device}/up"),
            reason: "counter_reused".into(),
            detail: "counter_reused".into(),
            acknowledged: true,
            ..entry(i)
        }
    }

    #[test]
    fn rotation_never_evicts_the_entries_of_acknowledged_frames() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Quarantine::open(crate::store::fs::real(), dir.path(), 4_000).unwrap();
        let mut evicted = 0;
        for i in 0..200 {
            let e = if i % 50 == 0 {
                acked(i, "aq-2")
            } else {
                entry(i)
            };
            q.add(&e);
            evicted += q.sync().unwrap();
        }
        let (entries, _) = read_all(dir.path()).unwrap();
        let kept: Vec<u64> = entries
            .iter()
            .filter(|e| e.acknowledged)
            .map(|e| e.received_ms)
            .collect();
        assert_eq!(kept, [0, 50, 100, 150], "every acknowledged entry, once");
        assert!(evicted > 100, "the others rotate out: {evicted}");
        assert_eq!(
            entries.len() as u64 + evicted,
            200,
            "every entry kept or counted"
        );
        // And across a reopen, counted again.
        let q = Quarantine::open(crate::store::fs::real(), dir.path(), 4_000).unwrap();
        assert_eq!(q.kept_total, 4 * (21 + 8 + 160));
    }

    #[test]
    fn a_crash_at_any_step_of_a_rotation_loses_no_acknowledged_entry() {
        for at in 0..12 {
            let fs = ModelFs::new();
            let shared: SharedFs = Arc::new(fs.clone());
            let mut q = Quarantine::open(shared.clone(), Path::new("q"), 2_000).unwrap();
            q.add(&acked(0, "aq-2"));
            q.sync().unwrap();
            // Fill to two rotations, then fail one step of the next and cut the power.
            for i in 1..12 {
                q.add(&entry(i));
                q.sync().unwrap();
            }
            fs.fail_at(fs.ops() + at, Fault::Io);
            for i in 12..20 {
                q.add(&entry(i));
                let _ = q.sync();
            }
            fs.power_cut();
            let q = Quarantine::open(shared, Path::new("q"), 2_000).unwrap();
            let (got, bad) = read_all_on(&fs, Path::new("q")).unwrap();
            let kept = got.iter().filter(|e| e.acknowledged).count();
            assert_eq!((kept, bad), (1, 0), "fault at op +{at}");
            assert_eq!(q.kept_total, 21 + 8 + 160);
        }
    }

    #[test]
    fn a_torn_tail_is_cut_at_open_so_the_next_entry_stands_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Quarantine::open(crate::store::fs::real(), dir.path(), 1 << 20).unwrap();
        q.add(&entry(1));
        q.sync().unwrap();
        drop(q);
        // A crash in the middle of the next line.
        let mut text = std::fs::read(dir.path().join(CURRENT)).unwrap();
        text.extend_from_slice(b"{\"received_ms\":2,\"orig");
        std::fs::write(dir.path().join(CURRENT), &text).unwrap();
        let mut q = Quarantine::open(crate::store::fs::real(), dir.path(), 1 << 20).unwrap();
        q.add(&entry(3));
        q.sync().unwrap();
        assert_eq!(read_all(dir.path()).unwrap(), (vec![entry(1), entry(3)], 0));
    }

    #[test]
    fn acknowledged_entries_have_a_bound_in_all_and_per_device() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Quarantine::open(crate::store::fs::real(), dir.path(), 16_000).unwrap();
        let one = entry_bytes("vigie/v1/lyon/aq-1/up", &[0x11, 0x22, 0x33, 0x44]);
        // A sixteenth per device: 1,000 bytes, five entries of 189.
        let mut n = 0;
        while q.admits_kept("vigie/v1/lyon/aq-1/up", one) {
            q.add(&acked(n, "aq-1"));
            n += 1;
        }
        assert_eq!(n, 5);
        assert!(
            q.admits_kept("vigie/v1/lyon/aq-2/up", one),
            "another device has room"
        );
        // A quarter in all: 4,000 bytes.
        for d in 2..6 {
            let topic = format!("vigie/v1/lyon/aq-{d}/up");
            while q.admits_kept(&topic, one) {
                q.add(&acked(n, &format!("aq-{d}")));
                n += 1;
            }
        }
        assert!(!q.admits_kept("vigie/v1/lyon/aq-9/up", one));
        assert!(q.kept_total <= 4_000);
        q.sync().unwrap();
        assert_eq!(read_all(dir.path()).unwrap().0.len() as u64, n);
    }

    #[test]
    fn bounded_keeps_newest_and_counts_evictions() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Quarantine::open(crate::store::fs::real(), dir.path(), 2_000).unwrap();
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
        let mut q = Quarantine::open(crate::store::fs::real(), dir.path(), 1 << 20).unwrap();
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
        let mut q = Quarantine::open(crate::store::fs::real(), dir.path(), 1_000).unwrap();
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
