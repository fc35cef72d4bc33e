//! InfluxDB line protocol for readings (docs/SCHEMA.md): measurement per kind, tags sorted
//! by key and escaped, fields named and scaled by the protocol's field table, and the
//! reading's own time in milliseconds (written with `precision=ms`): the second the
//! device measured, plus the frame counter modulo 1000 as milliseconds. That offset is not
//! a measurement: it keeps two frames of one device that carry readings of the same second
//! from overwriting each other (the database keeps one point per series and timestamp),
//! and a redelivered frame (same counter) lands on its own point again.
//!
//! String values (`faults`, `quality`, the firmware version) are fields for InfluxDB. For
//! VictoriaMetrics, which stores string fields as 0, they are tags instead
//! ([`StringFields::Tags`]), and a reading with faults also gets the numeric field
//! `faultCount`, so a reading made only of faults still has a value.

use protocol::{Field, FieldSpec, Reading, Render};
use std::fmt::Write;

/// Tag values of one device.
#[derive(Debug, Clone, Copy)]
pub struct Tags<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Device id.
    pub device: &'a str,
    /// Site, from the registry.
    pub site: Option<&'a str>,
    /// Zone, from the registry.
    pub zone: Option<&'a str>,
}

/// A device's tags escaped once, when the registry loads, in the two pieces around the
/// per-reading string tags: `,device=…` and `,site=…,tenant=…,zone=…` (keys sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagSet {
    head: String,
    tail: String,
}

impl TagSet {
    /// Escapes `tags`.
    pub fn new(tags: &Tags<'_>) -> Self {
        let mut head = String::new();
        push_tag(&mut head, "device", Some(tags.device));
        let mut tail = String::new();
        for (key, value) in [
            ("site", tags.site),
            ("tenant", Some(tags.tenant)),
            ("zone", tags.zone),
        ] {
            push_tag(&mut tail, key, value);
        }
        Self { head, tail }
    }
}

/// Appends `,key=value` (escaped) unless the value is missing or empty.
fn push_tag(out: &mut String, key: &str, value: Option<&str>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        out.push(',');
        out.push_str(key);
        out.push('=');
        escape_tag(out, v);
    }
}

/// `items` joined by commas as one tag value, escaped as [`escape_tag`] escapes the
/// joined text (written in place: joining first was an allocation per flagged reading).
fn push_list_tag(out: &mut String, key: &str, items: &[&str]) {
    if items.is_empty() {
        return;
    }
    out.push(',');
    out.push_str(key);
    out.push('=');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            escape_tag(out, ",");
        }
        escape_tag(out, item);
    }
}

/// Where string values go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StringFields {
    /// String fields (InfluxDB).
    #[default]
    Fields,
    /// Tags, plus `faultCount` (VictoriaMetrics).
    Tags,
}

/// The stored timestamp of a reading, Unix milliseconds: its second plus the frame
/// counter modulo 1000.
pub const fn timestamp_ms(time: u32, counter: u32) -> u64 {
    time as u64 * 1000 + (counter % 1000) as u64
}

/// Appends one line for `reading` of the frame with `counter` (with a trailing `\n`).
/// Readings whose fields are all faults produce a line with only `faults` (and
/// `faultCount` in tag mode), so a failed sensor is visible, not silent.
pub fn encode(
    out: &mut String,
    reading: &Reading,
    tags: &TagSet,
    quality: &[&str],
    counter: u32,
    strings: StringFields,
) {
    let as_tags = strings == StringFields::Tags;
    out.push_str(reading.values.kind().measurement());
    out.push_str(&tags.head);
    // Tags sorted by key between device and site: faults, firmwareVersion, quality. The
    // first two are known once the fields are read: inserted here then (seldom).
    let tags_at = out.len();
    if as_tags {
        push_list_tag(out, "quality", quality);
    }
    out.push_str(&tags.tail);
    let mut w = Fields { sep: ' ' };
    let seen = w.values(out, reading, !as_tags);
    if as_tags {
        if seen.fault_count > 0 || seen.version.is_some() {
            let mut both = String::new();
            push_tag(&mut both, "faults", Some(&seen.faults));
            push_tag(&mut both, "firmwareVersion", seen.version.as_deref());
            out.insert_str(tags_at, &both);
        }
        let only_strings = seen.fields == usize::from(seen.version.is_some());
        if seen.fault_count > 0 || only_strings {
            w.name(out, "faultCount");
            out.push_str(itoa::Buffer::new().format(seen.fault_count));
            out.push('i');
        }
    } else {
        if !seen.faults.is_empty() {
            w.name(out, "faults");
            let _ = write!(out, "\"{}\"", seen.faults);
        }
        if !quality.is_empty() {
            w.name(out, "quality");
            out.push('"');
            for (i, flag) in quality.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(flag);
            }
            out.push('"');
        }
    }
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(timestamp_ms(reading.time, counter)));
    out.push('\n');
}

/// What reading a line's fields found besides their values.
#[derive(Default)]
struct Seen {
    /// Fields with a value (a version among them).
    fields: usize,
    /// The names of the faulted fields, comma-separated.
    faults: String,
    fault_count: u32,
    /// The firmware version as text (`1.2.3`).
    version: Option<String>,
}

/// The field set of one line: a space before the first field, commas between.
struct Fields {
    sep: char,
}

impl Fields {
    // Inlined: a call for each of a reading's fields was 1 % of a drain's instructions.
    #[inline(always)]
    fn name(&mut self, out: &mut String, name: &str) {
        out.push(self.sep);
        self.sep = ',';
        out.push_str(name);
        out.push('=');
    }

    /// The reading's values (a version as a string field when `version_field`), read in
    /// one pass that also notes its faults and version: a pass of their own read every
    /// field twice (1.7 % of a drain's instructions, docs/PERFORMANCE.md).
    fn values(&mut self, out: &mut String, reading: &Reading, version_field: bool) -> Seen {
        let mut seen = Seen::default();
        reading.values.each_sent_field(|spec, value| match value {
            Field::Value(raw) => self.value(out, &mut seen, spec, raw, version_field),
            Field::Fault => {
                if !seen.faults.is_empty() {
                    seen.faults.push(',');
                }
                seen.faults.push_str(spec.name);
                seen.fault_count += 1;
            }
            Field::Absent => {}
        });
        seen
    }

    /// One field's value.
    fn value(
        &mut self,
        out: &mut String,
        seen: &mut Seen,
        spec: &FieldSpec,
        raw: i64,
        version_field: bool,
    ) {
        seen.fields += 1;
        match spec.render {
            Render::Number { divisor: 1 } => {
                self.name(out, spec.name);
                out.push_str(itoa::Buffer::new().format(raw));
                out.push('i');
            }
            Render::Number { divisor } => {
                self.name(out, spec.name);
                super::decimal::write(out, raw, divisor);
            }
            Render::Flags(names) => {
                for (bit, name) in names.iter().enumerate() {
                    self.name(out, name);
                    out.push_str(if raw >> bit & 1 == 1 { "true" } else { "false" });
                }
            }
            Render::Version => {
                let text = format!("{}.{}.{}", raw >> 16 & 0xff, raw >> 8 & 0xff, raw & 0xff);
                if version_field {
                    self.name(out, spec.name);
                    let _ = write!(out, "\"{text}\"");
                }
                seen.version = Some(text);
            }
        }
    }
}

/// Appends one `device_info` line (docs/SCHEMA.md): what the registry says of a device,
/// at `time_ms`. Tags `container`, `device`, `insee`, `kind`, `place`, `site`, `tenant`,
/// `zone` (strings as tags, so VictoriaMetrics keeps them too); fields `latitude`,
/// `longitude` (WGS84 degrees, when set), `binCapacity` (litres), `sampleInterval`,
/// `heartbeat` (s, integers, when known) and `revoked` (integer 0 or 1).
pub fn device_info(out: &mut String, l: &crate::condition::book::Listing, time_ms: u64) {
    out.push_str("device_info");
    let kind = match l.kind {
        crate::fleet::DeviceKind::AirQuality => "air_quality",
        crate::fleet::DeviceKind::WasteBin => "waste_bin",
    };
    let tags = [
        ("container", l.container.as_deref()),
        ("device", Some(l.device.as_str())),
        ("insee", l.insee.as_deref()),
        ("kind", Some(kind)),
        ("place", l.place.as_deref()),
        ("site", l.site.as_deref()),
        ("tenant", Some(l.tenant.as_str())),
        ("zone", l.zone.as_deref()),
    ];
    for (key, value) in tags {
        push_tag(out, key, value);
    }
    let mut sep = ' ';
    let degrees = |v: Option<f64>| v.filter(|v| v.is_finite()).map(|v| format!("{v}"));
    let seconds = |v: Option<u16>| v.map(|v| format!("{v}i"));
    let fields = [
        ("binCapacity", l.capacity_l.map(|v| format!("{v}i"))),
        ("heartbeat", seconds(l.heartbeat_s)),
        ("latitude", degrees(l.latitude)),
        ("longitude", degrees(l.longitude)),
        ("revoked", Some(format!("{}i", u8::from(l.revoked)))),
        ("sampleInterval", seconds(l.sample_interval_s)),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            out.push(sep);
            sep = ',';
            out.push_str(name);
            out.push('=');
            out.push_str(&v);
        }
    }
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(time_ms));
    out.push('\n');
}

/// Escapes a tag value: `,`, `=` and space get a backslash; control characters become `_`.
fn escape_tag(out: &mut String, v: &str) {
    // Most values (ids, plain names) need nothing: copied whole.
    if !v
        .bytes()
        .any(|b| matches!(b, b',' | b'=' | b' ' | b'\\') || b.is_ascii_control() || b >= 0x80)
    {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            ',' | '=' | ' ' => {
                out.push('\\');
                out.push(c);
            }
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push('_'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_info_carries_the_listing_escaped() {
        let l = crate::condition::book::Listing {
            site: Some("Place Bellecour, nord".into()),
            latitude: Some(45.757),
            longitude: Some(4.832),
            sample_interval_s: Some(300),
            heartbeat_s: None,
            ..crate::condition::book::Listing::for_test("bin-1", crate::fleet::DeviceKind::WasteBin)
        };
        let mut out = String::new();
        device_info(&mut out, &l, 1_000);
        assert_eq!(
            out,
            "device_info,device=bin-1,kind=waste_bin,site=Place\\ Bellecour\\,\\ nord,tenant=lyon \
             latitude=45.757,longitude=4.832,revoked=0i,sampleInterval=300i 1000\n"
        );
    }
    use protocol::reading::bin_flags;
    use protocol::{AirQuality, DeviceStatus, Values, WasteBin};

    fn tags() -> Tags<'static> {
        Tags {
            tenant: "lyon",
            device: "aq-0001",
            site: Some("Place Bellecour, 2e"),
            zone: None,
        }
    }

    #[test]
    fn air_quality_line() {
        let r = Reading {
            time: 1_795_305_600,
            values: Values::AirQuality(AirQuality {
                pm1: Field::Value(82),
                pm25: Field::Value(123),
                temperature: Field::Value(-35),
                relative_humidity: Field::Value(555),
                co2: Field::Value(415),
                no2: Field::Fault,
                ..AirQuality::default()
            }),
        };
        let mut s = String::new();
        encode(
            &mut s,
            &r,
            &TagSet::new(&tags()),
            &["pm1_above_pm25"],
            1234,
            StringFields::Fields,
        );
        assert_eq!(
            s,
            "air_quality,device=aq-0001,site=Place\\ Bellecour\\,\\ 2e,tenant=lyon \
             pm1=8.2,pm25=12.3,temperature=-3.5,relativeHumidity=0.555,co2=415i,\
             faults=\"no2\",quality=\"pm1_above_pm25\" 1795305600234\n"
        );
        s.clear();
        encode(
            &mut s,
            &r,
            &TagSet::new(&tags()),
            &["pm1_above_pm25"],
            1234,
            StringFields::Tags,
        );
        assert_eq!(
            s,
            "air_quality,device=aq-0001,faults=no2,quality=pm1_above_pm25,\
             site=Place\\ Bellecour\\,\\ 2e,tenant=lyon \
             pm1=8.2,pm25=12.3,temperature=-3.5,relativeHumidity=0.555,co2=415i,\
             faultCount=1i 1795305600234\n"
        );
    }

    #[test]
    fn bin_and_status_lines() {
        let bin = Reading {
            time: 10,
            values: Values::WasteBin(WasteBin {
                distance: Field::Value(850),
                fill_level: Field::Value(62),
                flags: Field::Value(bin_flags::FIRE_SUSPECTED),
                battery: Field::Value(3600),
                ..WasteBin::default()
            }),
        };
        let mut s = String::new();
        encode(
            &mut s,
            &bin,
            &TagSet::new(&Tags {
                zone: Some("nord"),
                site: None,
                ..tags()
            }),
            &[],
            0,
            StringFields::Fields,
        );
        assert_eq!(
            s,
            "waste_bin,device=aq-0001,tenant=lyon,zone=nord distance=850i,fillingLevel=0.62,\
             tilted=false,lidOpen=false,fireSuspected=true,batteryVoltage=3.6 10000\n"
        );
        let status = Reading {
            time: 11,
            values: Values::DeviceStatus(DeviceStatus {
                firmware: Field::Value(0x01_02_03),
                rssi: Field::Value(-87),
                ..DeviceStatus::default()
            }),
        };
        s.clear();
        encode(
            &mut s,
            &status,
            &TagSet::new(&Tags {
                site: None,
                ..tags()
            }),
            &[],
            7,
            StringFields::Fields,
        );
        assert_eq!(
            s,
            "device_status,device=aq-0001,tenant=lyon rssi=-87i,firmwareVersion=\"1.2.3\" 11007\n"
        );
        s.clear();
        encode(
            &mut s,
            &status,
            &TagSet::new(&Tags {
                site: None,
                ..tags()
            }),
            &[],
            7,
            StringFields::Tags,
        );
        assert_eq!(
            s,
            "device_status,device=aq-0001,firmwareVersion=1.2.3,tenant=lyon rssi=-87i 11007\n"
        );
        // Only faults: still a value in tag mode.
        let dead = Reading {
            time: 12,
            values: Values::AirQuality(AirQuality {
                pm25: Field::Fault,
                pm10: Field::Fault,
                ..AirQuality::default()
            }),
        };
        s.clear();
        encode(
            &mut s,
            &dead,
            &TagSet::new(&Tags {
                site: None,
                ..tags()
            }),
            &[],
            1000,
            StringFields::Tags,
        );
        assert_eq!(
            s,
            "air_quality,device=aq-0001,faults=pm25\\,pm10,tenant=lyon faultCount=2i 12000\n"
        );
    }

    #[test]
    fn several_quality_flags_are_one_tag_or_one_string_field() {
        let r = Reading {
            time: 12,
            values: Values::AirQuality(AirQuality {
                pm25: Field::Value(50),
                ..AirQuality::default()
            }),
        };
        let flags = ["pm1_above_pm25", "pm25_above_pm10"];
        let tags = TagSet::new(&Tags {
            site: None,
            ..tags()
        });
        let mut s = String::new();
        encode(&mut s, &r, &tags, &flags, 1000, StringFields::Tags);
        assert!(
            s.contains(",quality=pm1_above_pm25\\,pm25_above_pm10,"),
            "{s}"
        );
        s.clear();
        encode(&mut s, &r, &tags, &flags, 1000, StringFields::Fields);
        assert!(
            s.contains(",quality=\"pm1_above_pm25,pm25_above_pm10\" "),
            "{s}"
        );
    }
}
