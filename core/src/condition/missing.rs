//! Missing frames (SPEC §13.9): counters a device skipped that never arrived. A stored
//! frame that moves a device's highest counter from `h` to `c` skips `c − h − 1`
//! counters, which count as missing unless the skip is a reboot's unused reservation
//! (`c` is the next multiple of [`RESERVATION`] above `h`: SPEC §6) or a counter jump of
//! [`WINDOW`] or more (no device sends that many frames unheard; counted apart). A skipped
//! counter that arrives later (stored late, or refused after its tag verified) is no
//! longer missing. Pure: the replay book says where the highest was, the device state
//! keeps the count.

use protocol::replay::WINDOW;

/// The reservation step of SPEC §6: a device persists its counter limit in steps of 64
/// and restarts after a reboot at the next multiple of 64.
pub const RESERVATION: u32 = 64;
/// Counters refused after authentication above the highest, remembered per device until a
/// stored frame passes them.
pub const AHEAD: usize = 64;

/// What storing one frame tells about missing counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gap {
    /// Nothing skipped, nothing filled.
    #[default]
    None,
    /// The highest moved from `from` past `count` counters that count as missing.
    Skipped {
        /// The highest counter before.
        from: u32,
        /// Counters skipped and counted.
        count: u32,
    },
    /// A reboot's unused reservation was skipped: nothing missing.
    Reboot,
    /// A jump of [`WINDOW`] counters or more: counted as a jump, not as missing frames.
    Jump,
    /// A counter below the highest, never seen: a late frame, no longer missing.
    Late,
}

/// The gap a fresh, durable `counter` makes against the previous `highest`.
pub fn gap(highest: Option<u32>, counter: u32) -> Gap {
    let Some(h) = highest else {
        return Gap::None;
    };
    if counter < h {
        return Gap::Late;
    }
    let skipped = counter.saturating_sub(h).saturating_sub(1);
    if skipped == 0 {
        Gap::None
    } else if skipped >= WINDOW {
        Gap::Jump
    } else if counter.is_multiple_of(RESERVATION) && skipped < RESERVATION {
        Gap::Reboot
    } else {
        Gap::Skipped {
            from: h,
            count: skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_reboots_jumps_and_late_frames() {
        assert_eq!(gap(None, 7), Gap::None);
        assert_eq!(gap(Some(6), 7), Gap::None);
        assert_eq!(gap(Some(6), 10), Gap::Skipped { from: 6, count: 3 });
        // Rebooted after counter 70: resumes at the reserved limit 128.
        assert_eq!(gap(Some(70), 128), Gap::Reboot);
        // 127 → 128 is no gap; 63 → 128 skips a whole block: missing.
        assert_eq!(gap(Some(127), 128), Gap::None);
        assert_eq!(
            gap(Some(63), 128),
            Gap::Skipped {
                from: 63,
                count: 64
            }
        );
        assert_eq!(
            gap(Some(5), 5 + WINDOW),
            Gap::Skipped {
                from: 5,
                count: WINDOW - 1
            }
        );
        assert_eq!(gap(Some(5), 6 + WINDOW), Gap::Jump);
        assert_eq!(gap(Some(0), u32::MAX), Gap::Jump, "never wraps");
        assert_eq!(gap(Some(10), 8), Gap::Late);
    }
}
