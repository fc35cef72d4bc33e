//! The registry commands as an operator runs them against a running gateway process: ten
//! `devices add` started at once all land; each command has the running gateway load the
//! registry and says so (no SIGHUP by hand); `devices remove` takes a device out of the
//! registry and of the broker's accounts; the operator's comments in the file survive
//! every rewrite; with the service stopped the command says it loads the registry at start.
#![allow(clippy::unwrap_used)]

use gateway::fleet::registry::Registry;
use gateway::fleet::registry::RegistryFile;
use std::process::{Command, Output, Stdio};
use vigie_tests::process::{self, GatewayProcess, GatewaySettings};
use vigie_tests::{mosquitto, scenario};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_adds_all_land_and_the_running_gateway_loads_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let registry_path = dir.path().join("devices.toml");
    scenario::devices(dir.path(), 1);
    let broker = mosquitto(dir.path());
    let mut gw = GatewayProcess::start(dir.path(), &GatewaySettings::new("gw", broker.addr, None));
    let config = gw.config.clone();
    // An operator's note in the registry.
    let note = "# aq-0: the first sensor, on the town hall's roof\n";
    let text = std::fs::read_to_string(&registry_path).unwrap();
    std::fs::write(
        &registry_path,
        text.replacen("[[device]]", &format!("{note}[[device]]"), 1),
    )
    .unwrap();

    let command = |args: &[&str]| {
        let mut c = Command::new(process::binary());
        c.args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("VIGIE_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    const PARALLEL: usize = 10;
    let children: Vec<_> = (0..PARALLEL)
        .map(|i| {
            let blob = dir.path().join(format!("new-{i}.vgp"));
            command(&[
                "devices",
                "add",
                "--tenant",
                "lyon",
                "--id",
                &format!("new-{i}"),
                "--kind",
                "air-quality",
                "--blob-out",
                blob.to_str().unwrap(),
            ])
            .spawn()
            .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout(&out).contains("The running gateway loaded the registry: "),
            "{}",
            stdout(&out)
        );
    }
    let registry = Registry::load(&registry_path).unwrap();
    assert_eq!(registry.len(), 1 + PARALLEL, "every parallel add landed");
    assert_eq!(
        gw.metric("vigie_registry_devices"),
        Some((1 + PARALLEL) as f64),
        "the running gateway loaded the last change"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&registry_path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);

    let out = command(&["devices", "remove", "--tenant", "lyon", "--id", "new-3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("loaded the registry: {PARALLEL} devices")),
        "{}",
        stdout(&out)
    );
    assert_eq!(gw.metric("vigie_registry_devices"), Some(PARALLEL as f64));
    let access = std::fs::read_to_string(dir.path().join("broker-access.json")).unwrap();
    assert!(!access.contains("lyon.new-3") && access.contains("lyon.new-4"));
    let text = std::fs::read_to_string(&registry_path).unwrap();
    assert!(
        text.contains(note),
        "the operator's note was dropped:\n{text}"
    );

    // Stopped: the change is saved and the command says when it takes effect.
    gw.terminate();
    let out = command(&["devices", "revoke", "--tenant", "lyon", "--id", "new-4"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("does not answer") && stdout(&out).contains("when it starts"),
        "{}",
        stdout(&out)
    );
    let registry = Registry::load(&registry_path).unwrap();
    assert!(registry.get("lyon", "new-4").unwrap().entry.revoked);
    println!(
        "registry_commands: {PARALLEL} parallel adds -> {} devices, remove and revoke applied, note kept",
        1 + PARALLEL
    );
}
