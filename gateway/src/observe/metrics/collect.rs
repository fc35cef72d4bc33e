//! What `/metrics` reads at each scrape rather than counting: the per-device gauges
//! (from the device state, their one record) and the standard `process_*` metrics.

use crate::observe::devices::{DeviceState, Devices};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::Arc;

/// Per-device gauges, read from the device state at each scrape.
#[derive(Debug)]
pub(super) struct DeviceGauges(pub(super) Arc<Devices>);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabel {
    tenant: String,
    device: String,
}

impl Collector for DeviceGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.read(|book| {
            // Listed (sorted) once for the seven families.
            let devices: Vec<_> = book.iter().collect();
            let labels = |d: &DeviceState| DeviceLabel {
                tenant: d.tenant.clone(),
                device: d.device.clone(),
            };
            let gauge = |encoder: &mut DescriptorEncoder,
                         name: &str,
                         help: &str,
                         value: &dyn Fn(&DeviceState) -> Option<f64>|
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
            conditions(&mut encoder, &devices)
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabel {
    tenant: String,
    device: String,
    reason: &'static str,
}

/// `vigie_device_condition{tenant,device,reason} 1` for each reason the device's own
/// traffic gives it (`vigie_core::condition::of_state`), once per reason.
fn conditions(
    encoder: &mut DescriptorEncoder,
    devices: &[&DeviceState],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "device_condition",
        "1 for each thing the device's traffic says is wrong (reason: fire_suspected, battery, sensor_fault, bin_full, tilted, lid_open, refused, held).",
        None,
        ConstGauge::new(1.0).metric_type(),
    )?;
    for d in devices {
        let mut seen = Vec::new();
        for why in vigie_core::condition::of_state(d) {
            let reason = why.code();
            if !seen.contains(&reason) {
                seen.push(reason);
                let label = ConditionLabel {
                    tenant: d.tenant.clone(),
                    device: d.device.clone(),
                    reason,
                };
                ConstGauge::new(1.0).encode(family.encode_family(&label)?)?;
            }
        }
    }
    Ok(())
}

/// The standard process metrics (Linux `/proc/self`), read at each scrape.
#[derive(Debug)]
pub(super) struct Process;

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
