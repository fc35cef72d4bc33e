//! Erasure (docs/OPERATIONS.md, "Erasing data"): `erase --tenant T [--device D]
//! [--before TIME]` removes the readings it covers from the database, the gateway's
//! buffer, its quarantine and its line-protocol files, writes an audit line, and a search
//! of every one of them afterwards finds nothing left; every other reading is still there,
//! and what the buffer held for later is still delivered. It refuses while the service
//! runs, and refuses a time bound VictoriaMetrics cannot honour before touching anything.
#![allow(clippy::unwrap_used)]

use gateway::config::DatabaseApi;
use gateway::fleet::registry::DeviceKind;
use gateway::store::quarantine;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use vigie_core::record::Record;
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{self, GatewayProcess, GatewaySettings, InProcessGateway};
use vigie_tests::{influxdb, mosquitto, now_s, readback, scenario, victoria_metrics, wait_for};

/// Runs `erase` with `args` after `--config`; its output and whether it succeeded.
fn erase(config: &Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["erase", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = process::cli(&all);
    (out.status.success(), process::text(&out))
}

/// Every reading the buffer segments under `data` hold, as (tenant, device, millisecond
/// time).
fn buffered(data: &Path) -> BTreeSet<(String, String, u64)> {
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(data.join("buffer")) else {
        return out;
    };
    for e in entries {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        for piece in gateway::store::buffer::format::scan(
            &bytes,
            gateway::store::buffer::format::MAGIC.len(),
        ) {
            if let gateway::store::buffer::format::Piece::Record { start, end } = piece {
                let r = Record::decode(&bytes[start + gateway::store::buffer::format::HEADER..end])
                    .unwrap();
                for line in r.lines.lines() {
                    let ms = line.rsplit(' ').next().unwrap().parse().unwrap();
                    out.insert((r.tenant.to_string(), r.device.to_string(), ms));
                }
            }
        }
    }
    out
}

/// Topics of the quarantined frames.
fn quarantined(data: &Path) -> Vec<String> {
    let (entries, _) = quarantine::read_all(&data.join("quarantine")).unwrap();
    entries.into_iter().map(|e| e.topic).collect()
}

/// The audit lines.
fn audit(data: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(data.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `device|time` of every point (any field) of the scenario tenant in InfluxDB.
async fn influx_points(influx: std::net::SocketAddr) -> BTreeSet<(String, u64)> {
    readback::influx_points(influx, "vigie_lyon", &["air_quality"])
        .await
        .into_iter()
        .map(|k| {
            let f: Vec<_> = k.split('|').collect();
            (f[2].to_string(), f[3].parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_device_before_a_time_then_a_whole_device_leaves_nothing_of_them() {
    let mut influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices = scenario::devices(dir.path(), 3);
    let broker = mosquitto(dir.path());
    let mut gw = GatewayProcess::start(
        dir.path(),
        &GatewaySettings::new("gw", broker.addr, Some(influx.addr)),
    );
    let data = dir.path().join("data-gw");
    let start = now_s() - 3600;

    // Readings 0..20 of each device stored; 20..30 wait in the buffer while the database
    // is down; a forged frame on aq-1's and on aq-2's topic is quarantined.
    let stored = scenario::load(&devices, 20, start);
    fleet::publish_all(broker.addr, &stored.messages).await;
    scenario::all_stored(influx.addr, &stored.expected, Duration::from_secs(60)).await;
    influx.stop(false);
    let waiting = scenario::load_from(&devices, 20, 10, start);
    let mut messages = waiting.messages.clone();
    for d in &devices[1..] {
        let mut forged = d.frame(&[d.reading(99, start + 99)], 99);
        *forged.last_mut().unwrap() ^= 1;
        messages.push((d.topic(), forged));
    }
    fleet::publish_all(broker.addr, &messages).await;
    let frames = (stored.messages.len() + waiting.messages.len()) as f64;
    wait_for(
        "every frame buffered",
        Duration::from_secs(30),
        async || {
            gw.metric("vigie_frames_accepted_total") == Some(frames)
                && gw.metric("vigie_frames_rejected_total") == Some(2.0)
        },
    )
    .await;

    // While the service runs: refused, nothing changed.
    let (ok, out) = erase(
        &gw.config,
        &["--tenant", "lyon", "--device", "aq-1", "--yes"],
    );
    assert!(!ok && out.contains("stop it first"), "{out}");
    gw.terminate();

    // aq-1, readings measured before start + 25: 0..20 in the database, 20..25 in the
    // buffer (and whatever delivered records the buffer still keeps).
    let cut = start + 25;
    let cut_ms = u64::from(cut) * 1000;
    let before = buffered(&data);
    let in_buffer = before
        .iter()
        .filter(|(_, d, ms)| d == "aq-1" && *ms < cut_ms)
        .count();
    assert!(in_buffer >= 5, "the buffered readings 20..25: {in_buffer}");
    let cut_text = protocol::json::UtcTime(cut).to_string();
    let args = [
        "--tenant", "lyon", "--device", "aq-1", "--before", &cut_text,
    ];

    // A dry run says what would go and changes nothing.
    let (ok, out) = erase(&gw.config, &args);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("buffer: {in_buffer} readings")) && out.contains("--yes"),
        "{out}"
    );
    assert_eq!(buffered(&data), before);
    assert!(audit(&data).is_empty());

    influx.start();
    let (ok, out) = erase(&gw.config, &[&args[..], &["--yes"]].concat());
    assert!(ok, "{out}");
    let line = &audit(&data)[0];
    assert_eq!(
        (
            &line["tenant"],
            &line["device"],
            &line["before"],
            &line["buffer_readings"]
        ),
        (
            &serde_json::json!("lyon"),
            &serde_json::json!("aq-1"),
            &serde_json::json!(cut_text),
            &serde_json::json!(in_buffer)
        )
    );
    // Nothing of it left in the buffer, everything else there as it was.
    let after = buffered(&data);
    let kept: BTreeSet<_> = before
        .iter()
        .filter(|(_, d, ms)| !(d == "aq-1" && *ms < cut_ms))
        .cloned()
        .collect();
    assert_eq!(after, kept);
    // The forged frames arrived after the cut: kept.
    assert_eq!(quarantined(&data).len(), 2);
    assert!(
        influx_points(influx.addr)
            .await
            .iter()
            .all(|(d, s)| !(d == "aq-1" && *s < u64::from(cut))),
        "no point of aq-1 before the cut in the database"
    );

    // The service starts again: what waited in the buffer is stored, except what was erased.
    gw.restart();
    let mut expected: BTreeSet<String> =
        stored.expected.union(&waiting.expected).cloned().collect();
    expected.retain(|k| {
        let f: Vec<_> = k.split('|').collect();
        !(f[2] == "aq-1" && f[3].parse::<u32>().unwrap() < cut)
    });
    scenario::all_stored(influx.addr, &expected, Duration::from_secs(60)).await;

    // Then the whole of aq-2, its saved state (last seen, battery) included.
    gw.terminate();
    let saved = |d: &str| {
        gateway::observe::devices::load_saved(&data)
            .unwrap()
            .get("lyon", d)
            .is_some()
    };
    assert!(saved("aq-2") && saved("aq-1"));
    let (ok, out) = erase(
        &gw.config,
        &["--tenant", "lyon", "--device", "aq-2", "--yes"],
    );
    assert!(ok, "{out}");
    assert!(buffered(&data).iter().all(|(_, d, _)| d != "aq-2"));
    assert_eq!(quarantined(&data), ["vigie/v1/lyon/aq-1/up"]);
    assert!(!saved("aq-2") && saved("aq-1"));
    assert!(
        influx_points(influx.addr)
            .await
            .iter()
            .all(|(d, _)| d != "aq-2")
    );
    expected.retain(|k| !k.contains("|aq-2|"));
    gw.restart();
    // Its readings never come back from the buffer, and the others are all there.
    tokio::time::sleep(Duration::from_secs(2)).await;
    scenario::all_stored(influx.addr, &expected, Duration::from_secs(60)).await;
    let lines = audit(&data);
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (
            &lines[1]["device"],
            &lines[1]["before"],
            &lines[1]["quarantine_entries"],
            &lines[1]["device_states"]
        ),
        (
            &serde_json::json!("aq-2"),
            &serde_json::Value::Null,
            &serde_json::json!(1),
            &serde_json::json!(1)
        )
    );
}

/// Reading lines of every line-protocol file of `tenant` (without the `device_info`
/// points the gateway writes beside them).
fn file_lines(data: &Path, tenant: &str) -> Vec<String> {
    let mut lines = all_file_lines(data, tenant);
    lines.retain(|l| !l.starts_with("device_info,"));
    lines
}

/// Every line of every line-protocol file of `tenant`.
fn all_file_lines(data: &Path, tenant: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data.join("export").join(tenant)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        out.extend(text.lines().map(String::from));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_commune_empties_its_files_and_leaves_the_other_commune_alone() {
    let dir = tempfile::tempdir().unwrap();
    let devices = vec![
        Device::new("lyon", "aq-1", DeviceKind::AirQuality),
        Device::new("lyon", "bin-1", DeviceKind::WasteBin),
        Device::new("paris", "aq-1", DeviceKind::AirQuality),
    ];
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let broker = mosquitto(dir.path());
    let mut gw = GatewayProcess::start(dir.path(), &GatewaySettings::new("gw", broker.addr, None));
    let data = dir.path().join("data-gw");
    let load = scenario::load(&devices, 15, now_s() - 3600);
    fleet::publish_all(broker.addr, &load.messages).await;
    wait_for(
        "every reading in the files",
        Duration::from_secs(30),
        async || {
            file_lines(&data, "lyon").len() + file_lines(&data, "paris").len()
                == load.messages.len()
        },
    )
    .await;
    gw.terminate();
    let paris = file_lines(&data, "paris");
    assert_eq!(paris.len(), 15);

    // Its devices' metadata goes with its readings.
    let info = all_file_lines(&data, "lyon").len() - file_lines(&data, "lyon").len();
    assert_eq!(info, 2, "one device_info point per lyon device");
    let (ok, out) = erase(&gw.config, &["--tenant", "lyon", "--yes"]);
    assert!(ok, "{out}");
    let erased = format!("line-protocol files: {} lines", 30 + info);
    assert!(out.contains(&erased), "{out}");
    assert!(all_file_lines(&data, "lyon").is_empty());
    assert!(buffered(&data).iter().all(|(t, _, _)| t == "paris"));
    assert_eq!(file_lines(&data, "paris"), paris);
    let line = &audit(&data)[0];
    assert_eq!(
        (&line["tenant"], &line["file_lines"]),
        (&serde_json::json!("lyon"), &serde_json::json!(30 + info))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoria_metrics_erases_a_whole_device_and_refuses_a_time_bound() {
    let victoria = victoria_metrics();
    let dir = tempfile::tempdir().unwrap();
    let devices = vec![
        Device::new("lyon", "aq-1", DeviceKind::AirQuality),
        Device::new("lyon", "aq-2", DeviceKind::AirQuality),
    ];
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let broker = mosquitto(dir.path());
    let db = fleet::database(DatabaseApi::V2, victoria.addr);
    let config = fleet::gateway_config(dir.path(), "gw", broker.addr, Some(db));
    let data = config.gateway.data_dir.clone();
    let gw = InProcessGateway::start(config).await;
    let load = scenario::load(&devices, 10, now_s() - 3600);
    fleet::publish_all(broker.addr, &load.messages).await;
    let pm25 = async || -> BTreeSet<String> {
        readback::victoria_points(victoria.addr, &["air_quality"])
            .await
            .into_iter()
            .filter(|k| k.contains("|pm25|"))
            .collect()
    };
    wait_for(
        "every reading in VictoriaMetrics",
        Duration::from_secs(30),
        async || pm25().await == load.expected,
    )
    .await;
    gw.stop().await;

    let config = dir.path().join("erase.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\ndata_dir = \"{}\"\nregistry = \"{}\"\n[database]\napi = \"v2\"\n\
             kind = \"victoriametrics\"\nurl = \"http://{}\"\norg = \"vigie\"\n\
             token = \"test-token\"\nprefix = \"vigie_\"\n",
            data.display(),
            dir.path().join("devices.toml").display(),
            victoria.addr
        ),
    )
    .unwrap();
    let (ok, out) = erase(
        &config,
        &[
            "--tenant",
            "lyon",
            "--device",
            "aq-1",
            "--before",
            "2026-01-01",
            "--yes",
        ],
    );
    assert!(
        !ok && out.contains("whole series") && out.contains("nothing was erased"),
        "{out}"
    );
    assert_eq!(pm25().await, load.expected);
    assert!(audit(&data).is_empty());

    let (ok, out) = erase(&config, &["--tenant", "lyon", "--device", "aq-1", "--yes"]);
    assert!(ok, "{out}");
    let kept: BTreeSet<_> = load
        .expected
        .iter()
        .filter(|k| !k.contains("|aq-1|"))
        .cloned()
        .collect();
    assert_eq!(kept.len(), 10);
    assert_eq!(pm25().await, kept);
    assert!(
        readback::victoria_points(victoria.addr, &["air_quality"])
            .await
            .iter()
            .all(|k| !k.contains("|aq-1|")),
        "no field of aq-1 left"
    );
}
