//! A node's energy ledger (SPEC §4.1, kind 4) turned into an average current and a
//! battery life with the reference currents of `docs/ENERGY.md`. Pure.

use protocol::Kind;
use serde::{Deserialize, Serialize};

/// Milliseconds a node spent in each state over the time one ledger covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The MCU running.
    pub awake_ms: u32,
    /// The MCU asleep.
    pub asleep_ms: u32,
    /// The modem powered.
    pub modem_on_ms: u32,
    /// The modem exchanging data.
    pub modem_active_ms: u32,
    /// The kind's power-hungry sensor on.
    pub sensor_on_ms: u32,
}

impl Ledger {
    /// The ledger a frame carried; absent or faulted fields count as 0.
    pub fn of(e: &protocol::Energy) -> Self {
        let ms = |f: protocol::Field<u32>| f.value().unwrap_or(0);
        Self {
            awake_ms: ms(e.awake),
            asleep_ms: ms(e.asleep),
            modem_on_ms: ms(e.modem_on),
            modem_active_ms: ms(e.modem_active),
            sensor_on_ms: ms(e.sensor_on),
        }
    }

    /// The time it covers (the MCU is awake or asleep at every moment), ms.
    pub fn covered_ms(&self) -> u64 {
        u64::from(self.awake_ms) + u64::from(self.asleep_ms)
    }

    /// Average current at the cell, µA, with `c`; `None` for a ledger covering nothing.
    /// The modem draws its active current while active, its idle current the rest of the
    /// time it is on, and its powered-off current the rest of the time.
    pub fn average_ua(&self, c: &Currents) -> Option<f64> {
        let total = self.covered_ms() as f64;
        if total <= 0.0 {
            return None;
        }
        let ms = |v: u32| f64::from(v);
        let modem_idle = ms(self.modem_on_ms.saturating_sub(self.modem_active_ms));
        let modem_off = (total - ms(self.modem_on_ms)).max(0.0);
        let charge = ms(self.awake_ms) * c.mcu_run_ua
            + ms(self.asleep_ms) * c.mcu_sleep_ua
            + modem_idle * c.modem_idle_ua
            + modem_off * c.modem_off_ua
            + ms(self.modem_active_ms) * c.modem_active_ua
            + ms(self.sensor_on_ms) * c.sensor_ua;
        Some(charge / total + c.quiescent_ua)
    }
}

/// Currents at the 3.6 V cell of each state, µA (`docs/ENERGY.md` cites each).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Currents {
    /// STM32F411 running at 84 MHz: 100 µA/MHz (DS10314).
    pub mcu_run_ua: f64,
    /// STM32F411 in Stop mode, flash stopped: 42 µA typical (DS10314).
    pub mcu_sleep_ua: f64,
    /// SIM7000 registered and idle on LTE: 11 mA (SIM7000 Hardware Design).
    pub modem_idle_ua: f64,
    /// SIM7000 powered off: 7 µA (SIM7000 Hardware Design).
    pub modem_off_ua: f64,
    /// SIM7000 sending on LTE at 23 dBm: 167 mA (SIM7000 Hardware Design).
    pub modem_active_ua: f64,
    /// The kind's sensor: SDS011 70 mA at 5 V (1.54 × at the cell through a 90 % boost
    /// converter), or A02YYUW under 8 mA.
    pub sensor_ua: f64,
    /// Always drawn: the regulator's quiescent current and the sensors asleep.
    pub quiescent_ua: f64,
}

/// The reference currents of a node of `kind` (`docs/ENERGY.md`).
pub fn currents(kind: Kind) -> Currents {
    let sensor_ua = match kind {
        Kind::AirQuality => 70_000.0 * 5.0 / 3.6 / 0.9,
        _ => 8_000.0,
    };
    Currents {
        mcu_run_ua: 100.0 * 84.0,
        mcu_sleep_ua: 42.0,
        modem_idle_ua: 11_000.0,
        modem_off_ua: 7.0,
        modem_active_ua: 167_000.0,
        sensor_ua,
        quiescent_ua: 1.0,
    }
}

/// Capacity of the reference cell: a 19 Ah 3.6 V Li-SOCl2 D cell (Tadiran TL-5930), mAh.
pub const CELL_MAH: f64 = 19_000.0;

/// Days a `capacity_mah` cell lasts at `average_ua`.
pub fn lifetime_days(capacity_mah: f64, average_ua: f64) -> f64 {
    capacity_mah * 1000.0 / average_ua / 24.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_weighs_each_state_by_its_time() {
        // A day, MCU asleep but for 1 %, modem on all day and active 2 %, sensor 0.5 %.
        let day = 86_400_000u32;
        let l = Ledger {
            awake_ms: day / 100,
            asleep_ms: day - day / 100,
            modem_on_ms: day,
            modem_active_ms: day / 50,
            sensor_on_ms: day / 200,
        };
        let c = currents(Kind::WasteBin);
        let want = 0.01 * 8_400.0
            + 0.99 * 42.0
            + 0.98 * 11_000.0
            + 0.02 * 167_000.0
            + 0.005 * 8_000.0
            + 1.0;
        let got = l.average_ua(&c).unwrap_or_default();
        assert!((got - want).abs() < 1e-6, "{got} {want}");
        // An always-connected modem dominates: the cell lasts about two months.
        let days = lifetime_days(CELL_MAH, got);
        assert!((50.0..70.0).contains(&days), "{days}");
        assert_eq!(Ledger::default().average_ua(&c), None);
    }

    #[test]
    fn a_bin_reporting_every_six_hours_lasts_ten_years() {
        // docs/ENERGY.md: samples every 300 s (the ranger 0.5 s each), 4 reports of 16 s
        // of modem activity a day, the modem off the rest of the day.
        let day = 86_400_000u32;
        let (sensor, report) = (288 * 500, 4 * 16_000);
        let l = Ledger {
            awake_ms: sensor + report,
            asleep_ms: day - sensor - report,
            modem_on_ms: report,
            modem_active_ms: report,
            sensor_on_ms: sensor,
        };
        let ua = l.average_ua(&currents(Kind::WasteBin)).unwrap_or_default();
        let years = lifetime_days(CELL_MAH, ua) / 365.0;
        assert!((205.0..210.0).contains(&ua), "{ua} µA");
        assert!((10.0..11.0).contains(&years), "{years} years");
    }
}
