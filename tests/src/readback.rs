//! Reading points back from the databases themselves, as one comparable set of
//! `tenant|measurement|device|time|field|value` strings: every field, strings included
//! (numbers to 6 decimals, booleans as 1 and 0, strings in double quotes; time in whole
//! seconds). VictoriaMetrics keeps string values as tags (`faults`, `quality`,
//! `firmwareVersion`): they are read back from the tags, so both databases give the same
//! set; its extra `faultCount` series is left out.

use std::collections::BTreeSet;
use std::net::SocketAddr;

/// A point field as a comparable string.
pub fn key(
    tenant: &str,
    measurement: &str,
    device: &str,
    time: u64,
    field: &str,
    value: f64,
) -> String {
    format!("{tenant}|{measurement}|{device}|{time}|{field}|{value:.6}")
}

/// A string field as a comparable string.
pub fn key_text(
    tenant: &str,
    measurement: &str,
    device: &str,
    time: u64,
    field: &str,
    text: &str,
) -> String {
    format!("{tenant}|{measurement}|{device}|{time}|{field}|\"{text}\"")
}

/// Tags that are string values, not series identity (VictoriaMetrics).
const STRING_TAGS: [&str; 3] = ["faults", "quality", "firmwareVersion"];

/// One InfluxDB JSON value as it appears in a key.
fn value_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Number(n) => Some(format!("{:.6}", n.as_f64()?)),
        serde_json::Value::Bool(b) => Some(format!("{:.6}", f64::from(u8::from(*b)))),
        serde_json::Value::String(s) => Some(format!("\"{s}\"")),
        _ => None,
    }
}

/// `CREATE DATABASE` on InfluxDB 1.x.
pub async fn influx_create_db(server: SocketAddr, db: &str) {
    let r = reqwest::Client::new()
        .post(format!("http://{server}/query"))
        .form(&[("q", format!("CREATE DATABASE {db}"))])
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "CREATE DATABASE {db}: {}",
        r.status()
    );
}

/// An InfluxQL query on InfluxDB 1.x, times in Unix seconds; the JSON answer. InfluxDB
/// 1.6 busy with writes has been seen answering a query once with a body that is not
/// JSON: such an answer is asked again (a few times, then the test fails with it).
pub async fn influx_query(server: SocketAddr, db: &str, q: &str) -> serde_json::Value {
    influx_query_epoch(server, db, q, "s").await
}

/// [`influx_query`] with times in `epoch` units (`s`, `ms`, …).
pub async fn influx_query_epoch(
    server: SocketAddr,
    db: &str,
    q: &str,
    epoch: &str,
) -> serde_json::Value {
    let client = reqwest::Client::new();
    let mut last = String::new();
    for _ in 0..5 {
        let answer = client
            .get(format!("http://{server}/query"))
            .query(&[("db", db), ("q", q), ("epoch", epoch)])
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let body = answer.text().await.unwrap();
        match serde_json::from_str(&body) {
            Ok(v) => return v,
            Err(e) => last = format!("{status}, {e}: {body:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("InfluxDB answered {q:?} with no JSON five times; last: {last}")
}

/// Every field of `measurements` in InfluxDB database `db`, tagged `tenant`.
pub async fn influx_points(
    server: SocketAddr,
    db: &str,
    measurements: &[&str],
) -> BTreeSet<String> {
    influx_points_epoch(server, db, measurements, "s").await
}

/// [`influx_points`] with times in `epoch` units: `ms` tells apart two points of one
/// series in the same second (a device's frames carry the counter as milliseconds).
pub async fn influx_points_epoch(
    server: SocketAddr,
    db: &str,
    measurements: &[&str],
    epoch: &str,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in measurements {
        let q = format!("SELECT * FROM {m}");
        let body = influx_query_epoch(server, db, &q, epoch).await;
        let Some(series) = body["results"][0]["series"].as_array() else {
            continue;
        };
        for s in series {
            let cols: Vec<&str> = s["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            for row in s["values"].as_array().unwrap() {
                let get = |name: &str| &row[cols.iter().position(|c| *c == name).unwrap()];
                let (time, device, tenant) = (
                    get("time").as_u64().unwrap(),
                    get("device").as_str().unwrap(),
                    get("tenant").as_str().unwrap(),
                );
                for (i, c) in cols.iter().enumerate() {
                    if ["time", "device", "tenant", "site", "zone"].contains(c) {
                        continue;
                    }
                    if let Some(v) = value_text(&row[i]) {
                        out.insert(format!("{tenant}|{m}|{device}|{time}|{c}|{v}"));
                    }
                }
            }
        }
    }
    out
}

/// The series an InfluxQL query `q` in `db` returns (none on an error, which the panic
/// message of a caller shows with the answer).
pub async fn influx_series(
    server: SocketAddr,
    db: &str,
    q: &str,
) -> (Vec<serde_json::Value>, serde_json::Value) {
    let v = influx_query(server, db, q).await;
    let series = v["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (series, v)
}

/// Every sample of metrics named `<measurement>_<field>` in VictoriaMetrics.
pub async fn victoria_points(server: SocketAddr, measurements: &[&str]) -> BTreeSet<String> {
    victoria_points_at(
        &reqwest::Client::new(),
        &format!("http://{server}"),
        measurements,
    )
    .await
}

/// [`victoria_points`] through `client` at `base` (`https://…` for a TLS server).
pub async fn victoria_points_at(
    client: &reqwest::Client,
    base: &str,
    measurements: &[&str],
) -> BTreeSet<String> {
    client
        .post(format!("{base}/internal/force_flush"))
        .send()
        .await
        .unwrap();
    let mut out = BTreeSet::new();
    for m in measurements {
        let text = client
            .post(format!("{base}/api/v1/export"))
            .form(&[("match[]", format!("{{__name__=~\"{m}_.*\"}}"))])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let metric = &v["metric"];
            let name = metric["__name__"].as_str().unwrap();
            let field = name.strip_prefix(&format!("{m}_")).unwrap();
            let (device, tenant) = (
                metric["device"].as_str().unwrap(),
                metric["tenant"].as_str().unwrap(),
            );
            let values = v["values"].as_array().unwrap();
            for (val, ts) in values.iter().zip(v["timestamps"].as_array().unwrap()) {
                let time = ts.as_u64().unwrap() / 1000;
                for tag in STRING_TAGS {
                    if let Some(text) = metric[tag].as_str() {
                        out.insert(key_text(tenant, m, device, time, tag, text));
                    }
                }
                if field != "faultCount" {
                    out.insert(key(tenant, m, device, time, field, val.as_f64().unwrap()));
                }
            }
        }
    }
    out
}
