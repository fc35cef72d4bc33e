//! Replay window: classifies a verified frame counter against per-device state (the
//! highest counter accepted and a map of the [`WINDOW`] counters up to it), like IPsec's
//! anti-replay window (RFC 4303 §3.4.3). Pure and serializable; the gateway persists it
//! together with the readings it protects. SPEC.md §6.

/// How many counters up to the highest accepted one are remembered. Large enough that a
/// gateway's whole in-flight window (MQTT Receive Maximum, at most 1024) redelivered after
/// a crash still falls inside it and is recognised as duplicates, not as replays.
pub const WINDOW: u32 = 2048;
const WORDS: usize = (WINDOW / 64) as usize;

/// Verdict on a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Freshness {
    /// Never seen: accept, then [`ReplayWindow::accept`].
    Fresh,
    /// Inside the window and already accepted: a redelivery or a replay.
    Duplicate,
    /// Below the window: cannot be told apart from a replay.
    TooOld,
}

/// Per-device (per key epoch) replay state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ReplayWindow {
    /// Highest counter accepted; meaningless while nothing was accepted.
    top: u32,
    /// A ring: bit `c % WINDOW` (word `/ 64`, bit `% 64`) set means counter `c` of the
    /// window, `top - WINDOW < c <= top`, was accepted; the bits of counters below the
    /// window are cleared as the top passes them, so a step up touches one bit instead of
    /// shifting the whole map. Nothing accepted yet while the top's own bit is clear.
    seen: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// Length of [`Self::to_bytes`].
    pub const ENCODED_LEN: usize = 4 + 8 * WORDS;

    /// State with nothing accepted.
    pub const fn new() -> Self {
        Self {
            top: 0,
            seen: [0; WORDS],
        }
    }

    const fn slot(counter: u32) -> (usize, u32) {
        let i = counter % WINDOW;
        ((i / 64) as usize, i % 64)
    }

    const fn has(&self, counter: u32) -> bool {
        let (word, bit) = Self::slot(counter);
        self.seen[word] >> bit & 1 == 1
    }

    const fn set(&mut self, counter: u32, on: bool) {
        let (word, bit) = Self::slot(counter);
        if on {
            self.seen[word] |= 1 << bit;
        } else {
            self.seen[word] &= !(1 << bit);
        }
    }

    const fn empty(&self) -> bool {
        !self.has(self.top)
    }

    /// Highest counter accepted so far.
    pub const fn highest(&self) -> Option<u32> {
        if self.empty() { None } else { Some(self.top) }
    }

    /// Classifies `counter` without changing the state.
    pub const fn check(&self, counter: u32) -> Freshness {
        if self.empty() || counter > self.top {
            return Freshness::Fresh;
        }
        let age = self.top - counter;
        if age >= WINDOW {
            Freshness::TooOld
        } else if self.has(counter) {
            Freshness::Duplicate
        } else {
            Freshness::Fresh
        }
    }

    /// Records `counter` as accepted. Returns the verdict it had; the state only changes
    /// when it was [`Freshness::Fresh`].
    pub fn accept(&mut self, counter: u32) -> Freshness {
        let verdict = self.check(counter);
        if verdict != Freshness::Fresh {
            return verdict;
        }
        if self.empty() {
            self.top = counter;
        } else if counter > self.top {
            self.raise(counter);
        }
        self.set(counter, true);
        verdict
    }

    /// Moves the top up to `counter`: the counters that fall below the window leave it.
    fn raise(&mut self, counter: u32) {
        if counter - self.top >= WINDOW {
            self.seen = [0; WORDS];
        } else {
            // Counter `c` shares its bit with `c - WINDOW`, the one leaving.
            for c in self.top + 1..=counter {
                self.set(c, false);
            }
        }
        self.top = counter;
    }

    /// Compact persistent form: `top` (u32 BE) then the map by age (u64 BE words, age 0
    /// first: bit `age` set means counter `top - age` was accepted). The same bytes as
    /// when the map itself was kept by age, so saved states read back unchanged.
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut by_age = [0u64; WORDS];
        for (word, &bits) in self.seen.iter().enumerate() {
            let mut bits = bits;
            while bits != 0 {
                let index = word as u32 * 64 + bits.trailing_zeros();
                bits &= bits - 1;
                // The counter in the window with this bit is `top - age`.
                let age = self.top.wrapping_sub(index) % WINDOW;
                by_age[(age / 64) as usize] |= 1 << (age % 64);
            }
        }
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..4].copy_from_slice(&self.top.to_be_bytes());
        for (i, w) in by_age.iter().enumerate() {
            out[4 + 8 * i..12 + 8 * i].copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// Inverse of [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8; Self::ENCODED_LEN]) -> Self {
        let mut w = Self::new();
        w.top = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        for word in 0..WORDS {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[4 + 8 * word..12 + 8 * word]);
            let mut bits = u64::from_be_bytes(b);
            while bits != 0 {
                let age = word as u32 * 64 + bits.trailing_zeros();
                bits &= bits - 1;
                w.set(w.top.wrapping_sub(age), true);
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Freshness::*;
    extern crate std;

    #[test]
    fn in_order_reorder_duplicates_and_too_old() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.highest(), None);
        assert_eq!(w.accept(0), Fresh, "counter 0 is a valid first counter");
        assert_eq!(w.accept(0), Duplicate);
        assert_eq!(w.accept(5), Fresh);
        assert_eq!(w.accept(3), Fresh, "late but inside the window");
        assert_eq!(w.accept(3), Duplicate);
        assert_eq!(w.check(4), Fresh);
        assert_eq!(w.accept(100), Fresh);
        assert_eq!(w.check(5), Duplicate, "age 95 is inside the window");
        assert_eq!(w.check(6), Fresh);
        w.accept(100 + WINDOW - 1);
        assert_eq!(w.check(100), Duplicate, "age WINDOW - 1 still remembered");
        assert_eq!(w.check(101), Fresh);
        assert_eq!(w.check(99), TooOld);
        assert_eq!(w.highest(), Some(100 + WINDOW - 1));
    }

    proptest::proptest! {
        /// Against a model that remembers every accepted counter.
        #[test]
        fn matches_a_set_model(ops in proptest::collection::vec((0u32..6000, proptest::bool::ANY), 1..400)) {
            let mut w = ReplayWindow::new();
            let mut accepted = std::collections::BTreeSet::new();
            for (counter, do_accept) in ops {
                let highest = accepted.last().copied();
                let want = match highest {
                    Some(h) if counter <= h && h - counter >= WINDOW => TooOld,
                    _ if accepted.contains(&counter) => Duplicate,
                    _ => Fresh,
                };
                proptest::prop_assert_eq!(w.check(counter), want, "counter {}", counter);
                if do_accept && want == Fresh {
                    w.accept(counter);
                    accepted.insert(counter);
                }
                proptest::prop_assert_eq!(w.highest(), accepted.last().copied());
                proptest::prop_assert_eq!(ReplayWindow::from_bytes(&w.to_bytes()), w);
            }
        }
    }

    #[test]
    fn big_jump_clears_the_map_and_extremes_work() {
        let mut w = ReplayWindow::new();
        w.accept(10);
        w.accept(10 + WINDOW);
        assert_eq!(w.check(10), TooOld);
        assert_eq!(w.check(11), Fresh);
        w.accept(u32::MAX);
        assert_eq!(w.check(u32::MAX), Duplicate);
        assert_eq!(w.check(u32::MAX - 1), Fresh);
    }

    #[test]
    fn the_bytes_keep_the_map_by_age() {
        let mut w = ReplayWindow::new();
        for c in [3000, 2999, 2990, 2936, 1000] {
            w.accept(c);
        }
        let bytes = w.to_bytes();
        assert_eq!(bytes[..4], 3000u32.to_be_bytes());
        let word = |i: usize| u64::from_be_bytes(bytes[4 + 8 * i..12 + 8 * i].try_into().unwrap());
        // Ages 0, 1, 10 in word 0; age 64 is bit 0 of word 1; age 2000 in word 31.
        assert_eq!(word(0), 1 | 1 << 1 | 1 << 10);
        assert_eq!(word(1), 1);
        assert_eq!(word(31), 1 << (2000 - 31 * 64));
        assert!((2..31).all(|i| word(i) == 0));
        assert_eq!(ReplayWindow::from_bytes(&bytes), w);
    }

    #[test]
    fn bytes_round_trip() {
        let mut w = ReplayWindow::new();
        for c in [7, 9, 12, 40] {
            w.accept(c);
        }
        let back = ReplayWindow::from_bytes(&w.to_bytes());
        assert_eq!(back, w);
        assert_eq!(back.check(9), Duplicate);
    }
}
