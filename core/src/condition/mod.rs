//! A device's condition at a glance: green, amber or red, with the reasons in a form the
//! status page puts into words ("silent since 14:05", "battery 3.3 V", "PM sensor
//! fault", "bin 85 % full"). Pure: the listing from the registry, the state from its
//! traffic, and the time.
//!
//! Red: never heard from; silent longer than its heartbeat plus two sampling intervals
//! (the registry's values, else [`DEFAULT_HEARTBEAT_S`] and [`DEFAULT_INTERVAL_S`]; a
//! heartbeat of 0, "only on change", allows [`NO_HEARTBEAT_DUE_S`]); offline by its own
//! status message with no frame since; fire suspected; revoked. Amber: battery below
//! [`LOW_BATTERY_MV`]; a sensor fault (a faulted field in its latest reading, or an error
//! flag in its latest status); a bin at or above [`BIN_FULL_PERCENT`], tilted or with
//! its lid open; frames held for their time (a clock ahead or behind). Red too: frames
//! refused with none stored since. Green otherwise.

pub mod atmo;
pub mod book;
pub mod energy;
pub mod glance;
pub mod missing;

use crate::condition::book::{DeviceState, Listing};
use protocol::reading::{bin_flags, error_flags};
use serde::{Deserialize, Serialize};

/// Battery voltage under which a device is amber, mV.
pub const LOW_BATTERY_MV: i64 = 3_400;
/// Fill level from which a bin is amber, %.
pub const BIN_FULL_PERCENT: u8 = 80;
/// Heartbeat assumed when the registry has none (the enrolment default), s.
pub const DEFAULT_HEARTBEAT_S: u64 = 3_600;
/// Sampling interval assumed when the registry has none (the enrolment default), s.
pub const DEFAULT_INTERVAL_S: u64 = 300;
/// Longest silence allowed to a device that only reports on change, s.
pub const NO_HEARTBEAT_DUE_S: u64 = 24 * 3_600;

/// The colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Light {
    /// Working.
    Green,
    /// Working, needs attention.
    Amber,
    /// Not working, or revoked.
    Red,
}

/// Which sensor failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sensor {
    /// Particulate matter.
    Pm,
    /// Temperature, humidity, pressure.
    Climate,
    /// Bin distance.
    Distance,
    /// Configuration or counter storage.
    Storage,
    /// Any other measured field (NO2, O3, CO2, noise).
    Other,
}

impl Sensor {
    /// Its name, as in the JSON of `/devices` (`pm`, `climate`…).
    pub fn code(self) -> &'static str {
        match self {
            Sensor::Pm => "pm",
            Sensor::Climate => "climate",
            Sensor::Distance => "distance",
            Sensor::Storage => "storage",
            Sensor::Other => "other",
        }
    }
}

/// One reason for a colour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Why {
    /// Registered, no frame ever stored.
    NeverHeard,
    /// Its key was revoked.
    Revoked,
    /// No frame since `since_ms` (Unix ms), longer than the `due_s` it is allowed.
    Silent {
        /// Last frame stored.
        since_ms: u64,
        /// Allowed silence.
        due_s: u64,
    },
    /// It said it went offline (its will, or a clean disconnect) at `since_ms`.
    Offline {
        /// When.
        since_ms: u64,
    },
    /// The bin's temperature suggests a fire.
    FireSuspected,
    /// Low battery.
    Battery {
        /// Volts × 1000.
        mv: i64,
    },
    /// A sensor failed.
    SensorFault {
        /// Which.
        sensor: Sensor,
    },
    /// The bin is nearly full.
    BinFull {
        /// Fill level.
        percent: u8,
    },
    /// The bin is tilted or knocked over.
    Tilted,
    /// The bin's lid is open.
    LidOpen,
    /// Its frames are refused, none stored since `since_ms`: its data does not flow.
    Refused {
        /// The last reason code.
        code: String,
        /// When the last one was refused, Unix ms.
        since_ms: u64,
    },
    /// Its frames are held, not acknowledged, since `since_ms`: a reading's time
    /// outside the window (`future_timestamp`: its clock ahead, or the gateway's
    /// behind; `stale_timestamp` while the gateway's clock is not synchronised).
    Held {
        /// The reason code.
        code: String,
        /// When the last one was held, Unix ms.
        since_ms: u64,
    },
}

impl Why {
    /// Its name, as in the JSON of `/devices` (`reason`).
    pub fn code(&self) -> &'static str {
        match self {
            Why::NeverHeard => "never_heard",
            Why::Revoked => "revoked",
            Why::Silent { .. } => "silent",
            Why::Offline { .. } => "offline",
            Why::FireSuspected => "fire_suspected",
            Why::Battery { .. } => "battery",
            Why::SensorFault { .. } => "sensor_fault",
            Why::BinFull { .. } => "bin_full",
            Why::Tilted => "tilted",
            Why::LidOpen => "lid_open",
            Why::Refused { .. } => "refused",
            Why::Held { .. } => "held",
        }
    }

    /// The colour this reason alone gives.
    pub fn light(&self) -> Light {
        match self {
            Why::NeverHeard
            | Why::Revoked
            | Why::Silent { .. }
            | Why::Offline { .. }
            | Why::Refused { .. }
            | Why::FireSuspected => Light::Red,
            _ => Light::Amber,
        }
    }
}

/// A device's condition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Condition {
    /// The worst colour of the reasons; green without any.
    pub light: Light,
    /// Worst first.
    pub reasons: Vec<Why>,
}

/// The allowed silence of a listed device, s: its heartbeat (or, when it reports with
/// its modem off in between, its report interval if longer) plus two sampling intervals
/// (SPEC §13.8).
pub fn due_s(listing: &Listing) -> u64 {
    let interval = listing
        .sample_interval_s
        .map_or(DEFAULT_INTERVAL_S, u64::from);
    let report = listing.report_interval_s.map_or(0, u64::from);
    match listing.heartbeat_s.map_or(DEFAULT_HEARTBEAT_S, u64::from) {
        0 => NO_HEARTBEAT_DUE_S.max(report + 2 * interval),
        heartbeat => heartbeat.max(report) + 2 * interval,
    }
}

/// The condition of a device at `now_ms`.
pub fn assess(listing: &Listing, state: Option<&DeviceState>, now_ms: u64) -> Condition {
    let mut reasons = Vec::new();
    if listing.revoked {
        reasons.push(Why::Revoked);
    }
    match state.and_then(|s| s.last_frame_ms) {
        None => reasons.push(Why::NeverHeard),
        Some(last) => {
            let due = due_s(listing);
            if now_ms.saturating_sub(last) > due * 1000 {
                reasons.push(Why::Silent {
                    since_ms: last,
                    due_s: due,
                });
            }
        }
    }
    if let Some(s) = state {
        // A reporting device is offline between its reports by design: only its
        // silence (above) says something is wrong.
        let reports = listing.report_interval_s.is_some();
        if !reports && s.online == Some(false) && s.status_ms >= s.last_frame_ms {
            reasons.push(Why::Offline {
                since_ms: s.status_ms.unwrap_or_default(),
            });
        }
        reasons.extend(of_state(s));
    }
    reasons.sort_by_key(|w| std::cmp::Reverse(w.light()));
    Condition {
        light: reasons.iter().map(Why::light).max().unwrap_or(Light::Green),
        reasons,
    }
}

/// What the latest values say.
/// What a device's own traffic says is wrong, without its registry listing: its frames
/// refused or held, and what its latest readings say (fire, battery, sensors, fill, tilt,
/// lid). The `/metrics` gauge `vigie_device_condition` shows these.
pub fn of_state(s: &DeviceState) -> Vec<Why> {
    let mut reasons = Vec::new();
    if let Some((code, since_ms)) = &s.refused_since {
        reasons.push(Why::Refused {
            code: code.clone(),
            since_ms: *since_ms,
        });
    }
    if let Some((code, since_ms)) = &s.held {
        reasons.push(Why::Held {
            code: code.clone(),
            since_ms: *since_ms,
        });
    }
    reasons.extend(readings(s));
    reasons
}

fn readings(s: &DeviceState) -> Vec<Why> {
    let latest = &s.history.latest;
    let mut out = Vec::new();
    let flags = latest.bin_flags.unwrap_or(0);
    if flags & bin_flags::FIRE_SUSPECTED != 0 {
        out.push(Why::FireSuspected);
    }
    if let Some(mv) = s.battery_mv.filter(|mv| *mv < LOW_BATTERY_MV) {
        out.push(Why::Battery { mv });
    }
    let mut sensors: Vec<Sensor> = latest.faults.iter().map(|f| sensor_of(f)).collect();
    let errors = latest.error_flags.unwrap_or(0);
    for (bit, sensor) in [
        (error_flags::PM_SENSOR, Sensor::Pm),
        (error_flags::CLIMATE_SENSOR, Sensor::Climate),
        (error_flags::DISTANCE_SENSOR, Sensor::Distance),
        (error_flags::STORAGE, Sensor::Storage),
    ] {
        if errors & bit != 0 {
            sensors.push(sensor);
        }
    }
    let mut seen = Vec::new();
    for sensor in sensors {
        if !seen.contains(&sensor) {
            seen.push(sensor);
            out.push(Why::SensorFault { sensor });
        }
    }
    if let Some(percent) = latest.fill_percent.filter(|p| *p >= BIN_FULL_PERCENT) {
        out.push(Why::BinFull { percent });
    }
    if flags & bin_flags::TILTED != 0 {
        out.push(Why::Tilted);
    }
    if flags & bin_flags::LID_OPEN != 0 {
        out.push(Why::LidOpen);
    }
    out
}

/// The sensor behind a stored field name.
fn sensor_of(field: &str) -> Sensor {
    match field {
        "pm1" | "pm25" | "pm10" => Sensor::Pm,
        "temperature" | "relativeHumidity" | "atmosphericPressure" => Sensor::Climate,
        "distance" | "fillingLevel" => Sensor::Distance,
        _ => Sensor::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::DeviceKind;

    fn listing() -> Listing {
        Listing::for_test("aq-1", DeviceKind::AirQuality)
    }

    fn heard(at_ms: u64) -> DeviceState {
        DeviceState {
            last_frame_ms: Some(at_ms),
            ..DeviceState::default()
        }
    }

    #[test]
    fn silence_turns_red_after_heartbeat_and_two_intervals() {
        let l = listing();
        assert_eq!(due_s(&l), 720);
        let s = heard(1_000_000);
        assert_eq!(
            assess(&l, Some(&s), 1_000_000 + 720_000).light,
            Light::Green
        );
        let c = assess(&l, Some(&s), 1_000_000 + 720_001);
        assert_eq!(c.light, Light::Red);
        assert_eq!(
            c.reasons,
            [Why::Silent {
                since_ms: 1_000_000,
                due_s: 720
            }]
        );
        assert_eq!(assess(&l, None, 0).reasons, [Why::NeverHeard]);
        let quiet = Listing {
            heartbeat_s: Some(0),
            ..listing()
        };
        assert_eq!(due_s(&quiet), NO_HEARTBEAT_DUE_S);
    }

    #[test]
    fn a_refused_device_is_red_at_once_until_a_frame_is_stored() {
        let l = listing();
        let mut s = heard(1_000);
        s.refused_since = Some(("authentication".into(), 1_500));
        let c = assess(&l, Some(&s), 2_000);
        assert_eq!(c.light, Light::Red);
        assert_eq!(
            c.reasons,
            [Why::Refused {
                code: "authentication".into(),
                since_ms: 1_500
            }]
        );
    }

    #[test]
    fn offline_counts_until_the_next_frame() {
        let l = listing();
        let mut s = heard(1_000);
        s.online = Some(false);
        s.status_ms = Some(2_000);
        assert_eq!(
            assess(&l, Some(&s), 3_000).reasons,
            [Why::Offline { since_ms: 2_000 }]
        );
        s.last_frame_ms = Some(2_500);
        assert_eq!(assess(&l, Some(&s), 3_000).light, Light::Green);
    }

    #[test]
    fn a_reporting_device_is_offline_between_reports_and_due_only_after_its_interval() {
        let l = Listing {
            report_interval_s: Some(21_600),
            ..listing()
        };
        // Heartbeat 600 s, samples every 60 s: six hours and two minutes.
        assert_eq!(due_s(&l), 21_600 + 120);
        let mut s = heard(1_000);
        s.online = Some(false);
        s.status_ms = Some(2_000);
        assert_eq!(assess(&l, Some(&s), 3_600_000).light, Light::Green);
        let late = 1_000 + (21_600 + 121) * 1000;
        assert!(matches!(
            assess(&l, Some(&s), late).reasons[..],
            [Why::Silent { .. }]
        ));
    }

    #[test]
    fn battery_faults_and_a_full_bin_are_amber_fire_is_red() {
        let l = listing();
        let mut s = heard(1_000);
        s.battery_mv = Some(3_300);
        s.history.latest.faults = vec!["pm25".into(), "pm10".into()];
        s.history.latest.error_flags = Some(error_flags::PM_SENSOR | error_flags::STORAGE);
        s.history.latest.fill_percent = Some(85);
        let c = assess(&l, Some(&s), 2_000);
        assert_eq!(c.light, Light::Amber);
        assert_eq!(
            c.reasons,
            [
                Why::Battery { mv: 3_300 },
                Why::SensorFault { sensor: Sensor::Pm },
                Why::SensorFault {
                    sensor: Sensor::Storage
                },
                Why::BinFull { percent: 85 },
            ]
        );
        s.history.latest.bin_flags = Some(bin_flags::FIRE_SUSPECTED);
        let c = assess(&l, Some(&s), 2_000);
        assert_eq!((c.light, &c.reasons[0]), (Light::Red, &Why::FireSuspected));
    }
}
