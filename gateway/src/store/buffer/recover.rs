//! Opening the buffer after whatever happened: every segment scanned, valid records
//! handed to the caller (the replay book is rebuilt from them), corrupt stretches skipped
//! and reported, torn tails cut, the segment appends go to made durable first.

use super::format::{self, MAGIC, Piece};
use super::{
    Buffer, BufferError, Damage, Position, Recovered, Recovery, Shared, State, create_segment,
    segment_path,
};
use crate::store::fs::{Open, SharedFs};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

/// What the scan of the segments found.
#[derive(Default)]
struct Scan {
    recovery: Recovery,
    segments: BTreeMap<u64, u64>,
    skip: BTreeMap<Position, Position>,
    damage: Option<Damage>,
}

impl Buffer {
    /// Opens (or creates) the buffer in `dir`, recovering from any crash. `on_item` sees
    /// every valid payload and every corrupt stretch, oldest first.
    pub fn open(
        fs: SharedFs,
        dir: &Path,
        segment_size: u64,
        max_bytes: u64,
        mut on_item: impl FnMut(Recovered<'_>),
    ) -> Result<(Self, Recovery), BufferError> {
        fs.create_dir_all(dir)?;
        let mut seqs: Vec<u64> = fs
            .list(dir)?
            .iter()
            .filter_map(|name| name.strip_suffix(".seg")?.parse().ok())
            .collect();
        seqs.sort_unstable();
        let mut scan = Scan::default();
        for (i, &seq) in seqs.iter().enumerate() {
            scan.segment(&fs, dir, seq, i + 1 == seqs.len(), &mut on_item)?;
        }
        let (seq, len) = match scan.segments.last_key_value() {
            Some((&seq, &len)) => (seq, len),
            None => {
                create_segment(&fs, dir, 1)?;
                scan.segments.insert(1, MAGIC.len() as u64);
                (1, MAGIC.len() as u64)
            }
        };
        let mut file = fs.open(&segment_path(dir, seq), Open::Append)?;
        // The segment appends go to may be one whose creation a crash or a failed roll
        // left unsynced (its magic written, its directory entry not yet durable): an
        // fsync of its data then of the directory, before anything is acknowledged in it,
        // or a power cut could take the whole file and its acknowledged records with it.
        file.sync_data()?;
        fs.sync_dir(dir)?;
        let first = scan.segments.first_key_value().map_or(seq, |(&s, _)| s);
        let durable = Position {
            segment: seq,
            offset: len,
        };
        let state = State {
            segments: scan.segments,
            durable,
            delivered: Position {
                segment: first,
                offset: 0,
            },
            skip: scan.skip,
            interrupted: false,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changed: Condvar::new(),
        });
        let buffer = Self {
            fs,
            dir: dir.to_path_buf(),
            segment_size,
            max_bytes,
            file,
            durable,
            damage: scan.damage,
            shared,
            scratch: Vec::new(),
        };
        Ok((buffer, scan.recovery))
    }
}

impl Scan {
    /// Scans segment `seq` (the `last` one appends go to).
    fn segment(
        &mut self,
        fs: &SharedFs,
        dir: &Path,
        seq: u64,
        last: bool,
        on_item: &mut impl FnMut(Recovered<'_>),
    ) -> Result<(), BufferError> {
        let path = segment_path(dir, seq);
        let data = fs.read(&path)?;
        if data.len() < MAGIC.len() {
            // Created at the instant of a crash: start it again.
            create_segment(fs, dir, seq)?;
            self.segments.insert(seq, MAGIC.len() as u64);
            return Ok(());
        }
        if !data.starts_with(MAGIC) {
            tracing::error!(segment = %path.display(), "buffer segment without its magic; reading its records anyway");
        }
        let mut valid = data.len();
        for piece in format::scan(&data, MAGIC.len()) {
            match piece {
                Piece::Record { start, end } => {
                    on_item(Recovered::Record(&data[start + format::HEADER..end]));
                    self.recovery.records += 1;
                    self.recovery.bytes += (end - start) as u64;
                }
                Piece::Corrupt { start, end } => {
                    on_item(Recovered::Corrupt(&data[start..end]));
                    self.recovery.corrupt_records += 1;
                    self.recovery.corrupt_bytes += (end - start) as u64;
                    let at = |offset: usize| Position {
                        segment: seq,
                        offset: offset as u64,
                    };
                    self.skip.insert(at(start), at(end));
                    tracing::error!(segment = %path.display(), offset = start, bytes = end - start, "corrupt buffer record skipped; the records after it are kept");
                }
                Piece::TornTail { start } => {
                    valid = start;
                    self.recovery.torn_tails += 1;
                    self.recovery.cut_bytes += (data.len() - start) as u64;
                }
            }
        }
        if valid < data.len() && !cut_tail(fs, &path, data.len() - valid, valid) && last {
            self.damage = Some(Damage::default());
        }
        self.segments.insert(seq, valid as u64);
        Ok(())
    }
}

/// Cuts a torn tail of `cut` bytes off `path` at `valid`; false if it cannot now (the
/// reader stops at `valid` anyway; the next append cuts it first).
fn cut_tail(fs: &SharedFs, path: &Path, cut: usize, valid: usize) -> bool {
    tracing::warn!(segment = %path.display(), cut_bytes = cut, "torn tail cut (a write a crash or a failed write left unfinished; never acknowledged)");
    let result = fs.open(path, Open::Append).and_then(|mut f| {
        f.set_len(valid as u64)?;
        f.sync_data()
    });
    if let Err(e) = &result {
        tracing::error!(segment = %path.display(), error = %e, "cannot cut the torn tail now; retried before the next append");
    }
    result.is_ok()
}
