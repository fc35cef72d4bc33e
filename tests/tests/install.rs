//! The install of docs/OPERATIONS.md ("Install"), as root on this machine (CI machines are
//! disposable; a previous install is purged first): the Debian package built by
//! `scripts/package.sh` installed with `dpkg -i`; the gateway's broker account, the
//! commune's database and a device added as root with the CLI, the broker's certificate made with `broker-cert`, the
//! config edited as the docs say; `check-config` passed as
//! the service user; Debian's Mosquitto with its stock configuration and the shipped
//! drop-in, dropping to its own user and reading the accounts the commands wrote; the
//! service started as its installed unit would (its `User=` and `ExecStart=`, with systemd's
//! notification socket); a simulated board, the package's `vigie-sim`, running the blob
//! `devices add` wrote. Every
//! reading the board recorded is stored; the service reported ready, pinged its watchdog
//! and stopped cleanly; the package installed again (as an upgrade would) kept the edited
//! config, the registry and the state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vigie_tests::process::run;
use vigie_tests::servers::{BrokerSetup, mosquitto_at};
use vigie_tests::tls::TestPki;
use vigie_tests::{free_port, influxdb, readback, wait_for};

const CONFIG: &str = "/etc/vigie/gateway.toml";
/// Where the package puts the unit (`/usr/lib` or `/lib`, as the packager chooses).
fn unit_path() -> &'static str {
    [
        "/usr/lib/systemd/system/vigie-gateway.service",
        "/lib/systemd/system/vigie-gateway.service",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("the package installs the systemd unit")
}

/// The newest package `scripts/package.sh` built.
fn package() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    debs.retain(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        name.starts_with("vigie-gateway_") && name.ends_with("_amd64.deb")
    });
    debs.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    debs.pop().unwrap_or_else(|| {
        panic!(
            "no package in {}: scripts/package.sh builds it (the test command runs it first)",
            dir.display()
        )
    })
}

/// `stat -c FORMAT path`.
fn stat(format: &str, path: &str) -> String {
    run("stat", &["-c", format, path]).trim().to_string()
}

/// The service process, stopped like systemd stops it (SIGTERM), killed if still there.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_installs_and_a_board_reading_reaches_the_database_as_the_docs_say() {
    let deb = package();
    let deb = deb.to_str().unwrap();
    // A fresh machine: what an earlier run installed goes first.
    let _ = Command::new("dpkg")
        .args(["--purge", "vigie-gateway"])
        .output();
    for leftover in ["/etc/vigie", "/var/lib/vigie"] {
        let _ = std::fs::remove_dir_all(leftover);
    }

    // 1. The package.
    assert_eq!(
        run("dpkg-deb", &["--field", deb, "Architecture"]).trim(),
        "amd64"
    );
    run("dpkg", &["-i", deb]);
    assert!(run("getent", &["passwd", "vigie"]).contains("/usr/sbin/nologin"));
    assert_eq!(stat("%U:%G %a", CONFIG), "root:vigie 640");
    assert_eq!(stat("%U:%G %a", "/var/lib/vigie"), "vigie:vigie 700");
    for file in [
        "/usr/bin/vigie-gateway",
        "/usr/share/man/man1/vigie-gateway.1.gz",
        "/usr/share/man/man1/vigie-gateway-devices-add.1.gz",
        "/usr/share/bash-completion/completions/vigie-gateway",
        "/usr/share/doc/vigie-gateway/OPERATIONS.md",
        "/usr/share/doc/vigie-gateway/examples/mosquitto.conf",
    ] {
        assert!(Path::new(file).exists(), "{file} not installed");
    }
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    assert!(
        run("dpkg-query", &["-W", "-f=${Conffiles}", "vigie-gateway"]).contains(CONFIG),
        "the config is a conffile"
    );

    // 2. The servers: InfluxDB, and Mosquitto's ports chosen.
    let influx = influxdb();
    // The broker's certificate, as the docs make it (its CA beside the registry).
    let certs = tempfile::tempdir().unwrap();
    let certs_dir = certs.path().to_str().unwrap();
    run(
        "/usr/bin/vigie-gateway",
        &[
            "broker-cert",
            "--config",
            CONFIG,
            "--host",
            "localhost",
            "--out-dir",
            certs_dir,
        ],
    );
    let mut broker_setup = BrokerSetup::with_pki(TestPki {
        ca: "/etc/vigie/ca.pem".into(),
        cert: certs.path().join("vigie-broker.crt"),
        key: certs.path().join("vigie-broker.key"),
    });
    broker_setup.as_mosquitto_user = true;
    let broker_addr = broker_setup.addr;

    // 3. As root: the gateway's broker account, the config, a device.
    let vigie = |args: &[&str]| run("/usr/bin/vigie-gateway", args);
    vigie(&[
        "gateways",
        "add",
        "--config",
        CONFIG,
        "--username",
        "gw-1",
        "--password-out",
        "/etc/vigie/mqtt.password",
    ]);
    let http = format!("127.0.0.1:{}", free_port());
    let mut config: toml_edit::DocumentMut =
        std::fs::read_to_string(CONFIG).unwrap().parse().unwrap();
    config["mqtt"]["host"] = toml_edit::value("127.0.0.1");
    config["mqtt"]["port"] = toml_edit::value(i64::from(broker_addr.port()));
    config["mqtt"]["username"] = toml_edit::value("gw-1");
    config["mqtt"]["password_file"] = toml_edit::value("/etc/vigie/mqtt.password");
    config["http"]["listen"] = toml_edit::value(&http);
    config["database"]["api"] = toml_edit::value("v1");
    config["database"]["url"] = toml_edit::value(format!("http://{}", influx.addr));
    config["database"]["prefix"] = toml_edit::value("vigie_");
    std::fs::write(CONFIG, config.to_string()).unwrap();
    let made = vigie(&[
        "tenants",
        "add",
        "--config",
        CONFIG,
        "--tenant",
        "lyon",
        "--retention",
        "730d",
    ]);
    assert!(made.contains("vigie_lyon ready"), "{made}");
    let dir = tempfile::tempdir().unwrap();
    // The service user reaches the notification socket in it.
    run("chmod", &["755", dir.path().to_str().unwrap()]);
    let blob = dir.path().join("lyon-aq-0001.vgp");
    let added = vigie(&[
        "devices",
        "add",
        "--config",
        CONFIG,
        "--tenant",
        "lyon",
        "--id",
        "aq-0001",
        "--kind",
        "air-quality",
        "--broker-host",
        "127.0.0.1",
        "--broker-port",
        &broker_addr.port().to_string(),
        "--sample-interval",
        "60",
        "--heartbeat",
        "0",
        "--blob-out",
        blob.to_str().unwrap(),
    ]);
    assert!(added.contains("added lyon/aq-0001"), "{added}");
    for (file, owner) in [
        ("/etc/vigie/devices.toml", "root:vigie 640"),
        ("/etc/vigie/mqtt.password", "root:vigie 640"),
        ("/etc/vigie/broker-access.json", "root:mosquitto 640"),
    ] {
        assert_eq!(stat("%U:%G %a", file), owner, "{file}");
    }
    let checked = run(
        "runuser",
        &[
            "-u",
            "vigie",
            "--",
            "/usr/bin/vigie-gateway",
            "check-config",
            CONFIG,
        ],
    );
    assert!(
        checked.contains("config ok") && checked.contains("1 devices"),
        "{checked}"
    );

    // 4. Mosquitto: Debian's own config, the drop-in, its own user.
    let broker = mosquitto_at(Path::new("/etc/vigie"), broker_setup);

    // 5. The service as its unit runs it.
    let user = unit
        .lines()
        .find_map(|l| l.strip_prefix("User="))
        .unwrap()
        .to_string();
    let exec: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    run("chown", &[&user, notify_path.to_str().unwrap()]);
    // systemd reads its socket at once; so does this thread (a full socket would block
    // the service's next notification).
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let notes = Arc::new(Mutex::new(Vec::<String>::new()));
    let listening = Arc::new(AtomicBool::new(true));
    let listener = {
        let (notes, listening) = (notes.clone(), listening.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while listening.load(Ordering::Relaxed) {
                if let Ok(n) = notify.recv(&mut buf) {
                    let note = String::from_utf8_lossy(&buf[..n]).into_owned();
                    notes.lock().unwrap().push(note);
                }
            }
        })
    };
    let noted = |what: &'static str| {
        let notes = notes.clone();
        async move || notes.lock().unwrap().iter().any(|n| n.contains(what))
    };
    let log = std::fs::File::create(dir.path().join("service.log")).unwrap();
    let service = Service(
        // As systemd does: the watchdog variables name the service's own process (the
        // shell execs setpriv, which execs the service: one pid throughout).
        Command::new("sh")
            .args(["-c", "export WATCHDOG_PID=$$; exec \"$@\"", "sh", "setpriv"])
            .args([
                &format!("--reuid={user}"),
                &format!("--regid={user}"),
                "--init-groups",
            ])
            .args(&exec)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "1000000")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let service_log = || std::fs::read_to_string(dir.path().join("service.log")).unwrap();
    wait_for("READY=1", Duration::from_secs(30), noted("READY=1")).await;
    let readyz = format!("http://{http}/readyz");
    wait_for(
        "the service connected",
        Duration::from_secs(30),
        async || {
            reqwest::get(&readyz)
                .await
                .is_ok_and(|r| r.status().is_success())
        },
    )
    .await;

    // 6. The board: the packaged simulator (`vigie-sim`, no Rust needed) runs the blob
    // `devices add` wrote, as README says.
    let blobs = blob.parent().unwrap().to_str().unwrap();
    let broker_arg = broker_addr.to_string();
    let out = Command::new("/usr/bin/vigie-sim")
        .args(["--blobs", blobs, "--broker", &broker_arg])
        .args(["--accel", "120", "--duration", "8", "--status-every", "10"])
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    let count = |key: &str| -> u64 {
        summary
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.parse().ok())
            .unwrap_or_else(|| panic!("{key} in the summary: {summary}"))
    };
    let kept = (count("recorded=") - count("dropped=")) as usize;
    assert!(
        out.status.success() && count("failed=") == 0 && count("waiting=") == 0 && kept > 0,
        "every reading acknowledged: {summary}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        service_log()
    );
    let stored = async || -> BTreeSet<String> {
        readback::influx_points(
            influx.addr,
            "vigie_lyon",
            &["air_quality", "device_status", "device_energy"],
        )
        .await
        .iter()
        .map(|p| p.split('|').skip(1).take(3).collect::<Vec<_>>().join("|"))
        .collect()
    };
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while stored().await.len() < kept && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stored().await.len(), kept, "{summary}\n{}", service_log());
    // The status page the docs point to lists the board, heard from.
    let page = reqwest::get(format!("http://{http}/commune/lyon"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"id="device-aq-0001""#) && !page.contains("jamais entendu"),
        "{page}"
    );

    // 7. Watchdog pings, then a stop as systemd does it.
    wait_for("WATCHDOG=1", Duration::from_secs(10), noted("WATCHDOG=1")).await;
    let mut service = service;
    run("kill", &["-TERM", &service.0.id().to_string()]);
    let status = service.0.wait().unwrap();
    assert!(status.success(), "{status}:\n{}", service_log());
    wait_for("STOPPING=1", Duration::from_secs(10), noted("STOPPING=1")).await;
    listening.store(false, Ordering::Relaxed);
    listener.join().unwrap();
    let messages = notes.lock().unwrap().clone();
    assert_eq!(stat("%U", "/var/lib/vigie/buffer"), user);

    // 8. An upgrade (here the same version installed again) keeps the edited config,
    // the registry and the state.
    let registry_before = std::fs::read_to_string("/etc/vigie/devices.toml").unwrap();
    let config_before = std::fs::read_to_string(CONFIG).unwrap();
    run("dpkg", &["-i", deb]);
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), config_before);
    assert_eq!(
        std::fs::read_to_string("/etc/vigie/devices.toml").unwrap(),
        registry_before
    );
    assert_eq!(stat("%U:%G %a", CONFIG), "root:vigie 640");
    assert!(
        Path::new("/var/lib/vigie/buffer").is_dir(),
        "the state is kept"
    );
    drop(broker);
    let pings = messages.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    println!(
        "install: {deb} installed; the packaged vigie-sim recorded {} readings, {kept} kept, \
         all stored; systemd heard READY=1, {pings} watchdog pings, STOPPING=1",
        count("recorded=")
    );
}
