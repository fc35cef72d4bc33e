//! Quarantine: every rejected frame, kept with its reason so an operator can see it and,
//! after a fix (a device registered late, a clock corrected), replay it.
//!
//! JSON lines in `<data_dir>/quarantine/current.jsonl`; when that file passes half the
//! limit it becomes `previous.jsonl` (replacing the one before, whose entries are counted
//! as evicted). So the quarantine holds at most `max_bytes` and always the newest entries.
//! Written in the ingest worker's group commit: fsynced before the frame is acknowledged.
//! Only the running service removes entries (replay); `quarantine list` only reads.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// One quarantined frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Receive time, Unix milliseconds.
    pub received_ms: u64,
    /// MQTT topic, or `database:<tenant>` for lines the database refused.
    pub topic: String,
    /// Reason code (see `core::reason`).
    pub reason: String,
    /// Human detail.
    pub detail: String,
    /// The payload, hex.
    pub payload: String,
}

/// The on-disk quarantine.
#[derive(Debug)]
pub struct Quarantine {
    dir: PathBuf,
    max_bytes: u64,
    file: File,
    size: u64,
    dirty: bool,
}

impl Quarantine {
    /// Opens or creates the quarantine in `dir`.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("current.jsonl"))?;
        let size = file.metadata()?.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            file,
            size,
            dirty: false,
        })
    }

    /// Appends an entry (durable after [`Self::sync`]). Returns entries evicted by rotation.
    pub fn add(&mut self, entry: &Entry) -> io::Result<u64> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut evicted = 0;
        if self.size + line.len() as u64 > self.max_bytes / 2 && self.size > 0 {
            evicted = self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        self.dirty = true;
        Ok(evicted)
    }

    fn rotate(&mut self) -> io::Result<u64> {
        self.file.sync_data()?;
        let previous = self.dir.join("previous.jsonl");
        let evicted = count_lines(&previous);
        fs::rename(self.dir.join("current.jsonl"), &previous)?;
        self.start_new_file()?;
        Ok(evicted)
    }

    /// Opens a fresh `current.jsonl` after the old one was moved or removed.
    fn start_new_file(&mut self) -> io::Result<()> {
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("current.jsonl"))?;
        crate::fsutil::sync_dir(&self.dir)?;
        self.size = 0;
        Ok(())
    }

    /// Removes and returns every entry, for a replay through the pipeline. Only the owner
    /// of the quarantine (the running service) does this, so no concurrent append is lost.
    pub fn take_all(&mut self) -> io::Result<Vec<Entry>> {
        self.file.sync_data()?;
        let (entries, _) = read_all(&self.dir)?;
        for name in ["previous.jsonl", "current.jsonl"] {
            match fs::remove_file(self.dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.start_new_file()?;
        Ok(entries)
    }

    /// Makes added entries durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }
}

fn count_lines(path: &Path) -> u64 {
    File::open(path)
        .map(|f| BufReader::new(f).lines().count() as u64)
        .unwrap_or(0)
}

/// Reads every entry, oldest first. Lines that do not parse are skipped and counted.
pub fn read_all(dir: &Path) -> io::Result<(Vec<Entry>, usize)> {
    let mut entries = Vec::new();
    let mut bad = 0;
    for name in ["previous.jsonl", "current.jsonl"] {
        let f = match File::open(dir.join(name)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in BufReader::new(f).lines() {
            match serde_json::from_str::<Entry>(&line?) {
                Ok(e) => entries.push(e),
                Err(_) => bad += 1,
            }
        }
    }
    Ok((entries, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> Entry {
        Entry {
            received_ms: i,
            topic: "vigie/v1/lyon/aq-1/up".into(),
            reason: "unknown_device".into(),
            detail: "unknown_device".into(),
            payload: "11223344".into(),
        }
    }

    #[test]
    fn bounded_keeps_newest_and_counts_evictions() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Quarantine::open(dir.path(), 2_000).unwrap();
        let mut evicted = 0;
        for i in 0..100 {
            evicted += q.add(&entry(i)).unwrap();
        }
        q.sync().unwrap();
        let (entries, bad) = read_all(dir.path()).unwrap();
        assert_eq!(bad, 0);
        assert_eq!(
            entries.len() as u64 + evicted,
            100,
            "every entry kept or counted"
        );
        assert_eq!(entries.last().unwrap().received_ms, 99);
        let on_disk: u64 = ["current.jsonl", "previous.jsonl"]
            .iter()
            .map(|n| {
                fs::metadata(dir.path().join(n))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum();
        assert!(on_disk <= 2_000, "{on_disk}");
        assert_eq!(q.take_all().unwrap(), entries);
        assert!(read_all(dir.path()).unwrap().0.is_empty());
        q.add(&entry(7)).unwrap();
        q.sync().unwrap();
        assert_eq!(read_all(dir.path()).unwrap().0, vec![entry(7)]);
    }
}
