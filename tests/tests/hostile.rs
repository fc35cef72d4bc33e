//! Scenario 5: hostile traffic mixed into valid traffic, through real Mosquitto to InfluxDB.
//! Forged tags, a replayed frame, frames moved to another device's or tenant's topic,
//! truncated, oversized, random and garbage payloads,
//! timestamps in the future and too old, a reading of the wrong kind: each is rejected
//! with its reason, counted and kept in quarantine (the replay is recognised as a
//! duplicate); an implausible but possible reading is stored with a quality flag; every
//! valid reading lands, exactly once, with its own value and time. Each hostile frame is
//! published from the account of the topic's device (a compromised device): unknown and
//! revoked devices have no broker account, `tests/security.rs` shows the broker refusing
//! them and the gateway quarantining a revoked device's queued frame.
#![allow(clippy::unwrap_used)]

use gateway::config::DatabaseApi;
use gateway::fleet::registry::DeviceKind;
use gateway::observe::metrics::ReasonLabel;
use protocol::{AirQuality, Field, Reading, Values, WasteBin};
use std::collections::BTreeSet;
use std::time::Duration;
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::InProcessGateway;
use vigie_tests::readback::{self, key};
use vigie_tests::scenario::assert_exactly;
use vigie_tests::{influxdb, mosquitto, now_s, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_are_rejected_with_their_reason_and_valid_ones_all_land() {
    let influx = influxdb();
    for db in ["vigie_lyon", "vigie_villeurbanne"] {
        readback::influx_create_db(influx.addr, db).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let aq = Device::new("lyon", "aq-1", DeviceKind::AirQuality);
    let aq2 = Device::new("lyon", "aq-2", DeviceKind::AirQuality);
    let bin = Device::new("villeurbanne", "bin-1", DeviceKind::WasteBin);
    fleet::write_registry(
        &dir.path().join("devices.toml"),
        &[aq.clone(), aq2.clone(), bin.clone()],
    );
    let broker = mosquitto(dir.path());

    let mut config = fleet::gateway_config(
        dir.path(),
        "gw-hostile",
        broker.addr,
        Some(fleet::database(DatabaseApi::V1, influx.addr)),
    );
    // A synchronised clock refuses the stale frame (unsynchronised, it would hold it).
    config.validation.host_clock = gateway::clock::SyncSource::Always;
    let gw = InProcessGateway::start(config.clone()).await;
    let metrics = &gw.metrics;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let now = now_s();
    let mut valid = Vec::new();
    let mut expected = BTreeSet::new();
    for (d, n) in [(&aq, 20u32), (&bin, 10)] {
        for i in 0..n {
            let r = d.reading(i, now - 1000 + i);
            valid.push((d.topic(), d.frame(&[r], i)));
            let (m, field, v) = match d.kind {
                DeviceKind::AirQuality => ("air_quality", "pm25", f64::from(100 + i) / 10.0),
                DeviceKind::WasteBin => ("waste_bin", "fillingLevel", f64::from(i % 101) / 100.0),
            };
            expected.insert(key(&d.tenant, m, &d.id, u64::from(r.time), field, v));
        }
    }
    // PM2.5 above PM10 cannot be measured, but a sensor can report it: stored, flagged.
    let odd = Reading {
        time: now - 500,
        values: Values::AirQuality(AirQuality {
            pm25: Field::Value(900),
            pm10: Field::Value(300),
            ..AirQuality::default()
        }),
    };
    valid.push((aq.topic(), aq.frame(&[odd], 20)));
    expected.insert(key(
        "lyon",
        "air_quality",
        "aq-1",
        u64::from(odd.time),
        "pm25",
        90.0,
    ));

    let at = |t: u32| Reading {
        time: t,
        values: aq.reading(0, t).values,
    };
    let mut forged = valid[1].1.clone();
    *forged.last_mut().unwrap() ^= 0x01;
    let wrong_kind = Reading {
        time: now - 400,
        values: Values::WasteBin(WasteBin {
            distance: Field::Value(500),
            ..WasteBin::default()
        }),
    };
    let noise: Vec<u8> = (0..97u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let hostile = vec![
        (aq.topic(), valid[0].1.clone()),               // replay: duplicate
        (aq.topic(), forged),                           // authentication
        (bin.topic(), valid[2].1.clone()),              // other tenant's topic
        (aq2.topic(), valid[3].1.clone()),              // other device's topic
        (aq.topic(), valid[4].1[..12].to_vec()),        // malformed: truncated
        (aq.topic(), vec![0x11; 2000]),                 // malformed: oversized
        (aq.topic(), noise),                            // malformed: random
        (aq.topic(), vec![0x5a; 40]),                   // malformed: unknown version
        (aq.topic(), aq.frame(&[at(now + 3600)], 100)), // future_timestamp: held
        (aq.topic(), aq.frame(&[at(now - 200 * 86_400)], 101)), // stale_timestamp
        (aq.topic(), aq.frame(&[wrong_kind], 102)),     // kind_mismatch
    ];
    let mut all = valid.clone();
    all.extend(hostile);
    fleet::publish_all(broker.addr, &all).await;

    wait_for(
        "stored, rejected and held",
        Duration::from_secs(30),
        async || {
            metrics.counts().readings_stored >= 31
                && metrics.counts().frames_rejected >= 9
                && metrics.counts().frames_held >= 1
        },
    )
    .await;
    let reason = |reason: &'static str| {
        metrics
            .frames_rejected
            .get_or_create(&ReasonLabel { reason })
            .get()
    };
    let counts: Vec<_> = [
        "authentication",
        "malformed",
        "stale_timestamp",
        "kind_mismatch",
    ]
    .iter()
    .map(|r| (*r, reason(r)))
    .collect();
    assert_eq!(
        counts,
        [
            ("authentication", 3),
            ("malformed", 4),
            ("stale_timestamp", 1),
            ("kind_mismatch", 1),
        ]
    );
    assert_eq!(metrics.counts().frames_rejected, 9);
    // The future frame is held, not refused: no acknowledgement, no quarantine entry.
    let held = metrics
        .frames_held
        .get_or_create(&ReasonLabel {
            reason: "future_timestamp",
        })
        .get();
    assert_eq!(held, 1);
    assert_eq!(metrics.counts().frames_held, 1);
    assert_eq!(metrics.counts().frames_duplicate, 1);
    assert_eq!(metrics.counts().readings_stored, 31);

    // Every rejected frame is in quarantine with its reason.
    let (entries, _) =
        gateway::store::quarantine::read_all(&config.gateway.data_dir.join("quarantine")).unwrap();
    assert_eq!(entries.len(), 9);

    // Every valid reading, exactly once, with its value and own time, in its tenant.
    let mut got = BTreeSet::new();
    for (db, m, field) in [
        ("vigie_lyon", "air_quality", "|pm25|"),
        ("vigie_villeurbanne", "waste_bin", "|fillingLevel|"),
    ] {
        let points = readback::influx_points(influx.addr, db, &[m]).await;
        got.extend(points.into_iter().filter(|p| p.contains(field)));
    }
    assert_exactly(&got, &expected);

    // The implausible reading carries its quality flag.
    let body = readback::influx_query(
        influx.addr,
        "vigie_lyon",
        "SELECT quality FROM air_quality WHERE quality != ''",
    )
    .await;
    let rows = &body["results"][0]["series"][0]["values"];
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(rows[0][1], "pm25_above_pm10");

    gw.stop().await;
}

/// One air-quality device `lyon/aq-1`, InfluxDB with its database, Mosquitto with its
/// accounts (`broker_access` may change them first), and a gateway config for them.
struct OneDevice {
    influx: vigie_tests::Server,
    broker: vigie_tests::Server,
    dir: tempfile::TempDir,
    aq: Device,
    config: gateway::config::Config,
}

async fn one_device(broker_access: impl FnOnce(&std::path::Path)) -> OneDevice {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let aq = Device::new("lyon", "aq-1", DeviceKind::AirQuality);
    fleet::write_registry(&dir.path().join("devices.toml"), std::slice::from_ref(&aq));
    broker_access(&dir.path().join("broker-access.json"));
    let broker = mosquitto(dir.path());
    let config = fleet::gateway_config(
        dir.path(),
        "gw-hostile",
        broker.addr,
        Some(fleet::database(DatabaseApi::V1, influx.addr)),
    );
    OneDevice {
        influx,
        broker,
        dir,
        aq,
        config,
    }
}

/// Replaying the quarantine never destroys the evidence of a reused counter: once 64
/// newer frames are stored its counter's tag is no longer kept, and the replay would have
/// judged it a duplicate and deleted it (issue: "evidence that disappears").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_reused_counter_stays_in_the_quarantine() {
    let OneDevice {
        influx: _influx,
        dir: _dir,
        broker,
        aq,
        mut config,
    } = one_device(|_| {}).await;
    config.http.admin_token = Some(gateway::config::Secret::new("replay-token-0123456789"));
    let gw = InProcessGateway::start(config.clone()).await;
    let now = now_s();
    let first = vec![
        (aq.topic(), aq.frame(&[aq.reading(0, now - 500)], 10)),
        (aq.topic(), aq.frame(&[aq.reading(1, now - 499)], 10)),
    ];
    fleet::publish_all(broker.addr, &first).await;
    let reused = || {
        gw.metrics
            .frames_rejected
            .get_or_create(&ReasonLabel {
                reason: "counter_reused",
            })
            .get()
    };
    wait_for(
        "the reused counter refused",
        Duration::from_secs(20),
        async || reused() == 1,
    )
    .await;
    // 70 newer frames: counter 10's tag is no longer among the 64 kept.
    let newer: Vec<_> = (11..81)
        .map(|c| (aq.topic(), aq.frame(&[aq.reading(c, now - 490 + c)], c)))
        .collect();
    fleet::publish_all(broker.addr, &newer).await;
    wait_for(
        "the newer frames stored",
        Duration::from_secs(20),
        async || gw.metrics.counts().frames_accepted >= 71,
    )
    .await;
    // The operator's command (it blocks: off the test's runtime).
    let cfg = config.clone();
    let answer = tokio::task::spawn_blocking(move || gateway::ops::quarantine::replay(&cfg))
        .await
        .unwrap()
        .unwrap();
    let qdir = config.gateway.data_dir.join("quarantine");
    let (entries, _) = gateway::store::quarantine::read_all(&qdir).unwrap();
    let kept: Vec<_> = entries
        .iter()
        .filter(|e| e.reason == "counter_reused")
        .collect();
    eprintln!(
        "replay: {answer}; counter_reused entries after it: {}",
        kept.len()
    );
    assert_eq!(kept.len(), 1, "the evidence stays: {answer}");
    assert_eq!(kept[0].payload, hex::encode(&first[1].1));
    gw.stop().await;
}

/// A board resending the same refused bytes (its old blob's key after a rotation) is
/// counted each time but quarantined once (issue: 8,255 entries in 80 s for one board).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_frame_resent_is_counted_each_time_and_quarantined_once() {
    let OneDevice {
        influx: _influx,
        dir: _dir,
        broker,
        aq,
        config,
    } = one_device(|_| {}).await;
    let gw = InProcessGateway::start(config.clone()).await;
    let mut old_key = aq.clone();
    old_key.key[0] ^= 1;
    let now = now_s();
    let outbox: Vec<_> = (0..5)
        .map(|c| {
            (
                aq.topic(),
                old_key.frame(&[aq.reading(c, now - 100 + c)], c),
            )
        })
        .collect();
    // The same five frames, sent twenty times over.
    let resent: Vec<_> = (0..20).flat_map(|_| outbox.clone()).collect();
    fleet::publish_all(broker.addr, &resent).await;
    wait_for("every resend judged", Duration::from_secs(20), async || {
        gw.metrics.counts().frames_rejected >= 100
    })
    .await;
    let qdir = config.gateway.data_dir.join("quarantine");
    wait_for("committed", Duration::from_secs(10), async || {
        gateway::store::quarantine::read_all(&qdir).unwrap().0.len() >= 5
    })
    .await;
    let (entries, _) = gateway::store::quarantine::read_all(&qdir).unwrap();
    eprintln!(
        "resent refused frames: {} arrivals counted, {} quarantine entries",
        (gw.metrics.counts().frames_rejected as f64),
        entries.len()
    );
    assert_eq!(gw.metrics.counts().frames_rejected, 100);
    assert_eq!(entries.len(), 5, "each refused frame once");
    gw.stop().await;
}

/// A broker refusing the gateway's device acknowledgements (its account may not publish
/// on the ack topics) is seen: counted as refused, not as sent (issue 30).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_acknowledgements_the_broker_refuses_are_counted_as_refused() {
    // The gateway role loses its right to publish acknowledgements.
    let OneDevice {
        influx: _influx,
        dir: _dir,
        broker,
        aq,
        config,
    } = one_device(|access| {
        let mut dynsec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(access).unwrap()).unwrap();
        for role in dynsec["roles"].as_array_mut().unwrap() {
            if let Some(acls) = role["acls"].as_array_mut() {
                acls.retain(|a| {
                    a["topic"] != "vigie/v1/+/+/ack" || a["acltype"] != "publishClientSend"
                });
            }
        }
        std::fs::write(access, serde_json::to_string(&dynsec).unwrap()).unwrap();
    })
    .await;
    let gw = InProcessGateway::start(config).await;
    let now = now_s();
    let frames: Vec<_> = (0..10)
        .map(|c| (aq.topic(), aq.frame(&[aq.reading(c, now - 100 + c)], c)))
        .collect();
    fleet::publish_all(broker.addr, &frames).await;
    wait_for("the refusals seen", Duration::from_secs(20), async || {
        gw.metrics.counts().device_acks_refused >= 1
    })
    .await;
    eprintln!(
        "acknowledgements refused by the broker: refused={} counted as sent={}",
        (gw.metrics.counts().device_acks_refused as f64),
        (gw.metrics.counts().device_acks as f64)
    );
    assert_eq!(gw.metrics.counts().device_acks, 0);
    gw.stop().await;
}

/// Counters 1000 apart carrying one second would share a stored millisecond (SPEC §6):
/// counter 1003 dated at counter 3's second overwrote 3's values, both acknowledged
/// (issue 27: "77.7 overwrote 66.6"). Now the later frame is refused `time_collision`
/// and kept in the quarantine, counter 3's values stay, and what follows flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_a_thousand_apart_in_one_second_never_overwrite() {
    let OneDevice {
        influx,
        dir: _dir,
        broker,
        aq,
        config,
    } = one_device(|_| {}).await;
    let gw = InProcessGateway::start(config.clone()).await;
    let start = now_s() - 3000;
    let devices = std::slice::from_ref(&aq);
    let before = vigie_tests::scenario::load(devices, 20, start);
    // The board's clock went back: frame 1003 measured at frame 3's second, other values.
    let colliding = aq.frame(&[aq.reading(7, start + 3)], 1003);
    let after = vigie_tests::scenario::load_from(devices, 1004, 10, start);
    let mut messages = before.messages.clone();
    messages.push((aq.topic(), colliding.clone()));
    messages.extend(after.messages.iter().cloned());
    fleet::publish_all(broker.addr, &messages).await;
    let expected: BTreeSet<String> = before.expected.union(&after.expected).cloned().collect();
    let outcome =
        vigie_tests::scenario::all_stored(influx.addr, &expected, Duration::from_secs(30)).await;
    let collided = gw
        .metrics
        .frames_rejected
        .get_or_create(&ReasonLabel {
            reason: "time_collision",
        })
        .get();
    let qdir = config.gateway.data_dir.join("quarantine");
    wait_for(
        "the refused frame kept",
        Duration::from_secs(10),
        async || {
            !gateway::store::quarantine::read_all(&qdir)
                .unwrap()
                .0
                .is_empty()
        },
    )
    .await;
    let (entries, _) = gateway::store::quarantine::read_all(&qdir).unwrap();
    eprintln!(
        "counters 1000 apart: {outcome}; refused time_collision {collided}; quarantine {}",
        entries.len()
    );
    assert_eq!(outcome.lost, 0);
    assert_eq!(collided, 1);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].reason, "time_collision");
    assert_eq!(entries[0].payload, hex::encode(&colliding));
    gw.stop().await;
}
