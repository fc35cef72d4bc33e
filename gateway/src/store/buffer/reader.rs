//! Reader side: a cursor over the durable part of the log. Several may exist (the sink
//! keeps one per tenant that is behind); only durable records are ever returned.

use super::format::{self, HEADER, MAGIC, MAX_PAYLOAD, Piece};
use super::{Position, Shared, segment_path};
use crate::store::fs::{FsFile, Open, SharedFs};
use bytes::Bytes;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A cursor over the log.
#[derive(Debug)]
pub struct Reader {
    fs: SharedFs,
    dir: PathBuf,
    shared: Arc<Shared>,
    pos: Position,
    file: Option<(u64, Box<dyn FsFile>)>,
    /// Durable bytes read ahead from one segment, and where they start. A record's
    /// payload is a slice of them, not a copy (one allocation per record was a quarter of
    /// the hot path's; docs/PERFORMANCE.md). A record still held when the window moves on
    /// keeps the old one alive; the window is then a new allocation.
    ahead: Bytes,
    ahead_at: Position,
}

/// Bytes read from a segment at once. Records are a few hundred bytes: one read serves
/// hundreds of them (two reads per record before, header then payload, were 2 of the
/// gateway's 3 system calls per reading while draining a backlog).
const READ_AHEAD: usize = 64 * 1024;

/// A record read from the buffer.
#[derive(Debug)]
pub struct Entry {
    /// The payload (shares the reader's window).
    pub payload: Bytes,
    /// Where the record starts.
    pub start: Position,
    /// Position just after it.
    pub end: Position,
}

/// Durable bytes that are not a valid record (disk corruption): skipped, reported once.
#[derive(Debug)]
pub struct Corrupt {
    /// The damaged bytes (at most [`MAX_PAYLOAD`] of them).
    pub bytes: Vec<u8>,
    /// Where the damage starts.
    pub start: Position,
    /// Where reading goes on.
    pub end: Position,
}

/// What the reader found next.
#[derive(Debug)]
pub enum Item {
    /// A record.
    Record(Entry),
    /// A corrupt stretch.
    Corrupt(Corrupt),
}

impl Item {
    /// Position after the item.
    pub fn end(&self) -> Position {
        match self {
            Self::Record(e) => e.end,
            Self::Corrupt(c) => c.end,
        }
    }
}

impl Reader {
    pub(super) fn new(fs: SharedFs, dir: PathBuf, shared: Arc<Shared>, pos: Position) -> Self {
        Self {
            fs,
            dir,
            shared,
            pos,
            file: None,
            ahead: Bytes::new(),
            ahead_at: pos,
        }
    }

    /// A second cursor over the same log, at `pos` (a position this or another reader
    /// returned, not yet delivered).
    pub fn at(&self, pos: Position) -> Self {
        Self::new(
            Arc::clone(&self.fs),
            self.dir.clone(),
            Arc::clone(&self.shared),
            pos,
        )
    }

    /// Where the next read starts.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// The next durable item, waiting up to `wait` for one to be appended.
    pub fn next(&mut self, wait: Duration) -> io::Result<Option<Item>> {
        self.next_inner(wait, None)
    }

    /// The next durable item that starts before `limit` (another cursor's position),
    /// without waiting.
    pub fn next_before(&mut self, limit: Position) -> io::Result<Option<Item>> {
        self.next_inner(Duration::ZERO, Some(limit))
    }

    /// A handle that ends this reader's waits for new records, at once and for good: at
    /// shutdown the sink then finds what is durable without waiting out its idle time.
    pub fn interrupter(&self) -> super::Interrupter {
        super::Interrupter::new(Arc::clone(&self.shared))
    }

    /// End of the durable records now.
    pub fn durable(&self) -> Position {
        self.shared.lock().durable
    }

    fn next_inner(&mut self, wait: Duration, before: Option<Position>) -> io::Result<Option<Item>> {
        loop {
            if before.is_some_and(|b| self.pos >= b) {
                return Ok(None);
            }
            let limit = {
                let s = self.shared.lock();
                let s = if s.durable <= self.pos {
                    self.shared
                        .changed
                        .wait_timeout_while(s, wait, |s| s.durable <= self.pos && !s.interrupted)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                } else {
                    s
                };
                if s.durable <= self.pos {
                    return Ok(None);
                }
                if let Some(&end) = s.skip.get(&self.pos) {
                    self.pos = end;
                    continue;
                }
                let limit = if self.pos.segment == s.durable.segment {
                    s.durable.offset
                } else {
                    s.segments.get(&self.pos.segment).copied().unwrap_or(0)
                };
                if self.pos.offset >= limit {
                    // End of a sealed segment (or one deleted under us): move on.
                    let next = s.segments.range(self.pos.segment + 1..).next();
                    let Some((&next, _)) = next else {
                        return Ok(None);
                    };
                    self.pos = Position {
                        segment: next,
                        offset: MAGIC.len() as u64,
                    };
                    self.file = None;
                    continue;
                }
                limit
            };
            return self.read_at_pos(limit).map(Some);
        }
    }

    fn file(&mut self) -> io::Result<&dyn FsFile> {
        let seq = self.pos.segment;
        if self.file.as_ref().is_none_or(|(s, _)| *s != seq) {
            let f = self.fs.open(&segment_path(&self.dir, seq), Open::Read)?;
            self.file = Some((seq, f));
        }
        match &self.file {
            Some((_, f)) => Ok(f.as_ref()),
            None => unreachable!("opened above"),
        }
    }

    /// Where the `len` bytes at `at` are in the read-ahead window, filled from `at` when it
    /// does not hold them. The caller keeps `at.offset + len` within `limit`, the durable
    /// end of the segment: the window never holds bytes that are not durable.
    fn window(&mut self, at: Position, len: usize, limit: u64) -> io::Result<Range<usize>> {
        let held = self.ahead_at.segment == at.segment
            && self.ahead_at.offset <= at.offset
            && at.offset + len as u64 <= self.ahead_at.offset + self.ahead.len() as u64;
        if !held {
            // The last window again when no record read from it is left (the sink drops
            // them as it goes): no allocation, and only bytes it never had are zeroed.
            let mut window = std::mem::take(&mut self.ahead)
                .try_into_mut()
                .unwrap_or_default();
            let want = (limit - at.offset).min(READ_AHEAD.max(len) as u64) as usize;
            window.resize(want, 0);
            self.file()?.read_exact_at(&mut window, at.offset)?;
            self.ahead = window.freeze();
            self.ahead_at = at;
        }
        let from = (at.offset - self.ahead_at.offset) as usize;
        Ok(from..from + len)
    }

    /// Reads the record at the cursor; `limit` is the durable end of its segment.
    fn read_at_pos(&mut self, limit: u64) -> io::Result<Item> {
        let start = self.pos;
        let room = limit - start.offset;
        if room >= HEADER as u64 {
            let at = self.window(start, HEADER, limit)?;
            let header = &self.ahead[at];
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            if (1..=MAX_PAYLOAD).contains(&len) && (HEADER + len) as u64 <= room {
                let record = self.window(start, HEADER + len, limit)?;
                let payload = record.start + HEADER..record.end;
                if crc32fast::hash(&self.ahead[payload.clone()]) == crc {
                    let payload = self.ahead.slice(payload);
                    self.pos.offset += (HEADER + len) as u64;
                    return Ok(Item::Record(Entry {
                        payload,
                        start,
                        end: self.pos,
                    }));
                }
            }
        }
        // Durable bytes that are not a record: find where the next valid one starts.
        let mut rest = vec![0u8; room as usize];
        self.file()?.read_exact_at(&mut rest, start.offset)?;
        let skip = match format::scan(&rest, 0).next() {
            Some(Piece::Corrupt { end, .. }) => end,
            _ => rest.len(),
        };
        self.pos.offset += skip as u64;
        rest.truncate(skip.min(MAX_PAYLOAD));
        Ok(Item::Corrupt(Corrupt {
            bytes: rest,
            start,
            end: self.pos,
        }))
    }

    /// Record bytes durable but not yet delivered to the database.
    pub fn pending_bytes(&self) -> u64 {
        self.shared.lock().pending()
    }

    /// Everything before `end` is stored in the database (or held elsewhere); the writer
    /// may delete the segments wholly before it.
    pub fn mark_delivered(&self, end: Position) {
        let mut s = self.shared.lock();
        if end > s.delivered {
            s.delivered = end;
        }
        drop(s);
        self.shared.changed.notify_all();
    }
}
