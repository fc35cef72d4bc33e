//! Metrics in the Prometheus text format, without a metrics framework: a few counters,
//! gauges and two histograms behind one mutex, updated once per batch on hot paths.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Label pairs of one series.
pub type Labels = Vec<(&'static str, String)>;

/// Every metric: name, type, help. Rendering follows this order.
const CATALOGUE: &[(&str, &str, &str)] = &[
    (
        "vigie_registry_devices",
        "gauge",
        "Devices in the loaded registry.",
    ),
    (
        "vigie_messages_received_total",
        "counter",
        "MQTT messages received on uplink and status topics.",
    ),
    (
        "vigie_frames_accepted_total",
        "counter",
        "Frames verified, validated and durably buffered.",
    ),
    (
        "vigie_readings_accepted_total",
        "counter",
        "Readings durably buffered, by tenant.",
    ),
    (
        "vigie_readings_flagged_total",
        "counter",
        "Readings stored with a quality flag.",
    ),
    (
        "vigie_frames_duplicate_total",
        "counter",
        "Frames already stored (redeliveries), acknowledged without storing.",
    ),
    (
        "vigie_frames_rejected_total",
        "counter",
        "Frames rejected and quarantined, by reason.",
    ),
    (
        "vigie_quarantine_evicted_total",
        "counter",
        "Oldest quarantine entries removed to stay under the size limit.",
    ),
    (
        "vigie_buffer_bytes",
        "gauge",
        "Bytes of the durable buffer on disk.",
    ),
    (
        "vigie_buffer_pending_bytes",
        "gauge",
        "Buffered bytes not yet written to the database.",
    ),
    (
        "vigie_buffer_full",
        "gauge",
        "1 while the buffer is full and the gateway withholds acknowledgements.",
    ),
    (
        "vigie_buffer_recovered_records",
        "gauge",
        "Records found in the buffer at start-up.",
    ),
    (
        "vigie_store_failing",
        "gauge",
        "1 while the disk refuses writes (full, I/O error) and acknowledgements are withheld.",
    ),
    (
        "vigie_buffer_torn_tails_total",
        "counter",
        "Torn tails cut at start-up (writes a crash or a failed write left unfinished; never acknowledged).",
    ),
    (
        "vigie_buffer_corrupt_records_total",
        "counter",
        "Corrupt buffer records skipped and quarantined (disk corruption).",
    ),
    (
        "vigie_tenant_behind",
        "gauge",
        "1 while a tenant's database refuses writes and its readings wait in the buffer, by tenant.",
    ),
    (
        "vigie_registry_reload_failures_total",
        "counter",
        "Registry reloads (SIGHUP) that failed; the previous registry stayed in force.",
    ),
    (
        "vigie_readings_stored_total",
        "counter",
        "Readings written to the database (or files), by tenant.",
    ),
    (
        "vigie_write_errors_total",
        "counter",
        "Failed database writes, by class (split, config, retry).",
    ),
    (
        "vigie_batch_lines",
        "histogram",
        "Lines per database write.",
    ),
    (
        "vigie_write_duration_seconds",
        "histogram",
        "Database write latency.",
    ),
    (
        "vigie_sink_healthy",
        "gauge",
        "1 when the last database write succeeded.",
    ),
    (
        "vigie_mqtt_connected",
        "gauge",
        "1 while connected to the broker with the uplink subscription granted.",
    ),
    (
        "vigie_mqtt_connects_total",
        "counter",
        "Successful broker connections (first and reconnects).",
    ),
    (
        "vigie_device_acks_total",
        "counter",
        "Acknowledgements published to devices (SPEC §12), one per device per commit.",
    ),
    (
        "vigie_device_acks_waiting",
        "gauge",
        "Device acknowledgements waiting for room in the broker client's queue.",
    ),
    (
        "vigie_device_last_seen_timestamp_seconds",
        "gauge",
        "Measurement time of the device's latest reading.",
    ),
    (
        "vigie_device_battery_volts",
        "gauge",
        "Latest battery voltage reported.",
    ),
    (
        "vigie_device_missing_frames_total",
        "counter",
        "Frame-counter gaps: frames a device sent that never arrived.",
    ),
    (
        "vigie_device_dropped_readings",
        "gauge",
        "Readings the device's own queue dropped since its boot.",
    ),
    (
        "vigie_device_online",
        "gauge",
        "Retained status of the device (1 online, 0 offline).",
    ),
];

const BATCH_BUCKETS: &[f64] = &[1.0, 10.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone)]
struct Histogram {
    buckets: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(buckets: &'static [f64]) -> Self {
        Self {
            buckets,
            counts: vec![0; buckets.len()],
            sum: 0.0,
            count: 0,
        }
    }
    fn observe(&mut self, v: f64) {
        for (b, c) in self.buckets.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Inner {
    values: BTreeMap<(&'static str, Labels), f64>,
    histograms: BTreeMap<&'static str, Histogram>,
}

/// The gateway's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Adds to a counter.
    pub fn add(&self, name: &'static str, labels: Labels, v: f64) {
        self.with(|i| *i.values.entry((name, labels)).or_default() += v);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, labels: Labels, v: f64) {
        self.with(|i| {
            i.values.insert((name, labels), v);
        });
    }

    /// Records a histogram observation.
    pub fn observe(&self, name: &'static str, v: f64) {
        let buckets = if name == "vigie_batch_lines" {
            BATCH_BUCKETS
        } else {
            LATENCY_BUCKETS
        };
        self.with(|i| {
            i.histograms
                .entry(name)
                .or_insert_with(|| Histogram::new(buckets))
                .observe(v)
        });
    }

    /// Sum of a metric over all its label sets.
    pub fn total(&self, name: &str) -> f64 {
        self.with(|i| {
            i.values
                .iter()
                .filter(|((n, _), _)| *n == name)
                .map(|(_, v)| v)
                .sum()
        })
    }

    /// Value of one series.
    pub fn get(&self, name: &'static str, labels: &Labels) -> Option<f64> {
        self.with(|i| i.values.get(&(name, labels.clone())).copied())
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.with(|i| {
            for (name, kind, help) in CATALOGUE {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                if let Some(h) = i.histograms.get(name) {
                    for (b, c) in h.buckets.iter().zip(&h.counts) {
                        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
                    }
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
                    let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", h.sum, h.count);
                }
                for ((n, labels), v) in i.values.range((*name, Vec::new())..) {
                    if n != name {
                        break;
                    }
                    out.push_str(name);
                    if !labels.is_empty() {
                        out.push('{');
                        for (k, (key, value)) in labels.iter().enumerate() {
                            let sep = if k == 0 { "" } else { "," };
                            let value = value
                                .replace('\\', "\\\\")
                                .replace('"', "\\\"")
                                .replace('\n', "\\n");
                            let _ = write!(out, "{sep}{key}=\"{value}\"");
                        }
                        out.push('}');
                    }
                    let _ = writeln!(out, " {v}");
                }
            }
        });
        out
    }
}

/// Labels helper: `labels(&[("tenant", "lyon")])`.
pub fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `"vigie_…"` name the crate's code uses is in the catalogue (an unlisted name
    /// would be counted and never rendered).
    #[test]
    fn every_metric_name_in_the_code_is_catalogued() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src];
        let mut missing = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for part in text.split("\"vigie_").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let name = format!("vigie_{name}");
                let known = CATALOGUE.iter().any(|(n, _, _)| *n == name);
                if !known && !name.ends_with('_') && part[name.len() - 6..].starts_with('"') {
                    missing.push(format!("{} in {}", name, path.display()));
                }
            }
        }
        assert!(missing.is_empty(), "not in the catalogue: {missing:?}");
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.add(
            "vigie_frames_rejected_total",
            labels(&[("reason", "authentication")]),
            2.0,
        );
        m.add(
            "vigie_frames_rejected_total",
            labels(&[("reason", "topic")]),
            1.0,
        );
        m.set("vigie_buffer_full", vec![], 1.0);
        m.observe("vigie_write_duration_seconds", 0.02);
        let text = m.render();
        assert!(
            text.contains("vigie_frames_rejected_total{reason=\"authentication\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("vigie_buffer_full 1\n"));
        assert!(text.contains("vigie_write_duration_seconds_bucket{le=\"0.025\"} 1\n"));
        assert!(text.contains("vigie_write_duration_seconds_bucket{le=\"0.01\"} 0\n"));
        assert!(text.contains("# TYPE vigie_batch_lines histogram"));
        assert_eq!(m.total("vigie_frames_rejected_total"), 3.0);
    }
}
