//! What the node measures of its own energy use (SPEC §4.1, kind 4): the milliseconds
//! its MCU ran and slept, its modem was on and exchanging, and its power-hungry sensor
//! was on, between two ledgers. The board counts its sleep (the time its idle hook spent
//! in `wfi`); the loop counts link steps and samples; this adds them up. Pure.

use protocol::{Energy, Field};

/// The counts since the last ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meter {
    since_ms: u64,
    asleep_at: u64,
    active_ms: u64,
    sensor_ms: u64,
}

impl Meter {
    /// Starts counting at `now_ms`, the board having slept `asleep_ms` in all so far.
    pub const fn new(now_ms: u64, asleep_ms: u64) -> Self {
        Self {
            since_ms: now_ms,
            asleep_at: asleep_ms,
            active_ms: 0,
            sensor_ms: 0,
        }
    }

    /// The modem exchanged data (a link step) for `ms`.
    pub fn active(&mut self, ms: u64) {
        self.active_ms = self.active_ms.saturating_add(ms);
    }

    /// The sensor was on (a sample) for `ms`.
    pub fn sensor(&mut self, ms: u64) {
        self.sensor_ms = self.sensor_ms.saturating_add(ms);
    }

    /// The ledger from the last one (or the start) to `now_ms`, the board having slept
    /// `asleep_ms` in all; counting starts again. The modem of this firmware is powered
    /// from boot on, so it is on for the whole span.
    pub fn ledger(&mut self, now_ms: u64, asleep_ms: u64) -> Energy {
        let span = now_ms.saturating_sub(self.since_ms);
        let asleep = asleep_ms.saturating_sub(self.asleep_at).min(span);
        let ms = |v: u64| Field::Value(v.min(u64::from(u32::MAX)) as u32);
        let ledger = Energy {
            awake: ms(span - asleep),
            asleep: ms(asleep),
            modem_on: ms(span),
            modem_active: ms(self.active_ms.min(span)),
            sensor_on: ms(self.sensor_ms.min(span)),
        };
        *self = Self::new(now_ms, asleep_ms);
        ledger
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_covers_its_span_and_starts_the_next() {
        let mut m = Meter::new(1_000, 200);
        m.active(300);
        m.sensor(40);
        let l = m.ledger(11_000, 9_200);
        assert_eq!(
            (l.awake, l.asleep, l.modem_on, l.modem_active, l.sensor_on),
            (
                Field::Value(1_000),
                Field::Value(9_000),
                Field::Value(10_000),
                Field::Value(300),
                Field::Value(40)
            )
        );
        // The next one counts from there; a board that cannot tell its sleep says 0.
        let next = m.ledger(12_000, 9_200);
        assert_eq!(
            (next.awake, next.asleep),
            (Field::Value(1_000), Field::Value(0))
        );
        assert_eq!(next.modem_active, Field::Value(0));
    }
}
