//! A fleet of simulated devices publishing to one broker, with a progress line and a final
//! summary.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use protocol::provision::Provisioning;
use tokio::sync::watch;

use crate::device::{self, DeviceOptions, DeviceStats};

/// Fleet options.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Broker address (each device's blob names a broker; the simulator uses this one).
    pub broker: SocketAddr,
    /// Virtual seconds per real second. The virtual clock starts `(duration + 10 s) × accel`
    /// in the past (at most 30 days) and never runs ahead of the real clock: no reading is
    /// stamped in the future, whatever the run's length.
    pub accel: f64,
    /// How long to run, real time.
    pub duration: Duration,
    /// A status report every this many samples.
    pub status_every: u32,
    /// Network outages of some devices.
    pub outages: Vec<Outage>,
    /// Print a progress line to stderr.
    pub progress: bool,
    /// The CA that devices with a TLS transport verify the broker against (their blobs
    /// pin its SHA-256).
    pub ca: Option<crate::net::TrustedCa>,
}

/// A network outage of some devices (real time from the fleet's start).
#[derive(Debug, Clone)]
pub struct Outage {
    /// Which devices, by index in the fleet.
    pub devices: std::ops::Range<usize>,
    /// When, after the start.
    pub from: Duration,
    /// How long.
    pub length: Duration,
}

/// What the fleet did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FleetSummary {
    /// Devices run.
    pub devices: usize,
    /// Readings the nodes recorded (sealed into frames).
    pub recorded: u64,
    /// Readings a gateway acknowledged as durably held.
    pub acknowledged: u64,
    /// Readings a gateway refused for good (its quarantine keeps them).
    pub refused: u64,
    /// Frames re-sealed under fresh counters because a gateway had seen their counters
    /// (a board whose counter went back: state/ deleted, a blob flashed again).
    pub resealed: u64,
    /// Frames sent again because no acknowledgement covered them in time.
    pub resent: u64,
    /// Readings lost by full node rings (reported in status frames).
    pub dropped: u64,
    /// Readings not acknowledged at the end.
    pub waiting: u64,
    /// Connections made (reconnections included).
    pub connections: u64,
    /// Devices that failed to start.
    pub failed: usize,
    /// The energy ledgers the devices sent, summed (SPEC §4.1, kind 4), virtual ms: MCU
    /// awake, asleep, modem on, modem active, sensor on.
    pub energy: [u64; 5],
}

impl std::fmt::Display for FleetSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "devices={} recorded={} acknowledged={} refused={} resealed={} resent={} dropped={} waiting={} connections={} failed={}",
            self.devices,
            self.recorded,
            self.acknowledged,
            self.refused,
            self.resealed,
            self.resent,
            self.dropped,
            self.waiting,
            self.connections,
            self.failed
        )?;
        let [awake, asleep, on, active, sensor] = self.energy.map(|ms| ms / 1000);
        if awake + asleep > 0 {
            write!(
                f,
                " energy_s: awake={awake} asleep={asleep} modem_on={on} modem_active={active} sensor_on={sensor}"
            )?;
        }
        Ok(())
    }
}

fn totals(stats: &[Arc<DeviceStats>]) -> FleetSummary {
    let sum = |f: fn(&DeviceStats) -> u64| stats.iter().map(|s| f(s)).sum::<u64>();
    FleetSummary {
        devices: stats.len(),
        recorded: sum(|s| s.recorded.load(Ordering::Relaxed)),
        acknowledged: sum(|s| s.acknowledged.load(Ordering::Relaxed)),
        refused: sum(|s| s.refused.load(Ordering::Relaxed)),
        resealed: sum(|s| s.resealed.load(Ordering::Relaxed)),
        resent: sum(|s| s.resent.load(Ordering::Relaxed)),
        dropped: sum(|s| s.dropped.load(Ordering::Relaxed)),
        waiting: sum(|s| s.waiting.load(Ordering::Relaxed)),
        connections: sum(|s| s.connections.load(Ordering::Relaxed)),
        failed: 0,
        energy: std::array::from_fn(|i| {
            stats
                .iter()
                .map(|s| s.energy[i].load(Ordering::Relaxed))
                .sum()
        }),
    }
}

impl FleetSummary {
    /// Whether the run did what it should: every device connected and every reading it
    /// took acknowledged; otherwise what went wrong, in words (`vigie-sim`'s exit status).
    pub fn verdict(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err(
                "no device could connect: check the broker address, that it was restarted \
                 after `devices add` (the accounts), and --ca for TLS blobs"
                    .into(),
            );
        }
        if self.failed > 0 {
            return Err(format!(
                "{} of {} devices failed",
                self.failed, self.devices
            ));
        }
        if self.refused > 0 {
            return Err(format!(
                "{} readings were refused by the gateway and are not in the database: \
                 `vigie-gateway quarantine list` says why",
                self.refused
            ));
        }
        if self.waiting > 0 {
            return Err(format!(
                "{} readings were not acknowledged by a gateway: they stay on the boards' \
                 flash (state/) and go at the next run; is the gateway running and connected?",
                self.waiting
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[test]
fn a_run_that_connected_nothing_or_left_readings_is_a_failure() {
    let ok = FleetSummary {
        devices: 2,
        recorded: 10,
        acknowledged: 10,
        connections: 2,
        ..FleetSummary::default()
    };
    assert_eq!(ok.verdict(), Ok(()));
    let refused_login = FleetSummary {
        connections: 0,
        acknowledged: 0,
        ..ok
    };
    assert!(
        refused_login
            .verdict()
            .unwrap_err()
            .contains("no device could connect")
    );
    let refused = FleetSummary { refused: 2, ..ok };
    assert!(
        refused
            .verdict()
            .unwrap_err()
            .starts_with("2 readings were refused")
    );
    let waiting = FleetSummary { waiting: 3, ..ok };
    assert!(
        waiting
            .verdict()
            .unwrap_err()
            .starts_with("3 readings were not acknowledged")
    );
    let failed = FleetSummary { failed: 1, ..ok };
    assert!(
        failed
            .verdict()
            .unwrap_err()
            .contains("1 of 2 devices failed")
    );
}

/// Live totals of a running fleet.
#[derive(Debug, Clone)]
pub struct FleetHandle(Arc<Vec<Arc<DeviceStats>>>);

impl FleetHandle {
    /// Totals so far.
    pub fn totals(&self) -> FleetSummary {
        totals(&self.0)
    }

    /// Devices connected now.
    pub fn connected(&self) -> u64 {
        self.0
            .iter()
            .map(|s| s.connected.load(Ordering::Relaxed))
            .sum()
    }
}

/// A fleet ready to run.
#[derive(Debug)]
pub struct Fleet {
    devices: Vec<Provisioning>,
    stats: Vec<Arc<DeviceStats>>,
    opts: FleetOptions,
    state_dir: Option<std::path::PathBuf>,
    clock_ahead: Duration,
}

impl Fleet {
    /// A fleet of `devices`.
    pub fn new(devices: Vec<Provisioning>, opts: FleetOptions) -> Self {
        let stats = devices.iter().map(|_| Arc::default()).collect();
        Self {
            devices,
            stats,
            opts,
            state_dir: None,
            clock_ahead: Duration::ZERO,
        }
    }

    /// Runs the devices' clocks `ahead` of where they would be (a board whose network
    /// time is wrong): the timeline, which starts `(duration + 10 s) × accel` in the past
    /// and never passes the real clock, is shifted by `ahead`, so its readings are dated up
    /// to `ahead` in the future.
    pub fn with_clock_ahead(mut self, ahead: Duration) -> Self {
        self.clock_ahead = ahead;
        self
    }

    /// Keeps each device's flash (frame counter, ring) in `dir`, one file each per key
    /// epoch, so a second run of the same blobs resumes where the first stopped, as a
    /// board does after a power cycle.
    pub fn with_state(mut self, dir: std::path::PathBuf) -> Self {
        self.state_dir = Some(dir);
        self
    }

    /// Live totals, readable while the fleet runs.
    pub fn handle(&self) -> FleetHandle {
        FleetHandle(Arc::new(self.stats.clone()))
    }

    /// Runs for `opts.duration` or until `stop`; returns once every device has flushed and
    /// disconnected (each bounded by its network timeout).
    ///
    /// The devices run on a thread of their own (one single-threaded runtime): the no_std
    /// MQTT client is not `Send`, as on a board, and the fleet stays apart from whatever
    /// runtime the caller (the gateway's demo, a test) runs.
    pub async fn run(self, stop: watch::Receiver<bool>) -> FleetSummary {
        let devices = self.devices.len();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("vigie-fleet".into())
            .spawn(move || {
                let summary = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| {
                        let local = tokio::task::LocalSet::new();
                        rt.block_on(local.run_until(run_local(self, stop)))
                    });
                let _ = done_tx.send(summary.ok());
            });
        let failed = FleetSummary {
            devices,
            failed: devices,
            ..FleetSummary::default()
        };
        match thread {
            Ok(_) => done_rx.await.ok().flatten().unwrap_or(failed),
            Err(_) => failed,
        }
    }
}

async fn run_local(fleet: Fleet, mut stop: watch::Receiver<bool>) -> FleetSummary {
    let handle = fleet.handle();
    let Fleet {
        devices,
        stats,
        opts,
        state_dir,
        clock_ahead,
    } = fleet;
    let started = Instant::now();
    let start_time = start_time(&opts, clock_ahead);
    let (dev_stop_tx, dev_stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (p, s)) in devices.into_iter().zip(&stats).enumerate() {
        let options = Arc::new(DeviceOptions {
            broker: opts.broker,
            accel: opts.accel,
            start_time,
            started,
            status_every: opts.status_every,
            outage: opts
                .outages
                .iter()
                .find(|o| o.devices.contains(&i))
                .map(|o| (o.from, o.length)),
            ca: opts.ca.clone(),
            state_dir: state_dir.clone(),
            clock_ahead_s: clock_ahead.as_secs(),
        });
        tasks.spawn_local(device::run(p, options, s.clone(), dev_stop_rx.clone()));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if opts.progress {
            progress(started, &handle);
        }
        if started.elapsed() >= opts.duration {
            break;
        }
    }
    let _ = dev_stop_tx.send(true);
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        if !matches!(r, Ok(Ok(()))) {
            failed += 1;
        }
    }
    if opts.progress {
        progress(started, &handle);
        eprintln!();
    }
    FleetSummary {
        failed,
        ..handle.totals()
    }
}

/// The simulated time the fleet starts at: far enough back that the run ends now (ten
/// real seconds of headroom for the final flush, thirty days at most: the gateway refuses
/// readings older than its horizon, 90 days by default); a clock ahead shifts it all.
fn start_time(opts: &FleetOptions, clock_ahead: Duration) -> u32 {
    let history = ((opts.duration.as_secs_f64() + 10.0) * opts.accel).min(30.0 * 86_400.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (now.saturating_sub(history as u64) + clock_ahead.as_secs()) as u32
}

fn progress(started: Instant, fleet: &FleetHandle) {
    let t = fleet.totals();
    eprint!(
        "\r[{:>6.1}s] connected={}/{} acknowledged={} waiting={} dropped={}   ",
        started.elapsed().as_secs_f64(),
        fleet.connected(),
        t.devices,
        t.acknowledged,
        t.waiting,
        t.dropped
    );
    let _ = std::io::stderr().flush();
}
