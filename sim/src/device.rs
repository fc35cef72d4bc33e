//! One simulated device: the firmware's node, station and drivers on simulated sensors,
//! its virtual clock running `accel` times faster than real time, its uplink a TCP socket.
//!
//! The schedule and link are the board's own state machine ([`firmware::link`]): sample on
//! every interval whether connected or not (readings wait in the flash ring during an
//! outage), exchange while connected (send what waits, ping, collect the gateways'
//! acknowledgements), back off after failed attempts, exchange when idle. This module only
//! executes its steps on a TCP (or TLS) socket. On stop it exchanges until every reading
//! is acknowledged (bounded), then disconnects cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use firmware::backoff::Backoff;
use firmware::counter::FrameCounter;
use firmware::drivers::a02yyuw::A02yyuw;
use firmware::drivers::bme280::{ADDRESS, Bme280};
use firmware::drivers::sds011::Sds011;
use firmware::drivers::tilt::Tilt;
use firmware::energy::Meter;
use firmware::link::{Action, Change, Link as NodeLink, Outcome, Schedule, Step};
use firmware::node::Node;
use firmware::ring::FrameRing;
use firmware::station::{AirQualityStation, BinStation, Sample, Window};
use firmware::uplink::Mqtt;
use protocol::provision::{Provisioning, Transport};
use protocol::{Energy, Kind, Reading, Values};
use tokio::sync::watch;
use tokio::time::timeout;

use firmware::simulated::{A02yyuwSim, Bme280Sim, NoDelay, Sds011Sim, TiltSim};

use crate::hardware::{Clock, Flash, SimEnv};
use crate::net::{Link, TrustedCa};
use crate::signals::mix;

/// Readings a simulated node keeps in RAM while its flash fails, as on the reference board.
pub const QUEUE: usize = firmware::REFERENCE_QUEUE;
/// Counters one flash write reserves.
const COUNTER_STEP: u32 = 64;
/// Longest wait for any one network step before the connection is dropped.
const NET_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time a stopping device keeps exchanging for its last acknowledgements.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The sampling window of both kinds: the PM sensor's fan settles for 30 s, then 5
/// readings a second apart; the sensor is on for all of it.
const WINDOW: Window = Window {
    warmup_ms: 30_000,
    samples: 5,
};

/// Virtual ms a sample keeps the sensor (and the MCU) on: the PM sensor's window, or the
/// ranger's (5 readings at 10 Hz: it needs no warm-up).
fn sensor_ms(kind: Kind) -> u64 {
    match kind {
        Kind::WasteBin => 100 * WINDOW.samples as u64,
        _ => u64::from(WINDOW.warmup_ms) + 1_000 * WINDOW.samples as u64,
    }
}

/// Virtual ms a reporting node's modem takes to power up and attach to the network
/// before it answers the network time (docs/ENERGY.md: an assumption, not measured).
const WAKE_MS: u64 = 5_000;

/// Air time a link step takes over a cellular modem, virtual ms (docs/ENERGY.md: the
/// simulator's loopback answers in microseconds, a modem in seconds): the network time,
/// opening the socket (TLS takes its handshake more), MQTT connect, one exchange, the
/// escape's silences, the power-down's silences and `AT+CPOF`.
fn air_ms(step: Step, tls: bool) -> u64 {
    match step {
        Step::Clock | Step::Connect | Step::Exchange => 1_000,
        Step::Open if tls => 4_000,
        Step::Open => 2_000,
        Step::Escape | Step::PowerDown => 2_000,
    }
}

/// How the simulated devices run.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// Broker address.
    pub broker: SocketAddr,
    /// Virtual seconds per real second.
    pub accel: f64,
    /// Virtual time at `started`.
    pub start_time: u32,
    /// Real time the fleet started.
    pub started: Instant,
    /// A status report every this many samples.
    pub status_every: u32,
    /// Real-time window (from `started`) during which this device has no network.
    pub outage: Option<(Duration, Duration)>,
    /// The CA a device with a TLS transport verifies the broker against.
    pub ca: Option<TrustedCa>,
    /// Where each device's flash (frame counter, ring) is kept across runs; none: in
    /// memory, gone with the run.
    pub state_dir: Option<std::path::PathBuf>,
    /// How far the devices' clocks run ahead of the real one (a board whose network time
    /// is wrong), seconds.
    pub clock_ahead_s: u64,
}

impl DeviceOptions {
    /// Virtual time, never ahead of the real clock (plus `clock_ahead_s`): once it has
    /// caught up it follows it.
    /// Virtual milliseconds since the fleet started (the energy ledger's clock).
    fn virtual_ms(&self) -> u64 {
        (self.started.elapsed().as_secs_f64() * self.accel * 1000.0) as u64
    }

    fn virtual_now(&self) -> u32 {
        let elapsed = self.started.elapsed().as_secs_f64() * self.accel;
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        (u64::from(self.start_time) + elapsed as u64).min(real + self.clock_ahead_s) as u32
    }

    fn link_down(&self) -> bool {
        self.outage.is_some_and(|(from, len)| {
            let e = self.started.elapsed();
            e >= from && e < from + len
        })
    }
}

/// Live counters of one device, read by the progress line.
#[derive(Debug, Default)]
pub struct DeviceStats {
    /// Readings queued by the node (each sample worth sending, each status report).
    pub recorded: AtomicU64,
    /// Readings a gateway acknowledged (durably held).
    pub acknowledged: AtomicU64,
    /// Readings a gateway refused for good (kept in its quarantine).
    pub refused: AtomicU64,
    /// Frames re-sealed under fresh counters (the board's counter had gone back).
    pub resealed: AtomicU64,
    /// Frames sent again because no acknowledgement covered them.
    pub resent: AtomicU64,
    /// The energy ledgers' sums (SPEC §4.1, kind 4), virtual ms: MCU awake, asleep, modem
    /// on, modem active, sensor on.
    pub energy: [AtomicU64; 5],
    /// Readings lost by the node (full ring), as its status frames report.
    pub dropped: AtomicU64,
    /// Readings not yet acknowledged.
    pub waiting: AtomicU64,
    /// Successful connections.
    pub connections: AtomicU64,
    /// 1 while connected.
    pub connected: AtomicU64,
}

enum Station {
    Air(AirQualityStation<Sds011Sim<SimEnv>, Bme280Sim<SimEnv>>),
    Bin(BinStation<A02yyuwSim<SimEnv>, TiltSim<SimEnv>, Bme280Sim<SimEnv>>),
}

impl Station {
    fn new(p: &Provisioning, clock: &Clock, seed: u64) -> Result<Self, String> {
        let heartbeat = u32::from(p.heartbeat_s);
        let offset = if p.kind == Kind::WasteBin { 2.0 } else { 0.0 };
        let env = SimEnv::new(clock.clone(), seed, offset, p.bin_depth_mm);
        let climate = Bme280::new(Bme280Sim::new(env.clone()), ADDRESS).ok();
        Ok(match p.kind {
            Kind::AirQuality => Self::Air(AirQualityStation::new(
                Sds011::new(Sds011Sim::new(env)),
                climate,
                heartbeat,
            )),
            Kind::WasteBin => Self::Bin(BinStation::new(
                A02yyuw::new(A02yyuwSim::new(env.clone())),
                Tilt::new(TiltSim::new(env), true),
                climate,
                p.bin_depth_mm,
                heartbeat,
            )),
            Kind::DeviceStatus | Kind::Energy => {
                return Err("a device is of kind air quality or waste bin".into());
            }
        })
    }

    fn sample(&mut self, now: u32) -> Sample {
        match self {
            Self::Air(s) => s.sample(&mut NoDelay, now, WINDOW),
            Self::Bin(s) => s.sample(&mut NoDelay, now, WINDOW),
        }
    }
}

/// The device's sampling side: clock, station, node and counters.
struct Board {
    clock: Clock,
    station: Station,
    node: Node<Flash, QUEUE>,
    stats: Arc<DeviceStats>,
    booted_at: u32,
    seed: u64,
    /// The energy ledger in virtual ms: the MCU is awake while its modem is on the air or
    /// its sensor measures, asleep otherwise.
    meter: Meter,
    awake_ms: u64,
    /// A reporting node's modem is off.
    modem_off: bool,
}

impl Board {
    /// Samples (and reports its status if `status`); whether the reading raises an alarm.
    fn cycle(&mut self, opts: &DeviceOptions, status: bool) -> bool {
        let now = opts.virtual_now();
        self.clock.set(now);
        let sample = self.station.sample(now);
        let alarm = sample.alarm();
        let mut recorded = u64::from(self.node.record_sample(sample));
        let sensor_ms = sensor_ms(self.node.provisioning().kind);
        self.meter.sensor(sensor_ms);
        self.awake_ms += sensor_ms;
        if status {
            let battery = 3_600 - (mix(self.seed) % 200) as u16;
            let rssi = -60 - (mix(self.seed ^ 1) % 40) as i16;
            self.node
                .report_status(now, Some(battery), Some(rssi), now - self.booted_at);
            let at = opts.virtual_ms();
            let ledger = self.meter.ledger(at, at.saturating_sub(self.awake_ms));
            self.count_energy(&ledger);
            self.node.record(Reading {
                time: now,
                values: Values::Energy(ledger),
            });
            recorded += 2;
        }
        self.stats.recorded.fetch_add(recorded, Ordering::Relaxed);
        self.update();
        alarm
    }

    /// A link step went on the air. A reporting node's modem is on only for its steps
    /// (the simulator's time is not the modem's: a report takes milliseconds here) and
    /// takes [`WAKE_MS`] to come back when it was off.
    fn on_air(&mut self, step: Step) {
        let tls = matches!(self.node.provisioning().transport, Transport::Tls { .. });
        let mut ms = air_ms(step, tls);
        if step == Step::Clock && self.modem_off {
            ms += WAKE_MS;
            self.modem_off = false;
        }
        self.modem_off |= step == Step::PowerDown;
        self.meter.active(ms);
        self.awake_ms += ms;
        if self.node.provisioning().report_interval_s > 0 {
            self.meter.modem_on_for(ms);
        }
    }

    fn count_energy(&self, ledger: &Energy) {
        let fields = [
            ledger.awake,
            ledger.asleep,
            ledger.modem_on,
            ledger.modem_active,
            ledger.sensor_on,
        ];
        for (sum, f) in self.stats.energy.iter().zip(fields) {
            sum.fetch_add(u64::from(f.value().unwrap_or(0)), Ordering::Relaxed);
        }
    }

    fn update(&self) {
        let s = &self.stats;
        s.dropped
            .store(u64::from(self.node.dropped()), Ordering::Relaxed);
        s.waiting
            .store(self.node.unacknowledged() as u64, Ordering::Relaxed);
        s.acknowledged
            .store(u64::from(self.node.acknowledged()), Ordering::Relaxed);
        s.refused
            .store(u64::from(self.node.refused()), Ordering::Relaxed);
        s.resealed
            .store(u64::from(self.node.resealed()), Ordering::Relaxed);
        s.resent
            .store(u64::from(self.node.resent()), Ordering::Relaxed);
    }
}

/// Runs one device until `stop`, then flushes (bounded) and disconnects. The schedule and
/// link are the firmware's [`Link`]: this loop only executes its actions, on real time
/// since the device started.
pub async fn run(
    p: Provisioning,
    opts: Arc<DeviceOptions>,
    stats: Arc<DeviceStats>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let (board, mut link) = boot(p, &opts, &stats)?;
    let mut device = Device {
        board,
        client: None,
        opts,
        stats,
    };
    let started = Instant::now();
    let now = || started.elapsed().as_millis() as u64;
    // Checked before every action: a busy device may never reach a wait.
    while !*stop.borrow() {
        let step = match link.poll(now()) {
            Action::Sample { status } => {
                if device.board.cycle(&device.opts, status) {
                    link.report_now(now());
                }
                continue;
            }
            Action::WaitUntil(t) => {
                let until = started + Duration::from_millis(t);
                tokio::select! {
                    _ = tokio::time::sleep_until(until.into()) => {}
                    changed = stop.changed() => if changed.is_err() {
                        break; // the fleet is gone
                    },
                }
                continue;
            }
            Action::Run(step) => step,
        };
        let outcome = device.step(step).await;
        if let Some(Change::LinkFailed(..) | Change::Reconnecting(..)) =
            link.done(step, outcome, now())
        {
            device.stats.connected.store(0, Ordering::Relaxed);
        }
    }
    device.finish(link.is_up()).await;
    Ok(())
}

/// The device as it boots: its station, counter and ring (on files under the state
/// directory, or in memory), and its link's schedule.
fn boot(
    p: Provisioning,
    opts: &DeviceOptions,
    stats: &Arc<DeviceStats>,
) -> Result<(Board, NodeLink), String> {
    let seed = mix(p
        .tenant
        .bytes()
        .chain(p.device.bytes())
        .fold(0, |h, b| mix(h ^ u64::from(b))));
    let clock = Clock::default();
    clock.set(opts.virtual_now());
    let station = Station::new(&p, &clock, seed)?;
    let period = Duration::from_secs_f64(f64::from(p.sample_interval_s) / opts.accel)
        .max(Duration::from_millis(10));
    let (counter_flash, ring_flash) = match &opts.state_dir {
        // Per board, whatever blob it runs: a blob `devices rotate` wrote re-seals what
        // waits under the old key, as on a real board flashed with it.
        Some(dir) => {
            let base = dir.join(format!("{}-{}", p.tenant, p.device));
            let flash = |ext| {
                Flash::file(base.with_extension(ext))
                    .map_err(|e| format!("{}: {e}", base.display()))
            };
            (flash("counter")?, flash("ring")?)
        }
        None => (Flash::ram(), Flash::ram()),
    };
    let counter =
        FrameCounter::resume(counter_flash, 0, COUNTER_STEP).map_err(|e| format!("{e:?}"))?;
    let ring = FrameRing::resume(ring_flash).map_err(|e| format!("{e:?}"))?;
    // Scaled like the sample interval (at least 1 ms); 0 stays 0: connected.
    let report_s = p.report_interval_s;
    let report_ms = match report_s {
        0 => 0,
        r => ((f64::from(r) * 1000.0 / opts.accel) as u64).max(1),
    };
    let node = Node::new(p, counter, ring).map_err(|e| format!("{e:?}"))?;
    let link = NodeLink::new(Schedule {
        // Devices of one fleet start spread over one period, as real ones are.
        first_sample_ms: (period.as_millis() as u64) * (seed % 1000) / 1000,
        interval_ms: period.as_millis() as u64,
        status_every: opts.status_every,
        idle_ms: Schedule::idle_ms_for(node.uplink().keep_alive_s()),
        report_ms,
        backoff: Backoff::new(1, 60),
        seed: seed as u32,
    });
    let mut board = Board {
        booted_at: clock.now(),
        clock,
        station,
        node,
        stats: stats.clone(),
        seed,
        meter: Meter::new(opts.virtual_ms(), 0),
        awake_ms: 0,
        modem_off: false,
    };
    if report_s > 0 {
        // Its modem is counted step by step (`on_air`), not by the clock.
        board.meter.modem(false, opts.virtual_ms());
    }
    Ok((board, link))
}

/// A running device: what executes its link's steps.
struct Device {
    board: Board,
    client: Option<Mqtt<Link>>,
    opts: Arc<DeviceOptions>,
    stats: Arc<DeviceStats>,
}

impl Device {
    /// Executes one step of the link.
    async fn step(&mut self, step: Step) -> Outcome {
        self.board.on_air(step);
        match step {
            // The simulator's clock is always known.
            Step::Clock => Outcome::Done,
            Step::Open => match open(&self.board.node, &self.opts).await {
                Some(link) => {
                    self.client = Some(Mqtt::new(link));
                    Outcome::Done
                }
                None => Outcome::Failed("cannot open the connection"),
            },
            Step::Connect => {
                if self.connect().await {
                    Outcome::Done
                } else {
                    Outcome::Failed("mqtt connect failed")
                }
            }
            Step::Exchange => {
                // An outage takes the network away: the socket is simply gone.
                let reporting = self.board.node.provisioning().report_interval_s > 0;
                let exchanged = match self.client.as_mut() {
                    Some(c) if !self.opts.link_down() => {
                        exchange(&mut self.board.node, c, reporting).await
                    }
                    _ => None,
                };
                self.board.update();
                match exchanged {
                    Some(Ok(done)) => Outcome::Exchanged {
                        more: done.more,
                        settled: self.board.node.unacknowledged() == 0,
                    },
                    _ => Outcome::Failed("exchange failed"),
                }
            }
            // The connection (if any) goes with the modem.
            Step::Escape | Step::PowerDown => {
                self.client = None;
                self.stats.connected.store(0, Ordering::Relaxed);
                Outcome::Done
            }
        }
    }

    /// MQTT CONNECT over the open connection; whether the broker took it.
    async fn connect(&mut self) -> bool {
        let connected = match self.client.as_mut() {
            Some(c) => matches!(
                timeout(NET_TIMEOUT, self.board.node.connect(c)).await,
                Ok(Ok(_))
            ),
            None => false,
        };
        self.board.update();
        if connected {
            self.stats.connections.fetch_add(1, Ordering::Relaxed);
            self.stats.connected.store(1, Ordering::Relaxed);
        }
        connected
    }

    /// Stopping: a device whose network is back but whose link still waits out its
    /// backoff connects once more (a real one would at its next attempt), so the run does
    /// not end on where a backoff happened to fall; then, while connected, it exchanges
    /// until every reading is acknowledged (bounded) and disconnects cleanly.
    async fn finish(mut self, up: bool) {
        let mut up = up;
        if !up && !self.opts.link_down() {
            self.client = open(&self.board.node, &self.opts).await.map(Mqtt::new);
            up = self.connect().await;
        }
        if let (true, Some(mut c)) = (up, self.client.take()) {
            let until = Instant::now() + STOP_GRACE;
            while self.board.node.unacknowledged() > 0 && Instant::now() < until {
                match timeout(NET_TIMEOUT, self.board.node.exchange(&mut c)).await {
                    Ok(Ok(done)) if done.more => continue,
                    Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                    _ => break,
                }
            }
            self.board.update();
            let _ = timeout(NET_TIMEOUT, self.board.node.uplink().disconnect(&mut c)).await;
        }
        self.stats.connected.store(0, Ordering::Relaxed);
    }
}

/// One exchange. A modem's round trip takes about a second, in which the gateway's
/// acknowledgement of what was just sent comes back; the loopback takes microseconds. So a
/// reporting node (which powers down once everything is acknowledged) waits here for the
/// acknowledgements, up to a second of real time, as one exchange on the air: otherwise
/// its report would last minutes of virtual time and sample meanwhile.
async fn exchange(
    node: &mut Node<Flash, QUEUE>,
    c: &mut Mqtt<Link>,
    reporting: bool,
) -> Option<Result<firmware::node::Exchange, firmware::node::NodeError>> {
    let until = Instant::now() + Duration::from_secs(1);
    loop {
        let done = timeout(NET_TIMEOUT, node.exchange(c)).await.ok()?;
        let settled = node.unacknowledged() == 0;
        match done {
            Ok(d) if reporting && !d.more && !settled && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return Some(other),
        }
    }
}

/// Opens the device's connection to the broker: TLS as the blob says, verified against
/// its pinned CA, never clear text instead; nothing while its network is down.
async fn open(node: &Node<Flash, QUEUE>, opts: &DeviceOptions) -> Option<Link> {
    if opts.link_down() {
        return None;
    }
    let p = node.provisioning();
    let tls = match p.transport {
        Transport::Plain => None,
        Transport::Tls { ca_sha256 } => match &opts.ca {
            Some(ca) if ca.sha256 == ca_sha256 => Some((ca, p.broker_host.as_str())),
            _ => return None,
        },
    };
    timeout(NET_TIMEOUT, Link::connect(opts.broker, tls))
        .await
        .ok()?
        .ok()
}
