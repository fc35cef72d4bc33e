//! Replay windows of every device (per key epoch), the tags of the counters each device
//! used last, and the snapshot format.
//!
//! The book only ever holds counters of frames that are durable (the ingest worker accepts
//! them after the buffer's fsync), so a snapshot never claims a frame that a crash lost.
//! While a batch is judged, a [`Pending`] overlay sees the frames earlier in the same
//! batch, so a batch gets exactly the verdicts one-at-a-time delivery would.
//!
//! **Counter reuse.** For every counter of the window a device stored, a 32-bit
//! fingerprint of its tag (the first 4 of the frame's last 8 bytes) is kept: 8 KiB per
//! device. A frame whose counter was stored with the same fingerprint is a duplicate (a
//! redelivery); with another one it is a different frame under a used counter
//! ([`Seen::Reused`]): refused out loud and quarantined, never acknowledged as a duplicate
//! and deleted by its device (a re-flashed board whose counter restarted). A counter
//! stored with no tag known (lines written again from the database quarantine, a state
//! saved before fingerprints beyond its last 64 tags) counts as a duplicate.
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
//! Snapshot: `"VGR4"`, u32 count, then per device `u8 len, tenant, u8 len, device,
//! u32 epoch, window, one u32 fingerprint per stored counter of the window (highest
//! first; 0: none known), u8 m, m × (u32 epoch, u32 block, u8 kind, u32 first, u32 last)`,
//! then CRC-32 of everything before. `"VGR3"` (the last 64 tags as `u8 n, n × (u32
//! counter, 8-byte tag)`, then spans), `"VGR2"` (no spans) and `"VGR1"` (no tags)
//! snapshots still load.

use crate::FastMap;
use crate::condition::missing::{self, Gap};
use crate::record::Record;
use protocol::replay::WINDOW;
use protocol::{Freshness, ReplayWindow};

/// How many (counter, tag) pairs a `"VGR3"` snapshot kept per device.
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

/// The fingerprint of a tag: its first 4 bytes, never 0 (0 says "none known").
fn fingerprint(tag: &Tag) -> u32 {
    u32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]]).max(1)
}

/// The tag fingerprints of the window's counters, indexed by counter modulo [`WINDOW`]:
/// meaningful for a counter the window holds as stored (a later counter of the same
/// index has moved the window past it).
#[derive(Clone)]
struct Prints(Box<[u32; WINDOW as usize]>);

impl std::fmt::Debug for Prints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let known = self.0.iter().filter(|p| **p != 0).count();
        write!(f, "Prints({known} known)")
    }
}

impl Default for Prints {
    fn default() -> Self {
        Self(Box::new([0; WINDOW as usize]))
    }
}

impl Prints {
    fn get(&self, counter: u32) -> u32 {
        self.0[(counter % WINDOW) as usize]
    }

    fn set(&mut self, counter: u32, print: u32) {
        self.0[(counter % WINDOW) as usize] = print;
    }
}

/// One device's state.
#[derive(Debug, Default, Clone)]
struct Slot {
    epoch: u32,
    window: ReplayWindow,
    prints: Prints,
    /// Kept across key epochs: a new epoch's counters restart and can meet old seconds.
    spans: Vec<Span>,
}

/// Equal states: the same window, spans and fingerprints of the counters it holds (what
/// a slot's index still holds of counters below the window does not count).
impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.epoch == other.epoch
            && self.window == other.window
            && self.spans == other.spans
            && self
                .stored()
                .all(|c| self.prints.get(c) == other.prints.get(c))
    }
}

impl Slot {
    /// The window's stored counters, highest first: the order of their fingerprints in a
    /// snapshot.
    fn stored(&self) -> impl Iterator<Item = u32> + '_ {
        let high = self.window.highest();
        let span = high.map_or(0, |h| h.min(WINDOW - 1) + 1);
        (0..span)
            .filter_map(move |i| high.map(|h| h - i))
            .filter(|&c| self.window.check(c) == Freshness::Duplicate)
    }

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
            Freshness::Duplicate => match (tag.map(fingerprint), self.prints.get(counter)) {
                (Some(print), kept) if kept != 0 && kept != print => Seen::Reused,
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
        if self.window.check(counter) != Freshness::Fresh {
            // Stored already, or below the window: its fingerprint (if any) stays.
            self.window.accept(counter);
            return Gap::None;
        }
        let gap = missing::gap(self.window.highest(), counter);
        self.window.accept(counter);
        self.prints
            .set(counter, tag.as_ref().map_or(0, fingerprint));
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

/// Key epoch, replay window and tag fingerprints of each device, by tenant then device
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
const MAGIC_V3: &[u8; 4] = b"VGR3";
const MAGIC: &[u8; 4] = b"VGR4";

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
            for counter in slot.stored() {
                out.extend_from_slice(&slot.prints.get(counter).to_be_bytes());
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
                tags: Kept::Window,
                spans: true,
            },
            Some(m) if m == MAGIC_V3 => Version {
                tags: Kept::Last64,
                spans: true,
            },
            Some(m) if m == MAGIC_V2 => Version {
                tags: Kept::Last64,
                spans: false,
            },
            Some(m) if m == MAGIC_V1 => Version {
                tags: Kept::None,
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
    tags: Kept,
    spans: bool,
}

/// Which tags a snapshot's version kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// None (`"VGR1"`).
    None,
    /// The last [`RECENT`] counters' whole tags (`"VGR2"`, `"VGR3"`).
    Last64,
    /// A fingerprint per stored counter of the window (`"VGR4"`).
    Window,
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

    /// The last tags an older snapshot kept, as fingerprints of the counters the window
    /// still holds.
    fn last_tags(&mut self, slot: &mut Slot) -> Result<(), SnapshotError> {
        let n = self.u8()? as usize;
        if n > RECENT {
            return Err(SnapshotError);
        }
        for _ in 0..n {
            let counter = self.u32()?;
            let tag: Tag = self.take(8)?.try_into().map_err(|_| SnapshotError)?;
            if slot.window.check(counter) == Freshness::Duplicate {
                slot.prints.set(counter, fingerprint(&tag));
            }
        }
        Ok(())
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
            prints: Prints::default(),
            spans: Vec::new(),
        };
        match version.tags {
            Kept::None => {}
            Kept::Last64 => self.last_tags(&mut slot)?,
            Kept::Window => {
                let stored: Vec<u32> = slot.stored().collect();
                for counter in stored {
                    slot.prints.set(counter, self.u32()?);
                }
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
