//! Backlog-drain benchmark (docs/PERFORMANCE.md): a commune's gateway comes back after
//! days away and finds its whole backlog queued at the broker. N single-reading frames
//! (six values each, as an air-quality node sends) from D devices are preloaded into a
//! persistent session at real Mosquitto (the project's broker config) while the consumer
//! is away; then the consumer starts and is timed until the last reading is in. Three
//! consumers, one phase each, alternating within each of R rounds (the order rotates):
//!
//! 1. the reference: [`mod@consumer`], the least a consumer can do (parse each PUBLISH to its
//!    packet identifier, acknowledge what each read brought in one write), timed until
//!    the broker answered a PINGREQ sent after the last PUBACK;
//! 2. the gateway (release build, its own process) writing InfluxDB 1.x, timed until
//!    its stored-readings counter reaches N;
//! 3. the gateway writing VictoriaMetrics, the same (its writes count as stored once
//!    its counters, read at least 2 s later, vouch for them; the time until every line
//!    was answered 2xx is printed too);
//! 4. and 5. with `--group 1`: one gateway, then a group of three sharing the backlog,
//!    with `[group]` on a three-member etcd cluster (TLS, authentication; its members'
//!    CPU counted with the database's), writing InfluxDB 1.x; `--txn-ops N` sets the
//!    gateways' `group.max_txn_ops` (1024, what the cluster allows).
//!
//! The gateways' stored-readings counter is read every `--poll-ms` (20); under valgrind
//! (`scripts/count-instructions.sh`), which slows the gateway 40 times, reading it every
//! 20 ms was a tenth of the instructions counted.
//!
//! For each phase: readings per second, CPU microseconds per reading of the consumer,
//! the broker and the database (from `/proc`), the two-core bound those give (two cores
//! divided by the CPU time all of them spend per reading: no scheduling on this machine
//! could drain faster), the drain's share of that bound, and the consumer's peak RSS.
//! Then per phase the median of the rounds with min and max. Exits non-zero if a database
//! does not hold exactly N readings after a round, or the gateway's peak RSS passes
//! `--max-rss` MiB. Run it with `scripts/bench-drain.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway::fleet::registry::DeviceKind;
use gateway::observe::metrics::sum_samples;
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{GatewayProcess, GatewaySettings, cpu_seconds, peak_rss_mib};
use vigie_tests::servers::Server;
use vigie_tests::{influxdb, mosquitto, now_s, readback, victoria_metrics};

mod consumer;

/// The gateway's default `mqtt.receive_maximum`: the reference uses the same.
const RECEIVE_MAXIMUM: u16 = 1000;

/// How the run is sized.
struct Args {
    readings: u64,
    devices: u64,
    max_rss: f64,
    gzip: bool,
    rounds: u64,
    group: bool,
    txn_ops: u64,
    /// How often the gateway's stored-readings counter is read, in ms.
    poll_ms: u64,
}

fn args() -> Args {
    let mut a = Args {
        readings: 1_000_000,
        devices: 100,
        max_rss: 48.0,
        gzip: false,
        rounds: 3,
        group: false,
        txn_ops: 1024,
        poll_ms: 20,
    };
    let flags = [
        "--readings",
        "--devices",
        "--max-rss",
        "--gzip",
        "--rounds",
        "--group",
        "--txn-ops",
        "--poll-ms",
    ];
    for (flag, value) in vigie_tests::number_flags(&flags) {
        match flag {
            "--readings" => a.readings = value.clamp(1_000, 10_000_000),
            "--devices" => a.devices = value.clamp(1, 1_000),
            "--gzip" => a.gzip = value != 0,
            "--rounds" => a.rounds = value.clamp(1, 20),
            "--group" => a.group = value != 0,
            "--txn-ops" => a.txn_ops = value.clamp(4, 1024),
            "--poll-ms" => a.poll_ms = value.clamp(1, 5_000),
            _ => a.max_rss = value as f64,
        }
    }
    a
}

/// One consumer's drain.
struct Drain {
    what: &'static str,
    seconds: f64,
    /// VictoriaMetrics: seconds until every line was answered 2xx (`seconds` runs until
    /// its counters vouched for the last of them).
    written: Option<f64>,
    readings: u64,
    consumer_cpu: f64,
    broker_cpu: f64,
    database_cpu: Option<f64>,
    peak_rss: f64,
    stored: Option<u64>,
}

impl Drain {
    fn rate(&self) -> f64 {
        self.readings as f64 / self.seconds
    }

    /// CPU microseconds per reading of the consumer, the broker, the database (0 without).
    fn per_reading(&self) -> [f64; 3] {
        let per = |cpu: f64| cpu * 1e6 / self.readings as f64;
        [
            per(self.consumer_cpu),
            per(self.broker_cpu),
            self.database_cpu.map_or(0.0, per),
        ]
    }

    /// Readings per second two cores allow when every process spends what it spent here.
    fn bound(&self) -> f64 {
        2e6 / self.per_reading().iter().sum::<f64>()
    }

    fn print(&self) {
        let [c, b, d] = self.per_reading();
        println!(
            "  {:<26} {:>7.2} s {:>9.0} readings/s  CPU µs/reading: consumer {c:.2}, broker {b:.2}, database {d:.2}  two-core bound {:.0}/s ({:.2} of it)  peak RSS {:.1} MiB{}",
            self.what,
            self.seconds,
            self.rate(),
            self.bound(),
            self.rate() / self.bound(),
            self.peak_rss,
            self.stored
                .map_or(String::new(), |s| format!("  stored {s}/{}", self.readings)),
        );
        if let Some(w) = self.written {
            println!(
                "  {:<26} {w:>7.2} s until every line was answered 2xx: {:.2} of the bound; confirmed {:.2} s later",
                "",
                self.readings as f64 / w / self.bound(),
                self.seconds - w
            );
        }
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// This program as the reference consumer (`--consume N --port P`): 0 creates the
/// session and its subscription, N drains N messages.
fn consumer(broker: SocketAddr, want: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--consume",
            &want.to_string(),
            "--port",
            &broker.port().to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Run as the reference consumer.
fn consume(want: u64, port: u64) {
    let password = fleet::password("gw-bench");
    let c = consumer::Consume {
        broker: &format!("127.0.0.1:{port}"),
        user: "gw-bench",
        password: password.expose(),
        want,
        receive_maximum: RECEIVE_MAXIMUM,
    };
    if let Err(e) = consumer::run(&c) {
        eprintln!("reference consumer: {e}");
        std::process::exit(1);
    }
}

/// Publishes `n` single-reading frames per device, each from its own account.
async fn preload(devices: &[Device], broker: SocketAddr, per_device: u64) {
    let started = Instant::now();
    let start = now_s() - per_device as u32 - 60;
    let mut messages = Vec::with_capacity(devices.len() * per_device as usize);
    for n in 0..per_device as u32 {
        for d in devices {
            messages.push((d.topic(), d.frame(&[d.full_reading(n, start + n)], n)));
        }
    }
    fleet::publish_all(broker, &messages).await;
    eprintln!(
        "  preloaded {} frames in {:.1} s",
        messages.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The reference phase: [`mod@consumer`] drains the backlog.
async fn reference_drain(devices: &[Device], per_device: u64, dir: &Path) -> Drain {
    let broker = mosquitto(dir);
    // Its session and subscription first, then away while the backlog builds.
    let status = consumer(broker.addr, 0).wait().unwrap();
    assert!(
        status.success(),
        "the reference consumer's session: {status}"
    );
    preload(devices, broker.addr, per_device).await;
    let want = per_device * devices.len() as u64;
    let broker_pid = broker.pid().unwrap();
    let broker_before = cpu_seconds(broker_pid);
    let started = Instant::now();
    // It exits once the broker has processed its last acknowledgement; its CPU and RSS
    // are read until then (5 ms steps).
    let mut sub = consumer(broker.addr, want);
    let pid = sub.id();
    let (mut cpu, mut rss, mut broker_cpu) = (0.0, 0.0, 0.0);
    let deadline = started + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = sub.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            stop(sub);
            panic!("the reference consumer never drained the backlog");
        }
        // Once it has exited, unreaped, its status no longer shows VmHWM (read as 0).
        (cpu, rss) = (cpu_seconds(pid).max(cpu), peak_rss_mib(pid).max(rss));
        broker_cpu = cpu_seconds(broker_pid) - broker_before;
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    assert!(status.success(), "the reference consumer: {status}");
    Drain {
        what: "reference consumer",
        seconds,
        written: None,
        readings: want,
        consumer_cpu: cpu,
        broker_cpu,
        database_cpu: None,
        peak_rss: rss,
        stored: None,
    }
}

/// Readings of the tenant stored in the database.
async fn stored(database: &Server, victoria: bool) -> u64 {
    if victoria {
        let base = format!("http://{}", database.addr);
        let client = reqwest::Client::new();
        client
            .post(format!("{base}/internal/force_flush"))
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = client
            .post(format!("{base}/api/v1/query"))
            .form(&[(
                "query",
                "sum(count_over_time(air_quality_pm25{tenant=\"lyon\"}[30d]))",
            )])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    } else {
        let body = readback::influx_query(
            database.addr,
            "vigie_lyon",
            "SELECT COUNT(pm25) FROM air_quality",
        )
        .await;
        body["results"][0]["series"][0]["values"][0][1]
            .as_u64()
            .unwrap_or(0)
    }
}

/// [`stored`], asked again for up to 30 s until it holds `want` (VictoriaMetrics makes
/// new series searchable a moment after it accepted them).
async fn stored_settled(database: &Server, victoria: bool, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = stored(database, victoria).await;
        if n == want || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How the gateways of a phase are set up.
struct Gateways<'a> {
    /// Their client ids (several: one group sharing the subscription).
    ids: &'a [&'a str],
    /// The database is VictoriaMetrics.
    victoria: bool,
    /// `database.gzip`.
    gzip: bool,
    /// The group's etcd cluster (`[group]`), if they share their device state, and the
    /// group's key prefix there (one per phase: a state left by another phase would
    /// make its backlog duplicates).
    store: Option<(&'a vigie_tests::etcd::Cluster, String)>,
    /// `group.max_txn_ops` (the cluster allows 1024).
    txn_ops: u64,
    /// `--poll-ms`.
    poll_ms: u64,
}

/// Phases 2 to 5: the gateways into `database`, each phase with a broker of its own.
async fn gateway_drain(
    devices: &[Device],
    database: &Server,
    per_device: u64,
    dir: &Path,
    how: &Gateways<'_>,
) -> Drain {
    let broker = mosquitto(dir);
    let settings = |id: &str| {
        let mut s = GatewaySettings::new(id, broker.addr, Some(database.addr));
        s.group = "bench".into();
        s.victoria = how.victoria;
        s.linger = Duration::from_millis(200);
        s.buffer_mib = (1024, 64);
        s.gzip = how.gzip;
        s.extra_toml = how.store.as_ref().map_or(String::new(), |(c, prefix)| {
            let ops = format!("max_txn_ops = {}", how.txn_ops);
            c.group_toml(prefix).replace("max_txn_ops = 1024", &ops)
        });
        s
    };
    // Their sessions and subscription first, then away while the backlog builds.
    let mut gws: Vec<GatewayProcess> = how
        .ids
        .iter()
        .map(|id| GatewayProcess::start(dir, &settings(id)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !gws
        .iter()
        .all(|gw| gw.readyz().is_some_and(|(ready, _)| ready))
    {
        assert!(Instant::now() < deadline, "the gateways never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for gw in &mut gws {
        gw.terminate();
    }
    preload(devices, broker.addr, per_device).await;
    let want = per_device * devices.len() as u64;
    let mut servers = vec![database.pid().unwrap()];
    servers.extend(
        how.store
            .iter()
            .flat_map(|(c, _)| c.members.iter().filter_map(Server::pid)),
    );
    let servers_cpu = || servers.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
    let broker_pid = broker.pid().unwrap();
    let (broker_before, servers_before) = (cpu_seconds(broker_pid), servers_cpu());
    let started = Instant::now();
    for gw in &mut gws {
        gw.restart();
    }
    let deadline = started + Duration::from_secs(600);
    // Lines answered 2xx and readings counted as stored, over the gateways (they differ
    // with VictoriaMetrics, whose writes count as stored once its counters vouch for them).
    let totals = |gws: &[GatewayProcess]| -> (f64, f64) {
        let texts = gws.iter().filter_map(|g| g.get("/metrics").map(|(_, t)| t));
        texts.fold((0.0, 0.0), |(w, s), t| {
            (
                w + sum_samples(&t, "vigie_batch_lines_sum"),
                s + sum_samples(&t, "vigie_readings_stored_total"),
            )
        })
    };
    let mut written = None;
    loop {
        let (lines, stored) = totals(&gws);
        if lines >= want as f64 {
            written.get_or_insert_with(|| started.elapsed().as_secs_f64());
        }
        if stored >= want as f64 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(how.poll_ms)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    if how.store.is_some() {
        let conflicts: f64 = gws
            .iter()
            .map(|g| g.metric("vigie_group_conflicts_total").unwrap_or(0.0))
            .sum();
        eprintln!("  commits judged again after another gateway's claim: {conflicts}");
    }
    let drain = Drain {
        what: match (how.victoria, how.store.is_some(), how.ids.len()) {
            (true, _, _) => "gateway → VictoriaMetrics",
            (false, false, _) => "gateway → InfluxDB 1.x",
            (false, true, 1) => "group of 1 (etcd) → InfluxDB",
            (false, true, _) => "group of 3 (etcd) → InfluxDB",
        },
        seconds,
        written: written.filter(|_| how.victoria),
        readings: want,
        consumer_cpu: gws
            .iter()
            .filter_map(GatewayProcess::pid)
            .map(cpu_seconds)
            .sum(),
        broker_cpu: cpu_seconds(broker_pid) - broker_before,
        database_cpu: Some(servers_cpu() - servers_before),
        peak_rss: gws
            .iter()
            .filter_map(GatewayProcess::pid)
            .map(peak_rss_mib)
            .fold(0.0, f64::max),
        stored: Some(stored_settled(database, how.victoria, want).await),
    };
    for gw in &mut gws {
        gw.terminate();
    }
    drain
}

/// The phases, in the order of round 0 (the last two with `--group 1`).
const PHASES: [&str; 5] = ["reference", "influxdb", "victoria", "group-1", "group-3"];

fn main() {
    let consume_flags = std::env::args().nth(1).is_some_and(|a| a == "--consume");
    if consume_flags {
        let flags = vigie_tests::number_flags(&["--consume", "--port"]);
        let get = |f: &str| flags.iter().find(|(k, _)| *k == f).map_or(0, |(_, v)| *v);
        return consume(get("--consume"), get("--port"));
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}

async fn bench() {
    let a = args();
    let per_device = a.readings / a.devices;
    let n = per_device * a.devices;
    let devices: Vec<_> = (0..a.devices)
        .map(|i| Device::new("lyon", &format!("aq-{i:04}"), DeviceKind::AirQuality))
        .collect();
    println!(
        "drain: {n} single-reading frames of six values from {} devices preloaded at Mosquitto while the consumer is away; {} rounds, phases alternating; 127.0.0.1",
        a.devices, a.rounds
    );
    let phases = if a.group { 5 } else { 3 };
    let store = a.group.then(|| vigie_tests::etcd::cluster(3));
    let mut results: Vec<Vec<Drain>> = (0..phases).map(|_| Vec::new()).collect();
    let mut failures = Vec::new();
    for round in 0..a.rounds as usize {
        println!("round {}", round + 1);
        for k in 0..phases {
            let phase = (round + k) % phases;
            // A fresh registry, broker, database and gateway data directory per phase.
            let dir = tempfile::tempdir().unwrap();
            fleet::write_registry(&dir.path().join("devices.toml"), &devices);
            let how = |ids, victoria, store| Gateways {
                ids,
                victoria,
                gzip: a.gzip,
                store,
                txn_ops: a.txn_ops,
                poll_ms: a.poll_ms,
            };
            let in_store = |phase: &str| {
                let prefix = format!("bench/{round}-{phase}");
                store.as_ref().map(|c| (c, prefix))
            };
            let d = match PHASES[phase] {
                "reference" => reference_drain(&devices, per_device, dir.path()).await,
                "victoria" => {
                    let victoria = victoria_metrics();
                    let how = how(&["gw-v2"], true, None);
                    gateway_drain(&devices, &victoria, per_device, dir.path(), &how).await
                }
                phase => {
                    let influx = influxdb();
                    readback::influx_create_db(influx.addr, "vigie_lyon").await;
                    let how = match phase {
                        "influxdb" => how(&["gw-v1"], false, None),
                        "group-1" => how(&["gw-a"], false, in_store(phase)),
                        _ => how(&["gw-a", "gw-b", "gw-c"], false, in_store(phase)),
                    };
                    gateway_drain(&devices, &influx, per_device, dir.path(), &how).await
                }
            };
            d.print();
            failures.extend(check(&d, n, a.max_rss));
            results[phase].push(d);
        }
    }
    summary(&results);
    assert!(failures.is_empty(), "{}", failures.join("; "));
}

/// What a drain did wrong: a database that does not hold exactly `n` readings, a peak
/// RSS over `max_rss`.
fn check(d: &Drain, n: u64, max_rss: f64) -> Vec<String> {
    let mut failures = Vec::new();
    if d.stored.is_some_and(|s| s != n) {
        failures.push(format!("{}: stored {:?} of {n}", d.what, d.stored));
    }
    if d.stored.is_some() && d.peak_rss > max_rss {
        failures.push(format!(
            "{}: peak RSS {:.1} MiB over {max_rss} MiB",
            d.what, d.peak_rss
        ));
    }
    failures
}

/// Per phase, the median of the rounds and their min–max.
fn summary(results: &[Vec<Drain>]) {
    let stats = |v: Vec<f64>| {
        let mut v = v;
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let reference = stats(results[0].iter().map(Drain::rate).collect()).0;
    println!("medians of {} rounds (min-max):", results[0].len());
    for drains in results {
        let fig = |f: &dyn Fn(&Drain) -> f64| {
            let (m, lo, hi) = stats(drains.iter().map(f).collect());
            match m >= 1000.0 {
                true => format!("{m:.0} ({lo:.0}-{hi:.0})"),
                false => format!("{m:.2} ({lo:.2}-{hi:.2})"),
            }
        };
        let rate = stats(drains.iter().map(Drain::rate).collect());
        println!(
            "  {:<26} {:.0} readings/s ({:.0}-{:.0}), {} of the reference; two-core bound {}/s, drain/bound {}; CPU µs/reading: consumer {}, broker {}, database {}; peak RSS {} MiB",
            drains[0].what,
            rate.0,
            rate.1,
            rate.2,
            fig(&|d| d.rate() / reference),
            fig(&|d| d.bound()),
            fig(&|d| d.rate() / d.bound()),
            fig(&|d| d.per_reading()[0]),
            fig(&|d| d.per_reading()[1]),
            fig(&|d| d.per_reading()[2]),
            fig(&|d| d.peak_rss),
        );
        if drains.iter().all(|d| d.written.is_some()) {
            let written = |d: &Drain| d.written.unwrap_or(d.seconds);
            println!(
                "  {:<26} every line answered 2xx: drain/bound {}, confirmed {} s later",
                "",
                fig(&|d| d.readings as f64 / written(d) / d.bound()),
                fig(&|d| d.seconds - written(d)),
            );
        }
    }
}
