//! Sampling decisions, pure and testable: the median of a measurement window, whether a
//! reading is worth sending (report on change beyond a deadband, or a heartbeat so a quiet
//! sensor still proves it is alive), a bin's fill level from the measured distance, and
//! fire suspicion from the bin's temperature.

/// Median of `samples` (sorted in place); `None` when empty. Robust to the isolated spikes
/// that optical PM sensors and ultrasonic rangers produce.
pub fn median(samples: &mut [i32]) -> Option<i32> {
    if samples.is_empty() {
        return None;
    }
    // Insertion sort: windows are a few samples, and it keeps the generic sort (about
    // 2 KiB of flash) out of the image.
    for i in 1..samples.len() {
        let mut j = i;
        while j > 0 && samples[j - 1] > samples[j] {
            samples.swap(j - 1, j);
            j -= 1;
        }
    }
    let mid = samples.len() / 2;
    Some(if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        // Mean of the two middle values, without overflow.
        samples[mid - 1] + (samples[mid] - samples[mid - 1]) / 2
    })
}

/// Report-on-change with a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reporter {
    /// Smallest change (raw units) worth a report.
    pub deadband: i32,
    /// Seconds after which a report goes out even without change.
    pub heartbeat_s: u32,
    last: Option<(i32, u32)>,
}

impl Reporter {
    /// A reporter that has sent nothing yet.
    pub const fn new(deadband: i32, heartbeat_s: u32) -> Self {
        Self {
            deadband,
            heartbeat_s,
            last: None,
        }
    }

    /// Whether `value` measured at `now_s` should be sent; if so, it becomes the reference.
    pub fn should_send(&mut self, value: i32, now_s: u32) -> bool {
        let send = match self.last {
            None => true,
            Some((v, t)) => {
                value.abs_diff(v) > self.deadband.unsigned_abs()
                    || now_s.saturating_sub(t) >= self.heartbeat_s
            }
        };
        if send {
            self.last = Some((value, now_s));
        }
        send
    }
}

/// Fill level in percent from the distance sensor-to-surface and the bin depth
/// (sensor-to-bottom), clamped to 0–100; `None` without a valid depth.
pub const fn fill_level(distance_mm: u16, depth_mm: u16) -> Option<u8> {
    if depth_mm == 0 {
        return None;
    }
    if distance_mm >= depth_mm {
        return Some(0);
    }
    let filled = (depth_mm - distance_mm) as u32 * 100 / depth_mm as u32;
    Some(filled as u8)
}

/// Fire suspected: the bin is above `threshold` (0.1 °C), or rose by more than
/// `rise_per_min` (0.1 °C per minute) since the previous reading.
pub const fn fire_suspected(
    temp: i16,
    previous: Option<(i16, u32)>,
    now_s: u32,
    threshold: i16,
    rise_per_min: i16,
) -> bool {
    if temp >= threshold {
        return true;
    }
    match previous {
        Some((prev, at)) if now_s > at => {
            let minutes = (now_s - at).div_ceil(60) as i32;
            (temp as i32 - prev as i32) > rise_per_min as i32 * minutes
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_ignores_spikes() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [120, 118, 9999, 121, 119]), Some(120));
        assert_eq!(median(&mut [10, 20]), Some(15));
        assert_eq!(median(&mut [i32::MAX, i32::MAX - 2]), Some(i32::MAX - 1));
    }

    #[test]
    fn deadband_and_heartbeat() {
        let mut r = Reporter::new(5, 3600);
        assert!(r.should_send(100, 0), "first reading always goes");
        assert!(!r.should_send(104, 300), "inside the deadband");
        assert!(!r.should_send(96, 600));
        assert!(r.should_send(106, 900), "beyond the deadband");
        assert!(!r.should_send(106, 4400));
        assert!(r.should_send(106, 4500), "heartbeat after an hour of quiet");
    }

    #[test]
    fn fill_and_fire() {
        assert_eq!(fill_level(1200, 1200), Some(0));
        assert_eq!(
            fill_level(1500, 1200),
            Some(0),
            "beyond the bottom reads empty"
        );
        assert_eq!(fill_level(300, 1200), Some(75));
        assert_eq!(fill_level(0, 1200), Some(100));
        assert_eq!(fill_level(300, 0), None);
        assert!(fire_suspected(700, None, 0, 600, 20));
        assert!(!fire_suspected(250, Some((240, 0)), 300, 600, 20));
        assert!(
            fire_suspected(450, Some((240, 0)), 300, 600, 20),
            "+21 °C in 5 minutes"
        );
    }
}
