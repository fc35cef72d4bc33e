//! One device account flooding the quarantine cannot evict what another device was told
//! is settled (issue: "the bounded quarantine is the only copy").
//!
//! Real Mosquitto and InfluxDB 1.x, the gateway in process with a 1 MiB quarantine.
//! `aq-2` sends five frames of the wrong kind: refused after their tag verified, so
//! acknowledged, and their quarantine entries are their only copy. Then `aq-1`'s account
//! floods its own topic: 3,000 forged frames (never acknowledged, evictable) and 600 of
//! the wrong kind (acknowledged while its share of the quarantine has room, held after).
//! Both keep sending valid readings throughout.
#![allow(clippy::unwrap_used)]

use gateway::config::DatabaseApi;
use gateway::fleet::registry::DeviceKind;
use gateway::observe::metrics::ReasonLabel;
use protocol::{Field, Reading, Values, WasteBin};
use std::collections::BTreeSet;
use std::time::Duration;
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::InProcessGateway;
use vigie_tests::scenario::assert_exactly;
use vigie_tests::{influxdb, mosquitto, now_s, readback, wait_for};

const FORGED: u32 = 3_000;
const WRONG_KIND: u32 = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_device_never_evicts_another_devices_settled_frames() {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let flooder = Device::new("lyon", "aq-1", DeviceKind::AirQuality);
    let victim = Device::new("lyon", "aq-2", DeviceKind::AirQuality);
    fleet::write_registry(
        &dir.path().join("devices.toml"),
        &[flooder.clone(), victim.clone()],
    );
    let broker = mosquitto(dir.path());
    let mut config = fleet::gateway_config(
        dir.path(),
        "gw-hostile",
        broker.addr,
        Some(fleet::database(DatabaseApi::V1, influx.addr)),
    );
    config.quarantine.max_mib = 1;
    let gw = InProcessGateway::start(config.clone()).await;
    let metrics = &gw.metrics;

    let now = now_s();
    let bin = |t: u32| Reading {
        time: t,
        values: Values::WasteBin(WasteBin {
            distance: Field::Value(500),
            ..WasteBin::default()
        }),
    };
    let mut expected = BTreeSet::new();
    let mut valid = |d: &Device, n: u32, counter: u32, out: &mut Vec<(String, Vec<u8>)>| {
        let time = now - 3_000 + n;
        let r = d.reading(n, time);
        if let Values::AirQuality(a) = &r.values {
            let pm25 = f64::from(a.pm25.value().unwrap()) / 10.0;
            expected.insert(readback::key(
                "lyon",
                "air_quality",
                &d.id,
                u64::from(time),
                "pm25",
                pm25,
            ));
        }
        out.push((d.topic(), d.frame(&[r], counter)));
    };
    // The victim's settled refusals first, with valid readings.
    let mut first = Vec::new();
    for i in 0..5 {
        first.push((
            victim.topic(),
            victim.frame(&[bin(now - 100 + i)], 1_000 + i),
        ));
        valid(&victim, i, i, &mut first);
    }
    fleet::publish_all(broker.addr, &first).await;
    wait_for(
        "the victim's refusals quarantined",
        Duration::from_secs(20),
        async || metrics.counts().frames_rejected >= 5,
    )
    .await;
    // The flood: forged frames on its own topic (another device's key), frames of the
    // wrong kind, and its valid readings between them.
    let mut flood = Vec::new();
    for i in 0..FORGED {
        let mut forged = victim.frame(&[flooder.reading(i, now - 50)], 10_000 + i);
        forged.extend_from_slice(&[0u8; 64]);
        flood.push((flooder.topic(), forged));
        if i % 150 == 0 {
            valid(&flooder, i / 150, 20_000 + i, &mut flood);
            valid(&victim, 100 + i / 150, 100 + i, &mut flood);
        }
    }
    for i in 0..WRONG_KIND {
        flood.push((
            flooder.topic(),
            flooder.frame(&[bin(now - 200 + i % 100)], 30_000 + i),
        ));
    }
    fleet::publish_all(broker.addr, &flood).await;
    let rejected = |reason: &'static str| {
        metrics
            .frames_rejected
            .get_or_create(&ReasonLabel { reason })
            .get()
    };
    let held = |reason: &'static str| {
        metrics
            .frames_held
            .get_or_create(&ReasonLabel { reason })
            .get()
    };
    wait_for("every frame judged", Duration::from_secs(60), async || {
        rejected("authentication") >= u64::from(FORGED)
            && rejected("kind_mismatch") + held("kind_mismatch") >= u64::from(5 + WRONG_KIND)
    })
    .await;
    // More forged waves until rotation has evicted something: a rotation evicts the file
    // before it, so how many it takes depends on how the flood was batched (six at most).
    for wave in 1..=6u32 {
        if metrics.counts().quarantine_evicted > 0 {
            break;
        }
        let forged: Vec<_> = (0..FORGED)
            .map(|i| {
                let mut f = victim.frame(&[flooder.reading(i, now - 50)], wave * 100_000 + i);
                f.extend_from_slice(&[0u8; 64]);
                (flooder.topic(), f)
            })
            .collect();
        fleet::publish_all(broker.addr, &forged).await;
        wait_for("the wave judged", Duration::from_secs(60), async || {
            rejected("authentication") >= u64::from(FORGED * (wave + 1))
        })
        .await;
        // Rotations happen at the commit after the entries are counted.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Counted when judged, durable at the commit: read once the commit is done.
    let qdir = config.gateway.data_dir.join("quarantine");
    wait_for("the last commit", Duration::from_secs(20), async || {
        let (entries, _) = gateway::store::quarantine::read_all(&qdir).unwrap();
        entries.iter().filter(|e| e.acknowledged).count() as u64 >= rejected("kind_mismatch")
    })
    .await;
    let (entries, _) = gateway::store::quarantine::read_all(&qdir).unwrap();
    let settled_in_quarantine = |device: &str| {
        entries
            .iter()
            .filter(|e| e.acknowledged && e.topic == format!("vigie/v1/lyon/{device}/up"))
            .count() as u64
    };
    let evicted = metrics.counts().quarantine_evicted as f64;
    eprintln!(
        "quarantine flood: forged={FORGED} evicted={evicted} victim settled={} in quarantine={}; \
         flooder wrong kind={WRONG_KIND} refused={} (in quarantine {}) held={}",
        5,
        settled_in_quarantine("aq-2"),
        rejected("kind_mismatch") - 5,
        settled_in_quarantine("aq-1"),
        held("kind_mismatch"),
    );
    assert!(evicted > 0.0, "the flood rotated the quarantine");
    assert_eq!(
        settled_in_quarantine("aq-2"),
        5,
        "the victim's settled frames all kept"
    );
    // Every acknowledged refusal of the flooder is in the quarantine; the rest held.
    assert_eq!(settled_in_quarantine("aq-1"), rejected("kind_mismatch") - 5);
    assert!(
        held("kind_mismatch") > 0,
        "its share ran out: held, not acknowledged"
    );
    assert_eq!(
        settled_in_quarantine("aq-1") + held("kind_mismatch"),
        u64::from(WRONG_KIND)
    );
    // Valid readings of both kept flowing.
    wait_for(
        "valid readings stored",
        Duration::from_secs(30),
        async || {
            readback::influx_points(influx.addr, "vigie_lyon", &["air_quality"])
                .await
                .into_iter()
                .filter(|p| p.contains("|pm25|"))
                .count()
                >= expected.len()
        },
    )
    .await;
    let got: BTreeSet<String> =
        readback::influx_points(influx.addr, "vigie_lyon", &["air_quality"])
            .await
            .into_iter()
            .filter(|p| p.contains("|pm25|"))
            .collect();
    assert_exactly(&got, &expected);
    gw.stop().await;
}
