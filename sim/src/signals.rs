//! What the simulated sensors measure: deterministic functions of (virtual) time and a
//! per-device seed, shaped like the real thing.
//!
//! - PM2.5: a clean background, traffic peaks at 8:00 and 18:00 on weekdays, and a
//!   pollution episode (about one day in nine, different per device) that triples it.
//! - Temperature: a daily cycle (minimum near 5:00, maximum near 15:00); humidity moves
//!   against it; pressure drifts over a few days.
//! - Bins fill at their own pace and are emptied on their collection round every three days.
//! - Faults: each sensor fails for about one hour in 500.

/// Seconds in a day.
const DAY: f64 = 86_400.0;

/// splitmix64: a cheap, well-mixed hash for per-device, per-hour variation.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A number in [0, 1) from `seed` and `salt`.
fn unit(seed: u64, salt: u64) -> f64 {
    (mix(seed ^ mix(salt)) >> 11) as f64 / (1u64 << 53) as f64
}

fn hour_of_day(t: u32) -> f64 {
    // Local time in France, close enough: UTC+1.
    ((f64::from(t) + 3600.0) % DAY) / 3600.0
}

fn bump(x: f64, centre: f64, width: f64) -> f64 {
    (-((x - centre) / width).powi(2)).exp()
}

/// PM2.5 and PM10, µg/m³.
pub fn pm(seed: u64, t: u32) -> (f64, f64) {
    let h = hour_of_day(t);
    let day = u64::from(t) / 86_400;
    let weekday = (day + 3) % 7 < 5; // 1970-01-01 was a Thursday
    let traffic = if weekday {
        14.0 * bump(h, 8.0, 1.2) + 11.0 * bump(h, 18.0, 1.5)
    } else {
        4.0 * bump(h, 13.0, 3.0)
    };
    let episode = if mix(seed ^ day).is_multiple_of(9) {
        3.0
    } else {
        1.0
    };
    let noise = 0.85 + 0.3 * unit(seed, u64::from(t / 60));
    let pm25 = (6.0 + 3.0 * unit(seed, 1) + traffic) * episode * noise;
    (pm25, pm25 * 1.6 + 3.0)
}

/// Temperature °C, relative humidity %, pressure hPa.
pub fn climate(seed: u64, t: u32) -> (f64, f64, f64) {
    let h = hour_of_day(t);
    let temp = 12.0 + 2.0 * unit(seed, 2) + 7.0 * ((h - 9.0) / 24.0 * std::f64::consts::TAU).sin();
    let rh = (85.0 - 2.5 * (temp - 8.0)).clamp(20.0, 100.0);
    let pressure = 1013.0 + 8.0 * (f64::from(t) / (5.0 * DAY) * std::f64::consts::TAU).sin();
    (temp, rh, pressure)
}

/// Distance from the sensor to the waste surface, mm, in a bin `depth_mm` deep.
pub fn bin_distance(seed: u64, t: u32, depth_mm: u16) -> u16 {
    let period = 3.0 * DAY;
    let phase = unit(seed, 3) * period;
    let since_collection = (f64::from(t) + phase) % period;
    // Full after 2 to 4 days: some bins overflow before their round.
    let per_day = 0.25 + 0.25 * unit(seed, 4);
    let fill = (since_collection / DAY * per_day).min(1.0);
    let depth = f64::from(depth_mm);
    (depth - fill * (depth - 150.0)) as u16 // never closer than the sensor's 150 mm dead zone
}

/// Whether `sensor` (any small number) of this device is failing at `t` (one hour in 500).
pub fn faulty(seed: u64, sensor: u64, t: u32) -> bool {
    mix(seed ^ mix(sensor << 40 | u64::from(t / 3600))).is_multiple_of(500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_peaks_and_night_lows() {
        // A Monday (2026-11-23), device seed 7, outside any episode days.
        let monday = 1_795_392_000u32;
        let at = |h: u32| pm(7, monday + h * 3600 - 3600).0;
        assert!(
            at(8) > 1.5 * at(3),
            "rush hour {} vs night {}",
            at(8),
            at(3)
        );
        let (night, afternoon) = (
            climate(7, monday + 4 * 3600).0,
            climate(7, monday + 14 * 3600).0,
        );
        assert!(afternoon > night + 8.0);
    }

    #[test]
    fn bins_fill_then_get_emptied() {
        let depth = 1200;
        let samples: Vec<u16> = (0..72)
            .map(|h| bin_distance(3, h * 3600 * 2, depth))
            .collect();
        assert!(samples.iter().all(|d| (150..=depth).contains(d)));
        let emptied = samples.windows(2).filter(|w| w[1] > w[0] + 300).count();
        assert!(
            (1..=3).contains(&emptied),
            "{emptied} collections in 6 days"
        );
    }
}
