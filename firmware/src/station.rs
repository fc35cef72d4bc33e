//! One sampling cycle per kind: drivers in, at most one [`Reading`] out, plus the faults to
//! report. A sensor that fails gives `Fault` fields (present but failing), never a made-up
//! value; a reading goes out when a value moved beyond its deadband, on the heartbeat, or
//! when a fault appears.

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::InputPin;
use embedded_hal::i2c::I2c;
use embedded_hal_nb::serial::{Read, Write};
use protocol::reading::{bin_flags, error_flags};
use protocol::{AirQuality, Field, Reading, Values, WasteBin};

use crate::drivers::a02yyuw::A02yyuw;
use crate::drivers::bme280::{Bme280, Climate};
use crate::drivers::sds011::Sds011;
use crate::drivers::tilt::Tilt;
use crate::sampling::{Reporter, fill_level, fire_suspected, median};

/// Most samples one window takes (PM frames at 1 Hz, distance frames at 10 Hz).
pub const MAX_WINDOW: usize = 16;

/// What one cycle produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The reading to queue, if it is worth sending.
    pub reading: Option<Reading>,
    /// Bits of [`error_flags`] for the sensors that failed.
    pub errors: u16,
}

/// Sampling options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Fan run time before the first PM sample counts, ms (about 30 s on an SDS011).
    pub warmup_ms: u32,
    /// Samples per window (median), at most [`MAX_WINDOW`].
    pub samples: usize,
}

impl Sample {
    /// The reading raises an alarm that should not wait for the next report: a bin
    /// tilted or suspected on fire.
    pub fn alarm(&self) -> bool {
        match self.reading.map(|r| r.values) {
            Some(Values::WasteBin(b)) => matches!(
                b.flags,
                Field::Value(f) if f & (bin_flags::TILTED | bin_flags::FIRE_SUSPECTED) != 0
            ),
            _ => false,
        }
    }
}

type Samples = heapless::Vec<i32, MAX_WINDOW>;

/// Median of the values `read` yields over `n` attempts; failed attempts are skipped.
fn window<E>(n: usize, mut read: impl FnMut() -> Result<i32, E>) -> Option<i32> {
    let mut v = Samples::new();
    for _ in 0..n.min(MAX_WINDOW) {
        if let Ok(x) = read() {
            let _ = v.push(x); // cannot fail: at most MAX_WINDOW attempts
        }
    }
    median(&mut v)
}

fn field<T>(v: Option<T>) -> Field<T> {
    v.map_or(Field::Fault, Field::Value)
}

/// An air-quality node: SDS011 (PM2.5, PM10) and BME280 (temperature, humidity, pressure).
#[derive(Debug)]
pub struct AirQualityStation<S, I> {
    pm: Sds011<S>,
    climate: Option<Bme280<I>>,
    pm_report: Reporter,
    temp_report: Reporter,
}

impl<S: Read<u8> + Write<u8>, I: I2c> AirQualityStation<S, I> {
    /// `climate` is `None` when the BME280 did not answer at boot (reported as a fault).
    /// Deadbands: 2 µg/m³ PM2.5, 0.5 °C.
    pub fn new(pm: Sds011<S>, climate: Option<Bme280<I>>, heartbeat_s: u32) -> Self {
        Self {
            pm,
            climate,
            pm_report: Reporter::new(20, heartbeat_s),
            temp_report: Reporter::new(5, heartbeat_s),
        }
    }

    /// Wakes the PM fan for the window only, takes the medians, reads the climate.
    pub fn sample(&mut self, delay: &mut impl DelayNs, now: u32, w: Window) -> Sample {
        let mut errors = 0;
        let (mut pm25, mut pm10) = (None, None);
        if self.pm.wake().is_ok() {
            delay.delay_ms(w.warmup_ms);
            let (mut v25, mut v10) = (Samples::new(), Samples::new());
            for _ in 0..w.samples.min(MAX_WINDOW) {
                if let Ok(pm) = self.pm.read() {
                    // Cannot fail: at most MAX_WINDOW samples.
                    let _ = (v25.push(pm.pm25.into()), v10.push(pm.pm10.into()));
                }
            }
            (pm25, pm10) = (median(&mut v25), median(&mut v10));
        }
        // Sleep even after a failed read: the laser's life is counted in hours of work.
        if self.pm.sleep().is_err() || pm25.is_none() {
            errors |= error_flags::PM_SENSOR;
        }
        let climate: Option<Climate> = self.climate.as_mut().and_then(|c| c.measure(delay).ok());
        if climate.is_none() {
            errors |= error_flags::CLIMATE_SENSOR;
        }
        let values = AirQuality {
            pm25: field(pm25.map(|v| v as u16)),
            pm10: field(pm10.map(|v| v as u16)),
            temperature: field(climate.map(|c| c.temperature)),
            relative_humidity: field(climate.map(|c| c.humidity)),
            pressure: field(climate.map(|c| c.pressure)),
            ..AirQuality::default()
        };
        // Both reporters see every value, so each keeps its own reference.
        let pm_moved = pm25.is_some_and(|v| self.pm_report.should_send(v, now));
        let temp_moved =
            climate.is_some_and(|c| self.temp_report.should_send(c.temperature.into(), now));
        let send = pm_moved || temp_moved || errors != 0;
        Sample {
            reading: send.then_some(Reading {
                time: now,
                values: Values::AirQuality(values),
            }),
            errors,
        }
    }
}

/// A waste-bin node: A02YYUW distance, tilt switch, BME280 inside the bin for fire
/// suspicion.
#[derive(Debug)]
pub struct BinStation<S, P, I> {
    ranger: A02yyuw<S>,
    tilt: Tilt<P>,
    climate: Option<Bme280<I>>,
    depth_mm: u16,
    fill_report: Reporter,
    previous_temp: Option<(i16, u32)>,
    previous_flags: u8,
}

/// Fire: above 60 °C, or a rise of more than 2 °C per minute.
const FIRE_THRESHOLD: i16 = 600;
const FIRE_RISE_PER_MIN: i16 = 20;

impl<S: Read<u8>, P: InputPin, I: I2c> BinStation<S, P, I> {
    /// `depth_mm`: sensor to bin bottom, from provisioning. Deadband: 5 % of fill.
    pub fn new(
        ranger: A02yyuw<S>,
        tilt: Tilt<P>,
        climate: Option<Bme280<I>>,
        depth_mm: u16,
        heartbeat_s: u32,
    ) -> Self {
        Self {
            ranger,
            tilt,
            climate,
            depth_mm,
            fill_report: Reporter::new(5, heartbeat_s),
            previous_temp: None,
            previous_flags: 0,
        }
    }

    /// Median distance over the window, fill level, tilt and fire flags.
    pub fn sample(&mut self, delay: &mut impl DelayNs, now: u32, w: Window) -> Sample {
        let mut errors = 0;
        let distance = window(w.samples, || self.ranger.read_mm().map(i32::from));
        if distance.is_none() {
            errors |= error_flags::DISTANCE_SENSOR;
        }
        let temp = self
            .climate
            .as_mut()
            .and_then(|c| c.measure(delay).ok())
            .map(|c| c.temperature);
        if temp.is_none() {
            errors |= error_flags::CLIMATE_SENSOR;
        }
        let tilted = self.tilt.is_tilted().unwrap_or(false);
        let fire = temp.is_some_and(|t| {
            fire_suspected(
                t,
                self.previous_temp,
                now,
                FIRE_THRESHOLD,
                FIRE_RISE_PER_MIN,
            )
        });
        self.previous_temp = temp.map(|t| (t, now)).or(self.previous_temp);
        let flags =
            u8::from(tilted) * bin_flags::TILTED + u8::from(fire) * bin_flags::FIRE_SUSPECTED;
        let fill = distance.and_then(|d| fill_level(d as u16, self.depth_mm));
        let values = WasteBin {
            distance: field(distance.map(|d| d as u16)),
            fill_level: field(fill),
            temperature: field(temp),
            flags: Field::Value(flags),
            ..WasteBin::default()
        };
        let fill_moved = fill.is_some_and(|f| self.fill_report.should_send(f.into(), now));
        // A new alarm goes out at once, whatever the fill did.
        let send = fill_moved || flags != self.previous_flags || errors != 0;
        self.previous_flags = flags;
        Sample {
            reading: send.then_some(Reading {
                time: now,
                values: Values::WasteBin(values),
            }),
            errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::bme280::ADDRESS;
    use crate::simulated::{
        A02yyuwSim, Bme280Sim, Environment, NoDelay, Sds011Sim, Sensor, TiltSim,
    };
    use core::cell::Cell;

    /// A world the test steers: one PM level, one temperature, one distance, switches.
    #[derive(Default)]
    struct World {
        pm25: Cell<u16>,
        centi_c: Cell<i32>,
        distance: Cell<u16>,
        tilted: Cell<bool>,
        pm_broken: Cell<bool>,
    }

    #[derive(Clone, Copy)]
    struct Env<'a>(&'a World);

    impl Environment for Env<'_> {
        fn now(&self) -> u32 {
            0
        }
        fn pm(&self) -> (u16, u16) {
            (self.0.pm25.get(), self.0.pm25.get() * 2)
        }
        fn climate(&self) -> (i32, u32, u32) {
            (self.0.centi_c.get(), 50 * 1024, 101_300 * 256)
        }
        fn distance_mm(&self) -> u16 {
            self.0.distance.get()
        }
        fn tilted(&self) -> bool {
            self.0.tilted.get()
        }
        fn faulty(&self, s: Sensor) -> bool {
            s == Sensor::Pm && self.0.pm_broken.get()
        }
    }

    const W: Window = Window {
        warmup_ms: 0,
        samples: 5,
    };

    #[test]
    fn a_failing_pm_sensor_is_a_fault_not_a_value_and_goes_out_at_once() {
        let world = World::default();
        world.pm25.set(120);
        world.centi_c.set(2000);
        let env = Env(&world);
        let climate = Bme280::new(Bme280Sim::new(env), ADDRESS).ok();
        let mut st = AirQualityStation::new(Sds011::new(Sds011Sim::new(env)), climate, 3600);

        let first = st.sample(&mut NoDelay, 1000, W);
        let Some(Reading {
            values: Values::AirQuality(aq),
            ..
        }) = first.reading
        else {
            panic!("the first sample always goes out")
        };
        assert_eq!(
            (aq.pm25, aq.temperature, first.errors),
            (Field::Value(120), Field::Value(200), 0)
        );
        // Unchanged within the deadband: nothing to send.
        assert_eq!(st.sample(&mut NoDelay, 1300, W).reading, None);

        world.pm_broken.set(true);
        let broken = st.sample(&mut NoDelay, 1600, W);
        let Some(Reading {
            values: Values::AirQuality(aq),
            ..
        }) = broken.reading
        else {
            panic!("a new fault goes out at once")
        };
        assert_eq!((aq.pm25, aq.pm10), (Field::Fault, Field::Fault));
        assert_eq!(
            aq.temperature,
            Field::Value(200),
            "the climate sensor still reports"
        );
        assert_eq!(broken.errors, error_flags::PM_SENSOR);
    }

    #[test]
    fn bin_alarms_go_out_at_once_and_fill_follows_the_depth() {
        let world = World::default();
        world.centi_c.set(1500);
        world.distance.set(900);
        let env = Env(&world);
        let climate = Bme280::new(Bme280Sim::new(env), ADDRESS).ok();
        let mut st = BinStation::new(
            A02yyuw::new(A02yyuwSim::new(env)),
            Tilt::new(TiltSim::new(env), true),
            climate,
            1200,
            3600,
        );
        let fill = |s: Sample| match s.reading.map(|r| r.values) {
            Some(Values::WasteBin(b)) => Some((b.fill_level, b.flags)),
            _ => None,
        };
        assert_eq!(
            fill(st.sample(&mut NoDelay, 1000, W)),
            Some((Field::Value(25), Field::Value(0)))
        );
        assert_eq!(
            fill(st.sample(&mut NoDelay, 1300, W)),
            None,
            "no change, no heartbeat yet"
        );

        world.tilted.set(true);
        let tilted = Some((Field::Value(25), Field::Value(bin_flags::TILTED)));
        assert_eq!(fill(st.sample(&mut NoDelay, 1600, W)), tilted);

        world.centi_c.set(6500);
        let fire = bin_flags::TILTED | bin_flags::FIRE_SUSPECTED;
        assert_eq!(
            fill(st.sample(&mut NoDelay, 1900, W)),
            Some((Field::Value(25), Field::Value(fire)))
        );
    }

    #[test]
    fn a_tilted_or_burning_bin_is_an_alarm_a_full_one_is_not() {
        let bin = |flags: Field<u8>, fill: u8| Sample {
            reading: Some(Reading {
                time: 1,
                values: Values::WasteBin(WasteBin {
                    fill_level: Field::Value(fill),
                    flags,
                    ..WasteBin::default()
                }),
            }),
            errors: 0,
        };
        assert!(bin(Field::Value(bin_flags::TILTED), 10).alarm());
        assert!(bin(Field::Value(bin_flags::FIRE_SUSPECTED), 10).alarm());
        assert!(!bin(Field::Value(bin_flags::LID_OPEN), 100).alarm());
        assert!(!bin(Field::Fault, 100).alarm());
        let air = Sample {
            reading: Some(Reading {
                time: 1,
                values: Values::AirQuality(AirQuality::default()),
            }),
            errors: 0,
        };
        assert!(!air.alarm());
        assert!(
            !Sample {
                reading: None,
                errors: 0
            }
            .alarm()
        );
    }
}
