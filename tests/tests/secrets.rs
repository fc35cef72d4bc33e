//! Secrets never leak: a configuration holding a broker password, a database token and an
//! admin token, a registry holding device keys, the broker passwords `devices add` and
//! `gateways add` generate, go through every CLI command and a scenario (the service at
//! debug level, valid and forged frames, a quarantine replay, a broken config file, a
//! registry line left unterminated with its key); not
//! one of those strings appears in any output, error message or log line.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;
use vigie_tests::process::binary;
use vigie_tests::{fleet, influxdb, mosquitto, now_s, readback, scenario};

const MQTT_PASSWORD: &str = "mqtt-S3CRET-pw-7f3a";
const DB_TOKEN: &str = "db-S3CRET-token-91c2";
const ADMIN_TOKEN: &str = "admin-S3CRET-token-5d0e";
const URL_PASSWORD: &str = "url-S3CRET-pw-2b8c";

use gateway::fleet::registry::RegistryFile;
use vigie_tests::process::{cli as run, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_output_or_log() {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let devices = scenario::devices(dir.path(), 2);
    // The service's broker account, with the password its config file holds.
    let registry_path = dir.path().join("devices.toml");
    let mut registry = gateway::fleet::registry::Registry::load(&registry_path).unwrap();
    registry
        .set_gateway(gateway::fleet::registry::GatewayAccount {
            username: "vigie-gateway".into(),
            password_hash: gateway::fleet::access::hash_password(&gateway::config::Secret::new(
                MQTT_PASSWORD,
            ))
            .unwrap(),
        })
        .unwrap();
    fleet::save_registry(&registry_path, &registry);
    let broker = mosquitto(dir.path());
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], vigie_tests::free_port()));
    let config_text = format!(
        "[gateway]\ndata_dir = {data:?}\nregistry = {registry:?}\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n\
         username = \"vigie-gateway\"\npassword = \"{MQTT_PASSWORD}\"\n\
         [database]\napi = \"v1\"\nurl = \"http://{influx}\"\nprefix = \"vigie_\"\ntoken = \"{DB_TOKEN}\"\n\
         [batch]\nlinger = \"100ms\"\n\
         [http]\nlisten = \"{http}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n\
         [log]\nlevel = \"debug\"\n",
        data = dir.path().join("data"),
        registry = dir.path().join("devices.toml"),
        port = broker.addr.port(),
        influx = influx.addr,
    );
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, &config_text).unwrap();
    let cfg = config.to_str().unwrap();
    let mut outputs = Vec::new();

    // CLI commands before the service runs.
    outputs.push(text(&run(&["check-config", cfg])));
    let blob = dir.path().join("aq-new.vgp");
    let added = run(&[
        "devices",
        "add",
        "--config",
        cfg,
        "--tenant",
        "lyon",
        "--id",
        "aq-new",
        "--kind",
        "air-quality",
        "--blob-out",
        blob.to_str().unwrap(),
    ]);
    assert!(added.status.success(), "{}", text(&added));
    outputs.push(text(&added));
    let gw_password = dir.path().join("gw-extra.password");
    let account = run(&[
        "gateways",
        "add",
        "--config",
        cfg,
        "--username",
        "gw-extra",
        "--password-out",
        gw_password.to_str().unwrap(),
    ]);
    assert!(account.status.success(), "{}", text(&account));
    outputs.push(text(&account));
    outputs.push(text(&run(&["devices", "list", "--config", cfg])));
    // Credentials in the database URL (a closed port: --connect's error path too).
    let url_config = dir.path().join("url.toml");
    std::fs::write(
        &url_config,
        config_text.replace(
            &format!("url = \"http://{}\"", influx.addr),
            &format!("url = \"http://vigie:{URL_PASSWORD}@127.0.0.1:9/?p={URL_PASSWORD}\""),
        ),
    )
    .unwrap();
    assert!(
        std::fs::read_to_string(&url_config)
            .unwrap()
            .contains(URL_PASSWORD)
    );
    for connect in [false, true] {
        let mut args = vec!["check-config"];
        if connect {
            args.push("--connect");
        }
        args.push(url_config.to_str().unwrap());
        outputs.push(text(&run(&args)));
    }
    // A broken file: the token's line unterminated, then a mistyped secret.
    for broken in [
        config_text.replace(&format!("{ADMIN_TOKEN}\""), ADMIN_TOKEN),
        config_text.replace(
            &format!("password = \"{MQTT_PASSWORD}\""),
            &format!("password = [\"{MQTT_PASSWORD}\"]"),
        ),
    ] {
        let path = dir.path().join("broken.toml");
        std::fs::write(&path, broken).unwrap();
        let o = run(&["check-config", path.to_str().unwrap()]);
        assert!(!o.status.success());
        outputs.push(text(&o));
    }

    // The service at debug level: valid frames, a forged one, one of an unknown device.
    let log = dir.path().join("service.log");
    let mut service = Command::new(binary())
        .args(["run", "--config", cfg])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("service.err")).unwrap())
        .spawn()
        .unwrap();
    // Ready (subscribed) before anything is published.
    let readyz = format!("http://{http}/readyz");
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while !reqwest::get(&readyz)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(ready.is_ok(), "the service never became ready");
    let load = scenario::load(&devices, 20, now_s() - 600);
    let mut messages = load.messages.clone();
    let mut forged = messages[0].clone();
    let last = forged.1.len() - 1;
    forged.1[last] ^= 1;
    messages.push(forged);
    fleet::publish_all(broker.addr, &messages).await;
    let stored = tokio::time::timeout(Duration::from_secs(30), async {
        while scenario::stored(influx.addr).await.len() < load.expected.len() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        stored.is_ok(),
        "not stored ({:?}):\n{}{}",
        service.try_wait(),
        std::fs::read_to_string(&log).unwrap(),
        std::fs::read_to_string(dir.path().join("service.err")).unwrap()
    );
    outputs.push(text(&run(&["quarantine", "list", "--config", cfg])));
    let replay = run(&["quarantine", "replay", "--config", cfg]);
    assert!(replay.status.success(), "{}", text(&replay));
    outputs.push(text(&replay));
    // A registry line left unterminated, key and all: the reload is refused and the
    // error names line and column everywhere it shows, never the line.
    let good_registry = std::fs::read_to_string(&registry_path).unwrap();
    let key = hex::encode(devices[0].key);
    assert!(good_registry.contains(&format!("\"{key}\"")));
    std::fs::write(
        &registry_path,
        good_registry.replacen(&format!("\"{key}\""), &format!("\"{key}"), 1),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let reload = client
        .post(format!("http://{http}/registry/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(!reload.status().is_success());
    outputs.push(reload.text().await.unwrap());
    for page in ["/readyz", "/", "/devices", "/metrics"] {
        let body = reqwest::get(format!("http://{http}{page}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if page == "/readyz" {
            assert!(body.contains("line ") && body.contains("column"), "{body}");
        }
        outputs.push(body);
    }
    for args in [
        &["check-config", cfg][..],
        &["devices", "list", "--config", cfg],
        &["quarantine", "list", "--config", cfg],
    ] {
        outputs.push(text(&run(args)));
    }
    std::fs::write(&registry_path, good_registry).unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &service.id().to_string()])
        .status();
    let _ = service.wait();
    outputs.push(std::fs::read_to_string(&log).unwrap());
    outputs.push(std::fs::read_to_string(dir.path().join("service.err")).unwrap());
    // Erasure, with the service stopped, and its audit line.
    for yes in [&[][..], &["--yes"]] {
        let args = [
            &[
                "erase", "--config", cfg, "--tenant", "lyon", "--device", "aq-new",
            ],
            yes,
        ];
        let erased = run(&args.concat());
        assert!(erased.status.success(), "{}", text(&erased));
        outputs.push(text(&erased));
    }
    outputs.push(std::fs::read_to_string(dir.path().join("data/audit.log")).unwrap());

    let mut secrets = vec![
        MQTT_PASSWORD.to_string(),
        DB_TOKEN.into(),
        ADMIN_TOKEN.into(),
        URL_PASSWORD.into(),
    ];
    secrets.extend(devices.iter().map(|d| hex::encode(d.key)));
    let registry =
        gateway::fleet::registry::Registry::load(&dir.path().join("devices.toml")).unwrap();
    let added_key = registry.get("lyon", "aq-new").unwrap().key.expose_secret();
    secrets.push(hex::encode(added_key));
    let blob = protocol::provision::Provisioning::decode(&std::fs::read(&blob).unwrap()).unwrap();
    secrets.push(blob.broker_password.to_string());
    secrets.push(
        std::fs::read_to_string(&gw_password)
            .unwrap()
            .trim()
            .to_string(),
    );
    let all = outputs.join("\n");
    let debug_lines = all.lines().filter(|l| l.contains("DEBUG")).count();
    eprintln!(
        "secrets: {} outputs, {} bytes, {debug_lines} debug log lines searched for {} secrets",
        outputs.len(),
        all.len(),
        secrets.len()
    );
    assert!(debug_lines > 0, "the service logged at debug level");
    for s in &secrets {
        assert!(!all.contains(s.as_str()), "a secret leaked:\n{all}");
    }
}
