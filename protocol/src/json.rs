//! JSON view of a reading (feature `serde`), with the storage schema's field names and
//! units (FIWARE Smart Data Models names where they exist), for logs, quarantine listings
//! and open-data export:
//!
//! ```json
//! {"type":"AirQualityObserved","measurement":"air_quality","dateObserved":"2026-11-22T08:00:00Z",
//!  "pm1":8.2,"pm25":12.3,"pm10":20.1,"temperature":21.4,"relativeHumidity":0.555,
//!  "atmosphericPressure":1013.2,"faults":["no2"]}
//! ```

use core::fmt;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::reading::{Field, Reading, Render, Values};

impl Serialize for Reading {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let kind = self.values.kind();
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("type", kind.entity_type())?;
        map.serialize_entry("measurement", kind.measurement())?;
        map.serialize_entry("dateObserved", &format_args!("{}", UtcTime(self.time)))?;
        for (spec, field) in self.values.fields() {
            let Field::Value(raw) = field else { continue };
            match spec.render {
                Render::Number { divisor: 1 } => map.serialize_entry(spec.name, &raw)?,
                Render::Number { .. } => map.serialize_entry(spec.name, &spec.physical(raw))?,
                Render::Flags(names) => {
                    for (bit, name) in names.iter().enumerate() {
                        map.serialize_entry(name, &(raw >> bit & 1 == 1))?;
                    }
                }
                Render::Version => map.serialize_entry(
                    spec.name,
                    &format_args!("{}.{}.{}", raw >> 16 & 0xff, raw >> 8 & 0xff, raw & 0xff),
                )?,
            }
        }
        if self.values.fields().any(|(_, f)| f == Field::Fault) {
            map.serialize_entry("faults", &Faults(&self.values))?;
        }
        map.end()
    }
}

/// The names of the fields whose sensor failed.
struct Faults<'a>(&'a Values);

impl Serialize for Faults<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for (spec, field) in self.0.fields() {
            if field == Field::Fault {
                seq.serialize_element(spec.name)?;
            }
        }
        seq.end()
    }
}

/// Unix seconds shown as ISO 8601 UTC (`YYYY-MM-DDThh:mm:ssZ`), without a date library.
#[derive(Debug, Clone, Copy)]
pub struct UtcTime(pub u32);

impl fmt::Display for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = i64::from(self.0);
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Civil-from-days (H. Hinnant), valid for the whole u32 range.
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            rem / 3_600,
            rem / 60 % 60,
            rem % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{AirQuality, DeviceStatus, WasteBin, bin_flags};
    extern crate std;
    use std::string::ToString;

    #[test]
    fn utc_time() {
        assert_eq!(UtcTime(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(UtcTime(951_782_400).to_string(), "2000-02-29T00:00:00Z");
        assert_eq!(UtcTime(1_795_305_600).to_string(), "2026-11-22T00:00:00Z");
        assert_eq!(UtcTime(u32::MAX).to_string(), "2106-02-07T06:28:15Z");
    }

    #[test]
    fn json_names_units_and_faults() {
        let r = Reading {
            time: 1_795_305_600,
            values: Values::AirQuality(AirQuality {
                pm25: Field::Value(123),
                relative_humidity: Field::Value(555),
                co2: Field::Value(415),
                no2: Field::Fault,
                ..AirQuality::default()
            }),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"type":"AirQualityObserved","measurement":"air_quality","dateObserved":"2026-11-22T00:00:00Z","pm25":12.3,"relativeHumidity":0.555,"co2":415,"faults":["no2"]}"#
        );
        let bin = Reading {
            time: 0,
            values: Values::WasteBin(WasteBin {
                fill_level: Field::Value(80),
                flags: Field::Value(bin_flags::LID_OPEN),
                ..WasteBin::default()
            }),
        };
        let v: serde_json::Value = serde_json::to_value(bin).unwrap();
        assert_eq!(v["fillingLevel"], 0.8);
        assert_eq!(
            (v["tilted"].clone(), v["lidOpen"].clone()),
            (false.into(), true.into())
        );
        let status = Reading {
            time: 0,
            values: Values::DeviceStatus(DeviceStatus {
                firmware: Field::Value(0x01_02_03),
                ..DeviceStatus::default()
            }),
        };
        assert_eq!(
            serde_json::to_value(status).unwrap()["firmwareVersion"],
            "1.2.3"
        );
    }
}
