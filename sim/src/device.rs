//! One simulated device: the firmware's node, station and drivers on simulated sensors,
//! its virtual clock running `accel` times faster than real time, its uplink a TCP socket.
//!
//! The loop is the board's: sample on every interval whether connected or not (readings
//! wait in the flash ring during an outage), exchange while connected (send what waits,
//! collect the gateways' acknowledgements), reconnect with back-off, exchange when idle.
//! On stop it exchanges until every reading is acknowledged (bounded), then disconnects
//! cleanly.

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
use firmware::node::Node;
use firmware::ring::FrameRing;
use firmware::station::{AirQualityStation, BinStation, Sample, Window};
use firmware::uplink::Mqtt;
use protocol::Kind;
use protocol::provision::{Provisioning, Transport};
use tokio::sync::watch;
use tokio::time::timeout;

use firmware::simulated::{A02yyuwSim, Bme280Sim, NoDelay, Sds011Sim, TiltSim};

use crate::hardware::{Clock, RamFlash, SimEnv};
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
}

impl DeviceOptions {
    /// Virtual time, never ahead of the real clock: once it has caught up it follows it.
    fn virtual_now(&self) -> u32 {
        let elapsed = self.started.elapsed().as_secs_f64() * self.accel;
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        (u64::from(self.start_time) + elapsed as u64).min(real) as u32
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
    /// Frames sent again because no acknowledgement covered them.
    pub resent: AtomicU64,
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
            Kind::DeviceStatus => return Err("a device cannot be of kind status".into()),
        })
    }

    fn sample(&mut self, now: u32) -> Sample {
        let w = Window {
            warmup_ms: 30_000,
            samples: 5,
        };
        match self {
            Self::Air(s) => s.sample(&mut NoDelay, now, w),
            Self::Bin(s) => s.sample(&mut NoDelay, now, w),
        }
    }
}

/// The device's sampling side: clock, station, node and counters.
struct Board {
    clock: Clock,
    station: Station,
    node: Node<RamFlash, QUEUE>,
    stats: Arc<DeviceStats>,
    booted_at: u32,
    cycles: u32,
    seed: u64,
}

impl Board {
    fn cycle(&mut self, opts: &DeviceOptions) {
        let now = opts.virtual_now();
        self.clock.set(now);
        let mut recorded = u64::from(self.node.record_sample(self.station.sample(now)));
        self.cycles += 1;
        if self.cycles.is_multiple_of(opts.status_every.max(1)) {
            let battery = 3_600 - (mix(self.seed) % 200) as u16;
            let rssi = -60 - (mix(self.seed ^ 1) % 40) as i16;
            self.node
                .report_status(now, Some(battery), Some(rssi), now - self.booted_at);
            recorded += 1;
        }
        self.stats.recorded.fetch_add(recorded, Ordering::Relaxed);
        self.update();
    }

    fn update(&self) {
        let s = &self.stats;
        s.dropped
            .store(u64::from(self.node.dropped()), Ordering::Relaxed);
        s.waiting
            .store(self.node.unacknowledged() as u64, Ordering::Relaxed);
        s.acknowledged
            .store(u64::from(self.node.acknowledged()), Ordering::Relaxed);
        s.resent
            .store(u64::from(self.node.resent()), Ordering::Relaxed);
    }
}

/// Runs one device until `stop`, then flushes (bounded) and disconnects.
pub async fn run(
    p: Provisioning,
    opts: Arc<DeviceOptions>,
    stats: Arc<DeviceStats>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
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
    let counter =
        FrameCounter::resume(RamFlash::default(), 0, COUNTER_STEP).map_err(|e| format!("{e:?}"))?;
    let ring = FrameRing::resume(RamFlash::default()).map_err(|e| format!("{e:?}"))?;
    let node = Node::new(p, counter, ring).map_err(|e| format!("{e:?}"))?;
    let mut board = Board {
        booted_at: clock.now(),
        clock,
        station,
        node,
        stats: stats.clone(),
        cycles: 0,
        seed,
    };
    // Devices of one fleet start spread over one period, as real ones are.
    let first = tokio::time::Instant::now() + period.mul_f64((seed % 1000) as f64 / 1000.0);
    let mut tick = tokio::time::interval_at(first, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Backoff::new(1, 30);
    let mut retry_at = Instant::now();
    let mut stopping = *stop.borrow();

    loop {
        // Offline: keep sampling until the back-off ends and the network is there.
        while !stopping && (Instant::now() < retry_at || opts.link_down()) {
            tokio::select! {
                _ = tick.tick() => board.cycle(&opts),
                _ = stop.changed() => stopping = true,
            }
        }
        let p = board.node.provisioning();
        // TLS as the blob says, verified against its pinned CA; never clear text instead.
        let tls = match p.transport {
            Transport::Plain => Ok(None),
            Transport::Tls { ca_sha256 } => match &opts.ca {
                Some(ca) if ca.sha256 == ca_sha256 => Ok(Some((ca, p.broker_host.as_str()))),
                _ => Err(()),
            },
        };
        let mut client = match tls {
            Ok(tls) => match timeout(NET_TIMEOUT, Link::connect(opts.broker, tls)).await {
                Ok(Ok(link)) => Some(Mqtt::new(link)),
                _ => None,
            },
            Err(()) => None,
        };
        let connected = match client.as_mut() {
            Some(c) => match timeout(NET_TIMEOUT, board.node.connect(c)).await {
                Ok(Ok(_)) => {
                    board.update();
                    true
                }
                _ => false,
            },
            None => false,
        };
        let (true, Some(mut client)) = (connected, client) else {
            if stopping {
                return Ok(());
            }
            let delay =
                backoff.next_delay_s(mix(seed ^ retry_at.elapsed().as_nanos() as u64) as u32);
            retry_at = Instant::now() + Duration::from_secs(u64::from(delay));
            continue;
        };
        backoff.reset();
        stats.connections.fetch_add(1, Ordering::Relaxed);
        stats.connected.store(1, Ordering::Relaxed);
        let ok = online(
            &mut board,
            &mut client,
            &opts,
            &mut tick,
            &mut stop,
            &mut stopping,
        )
        .await;
        stats.connected.store(0, Ordering::Relaxed);
        if ok && stopping {
            let _ = timeout(NET_TIMEOUT, board.node.uplink().disconnect(&mut client)).await;
            return Ok(());
        }
        if stopping {
            return Ok(());
        }
        retry_at = Instant::now();
    }
}

/// The connected phase; `false` when the connection must be dropped.
async fn online(
    board: &mut Board,
    client: &mut Mqtt<Link>,
    opts: &DeviceOptions,
    tick: &mut tokio::time::Interval,
    stop: &mut watch::Receiver<bool>,
    stopping: &mut bool,
) -> bool {
    let idle = Duration::from_secs(u64::from(board.node.uplink().keep_alive_s() / 2).max(1));
    let mut grace: Option<Instant> = None;
    loop {
        if opts.link_down() {
            return false; // the modem lost the network: the socket is simply gone
        }
        let exchanged = timeout(NET_TIMEOUT, board.node.exchange(client)).await;
        let more = match exchanged {
            Ok(Ok(done)) => {
                board.update();
                done.more
            }
            _ => {
                board.update();
                return false;
            }
        };
        if more {
            continue;
        }
        if *stopping {
            // Done once every reading is acknowledged, or after the grace period.
            let until = *grace.get_or_insert_with(|| Instant::now() + STOP_GRACE);
            if board.node.unacknowledged() == 0 || Instant::now() >= until {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        tokio::select! {
            _ = tick.tick() => board.cycle(opts),
            _ = stop.changed() => *stopping = true,
            _ = tokio::time::sleep(idle) => {}
        }
    }
}
