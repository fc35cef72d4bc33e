//! A database that keeps less than the gateway accepts never deletes an acknowledged
//! reading (SPEC §13.3, issue: "a database that keeps less than we accept").
//!
//! Two gateway processes, each in its own group so each gets every frame: one writes to
//! InfluxDB 1.x whose commune database was made outside Vigie with a 30-day retention
//! policy, the other to VictoriaMetrics as Debian runs it (no `-retentionPeriod`: one
//! month, and a 204 for every sample it drops). A device sends 20 frames of readings 40
//! days old and 20 of readings an hour old. Each gateway asked its database at start and
//! judges by 29 days: the old frames are refused (`stale_timestamp`, kept in the
//! quarantine), never acknowledged as stored and then discarded. Counting per database:
//! readings acknowledged as durably buffered (`vigie_readings_accepted_total`) against
//! the points the database holds, field by field.
#![allow(clippy::unwrap_used)]

use gateway::fleet::registry::DeviceKind;
use std::collections::BTreeSet;
use std::time::Duration;
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{self, GatewayProcess, GatewaySettings, text};
use vigie_tests::servers::victoria_metrics_debian_default;
use vigie_tests::{influxdb, mosquitto, now_s, readback, wait_for};

const FRAMES: u32 = 20;
const DAY: u32 = 86_400;

/// An administration statement on InfluxDB that must succeed.
async fn influx_admin(influx: std::net::SocketAddr, statement: &str) {
    let answer = readback::influx_query(influx, "", statement).await;
    assert!(answer["results"][0]["error"].is_null(), "{answer}");
}

/// One air-quality device `lyon/aq-1`, Mosquitto with its accounts, and a gateway process
/// writing to `influx` that trusts its clock (so a stale reading is refused, final).
struct OneDevice {
    dir: tempfile::TempDir,
    aq: Device,
    broker: vigie_tests::Server,
    gw: GatewayProcess,
}

fn one_device(influx: std::net::SocketAddr) -> OneDevice {
    let dir = tempfile::tempdir().unwrap();
    let aq = Device::new("lyon", "aq-1", DeviceKind::AirQuality);
    fleet::write_registry(&dir.path().join("devices.toml"), std::slice::from_ref(&aq));
    let broker = mosquitto(dir.path());
    let gw = GatewayProcess::start(
        dir.path(),
        &GatewaySettings {
            extra_toml: "[validation]\nhost_clock = \"always\"\n".into(),
            ..GatewaySettings::new("gw-v1", broker.addr, Some(influx))
        },
    );
    OneDevice {
        dir,
        aq,
        broker,
        gw,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_keeping_less_than_max_age_lose_no_acknowledged_reading() {
    let influx = influxdb();
    let vm = victoria_metrics_debian_default();
    // Made by hand, as an operator might have: a month's policy.
    influx_admin(
        influx.addr,
        "CREATE DATABASE vigie_lyon WITH DURATION 30d NAME \"month\"",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let aq = Device::new("lyon", "aq-1", DeviceKind::AirQuality);
    fleet::write_registry(&dir.path().join("devices.toml"), std::slice::from_ref(&aq));
    let broker = mosquitto(dir.path());
    // The clock trusted, so stale is final (refused), not held.
    let clock = "[validation]\nhost_clock = \"always\"\n".to_string();
    let to_influx = GatewayProcess::start(
        dir.path(),
        &GatewaySettings {
            extra_toml: clock.clone(),
            ..GatewaySettings::new("gw-v1", broker.addr, Some(influx.addr))
        },
    );
    let to_vm = GatewayProcess::start(
        dir.path(),
        &GatewaySettings {
            extra_toml: clock,
            victoria: true,
            ..GatewaySettings::new("gw-v2", broker.addr, Some(vm.addr))
        },
    );

    let now = now_s();
    let mut messages = Vec::new();
    let mut recent = BTreeSet::new();
    for i in 0..2 * FRAMES {
        let time = if i < FRAMES {
            now - 40 * DAY + i * 60
        } else {
            now - 3_600 + i * 60
        };
        if i >= FRAMES {
            recent.insert(u64::from(time));
        }
        messages.push((aq.topic(), aq.frame(&[aq.reading(i, time)], i + 1)));
    }
    fleet::publish_all(broker.addr, &messages).await;

    let gateways = [
        ("InfluxDB 30-day policy", &to_influx),
        ("VictoriaMetrics, Debian default", &to_vm),
    ];
    for (_, gw) in gateways {
        wait_for("every frame judged", Duration::from_secs(30), async || {
            gw.metric("vigie_readings_accepted_total").unwrap_or(0.0)
                + gw.metric("vigie_frames_rejected_total").unwrap_or(0.0)
                >= f64::from(2 * FRAMES)
        })
        .await;
    }
    // What each database holds, pm25 point by point, once the sink is done.
    let held = async |victoria: bool| -> BTreeSet<u64> {
        let points = if victoria {
            readback::victoria_points(vm.addr, &["air_quality"]).await
        } else {
            readback::influx_points(influx.addr, "vigie_lyon", &["air_quality"]).await
        };
        points
            .iter()
            .filter(|p| p.contains("|pm25|"))
            .map(|p| p.split('|').nth(3).unwrap().parse().unwrap())
            .collect()
    };
    // Counted for both before any assertion, so a failure shows both figures.
    let mut outcomes = Vec::new();
    for (name, gw) in gateways {
        let victoria = std::ptr::eq(gw, &to_vm);
        let accepted = gw.metric("vigie_readings_accepted_total").unwrap();
        // Counted after at most 15 s whatever happens, so a loss is a figure.
        let _ = tokio::time::timeout(
            Duration::from_secs(15),
            wait_for(
                "the acknowledged readings written",
                Duration::from_secs(30),
                async || held(victoria).await.len() as f64 >= accepted,
            ),
        )
        .await;
        let stored = held(victoria).await;
        let lost = accepted as usize - stored.len().min(accepted as usize);
        let refused = gw
            .metric("vigie_frames_rejected_total{reason=\"stale_timestamp\"}")
            .unwrap();
        let (entries, _) = gateway::store::quarantine::read_all(&dir.path().join(format!(
            "data-{}/quarantine",
            if victoria { "gw-v2" } else { "gw-v1" }
        )))
        .unwrap();
        let kept = entries
            .iter()
            .filter(|e| e.reason == "stale_timestamp")
            .count();
        eprintln!(
            "{name}: sent={} acknowledged_stored={accepted} in_database={} lost={lost} \
             refused_stale={refused} in_quarantine={kept}",
            2 * FRAMES,
            stored.len()
        );
        // check-config --connect names the short retention too.
        let check = process::cli(&["check-config", "--connect", gw.config.to_str().unwrap()]);
        outcomes.push((name, lost, stored, refused, kept, gw.log(), check));
    }
    for (name, lost, stored, refused, kept, log, check) in outcomes {
        assert_eq!(
            lost, 0,
            "{name}: acknowledged as stored, not in the database"
        );
        assert_eq!(stored, recent, "{name}: exactly the recent readings");
        assert_eq!(refused, f64::from(FRAMES), "{name}");
        assert_eq!(kept, FRAMES as usize, "{name}: every refused frame kept");
        assert!(
            log.contains("keeps 30 days") && log.contains("older than 29 days are refused"),
            "{name}: said at start:\n{log}"
        );
        assert!(!check.status.success(), "{}", text(&check));
        assert!(text(&check).contains("keeps 30 days"), "{}", text(&check));
    }
}

/// A database that drops a whole batch for its retention (a device's old backlog,
/// accepted before the gateway could know the database's policy) costs one quarantine
/// entry and one log line per batch, not a split down to each line (before: 2,000 ERROR
/// lines and 3,955 split writes for 2,000 readings). Every such reading is kept in the
/// quarantine, never evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_dropped_for_retention_is_quarantined_whole_not_split() {
    let influx = influxdb();
    // Started before the commune's database exists: its retention cannot be asked.
    let OneDevice {
        dir,
        aq,
        broker,
        gw,
        ..
    } = one_device(influx.addr);
    influx_admin(
        influx.addr,
        "CREATE DATABASE vigie_lyon WITH DURATION 30d NAME \"month\"",
    )
    .await;
    const OLD: u32 = 200;
    let now = now_s();
    let messages: Vec<_> = (0..OLD)
        .map(|i| {
            (
                aq.topic(),
                aq.frame(&[aq.reading(i, now - 40 * DAY + i * 60)], i + 1),
            )
        })
        .collect();
    fleet::publish_all(broker.addr, &messages).await;
    let refused = || {
        gw.metric("vigie_frames_rejected_total{reason=\"database_rejected\"}")
            .unwrap_or(0.0)
    };
    wait_for(
        "every old reading quarantined",
        Duration::from_secs(60),
        async || refused() >= f64::from(OLD),
    )
    .await;
    let (entries, _) =
        gateway::store::quarantine::read_all(&dir.path().join("data-gw-v1/quarantine-db")).unwrap();
    let lines: usize = entries
        .iter()
        .map(|e| {
            String::from_utf8(hex::decode(&e.payload).unwrap())
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    let splits = gw
        .metric("vigie_write_errors_total{class=\"split\"}")
        .unwrap();
    let logged = gw.log().matches("database refused lines").count();
    eprintln!(
        "dropped for retention: {OLD} readings -> {} quarantine entries holding {lines} lines \
         (all acknowledged: {}), {splits} refused writes, {logged} log lines",
        entries.len(),
        entries.iter().all(|e| e.acknowledged),
    );
    assert_eq!(lines, OLD as usize, "every reading kept");
    assert!(entries.iter().all(|e| e.acknowledged));
    assert!(
        entries.len() <= 10 && splits <= 10.0,
        "not split line by line"
    );
    assert!(logged <= 10);
}

/// A retention shortened while the gateway runs is found at the next registry reload
/// (SIGHUP), and the age bound follows it: readings the database would now discard are
/// refused before any acknowledgement says they are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_shortened_while_running_is_found_at_reload() {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let OneDevice {
        dir: _dir,
        aq,
        broker,
        gw,
    } = one_device(influx.addr);
    // An operator shortens the commune's policy, then reloads the registry.
    influx_admin(
        influx.addr,
        "ALTER RETENTION POLICY autogen ON vigie_lyon DURATION 30d SHARD DURATION 1d",
    )
    .await;
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for(
        "the reload's retention line",
        Duration::from_secs(20),
        async || gw.log().contains("keeps 30 days"),
    )
    .await;
    let now = now_s();
    let messages: Vec<_> = (0..FRAMES)
        .map(|i| {
            let time = if i % 2 == 0 {
                now - 40 * DAY
            } else {
                now - 3_600
            } + i * 60;
            (aq.topic(), aq.frame(&[aq.reading(i, time)], i + 1))
        })
        .collect();
    fleet::publish_all(broker.addr, &messages).await;
    wait_for("every frame judged", Duration::from_secs(30), async || {
        gw.metric("vigie_readings_accepted_total").unwrap_or(0.0)
            + gw.metric("vigie_frames_rejected_total").unwrap_or(0.0)
            >= f64::from(FRAMES)
    })
    .await;
    let accepted = gw.metric("vigie_readings_accepted_total").unwrap();
    let held = async || {
        readback::influx_points(influx.addr, "vigie_lyon", &["air_quality"])
            .await
            .iter()
            .filter(|p| p.contains("|pm25|"))
            .count()
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(15),
        wait_for(
            "the accepted readings written",
            Duration::from_secs(30),
            async || held().await as f64 >= accepted,
        ),
    )
    .await;
    let stored = held().await;
    let refused = gw
        .metric("vigie_frames_rejected_total{reason=\"stale_timestamp\"}")
        .unwrap_or(0.0);
    let lost = (accepted as usize).saturating_sub(stored);
    eprintln!(
        "retention shortened at run time: sent={FRAMES} acknowledged_stored={accepted} \
         in_database={stored} lost={lost} refused_stale={refused}"
    );
    assert_eq!(lost, 0, "acknowledged as stored, not in the database");
    assert_eq!(stored, FRAMES as usize / 2, "the recent half");
    assert_eq!(refused, f64::from(FRAMES / 2));
}

/// A database that answers 204 and then drops rows for a cause no start-up check sees:
/// VictoriaMetrics at its hourly series limit. The sink reads VictoriaMetrics' own
/// counters of dropped rows after its writes: what they do not vouch for goes to the
/// database quarantine (`database_discarded`), so every acknowledged reading is in the
/// database or kept, field for field, and none is counted as stored unless confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_victoria_metrics_drops_after_a_204_are_kept() {
    const DEVICES: usize = 4;
    let vm = vigie_tests::servers::victoria_metrics_series_limit(4);
    let dir = tempfile::tempdir().unwrap();
    let devices: Vec<Device> = (0..DEVICES)
        .map(|i| Device::new("lyon", &format!("aq-{i}"), DeviceKind::AirQuality))
        .collect();
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let broker = mosquitto(dir.path());
    let gw = GatewayProcess::start(
        dir.path(),
        &GatewaySettings {
            victoria: true,
            ..GatewaySettings::new("gw-v2", broker.addr, Some(vm.addr))
        },
    );
    let load = vigie_tests::scenario::load(&devices, FRAMES, now_s() - 3_600);
    fleet::publish_all(broker.addr, &load.messages).await;
    let expected = load.expected.len();
    let quarantined = || -> BTreeSet<String> {
        let dir = dir.path().join("data-gw-v2/quarantine-db");
        let (entries, _) = gateway::store::quarantine::read_all(&dir).unwrap_or_default();
        entries
            .iter()
            .filter(|e| e.reason == "database_discarded")
            .flat_map(|e| {
                let text = String::from_utf8(hex::decode(&e.payload).unwrap()).unwrap();
                text.lines().filter_map(pm25_key).collect::<Vec<_>>()
            })
            .collect()
    };
    let in_vm = async || -> BTreeSet<String> {
        readback::victoria_points(vm.addr, &["air_quality"])
            .await
            .into_iter()
            .filter(|p| p.contains("|pm25|"))
            .collect()
    };
    // Every reading confirmed as stored or kept; counted after 40 s whatever happens.
    let _ = tokio::time::timeout(
        Duration::from_secs(40),
        wait_for(
            "every reading accounted for",
            Duration::from_secs(60),
            async || {
                let held: BTreeSet<String> = in_vm().await.union(&quarantined()).cloned().collect();
                held.intersection(&load.expected).count() == expected
            },
        ),
    )
    .await;
    let (stored, kept) = (in_vm().await, quarantined());
    let held: BTreeSet<String> = stored.union(&kept).cloned().collect();
    let lost = load.expected.difference(&held).count();
    let counted = gw.metric("vigie_readings_stored_total").unwrap_or(0.0);
    let confirmed_in_vm = stored.intersection(&load.expected).count();
    eprintln!(
        "VictoriaMetrics at its series limit: sent={expected} in_database={confirmed_in_vm} \
         kept_in_quarantine={} lost={lost}; counted as stored {counted}",
        kept.len()
    );
    assert_eq!(
        lost, 0,
        "acknowledged, dropped by the database, and not kept"
    );
    assert!(
        !kept.is_empty(),
        "the series limit dropped rows (the fault happened)"
    );
    assert!(
        gw.log()
            .contains("VictoriaMetrics dropped rows it had accepted"),
        "said in the log"
    );
    let (_, readyz) = gw.readyz().unwrap();
    assert!(readyz.contains("VictoriaMetrics dropped"), "{readyz}");
    assert!(
        counted <= confirmed_in_vm as f64,
        "counted as stored only what the database holds: {counted} > {confirmed_in_vm}"
    );
}

/// The `pm25` key of one line-protocol line of `lyon`'s air quality (as
/// `readback::key` writes it), if it has one.
fn pm25_key(line: &str) -> Option<String> {
    let (head, rest) = line.split_once(' ')?;
    let (fields, ms) = rest.rsplit_once(' ')?;
    let device = head.split(',').find_map(|t| t.strip_prefix("device="))?;
    let pm25 = fields.split(',').find_map(|f| f.strip_prefix("pm25="))?;
    let time = ms.parse::<u64>().ok()? / 1000;
    Some(readback::key(
        "lyon",
        "air_quality",
        device,
        time,
        "pm25",
        pm25.parse().ok()?,
    ))
}
