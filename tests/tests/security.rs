//! Attacks on the broker (docs/OPERATIONS.md, "Security"), each by a second client against
//! real Mosquitto running the shipped `deploy/mosquitto.conf` under Debian's main file,
//! with the accounts `devices add` / `gateways add` wrote. The gateways connect to the
//! broker's TLS listener and verify it against the test CA. Each scenario publishes a known
//! load and counts what the database holds: published = stored, nothing lost.
//!
//! - an outsider without an account: refused, reads nothing, takes nothing;
//! - a device account subscribing to every uplink, or joining the gateways' shared
//!   subscription: refused at SUBSCRIBE, so it swallows nothing;
//! - a device account publishing on another device's topic: refused;
//! - taking over the gateway's client id, while it runs or while it is away, anonymously,
//!   with a guessed password or with a device's account: refused, the gateway stays
//!   connected and its queued session survives;
//! - a revoked device: refused by the broker after its restart, and what it had queued
//!   before is quarantined by the gateway (`revoked`);
//! - a broker whose certificate the gateway's CA did not sign: the gateway never logs in;
//! - a gateway whose login or subscription the broker refuses: not ready, and `/readyz`
//!   says which and what to check;
//! - a simulated fleet on TLS end to end (devices pinning the CA, the gateway verifying
//!   it): every reading acknowledged is stored; a device pinning another CA never
//!   connects, in clear text or otherwise.
#![allow(clippy::unwrap_used)]

use gateway::config::{Config, DatabaseApi};
use gateway::observe::metrics::ReasonLabel;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use vigie_tests::process::InProcessGateway;
use vigie_tests::scenario::{self, TENANT, assert_exactly};
use vigie_tests::{Server, fleet, influxdb, mosquitto, now_s, process, readback, wait_for};

/// Connects `client_id` (with an account, or anonymously) and returns the client once the
/// broker accepted it, or the broker's refusal.
async fn connect(
    broker: SocketAddr,
    client_id: &str,
    account: Option<(&str, &str)>,
) -> Result<(AsyncClient, EventLoop), ConnectReturnCode> {
    let mut o = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_start(true);
    if let Some((user, password)) = account {
        o.set_credentials(user, password);
    }
    let (client, mut events) = AsyncClient::new(o, 64);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok((client, events)),
            Ok(Err(ConnectionError::ConnectionRefused(code))) => return Err(code),
            Ok(Ok(_)) => {}
            other => panic!("no CONNACK: {other:?}"),
        }
    }
}

/// Subscribes and returns the broker's verdict.
async fn subscribe(
    client: &AsyncClient,
    events: &mut EventLoop,
    filter: &str,
) -> SubscribeReasonCode {
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(s)))) => return s.return_codes[0],
            Ok(Ok(_)) => {}
            other => panic!("no SUBACK: {other:?}"),
        }
    }
}

/// Uplinks the client receives within `window`.
async fn received(events: &mut EventLoop, window: Duration) -> usize {
    let mut n = 0;
    let until = tokio::time::Instant::now() + window;
    while let Ok(Ok(e)) = tokio::time::timeout_at(until, events.poll()).await {
        if let Event::Incoming(Packet::Publish(_)) = e {
            n += 1;
        }
    }
    n
}

/// Waits until the gateway has stored every reading of `load`, then checks the database
/// holds exactly its points, field by field; returns how many it holds.
async fn assert_all_stored(
    what: &str,
    gw: &InProcessGateway,
    influx: SocketAddr,
    load: &scenario::Load,
) -> usize {
    let want = load.expected.len() as f64;
    wait_for(what, Duration::from_secs(60), async || {
        (gw.metrics.counts().readings_stored as f64) >= want
    })
    .await;
    let stored = scenario::stored(influx).await;
    assert_exactly(&stored, &load.expected);
    stored.len()
}

fn account(user: &str) -> (String, String) {
    (user.to_string(), fleet::password(user).expose().to_string())
}

/// A gateway on the broker's TLS listener, verifying it against the test CA.
fn gateway_config(dir: &Path, id: &str, broker: &Server, influx: SocketAddr) -> Config {
    let (tls, ca) = broker.tls();
    let mut c = fleet::gateway_config(dir, id, tls, Some(fleet::database(DatabaseApi::V1, influx)));
    c.mqtt.group = "vigie".into();
    c.mqtt.tls = true;
    c.mqtt.ca_file = Some(ca.to_path_buf());
    c
}

/// A scenario's parts: InfluxDB with Lyon's database, `n` devices of Lyon in the registry,
/// the broker on its accounts, and the gateway `gw-a` connected over TLS.
struct Scene {
    influx: Server,
    _dir: tempfile::TempDir,
    devices: Vec<fleet::Device>,
    broker: Server,
    gw: InProcessGateway,
}

async fn scene(n: usize, log_all: bool) -> Scene {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices = scenario::devices(dir.path(), n);
    let broker = if log_all {
        vigie_tests::servers::mosquitto_logging_all(dir.path())
    } else {
        mosquitto(dir.path())
    };
    let gw =
        InProcessGateway::start(gateway_config(dir.path(), "gw-a", &broker, influx.addr)).await;
    Scene {
        influx,
        _dir: dir,
        devices,
        broker,
        gw,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_and_device_accounts_cannot_read_or_steal_uplinks() {
    let s = scene(4, false).await;

    // An outsider: no account, or a made-up one, or a device's name with a wrong password.
    assert_eq!(
        connect(s.broker.addr, "outsider", None).await.err(),
        Some(ConnectReturnCode::NotAuthorized)
    );
    assert_eq!(
        connect(
            s.broker.addr,
            "vigie-gateway",
            Some(("vigie-gateway", "guess"))
        )
        .await
        .err(),
        Some(ConnectReturnCode::NotAuthorized)
    );
    let (user, _) = account(&s.devices[0].username());
    assert_eq!(
        connect(s.broker.addr, &user, Some((&user, "wrong")))
            .await
            .err(),
        Some(ConnectReturnCode::NotAuthorized)
    );

    // A device's account (a stolen board) tries to read everything and to join the
    // gateways' shared subscription.
    let (user, pw) = account(&s.devices[3].username());
    let (rogue, mut rogue_events) = connect(s.broker.addr, &user, Some((&user, &pw)))
        .await
        .unwrap();
    for filter in [
        "vigie/#",
        "$share/vigie/vigie/v1/+/+/up",
        "$share/x/vigie/v1/+/+/up",
    ] {
        assert_eq!(
            subscribe(&rogue, &mut rogue_events, filter).await,
            SubscribeReasonCode::NotAuthorized,
            "{filter}"
        );
    }

    // Devices 0 to 2 publish while the rogue stays connected.
    let load = scenario::load(&s.devices[..3], 300, now_s() - 3000);
    let publishing = tokio::spawn({
        let (addr, messages) = (s.broker.addr, load.messages.clone());
        async move { fleet::publish_all(addr, &messages).await }
    });
    let read = received(&mut rogue_events, Duration::from_secs(3)).await;
    publishing.await.unwrap();
    let stored = assert_all_stored("every reading stored", &s.gw, s.influx.addr, &load).await;
    eprintln!(
        "published {} stored {stored} read by the rogue {read}",
        load.expected.len()
    );
    assert_eq!(read, 0, "the rogue read uplinks");
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_publish_as_another() {
    let s = scene(2, true).await;

    // Device 0 publishes a frame of its own on device 1's topic, and on its ack topic: the
    // broker answers PUBACK "not authorized" (or closes the connection) and delivers
    // nothing.
    let (user, pw) = account(&s.devices[0].username());
    let frame = s.devices[0].frame(&[s.devices[0].reading(0, now_s() - 10)], 0);
    let ack_topic = s.devices[1].topic().replace("/up", "/ack");
    for topic in [s.devices[1].topic(), ack_topic] {
        let (c, mut events) = connect(s.broker.addr, &user, Some((&user, &pw)))
            .await
            .unwrap();
        c.publish(topic.clone(), QoS::AtLeastOnce, false, frame.clone())
            .await
            .unwrap();
        let refused = loop {
            match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::PubAck(a)))) => {
                    break a.reason == PubAckReason::NotAuthorized;
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) => break true,
                Err(_) => panic!("no answer to a publish on {topic}"),
            }
        };
        assert!(refused, "{topic}");
        let denied = format!("Denied PUBLISH from {user} (d0, q1, r0, m1, '{topic}'");
        assert!(
            s.broker.log().contains(&denied),
            "{denied}\n{}",
            s.broker.log()
        );
    }
    // Its own topic works, and only its reading lands.
    let load = scenario::load(&s.devices[..1], 20, now_s() - 100);
    fleet::publish_all(s.broker.addr, &load.messages).await;
    assert_all_stored("stored", &s.gw, s.influx.addr, &load).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.gw.metrics.counts().frames_rejected, 0);
    s.gw.stop().await;
}

/// Connections with Clean Start asking for the gateway's client id `gw-cli`: anonymous,
/// with a guessed password, and with a device's own account. Each is refused.
async fn takeover_attempts(broker: SocketAddr, device: &str) {
    let (user, pw) = account(device);
    for who in [
        None,
        Some(("gw-cli", "guess")),
        Some((user.as_str(), pw.as_str())),
    ] {
        assert_eq!(
            connect(broker, "gw-cli", who).await.err(),
            Some(ConnectReturnCode::NotAuthorized),
            "{who:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taking_over_the_gateways_client_id_loses_nothing() {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices = scenario::devices(dir.path(), 4);

    // The operator's step: a gateway account made by the CLI, its password in a file the
    // config names.
    let config_file = dir.path().join("gateway.toml");
    std::fs::write(
        &config_file,
        format!(
            "[gateway]\nregistry = {:?}\n",
            dir.path().join("devices.toml")
        ),
    )
    .unwrap();
    let password_file = dir.path().join("gw-cli.password");
    let out = std::process::Command::new(process::binary())
        .args(["gateways", "add", "--config"])
        .arg(&config_file)
        .args(["--username", "gw-cli", "--password-out"])
        .arg(&password_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("restart the broker"), "{text}");
    let password = std::fs::read_to_string(&password_file).unwrap();
    assert!(
        !text.contains(password.trim()),
        "the password is printed: {text}"
    );

    let broker = mosquitto(dir.path());
    let mut config = gateway_config(dir.path(), "gw-cli", &broker, influx.addr);
    config.mqtt.password = None;
    config.mqtt.password_file = Some(password_file);

    // The same attempts while the gateway runs: it is never disconnected.
    let gw = InProcessGateway::start(config.clone()).await;
    takeover_attempts(broker.addr, &devices[0].username()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.metrics.counts().mqtt_connects, 1);
    assert!(gw.metrics.counts().mqtt_connected);
    // It goes away; readings queue for it.
    gw.stop().await;
    let load = scenario::load(&devices, 50, now_s() - 1000);
    fleet::publish_all(broker.addr, &load.messages).await;

    // Attempts to take the session over with Clean Start while the gateway is away.
    takeover_attempts(broker.addr, &devices[0].username()).await;

    // Back: the queued session delivers everything.
    let gw = InProcessGateway::start(config).await;
    let stored = assert_all_stored("every queued reading stored", &gw, influx.addr, &load).await;
    eprintln!(
        "takeover: published {} stored {stored}",
        load.expected.len()
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_refused_and_its_queued_frames_quarantined() {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices = scenario::devices(dir.path(), 2);
    let mut broker = mosquitto(dir.path());
    let config = gateway_config(dir.path(), "gw-a", &broker, influx.addr);
    let gw = InProcessGateway::start(config.clone()).await;
    gw.stop().await;

    // While the gateway is away, both devices publish; then device 1 is revoked.
    let load = scenario::load(&devices, 10, now_s() - 500);
    fleet::publish_all(broker.addr, &load.messages).await;
    let config_file = dir.path().join("cli.toml");
    std::fs::write(
        &config_file,
        format!("[gateway]\nregistry = {:?}\n", config.gateway.registry),
    )
    .unwrap();
    let out = std::process::Command::new(process::binary())
        .args(["devices", "revoke", "--config"])
        .arg(&config_file)
        .args(["--tenant", TENANT, "--id", &devices[1].id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The broker applies it at restart (clean: its queue is saved).
    broker.stop(false);
    broker.start();
    let (user, pw) = account(&devices[1].username());
    assert_eq!(
        connect(broker.addr, &user, Some((&user, &pw))).await.err(),
        Some(ConnectReturnCode::NotAuthorized)
    );

    // The gateway, started after the revocation, stores device 0's readings and
    // quarantines device 1's queued frames.
    let gw = InProcessGateway::start(config.clone()).await;
    let revoked = || {
        gw.metrics
            .frames_rejected
            .get_or_create(&ReasonLabel { reason: "revoked" })
            .get()
    };
    wait_for(
        "stored and quarantined",
        Duration::from_secs(60),
        async || gw.metrics.counts().readings_stored >= 10 && revoked() >= 10,
    )
    .await;
    let want: std::collections::BTreeSet<_> = load
        .expected
        .iter()
        .filter(|k| k.contains(&format!("|{}|", devices[0].id)))
        .cloned()
        .collect();
    assert_eq!(want.len(), 10);
    assert_exactly(&scenario::stored(influx.addr).await, &want);
    assert_eq!(revoked(), 10);
    let (entries, _) =
        gateway::store::quarantine::read_all(&config.gateway.data_dir.join("quarantine")).unwrap();
    assert_eq!(entries.len(), 10);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_does_not_talk_to_a_broker_its_ca_did_not_sign() {
    let dir = tempfile::tempdir().unwrap();
    scenario::devices(dir.path(), 1);
    let broker = mosquitto(dir.path());
    let other = tempfile::tempdir().unwrap();
    let stranger = vigie_tests::tls::pki(other.path());
    let mut config = gateway_config(dir.path(), "gw-a", &broker, broker.addr);
    config.database = None;
    config.mqtt.ca_file = Some(stranger.ca);
    let metrics = std::sync::Arc::new(gateway::observe::metrics::Metrics::default());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(gateway::run_with_metrics(config, stop_rx, metrics.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // It never logged in: the TLS handshake failed before any password was sent.
    assert_eq!(metrics.counts().mqtt_connects, 0);
    assert!(!metrics.counts().mqtt_connected);
    assert!(!broker.log().contains("as gw-a"), "{}", broker.log());
    stop.send(true).unwrap();
    run.await.unwrap().unwrap();
}

/// Runs a gateway on `config` until its `/readyz` answers 503 with a body containing
/// `expected`; returns that body.
async fn readyz_names(config: Config, expected: &str) -> String {
    let url = format!("http://{}/readyz", config.http.listen.unwrap());
    let metrics = std::sync::Arc::new(gateway::observe::metrics::Metrics::default());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(gateway::run_with_metrics(config, stop_rx, metrics.clone()));
    let mut body = String::new();
    wait_for(expected, Duration::from_secs(15), async || {
        if let Ok(r) = reqwest::get(&url).await
            && r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
        {
            body = r.text().await.unwrap_or_default();
        }
        body.contains(expected)
    })
    .await;
    assert!(!metrics.counts().mqtt_connected);
    stop.send(true).unwrap();
    run.await.unwrap().unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_gateway_account_is_named_in_readyz() {
    let dir = tempfile::tempdir().unwrap();
    let devices = scenario::devices(dir.path(), 1);
    let broker = mosquitto(dir.path());
    // A wrong password: the login is refused.
    let mut config = gateway_config(dir.path(), "gw-a", &broker, broker.addr);
    config.database = None;
    config.mqtt.password = Some(gateway::config::Secret::new("wrong"));
    let body = readyz_names(config.clone(), "refused this gateway's account").await;
    assert!(!body.contains("wrong"), "{body}");
    // A device's account in the gateway's config: it logs in, but may not subscribe.
    let (user, pw) = account(&devices[0].username());
    config.mqtt.username = Some(user);
    config.mqtt.client_id = "vigie-gateway".into();
    config.mqtt.password = Some(gateway::config::Secret::new(pw));
    readyz_names(config, "refused the subscription").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_over_tls_stores_every_reading_and_a_device_pinning_another_ca_stays_off() {
    use vigie_sim::net::TrustedCa;
    use vigie_sim::{Fleet, FleetOptions};
    let s = scene(4, false).await;
    let (tls, ca_file) = s.broker.tls();
    let ca = TrustedCa::from_pem(&std::fs::read(ca_file).unwrap()).unwrap();
    let options = |duration: u64| FleetOptions {
        broker: tls,
        accel: 300.0,
        duration: Duration::from_secs(duration),
        status_every: 4,
        outages: Vec::new(),
        progress: false,
        ca: Some(ca.clone()),
    };
    let (_keep, never) = tokio::sync::watch::channel(false);

    // A device whose blob pins another CA: it records, never connects.
    let stranger = vec![s.devices[3].provisioning_tls(tls, [7; 32], 300, 600)];
    let summary = Fleet::new(stranger, options(3)).run(never.clone()).await;
    assert_eq!(
        (summary.connections, summary.acknowledged),
        (0, 0),
        "{summary}"
    );
    assert!(summary.recorded > 0, "{summary}");

    let fleet = s.devices[..3]
        .iter()
        .map(|d| d.provisioning_tls(tls, ca.sha256, 300, 600))
        .collect();
    let summary = Fleet::new(fleet, options(8)).run(never).await;
    eprintln!("fleet over TLS: {summary}");
    assert_eq!(summary.failed, 0, "{summary}");
    assert!(summary.connections >= 3, "{summary}");
    assert_eq!(summary.acknowledged, summary.recorded, "{summary}");
    assert!(summary.acknowledged >= 3 * 3, "{summary}");
    let want = summary.acknowledged as f64;
    wait_for(
        "every reading stored",
        Duration::from_secs(60),
        async || (s.gw.metrics.counts().readings_stored as f64) >= want,
    )
    .await;
    assert_eq!((s.gw.metrics.counts().readings_stored as f64), want);
    assert_eq!(s.gw.metrics.counts().frames_rejected, 0);
    // Each logged in with its own account (on the TLS listener: the fleet dials only it).
    let log = s.broker.log();
    for d in &s.devices[..3] {
        assert!(log.contains(&format!("as {}", d.username())), "{log}");
    }
    assert!(
        !log.contains(&format!("as {}", s.devices[3].username())),
        "{log}"
    );
    s.gw.stop().await;
}
