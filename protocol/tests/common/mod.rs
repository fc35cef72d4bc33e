//! Shared fixtures: the SPEC.md example identity and key, typical readings, and the size
//! cases that `examples/sizes.rs` prints and `tests/sizes.rs` holds to the budget.
#![allow(dead_code, clippy::unwrap_used)]

use protocol::varint::varint_len;
use protocol::{
    AirQuality, DeviceKey, DeviceStatus, Field, Identity, Kind, MAX_FRAME_LEN, Reading, Values,
    WasteBin, seal,
};

/// Key of the SPEC.md examples: bytes 00..0f, epoch 1.
pub const KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
/// 2026-11-22T00:00:00Z.
pub const T0: u32 = 1_795_305_600;
/// Counter of the SPEC.md examples.
pub const COUNTER: u32 = 42;

pub fn key() -> DeviceKey {
    DeviceKey::new(KEY, 1)
}

pub fn who() -> Identity<'static> {
    Identity::new("lyon", "aq-0001").unwrap()
}

/// PM1 8.2, PM2.5 12.3, PM10 20.1 µg/m³, 21.4 °C, 55.5 %, 1013.2 hPa.
pub fn aq6() -> Values {
    Values::AirQuality(AirQuality {
        pm1: Field::Value(82),
        pm25: Field::Value(123),
        pm10: Field::Value(201),
        temperature: Field::Value(214),
        relative_humidity: Field::Value(555),
        pressure: Field::Value(10_132),
        ..AirQuality::default()
    })
}

/// Bin 85 cm from the sensor, 62 % full, 14.5 °C, no flag, 3.6 V.
pub fn bin() -> Values {
    Values::WasteBin(WasteBin {
        distance: Field::Value(850),
        fill_level: Field::Value(62),
        temperature: Field::Value(145),
        flags: Field::Value(0),
        battery: Field::Value(3_600),
    })
}

/// 3.6 V, -87 dBm, firmware 0.1.0, a day up, no error, nothing dropped.
pub fn status() -> Values {
    Values::DeviceStatus(DeviceStatus {
        battery: Field::Value(3_600),
        rssi: Field::Value(-87),
        firmware: Field::Value(0x00_01_00),
        uptime: Field::Value(86_400),
        error_flags: Field::Value(0),
        dropped: Field::Value(0),
    })
}

/// Every field of `kind` at the in-range value with the longest encoding.
pub fn largest(kind: Kind) -> Values {
    let mut v = Values::empty(kind);
    for (i, spec) in kind.fields().iter().enumerate() {
        let wire = |raw: i64| spec.to_wire(raw);
        let raw = if varint_len(wire(spec.min)) > varint_len(wire(spec.max)) {
            spec.min
        } else {
            spec.max
        };
        v.set_raw(i, Field::Value(raw)).unwrap();
    }
    v
}

/// `n` readings of `values`, five minutes apart from `T0`.
pub fn series(values: Values, n: u32) -> Vec<Reading> {
    (0..n)
        .map(|i| Reading {
            time: T0 + 300 * i,
            values,
        })
        .collect()
}

/// Size of the sealed frame carrying `readings`.
pub fn sealed_len(readings: &[Reading]) -> usize {
    let mut buf = [0u8; MAX_FRAME_LEN];
    seal(&mut buf, readings, COUNTER, &key(), who())
        .unwrap()
        .len()
}

/// Every case of `examples/sizes`: name and readings.
pub fn size_cases() -> Vec<(&'static str, Vec<Reading>)> {
    vec![
        ("aq6", series(aq6(), 1)),
        ("aq-all-largest", series(largest(Kind::AirQuality), 1)),
        ("bin", series(bin(), 1)),
        ("bin-all-largest", series(largest(Kind::WasteBin), 1)),
        ("status", series(status(), 1)),
        ("status-all-largest", series(largest(Kind::DeviceStatus), 1)),
        ("batch10-aq6", series(aq6(), 10)),
        (
            "batch10-aq-all-largest",
            series(largest(Kind::AirQuality), 10),
        ),
        ("batch10-bin", series(bin(), 10)),
        ("batch10-status", series(status(), 10)),
    ]
}
