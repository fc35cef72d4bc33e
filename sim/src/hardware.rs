//! Simulated boards: sensors behind the same embedded-hal traits the real drivers use, so
//! the firmware's drivers parse real frames and registers (checksums, compensation), and a
//! flash for the frame counter. Time is the device's virtual clock.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use embedded_hal::i2c::{self, Operation};
use embedded_hal_nb::{nb, serial};
use embedded_storage::nor_flash::{
    ErrorType as FlashErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash,
};
use firmware::drivers::bme280::Calibration;

use crate::signals;

/// A device's virtual clock (Unix seconds), shared by its sensors.
#[derive(Debug, Clone, Default)]
pub struct Clock(Arc<AtomicU32>);

impl Clock {
    /// The current virtual time.
    pub fn now(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// Moves the clock.
    pub fn set(&self, t: u32) {
        self.0.store(t, Ordering::Relaxed);
    }
}

/// The one error simulated buses give: the sensor is not answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAnswering;

impl serial::Error for NotAnswering {
    fn kind(&self) -> serial::ErrorKind {
        serial::ErrorKind::Other
    }
}

impl i2c::Error for NotAnswering {
    fn kind(&self) -> i2c::ErrorKind {
        i2c::ErrorKind::NoAcknowledge(i2c::NoAcknowledgeSource::Address)
    }
}

/// Sensor numbers for [`signals::faulty`].
const PM_SENSOR: u64 = 1;
const CLIMATE_SENSOR: u64 = 2;
const DISTANCE_SENSOR: u64 = 3;

/// SDS011 on a UART: data frames at 1 Hz while working, sleep/work commands answered.
#[derive(Debug)]
pub struct Sds011Sim {
    clock: Clock,
    seed: u64,
    working: bool,
    out: VecDeque<u8>,
    command: Vec<u8>,
    frames: u32,
}

impl Sds011Sim {
    /// A sensor for device `seed`.
    pub fn new(clock: Clock, seed: u64) -> Self {
        Self {
            clock,
            seed,
            working: true,
            out: VecDeque::new(),
            command: Vec::new(),
            frames: 0,
        }
    }

    fn data_frame(&mut self) {
        let t = self.clock.now();
        self.frames = self.frames.wrapping_add(1);
        // Successive frames of one window differ a little, as a real sensor's do.
        let jitter = 1.0 + (signals::mix(self.seed ^ u64::from(self.frames)) % 7) as f64 / 100.0;
        let (pm25, pm10) = signals::pm(self.seed, t);
        let raw = |v: f64| ((v * jitter * 10.0).round() as u16).min(9999).to_le_bytes();
        let (a, b) = (raw(pm25), raw(pm10));
        let mut f = [0xaa, 0xc0, a[0], a[1], b[0], b[1], 0x12, 0x34, 0, 0xab];
        f[8] = f[2..8].iter().fold(0u8, |s, x| s.wrapping_add(*x));
        self.out.extend(f);
    }
}

impl serial::ErrorType for Sds011Sim {
    type Error = NotAnswering;
}

impl serial::Read<u8> for Sds011Sim {
    fn read(&mut self) -> nb::Result<u8, NotAnswering> {
        if self.out.is_empty() {
            if !self.working || signals::faulty(self.seed, PM_SENSOR, self.clock.now()) {
                return Err(nb::Error::Other(NotAnswering));
            }
            self.data_frame();
        }
        self.out.pop_front().ok_or(nb::Error::Other(NotAnswering))
    }
}

impl serial::Write<u8> for Sds011Sim {
    fn write(&mut self, byte: u8) -> nb::Result<(), NotAnswering> {
        self.command.push(byte);
        if self.command.len() == 19 {
            let c = std::mem::take(&mut self.command);
            if c[0] == 0xaa && c[1] == 0xb4 && c[2] == 0x06 && c[3] == 0x01 {
                self.working = c[4] == 1;
                let mut f = [0xaa, 0xc5, 0x06, 0x01, c[4], 0x00, 0x12, 0x34, 0, 0xab];
                f[8] = f[2..8].iter().fold(0u8, |s, x| s.wrapping_add(*x));
                self.out.extend(f);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> nb::Result<(), NotAnswering> {
        Ok(())
    }
}

/// The BMP280 datasheet's example calibration (the BME280 shares it) and a production
/// sensor's humidity calibration, as the registers hold them.
fn calibration_registers() -> ([u8; 26], [u8; 7]) {
    let words: [i32; 12] = [
        27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000,
    ];
    let mut a = [0u8; 26];
    for (i, w) in words.iter().enumerate() {
        a[2 * i..2 * i + 2].copy_from_slice(&(*w as i16 as u16).to_le_bytes());
    }
    a[25] = 75;
    (a, [0x6c, 0x01, 0x00, 0x13, 0x28, 0x03, 0x1e])
}

/// Smallest `x` in `lo..hi` with `f(x) >= target` for an increasing `f`.
fn invert(mut lo: i32, mut hi: i32, target: i64, f: impl Fn(i32) -> i64) -> i32 {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if f(mid) < target {
            lo = mid + 1
        } else {
            hi = mid
        }
    }
    lo
}

/// BME280 on I2C: chip id, calibration, and raw ADC values that the datasheet's
/// compensation turns back into the simulated climate.
#[derive(Debug)]
pub struct Bme280Sim {
    clock: Clock,
    seed: u64,
    offset: f64,
    pointer: u8,
    calibration: Calibration,
    registers: ([u8; 26], [u8; 7]),
}

impl Bme280Sim {
    /// A sensor for device `seed`, reading `offset` °C above the air (inside a bin).
    pub fn new(clock: Clock, seed: u64, offset: f64) -> Self {
        let registers = calibration_registers();
        Self {
            clock,
            seed,
            offset,
            pointer: 0,
            calibration: Calibration::parse(&registers.0, &registers.1),
            registers,
        }
    }

    fn data(&self) -> [u8; 8] {
        let (temp, rh, hpa) = signals::climate(self.seed, self.clock.now());
        let c = &self.calibration;
        let target_t = ((temp + self.offset) * 100.0).round() as i64;
        let adc_t = invert(0, 1 << 20, target_t, |x| i64::from(c.temperature(x).0));
        let t_fine = c.temperature(adc_t).1;
        // Pressure falls as its ADC value rises: invert the negated function.
        let target_p = -((hpa * 100.0 * 256.0) as i64);
        let adc_p = invert(0, 1 << 20, target_p, |x| -i64::from(c.pressure(x, t_fine)));
        let target_h = (rh * 1024.0) as i64;
        let adc_h = invert(0, 1 << 16, target_h, |x| i64::from(c.humidity(x, t_fine)));
        let (p, t) = (adc_p as u32, adc_t as u32);
        [
            (p >> 12) as u8,
            (p >> 4) as u8,
            ((p & 0xf) << 4) as u8,
            (t >> 12) as u8,
            (t >> 4) as u8,
            ((t & 0xf) << 4) as u8,
            (adc_h >> 8) as u8,
            adc_h as u8,
        ]
    }
}

impl i2c::ErrorType for Bme280Sim {
    type Error = NotAnswering;
}

impl i2c::I2c for Bme280Sim {
    fn transaction(
        &mut self,
        _address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), NotAnswering> {
        if signals::faulty(self.seed, CLIMATE_SENSOR, self.clock.now()) {
            return Err(NotAnswering);
        }
        for op in operations {
            match op {
                // Register pointer first; further bytes are register writes (ctrl_*).
                Operation::Write(bytes) => self.pointer = bytes.first().copied().unwrap_or(0),
                Operation::Read(buf) => {
                    let src: Vec<u8> = match self.pointer {
                        0xd0 => vec![0x60],
                        0x88 => self.registers.0.to_vec(),
                        0xe1 => self.registers.1.to_vec(),
                        0xf7 => self.data().to_vec(),
                        _ => vec![0; buf.len()],
                    };
                    for (d, s) in buf.iter_mut().zip(src.iter().chain(std::iter::repeat(&0))) {
                        *d = *s;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A02YYUW on a UART: `FF hi lo sum` frames of the simulated waste distance.
#[derive(Debug)]
pub struct A02yyuwSim {
    clock: Clock,
    seed: u64,
    depth_mm: u16,
    out: VecDeque<u8>,
}

impl A02yyuwSim {
    /// A ranger in a bin `depth_mm` deep.
    pub fn new(clock: Clock, seed: u64, depth_mm: u16) -> Self {
        Self {
            clock,
            seed,
            depth_mm,
            out: VecDeque::new(),
        }
    }
}

impl serial::ErrorType for A02yyuwSim {
    type Error = NotAnswering;
}

impl serial::Read<u8> for A02yyuwSim {
    fn read(&mut self) -> nb::Result<u8, NotAnswering> {
        if self.out.is_empty() {
            let t = self.clock.now();
            if signals::faulty(self.seed, DISTANCE_SENSOR, t) {
                return Err(nb::Error::Other(NotAnswering));
            }
            let [hi, lo] = signals::bin_distance(self.seed, t, self.depth_mm).to_be_bytes();
            self.out
                .extend([0xff, hi, lo, 0xffu8.wrapping_add(hi).wrapping_add(lo)]);
        }
        self.out.pop_front().ok_or(nb::Error::Other(NotAnswering))
    }
}

/// Tilt switch input: knocked over on about one day in 200 (active low).
#[derive(Debug)]
pub struct TiltSim {
    clock: Clock,
    seed: u64,
}

impl TiltSim {
    /// The switch of device `seed`.
    pub fn new(clock: Clock, seed: u64) -> Self {
        Self { clock, seed }
    }
}

impl embedded_hal::digital::ErrorType for TiltSim {
    type Error = Infallible;
}

impl embedded_hal::digital::InputPin for TiltSim {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        let day = u64::from(self.clock.now() / 86_400);
        Ok(!signals::mix(self.seed ^ (day << 32)).is_multiple_of(200))
    }

    fn is_low(&mut self) -> Result<bool, Infallible> {
        self.is_high().map(|h| !h)
    }
}

/// Sensors take no real time in the simulation: the virtual clock moves instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDelay;

impl embedded_hal::delay::DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

/// NOR flash in memory (two 4 KiB pages for the frame counter); it survives a simulated
/// reboot when the simulator keeps it.
#[derive(Debug, Clone)]
pub struct RamFlash(Vec<u8>);

impl Default for RamFlash {
    fn default() -> Self {
        Self(vec![0xff; 2 * Self::PAGE])
    }
}

impl RamFlash {
    const PAGE: usize = 4096;
}

impl FlashErrorType for RamFlash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for RamFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let at = offset as usize;
        let src = self
            .0
            .get(at..at + bytes.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.0.len()
    }
}

impl NorFlash for RamFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = Self::PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let range = self
            .0
            .get_mut(from as usize..to as usize)
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        range.fill(0xff);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let at = offset as usize;
        let dst = self
            .0
            .get_mut(at..at + bytes.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        // NOR programming only clears bits.
        for (d, s) in dst.iter_mut().zip(bytes) {
            *d &= *s;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware::drivers::a02yyuw::A02yyuw;
    use firmware::drivers::bme280::{ADDRESS, Bme280};
    use firmware::drivers::sds011::Sds011;

    /// A time when no simulated sensor of seed 1 is faulty.
    fn healthy_time(seed: u64) -> u32 {
        (0..)
            .map(|h| 1_795_000_000 + h * 3600)
            .find(|&t| (1..=3).all(|s| !signals::faulty(seed, s, t)))
            .unwrap()
    }

    #[test]
    fn real_drivers_read_the_simulated_values() {
        let clock = Clock::default();
        clock.set(healthy_time(1));
        let (temp, rh, hpa) = signals::climate(1, clock.now());
        let mut bme = Bme280::new(Bme280Sim::new(clock.clone(), 1, 0.0), ADDRESS).unwrap();
        let c = bme.measure(&mut NoDelay).unwrap();
        assert!(
            (f64::from(c.temperature) / 10.0 - temp).abs() <= 0.1,
            "{c:?} vs {temp}"
        );
        assert!(
            (f64::from(c.humidity) / 10.0 - rh).abs() <= 0.2,
            "{c:?} vs {rh}"
        );
        assert!(
            (f64::from(c.pressure) / 10.0 - hpa).abs() <= 0.2,
            "{c:?} vs {hpa}"
        );

        let mut sds = Sds011::new(Sds011Sim::new(clock.clone(), 1));
        sds.wake().unwrap();
        let pm = sds.read().unwrap();
        let (pm25, _) = signals::pm(1, clock.now());
        assert!((f64::from(pm.pm25) / 10.0 / pm25 - 1.0).abs() < 0.1);
        sds.sleep().unwrap();
        assert!(sds.read().is_err(), "a sleeping sensor sends nothing");

        let mut ranger = A02yyuw::new(A02yyuwSim::new(clock.clone(), 1, 1200));
        assert_eq!(
            ranger.read_mm().unwrap(),
            signals::bin_distance(1, clock.now(), 1200)
        );
    }
}
