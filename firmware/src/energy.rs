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
    /// Modem on time counted since the last ledger, up to `on_since`.
    on_ms: u64,
    /// The modem is on since this time (ms since boot); `None`: off.
    on_since: Option<u64>,
}

impl Meter {
    /// Starts counting at `now_ms`, the board having slept `asleep_ms` in all so far;
    /// the modem is on (boards power it at boot).
    pub const fn new(now_ms: u64, asleep_ms: u64) -> Self {
        Self {
            since_ms: now_ms,
            asleep_at: asleep_ms,
            active_ms: 0,
            sensor_ms: 0,
            on_ms: 0,
            on_since: Some(now_ms),
        }
    }

    /// The modem was on for `ms` more (a simulator, whose clock is not the modem's).
    pub fn modem_on_for(&mut self, ms: u64) {
        self.on_ms = self.on_ms.saturating_add(ms);
    }

    /// The modem is powered (as far as [`Self::modem`] was told).
    pub fn modem_is_on(&self) -> bool {
        self.on_since.is_some()
    }

    /// The modem was powered up (`on`) or down at `now_ms`.
    pub fn modem(&mut self, on: bool, now_ms: u64) {
        match (on, self.on_since) {
            (true, None) => self.on_since = Some(now_ms),
            (false, Some(since)) => {
                self.on_ms += now_ms.saturating_sub(since);
                self.on_since = None;
            }
            _ => {}
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
    /// `asleep_ms` in all; counting starts again.
    pub fn ledger(&mut self, now_ms: u64, asleep_ms: u64) -> Energy {
        let span = now_ms.saturating_sub(self.since_ms);
        let on = self.on_ms + self.on_since.map_or(0, |s| now_ms.saturating_sub(s));
        let asleep = asleep_ms.saturating_sub(self.asleep_at).min(span);
        let ms = |v: u64| Field::Value(v.min(u64::from(u32::MAX)) as u32);
        let ledger = Energy {
            awake: ms(span - asleep),
            asleep: ms(asleep),
            modem_on: ms(on.min(span)),
            modem_active: ms(self.active_ms.min(span)),
            sensor_on: ms(self.sensor_ms.min(span)),
        };
        let modem_on = self.on_since.is_some();
        *self = Self::new(now_ms, asleep_ms);
        if !modem_on {
            self.on_since = None;
        }
        ledger
    }
}

/// The time a core slept, from a tick interrupt and its down-counter (SysTick, read by
/// [`tick_time`]): whole milliseconds and the counts left over. A board keeps one, adding each
/// `wfi`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slept {
    ms: u64,
    rem: u64,
}

impl Slept {
    /// Nothing slept yet.
    pub const fn new() -> Self {
        Self { ms: 0, rem: 0 }
    }

    /// The core slept from `before` to `after`, each (milliseconds, counts into the
    /// millisecond) as [`tick_time`] reads them.
    pub fn add(&mut self, before: (u32, u32), after: (u32, u32), ticks_per_ms: u32) {
        let per_ms = u64::from(ticks_per_ms.max(1));
        let ticks = u64::from(after.0.wrapping_sub(before.0)) * per_ms + u64::from(after.1);
        let rem = self.rem + ticks.saturating_sub(u64::from(before.1));
        self.ms += rem / per_ms;
        self.rem = rem % per_ms;
    }

    /// Milliseconds asleep.
    pub fn ms(&self) -> u64 {
        self.ms
    }
}

/// The time now as (milliseconds, counts into the millisecond), from a tick interrupt
/// every `tick_ms` milliseconds (`ticks`, its count) and the down-counter reloaded at each
/// tick (`current`, from `counts_per_ms * tick_ms - 1` to 0); read again if a tick came in
/// between. Milliseconds wrap as the tick count times `tick_ms` does, at 2^32.
pub fn tick_time(
    ticks: impl Fn() -> u32,
    current: impl Fn() -> u32,
    counts_per_ms: u32,
    tick_ms: u32,
) -> (u32, u32) {
    let (per_ms, period) = (counts_per_ms.max(1), tick_ms.max(1));
    let top = per_ms.saturating_mul(period).saturating_sub(1);
    loop {
        let t = ticks();
        let into = top - current().min(top);
        if ticks() == t {
            return (
                t.wrapping_mul(period).wrapping_add(into / per_ms),
                into % per_ms,
            );
        }
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

    #[test]
    fn sleep_adds_up_across_milliseconds_and_counts() {
        let mut s = Slept::default();
        // From 0.4 ms into ms 10 to 0.7 ms into ms 12: 2.3 ms.
        s.add((10, 400), (12, 700), 1_000);
        assert_eq!(s.ms(), 2);
        s.add((20, 0), (20, 800), 1_000); // 0.8 ms more: 3.1 ms in all
        assert_eq!(s.ms(), 3);
        s.add((u32::MAX, 0), (1, 0), 1_000); // across the clock's wrap: 2 ms
        assert_eq!(s.ms(), 5);
        let c = core::cell::Cell::new(0);
        let t = tick_time(|| 7, || c.get(), 25_000, 1);
        assert_eq!(t, (7, 24_999));
        // A tick every 10 ms: 6.2 ms into tick 7 is 76 ms and 5,000 counts.
        c.set(250_000 - 1 - 155_000);
        assert_eq!(tick_time(|| 7, || c.get(), 25_000, 10), (76, 5_000));
        // Milliseconds wrap at 2^32, continuous across it: tick 429,496,729 starts at
        // 4,294,967,290 ms, so 6 ms into it is 0 and 6 ms into the next is 10.
        let last = u32::MAX / 10;
        assert_eq!(tick_time(|| last, || c.get(), 25_000, 10).0, 0);
        assert_eq!(tick_time(|| last + 1, || c.get(), 25_000, 10).0, 10);
    }

    #[test]
    fn the_modem_counts_only_while_it_is_powered() {
        let mut m = Meter::new(0, 0);
        m.modem(false, 2_000);
        m.modem(false, 3_000); // already off: nothing changes
        m.modem(true, 10_000);
        m.modem(true, 11_000);
        let l = m.ledger(12_000, 0);
        assert_eq!(l.modem_on, Field::Value(4_000));
        m.modem(false, 15_000);
        assert_eq!(m.ledger(20_000, 0).modem_on, Field::Value(3_000));
        assert_eq!(
            m.ledger(30_000, 0).modem_on,
            Field::Value(0),
            "off all along"
        );
    }
}
