//! The gateway's metrics: typed fields of one `prometheus-client` registry, each registered
//! here with its name and help, so renaming one is a one-line, compile-checked change.
//! Label values known at start (rejection reasons, write error classes, the registry's
//! tenants) are created at zero so a rate over them exists before the first event.
//! The metrics only count: per-device gauges are rendered at each scrape from the device
//! state ([`crate::observe::Traffic`]), which is the one record of them (`collect.rs`);
//! `vigie_build_info` and the standard `process_*` metrics come with them. Tests and the
//! demo read the counts through [`Metrics::counts`], never by parsing the exposition.

pub mod alerts;
mod collect;

use crate::observe::devices::Devices;
use collect::{DeviceGauges, Process};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
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

/// A metric per tenant: the family `/metrics` renders, and the tenants it holds, so its
/// total can be read without parsing the exposition.
#[derive(Debug, Default)]
pub struct PerTenant<M> {
    family: Family<TenantLabel, M>,
    tenants: Mutex<BTreeSet<String>>,
}

impl<M: Clone + Default + prometheus_client::metrics::TypedMetric> PerTenant<M>
where
    Family<TenantLabel, M>: Clone,
{
    /// The tenant's metric (created at zero if new); it shares its value with the family.
    pub fn of(&self, tenant: &str) -> M {
        let mut known = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if !known.contains(tenant) {
            known.insert(tenant.to_string());
        }
        self.family.get_or_create_owned(&TenantLabel::of(tenant))
    }

    fn known(&self) -> Vec<String> {
        let known = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        known.iter().cloned().collect()
    }
}

impl PerTenant<Counter> {
    /// The sum over every tenant.
    pub fn total(&self) -> u64 {
        self.known().iter().map(|t| self.get(t)).sum()
    }

    /// One tenant's count (0 if it has none).
    pub fn get(&self, tenant: &str) -> u64 {
        self.family
            .get(&TenantLabel::of(tenant))
            .map_or(0, |c| c.get())
    }
}

impl PerTenant<Gauge> {
    /// One tenant's value (0 if it has none).
    pub fn get(&self, tenant: &str) -> i64 {
        self.family
            .get(&TenantLabel::of(tenant))
            .map_or(0, |g| g.get())
    }
}

/// What the gateway counted so far, read from the typed metrics: for the demo's progress
/// line and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// `vigie_messages_received_total`.
    pub messages_received: u64,
    /// `vigie_frames_accepted_total`.
    pub frames_accepted: u64,
    /// `vigie_frames_duplicate_total`.
    pub frames_duplicate: u64,
    /// `vigie_frames_rejected_total`, every reason.
    pub frames_rejected: u64,
    /// `vigie_frames_held_total`, every reason.
    pub frames_held: u64,
    /// `vigie_readings_accepted_total`, every tenant.
    pub readings_accepted: u64,
    /// `vigie_readings_stored_total`, every tenant.
    pub readings_stored: u64,
    /// `vigie_quarantine_evicted_total`.
    pub quarantine_evicted: u64,
    /// `vigie_write_errors_total`, every class.
    pub write_errors: u64,
    /// `vigie_mqtt_connected`.
    pub mqtt_connected: bool,
    /// `vigie_mqtt_connects_total`.
    pub mqtt_connects: u64,
    /// `vigie_device_acks_total`.
    pub device_acks: u64,
    /// `vigie_device_acks_refused_total`.
    pub device_acks_refused: u64,
    /// `vigie_buffer_pending_bytes`.
    pub buffer_pending_bytes: u64,
    /// `vigie_registry_devices`.
    pub registry_devices: u64,
}

/// Every metric of the gateway. Counters are rendered with the `_total` suffix.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `vigie_registry_devices`.
    pub registry_devices: Gauge,
    /// `vigie_messages_received_total`.
    pub messages_received: Counter,
    /// `vigie_frames_accepted_total`.
    pub frames_accepted: Counter,
    /// `vigie_readings_accepted_total{tenant}`.
    pub readings_accepted: PerTenant<Counter>,
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
    /// `vigie_group_unreachable`.
    pub group_unreachable: Gauge,
    /// `vigie_group_conflicts_total`.
    pub group_conflicts: Counter,
    /// `vigie_buffer_torn_tails_total`.
    pub buffer_torn_tails: Counter,
    /// `vigie_buffer_corrupt_records_total`.
    pub buffer_corrupt_records: Counter,
    /// `vigie_tenant_behind{tenant}`.
    pub tenant_behind: PerTenant<Gauge>,
    /// `vigie_registry_reload_failures_total`.
    pub registry_reload_failures: Counter,
    /// `vigie_readings_stored_total{tenant}`.
    pub readings_stored: PerTenant<Counter>,
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
    /// `vigie_alert_*`, `vigie_alerts_active`.
    pub alerts: alerts::AlertMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered, at zero.
    pub fn new() -> Self {
        let m = Self::zeroed();
        let mut root = Registry::default();
        root.register_collector(Box::new(Process));
        let r = root.sub_registry_with_prefix("vigie");
        r.register(
            "build",
            "Version of the running gateway.",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        m.register_gauges(r);
        m.register_counters(r);
        m.register_link_counters(r);
        m.register_group(r);
        m.register_families(r);
        m.alerts.register(r);
        m.zero_labels();
        Self {
            registry: root,
            ..m
        }
    }

    fn zeroed() -> Self {
        Self {
            registry: Registry::default(),
            registry_devices: Default::default(),
            messages_received: Default::default(),
            frames_accepted: Default::default(),
            readings_accepted: Default::default(),
            readings_flagged: Default::default(),
            frames_duplicate: Default::default(),
            frames_rejected: Default::default(),
            frames_held: Default::default(),
            host_clock_synchronised: Default::default(),
            intake_bytes: Default::default(),
            qos0_dropped: Default::default(),
            quarantine_evicted: Default::default(),
            buffer_bytes: Default::default(),
            buffer_pending_bytes: Default::default(),
            buffer_full: Default::default(),
            buffer_recovered_records: Default::default(),
            store_failing: Default::default(),
            group_unreachable: Default::default(),
            group_conflicts: Default::default(),
            buffer_torn_tails: Default::default(),
            buffer_corrupt_records: Default::default(),
            tenant_behind: Default::default(),
            registry_reload_failures: Default::default(),
            readings_stored: Default::default(),
            write_errors: Default::default(),
            batch_lines: Histogram::new(BATCH_BUCKETS),
            write_duration: Histogram::new(LATENCY_BUCKETS),
            sink_healthy: Default::default(),
            mqtt_connected: Default::default(),
            mqtt_connects: Default::default(),
            device_acks: Default::default(),
            device_acks_refused: Default::default(),
            device_acks_waiting: Default::default(),
            device_acks_superseded: Default::default(),
            alerts: Default::default(),
        }
    }

    fn register_gauges(&self, r: &mut Registry) {
        let gauges: [(&str, &str, &Gauge); 11] = [
            (
                "registry_devices",
                "Devices in the loaded registry.",
                &self.registry_devices,
            ),
            (
                "buffer_bytes",
                "Bytes of the durable buffer on disk.",
                &self.buffer_bytes,
            ),
            (
                "buffer_pending_bytes",
                "Buffered bytes not yet written to the database.",
                &self.buffer_pending_bytes,
            ),
            (
                "buffer_full",
                "1 while the buffer is full and the gateway withholds acknowledgements.",
                &self.buffer_full,
            ),
            (
                "buffer_recovered_records",
                "Records found in the buffer at start-up.",
                &self.buffer_recovered_records,
            ),
            (
                "store_failing",
                "1 while the disk refuses writes (full, I/O error) and acknowledgements are withheld.",
                &self.store_failing,
            ),
            (
                "sink_healthy",
                "1 when the last database write succeeded.",
                &self.sink_healthy,
            ),
            (
                "mqtt_connected",
                "1 while connected to the broker with the uplink subscription granted.",
                &self.mqtt_connected,
            ),
            (
                "device_acks_waiting",
                "Device acknowledgements waiting for room in the broker client's queue.",
                &self.device_acks_waiting,
            ),
            (
                "intake_bytes",
                "Bytes of received messages in memory, not yet committed (queue, channel, batch).",
                &self.intake_bytes,
            ),
            (
                "host_clock_synchronised",
                "1 while the host clock is known to be synchronised (clock.synchronised); at 0, readings older than validation.max_age are held, not refused.",
                &self.host_clock_synchronised,
            ),
        ];
        for (name, help, gauge) in gauges {
            r.register(name, help, gauge.clone());
        }
    }

    fn register_counters(&self, r: &mut Registry) {
        let counters: [(&str, &str, &Counter); 8] = [
            (
                "messages_received",
                "MQTT messages received on uplink and status topics.",
                &self.messages_received,
            ),
            (
                "mqtt_qos0_dropped",
                "QoS 0 messages dropped while the received messages in memory passed their bound (their devices resend them).",
                &self.qos0_dropped,
            ),
            (
                "frames_accepted",
                "Frames verified, validated and durably buffered.",
                &self.frames_accepted,
            ),
            (
                "readings_flagged",
                "Readings stored with a quality flag.",
                &self.readings_flagged,
            ),
            (
                "frames_duplicate",
                "Frames already stored (redeliveries), acknowledged without storing.",
                &self.frames_duplicate,
            ),
            (
                "quarantine_evicted",
                "Oldest quarantine entries removed to stay under the size limit.",
                &self.quarantine_evicted,
            ),
            (
                "buffer_torn_tails",
                "Torn tails cut at start-up (writes a crash or a failed write left unfinished; never acknowledged).",
                &self.buffer_torn_tails,
            ),
            (
                "buffer_corrupt_records",
                "Corrupt buffer records skipped and quarantined (disk corruption).",
                &self.buffer_corrupt_records,
            ),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
    }

    /// A group of gateways' shared store (docs/OPERATIONS.md "Scaling out").
    fn register_group(&self, r: &mut Registry) {
        let help = "1 while the group's etcd does not answer (acknowledgements withheld).";
        r.register("group_unreachable", help, self.group_unreachable.clone());
        let help = "Commits judged again: another gateway committed one of their devices first.";
        r.register("group_conflicts", help, self.group_conflicts.clone());
    }

    /// The broker link's counters and the registry reloads'.
    fn register_link_counters(&self, r: &mut Registry) {
        let counters: [(&str, &str, &Counter); 5] = [
            (
                "registry_reload_failures",
                "Registry reloads (SIGHUP) that failed; the previous registry stayed in force.",
                &self.registry_reload_failures,
            ),
            (
                "mqtt_connects",
                "Successful broker connections (first and reconnects).",
                &self.mqtt_connects,
            ),
            (
                "device_acks",
                "Acknowledgements to devices the broker took (SPEC §12), one per device per commit.",
                &self.device_acks,
            ),
            (
                "device_acks_refused",
                "Acknowledgements to devices the broker refused (its PUBACK reason): the devices resend.",
                &self.device_acks_refused,
            ),
            (
                "device_acks_superseded",
                "Waiting device acknowledgements replaced by a newer one of the same device \
                 (the broker took them more slowly than the gateway committed); the device \
                 resends what only the older one covered.",
                &self.device_acks_superseded,
            ),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
    }

    fn register_families(&self, r: &mut Registry) {
        r.register(
            "readings_accepted",
            "Readings durably buffered, by tenant.",
            self.readings_accepted.family.clone(),
        );
        r.register(
            "frames_rejected",
            "Frames rejected and quarantined, by reason.",
            self.frames_rejected.clone(),
        );
        r.register(
            "frames_held",
            "Frames not acknowledged because a reading's time is outside the window (the device keeps and resends them), by reason.",
            self.frames_held.clone(),
        );
        r.register(
            "tenant_behind",
            "1 while a tenant's database refuses writes and its readings wait in the buffer, by tenant.",
            self.tenant_behind.family.clone(),
        );
        r.register(
            "readings_stored",
            "Readings the database holds (a 2xx from InfluxDB; VictoriaMetrics: once its counters of dropped rows vouch for the write), or the files, by tenant.",
            self.readings_stored.family.clone(),
        );
        r.register(
            "write_errors",
            "Failed database writes, by class (split, config, retry).",
            self.write_errors.clone(),
        );
        r.register(
            "batch_lines",
            "Lines per database write.",
            self.batch_lines.clone(),
        );
        r.register(
            "write_duration_seconds",
            "Database write latency.",
            self.write_duration.clone(),
        );
    }

    /// The label values known at start, at zero: a rate over them exists before the first
    /// event.
    fn zero_labels(&self) {
        for reason in Reason::CODES {
            let _ = self.frames_rejected.get_or_create(&ReasonLabel { reason });
        }
        for reason in [Reason::FutureTimestamp, Reason::StaleTimestamp] {
            let _ = self.frames_held.get_or_create(&ReasonLabel {
                reason: reason.code(),
            });
        }
        for class in WRITE_ERROR_CLASSES {
            let _ = self.write_errors.get_or_create(&ClassLabel { class });
        }
    }

    /// Creates the per-tenant series of `tenants` at zero.
    pub fn know_tenants<'a>(&self, tenants: impl IntoIterator<Item = &'a str>) {
        for tenant in tenants {
            let _ = self.readings_accepted.of(tenant);
            let _ = self.readings_stored.of(tenant);
            let _ = self.tenant_behind.of(tenant);
        }
    }

    /// Prometheus (OpenMetrics) text exposition, with the per-device gauges of `devices`.
    pub fn render(&self, devices: &Arc<Devices>) -> String {
        use prometheus_client::encoding::text;
        let mut per_device = Registry::default();
        per_device
            .sub_registry_with_prefix("vigie")
            .register_collector(Box::new(DeviceGauges(devices.clone())));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = text::encode_registry(&mut out, &self.registry);
        let _ = text::encode_registry(&mut out, &per_device);
        let _ = text::encode_eof(&mut out);
        out
    }

    /// Frames rejected for `reason`.
    pub fn rejected(&self, reason: Reason) -> u64 {
        let label = ReasonLabel {
            reason: reason.code(),
        };
        self.frames_rejected.get(&label).map_or(0, |c| c.get())
    }

    /// Everything counted so far.
    pub fn counts(&self) -> Counts {
        let by_reason = |f: &Family<ReasonLabel, Counter>| -> u64 {
            Reason::CODES
                .iter()
                .filter_map(|&reason| f.get(&ReasonLabel { reason }).map(|c| c.get()))
                .sum()
        };
        let classes = WRITE_ERROR_CLASSES
            .iter()
            .filter_map(|&class| {
                self.write_errors
                    .get(&ClassLabel { class })
                    .map(|c| c.get())
            })
            .sum();
        let count = |g: &Gauge| u64::try_from(g.get()).unwrap_or(0);
        Counts {
            messages_received: self.messages_received.get(),
            frames_accepted: self.frames_accepted.get(),
            frames_duplicate: self.frames_duplicate.get(),
            frames_rejected: by_reason(&self.frames_rejected),
            frames_held: by_reason(&self.frames_held),
            readings_accepted: self.readings_accepted.total(),
            readings_stored: self.readings_stored.total(),
            quarantine_evicted: self.quarantine_evicted.get(),
            write_errors: classes,
            mqtt_connected: self.mqtt_connected.get() > 0,
            mqtt_connects: self.mqtt_connects.get(),
            device_acks: self.device_acks.get(),
            device_acks_refused: self.device_acks_refused.get(),
            buffer_pending_bytes: count(&self.buffer_pending_bytes),
            registry_devices: count(&self.registry_devices),
        }
    }
}

/// A count as a gauge value (saturating).
pub fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Sum of the samples of `name` over its label sets in a text exposition (a gateway in
/// another process, read through its `/metrics`).
pub fn sum_samples(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests;
