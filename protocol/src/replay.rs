//! Replay window: classifies a verified frame counter against per-device state (the
//! highest counter accepted and a 64-bit map of the ones just below it), like IPsec's
//! anti-replay window (RFC 4303 §3.4.3). Pure and serializable; the gateway persists it
//! together with the readings it protects. SPEC.md §6.

/// How many counters below the highest accepted one are still remembered.
pub const WINDOW: u32 = 64;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReplayWindow {
    /// Highest counter accepted; meaningless while `seen == 0`.
    top: u32,
    /// Bit `i` set: counter `top - i` was accepted. Zero means nothing accepted yet.
    seen: u64,
}

impl ReplayWindow {
    /// Length of [`Self::to_bytes`].
    pub const ENCODED_LEN: usize = 12;

    /// State with nothing accepted.
    pub const fn new() -> Self {
        Self { top: 0, seen: 0 }
    }

    /// Highest counter accepted so far.
    pub const fn highest(&self) -> Option<u32> {
        if self.seen == 0 { None } else { Some(self.top) }
    }

    /// Classifies `counter` without changing the state.
    pub const fn check(&self, counter: u32) -> Freshness {
        if self.seen == 0 || counter > self.top {
            return Freshness::Fresh;
        }
        let age = self.top - counter;
        if age >= WINDOW {
            Freshness::TooOld
        } else if self.seen >> age & 1 == 1 {
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
        if self.seen == 0 {
            self.top = counter;
            self.seen = 1;
        } else if counter > self.top {
            let shift = counter - self.top;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = counter;
        } else {
            self.seen |= 1 << (self.top - counter);
        }
        verdict
    }

    /// Compact persistent form: `top` (u32 BE) then `seen` (u64 BE).
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..4].copy_from_slice(&self.top.to_be_bytes());
        out[4..].copy_from_slice(&self.seen.to_be_bytes());
        out
    }

    /// Inverse of [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8; Self::ENCODED_LEN]) -> Self {
        let mut top = [0u8; 4];
        let mut seen = [0u8; 8];
        top.copy_from_slice(&bytes[..4]);
        seen.copy_from_slice(&bytes[4..]);
        Self {
            top: u32::from_be_bytes(top),
            seen: u64::from_be_bytes(seen),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Freshness::*;

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
        assert_eq!(w.check(5), TooOld);
        assert_eq!(w.check(100 - 63), Fresh);
        assert_eq!(w.check(100 - 64), TooOld);
        assert_eq!(w.highest(), Some(100));
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
