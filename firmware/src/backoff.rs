//! Reconnect back-off: exponential from `min_s` to `max_s`, with jitter so a district of
//! nodes that lost the network together does not reconnect in one burst.

/// Back-off state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min_s: u32,
    max_s: u32,
    current_s: u32,
}

impl Backoff {
    /// Starts at `min_s` (at least 1), doubles up to `max_s`.
    pub const fn new(min_s: u32, max_s: u32) -> Self {
        let min_s = if min_s == 0 { 1 } else { min_s };
        Self {
            min_s,
            max_s: if max_s < min_s { min_s } else { max_s },
            current_s: min_s,
        }
    }

    /// Seconds to wait before the next attempt: the current step minus up to half of it,
    /// chosen by `random`; the step then doubles.
    pub fn next_delay_s(&mut self, random: u32) -> u32 {
        let step = self.current_s;
        self.current_s = step.saturating_mul(2).min(self.max_s);
        step - random % (step / 2 + 1)
    }

    /// A connection worked: start again from the minimum.
    pub fn reset(&mut self) {
        self.current_s = self.min_s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_bounded_jitter_and_resets() {
        let mut b = Backoff::new(5, 300);
        let steps: [u32; 8] = core::array::from_fn(|_| b.next_delay_s(0));
        assert_eq!(steps, [5, 10, 20, 40, 80, 160, 300, 300]);
        for r in [1, 7, 1_000_003, u32::MAX] {
            let d = b.next_delay_s(r);
            assert!((150..=300).contains(&d), "{d}");
        }
        b.reset();
        assert_eq!(b.next_delay_s(0), 5);
        assert_eq!(Backoff::new(0, 0).next_delay_s(9), 1);
    }
}
