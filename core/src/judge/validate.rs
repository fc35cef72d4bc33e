//! Plausibility: a reading's time must fall in the accepted window (else the frame is
//! rejected, so it can be replayed after a fix); physically doubtful values are kept and
//! flagged with a quality code, never dropped.

use crate::fleet::DeviceEntry;
use crate::judge::reason::Reason;
use protocol::{Field, Reading, Values};

/// Time window, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct TimeRules {
    /// Largest allowed lead of a reading over the gateway clock.
    pub max_future_skew_s: u64,
    /// Largest allowed age of a reading.
    pub max_age_s: u64,
}

/// Rejects readings outside the time window.
pub fn check_time(reading: &Reading, now_s: u64, rules: &TimeRules) -> Result<(), Reason> {
    let t = u64::from(reading.time);
    if t > now_s + rules.max_future_skew_s {
        return Err(Reason::FutureTimestamp);
    }
    if t + rules.max_age_s < now_s {
        return Err(Reason::StaleTimestamp);
    }
    Ok(())
}

/// Quality codes for doubtful but possible values (stored in the `quality` field).
pub fn quality_flags(values: &Values, device: &DeviceEntry) -> Vec<&'static str> {
    let mut flags = Vec::new();
    match values {
        Values::AirQuality(a) => {
            let (pm1, pm25, pm10) = (a.pm1.value(), a.pm25.value(), a.pm10.value());
            if matches!((pm1, pm25), (Some(x), Some(y)) if x > y) {
                flags.push("pm1_above_pm25");
            }
            if matches!((pm25, pm10), (Some(x), Some(y)) if x > y) {
                flags.push("pm25_above_pm10");
            }
            // Outdoor air in mainland and overseas France: −30 … 50 °C, 870 … 1085 hPa.
            if a.temperature
                .value()
                .is_some_and(|t| !(-300..=500).contains(&t))
            {
                flags.push("temperature_implausible");
            }
            if a.pressure
                .value()
                .is_some_and(|p| !(8_700..=10_850).contains(&p))
            {
                flags.push("pressure_implausible");
            }
        }
        Values::WasteBin(b) => {
            if let (Field::Value(d), Some(depth)) = (b.distance, device.bin_depth_mm) {
                if d > depth {
                    flags.push("distance_beyond_depth");
                } else if let Field::Value(fill) = b.fill_level {
                    // The node computes fill from distance; a large disagreement means a
                    // wrong bin depth in the registry or on the board.
                    let expected = 100 - u32::from(d) * 100 / u32::from(depth.max(1));
                    if expected.abs_diff(u32::from(fill)) > 10 {
                        flags.push("fill_level_inconsistent");
                    }
                }
            }
        }
        Values::DeviceStatus(_) | Values::Energy(_) => {}
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::DeviceKind;
    use protocol::{AirQuality, WasteBin};

    fn bin_entry(depth: u16) -> DeviceEntry {
        DeviceEntry {
            bin_depth_mm: Some(depth),
            ..DeviceEntry::new("t", "bin-1", DeviceKind::WasteBin, String::new(), 1)
        }
    }

    #[test]
    fn time_window() {
        let rules = TimeRules {
            max_future_skew_s: 300,
            max_age_s: 3600,
        };
        let at = |time| Reading {
            time,
            values: Values::empty(protocol::Kind::AirQuality),
        };
        let now = 1_000_000;
        assert_eq!(check_time(&at(1_000_300), now, &rules), Ok(()));
        assert_eq!(
            check_time(&at(1_000_301), now, &rules),
            Err(Reason::FutureTimestamp)
        );
        assert_eq!(check_time(&at(996_400), now, &rules), Ok(()));
        assert_eq!(
            check_time(&at(996_399), now, &rules),
            Err(Reason::StaleTimestamp)
        );
    }

    #[test]
    fn flags() {
        let e = bin_entry(1000);
        let aq = Values::AirQuality(AirQuality {
            pm1: Field::Value(50),
            pm25: Field::Value(40),
            pm10: Field::Value(30),
            temperature: Field::Value(612),
            ..AirQuality::default()
        });
        assert_eq!(
            quality_flags(&aq, &e),
            [
                "pm1_above_pm25",
                "pm25_above_pm10",
                "temperature_implausible"
            ]
        );
        let fine = Values::AirQuality(AirQuality {
            pm1: Field::Value(10),
            pm25: Field::Value(20),
            pm10: Field::Value(30),
            temperature: Field::Value(214),
            pressure: Field::Value(10_132),
            ..AirQuality::default()
        });
        assert!(quality_flags(&fine, &e).is_empty());
        let bin = |d, f| {
            Values::WasteBin(WasteBin {
                distance: Field::Value(d),
                fill_level: Field::Value(f),
                ..WasteBin::default()
            })
        };
        assert!(quality_flags(&bin(400, 60), &e).is_empty());
        assert_eq!(
            quality_flags(&bin(400, 20), &e),
            ["fill_level_inconsistent"]
        );
        assert_eq!(quality_flags(&bin(1200, 0), &e), ["distance_beyond_depth"]);
    }
}
