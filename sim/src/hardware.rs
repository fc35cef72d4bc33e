//! The host side of a simulated board: the [`Environment`] the firmware's simulated
//! sensors (`firmware::simulated`) measure, from [`signals`] on a virtual clock, and the
//! NOR flash of its frame counter and ring (in memory, or kept in a file across runs).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};
use firmware::simulated::{Environment, Sensor};

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

/// The simulated world one device sees: its virtual clock and the [`signals`] of its seed.
/// Each sensor holds a copy; the clock is shared.
#[derive(Debug, Clone)]
pub struct SimEnv {
    clock: Clock,
    seed: u64,
    /// Degrees above the air (a sensor inside a bin).
    offset: f64,
    depth_mm: u16,
    samples: Cell<u32>,
}

impl SimEnv {
    /// The world of device `seed`; `depth_mm` for bins.
    pub fn new(clock: Clock, seed: u64, offset: f64, depth_mm: u16) -> Self {
        Self {
            clock,
            seed,
            offset,
            depth_mm,
            samples: Cell::new(0),
        }
    }
}

impl Environment for SimEnv {
    fn now(&self) -> u32 {
        self.clock.now()
    }

    fn pm(&self) -> (u16, u16) {
        // Successive samples of one window differ a little, as a real sensor's do.
        let n = self.samples.get().wrapping_add(1);
        self.samples.set(n);
        let jitter = 1.0 + (signals::mix(self.seed ^ u64::from(n)) % 7) as f64 / 100.0;
        let (pm25, pm10) = signals::pm(self.seed, self.now());
        let raw = |v: f64| (v * jitter * 10.0).round() as u16;
        (raw(pm25), raw(pm10))
    }

    fn climate(&self) -> (i32, u32, u32) {
        let (temp, rh, hpa) = signals::climate(self.seed, self.now());
        (
            ((temp + self.offset) * 100.0).round() as i32,
            (rh * 1024.0) as u32,
            (hpa * 100.0 * 256.0) as u32,
        )
    }

    fn distance_mm(&self) -> u16 {
        signals::bin_distance(self.seed, self.now(), self.depth_mm)
    }

    fn tilted(&self) -> bool {
        let day = u64::from(self.now() / 86_400);
        signals::mix(self.seed ^ (day << 32)).is_multiple_of(200)
    }

    fn faulty(&self, sensor: Sensor) -> bool {
        signals::faulty(self.seed, sensor as u64, self.now())
    }
}

/// NOR flash of a simulated node, one for the frame counter, one for the frame ring: eight
/// 512-byte pages each. The ring then holds about 70 one-reading frames, close to the 64
/// readings the nodes queued in RAM before the ring, so outage tests overflow it the same.
/// Small pages matter: a full ring drops its oldest page, so with two large pages half
/// of it could go at once (a 3 s outage at 3000× lost readings that way).
pub type RamFlash = firmware::simulated::RamFlash<4096, 512>;

/// A simulated node's flash: [`RamFlash`], kept in a file when the node has one. Every
/// erase and write reaches the file before it returns, as a board's flash keeps what was
/// programmed: a second run of the same blobs resumes its frame counter and its ring of
/// unacknowledged frames instead of reusing counters (SPEC §6).
#[derive(Debug)]
pub struct Flash {
    mem: RamFlash,
    file: Option<std::path::PathBuf>,
}

impl Flash {
    /// Erased RAM, gone with the run.
    pub fn ram() -> Self {
        Self {
            mem: RamFlash::default(),
            file: None,
        }
    }

    /// The flash kept in `path`: what it held, or erased if it does not exist yet.
    pub fn file(path: std::path::PathBuf) -> std::io::Result<Self> {
        let mut mem = RamFlash::default();
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == mem.bytes_mut().len() => {
                mem.bytes_mut().copy_from_slice(&bytes);
            }
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{}: not a simulated flash image",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(Self {
            mem,
            file: Some(path),
        })
    }

    /// Writes the memory to its file (a new file renamed over the old one).
    fn keep(&mut self) -> Result<(), NorFlashErrorKind> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.mem.bytes_mut())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|_| NorFlashErrorKind::Other)
    }
}

impl ErrorType for Flash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for Flash {
    const READ_SIZE: usize = RamFlash::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.mem.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.mem.capacity()
    }
}

impl NorFlash for Flash {
    const WRITE_SIZE: usize = RamFlash::WRITE_SIZE;
    const ERASE_SIZE: usize = RamFlash::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.mem.erase(from, to)?;
        self.keep()
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.mem.write(offset, bytes)?;
        self.keep()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware::drivers::a02yyuw::A02yyuw;
    use firmware::drivers::bme280::{ADDRESS, Bme280};
    use firmware::drivers::sds011::Sds011;
    use firmware::simulated::{A02yyuwSim, Bme280Sim, NoDelay, Sds011Sim};

    /// A time when no simulated sensor of `seed` is faulty.
    fn healthy_time(seed: u64) -> u32 {
        (0..)
            .map(|h| 1_795_000_000 + h * 3600)
            .find(|&t| (0..3).all(|s| !signals::faulty(seed, s, t)))
            .unwrap()
    }

    #[test]
    fn real_drivers_read_the_simulated_signals() {
        let clock = Clock::default();
        clock.set(healthy_time(1));
        let env = SimEnv::new(clock.clone(), 1, 0.0, 1200);
        let (temp, rh, hpa) = signals::climate(1, clock.now());
        let mut bme = Bme280::new(Bme280Sim::new(env.clone()), ADDRESS).unwrap();
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

        let mut sds = Sds011::new(Sds011Sim::new(env.clone()));
        sds.wake().unwrap();
        let pm = sds.read().unwrap();
        let (pm25, _) = signals::pm(1, clock.now());
        assert!((f64::from(pm.pm25) / 10.0 / pm25 - 1.0).abs() < 0.1);

        let mut ranger = A02yyuw::new(A02yyuwSim::new(env));
        assert_eq!(
            ranger.read_mm().unwrap(),
            signals::bin_distance(1, clock.now(), 1200)
        );
    }
}
