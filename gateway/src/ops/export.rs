//! `export`: a commune's stored readings read back from its database (InfluxDB 1.x or
//! VictoriaMetrics, as the config names) and written as open data: FIWARE NGSI-LD
//! entities, CSV or GeoJSON ([`vigie_core::output::opendata`] decides the content). It reads one
//! hour of the commune at a time and writes as it goes, so memory is bounded by one hour
//! of readings whatever the range; a terminal shows progress, and a summary line ends it.

use crate::config::{Config, DatabaseApi, DatabaseConfig, DatabaseKind};
use crate::fleet::registry::Registry;
use crate::fleet::registry::RegistryFile;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use vigie_core::output::opendata::{self, Aggregator, Datum, Resolution, Row, Sample, Station};

/// One read of the database spans this long.
pub const WINDOW_S: u64 = 3_600;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// FIWARE NGSI-LD entities (a JSON array): `AirQualityObserved`, `WasteContainer`.
    NgsiLd,
    /// One row per reading (or period), RFC 4180, UTF-8, units in the header.
    Csv,
    /// A FeatureCollection of the stations with their latest values.
    Geojson,
}

/// What to export.
#[derive(Debug, Clone)]
pub struct Request {
    /// The commune.
    pub tenant: String,
    /// From (Unix s, included).
    pub from_s: u64,
    /// To (Unix s, excluded).
    pub to_s: u64,
    /// Format.
    pub format: Format,
    /// Raw readings, or hourly or daily means.
    pub resolution: Resolution,
    /// Output file; standard output when `None`.
    pub out: Option<PathBuf>,
}

/// What an export wrote.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// Readings read back.
    pub readings: u64,
    /// Stations they came from.
    pub stations: usize,
    /// Rows, entities or features written.
    pub written: u64,
    /// Rows left out of NGSI-LD for want of coordinates.
    pub without_location: u64,
}

impl Summary {
    /// The closing line.
    pub fn line(&self, r: &Request) -> String {
        let mut line = format!(
            "exported {} readings from {} stations ({} {}, {:?})",
            self.readings,
            self.stations,
            self.written,
            match r.format {
                Format::NgsiLd => "entities",
                Format::Csv => "rows",
                Format::Geojson => "features",
            },
            r.resolution
        );
        if self.without_location > 0 {
            line += &format!(
                "; {} left out of NGSI-LD: their station has no coordinates (devices edit --latitude --longitude)",
                self.without_location
            );
        }
        line
    }
}

/// Where the readings come from.
struct Source {
    client: reqwest::Client,
    cfg: DatabaseConfig,
}

impl Source {
    fn new(config: &Config) -> Result<Self, String> {
        let cfg = config
            .database
            .clone()
            .ok_or("no database configured: export reads the readings back from InfluxDB 1.x or VictoriaMetrics")?;
        if cfg.kind == DatabaseKind::Influxdb && cfg.api == DatabaseApi::V2 {
            return Err("export reads InfluxDB 1.x or VictoriaMetrics; for InfluxDB 2.x/3.x use `influx query` (docs/SCHEMA.md has the Flux)".into());
        }
        let client = crate::deliver::client_builder(&cfg)
            .and_then(|b| b.build().map_err(crate::deliver::SetupError::from))
            .map_err(|e| e.to_string())?;
        Ok(Self { client, cfg })
    }

    /// The commune's air-quality and bin readings in `[from, to)`, by time then station.
    async fn window(&self, tenant: &str, from: u64, to: u64) -> Result<Vec<Sample>, String> {
        let mut samples = match self.cfg.kind {
            DatabaseKind::Influxdb => self.influx(tenant, from, to).await?,
            DatabaseKind::Victoriametrics => self.victoria(tenant, from, to).await?,
        };
        samples.sort_by(|a, b| (a.time_s, &a.station).cmp(&(b.time_s, &b.station)));
        Ok(samples)
    }

    fn failed(&self, e: impl std::fmt::Display) -> String {
        format!(
            "the database at {} did not answer: {e}",
            self.cfg.url_shown()
        )
    }

    async fn influx(&self, tenant: &str, from: u64, to: u64) -> Result<Vec<Sample>, String> {
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
            return Err(format!(
                "the database refused the query ({e}): does {db} exist?"
            ));
        }
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
                    match (*col, v) {
                        ("time", v) => s.time_s = v.as_u64().unwrap_or_default(),
                        ("device", Value::String(d)) => s.station = d.clone(),
                        ("quality", Value::String(q)) => s.quality = q.clone(),
                        ("faults", Value::String(f)) => s.faults = f.clone(),
                        (name, Value::Number(n)) => {
                            s.values
                                .insert(name.to_string(), Datum::Number(n.as_f64().unwrap_or(0.0)));
                        }
                        (name, Value::Bool(b)) => {
                            s.values.insert(name.to_string(), Datum::Flag(*b));
                        }
                        _ => {}
                    }
                }
                out.push(s);
            }
        }
        Ok(out)
    }

    async fn victoria(&self, tenant: &str, from: u64, to: u64) -> Result<Vec<Sample>, String> {
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

/// The commune's stations, from the registry.
fn stations(registry: &Registry, tenant: &str) -> BTreeMap<String, Station> {
    registry
        .entries()
        .into_iter()
        .filter(|e| e.tenant == tenant)
        .map(|e| {
            let station = Station {
                site: e.site.clone(),
                place: e.place.clone(),
                insee: e.insee.clone(),
                latitude: e.latitude,
                longitude: e.longitude,
                container: e.container.clone(),
                capacity_l: e.capacity_l,
            };
            (e.id.clone(), station)
        })
        .collect()
}

/// Where the rows go, in the chosen format.
struct Sink<'a> {
    format: Format,
    tenant: &'a str,
    aggregated: bool,
    public: &'a [String],
    csv: Option<csv::Writer<Box<dyn Write>>>,
    json: Option<Box<dyn Write>>,
    latest: BTreeMap<String, Row>,
    summary: Summary,
}

impl<'a> Sink<'a> {
    fn new(r: &'a Request, public: &'a [String], out: Box<dyn Write>) -> Result<Self, String> {
        let mut sink = Self {
            format: r.format,
            tenant: &r.tenant,
            aggregated: r.resolution != Resolution::Raw,
            public,
            csv: None,
            json: None,
            latest: BTreeMap::new(),
            summary: Summary::default(),
        };
        match r.format {
            Format::Csv => {
                let mut w = csv::Writer::from_writer(out);
                w.write_record(opendata::csv_header(public))
                    .map_err(|e| e.to_string())?;
                sink.csv = Some(w);
            }
            Format::NgsiLd => {
                let mut out = out;
                out.write_all(b"[").map_err(|e| e.to_string())?;
                sink.json = Some(out);
            }
            Format::Geojson => sink.json = Some(out),
        }
        Ok(sink)
    }

    fn row(&mut self, row: Row, station: &Station) -> Result<(), String> {
        match self.format {
            Format::Csv => {
                if let Some(w) = &mut self.csv {
                    w.write_record(opendata::csv_record(&row, station, self.public))
                        .map_err(|e| e.to_string())?;
                    self.summary.written += 1;
                }
            }
            Format::NgsiLd if row.valid() => {
                match opendata::ngsi_ld(&row, station, self.tenant, self.aggregated) {
                    Some(entity) => {
                        if let Some(out) = &mut self.json {
                            let sep: &[u8] = if self.summary.written == 0 {
                                b"\n"
                            } else {
                                b",\n"
                            };
                            out.write_all(sep).map_err(|e| e.to_string())?;
                            serde_json::to_writer(&mut *out, &entity).map_err(|e| e.to_string())?;
                            self.summary.written += 1;
                        }
                    }
                    None => self.summary.without_location += 1,
                }
            }
            Format::Geojson if row.valid() => {
                self.latest.insert(row.station.clone(), row);
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(mut self, stations: &BTreeMap<String, Station>) -> Result<Summary, String> {
        match self.format {
            Format::Csv => {
                if let Some(mut w) = self.csv.take() {
                    w.flush().map_err(|e| e.to_string())?;
                }
            }
            Format::NgsiLd => {
                if let Some(out) = &mut self.json {
                    out.write_all(b"\n]\n").map_err(|e| e.to_string())?;
                    out.flush().map_err(|e| e.to_string())?;
                }
            }
            Format::Geojson => {
                let features: Vec<Value> = self
                    .latest
                    .values()
                    .filter_map(|row| Some(opendata::feature(row, stations.get(&row.station)?)))
                    .collect();
                self.summary.written = features.len() as u64;
                let collection =
                    serde_json::json!({ "type": "FeatureCollection", "features": features });
                if let Some(out) = &mut self.json {
                    serde_json::to_writer_pretty(&mut *out, &collection)
                        .map_err(|e| e.to_string())?;
                    out.write_all(b"\n").map_err(|e| e.to_string())?;
                    out.flush().map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(self.summary)
    }
}

/// Runs an export.
pub fn run(config: &Config, r: &Request) -> Result<Summary, String> {
    if r.from_s >= r.to_s {
        return Err("--from must come before --to".into());
    }
    let registry = Registry::load(&config.gateway.registry).map_err(|e| e.to_string())?;
    let stations = stations(&registry, &r.tenant);
    if stations.is_empty() {
        return Err(format!(
            "no commune {:?} in the registry ({}): `tenants list` shows them",
            r.tenant,
            config.gateway.registry.display()
        ));
    }
    let source = Source::new(config)?;
    let public = config.export.public(&r.tenant);
    // Written beside the target, renamed over it only when complete: a failed or empty
    // export leaves a file already there as it was (no half file, no file of nothing).
    let partial = r.out.as_ref().map(|path| {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".partial-{}", std::process::id()));
        path.with_file_name(name)
    });
    let out: Box<dyn Write> = match &partial {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let result = crate::ops::block_on(stream(&source, r, &stations, &public, out))?;
    if let (Some(tmp), Some(path)) = (&partial, &r.out) {
        if result.as_ref().is_ok_and(|s| s.readings > 0) {
            std::fs::rename(tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
        } else {
            let _ = std::fs::remove_file(tmp);
        }
    }
    let summary = result?;
    if summary.readings == 0 {
        return Err(format!(
            "no readings of {} between {} and {} in the database",
            r.tenant,
            opendata::iso(r.from_s),
            opendata::iso(r.to_s)
        ));
    }
    Ok(summary)
}

async fn stream(
    source: &Source,
    r: &Request,
    stations: &BTreeMap<String, Station>,
    public: &[String],
    out: Box<dyn Write>,
) -> Result<Summary, String> {
    let progress = std::io::stderr().is_terminal();
    let mut sink = Sink::new(r, public, out)?;
    let mut aggregator =
        (r.resolution != Resolution::Raw).then(|| Aggregator::new(r.resolution, public.to_vec()));
    let (mut readings, mut seen) = (0u64, BTreeSet::new());
    let mut from = r.from_s;
    while from < r.to_s {
        let to = (from - from % WINDOW_S + WINDOW_S).min(r.to_s);
        for s in source.window(&r.tenant, from, to).await? {
            // Readings of devices no longer registered have no public description.
            let Some(station) = stations.get(&s.station) else {
                continue;
            };
            readings += 1;
            seen.insert(s.station.clone());
            match &mut aggregator {
                None => sink.row(Row::raw(&s, public), station)?,
                Some(a) => {
                    if let Some(row) = a.add(&s) {
                        sink.row(row, station)?;
                    }
                }
            }
        }
        if progress {
            let done = (to - r.from_s) * 100 / (r.to_s - r.from_s);
            eprint!(
                "\r[{done:>3}%] up to {}  {readings} readings from {} stations   ",
                opendata::iso(to),
                seen.len()
            );
        }
        from = to;
    }
    if progress {
        eprintln!();
    }
    if let Some(a) = aggregator {
        for row in a.finish() {
            if let Some(station) = stations.get(&row.station) {
                sink.row(row, station)?;
            }
        }
    }
    let mut summary = sink.finish(stations)?;
    summary.readings = readings;
    summary.stations = seen.len();
    Ok(summary)
}
