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
//! Snapshot: `"VGR2"`, u32 count, then per device `u8 len, tenant, u8 len, device,
//! u32 epoch, window, u8 n, n × (u32 counter, 8-byte tag)`, then CRC-32 of everything
//! before. `"VGR1"` snapshots (no tags) still load.

use super::FastMap;
use super::missing::{self, Gap};
use protocol::{Freshness, ReplayWindow};

/// How many recent (counter, tag) pairs are kept per device.
pub const RECENT: usize = 64;

/// A frame's authentication tag: what tells two frames under one counter apart.
pub type Tag = [u8; 8];

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

    /// Records a durable counter; returns what it says of missing counters.
    fn accept(&mut self, epoch: u32, counter: u32, tag: Option<Tag>) -> Gap {
        if self.epoch < epoch {
            *self = Self::new(epoch);
        }
        if self.epoch > epoch {
            return Gap::None;
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
const MAGIC: &[u8; 4] = b"VGR2";

impl Counters for ReplayBook {
    fn seen(&self, tenant: &str, device: &str, epoch: u32, counter: u32, tag: &Tag) -> Seen {
        match self.slot(tenant, device) {
            None => Seen::Fresh,
            Some(s) => s.seen(epoch, counter, Some(tag)),
        }
    }
}

impl ReplayBook {
    fn slot(&self, tenant: &str, device: &str) -> Option<&Slot> {
        self.windows.get(tenant).and_then(|d| d.get(device))
    }

    /// Records a durable counter (with its frame's tag when known). Returns what it says
    /// of missing counters.
    pub fn accept(
        &mut self,
        tenant: &str,
        device: &str,
        epoch: u32,
        counter: u32,
        tag: Option<Tag>,
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
        slot.accept(epoch, counter, tag)
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
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a snapshot (this version's or the one before, which has no tags).
    pub fn from_snapshot(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let (body, crc) = bytes
            .split_at_checked(bytes.len().saturating_sub(4))
            .ok_or(SnapshotError)?;
        if crc.len() != 4 || crc32fast::hash(body).to_be_bytes() != crc {
            return Err(SnapshotError);
        }
        let with_tags = match body.get(..4) {
            Some(m) if m == MAGIC => true,
            Some(m) if m == MAGIC_V1 => false,
            _ => return Err(SnapshotError),
        };
        let mut rest = &body[4..];
        let mut take = |n: usize| -> Result<&[u8], SnapshotError> {
            let (h, t) = rest.split_at_checked(n).ok_or(SnapshotError)?;
            rest = t;
            Ok(h)
        };
        let u32_of = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let count = u32_of(take(4)?);
        let mut windows: FastMap<String, FastMap<String, Slot>> = FastMap::default();
        for _ in 0..count {
            let mut text = || -> Result<String, SnapshotError> {
                let len = take(1)?[0] as usize;
                String::from_utf8(take(len)?.to_vec()).map_err(|_| SnapshotError)
            };
            let (tenant, device) = (text()?, text()?);
            let epoch = u32_of(take(4)?);
            let w: [u8; ReplayWindow::ENCODED_LEN] = take(ReplayWindow::ENCODED_LEN)?
                .try_into()
                .map_err(|_| SnapshotError)?;
            let mut slot = Slot {
                epoch,
                window: ReplayWindow::from_bytes(&w),
                recent: Recent::default(),
            };
            if with_tags {
                let n = take(1)?[0] as usize;
                if n > RECENT {
                    return Err(SnapshotError);
                }
                for _ in 0..n {
                    let counter = u32_of(take(4)?);
                    let tag: Tag = take(8)?.try_into().map_err(|_| SnapshotError)?;
                    slot.recent.push((counter, tag));
                }
            }
            windows.entry(tenant).or_default().insert(device, slot);
        }
        if take(1).is_ok() {
            return Err(SnapshotError);
        }
        Ok(Self { windows })
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
    pub fn accept(&mut self, tenant: &str, device: &str, epoch: u32, counter: u32, tag: Tag) {
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
        slot.accept(epoch, counter, Some(tag));
    }
}

impl Counters for Pending<'_> {
    fn seen(&self, tenant: &str, device: &str, epoch: u32, counter: u32, tag: &Tag) -> Seen {
        match self.touched.get(tenant).and_then(|d| d.get(device)) {
            Some(slot) => slot.seen(epoch, counter, Some(tag)),
            None => self.book.seen(tenant, device, epoch, counter, tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: Tag = [1; 8];
    const T2: Tag = [2; 8];

    #[test]
    fn epochs_gaps_and_snapshot() {
        let mut b = ReplayBook::default();
        assert_eq!(b.accept("t", "d", 1, 10, Some(T1)), Gap::None);
        assert_eq!(
            b.accept("t", "d", 1, 14, Some(T2)),
            Gap::Skipped { from: 10, count: 3 },
            "11, 12, 13 missing"
        );
        assert_eq!(b.highest("t", "d", 1), Some(14));
        assert_eq!(b.accept("t", "d", 1, 11, None), Gap::Late);
        assert_eq!(
            b.accept("t", "d", 1, 11, None),
            Gap::None,
            "a duplicate fills nothing"
        );
        assert_eq!(b.seen("t", "d", 1, 14, &T2), Seen::Duplicate);
        assert_eq!(b.seen("t", "d", 1, 14, &T1), Seen::Reused);
        assert_eq!(b.seen("t", "d", 1, 12, &T1), Seen::Fresh);
        assert_eq!(
            b.seen("t", "d", 2, 0, &T1),
            Seen::Fresh,
            "new epoch restarts"
        );
        assert_eq!(
            b.seen("t", "d", 0, 99, &T1),
            Seen::TooOld,
            "old epoch refused"
        );
        assert_eq!(b.seen("t", "other", 1, 14, &T1), Seen::Fresh);
        b.accept("u", "d", 3, 0, None);
        let snap = b.snapshot();
        assert_eq!(ReplayBook::from_snapshot(&snap), Ok(b.clone()));
        for i in 0..snap.len() {
            let mut bad = snap.clone();
            bad[i] ^= 1;
            assert_eq!(
                ReplayBook::from_snapshot(&bad),
                Err(SnapshotError),
                "byte {i}"
            );
        }
        assert_eq!(ReplayBook::from_snapshot(&snap[..3]), Err(SnapshotError));
        b.accept("t", "d", 2, 5, None);
        assert_eq!(b.seen("t", "d", 1, 20, &T1), Seen::TooOld);
    }

    #[test]
    fn only_the_last_counters_keep_their_tag() {
        let mut b = ReplayBook::default();
        for c in 0..(RECENT as u32 + 10) {
            b.accept("t", "d", 1, c, Some([c as u8; 8]));
        }
        assert_eq!(
            b.seen("t", "d", 1, 3, &T2),
            Seen::Duplicate,
            "tag forgotten"
        );
        let last = RECENT as u32 + 9;
        assert_eq!(b.seen("t", "d", 1, last, &T2), Seen::Reused);
    }

    #[test]
    fn a_pending_batch_sees_its_own_frames_and_leaves_the_book_alone() {
        let mut b = ReplayBook::default();
        b.accept("t", "d", 1, 5000, Some(T1));
        let mut p = b.pending();
        assert_eq!(p.seen("t", "d", 1, 5001, &T1), Seen::Fresh);
        p.accept("t", "d", 1, 5001, T1);
        assert_eq!(p.seen("t", "d", 1, 5001, &T1), Seen::Duplicate);
        assert_eq!(p.seen("t", "d", 1, 5001, &T2), Seen::Reused);
        p.accept("t", "d", 1, 8000, T2);
        assert_eq!(
            p.seen("t", "d", 1, 5002, &T2),
            Seen::TooOld,
            "below the moved window"
        );
        drop(p);
        assert_eq!(
            b.seen("t", "d", 1, 5001, &T1),
            Seen::Fresh,
            "book untouched"
        );
    }

    #[test]
    fn version_1_snapshots_still_load() {
        let mut b = ReplayBook::default();
        b.accept("t", "d", 1, 7, None);
        let mut v1 = MAGIC_V1.to_vec();
        v1.extend_from_slice(&1u32.to_be_bytes());
        for s in ["t", "d"] {
            v1.push(1);
            v1.extend_from_slice(s.as_bytes());
        }
        v1.extend_from_slice(&1u32.to_be_bytes());
        let mut w = ReplayWindow::new();
        w.accept(7);
        v1.extend_from_slice(&w.to_bytes());
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(ReplayBook::from_snapshot(&v1), Ok(b));
    }
}
