//! Open data (`export`): a commune's readings, known to the test value by value, stored
//! through real Mosquitto and two gateway processes into InfluxDB 1.x and VictoriaMetrics,
//! then exported from each. Both databases give the same NGSI-LD entities; every entity
//! has its model's required attributes with the right types and units (checked field by
//! field against what was sent); a flagged reading is left out of NGSI-LD and kept,
//! flagged, in the CSV, which a standard CSV parser reads back to the sent values; hourly
//! means state their valid share; the GeoJSON has each station's latest values at its
//! coordinates; nothing private goes out; an unknown commune and an empty range are
//! refused with a clear error.
#![allow(clippy::unwrap_used)]

use gateway::fleet::registry::DeviceKind;
use protocol::{AirQuality, Field, Reading, Values};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use vigie_tests::fleet::{self, Device};
use vigie_tests::process;
use vigie_tests::{influxdb, mosquitto, now_s, readback, victoria_metrics, wait_for};

/// An air reading: PM2.5, PM10, temperature and humidity in wire units.
fn air(time: u32, pm1: u16, pm25: Field<u16>, pm10: u16, temp: i16, hum: u16) -> Reading {
    Reading {
        time,
        values: Values::AirQuality(AirQuality {
            pm1: Field::Value(pm1),
            pm25,
            pm10: Field::Value(pm10),
            temperature: Field::Value(temp),
            relative_humidity: Field::Value(hum),
            ..AirQuality::default()
        }),
    }
}

fn bin(time: u32, fill: u8, flags: u8) -> Reading {
    fleet::bin_reading(time, fill, flags, 3_700)
}

/// Runs `export`; success, the data (from the file), and what it said on stderr.
fn export(config: &Path, out: &Path, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["export", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", out.to_str().unwrap()]);
    let o = process::cli(&all);
    let data = std::fs::read_to_string(out).unwrap_or_default();
    (
        o.status.success(),
        data,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Keeps an export's output under `target/test-output/export/` (docs/OPERATIONS.md shows
/// samples of them).
fn keep(name: &str, data: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-output/export");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

/// A CSV text read by a standard parser: its header, and each record by column.
fn csv_rows(data: &str) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut reader = csv::Reader::from_reader(data.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader
        .records()
        .map(|r| {
            header
                .iter()
                .cloned()
                .zip(r.unwrap().iter().map(String::from))
                .collect()
        })
        .collect();
    (header, rows)
}

/// Entities by id.
fn by_id(text: &str) -> BTreeMap<String, Value> {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|x| (x - b).abs() < 1e-9)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commune_exports_the_same_open_data_from_both_databases() {
    let influx = influxdb();
    for db in ["vigie_lyon", "vigie_paris"] {
        readback::influx_create_db(influx.addr, db).await;
    }
    let vm = victoria_metrics();
    let dir = tempfile::tempdir().unwrap();
    let aq0 = Device::new("lyon", "aq-0", DeviceKind::AirQuality);
    let aq1 = Device::new("lyon", "aq-1", DeviceKind::AirQuality);
    let bin0 = Device::new("lyon", "bin-0", DeviceKind::WasteBin);
    let paris = Device::new("paris", "aq-0", DeviceKind::AirQuality);
    let mut entries: Vec<_> = [&aq0, &aq1, &bin0, &paris]
        .iter()
        .map(|d| d.entry())
        .collect();
    (entries[0].latitude, entries[0].longitude) = (Some(45.7578), Some(4.8320));
    entries[0].place = Some("Place Bellecour".into());
    entries[0].insee = Some("69382".into());
    (entries[1].latitude, entries[1].longitude) = (Some(45.7640), Some(4.8357));
    (entries[2].latitude, entries[2].longitude) = (Some(45.7600), Some(4.8400));
    entries[2].container = Some("ground".into());
    entries[2].capacity_l = Some(660);
    fleet::save_registry(&dir.path().join("devices.toml"), &fleet::registry(entries));
    let broker = mosquitto(dir.path());
    let (gw_influx, gw_vm) =
        process::one_per_database(dir.path(), broker.addr, influx.addr, vm.addr);

    // Within one UTC hour two hours back, so hourly means have known periods.
    let hour = (now_s() / 3600 - 2) * 3600;
    // aq-0: four readings, the third flagged (PM1 above PM2.5).
    let aq0_readings = [
        air(hour + 60, 50, Field::Value(100), 200, 150, 600),
        air(hour + 660, 60, Field::Value(140), 220, 160, 580),
        air(hour + 1_260, 300, Field::Value(120), 240, 170, 560),
        air(hour + 1_860, 70, Field::Value(180), 260, 180, 540),
    ];
    // aq-1: its PM2.5 sensor failed; PM10 still came.
    let aq1_reading = air(hour + 120, 40, Field::Fault, 90, 100, 700);
    let bins = [
        bin(hour + 300, 30, 0),
        bin(hour + 1_500, 50, 0),
        bin(hour + 2_700, 85, 0b010),
    ];
    let messages = vec![
        (aq0.topic(), aq0.frame(&aq0_readings, 1)),
        (aq1.topic(), aq1.frame(&[aq1_reading], 1)),
        (bin0.topic(), bin0.frame(&bins, 1)),
        (
            paris.topic(),
            paris.frame(&[air(hour + 60, 1, Field::Value(2), 3, 4, 5)], 1),
        ),
    ];
    fleet::publish_all(broker.addr, &messages).await;
    for gw in [&gw_influx, &gw_vm] {
        wait_for(
            "every reading stored",
            Duration::from_secs(30),
            async || gw.metric("vigie_readings_stored_total").unwrap_or(0.0) >= 9.0,
        )
        .await;
    }
    // VictoriaMetrics makes what it took searchable within a second or so; at once here.
    reqwest::Client::new()
        .post(format!("http://{}/internal/force_flush", vm.addr))
        .send()
        .await
        .unwrap();
    let from = iso(hour);
    let to = iso(hour + 3_600);
    let range = ["--tenant", "lyon", "--from", &from, "--to", &to];
    let out = dir.path().join("out");

    // NGSI-LD from both databases: the same entities.
    let mut ngsi = Vec::new();
    for gw in [&gw_influx, &gw_vm] {
        let mut args = range.to_vec();
        args.extend_from_slice(&["--format", "ngsi-ld"]);
        let (ok, data, said) = export(&gw.config, &out, &args);
        assert!(ok, "{said}");
        assert!(
            said.contains("exported 8 readings from 3 stations"),
            "{said}"
        );
        keep("entities.jsonld", &data);
        ngsi.push(by_id(&data));
    }
    assert_eq!(
        ngsi[0].keys().collect::<Vec<_>>(),
        ngsi[1].keys().collect::<Vec<_>>()
    );
    for (id, e) in &ngsi[0] {
        let other = &ngsi[1][id];
        for (k, v) in e.as_object().unwrap() {
            let w = &other[k];
            let same = match (&v["value"], &w["value"]) {
                (Value::Number(_), b) => close(b, v["value"].as_f64().unwrap()),
                _ => v == w,
            };
            assert!(same, "{id} {k}: InfluxDB {v} VictoriaMetrics {w}");
        }
    }
    let entities = &ngsi[0];
    // 3 valid aq-0 readings, the aq-1 one, 3 bin readings; the flagged one left out.
    assert_eq!(entities.len(), 7, "{:#?}", entities.keys());
    for (i, r) in aq0_readings.iter().enumerate() {
        let id = format!("urn:ngsi-ld:AirQualityObserved:lyon:aq-0:{}", iso(r.time));
        if i == 2 {
            assert!(
                !entities.contains_key(&id),
                "the flagged reading is not published"
            );
            continue;
        }
        let e = &entities[&id];
        let Values::AirQuality(a) = r.values else {
            unreachable!()
        };
        assert_eq!(e["type"], "AirQualityObserved");
        assert!(
            e["@context"].as_array().unwrap()[0]
                .as_str()
                .unwrap()
                .contains("dataModel.Environment")
        );
        assert_eq!(e["dateObserved"]["value"]["@value"], iso(r.time));
        assert_eq!(e["location"]["value"]["type"], "Point");
        assert_eq!(
            e["location"]["value"]["coordinates"],
            serde_json::json!([4.832, 45.7578])
        );
        assert_eq!(e["address"]["value"]["streetAddress"], "Place Bellecour");
        assert_eq!(e["areaServed"]["value"], "69382");
        for (field, wire, scale, unit) in [
            ("pm1", a.pm1.value().map(f64::from), 10.0, "GQ"),
            ("pm25", a.pm25.value().map(f64::from), 10.0, "GQ"),
            ("pm10", a.pm10.value().map(f64::from), 10.0, "GQ"),
            (
                "temperature",
                a.temperature.value().map(f64::from),
                10.0,
                "CEL",
            ),
            (
                "relativeHumidity",
                a.relative_humidity.value().map(f64::from),
                1000.0,
                "C62",
            ),
        ] {
            assert!(
                close(&e[field]["value"], wire.unwrap() / scale),
                "{id} {field}: {}",
                e[field]
            );
            assert_eq!(e[field]["unitCode"], unit, "{id} {field}");
            assert_eq!(e[field]["type"], "Property");
        }
        let humidity = e["relativeHumidity"]["value"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&humidity), "relativeHumidity as 0-1");
    }
    let failed = &entities[&format!(
        "urn:ngsi-ld:AirQualityObserved:lyon:aq-1:{}",
        iso(hour + 120)
    )];
    assert!(
        failed.get("pm25").is_none(),
        "a failed sensor's value is absent"
    );
    assert!(close(&failed["pm10"]["value"], 9.0));
    for (r, status) in bins.iter().zip(["ok", "ok", "lidOpen"]) {
        let e = &entities[&format!("urn:ngsi-ld:WasteContainer:lyon:bin-0:{}", iso(r.time))];
        let Values::WasteBin(b) = r.values else {
            unreachable!()
        };
        assert_eq!(e["type"], "WasteContainer");
        assert!(close(
            &e["fillingLevel"]["value"],
            f64::from(b.fill_level.value().unwrap()) / 100.0
        ));
        assert_eq!(e["fillingLevel"]["unitCode"], "C62");
        assert_eq!(e["status"]["value"], status);
        assert_eq!(e["category"]["value"], serde_json::json!(["ground"]));
        assert_eq!(e["binCapacity"]["value"], 660);
        assert_eq!(e["binLoggedTime"]["value"]["@value"], iso(r.time));
    }

    // CSV: every reading, the flagged one with its flag, read back by a CSV parser.
    let mut args = range.to_vec();
    args.extend_from_slice(&["--format", "csv"]);
    let (ok, data, said) = export(&gw_influx.config, &out, &args);
    assert!(ok, "{said}");
    keep("readings.csv", &data);
    let (header, rows) = csv_rows(&data);
    for column in [
        "station",
        "timestamp (UTC)",
        "pm25 (µg/m³)",
        "relativeHumidity (fraction 0-1)",
        "fillingLevel (fraction 0-1)",
        "quality",
    ] {
        assert!(header.iter().any(|h| h == column), "{column} in {header:?}");
    }

    assert_eq!(rows.len(), 8);
    let aq0_rows: Vec<_> = rows.iter().filter(|r| r["station"] == "aq-0").collect();
    for (row, r) in aq0_rows.iter().zip(&aq0_readings) {
        let Values::AirQuality(a) = r.values else {
            unreachable!()
        };
        assert_eq!(row["timestamp (UTC)"], iso(r.time));
        assert_eq!(
            row["pm25 (µg/m³)"].parse::<f64>().unwrap(),
            f64::from(a.pm25.value().unwrap()) / 10.0
        );
        assert_eq!(row["place"], "Place Bellecour");
    }
    assert_eq!(aq0_rows[2]["quality"], "pm1_above_pm25");
    assert_eq!(aq0_rows[2]["valid_share"], "0");

    // Hourly means: the flagged reading out of the mean, the share stated.
    let mut args = range.to_vec();
    args.extend_from_slice(&["--format", "csv", "--resolution", "hour"]);
    let (ok, data, said) = export(&gw_vm.config, &out, &args);
    assert!(ok, "{said}");
    keep("hourly.csv", &data);
    let (_, hourly) = csv_rows(&data);
    let aq0_hour = hourly.iter().find(|r| r["station"] == "aq-0").unwrap();
    assert_eq!(aq0_hour["timestamp (UTC)"], iso(hour));
    assert_eq!(aq0_hour["readings"], "4");
    assert_eq!(aq0_hour["valid_share"], "0.75");
    let mean = (10.0 + 14.0 + 18.0) / 3.0;
    assert!((aq0_hour["pm25 (µg/m³)"].parse::<f64>().unwrap() - mean).abs() < 1e-6);

    // GeoJSON: each station at its coordinates with its latest values.
    let mut args = range.to_vec();
    args.extend_from_slice(&["--format", "geojson"]);
    let (ok, data, said) = export(&gw_influx.config, &out, &args);
    assert!(ok, "{said}");
    keep("stations.geojson", &data);
    let geo: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(geo["type"], "FeatureCollection");
    let features: BTreeMap<String, &Value> = geo["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["properties"]["station"].as_str().unwrap().to_string(), f))
        .collect();
    assert_eq!(features.len(), 3);
    assert_eq!(
        features["bin-0"]["geometry"]["coordinates"],
        serde_json::json!([4.84, 45.76])
    );
    assert!(close(
        &features["bin-0"]["properties"]["fillingLevel"],
        0.85
    ));
    assert!(close(&features["aq-0"]["properties"]["pm25"], 18.0));

    // Nothing private: no device status, keys, counters or the other commune.
    let registry = std::fs::read_to_string(dir.path().join("devices.toml")).unwrap();
    let key = registry.lines().find(|l| l.starts_with("key")).unwrap();
    let key = key.split('"').nth(1).unwrap();
    for format in ["ngsi-ld", "csv", "geojson"] {
        let mut args = range.to_vec();
        args.extend_from_slice(&["--format", format]);
        let (_, data, _) = export(&gw_influx.config, &out, &args);
        for private in [key, "batteryVoltage", "rssi", "counter", "paris"] {
            assert!(
                !data.contains(private),
                "{format} export contains {private}"
            );
        }
    }

    // Refusals, with a clear error and no file left behind.
    let (ok, _, said) = export(
        &gw_influx.config,
        &out,
        &[
            "--tenant", "nice", "--from", &from, "--to", &to, "--format", "csv",
        ],
    );
    assert!(!ok && said.contains("no commune \"nice\""), "{said}");
    let empty_from = iso(hour - 86_400 * 10);
    let empty_to = iso(hour - 86_400 * 9);
    let _ = std::fs::remove_file(&out);
    let (ok, _, said) = export(
        &gw_influx.config,
        &out,
        &[
            "--tenant",
            "lyon",
            "--from",
            &empty_from,
            "--to",
            &empty_to,
            "--format",
            "csv",
        ],
    );
    assert!(!ok && said.contains("no readings of lyon"), "{said}");
    assert!(!out.exists(), "no file for an empty export");
    // An export already there stays as it was (it was truncated, then deleted).
    std::fs::write(&out, "an earlier export\n").unwrap();
    let (ok, _, _) = export(
        &gw_influx.config,
        &out,
        &[
            "--tenant",
            "lyon",
            "--from",
            &empty_from,
            "--to",
            &empty_to,
            "--format",
            "csv",
        ],
    );
    assert!(!ok);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "an earlier export\n"
    );
    std::fs::remove_file(&out).unwrap();
    let (ok, _, said) = export(
        &gw_influx.config,
        &out,
        &[
            "--tenant", "lyon", "--from", &to, "--to", &from, "--format", "csv",
        ],
    );
    assert!(
        !ok && said.contains("--from must come before --to"),
        "{said}"
    );
}

fn iso(t: u32) -> String {
    vigie_core::output::opendata::iso(u64::from(t))
}
