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
            acknowledged: reason.settles(),
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
mod tests;
