//! InfluxDB line protocol for readings (docs/SCHEMA.md): measurement per kind, tags sorted
//! by key and escaped, fields named and scaled by the protocol's field table, the reading's
//! own time in seconds (written with `precision=s`).

use protocol::{Field, Reading, Render};
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

/// Appends one line for `reading` (with a trailing `\n`). Readings whose fields are all
/// faults produce a line with only `faults`, so a failed sensor is visible, not silent.
pub fn encode(out: &mut String, reading: &Reading, tags: &Tags<'_>, quality: &[&str]) {
    out.push_str(reading.values.kind().measurement());
    // Sorted by key: device, site, tenant, zone.
    let pairs = [
        ("device", Some(tags.device)),
        ("site", tags.site),
        ("tenant", Some(tags.tenant)),
        ("zone", tags.zone),
    ];
    for (key, value) in pairs {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.push(',');
            out.push_str(key);
            out.push('=');
            escape_tag(out, v);
        }
    }
    let mut sep = ' ';
    let mut field = |out: &mut String, name: &str| {
        out.push(sep);
        sep = ',';
        out.push_str(name);
        out.push('=');
    };
    let mut faults = String::new();
    for (spec, value) in reading.values.fields() {
        match value {
            Field::Absent => {}
            Field::Fault => {
                if !faults.is_empty() {
                    faults.push(',');
                }
                faults.push_str(spec.name);
            }
            Field::Value(raw) => match spec.render {
                Render::Number { divisor: 1 } => {
                    field(out, spec.name);
                    out.push_str(itoa::Buffer::new().format(raw));
                    out.push('i');
                }
                Render::Number { divisor } => {
                    field(out, spec.name);
                    write_decimal(out, raw, divisor);
                }
                Render::Flags(names) => {
                    for (bit, name) in names.iter().enumerate() {
                        field(out, name);
                        out.push_str(if raw >> bit & 1 == 1 { "true" } else { "false" });
                    }
                }
                Render::Version => {
                    field(out, spec.name);
                    let _ = write!(
                        out,
                        "\"{}.{}.{}\"",
                        raw >> 16 & 0xff,
                        raw >> 8 & 0xff,
                        raw & 0xff
                    );
                }
            },
        }
    }
    if !faults.is_empty() {
        field(out, "faults");
        let _ = write!(out, "\"{faults}\"");
    }
    if !quality.is_empty() {
        field(out, "quality");
        let _ = write!(out, "\"{}\"", quality.join(","));
    }
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(reading.time));
    out.push('\n');
}

/// `raw / divisor` in decimal, exactly (no binary floating point), without trailing zeros:
/// 82/10 → `8.2`, 3600/1000 → `3.6`, 120/10 → `12`. Divisors are powers of ten.
fn write_decimal(out: &mut String, raw: i64, divisor: u32) {
    let d = u64::from(divisor);
    let a = raw.unsigned_abs();
    let (int, mut frac, mut width) = (a / d, a % d, divisor.ilog10() as usize);
    if raw < 0 {
        out.push('-');
    }
    out.push_str(itoa::Buffer::new().format(int));
    if frac == 0 {
        return;
    }
    while frac % 10 == 0 {
        frac /= 10;
        width -= 1;
    }
    out.push('.');
    let digits = itoa::Buffer::new().format(frac).len();
    out.extend(std::iter::repeat_n('0', width - digits));
    out.push_str(itoa::Buffer::new().format(frac));
}

/// Escapes a tag value: `,`, `=` and space get a backslash; control characters become `_`.
fn escape_tag(out: &mut String, v: &str) {
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
        encode(&mut s, &r, &tags(), &["pm1_above_pm25"]);
        assert_eq!(
            s,
            "air_quality,device=aq-0001,site=Place\\ Bellecour\\,\\ 2e,tenant=lyon \
             pm1=8.2,pm25=12.3,temperature=-3.5,relativeHumidity=0.555,co2=415i,\
             faults=\"no2\",quality=\"pm1_above_pm25\" 1795305600\n"
        );
    }

    #[test]
    fn decimals_are_exact() {
        let cases = [
            (82, 10, "8.2"),
            (-35, 10, "-3.5"),
            (555, 1000, "0.555"),
            (3600, 1000, "3.6"),
            (120, 10, "12"),
            (5, 1000, "0.005"),
            (-5, 100, "-0.05"),
            (62, 100, "0.62"),
        ];
        for (raw, div, want) in cases {
            let mut s = String::new();
            write_decimal(&mut s, raw, div);
            assert_eq!(s, want, "{raw}/{div}");
        }
        for kind in protocol::Kind::ALL {
            for spec in kind.fields() {
                if let Render::Number { divisor } = spec.render {
                    assert_eq!(
                        10u32.pow(divisor.ilog10()),
                        divisor,
                        "{} divisor is a power of ten",
                        spec.name
                    );
                }
            }
        }
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
            &Tags {
                zone: Some("nord"),
                site: None,
                ..tags()
            },
            &[],
        );
        assert_eq!(
            s,
            "waste_bin,device=aq-0001,tenant=lyon,zone=nord distance=850i,fillingLevel=0.62,\
             tilted=false,lidOpen=false,fireSuspected=true,batteryVoltage=3.6 10\n"
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
            &Tags {
                site: None,
                ..tags()
            },
            &[],
        );
        assert_eq!(
            s,
            "device_status,device=aq-0001,tenant=lyon rssi=-87i,firmwareVersion=\"1.2.3\" 11\n"
        );
    }
}
