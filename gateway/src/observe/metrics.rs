//! The gateway's metrics: typed fields of one `prometheus-client` registry, each registered
//! here with its name and help, so renaming one is a one-line, compile-checked change.
//! Label values known at start (rejection reasons, write error classes, the registry's
//! tenants) are created at zero so a rate over them exists before the first event.
//! Per-device gauges are not stored here: they are rendered at each scrape from the device
//! state ([`crate::observe::devices`]), which is the one record of them. `vigie_build_info` and the
//! standard `process_*` metrics come with them.

use crate::observe::devices::Devices;
use crate::web::feed::Feed;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use vigie_core::judge::reason::Reason;

/// A tenant label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    /// Tenant.
    pub tenant: String,
}

impl TenantLabel {
    /// The label for `tenant`.
    pub fn of(tenant: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
        }
    }
}

/// A rejection reason label (the codes of [`Reason::CODES`]).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Reason code.
    pub reason: &'static str,
}

/// A database write error class label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    /// `split`, `config` or `retry` ([`WRITE_ERROR_CLASSES`]).
    pub class: &'static str,
}

/// The classes of failed database writes.
pub const WRITE_ERROR_CLASSES: [&str; 3] = ["split", "config", "retry"];

const BATCH_BUCKETS: [f64; 8] = [1.0, 10.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric of the gateway. Counters are rendered with the `_total` suffix.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Device state, rendered as per-device gauges.
    pub devices: Arc<Devices>,
    /// The live feed of frames and verdicts (not rendered).
    pub feed: Feed,
    /// `vigie_registry_devices`.
    pub registry_devices: Gauge,
    /// `vigie_messages_received_total`.
    pub messages_received: Counter,
    /// `vigie_frames_accepted_total`.
    pub frames_accepted: Counter,
    /// `vigie_readings_accepted_total{tenant}`.
    pub readings_accepted: Family<TenantLabel, Counter>,
    /// `vigie_readings_flagged_total`.
    pub readings_flagged: Counter,
    /// `vigie_frames_duplicate_total`.
    pub frames_duplicate: Counter,
    /// `vigie_frames_rejected_total{reason}`.
    pub frames_rejected: Family<ReasonLabel, Counter>,
    /// `vigie_frames_held_total{reason}`.
    pub frames_held: Family<ReasonLabel, Counter>,
    /// `vigie_host_clock_synchronised`.
    pub host_clock_synchronised: Gauge,
    /// `vigie_intake_bytes`: received messages in memory, not yet committed.
    pub intake_bytes: Gauge,
    /// `vigie_mqtt_qos0_dropped_total`.
    pub qos0_dropped: Counter,
    /// `vigie_quarantine_evicted_total`.
    pub quarantine_evicted: Counter,
    /// `vigie_buffer_bytes`.
    pub buffer_bytes: Gauge,
    /// `vigie_buffer_pending_bytes`.
    pub buffer_pending_bytes: Gauge,
    /// `vigie_buffer_full`.
    pub buffer_full: Gauge,
    /// `vigie_buffer_recovered_records`.
    pub buffer_recovered_records: Gauge,
    /// `vigie_store_failing`.
    pub store_failing: Gauge,
    /// `vigie_buffer_torn_tails_total`.
    pub buffer_torn_tails: Counter,
    /// `vigie_buffer_corrupt_records_total`.
    pub buffer_corrupt_records: Counter,
    /// `vigie_tenant_behind{tenant}`.
    pub tenant_behind: Family<TenantLabel, Gauge>,
    /// `vigie_registry_reload_failures_total`.
    pub registry_reload_failures: Counter,
    /// `vigie_readings_stored_total{tenant}`.
    pub readings_stored: Family<TenantLabel, Counter>,
    /// `vigie_write_errors_total{class}`.
    pub write_errors: Family<ClassLabel, Counter>,
    /// `vigie_batch_lines`.
    pub batch_lines: Histogram,
    /// `vigie_write_duration_seconds`.
    pub write_duration: Histogram,
    /// `vigie_sink_healthy`.
    pub sink_healthy: Gauge,
    /// `vigie_mqtt_connected`.
    pub mqtt_connected: Gauge,
    /// `vigie_mqtt_connects_total`.
    pub mqtt_connects: Counter,
    /// `vigie_device_acks_total`.
    pub device_acks: Counter,
    /// `vigie_device_acks_refused_total`.
    pub device_acks_refused: Counter,
    /// `vigie_device_acks_waiting`.
    pub device_acks_waiting: Gauge,
    /// `vigie_device_acks_superseded_total`.
    pub device_acks_superseded: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered, at zero.
    pub fn new() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(Process));
        let devices = Arc::new(Devices::default());
        let m = Self {
            registry: Registry::default(),
            devices: devices.clone(),
            feed: Feed::default(),
            registry_devices: Gauge::default(),
            messages_received: Counter::default(),
            frames_accepted: Counter::default(),
            readings_accepted: Family::default(),
            readings_flagged: Counter::default(),
            frames_duplicate: Counter::default(),
            frames_rejected: Family::default(),
            frames_held: Family::default(),
            host_clock_synchronised: Gauge::default(),
            intake_bytes: Gauge::default(),
            qos0_dropped: Counter::default(),
            quarantine_evicted: Counter::default(),
            buffer_bytes: Gauge::default(),
            buffer_pending_bytes: Gauge::default(),
            buffer_full: Gauge::default(),
            buffer_recovered_records: Gauge::default(),
            store_failing: Gauge::default(),
            buffer_torn_tails: Counter::default(),
            buffer_corrupt_records: Counter::default(),
            tenant_behind: Family::default(),
            registry_reload_failures: Counter::default(),
            readings_stored: Family::default(),
            write_errors: Family::default(),
            batch_lines: Histogram::new(BATCH_BUCKETS),
            write_duration: Histogram::new(LATENCY_BUCKETS),
            sink_healthy: Gauge::default(),
            mqtt_connected: Gauge::default(),
            mqtt_connects: Counter::default(),
            device_acks: Counter::default(),
            device_acks_refused: Counter::default(),
            device_acks_waiting: Gauge::default(),
            device_acks_superseded: Counter::default(),
        };
        let r = root.sub_registry_with_prefix("vigie");
        r.register(
            "build",
            "Version of the running gateway.",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let gauges: [(&str, &str, &Gauge); 11] = [
            (
                "registry_devices",
                "Devices in the loaded registry.",
                &m.registry_devices,
            ),
            (
                "buffer_bytes",
                "Bytes of the durable buffer on disk.",
                &m.buffer_bytes,
            ),
            (
                "buffer_pending_bytes",
                "Buffered bytes not yet written to the database.",
                &m.buffer_pending_bytes,
            ),
            (
                "buffer_full",
                "1 while the buffer is full and the gateway withholds acknowledgements.",
                &m.buffer_full,
            ),
            (
                "buffer_recovered_records",
                "Records found in the buffer at start-up.",
                &m.buffer_recovered_records,
            ),
            (
                "store_failing",
                "1 while the disk refuses writes (full, I/O error) and acknowledgements are withheld.",
                &m.store_failing,
            ),
            (
                "sink_healthy",
                "1 when the last database write succeeded.",
                &m.sink_healthy,
            ),
            (
                "mqtt_connected",
                "1 while connected to the broker with the uplink subscription granted.",
                &m.mqtt_connected,
            ),
            (
                "device_acks_waiting",
                "Device acknowledgements waiting for room in the broker client's queue.",
                &m.device_acks_waiting,
            ),
            (
                "intake_bytes",
                "Bytes of received messages in memory, not yet committed (queue, channel, batch).",
                &m.intake_bytes,
            ),
            (
                "host_clock_synchronised",
                "1 while the host clock is known to be synchronised (clock.synchronised); at 0, readings older than validation.max_age are held, not refused.",
                &m.host_clock_synchronised,
            ),
        ];
        for (name, help, gauge) in gauges {
            r.register(name, help, gauge.clone());
        }
        let counters: [(&str, &str, &Counter); 13] = [
            (
                "messages_received",
                "MQTT messages received on uplink and status topics.",
                &m.messages_received,
            ),
            (
                "mqtt_qos0_dropped",
                "QoS 0 messages dropped while the received messages in memory passed their bound (their devices resend them).",
                &m.qos0_dropped,
            ),
            (
                "frames_accepted",
                "Frames verified, validated and durably buffered.",
                &m.frames_accepted,
            ),
            (
                "readings_flagged",
                "Readings stored with a quality flag.",
                &m.readings_flagged,
            ),
            (
                "frames_duplicate",
                "Frames already stored (redeliveries), acknowledged without storing.",
                &m.frames_duplicate,
            ),
            (
                "quarantine_evicted",
                "Oldest quarantine entries removed to stay under the size limit.",
                &m.quarantine_evicted,
            ),
            (
                "buffer_torn_tails",
                "Torn tails cut at start-up (writes a crash or a failed write left unfinished; never acknowledged).",
                &m.buffer_torn_tails,
            ),
            (
                "buffer_corrupt_records",
                "Corrupt buffer records skipped and quarantined (disk corruption).",
                &m.buffer_corrupt_records,
            ),
            (
                "registry_reload_failures",
                "Registry reloads (SIGHUP) that failed; the previous registry stayed in force.",
                &m.registry_reload_failures,
            ),
            (
                "mqtt_connects",
                "Successful broker connections (first and reconnects).",
                &m.mqtt_connects,
            ),
            (
                "device_acks",
                "Acknowledgements to devices the broker took (SPEC §12), one per device per commit.",
                &m.device_acks,
            ),
            (
                "device_acks_refused",
                "Acknowledgements to devices the broker refused (its PUBACK reason): the devices resend.",
                &m.device_acks_refused,
            ),
            (
                "device_acks_superseded",
                "Waiting device acknowledgements replaced by a newer one of the same device \
                 (the broker took them more slowly than the gateway committed); the device \
                 resends what only the older one covered.",
                &m.device_acks_superseded,
            ),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
        r.register(
            "readings_accepted",
            "Readings durably buffered, by tenant.",
            m.readings_accepted.clone(),
        );
        r.register(
            "frames_rejected",
            "Frames rejected and quarantined, by reason.",
            m.frames_rejected.clone(),
        );
        r.register(
            "frames_held",
            "Frames not acknowledged because a reading's time is outside the window (the device keeps and resends them), by reason.",
            m.frames_held.clone(),
        );
        r.register(
            "tenant_behind",
            "1 while a tenant's database refuses writes and its readings wait in the buffer, by tenant.",
            m.tenant_behind.clone(),
        );
        r.register(
            "readings_stored",
            "Readings the database holds (a 2xx from InfluxDB; VictoriaMetrics: once its counters of dropped rows vouch for the write), or the files, by tenant.",
            m.readings_stored.clone(),
        );
        r.register(
            "write_errors",
            "Failed database writes, by class (split, config, retry).",
            m.write_errors.clone(),
        );
        r.register(
            "batch_lines",
            "Lines per database write.",
            m.batch_lines.clone(),
        );
        r.register(
            "write_duration_seconds",
            "Database write latency.",
            m.write_duration.clone(),
        );
        r.register_collector(Box::new(DeviceGauges(devices)));
        for reason in Reason::CODES {
            let _ = m.frames_rejected.get_or_create(&ReasonLabel { reason });
        }
        for reason in [Reason::FutureTimestamp, Reason::StaleTimestamp] {
            let _ = m.frames_held.get_or_create(&ReasonLabel {
                reason: reason.code(),
            });
        }
        for class in WRITE_ERROR_CLASSES {
            let _ = m.write_errors.get_or_create(&ClassLabel { class });
        }
        Self {
            registry: root,
            ..m
        }
    }

    /// Creates the per-tenant series of `tenants` at zero.
    pub fn know_tenants<'a>(&self, tenants: impl IntoIterator<Item = &'a str>) {
        for tenant in tenants {
            let label = TenantLabel::of(tenant);
            let _ = self.readings_accepted.get_or_create(&label);
            let _ = self.readings_stored.get_or_create(&label);
            let _ = self.tenant_behind.get_or_create(&label);
        }
    }

    /// Prometheus (OpenMetrics) text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Sum of every sample of metric `name` (as rendered, e.g. `vigie_readings_stored_total`)
    /// over its label sets: for the demo's progress line and tests.
    pub fn total(&self, name: &str) -> f64 {
        sum_samples(&self.render(), name)
    }
}

/// A count as a gauge value (saturating).
pub fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Sum of the samples of `name` over its label sets in a text exposition.
pub fn sum_samples(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Per-device gauges, read from the device state at each scrape.
#[derive(Debug)]
struct DeviceGauges(Arc<Devices>);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabel {
    tenant: String,
    device: String,
}

impl Collector for DeviceGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.read(|book| {
            // Listed (sorted) once for the six families.
            let devices: Vec<_> = book.iter().collect();
            let labels = |d: &crate::observe::devices::DeviceState| DeviceLabel {
                tenant: d.tenant.clone(),
                device: d.device.clone(),
            };
            let gauge = |encoder: &mut DescriptorEncoder,
                         name: &str,
                         help: &str,
                         value: &dyn Fn(&crate::observe::devices::DeviceState) -> Option<f64>|
             -> Result<(), std::fmt::Error> {
                let example = ConstGauge::new(0.0);
                let mut family =
                    encoder.encode_descriptor(name, help, None, example.metric_type())?;
                for &d in &devices {
                    if let Some(v) = value(d) {
                        ConstGauge::new(v).encode(family.encode_family(&labels(d))?)?;
                    }
                }
                Ok(())
            };
            gauge(
                &mut encoder,
                "device_last_seen_timestamp_seconds",
                "Measurement time of the device's latest reading.",
                &|d| d.last_reading_s.map(|s| s as f64),
            )?;
            gauge(
                &mut encoder,
                "device_battery_volts",
                "Latest battery voltage reported.",
                &|d| d.battery_mv.map(|mv| mv as f64 / 1000.0),
            )?;
            gauge(
                &mut encoder,
                "device_dropped_readings",
                "Readings the device's own queue dropped since its boot.",
                &|d| d.dropped_readings.map(|n| n as f64),
            )?;
            gauge(
                &mut encoder,
                "device_online",
                "Retained status of the device (1 online, 0 offline).",
                &|d| d.online.map(|o| if o { 1.0 } else { 0.0 }),
            )?;
            gauge(
                &mut encoder,
                "device_missing_frames",
                "Frames the device sent that never arrived (counter gaps, less reboots' skipped reservations and frames that arrived late or were refused).",
                &|d| Some(d.missing_frames as f64),
            )?;
            gauge(
                &mut encoder,
                "device_counter_jumps",
                "Counter jumps of 2048 or more (not counted as missing frames).",
                &|d| Some(d.counter_jumps as f64),
            )?;
            Ok(())
        })
    }
}

/// The standard process metrics (Linux `/proc/self`), read at each scrape.
#[derive(Debug)]
struct Process;

impl Process {
    /// CPU seconds, resident bytes and start time (Unix s), from `/proc/self/stat`.
    fn read() -> Option<(f64, f64, f64)> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces), from field 3 on.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let num = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
        let ticks = 100.0; // USER_HZ on every Linux the package targets
        let page = 4096.0;
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let boot = crate::clock::Clock::system().now_ms() as f64 / 1000.0 - uptime;
        Some((
            (num(14)? + num(15)?) / ticks,
            num(24)? * page,
            boot + num(22)? / ticks,
        ))
    }
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((cpu, rss, start)) = Self::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(cpu);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            cpu.metric_type(),
        )?)?;
        let rss = ConstGauge::new(rss);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            None,
            rss.metric_type(),
        )?)?;
        let start = ConstGauge::new(start);
        start.encode(encoder.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds.",
            None,
            start.metric_type(),
        )?)?;
        let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as i64;
        let fds = ConstGauge::new(fds);
        fds.encode(encoder.encode_descriptor(
            "process_open_fds",
            "Number of open file descriptors.",
            None,
            fds.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_typed_metrics_with_their_names_and_zeroed_labels() {
        let m = Metrics::new();
        m.frames_rejected
            .get_or_create(&ReasonLabel {
                reason: "authentication",
            })
            .inc_by(2);
        m.buffer_full.set(1);
        m.write_duration.observe(0.02);
        m.know_tenants(["lyon"]);
        m.devices.update(|b| b.status("lyon", "aq-1", true, 1));
        let text = m.render();
        for line in [
            "vigie_frames_rejected_total{reason=\"authentication\"} 2\n",
            "vigie_frames_rejected_total{reason=\"topic\"} 0\n",
            "vigie_write_errors_total{class=\"retry\"} 0\n",
            "vigie_readings_stored_total{tenant=\"lyon\"} 0\n",
            "vigie_buffer_full 1\n",
            "vigie_write_duration_seconds_bucket{le=\"0.025\"} 1\n",
            "vigie_write_duration_seconds_bucket{le=\"0.01\"} 0\n",
            "# TYPE vigie_batch_lines histogram\n",
            "vigie_device_online{tenant=\"lyon\",device=\"aq-1\"} 1",
            "vigie_device_missing_frames{tenant=\"lyon\",device=\"aq-1\"} 0.0\n",
            "vigie_build_info{version=\"",
            "process_resident_memory_bytes ",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        assert_eq!(m.total("vigie_frames_rejected_total"), 2.0);
    }
}
