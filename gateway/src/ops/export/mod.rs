//! `export`: a commune's stored readings read back from its database (InfluxDB 1.x or
//! VictoriaMetrics, as the config names) and written as open data: FIWARE NGSI-LD
//! entities, CSV or GeoJSON ([`vigie_core::output::opendata`] decides the content). It reads one
//! hour of the commune at a time and writes as it goes, so memory is bounded by one hour
//! of readings whatever the range; a terminal shows progress, and a summary line ends it.

mod source;

use crate::config::Config;
use crate::fleet::registry::{Registry, RegistryError, RegistryFile};
use crate::ops::text::{choice, parse_utc};
use crate::ops::{OpsError, load};
use serde_json::Value;
use source::{Source, Unanswered};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use vigie_core::output::opendata::{self, Aggregator, Resolution, Row, Station};

/// One read of the database spans this long.
pub const WINDOW_S: u64 = 3_600;

/// Why an export did not (wholly) happen.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// `--from` not before `--to`.
    #[error("--from must come before --to")]
    Order,
    /// The registry names the commune's stations.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// No station of the commune in the registry.
    #[error("no commune {tenant:?} in the registry ({}): `tenants list` shows them", registry.display())]
    NoCommune {
        /// The commune.
        tenant: String,
        /// The registry file.
        registry: PathBuf,
    },
    /// No database to read back from.
    #[error(
        "no database configured: export reads the readings back from InfluxDB 1.x or VictoriaMetrics"
    )]
    NoDatabase,
    /// An InfluxDB 2.x database.
    #[error(
        "export reads InfluxDB 1.x or VictoriaMetrics; for InfluxDB 2.x/3.x use `influx query` \
         (docs/SCHEMA.md has the Flux)"
    )]
    V2,
    /// The database client.
    #[error(transparent)]
    Setup(#[from] crate::deliver::SetupError),
    /// The database did not answer with readings.
    #[error("the database at {url} did not answer: {source}")]
    Unanswered {
        /// Its URL, without credentials.
        url: String,
        /// Why.
        source: Unanswered,
    },
    /// The database refused the query.
    #[error("the database refused the query ({answer}): does {database} exist?")]
    Refused {
        /// Its answer.
        answer: String,
        /// The database asked.
        database: String,
    },
    /// The output file.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing the output.
    #[error("writing the export: {0}")]
    Write(#[from] std::io::Error),
    /// Writing CSV.
    #[error("writing the export: {0}")]
    Csv(#[from] csv::Error),
    /// Writing JSON.
    #[error("writing the export: {0}")]
    Json(#[from] serde_json::Error),
    /// Nothing in the range.
    #[error(
        "no readings of {tenant} between {} and {} in the database",
        opendata::iso(*from_s),
        opendata::iso(*to_s)
    )]
    Empty {
        /// The commune.
        tenant: String,
        /// From (Unix s).
        from_s: u64,
        /// To (Unix s).
        to_s: u64,
    },
}

/// `export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Configuration file.
    #[arg(long, env = "VIGIE_CONFIG")]
    pub config: PathBuf,
    /// The commune.
    #[arg(long)]
    pub tenant: String,
    /// From this UTC time (included): `2026-11-01` or `2026-11-01T06:00:00Z`.
    #[arg(long, value_parser = parse_utc)]
    pub from: u32,
    /// To this UTC time (excluded).
    #[arg(long, value_parser = parse_utc)]
    pub to: u32,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: Format,
    /// Every reading, or hourly or daily means.
    #[arg(long, default_value = "raw", value_parser = choice::<Resolution>(Resolution::NAMES))]
    pub resolution: Resolution,
    /// Output file (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `export` from the command line; the summary on standard error (the data may be on
/// standard output).
pub fn command(a: ExportArgs) -> Result<(), OpsError> {
    let c = load(&a.config)?;
    let request = Request {
        tenant: a.tenant,
        from_s: u64::from(a.from),
        to_s: u64::from(a.to),
        format: a.format,
        resolution: a.resolution,
        out: a.out,
    };
    let summary = run(&c, &request)?;
    eprintln!("{}", summary.line(&request));
    Ok(())
}

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
    fn new(r: &'a Request, public: &'a [String], out: Box<dyn Write>) -> Result<Self, ExportError> {
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
                w.write_record(opendata::csv_header(public))?;
                sink.csv = Some(w);
            }
            Format::NgsiLd => {
                let mut out = out;
                out.write_all(b"[")?;
                sink.json = Some(out);
            }
            Format::Geojson => sink.json = Some(out),
        }
        Ok(sink)
    }

    fn row(&mut self, row: Row, station: &Station) -> Result<(), ExportError> {
        match self.format {
            Format::Csv => {
                if let Some(w) = &mut self.csv {
                    w.write_record(opendata::csv_record(&row, station, self.public))?;
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
                            out.write_all(sep)?;
                            serde_json::to_writer(&mut *out, &entity)?;
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

    fn finish(mut self, stations: &BTreeMap<String, Station>) -> Result<Summary, ExportError> {
        match self.format {
            Format::Csv => {
                if let Some(mut w) = self.csv.take() {
                    w.flush()?;
                }
            }
            Format::NgsiLd => {
                if let Some(out) = &mut self.json {
                    out.write_all(b"\n]\n")?;
                    out.flush()?;
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
                    serde_json::to_writer_pretty(&mut *out, &collection)?;
                    out.write_all(b"\n")?;
                    out.flush()?;
                }
            }
        }
        Ok(self.summary)
    }
}

/// Runs an export.
pub fn run(config: &Config, r: &Request) -> Result<Summary, OpsError> {
    if r.from_s >= r.to_s {
        return Err(ExportError::Order.into());
    }
    let registry = Registry::load(&config.gateway.registry).map_err(ExportError::from)?;
    let stations = stations(&registry, &r.tenant);
    if stations.is_empty() {
        return Err(ExportError::NoCommune {
            tenant: r.tenant.clone(),
            registry: config.gateway.registry.clone(),
        }
        .into());
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
            std::fs::File::create(path).map_err(file(path))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let result = crate::ops::service::block_on(stream(&source, r, &stations, &public, out))?;
    if let (Some(tmp), Some(path)) = (&partial, &r.out) {
        if result.as_ref().is_ok_and(|s| s.readings > 0) {
            std::fs::rename(tmp, path).map_err(file(path))?;
        } else {
            let _ = std::fs::remove_file(tmp);
        }
    }
    let summary = result.map_err(OpsError::from)?;
    if summary.readings == 0 {
        return Err(ExportError::Empty {
            tenant: r.tenant.clone(),
            from_s: r.from_s,
            to_s: r.to_s,
        }
        .into());
    }
    Ok(summary)
}

/// An output file error with its path.
fn file(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::File {
        path: path.to_path_buf(),
        source,
    }
}

async fn stream(
    source: &Source,
    r: &Request,
    stations: &BTreeMap<String, Station>,
    public: &[String],
    out: Box<dyn Write>,
) -> Result<Summary, ExportError> {
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
