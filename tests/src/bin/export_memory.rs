//! Open-data export memory benchmark (docs/PERFORMANCE.md, "Export"): N readings of one
//! commune (D air-quality stations, one reading each per interval) written straight into
//! InfluxDB 1.x and VictoriaMetrics as the gateway stores them, then `export` (release
//! build, its own process) as CSV and as NGSI-LD over their whole range, for a small and a
//! large N. For each: seconds, readings per second, and the export's peak RSS (`VmHWM`,
//! read until it exits); the readings it reports must be N. Exits non-zero if a peak RSS
//! passes `--max-rss` MiB or the large run's exceeds the small run's by more than 20 %.
//! Run it with `scripts/bench-export.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vigie_tests::process::peak_rss_mib;
use vigie_tests::{influxdb, victoria_metrics};

const INTERVAL_S: u64 = 60;

/// Writes `n` readings of `devices` stations, `INTERVAL_S` apart, ending an hour ago.
async fn load(url: &str, db: &str, n: u64, devices: u64) -> (u64, u64) {
    let client = reqwest::Client::new();
    let per_device = n / devices;
    let end = (vigie_tests::now_s() as u64 / 3600 - 1) * 3600;
    let start = end - per_device * INTERVAL_S;
    let mut batch = String::new();
    let mut written = 0;
    for i in 0..per_device {
        for d in 0..devices {
            let t = start + i * INTERVAL_S;
            let v = (i + d) % 500;
            batch += &format!(
                "air_quality,device=aq-{d},tenant=lyon pm1={}.{},pm25={}.{},pm10={},temperature=12.5,relativeHumidity=0.61 {}\n",
                v / 10,
                v % 10,
                v / 5,
                v % 10,
                v + 20,
                t * 1000
            );
            written += 1;
            if written % 20_000 == 0 {
                post(&client, url, db, std::mem::take(&mut batch)).await;
            }
        }
    }
    post(&client, url, db, batch).await;
    (start, end)
}

async fn post(client: &reqwest::Client, url: &str, db: &str, body: String) {
    if body.is_empty() {
        return;
    }
    let r = client
        .post(format!("{url}/write?db={db}&precision=ms"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// One export run: seconds, peak RSS (MiB), what it said.
fn export(config: &Path, from: u64, to: u64, format: &str, out: &Path) -> (f64, f64, String) {
    let iso = |t: u64| vigie_core::output::opendata::iso(t);
    let started = Instant::now();
    let mut child =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/gateway"))
            .args(["export", "--config"])
            .arg(config)
            .args([
                "--tenant",
                "lyon",
                "--from",
                &iso(from),
                "--to",
                &iso(to),
                "--format",
                format,
                "--out",
            ])
            .arg(out)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let pid = child.id();
    let mut peak = 0.0f64;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(peak_rss_mib(pid));
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{said}");
    (started.elapsed().as_secs_f64(), peak, said)
}

fn config(dir: &Path, name: &str, url: SocketAddr, kind: &str, devices: u64) -> std::path::PathBuf {
    let mut registry = String::new();
    for d in 0..devices {
        registry += &format!(
            "[[device]]\nid = \"aq-{d}\"\ntenant = \"lyon\"\nkind = \"air_quality\"\nkey = \"000102030405060708090a0b0c0d0e0f\"\nepoch = 1\nlatitude = 45.7\nlongitude = 4.8\n\n"
        );
    }
    std::fs::write(dir.join("devices.toml"), registry).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[gateway]\ndata_dir = \"{d}/data\"\nregistry = \"{d}/devices.toml\"\n[database]\napi = \"v1\"\nkind = \"{kind}\"\nurl = \"http://{url}\"\nprefix = \"vigie_\"\ntimeout = \"60s\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    path
}

#[tokio::main]
async fn main() {
    let mut small = 100_000;
    let mut large = 1_000_000;
    let mut devices = 100;
    let mut max_rss = 64.0;
    for (flag, value) in
        vigie_tests::number_flags(&["--small", "--large", "--devices", "--max-rss"])
    {
        match flag {
            "--small" => small = value.clamp(1_000, 10_000_000),
            "--large" => large = value.clamp(1_000, 10_000_000),
            "--devices" => devices = value.clamp(1, 1_000),
            _ => max_rss = value as f64,
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export.out");
    let mut failed = false;
    println!("| database | format | readings | seconds | readings/s | peak RSS MiB |");
    println!("|---|---|---|---|---|---|");
    for (name, kind) in [("influx", "influxdb"), ("victoria", "victoriametrics")] {
        let mut peaks = Vec::new();
        for n in [small, large] {
            // A fresh server per size, so a range holds exactly n readings.
            let server = if kind == "influxdb" {
                influxdb()
            } else {
                victoria_metrics()
            };
            let url = format!("http://{}", server.addr);
            if kind == "influxdb" {
                vigie_tests::readback::influx_create_db(server.addr, "vigie_lyon").await;
            }
            let (from, to) = load(&url, "vigie_lyon", n, devices).await;
            if kind == "victoriametrics" {
                reqwest::Client::new()
                    .post(format!("{url}/internal/force_flush"))
                    .send()
                    .await
                    .unwrap();
            }
            let cfg = config(dir.path(), name, server.addr, kind, devices);
            for format in ["csv", "ngsi-ld"] {
                let (secs, peak, said) = export(&cfg, from, to, format, &out);
                let want = format!("exported {} readings", n / devices * devices);
                if !said.contains(&want) {
                    eprintln!("{name} {format}: {said} (wanted {want})");
                    failed = true;
                }
                println!(
                    "| {kind} | {format} | {n} | {secs:.1} | {:.0} | {peak:.1} |",
                    n as f64 / secs
                );
                peaks.push((n, format, peak));
                failed |= peak > max_rss;
            }
        }
        for format in ["csv", "ngsi-ld"] {
            let of = |size: u64| {
                peaks
                    .iter()
                    .find(|(n, f, _)| *n == size && *f == format)
                    .map_or(0.0, |p| p.2)
            };
            let (a, b) = (of(small), of(large));
            let ratio = b / a;
            println!(
                "{kind} {format}: peak RSS {b:.1} MiB at {large} readings, {a:.1} at {small}: ratio {ratio:.2}"
            );
            failed |= ratio > 1.2;
        }
    }
    if failed {
        eprintln!("export memory benchmark failed (see above)");
        std::process::exit(1);
    }
}
