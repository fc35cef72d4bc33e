//! What the status page shows of a device's readings: the latest PM, fill level, sensor
//! faults, error flags and firmware, and hourly means for its 24-hour chart and the ATMO
//! band. Taken from the decoded readings at verification, so the page never reads line
//! protocol back, and merged into the device state when the frame is durable.

use protocol::{Field, Reading, Values};
use serde::{Deserialize, Serialize};

/// Hours of history kept per device (the chart and the rolling ATMO mean).
pub const HOURS: u64 = 24;

/// A running mean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Mean {
    /// Sum of the values.
    pub sum: f64,
    /// How many.
    pub n: u32,
}

impl Mean {
    fn add(&mut self, v: f64) {
        self.sum += v;
        self.n += 1;
    }

    fn merge(&mut self, other: Mean) {
        self.sum += other.sum;
        self.n += other.n;
    }

    /// The mean, if any value was added.
    pub fn value(self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / f64::from(self.n))
    }
}

/// One measurement hour of a device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Hour {
    /// Unix time / 3600.
    pub hour: u64,
    /// PM2.5, µg/m³.
    pub pm25: Mean,
    /// PM10, µg/m³.
    pub pm10: Mean,
    /// Fill level, %.
    pub fill: Mean,
}

/// The latest values (each from the newest reading that had it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latest {
    /// PM2.5, µg/m³.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pm25: Option<f64>,
    /// PM10, µg/m³.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pm10: Option<f64>,
    /// Bin fill level, %.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fill_percent: Option<u8>,
    /// Bin flags (SPEC §4.1: tilted, lid open, fire suspected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bin_flags: Option<u8>,
    /// Error flags of the latest status report (SPEC §4.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_flags: Option<u16>,
    /// Firmware version, `major.minor.patch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// Stored names of the fields whose sensor failed in the latest measurement.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<String>,
    /// The latest energy ledger (SPEC §4.1, kind 4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy: Option<super::energy::Ledger>,
}

/// What one frame adds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Glance {
    /// Latest values in the frame.
    pub latest: Latest,
    /// Whether it held a measurement (air or bin): its faults then replace the old ones.
    pub measured: bool,
    /// Hourly sums, oldest first: the first inline (a frame seldom spans two hours, and
    /// this saves an allocation per frame), any others after it.
    first_hour: Option<Hour>,
    more_hours: Vec<Hour>,
}

impl Glance {
    /// Takes in one reading (in frame order).
    pub fn add(&mut self, r: &Reading) {
        let hour = u64::from(r.time) / 3600;
        let mut h = Hour {
            hour,
            ..Hour::default()
        };
        match &r.values {
            Values::AirQuality(a) => {
                let pm25 = a.pm25.value().map(|v| f64::from(v) / 10.0);
                let pm10 = a.pm10.value().map(|v| f64::from(v) / 10.0);
                pm25.inspect(|v| h.pm25.add(*v));
                pm10.inspect(|v| h.pm10.add(*v));
                self.latest.pm25 = pm25.or(self.latest.pm25);
                self.latest.pm10 = pm10.or(self.latest.pm10);
                self.measurement(&r.values);
            }
            Values::WasteBin(b) => {
                if let Some(fill) = b.fill_level.value() {
                    h.fill.add(f64::from(fill));
                    self.latest.fill_percent = Some(fill);
                }
                self.latest.bin_flags = b.flags.value().or(self.latest.bin_flags);
                self.measurement(&r.values);
            }
            Values::DeviceStatus(s) => {
                self.latest.error_flags = s.error_flags.value().or(self.latest.error_flags);
                if let Some(v) = s.firmware.value() {
                    self.latest.firmware =
                        Some(format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff));
                }
                return;
            }
            Values::Energy(e) => {
                self.latest.energy = Some(super::energy::Ledger::of(e));
                return;
            }
        }
        match self.more_hours.last_mut().or(self.first_hour.as_mut()) {
            Some(last) if last.hour == hour => {
                last.pm25.merge(h.pm25);
                last.pm10.merge(h.pm10);
                last.fill.merge(h.fill);
            }
            Some(_) => self.more_hours.push(h),
            None => self.first_hour = Some(h),
        }
    }

    /// Hourly sums, oldest first.
    pub fn hours(&self) -> impl Iterator<Item = &Hour> {
        self.first_hour.iter().chain(&self.more_hours)
    }

    fn measurement(&mut self, values: &Values) {
        self.measured = true;
        self.latest.faults.clear();
        let faults = &mut self.latest.faults;
        values.each_sent_field(|spec, field| {
            if field == Field::Fault {
                faults.push(spec.name.to_string());
            }
        });
    }
}

/// A device's readings as the status page shows them: [`Latest`] and the last
/// [`HOURS`] hours.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct History {
    /// Latest values.
    pub latest: Latest,
    /// Hourly means, oldest first, within [`HOURS`] of the newest.
    pub hours: Vec<Hour>,
}

impl History {
    /// Merges a durable frame's glance.
    pub fn merge(&mut self, g: &Glance) {
        let (new, old) = (&g.latest, &mut self.latest);
        old.pm25 = new.pm25.or(old.pm25);
        old.pm10 = new.pm10.or(old.pm10);
        old.fill_percent = new.fill_percent.or(old.fill_percent);
        old.bin_flags = new.bin_flags.or(old.bin_flags);
        old.error_flags = new.error_flags.or(old.error_flags);
        old.energy = new.energy.or(old.energy);
        if new.firmware.is_some() {
            old.firmware.clone_from(&new.firmware);
        }
        if g.measured {
            old.faults.clone_from(&new.faults);
        }
        for h in g.hours() {
            match self.hours.binary_search_by_key(&h.hour, |x| x.hour) {
                Ok(i) => {
                    let x = &mut self.hours[i];
                    x.pm25.merge(h.pm25);
                    x.pm10.merge(h.pm10);
                    x.fill.merge(h.fill);
                }
                Err(i) => self.hours.insert(i, *h),
            }
        }
        if let Some(newest) = self.hours.last().map(|h| h.hour) {
            self.hours.retain(|h| h.hour + HOURS > newest);
        }
    }

    /// Mean PM2.5 and PM10 over the [`HOURS`] hours before `now_s` (rolling).
    pub fn pm_means(&self, now_s: u64) -> (Option<f64>, Option<f64>) {
        let (mut pm25, mut pm10) = (Mean::default(), Mean::default());
        for h in self.recent(now_s) {
            pm25.merge(h.pm25);
            pm10.merge(h.pm10);
        }
        (pm25.value(), pm10.value())
    }

    /// The hours within [`HOURS`] of `now_s`.
    pub fn recent(&self, now_s: u64) -> impl Iterator<Item = &Hour> {
        let now_h = now_s / 3600;
        self.hours
            .iter()
            .filter(move |h| h.hour + HOURS > now_h && h.hour <= now_h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{AirQuality, DeviceStatus, WasteBin};

    fn air(time: u32, pm25: Field<u16>, pm10: u16) -> Reading {
        Reading {
            time,
            values: Values::AirQuality(AirQuality {
                pm25,
                pm10: Field::Value(pm10),
                ..AirQuality::default()
            }),
        }
    }

    #[test]
    fn a_frame_gives_latest_values_faults_and_hourly_means() {
        let mut g = Glance::default();
        g.add(&air(7_200, Field::Value(100), 200));
        g.add(&air(7_260, Field::Value(300), 400));
        g.add(&air(10_800, Field::Fault, 500));
        g.add(&Reading {
            time: 10_900,
            values: Values::DeviceStatus(DeviceStatus {
                firmware: Field::Value(0x01_02_03),
                error_flags: Field::Value(1),
                ..DeviceStatus::default()
            }),
        });
        assert_eq!(g.latest.pm25, Some(30.0), "a fault keeps the last value");
        assert_eq!(g.latest.pm10, Some(50.0));
        assert_eq!(g.latest.faults, ["pm25"]);
        assert_eq!(g.latest.firmware.as_deref(), Some("1.2.3"));
        assert_eq!(g.latest.error_flags, Some(1));
        let hours: Vec<_> = g.hours().collect();
        assert_eq!(hours.len(), 2);
        assert_eq!(hours[0].pm25.value(), Some(20.0));
        assert_eq!(hours[1].pm25.value(), None);
        assert_eq!(hours[1].pm10.value(), Some(50.0));
    }

    #[test]
    fn history_keeps_a_day_merges_hours_and_means_over_it() {
        let mut h = History::default();
        let mut day = Glance::default();
        for hour in 0..30u32 {
            day.add(&air(hour * 3600, Field::Value(10 * (hour as u16 + 1)), 50));
        }
        h.merge(&day);
        assert_eq!(h.hours.len(), HOURS as usize);
        assert_eq!(h.hours[0].hour, 6);
        // A late frame of an hour already there adds to it.
        let mut late = Glance::default();
        late.add(&air(29 * 3600 + 10, Field::Value(0), 50));
        h.merge(&late);
        assert_eq!(h.hours.last().unwrap().pm25.value(), Some(15.0));
        let now = 29 * 3600 + 100;
        let expected = ((7..=30).map(|x| x as f64).sum::<f64>() - 30.0 + 15.0 * 2.0) / 25.0;
        let (pm25, pm10) = h.pm_means(now);
        assert!(
            (pm25.unwrap() - expected).abs() < 1e-9,
            "{pm25:?} vs {expected}"
        );
        assert_eq!(pm10, Some(5.0));
        // A day later nothing is recent.
        assert_eq!(h.pm_means(now + 24 * 3600), (None, None));
    }

    #[test]
    fn bins_report_fill_and_flags_and_a_clean_reading_clears_faults() {
        let bin = |fill: Field<u8>| Reading {
            time: 3_600,
            values: Values::WasteBin(WasteBin {
                fill_level: fill,
                flags: Field::Value(0b100),
                ..WasteBin::default()
            }),
        };
        let mut h = History::default();
        let mut g = Glance::default();
        g.add(&bin(Field::Fault));
        h.merge(&g);
        assert_eq!(h.latest.faults, ["fillingLevel"]);
        let mut g = Glance::default();
        g.add(&bin(Field::Value(85)));
        h.merge(&g);
        assert!(h.latest.faults.is_empty());
        assert_eq!(
            (h.latest.fill_percent, h.latest.bin_flags),
            (Some(85), Some(4))
        );
        assert_eq!(h.hours[0].fill.value(), Some(85.0));
    }
}
