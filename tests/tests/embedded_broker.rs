//! The whole gateway against its embedded broker (rumqttd, in-process): valid traffic from two tenants is stored
//! exactly once in the line-protocol files; every kind of hostile frame is rejected with
//! its reason and kept in quarantine; after the unknown device is registered (SIGHUP), a
//! quarantine replay stores its frame.
#![allow(clippy::unwrap_used)]

use gateway::config::Config;
use gateway::fleet::registry::RegistryFile;
use gateway::fleet::registry::{DeviceEntry, DeviceKind, Registry};
use gateway::observe::metrics::{Metrics, ReasonLabel};
use protocol::{AirQuality, DeviceKey, Field, Identity, MAX_FRAME_LEN, Reading, Values, WasteBin};
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use vigie_tests::{fleet, wait_for};

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn entry(tenant: &str, id: &str, kind: DeviceKind, key: [u8; 16]) -> DeviceEntry {
    DeviceEntry {
        bin_depth_mm: (kind == DeviceKind::WasteBin).then_some(1000),
        ..DeviceEntry::new(tenant, id, kind, hex::encode(key), 1)
    }
}

fn sealed(
    tenant: &str,
    id: &str,
    key: [u8; 16],
    values: Values,
    time: u32,
    counter: u32,
) -> Vec<u8> {
    let who = Identity::new(tenant, id).unwrap();
    let mut buf = [0u8; MAX_FRAME_LEN];
    let r = Reading { time, values };
    protocol::seal(&mut buf, &[r], counter, &DeviceKey::new(key, 1), who)
        .unwrap()
        .to_vec()
}

fn aq(pm25: u16) -> Values {
    Values::AirQuality(AirQuality {
        pm25: Field::Value(pm25),
        pm10: Field::Value(pm25 + 50),
        ..AirQuality::default()
    })
}

fn bin(fill: u8) -> Values {
    Values::WasteBin(WasteBin {
        distance: Field::Value(1000 - 10 * u16::from(fill)),
        fill_level: Field::Value(fill),
        ..WasteBin::default()
    })
}

/// Every exported line, prefixed with its tenant directory.
fn exported(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for tenant in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for day in std::fs::read_dir(tenant.path()).unwrap().flatten() {
            let text = std::fs::read_to_string(day.path()).unwrap();
            let t = tenant.file_name().to_string_lossy().to_string();
            lines.extend(text.lines().map(|l| format!("{t}:{l}")));
        }
    }
    lines
}

/// The admin token of the test's config.
const TOKEN: &str = "test-admin-token-0123456789";

/// One raw request (`extra` header lines included as given); the whole answer.
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    // The server may close as soon as it has refused: a write error is part of the test.
    let _ = s.write_all(request);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn http(addr: SocketAddr, method: &str, path: &str, extra: &str) -> String {
    raw(
        addr,
        format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{extra}content-length: 0\r\n\r\n")
            .as_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_traffic_stored_once_hostile_traffic_quarantined_then_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (k_aq, k_bin, k_rev, k_new) = ([1u8; 16], [2u8; 16], [3u8; 16], [4u8; 16]);
    let mut revoked = entry("lyon", "aq-rev", DeviceKind::AirQuality, k_rev);
    revoked.revoked = true;
    let registry_path = dir.path().join("devices.toml");
    let mut registry = Registry::from_entries(vec![
        entry("lyon", "aq-1", DeviceKind::AirQuality, k_aq),
        entry("villeurbanne", "bin-1", DeviceKind::WasteBin, k_bin),
        revoked,
    ])
    .unwrap();
    registry.save(&registry_path).unwrap();

    let mut config = Config::default();
    config.gateway.data_dir = dir.path().join("data");
    config.gateway.registry = registry_path.clone();
    config.mqtt.embedded_listen = free_addr();
    config.mqtt.client_id = "gw-test".into();
    let http_addr = free_addr();
    config.http.listen = Some(http_addr);
    config.http.admin_token = Some(gateway::config::Secret::new(TOKEN));
    config.batch.linger = Duration::from_millis(100);
    config.validate().unwrap();

    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let gw = tokio::spawn(gateway::run_with_metrics(
        config.clone(),
        stop_rx,
        metrics.clone(),
    ));
    wait_for("connection", Duration::from_secs(15), async || {
        metrics.counts().mqtt_connected
    })
    .await;
    // The subscription follows the CONNACK; give the broker a moment to register it.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let now = (gateway::clock::Clock::system().now_ms() / 1000) as u32;
    let up = |t: &str, d: &str| format!("vigie/v1/{t}/{d}/up");
    let mut valid = Vec::new();
    for i in 0..20u32 {
        let f = sealed("lyon", "aq-1", k_aq, aq(100 + i as u16), now - 100 + i, i);
        valid.push((up("lyon", "aq-1"), f));
    }
    for i in 0..10u32 {
        let f = sealed(
            "villeurbanne",
            "bin-1",
            k_bin,
            bin(i as u8 * 5),
            now - 50 + i,
            i,
        );
        valid.push((up("villeurbanne", "bin-1"), f));
    }
    let mut forged = valid[1].1.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    let unknown = sealed("lyon", "aq-new", k_new, aq(42), now - 10, 0);
    let revoked_frame = sealed("lyon", "aq-rev", k_rev, aq(1), now, 0);
    let future = sealed("lyon", "aq-1", k_aq, aq(7), now + 3600, 100);
    let noise: Vec<u8> = (0..97u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let hostile = vec![
        (up("lyon", "aq-1"), valid[0].1.clone()), // duplicate
        (up("lyon", "aq-1"), forged),             // authentication
        // aq-1's frame on bin-1's topic: identity is bound, authentication fails.
        (up("villeurbanne", "bin-1"), valid[2].1.clone()),
        (up("lyon", "aq-new"), unknown),       // unknown_device
        (up("lyon", "aq-rev"), revoked_frame), // revoked
        (up("lyon", "aq-1"), valid[3].1[..12].to_vec()), // malformed (too short)
        (up("lyon", "aq-1"), vec![0x5a; 40]),  // malformed (version)
        (up("lyon", "aq-1"), future),          // future_timestamp: held
        (up("lyon", "aq-1"), vec![0x11; 2000]), // malformed (oversized)
        (up("lyon", "aq-1"), noise),           // malformed (random bytes)
    ];
    let mut all = valid.clone();
    all.extend(hostile);
    fleet::publish_all(config.mqtt.embedded_listen, &all).await;

    wait_for(
        "stored, rejected and held",
        Duration::from_secs(20),
        async || {
            metrics.counts().readings_stored >= 30
                && metrics.counts().frames_rejected >= 8
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
    assert_eq!(reason("authentication"), 2);
    assert_eq!(reason("unknown_device"), 1);
    assert_eq!(reason("revoked"), 1);
    assert_eq!(reason("malformed"), 4);
    // Held, not refused: neither acknowledged nor quarantined (SPEC §13.3).
    assert_eq!(metrics.counts().frames_rejected, 8);
    assert_eq!(metrics.counts().frames_held, 1);
    assert_eq!(metrics.counts().frames_duplicate, 1);

    // Exactly the valid readings, once each, in the right tenant; beside them, each
    // registered device's metadata (`device_info`) in its own commune's files.
    let (info, lines): (Vec<String>, Vec<String>) =
        exported(&config.gateway.data_dir.join("export"))
            .into_iter()
            .partition(|l| l.contains(":device_info,"));
    for who in [
        "lyon:device_info,device=aq-1,kind=air_quality,tenant=lyon ",
        "lyon:device_info,device=aq-rev,kind=air_quality,tenant=lyon ",
        "villeurbanne:device_info,device=bin-1,kind=waste_bin,tenant=villeurbanne ",
    ] {
        assert_eq!(
            info.iter().filter(|l| l.starts_with(who)).count(),
            1,
            "{info:#?}"
        );
    }
    assert_eq!(lines.len(), 30, "{lines:#?}");
    let unique: BTreeSet<_> = lines.iter().collect();
    assert_eq!(unique.len(), 30);
    let aq_prefix = "lyon:air_quality,device=aq-1,tenant=lyon pm25=";
    assert_eq!(
        lines.iter().filter(|l| l.starts_with(aq_prefix)).count(),
        20
    );
    let bin_prefix = "villeurbanne:waste_bin,device=bin-1,tenant=villeurbanne ";
    assert_eq!(
        lines.iter().filter(|l| l.starts_with(bin_prefix)).count(),
        10
    );
    // Counter 0: the reading's second, 0 ms (SPEC §6, stored time).
    let first = format!(
        "lyon:air_quality,device=aq-1,tenant=lyon pm25=10,pm10=15 {}",
        vigie_core::output::lineproto::timestamp_ms(now - 100, 0)
    );
    assert!(lines.contains(&first), "{lines:#?}");

    // Quarantine holds each rejected frame with its reason.
    let qdir = config.gateway.data_dir.join("quarantine");
    let (entries, _) = gateway::store::quarantine::read_all(&qdir).unwrap();
    let mut reasons: Vec<_> = entries.iter().map(|e| e.reason.as_str()).collect();
    reasons.sort();
    let want = [
        "authentication",
        "authentication",
        "malformed",
        "malformed",
        "malformed",
        "malformed",
        "revoked",
        "unknown_device",
    ];
    assert_eq!(reasons, want);
    let listing = gateway::ops::quarantine::list(&config).unwrap();
    assert!(
        listing.contains("8 quarantined") && listing.contains("unknown_device=1"),
        "{listing}"
    );

    // Register the unknown device, reload with SIGHUP, replay: its frame is stored now.
    registry
        .upsert(entry("lyon", "aq-new", DeviceKind::AirQuality, k_new))
        .unwrap();
    registry.save(&registry_path).unwrap();
    let pid = std::process::id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status();
    assert!(kill.unwrap().success());
    wait_for("registry reload", Duration::from_secs(10), async || {
        metrics.counts().registry_devices >= 4
    })
    .await;
    // The admin endpoint: refused without the token or with a wrong one, and bounded.
    let none = http(http_addr, "POST", "/quarantine/replay", "");
    assert!(none.starts_with("HTTP/1.1 401"), "{none}");
    let wrong = http(
        http_addr,
        "POST",
        "/quarantine/replay",
        "authorization: Bearer test-admin-token-0123456788\r\n",
    );
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nx-pad: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let cut = raw(http_addr, huge.as_bytes());
    assert!(cut.starts_with("HTTP/1.1 431"), "{cut}");
    let many: String = (0..100).map(|i| format!("x-{i}: 1\r\n")).collect();
    let crowded = http(http_addr, "GET", "/metrics", &many);
    assert!(crowded.starts_with("HTTP/1.1 431"), "{crowded}");
    let started = std::time::Instant::now();
    // A head that never ends: the server closes the connection after its deadline.
    let slow = raw(http_addr, b"GET /metrics HTTP/1.1\r\n");
    assert!(slow.is_empty(), "{slow}");
    let waited = started.elapsed();
    assert!(
        waited >= gateway::web::http::HEAD_TIMEOUT - Duration::from_millis(500)
            && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert_eq!(
        (metrics.counts().readings_stored as f64),
        30.0,
        "nothing replayed without the token"
    );
    let answer = http(
        http_addr,
        "POST",
        "/quarantine/replay",
        &format!("authorization: Bearer {TOKEN}\r\n"),
    );
    assert!(
        answer.contains("\"accepted\":1") && answer.contains("\"rejected\":7"),
        "{answer}"
    );
    wait_for(
        "replayed frame stored",
        Duration::from_secs(10),
        async || metrics.counts().readings_stored >= 31,
    )
    .await;
    let lines = exported(&config.gateway.data_dir.join("export"));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("lyon:air_quality,device=aq-new,"))
    );

    let metrics_text = http(http_addr, "GET", "/metrics", "");
    assert!(
        metrics_text.contains("vigie_frames_rejected_total{reason=\"revoked\"} 2"),
        "rejected again after the replay"
    );
    assert!(http(http_addr, "GET", "/readyz", "").starts_with("HTTP/1.1 200"));

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(20), gw)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
