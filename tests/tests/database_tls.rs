//! The database over HTTPS: VictoriaMetrics serves TLS with a certificate of a test CA.
//! A gateway whose `database.ca_file` names that CA stores every reading through the v2
//! write path (the `influxdb2` crate, given the configured client), another through the
//! v1 path (`/write?db=`) to a second server; a gateway without the CA refuses the server
//! (the handshake fails, counted as write errors) and stores nothing, its readings kept in
//! its buffer.
#![allow(clippy::unwrap_used)]

use gateway::config::DatabaseApi;
use std::time::Duration;
use vigie_tests::process::InProcessGateway;
use vigie_tests::servers::victoria_metrics_tls;
use vigie_tests::{fleet, mosquitto, now_s, readback, scenario, tls, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_writers_trust_the_configured_ca_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls::pki(dir.path());
    let (vm, vm_v1) = (victoria_metrics_tls(&pki), victoria_metrics_tls(&pki));
    let devices = scenario::devices(dir.path(), 3);
    let broker = mosquitto(dir.path());
    let https = |ca: Option<std::path::PathBuf>| {
        let mut db = fleet::database(DatabaseApi::V2, vm.addr);
        db.url = format!("https://127.0.0.1:{}", vm.addr.port());
        db.ca_file = ca;
        db
    };
    let mut v1 = fleet::database(DatabaseApi::V1, vm_v1.addr);
    v1.url = format!("https://127.0.0.1:{}", vm_v1.addr.port());
    v1.ca_file = Some(pki.ca.clone());
    let trusting_v1 = InProcessGateway::start(fleet::gateway_config(
        dir.path(),
        "gw-v1",
        broker.addr,
        Some(v1),
    ))
    .await;
    let trusting = InProcessGateway::start(fleet::gateway_config(
        dir.path(),
        "gw-ca",
        broker.addr,
        Some(https(Some(pki.ca.clone()))),
    ))
    .await;
    let doubting = InProcessGateway::start(fleet::gateway_config(
        dir.path(),
        "gw-no-ca",
        broker.addr,
        Some(https(None)),
    ))
    .await;

    let load = scenario::load(&devices, 40, now_s() - 600);
    fleet::publish_all(broker.addr, &load.messages).await;
    let want = load.expected.len() as f64;
    wait_for(
        "the trusting gateway stores all",
        Duration::from_secs(30),
        async || (trusting.counts().readings_stored as f64) >= want,
    )
    .await;
    wait_for(
        "the trusting v1 gateway stores all",
        Duration::from_secs(30),
        async || (trusting_v1.counts().readings_stored as f64) >= want,
    )
    .await;
    wait_for(
        "the doubting gateway's writes fail",
        Duration::from_secs(30),
        async || doubting.counts().write_errors > 0,
    )
    .await;

    // Read back over HTTPS, trusting the test CA.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    for server in [&vm, &vm_v1] {
        let base = format!("https://127.0.0.1:{}", server.addr.port());
        let points = readback::victoria_points_at(&client, &base, &["air_quality"]).await;
        let pm25: std::collections::BTreeSet<String> = points
            .into_iter()
            .filter(|p| p.contains("|pm25|"))
            .collect();
        scenario::assert_exactly(&pm25, &load.expected);
    }
    eprintln!(
        "database over TLS: published={} stored_with_ca={} stored_without_ca={} \
         write_errors_without_ca={} buffered_without_ca={} bytes",
        load.expected.len(),
        trusting.counts().readings_stored,
        doubting.counts().readings_stored,
        doubting.counts().write_errors,
        doubting.counts().buffer_pending_bytes,
    );
    assert_eq!(doubting.counts().readings_stored, 0);
    assert!(doubting.counts().buffer_pending_bytes > 0);
    trusting.stop().await;
    trusting_v1.stop().await;
    doubting.stop().await;
}
