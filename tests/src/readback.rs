//! Reading points back from the databases themselves, as one comparable set of
//! `tenant|measurement|device|time|field|value` strings (values to 6 decimals).

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

/// An InfluxQL query on InfluxDB 1.x, times in Unix seconds; the JSON answer.
pub async fn influx_query(server: SocketAddr, db: &str, q: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("http://{server}/query"))
        .query(&[("db", db), ("q", q), ("epoch", "s")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every numeric field of `measurements` in InfluxDB database `db`, tagged `tenant`.
pub async fn influx_points(
    server: SocketAddr,
    db: &str,
    measurements: &[&str],
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in measurements {
        let body = influx_query(server, db, &format!("SELECT * FROM {m}")).await;
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
                    if let Some(v) = row[i].as_f64().filter(|_| !["time"].contains(c)) {
                        out.insert(key(tenant, m, device, time, c, v));
                    }
                }
            }
        }
    }
    out
}

/// Every sample of metrics named `<measurement>_<field>` in VictoriaMetrics.
pub async fn victoria_points(server: SocketAddr, measurements: &[&str]) -> BTreeSet<String> {
    let client = reqwest::Client::new();
    client
        .post(format!("http://{server}/internal/force_flush"))
        .send()
        .await
        .unwrap();
    let mut out = BTreeSet::new();
    for m in measurements {
        let text = client
            .post(format!("http://{server}/api/v1/export"))
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
                out.insert(key(
                    tenant,
                    m,
                    device,
                    ts.as_u64().unwrap() / 1000,
                    field,
                    val.as_f64().unwrap(),
                ));
            }
        }
    }
    out
}
