//! The exposition: names, zeroed labels, typed counts.

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
    let devices = Arc::new(Devices::default());
    devices.update(|b| b.status("lyon", "aq-1", true, 1));
    devices.update(|b| b.held("lyon", "bin-2", "future_timestamp", 5));
    devices.update(|b| b.rejected("lyon", "bin-2", "kind_mismatch", 6));
    let text = m.render(&devices);
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
        "vigie_device_condition{tenant=\"lyon\",device=\"bin-2\",reason=\"held\"} 1",
        "vigie_device_condition{tenant=\"lyon\",device=\"bin-2\",reason=\"refused\"} 1",
        "vigie_build_info{version=\"",
        "process_resident_memory_bytes ",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
    assert_eq!(m.counts().frames_rejected, 2);
    assert_eq!(m.rejected(Reason::Authentication), 2);
}

#[test]
fn every_metric_the_shipped_alerting_rules_use_is_exposed() {
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/prometheus/vigie-alerts.yml"
    ))
    .unwrap();
    let m = Metrics::new();
    m.know_tenants(["lyon"]);
    let text = m.render(&Arc::new(Devices::default()));
    let mut names: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("vigie_"))
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        // OpenMetrics names a counter's family without its `_total`.
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{name} (deploy/prometheus/vigie-alerts.yml) is not exposed:\n{text}"
        );
    }
}
