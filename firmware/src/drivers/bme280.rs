//! Bosch BME280 temperature / humidity / pressure sensor over I2C, in forced mode (one
//! measurement per request, then sleep: about 0.1 µA between samples), with the
//! datasheet's integer compensation formulas (BST-BME280-DS002, §4.2.3 and §8.2).
//!
//! Written here (a page of code) so the node uses integer-only compensation, forced mode
//! and the protocol's fixed-point units, all under the datasheet's worked example.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

/// Default I2C address (SDO to GND); 0x77 with SDO to VDDIO.
pub const ADDRESS: u8 = 0x76;
const CHIP_ID: u8 = 0x60;
const REG_ID: u8 = 0xd0;
const REG_CALIB_00: u8 = 0x88;
const REG_CALIB_26: u8 = 0xe1;
const REG_CTRL_HUM: u8 = 0xf2;
const REG_CTRL_MEAS: u8 = 0xf4;
const REG_DATA: u8 = 0xf7;
/// ctrl_meas: osrs_t ×1 (bits 7..5 = 001), osrs_p ×1 (bits 4..2 = 001), forced mode (01).
const CTRL_MEAS_FORCED_X1: u8 = (0b001 << 5) | (0b001 << 2) | 0b01;
const CTRL_HUM_X1: u8 = 0b001;
/// Worst-case measurement time at ×1 oversampling (datasheet §9.1: 9.3 ms).
const MEASURE_MS: u32 = 10;

/// Why a BME280 read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error<E> {
    /// The bus failed (kept as the bus reported it).
    I2c(E),
    /// Something answers at the address, but not a BME280 (chip id).
    WrongChip(u8),
}

#[cfg(feature = "defmt")]
impl<E: core::fmt::Debug> defmt::Format for Error<E> {
    fn format(&self, f: defmt::Formatter<'_>) {
        match self {
            Self::I2c(e) => defmt::write!(f, "BME280 I2C error: {}", defmt::Debug2Format(e)),
            Self::WrongChip(id) => defmt::write!(f, "not a BME280 (chip id {=u8:#x})", id),
        }
    }
}

/// One measurement in the protocol's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Climate {
    /// 0.1 °C.
    pub temperature: i16,
    /// 0.1 %RH.
    pub humidity: u16,
    /// 0.1 hPa.
    pub pressure: u16,
}

/// Factory calibration read from the chip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calibration {
    t1: u16,
    t2: i16,
    t3: i16,
    p: [i64; 9],
    h1: u8,
    h2: i16,
    h3: u8,
    h4: i16,
    h5: i16,
    h6: i8,
}

impl Calibration {
    /// Parses the 26 bytes at 0x88 and the 7 bytes at 0xE1.
    pub fn parse(a: &[u8; 26], b: &[u8; 7]) -> Self {
        let u = |i: usize| u16::from_le_bytes([a[i], a[i + 1]]);
        let s = |i: usize| i16::from_le_bytes([a[i], a[i + 1]]);
        let mut p = [0i64; 9];
        p[0] = i64::from(u(6));
        for (k, v) in p.iter_mut().enumerate().skip(1) {
            *v = i64::from(s(6 + 2 * k));
        }
        Self {
            t1: u(0),
            t2: s(2),
            t3: s(4),
            p,
            h1: a[25],
            h2: i16::from_le_bytes([b[0], b[1]]),
            h3: b[2],
            h4: (i16::from(b[3] as i8) << 4) | i16::from(b[4] & 0x0f),
            h5: (i16::from(b[5] as i8) << 4) | i16::from(b[4] >> 4),
            h6: b[6] as i8,
        }
    }

    /// Temperature in 0.01 °C and the `t_fine` the other formulas need.
    pub fn temperature(&self, adc_t: i32) -> (i32, i32) {
        let (t1, t2, t3) = (i32::from(self.t1), i32::from(self.t2), i32::from(self.t3));
        let var1 = (((adc_t >> 3) - (t1 << 1)) * t2) >> 11;
        let var2 = (((((adc_t >> 4) - t1) * ((adc_t >> 4) - t1)) >> 12) * t3) >> 14;
        let t_fine = var1 + var2;
        ((t_fine * 5 + 128) >> 8, t_fine)
    }

    /// Pressure in Pa as Q24.8 (divide by 256), or 0 on a degenerate calibration.
    pub fn pressure(&self, adc_p: i32, t_fine: i32) -> u32 {
        let p = &self.p;
        let mut var1 = i64::from(t_fine) - 128_000;
        let mut var2 = var1 * var1 * p[5];
        var2 += (var1 * p[4]) << 17;
        var2 += p[3] << 35;
        var1 = ((var1 * var1 * p[2]) >> 8) + ((var1 * p[1]) << 12);
        var1 = (((1i64 << 47) + var1) * p[0]) >> 33;
        if var1 == 0 {
            return 0;
        }
        let mut pr = 1_048_576 - i64::from(adc_p);
        pr = (((pr << 31) - var2) * 3125) / var1;
        var1 = (p[8] * (pr >> 13) * (pr >> 13)) >> 25;
        var2 = (p[7] * pr) >> 19;
        pr = ((pr + var1 + var2) >> 8) + (p[6] << 4);
        pr as u32
    }

    /// Relative humidity in %RH as Q22.10 (divide by 1024).
    pub fn humidity(&self, adc_h: i32, t_fine: i32) -> u32 {
        let (h1, h2, h3) = (i32::from(self.h1), i32::from(self.h2), i32::from(self.h3));
        let (h4, h5, h6) = (i32::from(self.h4), i32::from(self.h5), i32::from(self.h6));
        let mut v = t_fine - 76_800;
        v = ((((adc_h << 14) - (h4 << 20) - (h5 * v)) + 16_384) >> 15)
            * (((((((v * h6) >> 10) * (((v * h3) >> 11) + 32_768)) >> 10) + 2_097_152) * h2
                + 8192)
                >> 14);
        v -= ((((v >> 15) * (v >> 15)) >> 7) * h1) >> 4;
        v = v.clamp(0, 419_430_400);
        (v >> 12) as u32
    }

    /// The three values from raw ADC readings, in the protocol's units.
    pub fn compensate(&self, adc_t: i32, adc_p: i32, adc_h: i32) -> Climate {
        let (t, t_fine) = self.temperature(adc_t);
        let pa_q8 = self.pressure(adc_p, t_fine);
        let rh_q10 = self.humidity(adc_h, t_fine);
        Climate {
            // 0.01 °C → 0.1 °C, rounded.
            temperature: ((t + if t >= 0 { 5 } else { -5 }) / 10) as i16,
            // Pa·256 → 0.1 hPa (10 Pa), rounded.
            pressure: ((pa_q8 + 1280) / 2560) as u16,
            // %RH·1024 → 0.1 %, rounded.
            humidity: ((rh_q10 * 10 + 512) / 1024) as u16,
        }
    }
}

/// The driver.
#[derive(Debug)]
pub struct Bme280<I> {
    i2c: I,
    address: u8,
    calibration: Calibration,
}

impl<I: I2c> Bme280<I> {
    /// Checks the chip id and reads the calibration.
    pub fn new(mut i2c: I, address: u8) -> Result<Self, Error<I::Error>> {
        let mut id = [0u8];
        i2c.write_read(address, &[REG_ID], &mut id)
            .map_err(Error::I2c)?;
        if id[0] != CHIP_ID {
            return Err(Error::WrongChip(id[0]));
        }
        let (mut a, mut b) = ([0u8; 26], [0u8; 7]);
        i2c.write_read(address, &[REG_CALIB_00], &mut a)
            .map_err(Error::I2c)?;
        i2c.write_read(address, &[REG_CALIB_26], &mut b)
            .map_err(Error::I2c)?;
        Ok(Self {
            i2c,
            address,
            calibration: Calibration::parse(&a, &b),
        })
    }

    /// One forced measurement.
    pub fn measure(&mut self, delay: &mut impl DelayNs) -> Result<Climate, Error<I::Error>> {
        // ctrl_hum only takes effect after a write to ctrl_meas (datasheet §5.4.3).
        self.i2c
            .write(self.address, &[REG_CTRL_HUM, CTRL_HUM_X1])
            .map_err(Error::I2c)?;
        self.i2c
            .write(self.address, &[REG_CTRL_MEAS, CTRL_MEAS_FORCED_X1])
            .map_err(Error::I2c)?;
        delay.delay_ms(MEASURE_MS);
        let mut d = [0u8; 8];
        self.i2c
            .write_read(self.address, &[REG_DATA], &mut d)
            .map_err(Error::I2c)?;
        let adc_p = (i32::from(d[0]) << 12) | (i32::from(d[1]) << 4) | (i32::from(d[2]) >> 4);
        let adc_t = (i32::from(d[3]) << 12) | (i32::from(d[4]) << 4) | (i32::from(d[5]) >> 4);
        let adc_h = (i32::from(d[6]) << 8) | i32::from(d[7]);
        Ok(self.calibration.compensate(adc_t, adc_p, adc_h))
    }

    /// Gives the bus back.
    pub fn release(self) -> I {
        self.i2c
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
    use std::vec::Vec;

    /// The worked example of the BMP280 datasheet (BST-BMP280-DS001 §3.12), whose
    /// temperature and pressure compensation the BME280 shares.
    fn example_calibration_bytes() -> [u8; 26] {
        let words: [i32; 12] = [
            27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000,
        ];
        let mut a = [0u8; 26];
        for (i, w) in words.iter().enumerate() {
            a[2 * i..2 * i + 2].copy_from_slice(&(*w as i16 as u16).to_le_bytes());
        }
        a[25] = 75; // H1
        a
    }

    /// Humidity calibration of a production sensor, as read from its 0xE1..0xE7 registers.
    const HUM_BYTES: [u8; 7] = [0x6c, 0x01, 0x00, 0x13, 0x28, 0x03, 0x1e];

    #[test]
    fn datasheet_example_temperature_and_pressure() {
        let c = Calibration::parse(&example_calibration_bytes(), &HUM_BYTES);
        let (t, t_fine) = c.temperature(519_888);
        assert_eq!(t, 2508, "25.08 °C");
        assert_eq!(t_fine, 128_422);
        let pa = c.pressure(415_148, t_fine);
        assert_eq!(pa / 256, 100_653, "100 653 Pa");
    }

    #[test]
    fn humidity_parses_the_split_nibbles_and_stays_in_range() {
        let c = Calibration::parse(&example_calibration_bytes(), &HUM_BYTES);
        assert_eq!((c.h2, c.h3, c.h4, c.h5, c.h6), (364, 0, 312, 50, 30));
        let (_, t_fine) = c.temperature(519_888);
        let mut last = 0;
        for adc_h in (20_000..40_000).step_by(500) {
            let rh = c.humidity(adc_h, t_fine);
            assert!(rh <= 100 * 1024, "at most 100 %RH");
            assert!(rh >= last, "monotonic in the raw value");
            last = rh;
        }
        assert_eq!(c.humidity(0, t_fine), 0, "clamped at 0 %RH");
    }

    #[test]
    fn forced_measurement_transactions() {
        let a = example_calibration_bytes();
        // adc_P = 415148 (0x655AC), adc_T = 519888 (0x7EED0), adc_H = 0x6A00.
        let data = [0x65, 0x5a, 0xc0, 0x7e, 0xed, 0x00, 0x6a, 0x00];
        let expectations = [
            Transaction::write_read(ADDRESS, Vec::from([REG_ID]), Vec::from([CHIP_ID])),
            Transaction::write_read(ADDRESS, Vec::from([REG_CALIB_00]), Vec::from(a)),
            Transaction::write_read(ADDRESS, Vec::from([REG_CALIB_26]), Vec::from(HUM_BYTES)),
            Transaction::write(ADDRESS, Vec::from([REG_CTRL_HUM, CTRL_HUM_X1])),
            Transaction::write(ADDRESS, Vec::from([REG_CTRL_MEAS, CTRL_MEAS_FORCED_X1])),
            Transaction::write_read(ADDRESS, Vec::from([REG_DATA]), Vec::from(data)),
        ];
        let mut mock = Mock::new(&expectations);
        let mut bme = Bme280::new(mock.clone(), ADDRESS).unwrap_or_else(|e| panic!("{e:?}"));
        let climate = bme
            .measure(&mut NoopDelay::new())
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (climate.temperature, climate.pressure),
            (251, 10_065),
            "25.1 °C, 1006.5 hPa"
        );
        assert!(climate.humidity <= 1000);
        mock.done();
    }

    #[test]
    fn wrong_chip_is_named() {
        let mut mock = Mock::new(&[Transaction::write_read(
            ADDRESS,
            Vec::from([REG_ID]),
            Vec::from([0x58]),
        )]);
        assert_eq!(
            Bme280::new(mock.clone(), ADDRESS).err(),
            Some(Error::WrongChip(0x58)),
            "a BMP280"
        );
        mock.done();
    }
}
