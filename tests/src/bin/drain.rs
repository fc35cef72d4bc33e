//! Backlog-drain benchmark (docs/PERFORMANCE.md): a commune's gateway comes back after
//! days away and finds its whole backlog queued at the broker. N single-reading frames
//! from D devices are preloaded into a persistent session at real Mosquitto (the project's
//! broker config) while its consumer is away; then the consumer starts and is timed until
//! the last reading is in (received, or queryable in the database). In one run:
//!
//! 1. the broker's own drain to `mosquitto_sub -q 1` (the ceiling on this machine);
//! 2. the gateway (release build, its own process) writing InfluxDB 1.x;
//! 3. the gateway writing VictoriaMetrics.
//!
//! For each: seconds, readings per second, the ratio to the broker's drain, CPU
//! microseconds per reading of the consumer, the broker and the database (from `/proc`),
//! the consumer's peak RSS, and stored/N read back from the database. Exits non-zero if a
//! database does not hold exactly N readings, or if the gateway's peak RSS passes
//! `--max-rss` MiB. Run it with `scripts/bench-drain.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway::fleet::registry::DeviceKind;
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{GatewayProcess, GatewaySettings, cpu_seconds, peak_rss_mib};
use vigie_tests::servers::Server;
use vigie_tests::{influxdb, mosquitto, now_s, readback, victoria_metrics};

/// How the run is sized.
struct Args {
    readings: u64,
    devices: u64,
    max_rss: f64,
    gzip: bool,
}

fn args() -> Args {
    let mut a = Args {
        readings: 1_000_000,
        devices: 100,
        max_rss: 48.0,
        gzip: false,
    };
    let flags = ["--readings", "--devices", "--max-rss", "--gzip"];
    for (flag, value) in vigie_tests::number_flags(&flags) {
        match flag {
            "--readings" => a.readings = value.clamp(1_000, 10_000_000),
            "--devices" => a.devices = value.clamp(1, 1_000),
            "--gzip" => a.gzip = value != 0,
            _ => a.max_rss = value as f64,
        }
    }
    a
}

/// One consumer's drain.
struct Drain {
    what: &'static str,
    seconds: f64,
    readings: u64,
    consumer_cpu: f64,
    broker_cpu: f64,
    database_cpu: Option<f64>,
    peak_rss: f64,
    stored: Option<u64>,
}

impl Drain {
    fn print(&self, broker_rate: f64) {
        let per = |cpu: f64| cpu * 1e6 / self.readings as f64;
        let rate = self.readings as f64 / self.seconds;
        println!(
            "{:<28} {:>7.2} s {:>9.0} readings/s  ratio {:.2}  CPU µs/reading: consumer {:.2}, broker {:.2}{}  peak RSS {:.1} MiB{}",
            self.what,
            self.seconds,
            rate,
            rate / broker_rate,
            per(self.consumer_cpu),
            per(self.broker_cpu),
            self.database_cpu
                .map_or(String::new(), |c| format!(", database {:.2}", per(c))),
            self.peak_rss,
            self.stored
                .map_or(String::new(), |s| format!("  stored {s}/{}", self.readings)),
        );
    }
}

/// `mosquitto_sub` as the bench account, QoS 1, persistent session; with `count`, it
/// exits after that many messages.
fn subscriber(broker: SocketAddr, count: Option<u64>) -> Child {
    Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-V", "5", "-q", "1", "-c", "-x", "86400"])
        // The broker lets only gateway accounts read uplinks, through a shared subscription.
        .args(["-i", "gw-bench", "-u", "gw-bench", "-P"])
        .arg(fleet::password("gw-bench").expose())
        .args(["-t", "$share/bench/vigie/v1/+/+/up"])
        .args(count.map_or(Vec::new(), |n| vec!["-C".to_string(), n.to_string()]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub (Debian package mosquitto-clients)")
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Publishes `n` single-reading frames per device, each from its own account.
async fn preload(devices: &[Device], broker: SocketAddr, per_device: u64) {
    let started = Instant::now();
    let start = now_s() - per_device as u32 - 60;
    let mut messages = Vec::with_capacity(devices.len() * per_device as usize);
    for n in 0..per_device as u32 {
        for d in devices {
            messages.push((d.topic(), d.frame(&[d.reading(n, start + n)], n)));
        }
    }
    fleet::publish_all(broker, &messages).await;
    eprintln!(
        "  preloaded {} frames in {:.1} s",
        messages.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Phase 1: the broker's own drain.
async fn broker_drain(devices: &[Device], per_device: u64, dir: &Path) -> Drain {
    let broker = mosquitto(dir);
    // Its session and subscription first, then away while the backlog builds.
    let sub = subscriber(broker.addr, None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(sub);
    preload(devices, broker.addr, per_device).await;
    let want = per_device * devices.len() as u64;
    let broker_pid = broker.pid().unwrap();
    let broker_before = cpu_seconds(broker_pid);
    let started = Instant::now();
    // It exits after the backlog; its CPU and RSS are read until then (20 ms steps).
    let mut sub = subscriber(broker.addr, Some(want));
    let pid = sub.id();
    let (mut cpu, mut rss, mut broker_cpu) = (0.0, 0.0, 0.0);
    let deadline = started + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = sub.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "mosquitto_sub never drained the backlog"
        );
        (cpu, rss) = (cpu_seconds(pid), peak_rss_mib(pid));
        broker_cpu = cpu_seconds(broker_pid) - broker_before;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    assert!(status.success(), "mosquitto_sub: {status}");
    Drain {
        what: "mosquitto_sub (broker limit)",
        seconds,
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

/// Phases 2 and 3: the gateway into `database`, each phase with a broker of its own.
async fn gateway_drain(
    devices: &[Device],
    database: &Server,
    victoria: bool,
    per_device: u64,
    dir: &Path,
    gzip: bool,
) -> Drain {
    let broker = mosquitto(dir);
    let id = if victoria { "gw-v2" } else { "gw-v1" };
    let mut settings = GatewaySettings::new(id, broker.addr, Some(database.addr));
    settings.victoria = victoria;
    settings.linger = Duration::from_millis(200);
    settings.buffer_mib = (1024, 64);
    settings.gzip = gzip;
    // Its session and subscription first, then away while the backlog builds.
    let mut gw = GatewayProcess::start(dir, &settings);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !gw.readyz().is_some_and(|(ready, _)| ready) {
        assert!(Instant::now() < deadline, "the gateway never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.terminate();
    preload(devices, broker.addr, per_device).await;
    let want = per_device * devices.len() as u64;
    let (broker_pid, db_pid) = (broker.pid().unwrap(), database.pid().unwrap());
    let (broker_before, db_before) = (cpu_seconds(broker_pid), cpu_seconds(db_pid));
    let started = Instant::now();
    gw.restart();
    let pid = gw.pid().unwrap();
    let deadline = started + Duration::from_secs(600);
    let mut acks_waiting: f64 = 0.0;
    while gw.metric("vigie_readings_stored_total").unwrap_or(0.0) < want as f64
        && Instant::now() < deadline
    {
        acks_waiting = acks_waiting.max(gw.metric("vigie_device_acks_waiting").unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("  device acknowledgements waiting for the broker client, at most: {acks_waiting}");
    let seconds = started.elapsed().as_secs_f64();
    let drain = Drain {
        what: if victoria {
            "gateway → VictoriaMetrics"
        } else {
            "gateway → InfluxDB 1.x"
        },
        seconds,
        readings: want,
        consumer_cpu: cpu_seconds(pid),
        broker_cpu: cpu_seconds(broker_pid) - broker_before,
        database_cpu: Some(cpu_seconds(db_pid) - db_before),
        peak_rss: peak_rss_mib(pid),
        stored: Some(stored_settled(database, victoria, want).await),
    };
    gw.terminate();
    drain
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let per_device = a.readings / a.devices;
    let n = per_device * a.devices;
    let (influx, victoria) = (influxdb(), victoria_metrics());
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices: Vec<_> = (0..a.devices)
        .map(|i| Device::new("lyon", &format!("aq-{i:04}"), DeviceKind::AirQuality))
        .collect();
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    println!(
        "drain: {n} single-reading frames from {} devices preloaded at Mosquitto while the consumer is away; 127.0.0.1",
        a.devices
    );

    let limit = broker_drain(&devices, per_device, dir.path()).await;
    let broker_rate = n as f64 / limit.seconds;
    limit.print(broker_rate);
    let mut failures = Vec::new();
    for (database, is_victoria) in [(&influx, false), (&victoria, true)] {
        let d = gateway_drain(
            &devices,
            database,
            is_victoria,
            per_device,
            dir.path(),
            a.gzip,
        )
        .await;
        d.print(broker_rate);
        if d.stored != Some(n) {
            failures.push(format!("{}: stored {:?} of {n}", d.what, d.stored));
        }
        if d.peak_rss > a.max_rss {
            failures.push(format!(
                "{}: peak RSS {:.1} MiB over {} MiB",
                d.what, d.peak_rss, a.max_rss
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("; "));
}
