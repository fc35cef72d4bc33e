//! A device's state as a group of gateways shares it (docs/OPERATIONS.md "Scaling out"):
//! a **head** (key epoch, window, spans, missing count: about 300 bytes) and its tag
//! fingerprints in [`PRINT_BLOCKS`] **blocks** of [`PRINT_BLOCK`] counters (512 bytes
//! each), so that a commit reads and writes the blocks its frames touch, not the whole
//! 8 KiB of fingerprints (measured: with whole states a group drained 2,096 readings/s;
//! docs/PERFORMANCE.md).
//!
//! Head: `"VGH5"`, u32 epoch, window, the snapshot's spans and missing count, CRC-32.
//! Block: `"VGP5"`, [`PRINT_BLOCK`] × u32 fingerprints (by counter modulo the window,
//! as the book keeps them), CRC-32. Every commit of a device writes its head, so a
//! compare on the head alone tells whether another gateway committed it.

use super::snapshot::{Bytes, write_tail};
use super::{ReplayBook, Slot, SnapshotError, WINDOW};
use crate::device_map::DeviceRef;

/// Counters per block of fingerprints.
pub const PRINT_BLOCK: u32 = 128;
/// Blocks of a window.
pub const PRINT_BLOCKS: u32 = WINDOW / PRINT_BLOCK;

const HEAD: &[u8; 4] = b"VGH5";
const PRINTS: &[u8; 4] = b"VGP5";

/// The block of fingerprints that holds `counter`'s.
pub fn print_block(counter: u32) -> u32 {
    (counter % WINDOW) / PRINT_BLOCK
}

fn sealed(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// `bytes` without its CRC and `magic`, if both check.
fn opened<'a>(bytes: &'a [u8], magic: &[u8; 4]) -> Result<Bytes<'a>, SnapshotError> {
    let (body, crc) = bytes
        .split_at_checked(bytes.len().saturating_sub(4))
        .ok_or(SnapshotError)?;
    if crc.len() != 4 || crc32fast::hash(body).to_be_bytes() != crc {
        return Err(SnapshotError);
    }
    match body.split_at_checked(4) {
        Some((m, rest)) if m == magic => Ok(Bytes(rest)),
        _ => Err(SnapshotError),
    }
}

impl ReplayBook {
    /// A device's head; `None` when the book does not know it.
    pub fn device_head(&self, tenant: &str, device: &str) -> Option<Vec<u8>> {
        let slot = self.slot(tenant, device)?;
        let mut out = HEAD.to_vec();
        out.extend_from_slice(&slot.epoch.to_be_bytes());
        out.extend_from_slice(&slot.window.to_bytes());
        write_tail(&mut out, slot);
        Some(sealed(out))
    }

    /// A device's block `block` of fingerprints; `None` when the book does not know it.
    pub fn device_prints(&self, tenant: &str, device: &str, block: u32) -> Option<Vec<u8>> {
        let slot = self.slot(tenant, device)?;
        let mut out = PRINTS.to_vec();
        let first = block * PRINT_BLOCK;
        for index in first..first + PRINT_BLOCK {
            out.extend_from_slice(&slot.prints.get(index).to_be_bytes());
        }
        Some(sealed(out))
    }

    /// Replaces a device's head with one from [`Self::device_head`] (`None`: forgets the
    /// device). Every fingerprint is unknown until its block is set. A damaged head
    /// changes nothing.
    pub fn set_device_head(
        &mut self,
        tenant: &str,
        device: &str,
        head: Option<&[u8]>,
    ) -> Result<(), SnapshotError> {
        let Some(bytes) = head else {
            self.windows.remove(DeviceRef::new(tenant, device));
            return Ok(());
        };
        let mut r = opened(bytes, HEAD)?;
        let mut slot: Slot = r.head()?;
        r.tail(&mut slot)?;
        if !r.0.is_empty() {
            return Err(SnapshotError);
        }
        self.windows
            .insert(DeviceRef::new(tenant, device).to_name(), slot);
        Ok(())
    }

    /// Sets a known device's block of fingerprints from [`Self::device_prints`] (`None`:
    /// none known there). A damaged block, or an unknown device, changes nothing.
    pub fn set_device_prints(
        &mut self,
        tenant: &str,
        device: &str,
        block: u32,
        prints: Option<&[u8]>,
    ) -> Result<(), SnapshotError> {
        let mut values = [0u32; PRINT_BLOCK as usize];
        if let Some(bytes) = prints {
            let mut r = opened(bytes, PRINTS)?;
            for v in &mut values {
                *v = r.u32()?;
            }
            if !r.0.is_empty() {
                return Err(SnapshotError);
            }
        }
        let slot = self
            .windows
            .get_mut(DeviceRef::new(tenant, device))
            .ok_or(SnapshotError)?;
        let first = block * PRINT_BLOCK;
        for (index, v) in (first..).zip(values) {
            slot.prints.set(index, v);
        }
        Ok(())
    }

    /// A device's key epoch, if the book knows it.
    pub fn epoch(&self, tenant: &str, device: &str) -> Option<u32> {
        self.slot(tenant, device).map(|s| s.epoch)
    }
}
