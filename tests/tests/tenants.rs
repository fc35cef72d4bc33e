//! Communes by command against a real InfluxDB 1.x: `tenants add` creates the database
//! with the retention the config or the command gives (and changes it when run again),
//! `tenants list` and `check-config --connect` show each commune's database (a missing one
//! named), and
//! `tenants remove` refuses while devices remain, keeps the readings unless asked, and
//! with `--drop-database` drops them. With VictoriaMetrics it says there is nothing to make.
#![allow(clippy::unwrap_used)]

use gateway::fleet::registry::DeviceKind;
use std::path::Path;
use std::process::Output;
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{self, text};
use vigie_tests::{influxdb, readback};

/// The gateway's command `args` on the config at `config`.
fn cli(args: &[&str], config: &Path) -> Output {
    let config = config.to_str().unwrap();
    process::cli(&[args, &["--config", config]].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_add_list_and_remove_manage_databases_and_retention() {
    let influx = influxdb();
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("devices.toml");
    fleet::write_registry(
        &registry,
        &[
            Device::new("lyon", "aq-1", DeviceKind::AirQuality),
            Device::new("lyon", "aq-2", DeviceKind::AirQuality),
            Device::new("nice", "aq-1", DeviceKind::AirQuality),
        ],
    );
    let config = dir.path().join("gateway.toml");
    let write_config = |kind: &str| {
        std::fs::write(
            &config,
            format!(
                "[gateway]\ndata_dir = \"{}\"\nregistry = \"{}\"\n\
                 [database]\napi = \"v1\"\nkind = \"{kind}\"\nurl = \"http://{}\"\n\
                 prefix = \"vigie_\"\nretention = \"30d\"\n",
                dir.path().join("data").display(),
                registry.display(),
                influx.addr
            ),
        )
        .unwrap();
    };
    write_config("influxdb");
    let policy = async |db: &str| {
        let body =
            readback::influx_query(influx.addr, db, &format!("SHOW RETENTION POLICIES ON {db}"))
                .await;
        let row = body["results"][0]["series"][0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[4].as_bool() == Some(true))
            .cloned()
            .unwrap();
        (
            row[0].as_str().unwrap().to_string(),
            row[1].as_str().unwrap().to_string(),
        )
    };
    // Whether a database exists: InfluxDB answers its retention policies, or an error.
    let exists = async |db: &str| {
        let body =
            readback::influx_query(influx.addr, db, &format!("SHOW RETENTION POLICIES ON {db}"))
                .await;
        body["results"][0]["error"].is_null()
    };

    // check-config --connect names each commune without its database.
    let connect = || process::cli(&["check-config", "--connect", config.to_str().unwrap()]);
    let out = connect();
    assert!(!out.status.success());
    for db in ["vigie_lyon", "vigie_nice"] {
        assert!(
            text(&out).contains(&format!("database {db}")),
            "{}",
            text(&out)
        );
    }

    // The config's retention (30 days) keeps less than validation.max_age (90 days by
    // default): refused, nothing made. Then the command's, a year.
    let out = cli(&["tenants", "add", "--tenant", "lyon"], &config);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("30 days keeps less than validation.max_age (90 days)"),
        "{}",
        text(&out)
    );
    assert!(!exists("vigie_lyon").await);
    let out = cli(
        &["tenants", "add", "--tenant", "lyon", "--retention", "90d"],
        &config,
    );
    assert!(!out.status.success(), "no day to spare: {}", text(&out));
    let out = cli(
        &["tenants", "add", "--tenant", "lyon", "--retention", "365d"],
        &config,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("vigie_lyon ready"), "{}", text(&out));
    assert_eq!(
        policy("vigie_lyon").await,
        ("vigie".into(), "8760h0m0s".into())
    );

    let out = connect();
    assert!(
        !text(&out).contains("vigie_lyon") && text(&out).contains("vigie_nice of nice is missing"),
        "{}",
        text(&out)
    );
    // A commune made before any of its devices is enrolled is listed too (it was "0
    // tenants" right after two `tenants add`), its long name not shifting the columns.
    let out = cli(
        &[
            "tenants",
            "add",
            "--tenant",
            "villefranche-sur-saone",
            "--retention",
            "730d",
        ],
        &config,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&["tenants", "list"], &config);
    let listed = text(&out);
    assert!(out.status.success(), "{listed}");
    let line = |t: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(t))
            .unwrap_or_else(|| panic!("no {t} in:\n{listed}"))
            .to_string()
    };
    assert!(
        line("lyon").contains("vigie_lyon (readings kept for 365 days)"),
        "{listed}"
    );
    assert_eq!(
        line("lyon").split_whitespace().nth(1),
        Some("2"),
        "{listed}"
    );
    assert!(line("nice").contains("vigie_nice MISSING"), "{listed}");
    let villefranche = line("villefranche-sur-saone");
    assert!(
        villefranche.contains("vigie_villefranche-sur-saone (readings kept for 730 days)")
            && villefranche.split_whitespace().nth(1) == Some("0"),
        "{listed}"
    );
    assert_eq!(
        line("lyon").find("vigie_lyon"),
        villefranche.find("vigie_villefranche"),
        "one column: {listed}"
    );
    assert!(listed.contains("3 tenants"), "{listed}");

    // Leaving: refused while devices remain; readings kept unless asked.
    let out = cli(&["tenants", "remove", "--tenant", "lyon"], &config);
    assert!(!out.status.success());
    assert!(text(&out).contains("2 devices of lyon"), "{}", text(&out));
    for id in ["aq-1", "aq-2"] {
        let out = cli(
            &["devices", "remove", "--tenant", "lyon", "--id", id],
            &config,
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = cli(&["tenants", "remove", "--tenant", "lyon"], &config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(exists("vigie_lyon").await);
    // Another commune mapped to the same database: dropping it is refused.
    let shared = dir.path().join("shared.toml");
    let mut text_shared = std::fs::read_to_string(&config).unwrap();
    text_shared.push_str("[database.tenants]\nnice = \"vigie_lyon\"\n");
    std::fs::write(&shared, text_shared).unwrap();
    let out = cli(
        &["tenants", "remove", "--tenant", "lyon", "--drop-database"],
        &shared,
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("also holds the readings of nice"),
        "{}",
        text(&out)
    );
    assert!(exists("vigie_lyon").await, "not dropped");
    let out = cli(
        &["tenants", "remove", "--tenant", "lyon", "--drop-database"],
        &config,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!exists("vigie_lyon").await);

    // VictoriaMetrics: one store, one retention.
    write_config("victoriametrics");
    let out = cli(&["tenants", "add", "--tenant", "nice"], &config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing to create"), "{}", text(&out));
    assert!(!exists("vigie_nice").await);
    println!(
        "tenants: 30d and 90d refused (under max_age), created with 365 days, a commune without devices listed, refused with devices, dropped"
    );
}
