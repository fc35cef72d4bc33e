//! Load benchmark (docs/PERFORMANCE.md): the fleet simulator's devices publish as fast as
//! they can through real Mosquitto, twice with the same publishers:
//!
//! 1. to a trivial subscriber (`mosquitto_sub`, QoS 1, each message's arrival time to a
//!    file): the broker's own drain limit for these publishers on this machine;
//! 2. to the gateway (release build, its own process) writing InfluxDB 1.x: frames and
//!    readings per second until the last one is stored, publish→queryable latency from
//!    probe readings polled in InfluxDB, the gateway's CPU seconds and peak RSS.
//!
//! Prints `ratio=<gateway rate / broker limit>`. Everything runs on 127.0.0.1, bounded by
//! `--seconds` of publishing and fixed time-outs. Run it with `scripts/bench-load.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway::fleet::registry::DeviceKind;
use protocol::{AirQuality, Field, Reading, Values};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, MqttOptions};
use tokio::sync::watch;
use vigie_sim::{Fleet, FleetOptions, FleetSummary};
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{GatewayProcess, GatewaySettings, cpu_seconds, peak_rss_mib};
use vigie_tests::{influxdb, mosquitto, now_s, readback};

/// How the run is sized.
struct Args {
    devices: usize,
    seconds: u64,
    probes: u32,
    /// The simulated clock's speed: each device samples every 300 s of it, so the fleet
    /// offers `devices × accel / 300` readings per second.
    accel: u64,
}

fn args() -> Args {
    let mut a = Args {
        devices: 200,
        seconds: 15,
        probes: 60,
        accel: 100_000,
    };
    let flags = ["--devices", "--seconds", "--probes", "--accel"];
    for (flag, value) in vigie_tests::number_flags(&flags) {
        match flag {
            "--devices" => a.devices = value as usize,
            "--seconds" => a.seconds = value.min(120),
            "--accel" => a.accel = value.clamp(1, 1_000_000),
            _ => a.probes = value.min(1000) as u32,
        }
    }
    a
}

/// Fleet options: a 300 s interval at 100,000× (the default) is one sample per 3 ms per
/// device, as fast as they go; each device keeps one frame in flight, batching what
/// queued.
fn fleet_options(broker: SocketAddr, seconds: u64, accel: u64) -> FleetOptions {
    FleetOptions {
        broker,
        accel: accel as f64,
        duration: Duration::from_secs(seconds),
        status_every: 50,
        outages: Vec::new(),
        progress: false,
        ca: None,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run_fleet(
    devices: &[Device],
    broker: SocketAddr,
    seconds: u64,
    accel: u64,
) -> (FleetSummary, Instant) {
    let provisioning = devices
        .iter()
        .map(|d| d.provisioning(broker, 300, 0))
        .collect();
    let started = Instant::now();
    let (_keep, never) = watch::channel(false);
    let summary = Fleet::new(provisioning, fleet_options(broker, seconds, accel))
        .run(never)
        .await;
    (summary, started)
}

/// Phase 1: the broker's drain rate to `mosquitto_sub`, frames per second.
async fn broker_limit(
    devices: &[Device],
    broker: SocketAddr,
    (seconds, accel): (u64, u64),
    dir: &std::path::Path,
) -> f64 {
    let out = dir.join("sub.txt");
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port().to_string(),
            "-q",
            "1",
        ])
        // The broker lets only gateway accounts read uplinks, through a shared subscription.
        .args(["-V", "5", "-i", "gw-bench", "-u", "gw-bench", "-P"])
        .arg(fleet::password("gw-bench").expose())
        .args(["-t", "$share/bench/vigie/v1/+/+/up", "-F", "%U"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub (Debian package mosquitto-clients)");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (summary, _) = run_fleet(devices, broker, seconds, accel).await;
    // Let the subscriber drain, then stop it.
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = std::fs::read_to_string(&out).map_or(0, |t| t.lines().count());
        if n == last {
            break;
        }
        last = n;
    }
    let _ = sub.kill();
    let _ = sub.wait();
    let times: Vec<f64> = std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let (first, end) = (
        times.first().copied().unwrap_or(0.0),
        times.last().copied().unwrap_or(0.0),
    );
    let rate = times.len() as f64 / (end - first).max(1e-9);
    println!(
        "broker limit: {} frames ({} readings recorded) drained by mosquitto_sub in {:.2} s: {rate:.0} frames/s",
        times.len(),
        summary.recorded,
        end - first
    );
    rate
}

/// Probe readings published one by one during the gateway phase; each one's latency is
/// from its PUBACK-less publish call to the moment InfluxDB returns it.
async fn probes(probe: Device, broker: SocketAddr, influx: SocketAddr, count: u32) -> Vec<f64> {
    let user = probe.username();
    let mut o = MqttOptions::new(&user, "127.0.0.1", broker.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_credentials(&user, fleet::password(&user).expose());
    let (client, mut events) = AsyncClient::new(o, 64);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = now_s() - 7 * 86_400;
    let mut waits = tokio::task::JoinSet::new();
    for n in 0..count {
        let r = Reading {
            time: base + n,
            values: Values::AirQuality(AirQuality {
                pm25: Field::Value(100),
                ..AirQuality::default()
            }),
        };
        let frame = probe.frame(&[r], n);
        let sent = Instant::now();
        client
            .publish(probe.topic(), QoS::AtLeastOnce, false, frame)
            .await
            .unwrap();
        waits.spawn(async move {
            // Stored at its second plus the frame counter's milliseconds (SCHEMA.md).
            let q = format!(
                "SELECT pm25 FROM air_quality WHERE device='probe' AND time = {}ms",
                vigie_core::output::lineproto::timestamp_ms(r.time, n)
            );
            while sent.elapsed() < Duration::from_secs(20) {
                let body = readback::influx_query(influx, "vigie_lyon", &q).await;
                if body["results"][0]["series"].is_array() {
                    return Some(sent.elapsed().as_secs_f64());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut latencies = Vec::new();
    while let Some(r) = waits.join_next().await {
        latencies.extend(r.ok().flatten());
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let mut devices: Vec<_> = (0..a.devices)
        .map(|i| Device::new("lyon", &format!("aq-{i:04}"), DeviceKind::AirQuality))
        .collect();
    let probe = Device::new("lyon", "probe", DeviceKind::AirQuality);
    devices.push(probe.clone());
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let broker = mosquitto(dir.path());
    devices.pop();
    println!(
        "load: {} simulated devices at {}x ({} readings/s offered), {} s of publishing, {} latency probes, 127.0.0.1",
        a.devices,
        a.accel,
        a.devices as u64 * a.accel / 300,
        a.seconds,
        a.probes
    );

    let limit = broker_limit(&devices, broker.addr, (a.seconds, a.accel), dir.path()).await;

    // Phase 2: the gateway with the default linger, InfluxDB 1.x.
    let mut settings = GatewaySettings::new("gw-bench", broker.addr, Some(influx.addr));
    settings.linger = gateway::config::BatchConfig::default().linger;
    settings.buffer_mib = (256, 16);
    let gw = GatewayProcess::start(dir.path(), &settings);
    let pid = gw.pid().unwrap();
    let cpu_before = cpu_seconds(pid);
    let probing = tokio::spawn(probes(probe, broker.addr, influx.addr, a.probes));
    let (summary, started) = run_fleet(&devices, broker.addr, a.seconds, a.accel).await;
    eprintln!(
        "  fleet done after {:.1} s: {summary}",
        started.elapsed().as_secs_f64()
    );
    let want = summary.acknowledged as f64 + f64::from(a.probes);
    let deadline = Instant::now() + Duration::from_secs(120);
    while gw.metric("vigie_readings_stored_total").unwrap_or(0.0) < want
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stored = gw.metric("vigie_readings_stored_total").unwrap_or(0.0);
    let frames = gw.metric("vigie_frames_accepted_total").unwrap_or(0.0);
    let latencies = probing.await.unwrap();
    let (cpu, rss) = (cpu_seconds(pid) - cpu_before, peak_rss_mib(pid));
    let frame_rate = (frames - f64::from(a.probes)) / elapsed;
    println!(
        "gateway: {} frames, {} readings stored of {} published in {elapsed:.2} s: \
         {frame_rate:.0} frames/s, {:.0} readings/s",
        frames as u64,
        stored as u64,
        want as u64,
        stored / elapsed
    );
    println!(
        "latency publish→queryable (linger {} ms, {} probes): p50 {:.3} s, p99 {:.3} s",
        settings.linger.as_millis(),
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    println!("gateway process: {cpu:.2} CPU s, peak RSS {rss:.1} MiB");
    println!("ratio={:.3}", frame_rate / limit);
    if stored != want {
        let log = gw.log();
        let tail: Vec<_> = log.lines().rev().take(15).collect();
        eprintln!(
            "gateway log (last lines, newest first):\n{}",
            tail.join("\n")
        );
        let m = |n: &str| gw.metric(n).unwrap_or(f64::NAN);
        eprintln!(
            "received {} accepted {} duplicate {} rejected {} buffer pending {} B, mqtt connects {}",
            m("vigie_messages_received_total"),
            m("vigie_frames_accepted_total"),
            m("vigie_frames_duplicate_total"),
            m("vigie_frames_rejected_total"),
            m("vigie_buffer_pending_bytes"),
            m("vigie_mqtt_connects_total")
        );
        panic!("not every published reading was stored: {stored} of {want}");
    }
}
