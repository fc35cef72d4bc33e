//! Replay windows of every device (per key epoch), the tags of the counters each device
//! used last, and the snapshot format.
//!
//! The book only ever holds counters of frames that are durable (the ingest worker accepts
//! them after the buffer's fsync), so a snapshot never claims a frame that a crash lost.
//! While a batch is judged, a [`Pending`] overlay sees the frames earlier in the same
//! batch, so a batch gets exactly the verdicts one-at-a-time delivery would.
//!
//! **Counter reuse.** The tag (the frame's last 8 bytes) of the last [`RECENT`] counters
//! accepted per device is kept. A frame whose counter is one of them with the same tag is
//! a duplicate (a redelivery); with another tag it is a different frame under a used
//! counter ([`Seen::Reused`]). Older counters inside the window have no tag kept and count
//! as duplicates.
//!
//! **Stored time.** A reading is stored at its second plus the counter modulo 1000 as
//! milliseconds (SPEC §6), so counters `c` and `c + 1000·k` of one second would become one
//! point. Such counters always fall in different blocks of [`BLOCK`] counters, so the book
//! keeps, per device and kind, the span of seconds each block stored (`Span`); a frame
//! whose seconds overlap another block's span is refused (`time_collision`, SPEC §13.2).
//! An honest clock never trips it: a block's seconds all come after the block before.
//! Past [`SPANS`] blocks the oldest are merged into one span per kind, which counts as
//! another block for every frame: stricter, never weaker.
//!
//! Snapshot: `"VGR3"`, u32 count, then per device `u8 len, tenant, u8 len, device,
//! u32 epoch, window, u8 n, n × (u32 counter, 8-byte tag), u8 m, m × (u32 epoch,
//! u32 block, u8 kind, u32 first, u32 last)`, then CRC-32 of everything before. `"VGR2"`
//! (no spans) and `"VGR1"` (no tags) snapshots still load.

use crate::FastMap;
use crate::condition::missing::{self, Gap};
use crate::record::Record;
use protocol::{Freshness, ReplayWindow};

/// How many recent (counter, tag) pairs are kept per device.
pub const RECENT: usize = 64;

/// A frame's authentication tag: what tells two frames under one counter apart.
pub type Tag = [u8; 8];

/// Counters per block of the stored-time check: `c` and `c + 1000·k` share a millisecond.
pub const BLOCK: u32 = 1000;

/// Blocks whose spans are kept one by one per device; older ones are merged.
pub const SPANS: usize = 64;

/// The block number of merged spans (no counter has it: `u32::MAX / BLOCK` is smaller).
const MERGED: u32 = u32::MAX;

/// The seconds a frame's readings (or a block's frames) of one kind were measured at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds {
    /// The frame's kind code (readings and status reports are different series).
    pub kind: u8,
    /// Earliest second.
    pub first: u32,
    /// Latest second.
    pub last: u32,
}

impl Seconds {
    fn overlaps(&self, other: &Seconds) -> bool {
        self.kind == other.kind && self.first <= other.last && other.first <= self.last
    }

    fn widen(&mut self, other: &Seconds) {
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }
}

/// The seconds one block of counters (under one key epoch) stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    epoch: u32,
    block: u32,
    seconds: Seconds,
}

/// What the book says of a verified counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Never accepted: store it.
    Fresh,
    /// Accepted before with the same content (or too long ago to compare): a redelivery.
    Duplicate,
    /// Accepted before with different content: the device reused a counter.
    Reused,
    /// Below the window (or an older key epoch): cannot be told from a replay.
    TooOld,
}

/// The last [`RECENT`] (counter, tag) pairs, oldest first; a fixed ring, so copying a
/// device's state for a batch allocates nothing.
#[derive(Debug, Clone, Copy)]
struct Recent {
    items: [(u32, Tag); RECENT],
    len: u8,
    next: u8,
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            items: [(0, [0; 8]); RECENT],
            len: 0,
            next: 0,
        }
    }
}

impl PartialEq for Recent {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Recent {
    fn push(&mut self, item: (u32, Tag)) {
        self.items[usize::from(self.next)] = item;
        self.next = ((usize::from(self.next) + 1) % RECENT) as u8;
        self.len = (usize::from(self.len) + 1).min(RECENT) as u8;
    }

    /// Oldest first.
    fn iter(&self) -> impl Iterator<Item = &(u32, Tag)> {
        let len = usize::from(self.len);
        let start = (usize::from(self.next) + RECENT - len) % RECENT;
        (0..len).map(move |i| &self.items[(start + i) % RECENT])
    }
}

/// One device's state.
#[derive(Debug, Default, Clone, PartialEq)]
struct Slot {
    epoch: u32,
    window: ReplayWindow,
    recent: Recent,
    /// Kept across key epochs: a new epoch's counters restart and can meet old seconds.
    spans: Vec<Span>,
}

impl Slot {
    fn new(epoch: u32) -> Self {
        Self {
            epoch,
            ..Self::default()
        }
    }

    fn seen(&self, epoch: u32, counter: u32, tag: Option<&Tag>) -> Seen {
        if self.epoch < epoch {
            return Seen::Fresh;
        }
        if self.epoch > epoch {
            return Seen::TooOld;
        }
        match self.window.check(counter) {
            Freshness::Fresh => Seen::Fresh,
            Freshness::TooOld => Seen::TooOld,
            Freshness::Duplicate => match (tag, self.recent.iter().find(|(c, _)| *c == counter)) {
                (Some(tag), Some((_, kept))) if kept != tag => Seen::Reused,
                _ => Seen::Duplicate,
            },
        }
    }

    /// Whether a frame with `seconds` could share a stored point with another block's.
    fn collides(&self, epoch: u32, counter: u32, seconds: &Seconds) -> bool {
        let block = counter / BLOCK;
        self.spans
            .iter()
            .any(|s| (s.epoch, s.block) != (epoch, block) && s.seconds.overlaps(seconds))
    }

    fn note_seconds(&mut self, epoch: u32, counter: u32, seconds: Seconds) {
        let block = counter / BLOCK;
        let kind = seconds.kind;
        match self
            .spans
            .iter_mut()
            .find(|s| (s.epoch, s.block, s.seconds.kind) == (epoch, block, kind))
        {
            Some(s) => s.seconds.widen(&seconds),
            None => self.spans.push(Span {
                epoch,
                block,
                seconds,
            }),
        }
        while self.spans.iter().filter(|s| s.block != MERGED).count() > SPANS {
            self.merge_oldest();
        }
    }

    /// Folds the block span that ends earliest into its kind's merged span.
    fn merge_oldest(&mut self) {
        let Some(i) = (0..self.spans.len())
            .filter(|&i| self.spans[i].block != MERGED)
            .min_by_key(|&i| self.spans[i].seconds.last)
        else {
            return;
        };
        let old = self.spans.swap_remove(i);
        let kind = old.seconds.kind;
        match self
            .spans
            .iter_mut()
            .find(|s| s.block == MERGED && s.seconds.kind == kind)
        {
            Some(m) => m.seconds.widen(&old.seconds),
            None => self.spans.push(Span {
                epoch: 0,
                block: MERGED,
                ..old
            }),
        }
    }

    /// Records a durable counter; returns what it says of missing counters.
    fn accept(
        &mut self,
        epoch: u32,
        counter: u32,
        tag: Option<Tag>,
        seconds: Option<Seconds>,
    ) -> Gap {
        if self.epoch < epoch {
            let spans = std::mem::take(&mut self.spans);
            *self = Self {
                spans,
                ..Self::new(epoch)
            };
        }
        if self.epoch > epoch {
            return Gap::None;
        }
        if let Some(seconds) = seconds {
            self.note_seconds(epoch, counter, seconds);
        }
        let gap = match self.window.check(counter) {
            Freshness::Fresh => missing::gap(self.window.highest(), counter),
            _ => Gap::None,
        };
        self.window.accept(counter);
        if let Some(tag) = tag {
            self.recent.push((counter, tag));
        }
        gap
    }
}

/// Anything that can judge a counter: the book, or the book plus a batch in progress.
pub trait Counters {
    /// Classifies a verified counter of `tenant`/`device` under key `epoch`.
    fn seen(&self, tenant: &str, device: &str, epoch: u32, counter: u32, tag: &Tag) -> Seen;

    /// Whether a fresh frame's readings could land on a point another block of counters
    /// stored (SPEC §13.2 "Stored time").
    fn collides(&self, who: (&str, &str), epoch: u32, counter: u32, seconds: &Seconds) -> bool;
}

/// Key epoch, replay window and recent tags of each device, by tenant then device
/// (nested so a lookup borrows `&str`: no allocation per message).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplayBook {
    windows: FastMap<String, FastMap<String, Slot>>,
}

/// A snapshot that does not parse or whose checksum fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("replay state snapshot is corrupt")]
pub struct SnapshotError;

const MAGIC_V1: &[u8; 4] = b"VGR1";
const MAGIC_V2: &[u8; 4] = b"VGR2";
const MAGIC: &[u8; 4] = b"VGR3";

impl Counters for ReplayBook {
    fn seen(&self, tenant: &str, device: &str, epoch: u32, counter: u32, tag: &Tag) -> Seen {
        match self.slot(tenant, device) {
            None => Seen::Fresh,
            Some(s) => s.seen(epoch, counter, Some(tag)),
        }
    }

    fn collides(&self, who: (&str, &str), epoch: u32, counter: u32, seconds: &Seconds) -> bool {
        self.slot(who.0, who.1)
            .is_some_and(|s| s.collides(epoch, counter, seconds))
    }
}

impl ReplayBook {
    fn slot(&self, tenant: &str, device: &str) -> Option<&Slot> {
        self.windows.get(tenant).and_then(|d| d.get(device))
    }

    /// Records a durable frame (its tag and the seconds of its readings when known).
    /// Returns what it says of missing counters.
    pub fn accept(&mut self, record: &Record) -> Gap {
        let r = record;
        self.accept_counter(&r.tenant, &r.device, r.epoch, r.counter, r.tag, r.seconds())
    }

    fn accept_counter(
        &mut self,
        tenant: &str,
        device: &str,
        epoch: u32,
        counter: u32,
        tag: Option<Tag>,
        seconds: Option<Seconds>,
    ) -> Gap {
        let devices = match self.windows.get_mut(tenant) {
            Some(d) => d,
            None => self.windows.entry(tenant.to_string()).or_default(),
        };
        let slot = match devices.get_mut(device) {
            Some(slot) => slot,
            None => devices
                .entry(device.to_string())
                .or_insert_with(|| Slot::new(epoch)),
        };
        slot.accept(epoch, counter, tag, seconds)
    }

    /// The highest counter accepted of `tenant`/`device` under key `epoch`.
    pub fn highest(&self, tenant: &str, device: &str, epoch: u32) -> Option<u32> {
        self.slot(tenant, device)
            .filter(|s| s.epoch == epoch)
            .and_then(|s| s.window.highest())
    }

    /// Which counters of `tenant`/`device` under key `epoch` are held durably (inside the
    /// window and accepted): what an acknowledgement may claim. One lookup for the device,
    /// then a test per counter.
    pub fn holds(&self, tenant: &str, device: &str, epoch: u32) -> impl Fn(u32) -> bool + '_ {
        let slot = self.slot(tenant, device).filter(|s| s.epoch == epoch);
        move |counter| slot.is_some_and(|s| s.window.check(counter) == Freshness::Duplicate)
    }

    /// An overlay for judging one batch.
    pub fn pending(&self) -> Pending<'_> {
        Pending {
            book: self,
            touched: FastMap::default(),
        }
    }

    /// Number of devices tracked.
    pub fn len(&self) -> usize {
        self.windows.values().map(FastMap::len).sum()
    }

    /// True when no device is tracked.
    pub fn is_empty(&self) -> bool {
        self.windows.values().all(FastMap::is_empty)
    }

    /// Serializes the whole book.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(self.len() as u32).to_be_bytes());
        let mut all: Vec<_> = self
            .windows
            .iter()
            .flat_map(|(t, d)| d.iter().map(move |(id, s)| (t, id, s)))
            .collect();
        all.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (tenant, device, slot) in all {
            for s in [tenant, device] {
                out.push(s.len() as u8);
                out.extend_from_slice(s.as_bytes());
            }
            out.extend_from_slice(&slot.epoch.to_be_bytes());
            out.extend_from_slice(&slot.window.to_bytes());
            out.push(slot.recent.len);
            for (counter, tag) in slot.recent.iter() {
                out.extend_from_slice(&counter.to_be_bytes());
                out.extend_from_slice(tag);
            }
            // At most SPANS blocks plus one merged span per kind: fits a byte.
            out.push(slot.spans.len() as u8);
            for s in &slot.spans {
                out.extend_from_slice(&s.epoch.to_be_bytes());
                out.extend_from_slice(&s.block.to_be_bytes());
                out.push(s.seconds.kind);
                out.extend_from_slice(&s.seconds.first.to_be_bytes());
                out.extend_from_slice(&s.seconds.last.to_be_bytes());
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a snapshot (this version's, or an older one without spans or tags).
    pub fn from_snapshot(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let (body, crc) = bytes
            .split_at_checked(bytes.len().saturating_sub(4))
            .ok_or(SnapshotError)?;
        if crc.len() != 4 || crc32fast::hash(body).to_be_bytes() != crc {
            return Err(SnapshotError);
        }
        let version = match body.get(..4) {
            Some(m) if m == MAGIC => Version {
                tags: true,
                spans: true,
            },
            Some(m) if m == MAGIC_V2 => Version {
                tags: true,
                spans: false,
            },
            Some(m) if m == MAGIC_V1 => Version {
                tags: false,
                spans: false,
            },
            _ => return Err(SnapshotError),
        };
        let mut r = Bytes(&body[4..]);
        let count = r.u32()?;
        let mut windows: FastMap<String, FastMap<String, Slot>> = FastMap::default();
        for _ in 0..count {
            let (tenant, device) = (r.text()?, r.text()?);
            let slot = r.slot(version)?;
            windows.entry(tenant).or_default().insert(device, slot);
        }
        if r.take(1).is_ok() {
            return Err(SnapshotError);
        }
        Ok(Self { windows })
    }
}

/// What a snapshot's version holds besides the windows.
#[derive(Debug, Clone, Copy)]
struct Version {
    tags: bool,
    spans: bool,
}

/// A snapshot being read.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let (head, tail) = self.0.split_at_checked(n).ok_or(SnapshotError)?;
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn text(&mut self) -> Result<String, SnapshotError> {
        let len = self.u8()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| SnapshotError)
    }

    /// One device's slot: epoch, window, and what `version` adds.
    fn slot(&mut self, version: Version) -> Result<Slot, SnapshotError> {
        let epoch = self.u32()?;
        let w: [u8; ReplayWindow::ENCODED_LEN] = self
            .take(ReplayWindow::ENCODED_LEN)?
            .try_into()
            .map_err(|_| SnapshotError)?;
        let mut slot = Slot {
            epoch,
            window: ReplayWindow::from_bytes(&w),
            recent: Recent::default(),
            spans: Vec::new(),
        };
        if version.tags {
            let n = self.u8()? as usize;
            if n > RECENT {
                return Err(SnapshotError);
            }
            for _ in 0..n {
                let counter = self.u32()?;
                let tag: Tag = self.take(8)?.try_into().map_err(|_| SnapshotError)?;
                slot.recent.push((counter, tag));
            }
        }
        if version.spans {
            for _ in 0..self.u8()? {
                let (epoch, block) = (self.u32()?, self.u32()?);
                let kind = self.u8()?;
                let (first, last) = (self.u32()?, self.u32()?);
                let seconds = Seconds { kind, first, last };
                slot.spans.push(Span {
                    epoch,
                    block,
                    seconds,
                });
            }
        }
        Ok(slot)
    }
}

/// The book plus the frames accepted earlier in the batch being judged. Dropped after
/// the batch; the book itself advances only once the batch is durable.
#[derive(Debug)]
pub struct Pending<'a> {
    book: &'a ReplayBook,
    /// Copies of the slots this batch changed, by tenant then device (lookups borrow).
    touched: FastMap<String, FastMap<String, Slot>>,
}

impl Pending<'_> {
    /// Notes a frame this batch accepts.
    pub fn accept(&mut self, record: &Record) {
        let (tenant, device, epoch) = (&*record.tenant, &*record.device, record.epoch);
        let devices = match self.touched.get_mut(tenant) {
            Some(d) => d,
            None => self.touched.entry(tenant.to_string()).or_default(),
        };
        let slot = match devices.get_mut(device) {
            Some(slot) => slot,
            None => devices.entry(device.to_string()).or_insert_with(|| {
                self.book
                    .slot(tenant, device)
                    .cloned()
                    .unwrap_or_else(|| Slot::new(epoch))
            }),
        };
        slot.accept(epoch, record.counter, record.tag, record.seconds());
    }
}

impl Counters for Pending<'_> {
    fn seen(&self, tenant: &str, device: &str, epoch: u32, counter: u32, tag: &Tag) -> Seen {
        match self.touched.get(tenant).and_then(|d| d.get(device)) {
            Some(slot) => slot.seen(epoch, counter, Some(tag)),
            None => self.book.seen(tenant, device, epoch, counter, tag),
        }
    }

    fn collides(&self, who: (&str, &str), epoch: u32, counter: u32, seconds: &Seconds) -> bool {
        match self.touched.get(who.0).and_then(|d| d.get(who.1)) {
            Some(slot) => slot.collides(epoch, counter, seconds),
            None => self.book.collides(who, epoch, counter, seconds),
        }
    }
}

#[cfg(test)]
mod tests;
