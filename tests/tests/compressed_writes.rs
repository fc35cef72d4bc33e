//! `database.gzip`: the gateway process with compressed write bodies stores exactly what
//! was published, in InfluxDB 1.x and in VictoriaMetrics (each takes
//! `Content-Encoding: gzip` on its line-protocol write endpoint), and a config asking it of
//! the InfluxDB 2.x client is refused.
#![allow(clippy::unwrap_used)]

use gateway::fleet::registry::DeviceKind;
use std::time::Duration;
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{self, GatewayProcess, GatewaySettings};
use vigie_tests::{influxdb, mosquitto, now_s, readback, scenario, victoria_metrics, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_writes_store_exactly_what_was_published() {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let vm = victoria_metrics();
    let dir = tempfile::tempdir().unwrap();
    let devices: Vec<_> = (0..3)
        .map(|i| Device::new("lyon", &format!("aq-{i}"), DeviceKind::AirQuality))
        .collect();
    fleet::write_registry(&dir.path().join("devices.toml"), &devices);
    let broker = mosquitto(dir.path());
    let mut gateways = Vec::new();
    for (id, db, victoria) in [("gw-a", influx.addr, false), ("gw-b", vm.addr, true)] {
        let mut s = GatewaySettings::new(id, broker.addr, Some(db));
        (s.victoria, s.gzip) = (victoria, true);
        gateways.push(GatewayProcess::start(dir.path(), &s));
    }
    let load = scenario::load(&devices, 40, now_s() - 3600);
    fleet::publish_all(broker.addr, &load.messages).await;
    wait_for(
        "InfluxDB holds every reading",
        Duration::from_secs(30),
        async || scenario::stored(influx.addr).await == load.expected,
    )
    .await;
    wait_for(
        "VictoriaMetrics holds every reading",
        Duration::from_secs(30),
        async || {
            let points = readback::victoria_points(vm.addr, &["air_quality"]).await;
            points
                .into_iter()
                .filter(|p| p.contains("|pm25|"))
                .collect::<std::collections::BTreeSet<_>>()
                == load.expected
        },
    )
    .await;
    for gw in &gateways {
        assert_eq!(
            gw.metric("vigie_write_errors_total"),
            Some(0.0),
            "{}",
            gw.log()
        );
    }

    // The InfluxDB 2.x client sends plain bodies: asking it to compress is refused.
    let config = dir.path().join("v2.toml");
    std::fs::write(
        &config,
        "[database]\napi = \"v2\"\nurl = \"http://127.0.0.1:1\"\norg = \"o\"\ntoken = \"t\"\ngzip = true\n",
    )
    .unwrap();
    let o = process::cli(&["check-config", config.to_str().unwrap()]);
    let said = process::text(&o);
    assert!(
        !o.status.success() && said.contains("database.gzip"),
        "{said}"
    );
}
