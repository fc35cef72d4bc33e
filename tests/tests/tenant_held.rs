//! Scenario 10: one commune's database is missing (InfluxDB answers 404), another's
//! exists. The commune that can be written keeps flowing; the other is held on its own
//! cursor (metric, `/readyz` detail, its readings wait in the buffer) and catches up by
//! itself once its database is created. Every acknowledged reading of both ends stored
//! exactly once.
#![allow(clippy::unwrap_used)]

use gateway::fleet::registry::DeviceKind;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{GatewayProcess, GatewaySettings};
use vigie_tests::readback::{self, key};
use vigie_tests::{influxdb, mosquitto, now_s, scenario, wait_for};

const PER_DEVICE: u32 = 300;

async fn pm25_points(influx: std::net::SocketAddr, tenant: &str) -> BTreeSet<String> {
    readback::influx_points(influx, &format!("vigie_{tenant}"), &["air_quality"])
        .await
        .into_iter()
        .filter(|p| p.contains("|pm25|"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_holds_only_its_commune() {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_nice").await;
    let dir = tempfile::tempdir().unwrap();
    let devices: Vec<_> = ["lyon", "nice"]
        .iter()
        .flat_map(|t| {
            (0..3).map(move |i| Device::new(t, &format!("aq-{i}"), DeviceKind::AirQuality))
        })
        .collect();
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let broker = mosquitto(dir.path());
    let gw = GatewayProcess::start(
        dir.path(),
        &GatewaySettings::new("gw", broker.addr, Some(influx.addr)),
    );

    let start = now_s() - 5_000;
    let mut messages = Vec::new();
    let mut expected: std::collections::BTreeMap<&str, BTreeSet<String>> = Default::default();
    for n in 0..PER_DEVICE {
        for d in &devices {
            let r = d.reading(n, start + n);
            expected
                .entry(if d.tenant == "lyon" { "lyon" } else { "nice" })
                .or_default()
                .insert(key(
                    &d.tenant,
                    "air_quality",
                    &d.id,
                    u64::from(r.time),
                    "pm25",
                    f64::from(100 + n % 500) / 10.0,
                ));
            messages.push((d.topic(), d.frame(&[r], n)));
        }
    }
    fleet::publish_all(broker.addr, &messages).await;

    // Nice flows while Lyon's database does not exist.
    wait_for(
        "nice's readings stored",
        Duration::from_secs(60),
        async || pm25_points(influx.addr, "nice").await.len() >= expected["nice"].len(),
    )
    .await;
    let (ready, summary) = gw.readyz().unwrap();
    assert!(ready, "a held commune does not stop the gateway: {summary}");
    assert!(
        summary.contains("tenant lyon held") && summary.contains("404"),
        "{summary}"
    );
    assert_eq!(gw.metric("vigie_tenant_behind{tenant=\"lyon\"}"), Some(1.0));
    assert!(
        gw.metric("vigie_buffer_pending_bytes").unwrap() > 0.0,
        "lyon waits in the buffer"
    );
    assert!(
        gw.log().matches("tenant held").count() == 1,
        "one log line when the commune is held, not one per retry:\n{}",
        gw.log()
    );

    // The database is created: Lyon catches up by itself.
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let created = Instant::now();
    wait_for(
        "lyon's readings stored",
        Duration::from_secs(60),
        async || pm25_points(influx.addr, "lyon").await.len() >= expected["lyon"].len(),
    )
    .await;
    let caught_up = created.elapsed();
    let mut counts = Vec::new();
    for tenant in ["lyon", "nice"] {
        let got = pm25_points(influx.addr, tenant).await;
        let want = &expected[tenant];
        let lost = want.difference(&got).count();
        let unexpected = got.difference(want).count();
        let points = scenario::point_count(influx.addr, tenant).await;
        let duplicated = points - got.len();
        assert_eq!((lost, unexpected, duplicated), (0, 0, 0), "{tenant}");
        counts.push(format!(
            "{tenant}: published={} stored={} lost={lost} duplicated={duplicated}",
            want.len(),
            got.len()
        ));
    }
    wait_for("lyon flowing again", Duration::from_secs(10), async || {
        // Ready, and Lyon no longer named (a host clock without NTP is named too).
        gw.readyz()
            .is_some_and(|(ready, s)| ready && !s.contains("tenant lyon held"))
    })
    .await;

    // A registry reload that fails (the file is gone) keeps the previous one in force.
    let registry = dir.path().join("devices.toml");
    std::fs::rename(&registry, dir.path().join("devices.toml.moved")).unwrap();
    let pid = gw.pid().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for(
        "the failed reload to be reported",
        Duration::from_secs(10),
        async || gw.metric("vigie_registry_reload_failures_total") == Some(1.0),
    )
    .await;
    let (ready, summary) = gw.readyz().unwrap();
    assert!(
        ready && summary.contains("registry reload failed"),
        "{summary}"
    );
    let d = &devices[0];
    let late = d.reading(PER_DEVICE, start + PER_DEVICE);
    fleet::publish_all(broker.addr, &[(d.topic(), d.frame(&[late], PER_DEVICE))]).await;
    let late_key = key(
        &d.tenant,
        "air_quality",
        &d.id,
        u64::from(late.time),
        "pm25",
        f64::from(100 + PER_DEVICE % 500) / 10.0,
    );
    wait_for(
        "a frame after the failed reload stored",
        Duration::from_secs(20),
        async || {
            pm25_points(influx.addr, &d.tenant)
                .await
                .contains(&late_key)
        },
    )
    .await;
    assert!(gw.log().contains("the previous registry stays in force"));

    println!(
        "tenant_held: {} ; lyon caught up {caught_up:?} after its database was created; failed registry reload kept the old registry",
        counts.join(" ; ")
    );
    let mut gw = gw;
    gw.terminate();
}
