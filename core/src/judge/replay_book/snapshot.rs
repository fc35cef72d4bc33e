//! The replay book on disk: `"VGR5"` written, `"VGR1"` to `"VGR5"` read (the format is in
//! the parent module's note).

use super::{
    Freshness, MAGIC, MAGIC_V1, MAGIC_V2, MAGIC_V3, MAGIC_V4, Prints, RECENT, ReplayBook,
    ReplayWindow, Seconds, Slot, SnapshotError, Span, Tag, fingerprint,
};
use crate::device_map::{DeviceMap, DeviceName};

impl ReplayBook {
    /// Serializes the whole book.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(self.len() as u32).to_be_bytes());
        let mut all: Vec<_> = self.windows.iter().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (name, slot) in all {
            for s in [&name.tenant, &name.device] {
                out.push(s.len() as u8);
                out.extend_from_slice(s.as_bytes());
            }
            write_slot(&mut out, slot);
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
                missing: true,
            },
            Some(m) if m == MAGIC_V4 => Version {
                tags: Kept::Window,
                spans: true,
                missing: false,
            },
            Some(m) if m == MAGIC_V3 => Version {
                tags: Kept::Last64,
                spans: true,
                missing: false,
            },
            Some(m) if m == MAGIC_V2 => Version {
                tags: Kept::Last64,
                spans: false,
                missing: false,
            },
            Some(m) if m == MAGIC_V1 => Version {
                tags: Kept::None,
                spans: false,
                missing: false,
            },
            _ => return Err(SnapshotError),
        };
        let mut r = Bytes(&body[4..]);
        let count = r.u32()?;
        let mut windows: DeviceMap<Slot> = DeviceMap::default();
        for _ in 0..count {
            let (tenant, device) = (r.text()?, r.text()?);
            let slot = r.slot(version)?;
            windows.insert(
                DeviceName {
                    tenant: tenant.into(),
                    device: device.into(),
                },
                slot,
            );
        }
        if r.take(1).is_ok() {
            return Err(SnapshotError);
        }
        Ok(Self { windows })
    }
}

/// One device's fields of a `"VGR5"` snapshot.
fn write_slot(out: &mut Vec<u8>, slot: &Slot) {
    out.extend_from_slice(&slot.epoch.to_be_bytes());
    out.extend_from_slice(&slot.window.to_bytes());
    for counter in slot.stored() {
        out.extend_from_slice(&slot.prints.get(counter).to_be_bytes());
    }
    write_tail(out, slot);
}

/// What follows the fingerprints: the spans and the missing count.
pub(super) fn write_tail(out: &mut Vec<u8>, slot: &Slot) {
    // At most SPANS blocks plus one merged span per kind: fits a byte.
    out.push(slot.spans.len() as u8);
    for s in &slot.spans {
        out.extend_from_slice(&s.epoch.to_be_bytes());
        out.extend_from_slice(&s.block.to_be_bytes());
        out.push(s.seconds.kind);
        out.extend_from_slice(&s.seconds.first.to_be_bytes());
        out.extend_from_slice(&s.seconds.last.to_be_bytes());
    }
    out.extend_from_slice(&slot.missing.to_be_bytes());
}

/// What a snapshot's version holds besides the windows.
#[derive(Debug, Clone, Copy)]
struct Version {
    tags: Kept,
    spans: bool,
    /// The count of missing frames (`"VGR5"`).
    missing: bool,
}

/// Which tags a snapshot's version kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// None (`"VGR1"`).
    None,
    /// The last [`RECENT`] counters' whole tags (`"VGR2"`, `"VGR3"`).
    Last64,
    /// A fingerprint per stored counter of the window (`"VGR4"`, `"VGR5"`).
    Window,
}

/// A snapshot being read.
pub(super) struct Bytes<'a>(pub(super) &'a [u8]);

impl<'a> Bytes<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let (head, tail) = self.0.split_at_checked(n).ok_or(SnapshotError)?;
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32, SnapshotError> {
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

    /// A slot's epoch and window, nothing else known yet.
    pub(super) fn head(&mut self) -> Result<Slot, SnapshotError> {
        let epoch = self.u32()?;
        let w: [u8; ReplayWindow::ENCODED_LEN] = self
            .take(ReplayWindow::ENCODED_LEN)?
            .try_into()
            .map_err(|_| SnapshotError)?;
        Ok(Slot {
            epoch,
            window: ReplayWindow::from_bytes(&w),
            prints: Prints::default(),
            spans: Vec::new(),
            missing: 0,
        })
    }

    /// The spans and missing count [`write_tail`] wrote.
    pub(super) fn tail(&mut self, slot: &mut Slot) -> Result<(), SnapshotError> {
        self.tail_of(
            slot,
            Version {
                tags: Kept::Window,
                spans: true,
                missing: true,
            },
        )
    }

    /// One device's slot: epoch, window, and what `version` adds.
    fn slot(&mut self, version: Version) -> Result<Slot, SnapshotError> {
        let mut slot = self.head()?;
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
        self.tail_of(&mut slot, version)?;
        Ok(slot)
    }

    fn tail_of(&mut self, slot: &mut Slot, version: Version) -> Result<(), SnapshotError> {
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
        if version.missing {
            slot.missing = self.u32()?;
        }
        Ok(())
    }
}
