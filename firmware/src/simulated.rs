//! Simulated sensors behind the same embedded-hal traits the real drivers use, for the
//! host fleet simulator and for emulated boards (QEMU) that have no sensors. The drivers
//! parse real frames and registers (checksums, the BME280 compensation), so everything
//! above the bus is the code a real node runs. What the sensors measure comes from an
//! [`Environment`]: realistic signals on the host, simple integer ones on a chip.

use embedded_hal::i2c::{self, Operation};
use embedded_hal_nb::{nb, serial};
use embedded_storage::nor_flash::{
    ErrorType as FlashErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash,
};
use heapless::{Deque, Vec};

use crate::drivers::bme280::Calibration;

/// What the simulated sensors measure at the device's current time.
pub trait Environment {
    /// Current Unix time, seconds.
    fn now(&self) -> u32;
    /// PM2.5 and PM10, 0.1 µg/m³ (one sample of a window: may vary between calls).
    fn pm(&self) -> (u16, u16);
    /// Temperature 0.01 °C, relative humidity %RH × 1024, pressure Pa × 256.
    fn climate(&self) -> (i32, u32, u32);
    /// Distance from the ranger to the waste surface, mm.
    fn distance_mm(&self) -> u16;
    /// Whether the container is tilted.
    fn tilted(&self) -> bool;
    /// Whether `sensor` is failing now.
    fn faulty(&self, sensor: Sensor) -> bool;
}

/// The simulated sensors, for [`Environment::faulty`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensor {
    /// SDS011.
    Pm,
    /// BME280.
    Climate,
    /// A02YYUW.
    Distance,
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

fn sds_checksum(f: &mut [u8; 10]) {
    f[8] = f[2..8].iter().fold(0u8, |s, x| s.wrapping_add(*x));
}

/// SDS011 on a UART: data frames while working, sleep/work commands answered.
#[derive(Debug)]
pub struct Sds011Sim<E> {
    env: E,
    working: bool,
    out: Deque<u8, 20>,
    command: Vec<u8, 19>,
}

impl<E: Environment> Sds011Sim<E> {
    /// A sensor measuring `env`.
    pub fn new(env: E) -> Self {
        Self {
            env,
            working: true,
            out: Deque::new(),
            command: Vec::new(),
        }
    }

    fn send(&mut self, f: [u8; 10]) {
        for b in f {
            let _ = self.out.push_back(b); // room for two frames; one is queued at a time
        }
    }
}

impl<E> serial::ErrorType for Sds011Sim<E> {
    type Error = NotAnswering;
}

impl<E: Environment> serial::Read<u8> for Sds011Sim<E> {
    fn read(&mut self) -> nb::Result<u8, NotAnswering> {
        if self.out.is_empty() {
            // A sleeping sensor sends nothing: an error, not an endless wait.
            if !self.working || self.env.faulty(Sensor::Pm) {
                return Err(nb::Error::Other(NotAnswering));
            }
            let (pm25, pm10) = self.env.pm();
            let (a, b) = (pm25.min(9999).to_le_bytes(), pm10.min(9999).to_le_bytes());
            let mut f = [0xaa, 0xc0, a[0], a[1], b[0], b[1], 0x12, 0x34, 0, 0xab];
            sds_checksum(&mut f);
            self.send(f);
        }
        self.out.pop_front().ok_or(nb::Error::Other(NotAnswering))
    }
}

impl<E: Environment> serial::Write<u8> for Sds011Sim<E> {
    fn write(&mut self, byte: u8) -> nb::Result<(), NotAnswering> {
        let _ = self.command.push(byte);
        if self.command.is_full() {
            let c = core::mem::take(&mut self.command);
            if c[..4] == [0xaa, 0xb4, 0x06, 0x01] {
                self.working = c[4] == 1;
                let mut f = [0xaa, 0xc5, 0x06, 0x01, c[4], 0x00, 0x12, 0x34, 0, 0xab];
                sds_checksum(&mut f);
                self.send(f);
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
    let words: [i16; 12] = [
        27504, 26435, -1000, -29059, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000,
    ];
    let mut a = [0u8; 26];
    for (i, w) in words.iter().enumerate() {
        a[2 * i..2 * i + 2].copy_from_slice(&w.to_le_bytes());
    }
    a[25] = 75;
    (a, [0x6c, 0x01, 0x00, 0x13, 0x28, 0x03, 0x1e])
}

/// Smallest `x` in `lo..hi` with `f(x) >= target` for an increasing `f`.
fn invert(mut lo: i32, mut hi: i32, target: i64, f: impl Fn(i32) -> i64) -> i32 {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if f(mid) < target {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// BME280 on I2C: chip id, calibration, and the raw ADC values that the datasheet's
/// compensation turns back into the environment's climate.
#[derive(Debug)]
pub struct Bme280Sim<E> {
    env: E,
    pointer: u8,
    calibration: Calibration,
    registers: ([u8; 26], [u8; 7]),
}

impl<E: Environment> Bme280Sim<E> {
    /// A sensor measuring `env`.
    pub fn new(env: E) -> Self {
        let registers = calibration_registers();
        Self {
            env,
            pointer: 0,
            calibration: Calibration::parse(&registers.0, &registers.1),
            registers,
        }
    }

    fn data(&self) -> [u8; 8] {
        let (centi_c, rh_q10, pa_q8) = self.env.climate();
        let c = &self.calibration;
        let adc_t = invert(0, 1 << 20, centi_c.into(), |x| c.temperature(x).0.into());
        let t_fine = c.temperature(adc_t).1;
        // Pressure falls as its ADC value rises: invert the negated function.
        let adc_p = invert(0, 1 << 20, -i64::from(pa_q8), |x| {
            -i64::from(c.pressure(x, t_fine))
        });
        let adc_h = invert(0, 1 << 16, rh_q10.into(), |x| c.humidity(x, t_fine).into());
        let (p, t, h) = (adc_p as u32, adc_t as u32, adc_h as u32);
        [
            (p >> 12) as u8,
            (p >> 4) as u8,
            ((p & 0xf) << 4) as u8,
            (t >> 12) as u8,
            (t >> 4) as u8,
            ((t & 0xf) << 4) as u8,
            (h >> 8) as u8,
            h as u8,
        ]
    }
}

impl<E> i2c::ErrorType for Bme280Sim<E> {
    type Error = NotAnswering;
}

impl<E: Environment> i2c::I2c for Bme280Sim<E> {
    fn transaction(
        &mut self,
        _address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), NotAnswering> {
        if self.env.faulty(Sensor::Climate) {
            return Err(NotAnswering);
        }
        for op in operations {
            match op {
                // Register pointer first; further bytes are register writes (ctrl_*).
                Operation::Write(bytes) => self.pointer = bytes.first().copied().unwrap_or(0),
                Operation::Read(buf) => {
                    let data = self.data();
                    let src: &[u8] = match self.pointer {
                        0xd0 => &[0x60],
                        0x88 => &self.registers.0,
                        0xe1 => &self.registers.1,
                        0xf7 => &data,
                        _ => &[],
                    };
                    for (i, d) in buf.iter_mut().enumerate() {
                        *d = src.get(i).copied().unwrap_or(0);
                    }
                }
            }
        }
        Ok(())
    }
}

/// A02YYUW on a UART: `FF hi lo sum` frames of the environment's distance.
#[derive(Debug)]
pub struct A02yyuwSim<E> {
    env: E,
    out: Deque<u8, 4>,
}

impl<E: Environment> A02yyuwSim<E> {
    /// A ranger measuring `env`.
    pub fn new(env: E) -> Self {
        Self {
            env,
            out: Deque::new(),
        }
    }
}

impl<E> serial::ErrorType for A02yyuwSim<E> {
    type Error = NotAnswering;
}

impl<E: Environment> serial::Read<u8> for A02yyuwSim<E> {
    fn read(&mut self) -> nb::Result<u8, NotAnswering> {
        if self.out.is_empty() {
            if self.env.faulty(Sensor::Distance) {
                return Err(nb::Error::Other(NotAnswering));
            }
            let [hi, lo] = self.env.distance_mm().to_be_bytes();
            for b in [0xff, hi, lo, 0xffu8.wrapping_add(hi).wrapping_add(lo)] {
                let _ = self.out.push_back(b); // exactly one frame's room
            }
        }
        self.out.pop_front().ok_or(nb::Error::Other(NotAnswering))
    }
}

/// Tilt switch input, active low.
#[derive(Debug)]
pub struct TiltSim<E> {
    env: E,
}

impl<E: Environment> TiltSim<E> {
    /// The switch of a container in `env`.
    pub fn new(env: E) -> Self {
        Self { env }
    }
}

impl<E> embedded_hal::digital::ErrorType for TiltSim<E> {
    type Error = core::convert::Infallible;
}

impl<E: Environment> embedded_hal::digital::InputPin for TiltSim<E> {
    fn is_high(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.env.tilted())
    }

    fn is_low(&mut self) -> Result<bool, Self::Error> {
        Ok(self.env.tilted())
    }
}

/// Simulated sensors take no real time: the environment's clock moves instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDelay;

impl embedded_hal::delay::DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

/// NOR flash in RAM, `N` bytes in pages of `PAGE`: erased to 0xFF, programming only
/// clears bits, as the real part. Starts erased; a simulator that keeps it across a
/// simulated reboot keeps the frame counter.
#[derive(Debug, Clone)]
pub struct RamFlash<const N: usize, const PAGE: usize>([u8; N]);

impl<const N: usize, const PAGE: usize> Default for RamFlash<N, PAGE> {
    fn default() -> Self {
        Self([0xff; N])
    }
}

impl<const N: usize, const PAGE: usize> RamFlash<N, PAGE> {
    /// The whole memory, for writing a blob into it.
    pub fn bytes_mut(&mut self) -> &mut [u8; N] {
        &mut self.0
    }

    fn range(&self, offset: u32, len: usize) -> Result<core::ops::Range<usize>, NorFlashErrorKind> {
        let at = offset as usize;
        match at.checked_add(len) {
            Some(end) if end <= N => Ok(at..end),
            _ => Err(NorFlashErrorKind::OutOfBounds),
        }
    }
}

impl<const N: usize, const PAGE: usize> FlashErrorType for RamFlash<N, PAGE> {
    type Error = NorFlashErrorKind;
}

impl<const N: usize, const PAGE: usize> ReadNorFlash for RamFlash<N, PAGE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let r = self.range(offset, bytes.len())?;
        bytes.copy_from_slice(&self.0[r]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        N
    }
}

impl<const N: usize, const PAGE: usize> NorFlash for RamFlash<N, PAGE> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let r = self.range(from, to.saturating_sub(from) as usize)?;
        self.0[r].fill(0xff);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let r = self.range(offset, bytes.len())?;
        for (d, s) in self.0[r].iter_mut().zip(bytes) {
            *d &= *s;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::a02yyuw::A02yyuw;
    use crate::drivers::bme280::{ADDRESS, Bme280};
    use crate::drivers::sds011::Sds011;

    #[derive(Clone, Copy)]
    struct Fixed;

    impl Environment for Fixed {
        fn now(&self) -> u32 {
            1_795_000_000
        }
        fn pm(&self) -> (u16, u16) {
            (123, 201)
        }
        fn climate(&self) -> (i32, u32, u32) {
            (2140, 555 * 1024 / 10, 101_320 * 256)
        }
        fn distance_mm(&self) -> u16 {
            734
        }
        fn tilted(&self) -> bool {
            false
        }
        fn faulty(&self, _: Sensor) -> bool {
            false
        }
    }

    #[test]
    fn real_drivers_read_what_the_environment_says() {
        let mut bme = Bme280::new(Bme280Sim::new(Fixed), ADDRESS).unwrap();
        let c = bme.measure(&mut NoDelay).unwrap();
        assert_eq!((c.temperature, c.humidity, c.pressure), (214, 555, 10132));

        let mut sds = Sds011::new(Sds011Sim::new(Fixed));
        sds.wake().unwrap();
        let pm = sds.read().unwrap();
        assert_eq!((pm.pm25, pm.pm10), (123, 201));
        sds.sleep().unwrap();
        assert!(sds.read().is_err(), "a sleeping sensor sends nothing");

        let mut ranger = A02yyuw::new(A02yyuwSim::new(Fixed));
        assert_eq!(ranger.read_mm().unwrap(), 734);
    }
}
