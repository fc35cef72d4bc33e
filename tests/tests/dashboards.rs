//! The Grafana dashboards under `deploy/grafana/dashboards/`: every panel's query, and
//! every template variable's, run against real InfluxDB 1.x and VictoriaMetrics filled by
//! a simulated fleet (the firmware's node code on simulated sensors, through Mosquitto
//! and two gateway processes, one per database), each returning data. The gateway's own
//! metrics reach VictoriaMetrics as a scrape would bring them (`/api/v1/import/prometheus`
//! of its `/metrics`, twice, so rates have two samples).
//!
//! Grafana's macros are replaced as Grafana would for the last 24 hours: `$timeFilter` →
//! `time > now() - 24h`, `$__interval` → `1h`, `$__rate_interval` → `5m`, `$tenant` →
//! the commune; the datasource variables pick the database the panel is made for.
#![allow(clippy::unwrap_used)]

use gateway::fleet::registry::DeviceKind;
use protocol::{AirQuality, Field, Reading, Values};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use vigie_sim::{Fleet, FleetOptions};
use vigie_tests::fleet::{self, Device};
use vigie_tests::process;
use vigie_tests::{influxdb, mosquitto, now_s, readback, victoria_metrics, wait_for};

/// One query of a dashboard.
#[derive(Debug)]
struct Query {
    panel: String,
    /// `influxdb` or `prometheus`.
    kind: String,
    text: String,
}

/// Every panel target and query variable of a dashboard file.
fn queries(file: &str) -> Vec<Query> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/grafana/dashboards")
        .join(file);
    let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        let kind = p["datasource"]["type"].as_str().unwrap().to_string();
        let targets = p["targets"].as_array().unwrap();
        assert!(
            !targets.is_empty(),
            "{file}: panel {} has no query",
            p["title"]
        );
        for t in targets {
            let text = t["query"].as_str().or(t["expr"].as_str()).unwrap();
            out.push(Query {
                panel: p["title"].as_str().unwrap().to_string(),
                kind: kind.clone(),
                text: text.to_string(),
            });
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            out.push(Query {
                panel: format!("variable {}", v["name"]),
                kind: v["datasource"]["type"].as_str().unwrap().to_string(),
                text: v["query"]["query"].as_str().unwrap().to_string(),
            });
        }
    }
    out
}

/// The lines of every fenced code block, with its language; comment lines left out.
fn code_lines(markdown: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lang: Option<String> = None;
    for line in markdown.lines() {
        match (line.strip_prefix("```"), &lang) {
            (Some(l), None) => lang = Some(l.trim().to_string()),
            (Some(_), Some(_)) => lang = None,
            (None, Some(l)) => {
                let t = line.trim();
                if !t.is_empty() && !t.starts_with("--") && !t.starts_with('#') {
                    out.push((l.clone(), t.to_string()));
                }
            }
            (None, None) => {}
        }
    }
    out
}

/// Paris: one bin, its reading of a minute ago, its metadata (`device_info`, written by a
/// gateway at its start) two days old: a gateway started two days ago.
async fn a_commune_of_bins_placed_two_days_ago(
    influx: std::net::SocketAddr,
    vm: std::net::SocketAddr,
    now: u32,
) -> Vec<String> {
    readback::influx_create_db(influx, "vigie_paris").await;
    let (old, recent) = (
        u64::from(now - 2 * 86_400) * 1_000_000_000,
        u64::from(now - 60) * 1_000_000_000,
    );
    let lines = |tenant: &str| {
        format!(
            "device_info,{tenant}device=bin-9,site=Quai latitude=48.85,longitude=2.35 {old}\n\
             waste_bin,{tenant}device=bin-9 fillingLevel=0.5 {recent}\n"
        )
    };
    let client = reqwest::Client::new();
    for (url, body) in [
        (format!("http://{influx}/write?db=vigie_paris"), lines("")),
        (format!("http://{vm}/write"), lines("tenant=paris,")),
    ] {
        let answer = client.post(url).body(body).send().await.unwrap();
        assert!(
            answer.status().is_success(),
            "{}",
            answer.text().await.unwrap()
        );
    }
    client
        .post(format!("http://{vm}/internal/force_flush"))
        .send()
        .await
        .unwrap();
    vec!["paris".to_string()]
}

/// The VictoriaMetrics map pairs each device's latitude with its longitude: its two
/// queries are tables merged on their labels into one row per device, the columns named
/// as the map's markers read them.
fn the_victoria_metrics_map_pairs_its_coordinates() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/grafana/dashboards/vigie-victoriametrics.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let map = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "geomap")
        .unwrap();
    assert!(
        map["targets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["format"] == "table")
    );
    assert_eq!(map["transformations"][0]["id"], "merge");
    let names = &map["transformations"][1]["options"]["renameByName"];
    assert_eq!(
        (&names["Value #A"], &names["Value #B"]),
        (&Value::from("latitude"), &Value::from("longitude"))
    );
    let location = &map["options"]["layers"][0]["location"];
    assert_eq!(
        (&location["latitude"], &location["longitude"]),
        (&Value::from("latitude"), &Value::from("longitude"))
    );
}

/// The map panels of both dashboards show Paris's bin, placed two days ago; returns how
/// many queries ran.
async fn paris_on_the_maps(
    influx: std::net::SocketAddr,
    vm: std::net::SocketAddr,
    tenants: &[String],
) -> usize {
    the_victoria_metrics_map_pairs_its_coordinates();
    let mut ran = 0;
    for tenant in tenants {
        for file in ["vigie-influxdb.json", "vigie-victoriametrics.json"] {
            for q in queries(file)
                .iter()
                .filter(|q| q.panel.contains("Emplacement"))
            {
                let text = expand(&q.text, tenant);
                let found = if q.kind == "influxdb" {
                    !readback::influx_series(influx, &format!("vigie_{tenant}"), &text)
                        .await
                        .0
                        .is_empty()
                } else {
                    !promql(vm, &text).await.is_empty()
                };
                assert!(
                    found,
                    "{file}: a device placed two days ago is not on the map: {text}"
                );
                ran += 1;
            }
        }
    }
    ran
}

fn expand(q: &str, tenant: &str) -> String {
    q.replace("$timeFilter", "time > now() - 24h")
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1h")
        .replace("$tenant", tenant)
}

/// Runs a PromQL/MetricsQL query at now; its result series (or label values).
async fn promql(vm: std::net::SocketAddr, q: &str) -> Vec<Value> {
    let client = reqwest::Client::new();
    let request = match q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        Some(label) => {
            let (metric, label) = label.split_once(", ").unwrap();
            client
                .get(format!("http://{vm}/api/v1/label/{label}/values"))
                .query(&[("match[]", metric)])
        }
        None => client
            .get(format!("http://{vm}/api/v1/query"))
            .query(&[("query", q)]),
    };
    let v: Value = request.send().await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "success", "{q}: {v}");
    match &v["data"] {
        Value::Array(values) => values.clone(),
        data => data["result"].as_array().unwrap().clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_simulated_fleet() {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let vm = victoria_metrics();
    let dir = tempfile::tempdir().unwrap();
    let fleet_devices = [
        Device::new("lyon", "aq-0", DeviceKind::AirQuality),
        Device::new("lyon", "aq-1", DeviceKind::AirQuality),
        Device::new("lyon", "bin-0", DeviceKind::WasteBin),
    ];
    // A station whose frames are written by hand: a sensor fault and an implausible
    // reading, which simulated sensors do not produce.
    let lab = Device::new("lyon", "aq-lab", DeviceKind::AirQuality);
    let entries = fleet_devices
        .iter()
        .chain([&lab])
        .enumerate()
        .map(|(i, d)| {
            let mut e = d.entry();
            e.site = Some(format!("Site {i}"));
            e.latitude = Some(45.75 + i as f64 / 100.0);
            e.longitude = Some(4.83 + i as f64 / 100.0);
            e
        })
        .collect();
    fleet::save_registry(&dir.path().join("devices.toml"), &fleet::registry(entries));
    let broker = mosquitto(dir.path());
    let (gw_influx, gw_vm) =
        process::one_per_database(dir.path(), broker.addr, influx.addr, vm.addr);

    let provisioning = fleet_devices
        .iter()
        .map(|d| d.provisioning(broker.addr, 60, 600))
        .collect();
    let (_never, stop) = watch::channel(false);
    let summary = Fleet::new(
        provisioning,
        FleetOptions {
            broker: broker.addr,
            accel: 120.0,
            duration: Duration::from_secs(8),
            status_every: 5,
            outages: Vec::new(),
            progress: false,
            ca: None,
        },
    )
    .run(stop)
    .await;
    assert!(summary.failed == 0 && summary.recorded > 0, "{summary}");
    let now = now_s();
    let lab_reading = |time, pm1, pm25| Reading {
        time,
        values: Values::AirQuality(AirQuality {
            pm1: Field::Value(pm1),
            pm25,
            pm10: Field::Value(300),
            ..AirQuality::default()
        }),
    };
    fleet::publish_all(
        broker.addr,
        &[
            (
                lab.topic(),
                lab.frame(&[lab_reading(now - 60, 100, Field::Fault)], 1),
            ),
            // PM1 above PM2.5: flagged `pm1_above_pm25`.
            (
                lab.topic(),
                lab.frame(&[lab_reading(now - 30, 250, Field::Value(120))], 2),
            ),
        ],
    )
    .await;
    let want = (summary.recorded - summary.dropped + 2) as f64;
    for gw in [&gw_influx, &gw_vm] {
        wait_for(
            "every reading stored",
            Duration::from_secs(60),
            async || gw.metric("vigie_readings_stored_total").unwrap_or(0.0) >= want,
        )
        .await;
    }
    // The device metadata (`device_info`) is written by its own thread.
    wait_for(
        "device_info in InfluxDB",
        Duration::from_secs(30),
        async || {
            let v = readback::influx_query(
                influx.addr,
                "vigie_lyon",
                "SELECT count(\"revoked\") FROM device_info",
            )
            .await;
            v["results"][0]["series"][0]["values"][0][1].as_u64() == Some(4)
        },
    )
    .await;
    // The gateway's metrics, scraped twice, 2 s apart (rates need two samples).
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let (_, text) = gw_influx.get("/metrics").unwrap();
        let answer = client
            .post(format!("http://{}/api/v1/import/prometheus", vm.addr))
            .body(text)
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_success(),
            "{}",
            answer.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    client
        .post(format!("http://{}/internal/force_flush", vm.addr))
        .send()
        .await
        .unwrap();

    let paris = a_commune_of_bins_placed_two_days_ago(influx.addr, vm.addr, now).await;
    let mut ran = 0;
    for (file, expect) in [
        ("vigie-influxdb.json", ["influxdb", "prometheus"].as_slice()),
        ("vigie-victoriametrics.json", ["prometheus"].as_slice()),
    ] {
        let all = queries(file);
        let kinds: std::collections::BTreeSet<&str> = all.iter().map(|q| q.kind.as_str()).collect();
        assert_eq!(kinds.into_iter().collect::<Vec<_>>(), expect, "{file}");
        for q in &all {
            let text = expand(&q.text, "lyon");
            match q.kind.as_str() {
                "influxdb" => {
                    let (series, v) =
                        readback::influx_series(influx.addr, "vigie_lyon", &text).await;
                    assert!(
                        !series.is_empty(),
                        "{file}: {}: {text} returned no data: {v}",
                        q.panel
                    );
                }
                _ => {
                    let result = promql(vm.addr, &text).await;
                    assert!(
                        !result.is_empty(),
                        "{file}: {}: {text} returned no data",
                        q.panel
                    );
                    if text.starts_with("label_values") {
                        assert_eq!(result, [Value::from("lyon"), Value::from("paris")]);
                    }
                }
            }
            ran += 1;
        }
    }
    ran += paris_on_the_maps(influx.addr, vm.addr, &paris).await;
    // The example queries of docs/SCHEMA.md (InfluxQL and PromQL; Flux needs InfluxDB 2).
    let schema = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/SCHEMA.md"),
    )
    .unwrap();
    let mut examples = 0;
    for (lang, query) in code_lines(&schema) {
        match lang.as_str() {
            "sql" => {
                let (series, v) = readback::influx_series(influx.addr, "vigie_lyon", &query).await;
                assert!(
                    !series.is_empty(),
                    "SCHEMA.md: {query} returned no data: {v}"
                );
            }
            "promql" => {
                assert!(
                    !promql(vm.addr, &query).await.is_empty(),
                    "SCHEMA.md: {query} returned no data"
                );
            }
            _ => continue,
        }
        examples += 1;
    }
    assert!(
        examples >= 10,
        "{examples} example queries found in SCHEMA.md"
    );
    println!(
        "dashboards: {ran} queries, each returned data; SCHEMA.md: {examples} example queries, each returned data"
    );
}
