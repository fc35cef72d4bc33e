//! The `gateway` binary as an operator meets it: the commented example configuration is
//! valid, `devices add` writes a registry entry and a blob, and a configuration mistake is
//! one actionable line on stderr with a failure exit, never a panic.
//!
//! Being an integration test of this package, it also makes `cargo test --workspace` build
//! `target/<profile>/gateway`, which the process-based tests in `vigie-tests` start.

#![allow(clippy::unwrap_used)] // a test: a failed setup step should stop it loudly

use gateway::fleet::registry::RegistryFile;
use std::path::Path;
use std::process::{Command, Output};

fn gateway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .env_remove("VIGIE_CONFIG")
        .output()
        .unwrap()
}

/// The example file with its paths moved into `dir`.
fn example_config(dir: &Path) -> std::path::PathBuf {
    let example = include_str!("../gateway.example.toml")
        .replace("/var/lib/vigie", &dir.join("data").display().to_string())
        .replace(
            "/etc/vigie/devices.toml",
            &dir.join("devices.toml").display().to_string(),
        );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, example).unwrap();
    path
}

#[test]
fn example_config_is_valid_and_devices_add_registers_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let config = config.to_str().unwrap();
    let blob = dir.path().join("aq.vgp");

    // No registry yet: the service could not start, so the check fails and says how.
    let out = gateway(&["check-config", config]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("devices.toml") && stderr.contains("`devices add`"),
        "{stderr}"
    );

    let out = gateway(&[
        "devices",
        "add",
        "--config",
        config,
        "--tenant",
        "lyon",
        "--id",
        "aq-0001",
        "--kind",
        "air-quality",
        "--blob-out",
        blob.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&blob).unwrap();
    let provisioning = protocol::provision::Provisioning::decode(&bytes).unwrap();
    assert_eq!(provisioning.device.as_str(), "aq-0001");

    let out = gateway(&["check-config", config]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 devices"));
    // The key is in the registry file and the blob, never on the terminal.
    let printed = [out.stdout, out.stderr].concat();
    let key_hex: String = provisioning
        .key
        .expose_secret()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!String::from_utf8_lossy(&printed).contains(&key_hex));
}

#[test]
fn a_config_mistake_is_one_clear_line_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen("[batch]", "[batch]\nmax_linger = 3", 1),
    )
    .unwrap();

    let out = gateway(&["check-config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("max_linger"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_missing_registry_stops_the_service_at_start_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let out = gateway(&["run", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success(), "started without a registry");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("devices.toml") && stderr.contains("No such file"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn check_config_refuses_a_bogus_log_level_and_an_unwritable_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    std::fs::write(dir.path().join("devices.toml"), "").unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    for (mistake, named) in [
        (
            text.replace("level = \"info\"", "level = \"verbose\""),
            "log.level",
        ),
        (
            text.replace(
                &dir.path().join("data").display().to_string(),
                "/proc/vigie/data",
            ),
            "gateway.data_dir",
        ),
    ] {
        assert_ne!(mistake, text, "the example changed: {named}");
        std::fs::write(&config, &mistake).unwrap();
        let out = gateway(&["check-config", config.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{named} accepted");
        assert!(stderr.contains(named), "{stderr}");
    }
}

#[test]
fn config_prints_the_example_which_is_valid() {
    let out = gateway(&["config"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, include_str!("../gateway.example.toml"));
    gateway::config::Config::parse(&text)
        .unwrap()
        .validate()
        .unwrap();
}

/// `devices import`: a commune's 200 bins in one file. Each row goes through the checks of
/// `devices add`; the refused ones are named by line and the others kept; importing the
/// same file again adds nothing and refuses every row as already enrolled.
#[test]
fn devices_import_enrols_a_csv_file_row_by_row_and_names_the_refused_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let config = config.to_str().unwrap();
    let csv = dir.path().join("bins.csv");
    std::fs::write(
        &csv,
        "tenant,id,kind,site,latitude,longitude,bin_depth_mm,sample_interval\n\
         lyon,bin-1,waste-bin,Place Bellecour,45.757,4.832,1200,600\n\
         lyon,bin-2,waste-bin,\"Quai Saint-Antoine, nord\",,,1000,\n\
         lyon,aq-1,air-quality,,,,,\n\
         lyon,bin-3,rubbish-bin,,,,,\n\
         lyon,Bin 4,waste-bin,,,,,\n\
         lyon,bin-1,waste-bin,,,,,\n",
    )
    .unwrap();
    let blobs = dir.path().join("blobs");
    std::fs::create_dir(&blobs).unwrap();
    let import = || {
        gateway(&[
            "devices",
            "import",
            "--config",
            config,
            "--csv",
            csv.to_str().unwrap(),
            "--blob-dir",
            blobs.to_str().unwrap(),
        ])
    };
    let out = import();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "rows were refused: {stdout}{stderr}");
    assert!(stdout.contains("3 devices added, 3 refused"), "{stdout}");
    // No admin token and no service yet: no warning, it loads the registry when it starts.
    assert!(
        stdout.contains("does not answer") && !stdout.contains("admin_token"),
        "{stdout}"
    );
    for line in [
        ":5: kind \"rubbish-bin\"",
        ":6: --id",
        ":7: lyon/bin-1 is already enrolled",
    ] {
        assert!(stderr.contains(line), "{line} in {stderr}");
    }
    let registry =
        gateway::fleet::registry::Registry::load(&dir.path().join("devices.toml")).unwrap();
    assert_eq!(registry.len(), 3);
    let bin1 = registry.get("lyon", "bin-1").unwrap();
    assert_eq!(bin1.entry.site.as_deref(), Some("Place Bellecour"));
    assert_eq!(bin1.entry.sample_interval_s, Some(600));
    let bin2 = registry.get("lyon", "bin-2").unwrap();
    assert_eq!(bin2.entry.site.as_deref(), Some("Quai Saint-Antoine, nord"));
    for id in ["bin-1", "bin-2", "aq-1"] {
        let bytes = std::fs::read(blobs.join(format!("lyon-{id}.vgp"))).unwrap();
        let p = protocol::provision::Provisioning::decode(&bytes).unwrap();
        assert_eq!(p.device.as_str(), id);
    }
    // Again: nothing changes, every row refused.
    let before = std::fs::read(dir.path().join("devices.toml")).unwrap();
    let again = import();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 devices added, 6 refused"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    assert_eq!(
        std::fs::read(dir.path().join("devices.toml")).unwrap(),
        before
    );
}
