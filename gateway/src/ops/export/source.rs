//! Reading a commune's readings back from its database, one window at a time.

use super::ExportError;
use crate::config::{Config, DatabaseApi, DatabaseConfig, DatabaseKind};
use serde_json::Value;
use std::collections::BTreeMap;
use vigie_core::output::opendata::{Datum, Sample};

/// Why the database's answer is not readings.
#[derive(Debug, thiserror::Error)]
pub enum Unanswered {
    /// The request.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    /// An error status.
    #[error("{0}")]
    Status(reqwest::StatusCode),
    /// An answer that does not parse.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl From<reqwest::StatusCode> for Unanswered {
    fn from(s: reqwest::StatusCode) -> Self {
        Self::Status(s)
    }
}

/// Where the readings come from.
pub struct Source {
    client: reqwest::Client,
    cfg: DatabaseConfig,
}

impl Source {
    pub fn new(config: &Config) -> Result<Self, ExportError> {
        let cfg = config.database.clone().ok_or(ExportError::NoDatabase)?;
        if cfg.kind == DatabaseKind::Influxdb && cfg.api == DatabaseApi::V2 {
            return Err(ExportError::V2);
        }
        let client = crate::deliver::client_builder(&cfg)
            .and_then(|b| b.build().map_err(crate::deliver::SetupError::from))?;
        Ok(Self { client, cfg })
    }

    /// The commune's air-quality and bin readings in `[from, to)`, by time then station.
    pub async fn window(
        &self,
        tenant: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<Sample>, ExportError> {
        let mut samples = match self.cfg.kind {
            DatabaseKind::Influxdb => self.influx(tenant, from, to).await?,
            DatabaseKind::Victoriametrics => self.victoria(tenant, from, to).await?,
        };
        samples.sort_by(|a, b| (a.time_s, &a.station).cmp(&(b.time_s, &b.station)));
        Ok(samples)
    }

    fn failed(&self, source: impl Into<Unanswered>) -> ExportError {
        ExportError::Unanswered {
            url: self.cfg.url_shown(),
            source: source.into(),
        }
    }

    async fn influx(&self, tenant: &str, from: u64, to: u64) -> Result<Vec<Sample>, ExportError> {
        let q = format!(
            "SELECT * FROM \"air_quality\",\"waste_bin\" WHERE \"tenant\" = '{tenant}' AND time >= {from}s AND time < {to}s"
        );
        let url = format!("{}/query", self.cfg.url.trim_end_matches('/'));
        let db = self.cfg.target(tenant);
        let form = [("q", q.as_str()), ("db", db.as_str()), ("epoch", "s")];
        let request = crate::deliver::authorize(self.client.post(&url).form(&form), &self.cfg);
        let answer = request
            .send()
            .await
            .map_err(|e| self.failed(e.without_url()))?;
        let body: Value = answer
            .json()
            .await
            .map_err(|e| self.failed(e.without_url()))?;
        if let Some(e) = body["error"]
            .as_str()
            .or(body["results"][0]["error"].as_str())
        {
            return Err(ExportError::Refused {
                answer: e.to_string(),
                database: db,
            });
        }
        Ok(influx_samples(&body))
    }

    async fn victoria(&self, tenant: &str, from: u64, to: u64) -> Result<Vec<Sample>, ExportError> {
        let url = format!("{}/api/v1/export", self.cfg.url.trim_end_matches('/'));
        let matcher = format!("{{__name__=~\"(air_quality|waste_bin)_.+\",tenant=\"{tenant}\"}}");
        let end = format!("{}.999", to - 1);
        let form = [
            ("match[]", matcher.as_str()),
            ("start", &from.to_string()),
            ("end", end.as_str()),
        ];
        let request = crate::deliver::authorize(self.client.post(&url).form(&form), &self.cfg);
        let answer = request
            .send()
            .await
            .map_err(|e| self.failed(e.without_url()))?;
        if !answer.status().is_success() {
            return Err(self.failed(answer.status()));
        }
        let text = answer
            .text()
            .await
            .map_err(|e| self.failed(e.without_url()))?;
        let mut by_point: BTreeMap<(String, String, u64), Sample> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_str(line).map_err(|e| self.failed(e))?;
            let m = &v["metric"];
            let name = m["__name__"].as_str().unwrap_or_default();
            let Some((measurement, field)) = ["air_quality", "waste_bin"]
                .iter()
                .find_map(|p| Some((*p, name.strip_prefix(p)?.strip_prefix('_')?)))
            else {
                continue;
            };
            if field == "faultCount" {
                continue;
            }
            let station = m["device"].as_str().unwrap_or_default().to_string();
            let stamps = v["timestamps"].as_array().into_iter().flatten();
            for (ts, value) in stamps.zip(v["values"].as_array().into_iter().flatten()) {
                let ts = ts.as_u64().unwrap_or_default();
                let s = by_point
                    .entry((station.clone(), measurement.to_string(), ts))
                    .or_insert_with(|| Sample {
                        station: station.clone(),
                        measurement: measurement.to_string(),
                        time_s: ts / 1000,
                        quality: m["quality"].as_str().unwrap_or_default().to_string(),
                        faults: m["faults"].as_str().unwrap_or_default().to_string(),
                        ..Sample::default()
                    });
                let x = value.as_f64().unwrap_or(0.0);
                let datum = match field {
                    "tilted" | "lidOpen" | "fireSuspected" => Datum::Flag(x != 0.0),
                    _ => Datum::Number(x),
                };
                s.values.insert(field.to_string(), datum);
            }
        }
        Ok(by_point.into_values().collect())
    }
}

/// The samples of an InfluxQL answer: one per row of each series, its columns as tags
/// (device, quality, faults), time and fields.
fn influx_samples(body: &Value) -> Vec<Sample> {
    let mut out = Vec::new();
    for series in body["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let measurement = series["name"].as_str().unwrap_or_default();
        let columns: Vec<&str> = series["columns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for row in series["values"].as_array().into_iter().flatten() {
            let mut s = Sample {
                measurement: measurement.to_string(),
                ..Sample::default()
            };
            for (col, v) in columns.iter().zip(row.as_array().into_iter().flatten()) {
                column(&mut s, col, v);
            }
            out.push(s);
        }
    }
    out
}

/// One column of an InfluxQL row into its sample.
fn column(s: &mut Sample, col: &str, v: &Value) {
    match (col, v) {
        ("time", v) => s.time_s = v.as_u64().unwrap_or_default(),
        ("device", Value::String(d)) => s.station = d.clone(),
        ("quality", Value::String(q)) => s.quality = q.clone(),
        ("faults", Value::String(f)) => s.faults = f.clone(),
        (name, Value::Number(n)) => {
            let datum = Datum::Number(n.as_f64().unwrap_or(0.0));
            s.values.insert(name.to_string(), datum);
        }
        (name, Value::Bool(b)) => {
            s.values.insert(name.to_string(), Datum::Flag(*b));
        }
        _ => {}
    }
}
