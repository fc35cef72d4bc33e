//! Replay windows of every device (per key epoch), and their snapshot format.
//!
//! The book only ever holds counters of frames that are durable (the ingest worker accepts
//! them after the buffer's fsync), so a snapshot never claims a frame that a crash lost.
//!
//! Snapshot: `"VGR1"`, u32 count, then per device `u8 len, tenant, u8 len, device,
//! u32 epoch, 12-byte window`, then CRC-32 of everything before.

use protocol::{Freshness, ReplayWindow};
use std::collections::HashMap;

/// Key epoch and replay window of each device, by tenant then device (nested so a lookup
/// borrows `&str`: no allocation per message).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplayBook {
    windows: HashMap<String, HashMap<String, (u32, ReplayWindow)>>,
}

/// A snapshot that does not parse or whose checksum fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("replay state snapshot is corrupt")]
pub struct SnapshotError;

const MAGIC: &[u8; 4] = b"VGR1";

impl ReplayBook {
    /// Classifies a verified counter. A newer epoch starts afresh; an older one is too old.
    pub fn check(&self, tenant: &str, device: &str, epoch: u32, counter: u32) -> Freshness {
        match self.windows.get(tenant).and_then(|d| d.get(device)) {
            None => Freshness::Fresh,
            Some((e, _)) if *e < epoch => Freshness::Fresh,
            Some((e, _)) if *e > epoch => Freshness::TooOld,
            Some((_, w)) => w.check(counter),
        }
    }

    /// Records a durable counter. Returns how many counters were skipped between the
    /// previous highest and this one (frames the device sent that never arrived).
    pub fn accept(&mut self, tenant: &str, device: &str, epoch: u32, counter: u32) -> u32 {
        let devices = match self.windows.get_mut(tenant) {
            Some(d) => d,
            None => self.windows.entry(tenant.to_string()).or_default(),
        };
        let slot = match devices.get_mut(device) {
            Some(slot) => slot,
            None => devices
                .entry(device.to_string())
                .or_insert((epoch, ReplayWindow::new())),
        };
        if slot.0 < epoch {
            *slot = (epoch, ReplayWindow::new());
        }
        if slot.0 > epoch {
            return 0;
        }
        let gap = match slot.1.highest() {
            Some(h) if counter > h => counter - h - 1,
            _ => 0,
        };
        slot.1.accept(counter);
        gap
    }

    /// Number of devices tracked.
    pub fn len(&self) -> usize {
        self.windows.values().map(HashMap::len).sum()
    }

    /// True when no device is tracked.
    pub fn is_empty(&self) -> bool {
        self.windows.values().all(HashMap::is_empty)
    }

    /// Serializes the whole book.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(self.len() as u32).to_be_bytes());
        let mut all: Vec<_> = self
            .windows
            .iter()
            .flat_map(|(t, d)| d.iter().map(move |(id, w)| (t, id, w)))
            .collect();
        all.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (tenant, device, (epoch, window)) in all {
            for s in [tenant, device] {
                out.push(s.len() as u8);
                out.extend_from_slice(s.as_bytes());
            }
            out.extend_from_slice(&epoch.to_be_bytes());
            out.extend_from_slice(&window.to_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a snapshot.
    pub fn from_snapshot(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let (body, crc) = bytes
            .split_at_checked(bytes.len().saturating_sub(4))
            .ok_or(SnapshotError)?;
        if crc.len() != 4 || crc32fast::hash(body).to_be_bytes() != crc || !body.starts_with(MAGIC)
        {
            return Err(SnapshotError);
        }
        let mut rest = &body[4..];
        let mut take = |n: usize| -> Result<Vec<u8>, SnapshotError> {
            if rest.len() < n {
                return Err(SnapshotError);
            }
            let (h, t) = rest.split_at(n);
            rest = t;
            Ok(h.to_vec())
        };
        let count = u32::from_be_bytes(take(4)?.try_into().map_err(|_| SnapshotError)?);
        let mut windows: HashMap<String, HashMap<String, (u32, ReplayWindow)>> = HashMap::new();
        for _ in 0..count {
            let mut text = || -> Result<String, SnapshotError> {
                let len = take(1)?[0] as usize;
                String::from_utf8(take(len)?).map_err(|_| SnapshotError)
            };
            let (tenant, device) = (text()?, text()?);
            let epoch = u32::from_be_bytes(take(4)?.try_into().map_err(|_| SnapshotError)?);
            let w: [u8; ReplayWindow::ENCODED_LEN] = take(ReplayWindow::ENCODED_LEN)?
                .try_into()
                .map_err(|_| SnapshotError)?;
            let slot = (epoch, ReplayWindow::from_bytes(&w));
            windows.entry(tenant).or_default().insert(device, slot);
        }
        if take(1).is_ok() {
            return Err(SnapshotError);
        }
        Ok(Self { windows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_gaps_and_snapshot() {
        let mut b = ReplayBook::default();
        assert_eq!(b.accept("t", "d", 1, 10), 0);
        assert_eq!(b.accept("t", "d", 1, 14), 3, "11, 12, 13 missing");
        assert_eq!(b.check("t", "d", 1, 14), Freshness::Duplicate);
        assert_eq!(b.check("t", "d", 1, 12), Freshness::Fresh);
        assert_eq!(
            b.check("t", "d", 2, 0),
            Freshness::Fresh,
            "new epoch restarts"
        );
        assert_eq!(
            b.check("t", "d", 0, 99),
            Freshness::TooOld,
            "old epoch refused"
        );
        assert_eq!(b.check("t", "other", 1, 14), Freshness::Fresh);
        b.accept("u", "d", 3, 0);
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
        b.accept("t", "d", 2, 5);
        assert_eq!(b.check("t", "d", 1, 20), Freshness::TooOld);
    }
}
