//! The reading model: message kinds, their fields as fixed-point integers, and the
//! field table (schema name, unit, range, scaling) that the codec, the JSON view and the
//! gateway's line-protocol encoder all read, so a field is described in exactly one place.

use crate::error::EncodeError;
use crate::varint::{unzigzag, zigzag};

pub use crate::limits::MAX_FIELDS;

/// State of one field of a reading: a sensor that is absent is not a sensor that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Field<T> {
    /// Not measured by this device (no such sensor, or not sampled this time).
    #[default]
    Absent,
    /// Measured value, in the field's fixed-point unit.
    Value(T),
    /// The sensor is fitted but failed to deliver this value.
    Fault,
}

impl<T> Field<T> {
    /// Converts the value, keeping `Absent` and `Fault` as they are.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Field<U> {
        match self {
            Self::Absent => Field::Absent,
            Self::Value(v) => Field::Value(f(v)),
            Self::Fault => Field::Fault,
        }
    }

    /// The value, if one was measured.
    pub fn value(self) -> Option<T> {
        match self {
            Self::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// How a raw field value becomes the value stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    /// `raw / divisor` in the field's unit (an integer when `divisor` is 1).
    Number {
        /// Fixed-point divisor.
        divisor: u32,
    },
    /// Bit `i` set means flag `names[i]` is true; each flag is stored as a boolean.
    Flags(&'static [&'static str]),
    /// `major << 16 | minor << 8 | patch`, shown as `major.minor.patch`.
    Version,
}

/// Description of one field: the single source of truth for name, unit, range and scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// Name in the storage schema (FIWARE Smart Data Models name where one exists).
    pub name: &'static str,
    /// Unit of the stored value (after [`Render`]).
    pub unit: &'static str,
    /// Smallest raw value accepted on the wire.
    pub min: i64,
    /// Largest raw value accepted on the wire.
    pub max: i64,
    /// How the raw value is turned into the stored value.
    pub render: Render,
}

impl FieldSpec {
    const fn number(
        name: &'static str,
        unit: &'static str,
        min: i64,
        max: i64,
        divisor: u32,
    ) -> Self {
        Self {
            name,
            unit,
            min,
            max,
            render: Render::Number { divisor },
        }
    }

    /// Signed fields travel zigzag-encoded.
    pub const fn signed(&self) -> bool {
        self.min < 0
    }

    /// The unsigned value that travels as a varint: zigzag for signed fields. `raw` must
    /// be in range (so it fits 32 bits).
    pub const fn to_wire(&self, raw: i64) -> u32 {
        if self.signed() {
            zigzag(raw as i32)
        } else {
            raw as u32
        }
    }

    /// Inverse of [`Self::to_wire`].
    pub const fn from_wire(&self, wire: u32) -> i64 {
        if self.signed() {
            unzigzag(wire) as i64
        } else {
            wire as i64
        }
    }

    /// True when `raw` is inside the documented range.
    pub const fn in_range(&self, raw: i64) -> bool {
        raw >= self.min && raw <= self.max
    }

    /// The physical value of a [`Render::Number`] field (`raw / divisor`).
    pub fn physical(&self, raw: i64) -> f64 {
        match self.render {
            Render::Number { divisor } => raw as f64 / f64::from(divisor),
            Render::Flags(_) | Render::Version => raw as f64,
        }
    }
}

/// Message kind, the low nibble of the header byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Kind {
    /// Air-quality observation.
    AirQuality = 1,
    /// Waste-bin observation.
    WasteBin = 2,
    /// Device health report.
    DeviceStatus = 3,
    /// Energy ledger: time the node spent in each power state (SPEC §4.1).
    Energy = 4,
}

impl Kind {
    /// All kinds, in code order.
    pub const ALL: [Kind; 4] = [
        Kind::AirQuality,
        Kind::WasteBin,
        Kind::DeviceStatus,
        Kind::Energy,
    ];

    /// The kind for a header code, if known.
    pub const fn from_code(code: u8) -> Option<Kind> {
        match code {
            1 => Some(Kind::AirQuality),
            2 => Some(Kind::WasteBin),
            3 => Some(Kind::DeviceStatus),
            4 => Some(Kind::Energy),
            _ => None,
        }
    }

    /// The header code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The kind's fields, in bitmap order (bit `i` of the presence map is `fields()[i]`).
    pub const fn fields(self) -> &'static [FieldSpec] {
        match self {
            Kind::AirQuality => AIR_QUALITY_FIELDS,
            Kind::WasteBin => WASTE_BIN_FIELDS,
            Kind::DeviceStatus => DEVICE_STATUS_FIELDS,
            Kind::Energy => ENERGY_FIELDS,
        }
    }

    /// Measurement name in the time-series store.
    pub const fn measurement(self) -> &'static str {
        match self {
            Kind::AirQuality => "air_quality",
            Kind::WasteBin => "waste_bin",
            Kind::DeviceStatus => "device_status",
            Kind::Energy => "device_energy",
        }
    }

    /// FIWARE Smart Data Models entity type the fields follow.
    pub const fn entity_type(self) -> &'static str {
        match self {
            Kind::AirQuality => "AirQualityObserved",
            Kind::WasteBin => "WasteContainer",
            Kind::DeviceStatus | Kind::Energy => "Device",
        }
    }

    /// Whether every device sends this kind, whatever it measures (status and energy).
    pub const fn of_every_device(self) -> bool {
        matches!(self, Kind::DeviceStatus | Kind::Energy)
    }
}

/// Defines a kind's struct (one `Field` per entry) and its field table in one list, so the
/// bitmap order, the struct and the table can never disagree.
macro_rules! measurements {
    (
        $(#[$meta:meta])* $name:ident, $table:ident,
        [ $( $(#[$fmeta:meta])* $field:ident : $ty:ty => $spec:expr ),+ $(,)? ]
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: Field<$ty>, )+
        }

        const $table: &[FieldSpec] = &[ $( $spec ),+ ];

        impl $name {
            /// Calls `f` with every field sent (a value or a fault) widened to `i64` and
            /// its description, in bitmap order.
            fn each_sent_field(&self, f: &mut impl FnMut(&'static FieldSpec, Field<i64>)) {
                let mut n = 0;
                $(
                    if !matches!(self.$field, Field::Absent) {
                        f(&$table[n], self.$field.map(i64::from));
                    }
                    n += 1;
                )+
                let _ = n;
            }

            /// Field `i` (bitmap order) widened to `i64`; absent past the last.
            pub fn get(&self, i: usize) -> Field<i64> {
                // Same shape as `set`: the constant indices fold into compares, no copy.
                let mut n = 0;
                $(
                    if i == n {
                        return self.$field.map(i64::from);
                    }
                    n += 1;
                )+
                let _ = n;
                Field::Absent
            }

            /// Sets field `i` (bitmap order). The caller has checked the range against the
            /// table, so the narrowing cast cannot lose bits.
            pub(crate) fn set(&mut self, i: usize, value: Field<i64>) {
                let mut n = 0;
                $(
                    if i == n {
                        self.$field = value.map(|v| v as $ty);
                    }
                    n += 1;
                )+
                let _ = n;
            }
        }
    };
}

measurements! {
    /// Air-quality observation. Field order is the presence-bitmap order: the six values
    /// every node reports come first so their bitmap fits in one byte.
    AirQuality, AIR_QUALITY_FIELDS, [
        /// PM1, 0.1 µg/m³.
        pm1: u16 => FieldSpec::number("pm1", "µg/m³", 0, 10_000, 10),
        /// PM2.5, 0.1 µg/m³.
        pm25: u16 => FieldSpec::number("pm25", "µg/m³", 0, 10_000, 10),
        /// PM10, 0.1 µg/m³.
        pm10: u16 => FieldSpec::number("pm10", "µg/m³", 0, 10_000, 10),
        /// Air temperature, 0.1 °C.
        temperature: i16 => FieldSpec::number("temperature", "°C", -400, 1_250, 10),
        /// Relative humidity, 0.1 %; stored as a fraction 0–1 as FIWARE defines it.
        relative_humidity: u16 => FieldSpec::number("relativeHumidity", "fraction 0-1", 0, 1_000, 1_000),
        /// Atmospheric pressure, 0.1 hPa.
        pressure: u16 => FieldSpec::number("atmosphericPressure", "hPa", 3_000, 11_000, 10),
        /// NO2, 0.1 µg/m³.
        no2: u16 => FieldSpec::number("no2", "µg/m³", 0, 10_000, 10),
        /// O3, 0.1 µg/m³.
        o3: u16 => FieldSpec::number("o3", "µg/m³", 0, 10_000, 10),
        /// CO2, 1 ppm.
        co2: u16 => FieldSpec::number("co2", "ppm", 0, 40_000, 1),
        /// Equivalent continuous noise level, 0.1 dB(A).
        noise: u16 => FieldSpec::number("LAeq", "dB(A)", 0, 1_500, 10),
    ]
}

/// Bit positions of [`WasteBin::flags`].
pub mod bin_flags {
    /// The container is tilted or knocked over.
    pub const TILTED: u8 = 1 << 0;
    /// The lid is open.
    pub const LID_OPEN: u8 = 1 << 1;
    /// Temperature rise suggests a fire.
    pub const FIRE_SUSPECTED: u8 = 1 << 2;
    /// Names of the flags in bit order, as stored.
    pub const NAMES: &[&str] = &["tilted", "lidOpen", "fireSuspected"];
}

measurements! {
    /// Waste-bin observation.
    WasteBin, WASTE_BIN_FIELDS, [
        /// Distance from the sensor to the waste surface, 1 mm.
        distance: u16 => FieldSpec::number("distance", "mm", 0, 10_000, 1),
        /// Fill level, 1 %; stored as a fraction 0–1 as FIWARE `fillingLevel` defines it.
        fill_level: u8 => FieldSpec::number("fillingLevel", "fraction 0-1", 0, 100, 100),
        /// Temperature inside the bin, 0.1 °C.
        temperature: i16 => FieldSpec::number("temperature", "°C", -400, 1_250, 10),
        /// Bit field, see [`bin_flags`].
        flags: u8 => FieldSpec {
            name: "flags", unit: "", min: 0, max: 0b111, render: Render::Flags(bin_flags::NAMES),
        },
        /// Battery voltage, 1 mV; stored in volts.
        battery: u16 => FieldSpec::number("batteryVoltage", "V", 0, 20_000, 1_000),
    ]
}

/// Bit positions of [`DeviceStatus::error_flags`] (other bits are reserved and kept as sent).
pub mod error_flags {
    /// Particulate-matter sensor not answering or failing checksums.
    pub const PM_SENSOR: u16 = 1 << 0;
    /// Temperature/humidity/pressure sensor not answering.
    pub const CLIMATE_SENSOR: u16 = 1 << 1;
    /// Distance sensor not answering.
    pub const DISTANCE_SENSOR: u16 = 1 << 2;
    /// Configuration or counter storage failed.
    pub const STORAGE: u16 = 1 << 3;
    /// Uplink failed since the last status report.
    pub const UPLINK: u16 = 1 << 4;
    /// The last reset came from the watchdog.
    pub const WATCHDOG_RESET: u16 = 1 << 5;
    /// The last reset came from a brown-out.
    pub const BROWNOUT_RESET: u16 = 1 << 6;
}

measurements! {
    /// Device health report.
    DeviceStatus, DEVICE_STATUS_FIELDS, [
        /// Battery voltage, 1 mV; stored in volts.
        battery: u16 => FieldSpec::number("batteryVoltage", "V", 0, 20_000, 1_000),
        /// Received signal strength, 1 dBm.
        rssi: i16 => FieldSpec::number("rssi", "dBm", -200, 0, 1),
        /// Firmware version, `major << 16 | minor << 8 | patch`.
        firmware: u32 => FieldSpec {
            name: "firmwareVersion", unit: "", min: 0, max: 0xff_ffff, render: Render::Version,
        },
        /// Seconds since boot.
        uptime: u32 => FieldSpec::number("uptime", "s", 0, u32::MAX as i64, 1),
        /// Bit field, see [`error_flags`].
        error_flags: u16 => FieldSpec::number("errorFlags", "", 0, u16::MAX as i64, 1),
        /// Readings the on-board queue dropped since boot (oldest first, when full).
        dropped: u32 => FieldSpec::number("droppedReadings", "", 0, u32::MAX as i64, 1),
    ]
}

measurements! {
    /// Energy ledger: milliseconds the node spent in each state since its previous
    /// ledger (or its boot), stored in seconds. The MCU is awake or asleep at every
    /// moment; modem and sensor times overlap them.
    Energy, ENERGY_FIELDS, [
        /// The MCU running.
        awake: u32 => FieldSpec::number("cpuAwakeTime", "s", 0, u32::MAX as i64, 1_000),
        /// The MCU asleep (`wfi`, or a low-power mode).
        asleep: u32 => FieldSpec::number("cpuAsleepTime", "s", 0, u32::MAX as i64, 1_000),
        /// The modem powered (registered or attaching; not in PSM or off).
        modem_on: u32 => FieldSpec::number("modemOnTime", "s", 0, u32::MAX as i64, 1_000),
        /// The modem exchanging data (connect, send, await the answer).
        modem_active: u32 => FieldSpec::number("modemActiveTime", "s", 0, u32::MAX as i64, 1_000),
        /// The power-hungry sensor of the node's kind powered (the PM sensor's fan and
        /// laser, the ultrasonic ranger).
        sensor_on: u32 => FieldSpec::number("sensorOnTime", "s", 0, u32::MAX as i64, 1_000),
    ]
}

const _: () = assert!(AIR_QUALITY_FIELDS.len() <= MAX_FIELDS);
const _: () = assert!(ENERGY_FIELDS.len() <= MAX_FIELDS);
const _: () = assert!(WASTE_BIN_FIELDS.len() <= MAX_FIELDS);
const _: () = assert!(DEVICE_STATUS_FIELDS.len() <= MAX_FIELDS);

/// The fields of one reading, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Values {
    /// See [`AirQuality`].
    AirQuality(AirQuality),
    /// See [`WasteBin`].
    WasteBin(WasteBin),
    /// See [`DeviceStatus`].
    DeviceStatus(DeviceStatus),
    /// See [`Energy`].
    Energy(Energy),
}

impl Values {
    /// A reading of `kind` with every field absent.
    pub fn empty(kind: Kind) -> Self {
        match kind {
            Kind::AirQuality => Self::AirQuality(AirQuality::default()),
            Kind::WasteBin => Self::WasteBin(WasteBin::default()),
            Kind::DeviceStatus => Self::DeviceStatus(DeviceStatus::default()),
            Kind::Energy => Self::Energy(Energy::default()),
        }
    }

    /// The kind of these values.
    pub const fn kind(&self) -> Kind {
        match self {
            Self::AirQuality(_) => Kind::AirQuality,
            Self::WasteBin(_) => Kind::WasteBin,
            Self::DeviceStatus(_) => Kind::DeviceStatus,
            Self::Energy(_) => Kind::Energy,
        }
    }

    /// Field `i` in bitmap order.
    pub fn get(&self, i: usize) -> Field<i64> {
        match self {
            Self::AirQuality(v) => v.get(i),
            Self::WasteBin(v) => v.get(i),
            Self::DeviceStatus(v) => v.get(i),
            Self::Energy(v) => v.get(i),
        }
    }

    /// Sets field `i` (bitmap order) from a raw value, checking index and range.
    pub fn set_raw(&mut self, i: usize, value: Field<i64>) -> Result<(), EncodeError> {
        let spec = self
            .kind()
            .fields()
            .get(i)
            .ok_or(EncodeError::OutOfRange { field: i as u8 })?;
        if let Field::Value(raw) = value
            && !spec.in_range(raw)
        {
            return Err(EncodeError::OutOfRange { field: i as u8 });
        }
        self.set(i, value);
        Ok(())
    }

    /// Unchecked [`Self::set_raw`] for values already checked against the table.
    pub(crate) fn set(&mut self, i: usize, value: Field<i64>) {
        match self {
            Self::AirQuality(v) => v.set(i, value),
            Self::WasteBin(v) => v.set(i, value),
            Self::DeviceStatus(v) => v.set(i, value),
            Self::Energy(v) => v.set(i, value),
        }
    }

    /// Every field with its description, in bitmap order (read in place, not copied).
    pub fn fields(&self) -> impl Iterator<Item = (&'static FieldSpec, Field<i64>)> + '_ {
        let specs = self.kind().fields().iter().enumerate();
        specs.map(move |(i, spec)| (spec, self.get(i)))
    }

    /// Calls `f` with what [`Self::fields`] yields that was sent (a value or a fault),
    /// without looking each field up by its index: for the gateway's hot path, where
    /// those lookups were 2 % of the instructions per reading, and a call per absent
    /// field 1.8 % (docs/PERFORMANCE.md).
    pub fn each_sent_field(&self, mut f: impl FnMut(&'static FieldSpec, Field<i64>)) {
        match self {
            Self::AirQuality(v) => v.each_sent_field(&mut f),
            Self::WasteBin(v) => v.each_sent_field(&mut f),
            Self::DeviceStatus(v) => v.each_sent_field(&mut f),
            Self::Energy(v) => v.each_sent_field(&mut f),
        }
    }
}

/// One timestamped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reading {
    /// Measurement time, seconds since 1970-01-01T00:00:00Z (UTC).
    pub time: u32,
    /// The measured fields.
    pub values: Values,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sent_field_visits_what_fields_yields_but_absent_ones() {
        for kind in Kind::ALL {
            // Values, faults and absent fields in turn, each value different.
            let mut v = Values::empty(kind);
            for (i, spec) in kind.fields().iter().enumerate() {
                let value = spec.min + (i as i64 * 7) % (spec.max - spec.min + 1);
                match i % 3 {
                    0 => v.set(i, Field::Value(value)),
                    1 => v.set(i, Field::Fault),
                    _ => {}
                }
            }
            let mut expected = v.fields().filter(|(_, f)| *f != Field::Absent);
            let mut visited = 0;
            v.each_sent_field(|spec, field| {
                let (want_spec, want_field) = expected.next().expect("no more fields");
                assert_eq!(spec, want_spec);
                assert_eq!(field, want_field, "{}", spec.name);
                visited += 1;
            });
            assert!(expected.next().is_none());
            let sent = (0..kind.fields().len()).filter(|i| i % 3 != 2).count();
            assert_eq!(visited, sent);
        }
    }

    #[test]
    fn get_and_set_follow_the_table() {
        for kind in Kind::ALL {
            for (i, spec) in kind.fields().iter().enumerate() {
                let mut v = Values::empty(kind);
                v.set(i, Field::Value(spec.max));
                assert_eq!(v.get(i), Field::Value(spec.max), "{} max", spec.name);
                v.set(i, Field::Value(spec.min));
                assert_eq!(v.get(i), Field::Value(spec.min), "{} min", spec.name);
                v.set(i, Field::Fault);
                assert_eq!(v.get(i), Field::Fault);
                // No other field moved.
                let others = (0..kind.fields().len()).filter(|&j| j != i);
                assert!(others.into_iter().all(|j| v.get(j) == Field::Absent));
                let field = i as u8;
                assert_eq!(
                    v.set_raw(i, Field::Value(spec.max + 1)),
                    Err(EncodeError::OutOfRange { field })
                );
                assert_eq!(
                    v.set_raw(i, Field::Value(spec.min - 1)),
                    Err(EncodeError::OutOfRange { field })
                );
                assert_eq!(v.set_raw(i, Field::Value(spec.min)), Ok(()));
            }
            let n = kind.fields().len();
            assert!(Values::empty(kind).set_raw(n, Field::Fault).is_err());
            assert_eq!(Kind::from_code(kind.code()), Some(kind));
            // Bitmaps are u32 with one bit kept for the fault-map flag.
            assert!(kind.fields().len() < 31);
        }
        assert_eq!(Kind::from_code(0), None);
    }

    #[test]
    fn physical_values() {
        let rh = &Kind::AirQuality.fields()[4];
        assert_eq!(rh.name, "relativeHumidity");
        assert!((rh.physical(555) - 0.555).abs() < 1e-12);
        assert!(Kind::AirQuality.fields()[3].signed());
        assert!(!Kind::AirQuality.fields()[0].signed());
    }
}
