//! Open data (docs/OPERATIONS.md, "Open data"): stored readings read back from the
//! database become rows, raw or as hourly and daily means, and each row a CSV record, a
//! FIWARE NGSI-LD entity (`AirQualityObserved`, `WasteContainer`) or, per station, a
//! GeoJSON feature. Pure: the shell reads the database and writes the file.
//!
//! Rules: only the commune's public fields go out (never battery, signal, counters or
//! keys: device status is not exported); a reading flagged by the plausibility rules
//! (`quality`) or a field its sensor reported as failed (`faults`) is left out of means,
//! and out of NGSI-LD and GeoJSON; the raw CSV keeps flagged readings with their `quality`
//! column so nothing is hidden from a data officer. A mean states its share of valid
//! readings (`valid_share` in CSV, `reliability` in NGSI-LD); the daily PM mean of the
//! European air-quality directive (2008/50/EC, annex VII) needs 75 % of the period's data,
//! which the share lets a reader check.

use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Fields a commune publishes when its configuration names none.
pub const DEFAULT_PUBLIC: &[&str] = &[
    "pm1",
    "pm25",
    "pm10",
    "no2",
    "o3",
    "co2",
    "temperature",
    "relativeHumidity",
    "atmosphericPressure",
    "LAeq",
    "fillingLevel",
    "tilted",
    "lidOpen",
    "fireSuspected",
];

/// What a station is, from the registry (no key, no counter).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Station {
    /// Site name.
    pub site: Option<String>,
    /// Address or place.
    pub place: Option<String>,
    /// INSEE code of the commune.
    pub insee: Option<String>,
    /// WGS84 latitude.
    pub latitude: Option<f64>,
    /// WGS84 longitude.
    pub longitude: Option<f64>,
    /// Bin category (FIWARE: fixed, ground, other, portable, underground).
    pub container: Option<String>,
    /// Bin capacity, litres.
    pub capacity_l: Option<u32>,
}

/// A stored value read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    /// A number.
    Number(f64),
    /// A bin flag.
    Flag(bool),
}

/// One stored reading read back from the database.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// Device id.
    pub station: String,
    /// Measurement.
    pub measurement: String,
    /// Measurement time, Unix seconds.
    pub time_s: u64,
    /// Its fields.
    pub values: BTreeMap<String, Datum>,
    /// Plausibility flags, comma-separated (empty when none).
    pub quality: String,
    /// Failed fields, comma-separated (empty when none).
    pub faults: String,
}

/// Time resolution of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Every reading.
    Raw,
    /// Hourly means.
    Hour,
    /// Daily means (UTC days).
    Day,
}

/// A resolution name that is none of [`Resolution::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resolution {0:?}: raw, hour or day")]
pub struct UnknownResolution(pub String);

impl std::str::FromStr for Resolution {
    type Err = UnknownResolution;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "raw" => Ok(Self::Raw),
            "hour" => Ok(Self::Hour),
            "day" => Ok(Self::Day),
            _ => Err(UnknownResolution(s.to_string())),
        }
    }
}

impl Resolution {
    /// Every resolution's name, as `export --resolution` takes it.
    pub const NAMES: &[&str] = &["raw", "hour", "day"];

    /// The period a time falls in (its start), or the time itself when raw.
    pub fn period(self, time_s: u64) -> u64 {
        match self {
            Resolution::Raw => time_s,
            Resolution::Hour => time_s - time_s % 3_600,
            Resolution::Day => time_s - time_s % 86_400,
        }
    }
}

/// One row of an export: a reading, or a station's mean over a period.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    /// Device id.
    pub station: String,
    /// Measurement.
    pub measurement: String,
    /// Reading time or period start, Unix seconds.
    pub time_s: u64,
    /// Values (means for a period; flags: true if any valid reading had it).
    pub values: BTreeMap<String, Datum>,
    /// Readings behind the row.
    pub readings: u32,
    /// Share of them that were valid (no `quality` flag).
    pub valid_share: f64,
    /// A raw row's plausibility flags.
    pub quality: String,
    /// A raw row's failed fields.
    pub faults: String,
}

impl Row {
    /// A raw reading's row, with only `public` fields.
    pub fn raw(s: &Sample, public: &[String]) -> Self {
        Self {
            station: s.station.clone(),
            measurement: s.measurement.clone(),
            time_s: s.time_s,
            values: keep(&s.values, public),
            readings: 1,
            valid_share: if s.quality.is_empty() { 1.0 } else { 0.0 },
            quality: s.quality.clone(),
            faults: s.faults.clone(),
        }
    }

    /// Whether the row may go to NGSI-LD and GeoJSON: a raw reading without a plausibility
    /// flag, or a period with at least one valid reading.
    pub fn valid(&self) -> bool {
        self.valid_share > 0.0 && !self.values.is_empty()
    }
}

fn keep(values: &BTreeMap<String, Datum>, public: &[String]) -> BTreeMap<String, Datum> {
    values
        .iter()
        .filter(|(k, _)| public.iter().any(|p| p == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[derive(Debug, Default)]
struct Bucket {
    sums: BTreeMap<String, (f64, u32)>,
    flags: BTreeMap<String, bool>,
    readings: u32,
    valid: u32,
}

/// Means per station and period, fed in time order per station: a period is emitted once
/// a later one starts (or at the end). Holds one open period per station.
#[derive(Debug)]
pub struct Aggregator {
    resolution: Resolution,
    public: Vec<String>,
    open: BTreeMap<(String, String), (u64, Bucket)>,
}

impl Aggregator {
    /// Means at `resolution` (not raw) of the `public` fields.
    pub fn new(resolution: Resolution, public: Vec<String>) -> Self {
        Self {
            resolution,
            public,
            open: BTreeMap::new(),
        }
    }

    /// Takes one reading; returns the row of a period it closed.
    pub fn add(&mut self, s: &Sample) -> Option<Row> {
        let period = self.resolution.period(s.time_s);
        let key = (s.station.clone(), s.measurement.clone());
        let mut closed = None;
        if let Some((p, _)) = self.open.get(&key)
            && *p != period
        {
            let (p, bucket) = self.open.remove(&key)?;
            closed = Some(row(&key, p, bucket));
        }
        let (_, b) = self
            .open
            .entry(key)
            .or_insert_with(|| (period, Bucket::default()));
        b.readings += 1;
        if s.quality.is_empty() {
            b.valid += 1;
            for (k, v) in keep(&s.values, &self.public) {
                match v {
                    Datum::Number(x) => {
                        let e = b.sums.entry(k).or_default();
                        e.0 += x;
                        e.1 += 1;
                    }
                    Datum::Flag(f) => *b.flags.entry(k).or_default() |= f,
                }
            }
        }
        closed
    }

    /// The periods still open.
    pub fn finish(self) -> Vec<Row> {
        self.open
            .into_iter()
            .map(|(key, (p, b))| row(&key, p, b))
            .collect()
    }
}

fn row(key: &(String, String), period: u64, b: Bucket) -> Row {
    let mut values: BTreeMap<String, Datum> = b
        .sums
        .into_iter()
        .map(|(k, (sum, n))| (k, Datum::Number(sum / f64::from(n))))
        .collect();
    values.extend(b.flags.into_iter().map(|(k, f)| (k, Datum::Flag(f))));
    Row {
        station: key.0.clone(),
        measurement: key.1.clone(),
        time_s: period,
        values,
        readings: b.readings,
        valid_share: f64::from(b.valid) / f64::from(b.readings.max(1)),
        quality: String::new(),
        faults: String::new(),
    }
}

/// `2026-11-22T10:00:00Z`.
pub fn iso(time_s: u64) -> String {
    chrono::DateTime::from_timestamp(time_s as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The CSV columns: station, place, position, time, then every public field with its
/// stored unit, then the row's quality.
pub fn csv_header(public: &[String]) -> Vec<String> {
    let mut h: Vec<String> = [
        "station",
        "type",
        "place",
        "insee",
        "latitude",
        "longitude",
        "timestamp (UTC)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for f in public {
        h.push(match unit(f) {
            Some((text, _)) if !text.is_empty() => format!("{f} ({text})"),
            _ => f.clone(),
        });
    }
    h.extend(["readings", "valid_share", "quality", "faults"].map(String::from));
    h
}

/// One CSV record, in [`csv_header`]'s columns.
pub fn csv_record(row: &Row, station: &Station, public: &[String]) -> Vec<String> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let num = |v: Option<f64>| v.map_or_else(String::new, |x| format!("{x}"));
    let mut r = vec![
        row.station.clone(),
        row.measurement.clone(),
        text_cell(&opt(&station.place).or_site(&station.site)),
        text_cell(&opt(&station.insee)),
        num(station.latitude),
        num(station.longitude),
        iso(row.time_s),
    ];
    for f in public {
        r.push(match row.values.get(f) {
            Some(Datum::Number(x)) => format!("{}", round(*x)),
            Some(Datum::Flag(b)) => b.to_string(),
            None => String::new(),
        });
    }
    r.push(row.readings.to_string());
    r.push(format!("{}", round(row.valid_share)));
    r.push(row.quality.clone());
    r.push(row.faults.clone());
    r
}

/// A free-text cell a spreadsheet must not run: one that starts as a formula would
/// (`=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading `'` (OWASP's advice for
/// CSV injection). Numbers are written by the export itself and never go through here.
fn text_cell(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    }
}

trait OrSite {
    fn or_site(self, site: &Option<String>) -> String;
}

impl OrSite for String {
    fn or_site(self, site: &Option<String>) -> String {
        if self.is_empty() {
            site.clone().unwrap_or_default()
        } else {
            self
        }
    }
}

/// Rounds away float noise of means (12 significant decimals are far beyond any sensor).
fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The stored unit of a field in words, and its UN/CEFACT code (NGSI-LD `unitCode`).
pub fn unit(field: &str) -> Option<(&'static str, &'static str)> {
    Some(match field {
        "pm1" | "pm25" | "pm10" | "no2" | "o3" => ("µg/m³", "GQ"),
        "co2" => ("ppm", "59"),
        "temperature" => ("°C", "CEL"),
        "relativeHumidity" | "fillingLevel" => ("fraction 0-1", "C62"),
        "atmosphericPressure" => ("hPa", "A97"),
        "LAeq" => ("dB(A)", "2N"),
        "tilted" | "lidOpen" | "fireSuspected" => ("", ""),
        _ => return None,
    })
}

/// The attributes each FIWARE model defines, of the fields Vigie stores.
fn in_model(measurement: &str, field: &str) -> bool {
    match measurement {
        "air_quality" => matches!(
            field,
            "pm1" | "pm25" | "pm10" | "no2" | "o3" | "co2" | "temperature" | "relativeHumidity"
        ),
        "waste_bin" => matches!(field, "fillingLevel" | "temperature"),
        _ => false,
    }
}

/// The NGSI-LD entity of a row (`None` without coordinates: `location` is required by
/// both models).
pub fn ngsi_ld(row: &Row, station: &Station, tenant: &str, aggregated: bool) -> Option<Value> {
    let (lat, lon) = (station.latitude?, station.longitude?);
    let when = iso(row.time_s);
    let (kind, context) = match row.measurement.as_str() {
        "air_quality" => (
            "AirQualityObserved",
            "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld",
        ),
        "waste_bin" => (
            "WasteContainer",
            "https://raw.githubusercontent.com/smart-data-models/dataModel.WasteManagement/master/context.jsonld",
        ),
        _ => return None,
    };
    let mut e = json!({
        "id": format!("urn:ngsi-ld:{kind}:{tenant}:{}:{when}", row.station),
        "type": kind,
        "@context": [context, "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"],
        "location": { "type": "GeoProperty", "value": { "type": "Point", "coordinates": [lon, lat] } },
        "areaServed": { "type": "Property", "value": station.insee.clone().unwrap_or_else(|| tenant.to_string()) },
        "refDevice": { "type": "Relationship", "object": format!("urn:ngsi-ld:Device:{tenant}:{}", row.station) },
    });
    let time = json!({ "type": "Property", "value": { "@type": "DateTime", "@value": when } });
    match kind {
        "AirQualityObserved" => e["dateObserved"] = time,
        _ => e["binLoggedTime"] = time,
    }
    if let Some(place) = station.place.as_ref().or(station.site.as_ref()) {
        e["address"] = json!({ "type": "Property", "value": {
            "streetAddress": place, "addressCountry": "FR" } });
    }
    for (field, v) in &row.values {
        if let (Datum::Number(x), true) = (v, in_model(&row.measurement, field)) {
            let code = unit(field).map_or("", |u| u.1);
            e[field.as_str()] = json!({ "type": "Property", "value": round(*x), "unitCode": code });
        }
    }
    if kind == "WasteContainer" {
        let flag = |f: &str| matches!(row.values.get(f), Some(Datum::Flag(true)));
        let status = if flag("fireSuspected") {
            "burning"
        } else if flag("tilted") {
            "dropped"
        } else if flag("lidOpen") {
            "lidOpen"
        } else {
            "ok"
        };
        e["status"] = json!({ "type": "Property", "value": status });
        if let Some(c) = &station.container {
            e["category"] = json!({ "type": "Property", "value": [c] });
        }
        if let Some(l) = station.capacity_l {
            e["binCapacity"] = json!({ "type": "Property", "value": l, "unitCode": "LTR" });
        }
    }
    if aggregated {
        e["reliability"] = json!({ "type": "Property", "value": round(row.valid_share) });
    }
    Some(e)
}

/// The GeoJSON feature of a station and its latest row.
pub fn feature(row: &Row, station: &Station) -> Value {
    let geometry = match (station.latitude, station.longitude) {
        (Some(lat), Some(lon)) => json!({ "type": "Point", "coordinates": [lon, lat] }),
        _ => Value::Null,
    };
    let mut properties = json!({
        "station": row.station,
        "type": row.measurement,
        "place": station.place.clone().or(station.site.clone()),
        "insee": station.insee,
        "time": iso(row.time_s),
    });
    for (field, v) in &row.values {
        properties[field.as_str()] = match v {
            Datum::Number(x) => json!(round(*x)),
            Datum::Flag(b) => json!(b),
        };
    }
    json!({ "type": "Feature", "geometry": geometry, "properties": properties })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time_s: u64, pm25: f64, quality: &str) -> Sample {
        Sample {
            station: "aq-1".into(),
            measurement: "air_quality".into(),
            time_s,
            values: [
                ("pm25".to_string(), Datum::Number(pm25)),
                ("rssi".to_string(), Datum::Number(-70.0)),
            ]
            .into(),
            quality: quality.into(),
            faults: String::new(),
        }
    }

    fn public() -> Vec<String> {
        DEFAULT_PUBLIC.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_place_or_site_that_reads_as_a_formula_is_written_as_text() {
        let mut a = Aggregator::new(Resolution::Raw, public());
        assert!(a.add(&sample(3_600, 10.0, "")).is_none());
        let row = a.finish().remove(0);
        for (place, site, cell) in [
            (
                Some("=HYPERLINK(\"http://x\",\"clic\")"),
                None,
                "'=HYPERLINK(\"http://x\",\"clic\")",
            ),
            (None, Some("@SUM(A1)"), "'@SUM(A1)"),
            (Some("-3 rue Haute"), None, "'-3 rue Haute"),
            (Some("Place Bellecour"), None, "Place Bellecour"),
        ] {
            let station = Station {
                place: place.map(String::from),
                site: site.map(String::from),
                ..Station::default()
            };
            assert_eq!(csv_record(&row, &station, &public())[2], cell);
        }
    }

    #[test]
    fn hourly_means_leave_out_flagged_readings_and_state_the_valid_share() {
        let mut a = Aggregator::new(Resolution::Hour, public());
        assert!(a.add(&sample(3_600, 10.0, "")).is_none());
        assert!(a.add(&sample(3_700, 20.0, "")).is_none());
        assert!(a.add(&sample(3_800, 900.0, "pm25_above_pm10")).is_none());
        let row = a.add(&sample(7_200, 5.0, "")).unwrap();
        assert_eq!((row.time_s, row.readings), (3_600, 3));
        assert_eq!(row.values["pm25"], Datum::Number(15.0));
        assert!(!row.values.contains_key("rssi"), "not a public field");
        assert!((row.valid_share - 2.0 / 3.0).abs() < 1e-12);
        let rest = a.finish();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].values["pm25"], Datum::Number(5.0));
    }

    #[test]
    fn entities_follow_the_models_and_need_a_location() {
        let station = Station {
            latitude: Some(45.75),
            longitude: Some(4.85),
            insee: Some("69123".into()),
            ..Station::default()
        };
        let row = Row::raw(&sample(1_795_305_600, 12.3, ""), &public());
        let e = ngsi_ld(&row, &station, "lyon", false).unwrap();
        assert_eq!(
            e["id"],
            "urn:ngsi-ld:AirQualityObserved:lyon:aq-1:2026-11-22T00:00:00Z"
        );
        assert_eq!(e["pm25"]["value"], 12.3);
        assert_eq!(e["pm25"]["unitCode"], "GQ");
        assert_eq!(e["location"]["value"]["coordinates"], json!([4.85, 45.75]));
        assert_eq!(e["dateObserved"]["value"]["@value"], "2026-11-22T00:00:00Z");
        assert_eq!(e["areaServed"]["value"], "69123");
        assert!(e.get("rssi").is_none());
        let nowhere = Station {
            latitude: None,
            ..station
        };
        assert!(ngsi_ld(&row, &nowhere, "lyon", false).is_none());
    }
}
