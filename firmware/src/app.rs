//! The node's main loop, the same on every board: it executes the node's [`Link`] (the
//! schedule and link state machine, shared with the simulator): sample when it says,
//! wake the modem and read the network time, open the socket in transparent mode (TLS by
//! the modem when the blob says so), MQTT connect, exchange (send what waits, ping,
//! collect acknowledgements), escape after a failure. Time is 64-bit milliseconds since
//! boot ([`Uptime`]), so the board's 32-bit clock wrapping after 49.7 days neither
//! mis-dates readings nor stalls sampling. A board supplies its clock, its modem UART, its
//! sampling and where messages go ([`Platform`]); time-outs and waits are polled on its
//! clock, so any executor will do: a plain spin [`block_on`], or [`block_on_idle`] with
//! the board's `wfi`, which sleeps between interrupts.
//!
//! Also the fixed texts boards print for each failure: `Debug` formatting of the error
//! types would cost about 15 KiB of flash (measured on the reference image).

use core::future::{Future, poll_fn};
use core::task::Poll;

use embedded_io_async::{Read, Write};
use embedded_storage::nor_flash::NorFlash;
use protocol::provision::{ProvisionError, Transport, ca_file_name};
use protocol::{Reading, Values};

use crate::backoff::Backoff;
use crate::boot::BootError;
use crate::counter::CounterError;
use crate::energy::Meter;
use crate::link::{Action, Change, Link, Outcome, Schedule, Step};
use crate::modem::{Modem, ModemError};
use crate::node::{Exchange, Node, NodeError};
use crate::ring::RingError;
use crate::station::Sample;
use crate::uplink::{Mqtt, UplinkError};

/// Longest wait for one link step (a modem command sequence, an MQTT exchange).
const STEP_MS: u32 = 10_000;
/// The first sample, milliseconds after boot. Readings carry whole seconds and the
/// database keeps one point per second and series, and the network clock is good to a
/// second or two: waiting 3 s keeps a reading of this boot from sharing a second with the
/// last one of the boot a quick reset ended.
const FIRST_SAMPLE_MS: u32 = 3_000;
/// A status report every this many samples (a reporting node: one per report).
const STATUS_EVERY: u32 = 6;

/// What the loop tells the board (console, defmt, LED…).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Connected to the broker, at this many ms after boot.
    Connected(u32),
    /// A gateway acknowledged the first reading, at this many ms after boot.
    FirstReading(u32),
    /// The link failed (why); next attempt in this many seconds.
    LinkFailed(&'static str, u32),
    /// Sending failed (why); reconnecting.
    Reconnecting(&'static str),
}

/// What the loop needs from a board.
pub trait Platform {
    /// Milliseconds since boot; may wrap at 2³² (see [`Uptime`]).
    fn millis(&self) -> u32;
    /// The network time is known: Unix seconds at boot.
    fn set_unix_at_boot(&mut self, unix: u32);
    /// One sampling cycle at Unix time `now`.
    fn sample(&mut self, now: u32) -> Sample;
    /// Something worth telling.
    fn event(&mut self, e: Event);
    /// Milliseconds the core has slept since boot (its idle hook's time in `wfi`), for
    /// the energy ledger; 0 when the board cannot tell.
    fn asleep_ms(&self) -> u64 {
        0
    }
    /// Switch the modem's supply (or pulse its power key): off after `AT+CPOF` between a
    /// reporting node's reports, on before the next. A board whose modem is always
    /// powered does nothing.
    fn modem_power(&mut self, _on: bool) {}
    /// Nothing is due for `ms` and no byte can come (the modem is off): the board may stop
    /// its clocks (Stop mode, woken by its RTC) for up to that long, then advance its
    /// millisecond clock and its time asleep by the time it stopped. The default does
    /// nothing: the loop then sleeps between ticks ([`block_on_idle`]).
    fn rest(&mut self, _ms: u32) {}
}

/// Runs a future to completion on this core: poll, and poll again. Every waker is a no-op:
/// the node's futures poll their UART and clock rather than wait for interrupts.
pub fn block_on<F: Future>(f: F) -> F::Output {
    block_on_idle(f, || {})
}

/// [`block_on`], calling `idle` whenever the future is pending: a board passes its
/// `wfi`, so the core sleeps until the next interrupt (its millisecond tick, a byte from
/// the modem) instead of spinning. Every wait of the node returns `Pending` once per
/// poll (`yield_now`), so nothing is due before the next interrupt: the time-outs and
/// sample deadlines are read on the tick's clock.
pub fn block_on_idle<F: Future>(f: F, mut idle: impl FnMut()) -> F::Output {
    let mut f = core::pin::pin!(f);
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        idle();
    }
}

/// Returns `Pending` once, so the executor gets the hand back.
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|_| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            Poll::Pending
        }
    })
    .await
}

/// `f`'s output, or `None` if it takes longer than `ms` on `clock`. Dropping the node's
/// flush mid-way is safe: the frame in flight stays sealed and is sent again.
pub async fn with_timeout<F: Future>(clock: impl Fn() -> u32, ms: u32, f: F) -> Option<F::Output> {
    let start = clock();
    let mut f = core::pin::pin!(f);
    poll_fn(|cx| match f.as_mut().poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        _ if clock().wrapping_sub(start) >= ms => Poll::Ready(None),
        _ => Poll::Pending,
    })
    .await
}

/// Waits `ms` on `clock`.
pub async fn sleep_ms(clock: impl Fn() -> u32, ms: u32) {
    let start = clock();
    while clock().wrapping_sub(start) < ms {
        yield_now().await;
    }
}

/// Milliseconds since boot as 64 bits, from a 32-bit clock that wraps every 49.7 days:
/// each reading adds the (wrapping) time since the last one, so it only needs to be read
/// more often than once per wrap.
#[derive(Debug, Clone, Copy)]
pub struct Uptime {
    last: u32,
    total: u64,
}

impl Uptime {
    /// Starts at the clock's current value `now` (its total counts from there).
    pub const fn new(now: u32) -> Self {
        Self {
            last: now,
            total: now as u64,
        }
    }

    /// Milliseconds since boot, given the clock reads `now`.
    pub fn at(&mut self, now: u32) -> u64 {
        self.total += u64::from(now.wrapping_sub(self.last));
        self.last = now;
        self.total
    }
}

/// The board's time: milliseconds since boot as 64 bits, and Unix seconds at boot once
/// the network time is known.
#[derive(Debug)]
struct Time {
    uptime: Uptime,
    unix_at_boot: Option<u32>,
    /// The time of the last sample: the next one is later, always.
    last_sample: Option<u32>,
    /// The energy ledger's counts since the last status report; it also knows whether
    /// the modem is powered (off between a reporting node's reports).
    meter: Meter,
}

impl Time {
    fn new<P: Platform>(board: &P) -> Self {
        let mut uptime = Uptime::new(board.millis());
        let meter = Meter::new(uptime.at(board.millis()), board.asleep_ms());
        Self {
            uptime,
            unix_at_boot: None,
            last_sample: None,
            meter,
        }
    }

    /// Powers the modem up or down, and counts it.
    fn modem_power<P: Platform>(&mut self, board: &mut P, on: bool) {
        if self.meter.modem_is_on() != on {
            board.modem_power(on);
            let now = self.now_ms(board);
            self.meter.modem(on, now);
        }
    }

    /// Counts the modem active from `start` (ms since boot) to now.
    fn active_since<P: Platform>(&mut self, board: &P, start: u64) {
        let took = self.now_ms(board).saturating_sub(start);
        self.meter.active(took);
    }

    /// Milliseconds since boot.
    fn now_ms<P: Platform>(&mut self, board: &P) -> u64 {
        self.uptime.at(board.millis())
    }

    /// The network time says it is `unix` now: remembers Unix seconds at boot.
    fn set_unix<P: Platform>(&mut self, board: &mut P, unix: u32) {
        let up_s = (self.now_ms(board) / 1000) as u32;
        let base = unix.saturating_sub(up_s);
        self.unix_at_boot = Some(base);
        board.set_unix_at_boot(base);
    }

    /// Takes a sample now, and a status report with it if `status`; whether the reading
    /// raises an alarm.
    fn sample<F: NorFlash, const Q: usize, P: Platform>(
        &mut self,
        node: &mut Node<F, Q>,
        board: &mut P,
        status: bool,
    ) -> bool {
        let Some(base) = self.unix_at_boot else {
            return false; // readings need a real time (the link never asks before it is known)
        };
        let up_s = (self.now_ms(board) / 1000).min(u64::from(u32::MAX)) as u32;
        // Each network-time reading re-bases the clock; when the board's crystal ran fast
        // that moves it back, and a sample could take the second of the one before (the
        // database keeps one point per series and second). Strictly later, then.
        let now = match (base.saturating_add(up_s), self.last_sample) {
            (now, Some(last)) if now <= last => last.saturating_add(1),
            (now, _) => now,
        };
        self.last_sample = Some(now);
        let start = self.now_ms(board);
        let sample = board.sample(now);
        let took = self.now_ms(board) - start;
        self.meter.sensor(took);
        let alarm = sample.alarm();
        node.record_sample(sample);
        if status {
            node.report_status(now, None, None, up_s);
            let at = self.now_ms(board);
            let ledger = self.meter.ledger(at, board.asleep_ms());
            node.record(Reading {
                time: now,
                values: Values::Energy(ledger),
            });
        }
        alarm
    }
}

/// Samples and waits as the link says until it asks for a link step; returns that step.
async fn next_step<F: NorFlash, const Q: usize, P: Platform>(
    link: &mut Link,
    node: &mut Node<F, Q>,
    board: &mut P,
    time: &mut Time,
) -> Step {
    loop {
        match link.poll(time.now_ms(board)) {
            Action::Run(step) => return step,
            Action::Sample { status } => {
                if time.sample(node, board, status) {
                    link.report_now(time.now_ms(board));
                }
            }
            Action::WaitUntil(t) => {
                if !time.meter.modem_is_on() {
                    let ms = t.saturating_sub(time.now_ms(board));
                    board.rest(ms.min(u64::from(u32::MAX)) as u32);
                }
                while time.now_ms(board) < t {
                    yield_now().await;
                }
            }
        }
    }
}

/// Runs the node for ever over `modem`, executing its [`Link`].
pub async fn run<F, const Q: usize, U, P>(
    node: &mut Node<F, Q>,
    mut modem: Modem<U>,
    board: &mut P,
) -> !
where
    F: NorFlash,
    U: Read + Write,
    P: Platform,
{
    let mut time = Time::new(board);
    let report_s = u32::from(node.provisioning().report_interval_s);
    let sample_s = u32::from(node.provisioning().sample_interval_s);
    let mut link = Link::new(Schedule {
        first_sample_ms: u64::from(FIRST_SAMPLE_MS),
        interval_ms: u64::from(sample_s) * 1000,
        status_every: match report_s {
            0 => STATUS_EVERY,
            r => (r / sample_s.max(1)).max(1),
        },
        idle_ms: Schedule::idle_ms_for(node.uplink().keep_alive_s()),
        report_ms: u64::from(report_s) * 1000,
        // A reporting node retries at most once per report.
        backoff: Backoff::new(1, report_s.max(60)),
        seed: 0,
    });
    let mut told = Told::default();
    let mut pending = None;
    loop {
        let step = match pending.take() {
            Some(step) => step,
            None => next_step(&mut link, node, board, &mut time).await,
        };
        let start = time.now_ms(board);
        let outcome = match step {
            Step::Clock => {
                time.modem_power(board, true);
                clock(&mut modem, board, &mut time).await
            }
            Step::Open => open(&mut modem, node, board).await,
            Step::Connect => {
                let mut client = Mqtt::new(modem.io());
                let mut s = Session {
                    node: &mut *node,
                    link: &mut link,
                    board: &mut *board,
                    time: &mut time,
                    told: &mut told,
                };
                pending = Some(s.connected(&mut client).await);
                continue;
            }
            // Only while connected (above); the link never asks otherwise.
            Step::Exchange => Outcome::Failed("mqtt: not connected"),
            Step::Escape => {
                // Leave transparent mode: `+++` alone, with a second of silence before
                // and after it (the link's waits).
                let _ = modem.escape().await;
                Outcome::Done
            }
            Step::PowerDown => power_down(&mut modem, board, &mut time).await,
        };
        time.active_since(board, start);
        let change = link.done(step, outcome, time.now_ms(board));
        told.tell(board, change, 0);
    }
}

/// What the board has been told: link changes as they come, the first acknowledged
/// reading once.
#[derive(Default)]
struct Told {
    first_acknowledged: bool,
}

impl Told {
    fn tell<P: Platform>(&mut self, board: &mut P, change: Option<Change>, acknowledged: u32) {
        match change {
            Some(Change::Connected) => board.event(Event::Connected(board.millis())),
            Some(Change::LinkFailed(why, wait)) => board.event(Event::LinkFailed(why, wait)),
            Some(Change::Reconnecting(why)) => board.event(Event::Reconnecting(why)),
            None => {}
        }
        if acknowledged > 0 && !self.first_acknowledged {
            self.first_acknowledged = true;
            board.event(Event::FirstReading(board.millis()));
        }
    }
}

/// The network's time, from the modem.
async fn clock<U: Read + Write, P: Platform>(
    modem: &mut Modem<U>,
    board: &mut P,
    time: &mut Time,
) -> Outcome {
    let ask = async {
        modem.wake().await?;
        modem.clock().await
    };
    match with_timeout(|| board.millis(), STEP_MS, ask).await {
        Some(Ok(t)) => {
            time.set_unix(board, t);
            Outcome::Done
        }
        Some(Err(e)) => Outcome::Failed(modem_error(e)),
        None => Outcome::Failed("modem: no answer in time"),
    }
}

/// Leaves transparent mode (a second of silence either side of `+++`; harmless in
/// command mode), powers the modem off with `AT+CPOF`, and has the board cut its supply,
/// whether the modem answered or not.
async fn power_down<U: Read + Write, P: Platform>(
    modem: &mut Modem<U>,
    board: &mut P,
    time: &mut Time,
) -> Outcome {
    let off = async {
        sleep_ms(|| board.millis(), 1_000).await;
        modem.escape().await?;
        sleep_ms(|| board.millis(), 1_000).await;
        modem.power_off().await
    };
    let outcome = match with_timeout(|| board.millis(), STEP_MS, off).await {
        Some(Ok(())) => Outcome::Done,
        Some(Err(e)) => Outcome::Failed(modem_error(e)),
        None => Outcome::Failed("modem: no answer in time"),
    };
    time.modem_power(board, false);
    outcome
}

/// Opens the broker connection the blob names: TLS when it says so, never a fall-back
/// to clear text.
async fn open<F: NorFlash, const Q: usize, U: Read + Write, P: Platform>(
    modem: &mut Modem<U>,
    node: &Node<F, Q>,
    board: &mut P,
) -> Outcome {
    let p = node.provisioning();
    let open = async {
        match p.transport {
            Transport::Plain => modem.open(&p.broker_host, p.broker_port).await,
            Transport::Tls { ca_sha256 } => {
                let ca = ca_file_name(&ca_sha256);
                modem.open_tls(&p.broker_host, p.broker_port, &ca).await
            }
        }
    };
    match with_timeout(|| board.millis(), STEP_MS, open).await {
        Some(Ok(())) => Outcome::Done,
        Some(Err(e)) => Outcome::Failed(modem_error(e)),
        None => Outcome::Failed("modem: no answer in time"),
    }
}

/// What a connection's steps work on.
struct Session<'a, F: NorFlash, const Q: usize, P: Platform> {
    node: &'a mut Node<F, Q>,
    link: &'a mut Link,
    board: &'a mut P,
    time: &'a mut Time,
    told: &'a mut Told,
}

impl<F: NorFlash, const Q: usize, P: Platform> Session<'_, F, Q, P> {
    /// Connects and exchanges while the link asks for it; the first other step it asks
    /// for. The connection lives while the link exchanges; any other step needs the modem
    /// back (the client is dropped first).
    async fn connected<C: Read + Write>(&mut self, client: &mut Mqtt<C>) -> Step {
        let mut step = Step::Connect;
        loop {
            let board = &mut *self.board;
            let start = self.time.now_ms(board);
            let done = match step {
                Step::Connect => {
                    let connect = async {
                        self.node.connect(client).await.map(|n| Exchange {
                            acknowledged: n,
                            ..Exchange::default()
                        })
                    };
                    with_timeout(|| board.millis(), STEP_MS, connect).await
                }
                Step::Exchange => {
                    with_timeout(|| board.millis(), STEP_MS, self.node.exchange(client)).await
                }
                other => return other,
            };
            self.time.active_since(board, start);
            let (outcome, acknowledged) = match done {
                Some(Ok(d)) if step == Step::Connect => (Outcome::Done, d.acknowledged),
                Some(Ok(d)) => {
                    let settled = self.node.unacknowledged() == 0;
                    let more = d.more;
                    (Outcome::Exchanged { more, settled }, d.acknowledged)
                }
                Some(Err(e)) => (Outcome::Failed(node_error(e)), 0),
                None => (Outcome::Failed("mqtt: no answer in time"), 0),
            };
            let change = self.link.done(step, outcome, self.time.now_ms(board));
            self.told.tell(board, change, acknowledged);
            step = next_step(self.link, self.node, board, self.time).await;
        }
    }
}

/// What to tell a technician about a boot failure.
pub fn boot_error(e: BootError) -> &'static str {
    match e {
        BootError::Flash => "provisioning flash unreadable",
        BootError::Interval => "provisioning blob: sample interval is zero",
        BootError::Provisioning(p) => match p {
            ProvisionError::Magic => "no provisioning blob (no VGP magic): load one",
            ProvisionError::Truncated => "provisioning blob truncated",
            ProvisionError::Checksum => "provisioning blob checksum mismatch (half-written?)",
            ProvisionError::Id => "provisioning blob: invalid tenant or device id",
            ProvisionError::Kind => "provisioning blob: unknown device kind",
            ProvisionError::Host => "provisioning blob: invalid broker host",
            ProvisionError::Password => "provisioning blob: invalid broker password",
            ProvisionError::Tls => "provisioning blob: unknown transport (newer gateway?)",
            _ => "provisioning blob invalid",
        },
    }
}

/// What to tell about a frame-counter failure.
pub fn counter_error(e: CounterError) -> &'static str {
    match e {
        CounterError::Flash(_) => "frame counter: flash error",
        CounterError::Exhausted => "frame counter exhausted: re-key the device",
        CounterError::Verify => "frame counter: flash does not keep what is written",
        CounterError::Unsupported => "frame counter: flash geometry unsupported",
    }
}

fn modem_error(e: ModemError) -> &'static str {
    match e {
        ModemError::Uart => "modem: UART failed",
        ModemError::Refused => "modem answered ERROR",
        ModemError::NoAnswer => "modem: no answer",
        ModemError::Clock => "modem: bad network time",
    }
}

/// What to tell about a frame-ring failure.
pub fn ring_error(e: RingError) -> &'static str {
    match e {
        RingError::Flash(_) => "frame ring: flash error",
        RingError::Unsupported => "frame ring: flash geometry unsupported",
    }
}

fn uplink_error(e: UplinkError) -> &'static str {
    match e {
        UplinkError::Network => "mqtt: link lost",
        UplinkError::Refused(_) => "mqtt: broker refused",
        UplinkError::Protocol => "mqtt: protocol error",
    }
}

/// What to tell about a node failure.
pub fn node_error(e: NodeError) -> &'static str {
    match e {
        NodeError::Uplink(u) => uplink_error(u),
        NodeError::Counter(c) => counter_error(c),
        NodeError::Ring(r) => ring_error(r),
        NodeError::Identity => "invalid identity",
        NodeError::Frame(_) => "frame error",
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::counter::FrameCounter;
    use crate::ring::FrameRing;
    use crate::simulated::RamFlash;
    use core::cell::Cell;
    use protocol::provision::Provisioning;
    use protocol::{AirQuality, DeviceKey, Field, Kind, Reading, Values};
    use std::vec::Vec;

    /// A board whose millisecond clock is set by the test; it remembers the time of
    /// every sample.
    struct Board {
        ms: Cell<u32>,
        samples: Vec<u32>,
        /// What `rest` was asked, in order.
        rests: Vec<u32>,
    }

    impl Board {
        /// A board whose clock reads `ms`.
        fn at(ms: u32) -> Self {
            Self {
                ms: Cell::new(ms),
                samples: Vec::new(),
                rests: Vec::new(),
            }
        }
    }

    impl Platform for Board {
        fn millis(&self) -> u32 {
            self.ms.get()
        }
        fn set_unix_at_boot(&mut self, _: u32) {}
        fn sample(&mut self, now: u32) -> Sample {
            self.samples.push(now);
            Sample {
                reading: Some(Reading {
                    time: now,
                    values: Values::AirQuality(AirQuality {
                        pm25: Field::Value(1),
                        ..AirQuality::default()
                    }),
                }),
                errors: 0,
            }
        }
        fn event(&mut self, _: Event) {}
        /// Stops: the clock jumps by the time asked.
        fn rest(&mut self, ms: u32) {
            self.rests.push(ms);
            self.ms.set(self.ms.get() + ms);
        }
    }

    /// An air-quality node sampling every `sample_interval_s`, on RAM flash.
    fn node(sample_interval_s: u16) -> Node<RamFlash<2048, 512>, 4> {
        let p = Provisioning {
            tenant: "lyon".try_into().unwrap(),
            device: "aq-1".try_into().unwrap(),
            kind: Kind::AirQuality,
            key: DeviceKey::new([7; 16], 1),
            sample_interval_s,
            heartbeat_s: 0,
            report_interval_s: 0,
            bin_depth_mm: 0,
            broker_host: "broker".try_into().unwrap(),
            broker_port: 1883,
            broker_password: "pw".try_into().unwrap(),
            transport: Transport::Plain,
            previous: None,
        };
        let counter = FrameCounter::resume(RamFlash::default(), 0, 16).unwrap();
        let ring = FrameRing::resume(RamFlash::default()).unwrap();
        Node::new(p, counter, ring).unwrap()
    }

    #[test]
    fn a_clock_moved_back_by_the_network_time_never_dates_two_samples_alike() {
        let mut node = node(1);
        let mut board = Board::at(10_000);
        let mut time = Time::new(&board);
        time.set_unix(&mut board, 1_800_000_010);
        time.sample(&mut node, &mut board, false);
        // One second later by the board, but the network says no time has passed.
        board.ms.set(11_000);
        time.set_unix(&mut board, 1_800_000_010);
        time.sample(&mut node, &mut board, false);
        board.ms.set(12_000);
        time.sample(&mut node, &mut board, false);
        assert_eq!(board.samples, [1_800_000_010, 1_800_000_011, 1_800_000_012]);
    }

    #[test]
    fn with_its_modem_off_a_node_rests_until_the_next_sample() {
        let mut node = node(300);
        let mut board = Board::at(0);
        let mut time = Time::new(&board);
        let mut link = Link::new(Schedule {
            first_sample_ms: 3_000,
            interval_ms: 300_000,
            status_every: 72,
            idle_ms: Schedule::idle_ms_for(600),
            report_ms: 21_600_000,
            backoff: Backoff::new(1, 60),
            seed: 0,
        });
        // The report at boot: the network time, a connection, one exchange, power-down.
        time.set_unix(&mut board, 1_800_000_000);
        for (step, outcome) in [
            (Step::Clock, Outcome::Done),
            (Step::Open, Outcome::Done),
            (Step::Connect, Outcome::Done),
            (
                Step::Exchange,
                Outcome::Exchanged {
                    more: false,
                    settled: true,
                },
            ),
        ] {
            assert_eq!(link.poll(time.now_ms(&board)), Action::Run(step));
            link.done(step, outcome, time.now_ms(&board));
        }
        assert_eq!(link.poll(0), Action::Run(Step::PowerDown));
        link.done(Step::PowerDown, Outcome::Done, 0);
        time.modem_power(&mut board, false);
        // Off: it rests until each sample (3 s, then every 300 s), never spins.
        let step = block_on(next_step(&mut link, &mut node, &mut board, &mut time));
        assert_eq!(step, Step::Clock, "the next report, 6 h later");
        assert_eq!(board.ms.get(), 21_600_000);
        assert_eq!(board.rests[..3], [3_000, 300_000, 300_000]);
        assert_eq!(board.samples.len(), 72);
    }

    #[test]
    fn uptime_crosses_the_32_bit_wrap() {
        let mut u = Uptime::new(u32::MAX - 10);
        assert_eq!(u.at(u32::MAX), u64::from(u32::MAX));
        assert_eq!(u.at(5), u64::from(u32::MAX) + 6);
        assert_eq!(u.at(1005), u64::from(u32::MAX) + 1006);
    }

    #[test]
    fn sampling_keeps_its_pace_and_its_dates_across_the_clock_wrap() {
        let mut node = node(60);
        // The board has run for just under 2^32 ms (49.7 days) when the time is known.
        let start = u32::MAX - 150_000;
        let mut board = Board::at(start);
        let mut time = Time::new(&board);
        let unix_now = 1_800_000_000;
        let mut link = Link::new(Schedule {
            first_sample_ms: u64::from(FIRST_SAMPLE_MS),
            interval_ms: 60_000,
            status_every: STATUS_EVERY,
            idle_ms: Schedule::idle_ms_for(600),
            report_ms: 0,
            backoff: Backoff::new(1, 60),
            seed: 0,
        });
        // Five minutes in 100 ms steps, crossing the wrap after 150 s, the network time
        // known from the first step, the data link down all along.
        for step in 1..=3000u32 {
            board.ms.set(start.wrapping_add(step * 100));
            loop {
                let now = time.now_ms(&board);
                match link.poll(now) {
                    Action::WaitUntil(_) => break,
                    Action::Sample { status } => {
                        time.sample(&mut node, &mut board, status);
                    }
                    Action::Run(Step::Clock) => {
                        time.set_unix(&mut board, unix_now + (step - 1) / 10);
                        link.done(Step::Clock, Outcome::Done, now);
                    }
                    Action::Run(s) => {
                        link.done(s, Outcome::Failed("no data link"), now);
                    }
                }
            }
        }
        let gaps: Vec<u32> = board.samples.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(board.samples.len(), 5, "{:?}", board.samples);
        assert!(gaps.iter().all(|&g| g == 60), "{gaps:?}");
        // Dated from the network time: never 49.7 days early.
        assert!(
            board
                .samples
                .iter()
                .all(|&t| (unix_now..unix_now + 300).contains(&t))
        );
    }
}
