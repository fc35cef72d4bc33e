//! What a group member's commit reads and writes in the group's store: each device's
//! head and the blocks of fingerprints its frames' counters fall in
//! ([`vigie_core::judge::replay_book::shared`]), within one transaction's bound.

use crate::store::group::{Etcd, GroupError};
use vigie_core::FastMap;
use vigie_core::judge::replay_book::ReplayBook;
use vigie_core::judge::replay_book::shared::print_block;
use vigie_core::record::Record;

/// The keys a set of frames reads: their devices' heads and their blocks.
#[derive(Debug)]
pub(super) struct Keys {
    /// Most keys (`group.max_txn_ops`).
    max: usize,
    /// Tenant and device of each head.
    devices: Vec<(String, String)>,
    /// Index into `devices` by tenant then device (nested so a lookup borrows; a batch
    /// has up to 2,048 messages).
    index: FastMap<String, FastMap<String, usize>>,
    /// Blocks: index into `devices`, key epoch, block.
    blocks: Vec<(usize, u32, u32)>,
}

/// What a claim writes: heads compared at the revision they were read at, and values.
pub(super) type Claim = (Vec<(String, i64)>, Vec<(String, Vec<u8>)>);

impl Keys {
    /// No key yet, at most `max` (a transaction's operations).
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            devices: Vec::new(),
            index: FastMap::default(),
            blocks: Vec::new(),
        }
    }

    /// Adds the keys of a frame of `tenant`/`device` under key `epoch` with `counter`
    /// (its device's head only without a counter) unless a transaction could no longer
    /// read or write them all: false then, and nothing added.
    pub(super) fn admit(
        &mut self,
        tenant: &str,
        device: &str,
        epoch: u32,
        counter: Option<u32>,
    ) -> bool {
        let at = self.position(tenant, device);
        let block = counter.map(|c| (epoch, print_block(c)));
        let new_block = |at: usize| block.filter(|&(e, b)| !self.blocks.contains(&(at, e, b)));
        let more = usize::from(at.is_none())
            + usize::from(at.map_or(block.is_some(), |i| new_block(i).is_some()));
        if self.devices.len() + self.blocks.len() + more > self.max {
            return false;
        }
        let at = at.unwrap_or_else(|| {
            let devices = self.index.entry(tenant.to_string()).or_default();
            devices.insert(device.to_string(), self.devices.len());
            self.devices.push((tenant.to_string(), device.to_string()));
            self.devices.len() - 1
        });
        if let Some((e, b)) = new_block(at) {
            self.blocks.push((at, e, b));
        }
        true
    }

    fn position(&self, tenant: &str, device: &str) -> Option<usize> {
        self.index.get(tenant)?.get(device).copied()
    }

    /// How many keys are to be read.
    pub(super) fn len(&self) -> usize {
        self.devices.len() + self.blocks.len()
    }

    /// Whether no key is to be read.
    pub(super) fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    fn names(&self, store: &Etcd) -> Vec<String> {
        let heads = self.devices.iter().map(|(t, d)| store.head_key(t, d));
        let blocks = self.blocks.iter().map(|&(i, e, b)| {
            let (t, d) = &self.devices[i];
            store.block_key(t, d, e, b)
        });
        heads.chain(blocks).collect()
    }

    /// Reads every key into `book` (heads, then the blocks of each head's key epoch);
    /// the heads' revisions, in the order of the devices.
    pub(super) fn load(
        &self,
        store: &mut Etcd,
        book: &mut ReplayBook,
    ) -> Result<Vec<i64>, GroupError> {
        let held = store.fetch(&self.names(store))?;
        let (heads, blocks) = held.split_at(self.devices.len());
        let corrupt = || GroupError::Unreadable("a device's state is corrupt");
        for ((tenant, device), h) in self.devices.iter().zip(heads) {
            book.set_device_head(tenant, device, h.state.as_deref())
                .map_err(|_| corrupt())?;
        }
        for (&(i, epoch, block), h) in self.blocks.iter().zip(blocks) {
            let (tenant, device) = &self.devices[i];
            if book.epoch(tenant, device) == Some(epoch) {
                book.set_device_prints(tenant, device, block, h.state.as_deref())
                    .map_err(|_| corrupt())?;
            }
        }
        Ok(heads.iter().map(|h| h.revision).collect())
    }

    /// The writes that claim `accepted` (records already applied to `book`): each of
    /// their devices' head, compared at its revision (`revisions` from [`Self::load`]),
    /// and the blocks of their counters.
    pub(super) fn claim<'a>(
        &self,
        store: &Etcd,
        revisions: &[i64],
        book: &ReplayBook,
        accepted: impl Iterator<Item = &'a Record>,
    ) -> Claim {
        let (mut devices, mut blocks): (Vec<usize>, Vec<(usize, u32, u32)>) = Default::default();
        for r in accepted {
            let Some(i) = self.position(&r.tenant, &r.device) else {
                continue;
            };
            if !devices.contains(&i) {
                devices.push(i);
            }
            let block = (i, r.epoch, print_block(r.counter));
            if !blocks.contains(&block) {
                blocks.push(block);
            }
        }
        let head = |i: usize| store.head_key(&self.devices[i].0, &self.devices[i].1);
        let compare = devices.iter().map(|&i| (head(i), revisions[i])).collect();
        let heads = devices.iter().filter_map(|&i| {
            let (t, d) = &self.devices[i];
            Some((head(i), book.device_head(t, d)?))
        });
        let prints = blocks.iter().filter_map(|&(i, epoch, block)| {
            let (t, d) = &self.devices[i];
            Some((
                store.block_key(t, d, epoch, block),
                book.device_prints(t, d, block)?,
            ))
        });
        (compare, heads.chain(prints).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn a_transaction_reads_each_head_and_block_once_and_never_more_than_its_bound() {
        let mut keys = Keys::new(5);
        // Device a: its head and block 0 (counters 0–127), once however many frames.
        for c in [0, 1, 127] {
            assert!(keys.admit("t", "a", 1, Some(c)));
        }
        assert_eq!((keys.devices.len(), keys.blocks.len()), (1, 1));
        // Counter 128 is in block 1; under another key epoch, block 0 is another key.
        assert!(keys.admit("t", "a", 1, Some(128)));
        assert!(keys.admit("t", "a", 2, Some(0)));
        assert_eq!(keys.blocks.len(), 3);
        // Full: a new device (head and block) is refused whole, a known key still fits.
        assert!(!keys.admit("t", "b", 1, Some(0)));
        assert!(keys.admit("t", "a", 1, Some(5)));
        assert_eq!((keys.devices.len(), keys.blocks.len()), (1, 3));
        // A head alone (a frame whose counter cannot be read) takes one key: the last.
        assert!(keys.admit("t", "b", 1, None));
        assert!(!keys.admit("t", "c", 1, None));
        assert_eq!(keys.devices.len() + keys.blocks.len(), 5);
    }
}
