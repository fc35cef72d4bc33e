//! The frames refused lately, by fingerprint, so that a board resending the same refused
//! bytes (an old blob's key after a rotation: never acknowledged, so resent for ever) is
//! counted each time but quarantined once, instead of filling the quarantine with copies
//! of itself (measured: 8,255 entries in 80 s for one board). Bounded: the oldest
//! fingerprint goes first.

use std::collections::{HashSet, VecDeque};

/// How many fingerprints are kept.
pub const CAPACITY: usize = 8192;

/// Fingerprints of recently refused frames.
#[derive(Debug, Default)]
pub struct Recent {
    hasher: ahash::RandomState,
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Recent {
    /// True the first time `topic` and `payload` are seen (within the last [`CAPACITY`]).
    pub fn first_time(&mut self, topic: &str, payload: &[u8]) -> bool {
        let key = self.hasher.hash_one((topic, payload));
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }

    /// Forgets `topic` and `payload`: the next [`Self::first_time`] says true (a group of
    /// gateways decided this one quarantines it).
    pub fn forget(&mut self, topic: &str, payload: &[u8]) {
        let key = self.hasher.hash_one((topic, payload));
        self.set.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_once_then_forgotten_past_the_bound() {
        let mut r = Recent::default();
        assert!(r.first_time("t", b"frame"));
        assert!(!r.first_time("t", b"frame"));
        assert!(r.first_time("u", b"frame"), "another topic");
        assert!(r.first_time("t", b"other"));
        for i in 0..CAPACITY as u32 {
            r.first_time("t", &i.to_be_bytes());
        }
        assert!(r.first_time("t", b"frame"), "forgotten, bounded");
        assert!(r.set.len() <= CAPACITY && r.order.len() <= CAPACITY);
        r.forget("t", b"frame");
        assert!(r.first_time("t", b"frame"), "forgotten on request");
    }
}
