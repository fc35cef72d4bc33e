//! The database-less sink: line-protocol files per tenant and UTC day of the reading,
//! `<dir>/<tenant>/<YYYY-MM-DD>.lp` (millisecond timestamps, docs/SCHEMA.md), importable
//! with `influx write --precision ms -f` (or InfluxDB 1.x's `influx -import -precision ms`).
//! Appended and fsynced; a failed write is cut back to where it started, so a retry never
//! leaves a torn line; a redelivery after a crash may append a line twice, which an import
//! stores once (same measurement, tags and timestamp).

use super::{Answer, LineWriter, Text};
use crate::store::fs::{Open, SharedFs};
use protocol::json::UtcTime;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vigie_core::erase::Scope;

/// Writes line protocol files.
#[derive(Debug)]
pub struct FileWriter {
    fs: SharedFs,
    dir: PathBuf,
}

impl FileWriter {
    /// Files go under `dir`.
    pub fn new(fs: SharedFs, dir: PathBuf) -> Self {
        Self { fs, dir }
    }

    fn append(&self, tenant: &str, lines: &Text) -> std::io::Result<()> {
        let mut by_day: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for line in lines.lines() {
            let ms = line
                .rsplit(|b| *b == b' ')
                .next()
                .and_then(|t| std::str::from_utf8(t).ok()?.parse::<u64>().ok())
                .unwrap_or(0);
            let secs = u32::try_from(ms / 1000).unwrap_or(u32::MAX);
            let day = UtcTime(secs).to_string()[..10].to_string();
            let text = by_day.entry(day).or_default();
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        let dir = self.dir.join(tenant);
        self.fs.create_dir_all(&dir)?;
        for (day, text) in by_day {
            let mut f = self.fs.open(&dir.join(format!("{day}.lp")), Open::Append)?;
            let before = f.size()?;
            if before == 0 {
                self.fs.sync_dir(&dir)?;
            }
            if let Err(e) = f.write_all(&text).and_then(|()| f.sync_data()) {
                // Best effort: leave no torn line for the retry to append after.
                let _ = f.set_len(before).and_then(|()| f.sync_data());
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Removes the lines `scope` covers from the files of its tenant under `dir`, with the
/// service stopped (`erase`): a file left empty is deleted, the others are replaced
/// atomically with their owner, group and mode. With `apply` false nothing is written.
/// Returns the lines removed.
pub fn erase_offline(dir: &Path, scope: &Scope, apply: bool) -> std::io::Result<u64> {
    let dir = dir.join(&scope.tenant);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|x| x != "lp") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let (kept, gone) = scope.keep_lines(&scope.tenant, &text);
        removed += gone as u64;
        match (gone, apply) {
            (0, _) | (_, false) => {}
            _ if kept.is_empty() => std::fs::remove_file(&path)?,
            _ => crate::store::fs::replace_for_group(&path, kept.as_bytes(), 0o600, "vigie")?,
        }
    }
    if removed > 0 && apply {
        crate::store::fs::real().sync_dir(&dir)?;
    }
    Ok(removed)
}

impl LineWriter for FileWriter {
    fn write(&mut self, tenant: &str, lines: &Text) -> Answer {
        match self.append(tenant, lines) {
            Ok(()) => Answer::Status {
                code: 204,
                retry_after: None,
                body: String::new(),
            },
            // A full or read-only disk: retried with backoff like a database outage.
            Err(e) => Answer::Transport(format!("writing line-protocol files: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_by_tenant_and_reading_day() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = FileWriter::new(crate::store::fs::real(), dir.path().to_path_buf());
        let lines = "m v=1 1795305600000\nm v=2 1795391999999\nm v=3 1795392000000\n";
        assert!(matches!(
            w.write("lyon", &lines.into()),
            Answer::Status { code: 204, .. }
        ));
        let day1 = std::fs::read_to_string(dir.path().join("lyon/2026-11-22.lp")).unwrap();
        let day2 = std::fs::read_to_string(dir.path().join("lyon/2026-11-23.lp")).unwrap();
        assert_eq!(day1, "m v=1 1795305600000\nm v=2 1795391999999\n");
        assert_eq!(day2, "m v=3 1795392000000\n");
    }
}
