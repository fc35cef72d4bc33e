//! Replay window: classifies a verified frame counter against per-device state (the
//! highest counter accepted and a 64-bit map of the ones just below it), like IPsec's
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
    /// Bit `age` (word `age / 64`, bit `age % 64`) set: counter `top - age` was accepted.
    /// All zero means nothing accepted yet (once something is, bit 0 is always set).
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

    const fn empty(&self) -> bool {
        self.seen[0] & 1 == 0
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
        } else if self.seen[(age / 64) as usize] >> (age % 64) & 1 == 1 {
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
            self.age_by(counter - self.top);
            self.top = counter;
        }
        let age = self.top - counter;
        self.seen[(age / 64) as usize] |= 1 << (age % 64);
        verdict
    }

    /// Moves every remembered counter `shift` places older (the top moved up).
    fn age_by(&mut self, shift: u32) {
        if shift >= WINDOW {
            self.seen = [0; WORDS];
            return;
        }
        let (words, bits) = ((shift / 64) as usize, shift % 64);
        for i in (0..WORDS).rev() {
            let from = |j: usize| if j < WORDS { self.seen[j] } else { 0 };
            let hi = if i >= words {
                from(i - words) << bits
            } else {
                0
            };
            let lo = if bits > 0 && i > words {
                from(i - words - 1) >> (64 - bits)
            } else {
                0
            };
            self.seen[i] = hi | lo;
        }
    }

    /// Compact persistent form: `top` (u32 BE) then the bitmap words (u64 BE, age 0 first).
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..4].copy_from_slice(&self.top.to_be_bytes());
        for (i, w) in self.seen.iter().enumerate() {
            out[4 + 8 * i..12 + 8 * i].copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// Inverse of [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8; Self::ENCODED_LEN]) -> Self {
        let mut w = Self::new();
        w.top = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        for (i, word) in w.seen.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[4 + 8 * i..12 + 8 * i]);
            *word = u64::from_be_bytes(b);
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
