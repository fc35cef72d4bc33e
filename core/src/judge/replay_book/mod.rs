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
//! **Missing frames.** Each device's count of skipped counters that have not arrived
//! (SPEC §13.9, [`missing`]) is kept with its window, so that a group of gateways sharing
//! device state counts them once for the group (one gateway alone counts them in its
//! device state too, which also knows refused arrivals).
//!
//! Snapshot: `"VGR5"`, u32 count, then per device `u8 len, tenant, u8 len, device,
//! u32 epoch, window, one u32 fingerprint per stored counter of the window (highest
//! first; 0: none known), u8 m, m × (u32 epoch, u32 block, u8 kind, u32 first, u32 last),
//! u32 missing`, then CRC-32 of everything before. `"VGR4"` (no missing count), `"VGR3"`
//! (the last 64 tags as `u8 n, n × (u32 counter, 8-byte tag)`, then spans), `"VGR2"` (no
//! spans) and `"VGR1"` (no tags) snapshots still load.

use crate::condition::missing::{self, Gap};
use crate::device_map::{DeviceMap, DeviceName, DeviceRef, Hashed};
use crate::judge::verify::Accepted;
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
    /// Skipped counters that have not arrived (kept across key epochs, like the device).
    missing: u32,
}

/// Equal states: the same window, spans and fingerprints of the counters it holds (what
/// a slot's index still holds of counters below the window does not count).
impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.epoch == other.epoch
            && self.window == other.window
            && self.spans == other.spans
            && self.missing == other.missing
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
        let high = high.unwrap_or(0);
        (0..span)
            .map(move |i| high - i)
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
                missing: self.missing,
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
        match gap {
            Gap::Skipped { count, .. } => self.missing = self.missing.saturating_add(count),
            Gap::Late => self.missing = self.missing.saturating_sub(1),
            Gap::None | Gap::Reboot | Gap::Jump => {}
        }
        self.window.accept(counter);
        self.prints
            .set(counter, tag.as_ref().map_or(0, fingerprint));
        gap
    }
}

/// Anything that can judge a counter: the book, or the book plus a batch in progress.
pub trait Counters {
    /// What is held of a device: looked up once per frame, then asked both questions
    /// below (two lookups per question were about 2 % of a drain's instructions).
    fn device(&self, who: Hashed<'_>) -> DeviceCounters<'_>;

    /// Classifies a verified counter of `tenant`/`device` under key `epoch`.
    fn seen(&self, tenant: &str, device: &str, epoch: u32, counter: u32, tag: &Tag) -> Seen {
        let who = DeviceRef::new(tenant, device).into();
        self.device(who).seen(epoch, counter, tag)
    }

    /// Whether a fresh frame's readings could land on a point another block of counters
    /// stored (SPEC §13.2 "Stored time").
    fn collides(&self, who: (&str, &str), epoch: u32, counter: u32, seconds: &Seconds) -> bool {
        let who = DeviceRef::new(who.0, who.1).into();
        self.device(who).collides(epoch, counter, seconds)
    }
}

/// One device's counters, as [`Counters::device`] found them (none: never accepted).
#[derive(Debug, Clone, Copy)]
pub struct DeviceCounters<'a>(Option<&'a Slot>);

impl DeviceCounters<'_> {
    /// See [`Counters::seen`].
    pub fn seen(self, epoch: u32, counter: u32, tag: &Tag) -> Seen {
        self.0
            .map_or(Seen::Fresh, |s| s.seen(epoch, counter, Some(tag)))
    }

    /// See [`Counters::collides`].
    pub fn collides(self, epoch: u32, counter: u32, seconds: &Seconds) -> bool {
        self.0.is_some_and(|s| s.collides(epoch, counter, seconds))
    }
}

/// Key epoch, replay window and tag fingerprints of each device (looked up by borrowed
/// names: no allocation per message).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplayBook {
    windows: DeviceMap<Slot>,
}

/// A snapshot that does not parse or whose checksum fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("replay state snapshot is corrupt")]
pub struct SnapshotError;

const MAGIC_V1: &[u8; 4] = b"VGR1";
const MAGIC_V2: &[u8; 4] = b"VGR2";
const MAGIC_V3: &[u8; 4] = b"VGR3";
const MAGIC_V4: &[u8; 4] = b"VGR4";
const MAGIC: &[u8; 4] = b"VGR5";

impl Counters for ReplayBook {
    fn device(&self, who: Hashed<'_>) -> DeviceCounters<'_> {
        DeviceCounters(self.windows.get(who))
    }
}

impl ReplayBook {
    fn slot(&self, tenant: &str, device: &str) -> Option<&Slot> {
        self.windows.get(DeviceRef::new(tenant, device))
    }

    /// Records a durable frame (its tag and the seconds of its readings, read back from
    /// its lines: a record of the buffer at a restart). Returns what it says of missing
    /// counters.
    pub fn accept(&mut self, record: &Record) -> Gap {
        self.accept_with(record, record.seconds())
    }

    /// [`Self::accept`] with the seconds already known (a frame just judged: the judge
    /// read them from its readings, equal to what its lines give).
    pub fn accept_with(&mut self, record: &Record, seconds: Option<Seconds>) -> Gap {
        let who = DeviceRef::new(&record.tenant, &record.device).into();
        self.accept_at(who, record, seconds)
    }

    /// Records a frame the judge accepted, durable now (its names hashed already).
    pub fn note(&mut self, a: &Accepted) -> Gap {
        self.accept_at(a.names(), &a.record, a.seconds)
    }

    fn accept_at(&mut self, who: Hashed<'_>, r: &Record, seconds: Option<Seconds>) -> Gap {
        let slot = self.windows.get_or_insert_with(
            who,
            || DeviceName {
                tenant: r.tenant.clone(),
                device: r.device.clone(),
            },
            || Slot::new(r.epoch),
        );
        slot.accept(r.epoch, r.counter, r.tag, seconds)
    }

    #[cfg(test)]
    fn accept_counter(
        &mut self,
        tenant: &str,
        device: &str,
        epoch: u32,
        counter: u32,
        tag: Option<Tag>,
        seconds: Option<Seconds>,
    ) -> Gap {
        let who = DeviceRef::new(tenant, device);
        let slot = self
            .windows
            .get_or_insert_with(who, || who.to_name(), || Slot::new(epoch));
        slot.accept(epoch, counter, tag, seconds)
    }

    /// The highest counter accepted of `tenant`/`device` under key `epoch`.
    pub fn highest(&self, tenant: &str, device: &str, epoch: u32) -> Option<u32> {
        self.slot(tenant, device)
            .filter(|s| s.epoch == epoch)
            .and_then(|s| s.window.highest())
    }

    /// Skipped counters of `tenant`/`device` that have not arrived (see the module note).
    pub fn missing(&self, tenant: &str, device: &str) -> Option<u32> {
        self.slot(tenant, device).map(|s| s.missing)
    }

    /// An overlay for judging one batch.
    pub fn pending(&self) -> Pending<'_> {
        Pending {
            book: self,
            touched: DeviceMap::default(),
        }
    }

    /// Number of devices tracked.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// True when no device is tracked.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

/// The book plus the frames accepted earlier in the batch being judged. Dropped after
/// the batch; the book itself advances only once the batch is durable.
#[derive(Debug)]
pub struct Pending<'a> {
    book: &'a ReplayBook,
    /// Copies of the slots this batch changed (lookups borrow).
    touched: DeviceMap<Slot>,
}

impl Pending<'_> {
    /// Notes a frame this batch accepts (its seconds read back from its lines).
    pub fn accept(&mut self, record: &Record) {
        self.accept_with(record, record.seconds());
    }

    /// [`Self::accept`] with the seconds already known.
    pub fn accept_with(&mut self, record: &Record, seconds: Option<Seconds>) {
        let who = DeviceRef::new(&record.tenant, &record.device).into();
        self.accept_at(who, record, seconds);
    }

    /// Notes a frame the judge accepted in this batch (its names hashed already).
    pub fn note(&mut self, a: &Accepted) {
        self.accept_at(a.names(), &a.record, a.seconds);
    }

    fn accept_at(&mut self, who: Hashed<'_>, record: &Record, seconds: Option<Seconds>) {
        let (book, epoch) = (self.book, record.epoch);
        let name = || DeviceName {
            tenant: record.tenant.clone(),
            device: record.device.clone(),
        };
        let copy = || {
            book.windows
                .get(who)
                .cloned()
                .unwrap_or_else(|| Slot::new(epoch))
        };
        let slot = self.touched.get_or_insert_with(who, name, copy);
        slot.accept(epoch, record.counter, record.tag, seconds);
    }
}

impl Counters for Pending<'_> {
    fn device(&self, who: Hashed<'_>) -> DeviceCounters<'_> {
        match self.touched.get(who) {
            Some(slot) => DeviceCounters(Some(slot)),
            None => self.book.device(who),
        }
    }
}

pub mod shared;
mod snapshot;
#[cfg(test)]
mod tests;
