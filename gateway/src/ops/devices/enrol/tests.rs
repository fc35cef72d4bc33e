//! `devices add`, `rotate`, `edit`, `revoke`, `remove` and `gateways add` against a real
//! registry file, blob and broker access file.

use super::*;
use crate::fleet::registry::Registry;
use crate::fleet::registry::RegistryFile;
use protocol::provision::Provisioning;

/// The accounts and ACLs of the access file, as (username, [(acltype, topic)]).
fn accounts(g: &Config) -> Vec<(String, Vec<(String, String)>)> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(g.gateway.broker_access()).unwrap()).unwrap();
    let roles = v["roles"].as_array().unwrap();
    v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let role = c["roles"][0]["rolename"].as_str().unwrap();
            let r = roles.iter().find(|r| r["rolename"] == role).unwrap();
            let acls = r["acls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| (a["acltype"].to_string(), a["topic"].to_string()))
                .collect();
            (c["username"].as_str().unwrap().to_string(), acls)
        })
        .collect()
}

/// A bench registry in `dir`, and the `devices add` of a TLS bin `lyon/bin-7`.
fn bench(dir: &Path) -> (Config, AddDevice) {
    let g = crate::config::GatewayConfig {
        data_dir: dir.join("data"),
        registry: dir.join("devices.toml"),
        broker_access: None,
    };
    let a = AddDevice {
        device: Enrolment {
            tenant: "lyon".into(),
            id: "bin-7".into(),
            kind: DeviceKind::WasteBin,
            site: None,
            zone: Some("nord".into()),
            latitude: None,
            longitude: None,
            bin_depth_mm: Some(1100),
            sample_interval_s: 600,
            heartbeat_s: 3600,
            report_interval_s: 0,
            broker_host: "mqtt.lyon.example".into(),
            broker_port: 8883,
            transport: Transport::Tls { ca_sha256: [7; 32] },
        },
        meta: Metadata {
            insee: Some("69123".into()),
            container: Some("ground".into()),
            capacity_l: Some(660),
            ..Metadata::default()
        },
        blob_out: dir.join("bin-7.vgp"),
        given: Given::default(),
    };
    let g = Config {
        gateway: g,
        ..Config::default()
    };
    (g, a)
}

#[test]
fn add_rotate_revoke_keep_registry_blob_and_broker_accounts_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let (g, mut a) = bench(dir.path());
    // Rotating a device that does not exist is refused.
    assert!(
        add(&g, &a, Enrol::Rotate)
            .unwrap_err()
            .to_string()
            .contains("devices add")
    );
    add(&g, &a, Enrol::Add).unwrap();
    let blob = Provisioning::decode(&std::fs::read(&a.blob_out).unwrap()).unwrap();
    let registry = Registry::load(&g.gateway.registry).unwrap();
    let dev = registry.get("lyon", "bin-7").unwrap();
    assert_eq!(blob.key, dev.key, "blob and registry hold the same key");
    assert_eq!(
        (blob.bin_depth_mm, blob.broker_port, blob.key.epoch()),
        (1100, 8883, 1)
    );
    assert_eq!(blob.transport, a.device.transport);
    // The registry keeps the password's hash only; the blob the password.
    let hash = dev.entry.broker_password_hash.clone().unwrap();
    assert!(access::verify(&hash, &blob.broker_password));
    let text = std::fs::read_to_string(&g.gateway.registry).unwrap();
    assert!(!text.contains(blob.broker_password.as_str()));
    // The device's account may publish its uplink and status, read its acks.
    let q = |s: &str| format!("{s:?}");
    assert_eq!(
        accounts(&g),
        [(
            "lyon.bin-7".to_string(),
            vec![
                (q("publishClientSend"), q("vigie/v1/lyon/bin-7/up")),
                (q("publishClientSend"), q("vigie/v1/lyon/bin-7/status")),
                (q("subscribeLiteral"), q("vigie/v1/lyon/bin-7/ack")),
                (q("publishClientReceive"), q("vigie/v1/lyon/bin-7/ack")),
            ]
        )]
    );
    // A gateway account: may share the uplink subscription and acknowledge.
    let pw = dir.path().join("gw.password");
    crate::ops::gateways::add(&g.gateway, "gw-mairie", &pw).unwrap();
    let secret = std::fs::read_to_string(&pw).unwrap();
    assert_eq!(secret.trim().len(), access::PASSWORD_LEN);
    let gw = Registry::load(&g.gateway.registry).unwrap().gateways()[0].clone();
    assert!(access::verify(&gw.password_hash, secret.trim()));
    assert!(
        crate::ops::gateways::add(&g.gateway, "lyon.bin-7", &pw).is_err(),
        "a device's name"
    );
    // Rotating: next epoch, new key, new password; the gateway account stays.
    a.blob_out = dir.path().join("bin-7b.vgp");
    add(&g, &a, Enrol::Rotate).unwrap();
    let blob2 = Provisioning::decode(&std::fs::read(&a.blob_out).unwrap()).unwrap();
    let again = Registry::load(&g.gateway.registry).unwrap();
    let dev2 = again.get("lyon", "bin-7").unwrap();
    assert_eq!(dev2.key.epoch(), 2);
    assert_ne!(dev2.key.expose_secret(), dev.key.expose_secret());
    assert_ne!(blob2.broker_password, blob.broker_password);
    let hash2 = dev2.entry.broker_password_hash.clone().unwrap();
    assert!(
        access::verify(&hash2, &blob2.broker_password)
            && !access::verify(&hash2, &blob.broker_password)
    );
    // Its metadata came with it, and `devices edit` changes it without a new key.
    assert_eq!(
        (
            dev2.entry.insee.as_deref(),
            dev2.entry.container.as_deref(),
            dev2.entry.capacity_l
        ),
        (Some("69123"), Some("ground"), Some(660))
    );
    let moved = Metadata {
        latitude: Some(45.7578),
        longitude: Some(4.832),
        place: Some("Place Bellecour".into()),
        ..Metadata::default()
    };
    crate::ops::devices::edit(&g, "lyon", "bin-7", &moved).unwrap();
    let edited = Registry::load(&g.gateway.registry).unwrap();
    let dev3 = edited.get("lyon", "bin-7").unwrap();
    assert_eq!(dev3.key, dev2.key, "the key stays");
    assert_eq!(
        (
            dev3.entry.latitude,
            dev3.entry.place.as_deref(),
            dev3.entry.capacity_l
        ),
        (Some(45.7578), Some("Place Bellecour"), Some(660))
    );
    for (bad, says) in [
        (
            Metadata {
                latitude: Some(91.0),
                ..Metadata::default()
            },
            "--latitude",
        ),
        (
            Metadata {
                insee: Some("6912".into()),
                ..Metadata::default()
            },
            "--insee",
        ),
        (
            Metadata {
                container: Some("bag".into()),
                ..Metadata::default()
            },
            "--container",
        ),
        (Metadata::default(), "nothing to change"),
    ] {
        assert!(
            crate::ops::devices::edit(&g, "lyon", "bin-7", &bad)
                .unwrap_err()
                .to_string()
                .contains(says)
        );
    }
    // `add` again, as a repeated shell command would: refused, nothing changed.
    let before = std::fs::read(&g.gateway.registry).unwrap();
    assert!(
        add(&g, &a, Enrol::Add)
            .unwrap_err()
            .to_string()
            .contains("already enrolled (key epoch 2): nothing changed")
    );
    assert_eq!(std::fs::read(&g.gateway.registry).unwrap(), before);
    // A rotation given none of the settings keeps the device's: zone, intervals,
    // broker and the CA its blob pinned (not the command's defaults).
    let mut bare = a.clone();
    bare.device.zone = None;
    bare.device.sample_interval_s = 300;
    bare.device.heartbeat_s = 3600;
    bare.device.broker_host = "127.0.0.1".into();
    bare.device.broker_port = 1883;
    bare.device.transport = Transport::Plain;
    bare.blob_out = dir.path().join("bin-7c.vgp");
    assert!(
        add(&g, &bare, Enrol::Rotate)
            .unwrap()
            .contains("key epoch 3")
    );
    let blob3 = Provisioning::decode(&std::fs::read(&bare.blob_out).unwrap()).unwrap();
    assert_eq!(
        (
            blob3.sample_interval_s,
            blob3.heartbeat_s,
            blob3.broker_host.as_str(),
            blob3.broker_port,
            blob3.transport,
        ),
        (600, 3600, "mqtt.lyon.example", 8883, a.device.transport)
    );
    let kept = Registry::load(&g.gateway.registry).unwrap();
    assert_eq!(
        kept.get("lyon", "bin-7").unwrap().entry.zone.as_deref(),
        Some("nord")
    );
    // What a rotation is given, it takes.
    let mut moved = bare.clone();
    moved.device.sample_interval_s = 120;
    moved.given.sample_interval = true;
    add(&g, &moved, Enrol::Rotate).unwrap();
    let blob4 = Provisioning::decode(&std::fs::read(&moved.blob_out).unwrap()).unwrap();
    assert_eq!((blob4.sample_interval_s, blob4.key.epoch()), (120, 4));
    // Removed and added again: the next epoch, never 1 again (its replay state is
    // the old board's), and a fresh entry.
    crate::ops::devices::remove(&g, "lyon", "bin-7").unwrap();
    let out = add(&g, &a, Enrol::Add).unwrap();
    assert!(
        out.starts_with("added lyon/bin-7") && out.contains("key epoch 5"),
        "{out}"
    );
    let readded = Registry::load(&g.gateway.registry).unwrap();
    assert_eq!(readded.get("lyon", "bin-7").unwrap().key.epoch(), 5);
    assert!(
        readded.removed().is_empty(),
        "the tombstone goes with the new entry"
    );
    // Bad ids get a clear message.
    a.device.id = "Bin 7".into();
    assert!(
        add(&g, &a, Enrol::Add)
            .unwrap_err()
            .to_string()
            .contains("--id")
    );
    assert!(
        crate::ops::devices::revoke(&g, "lyon", "nope")
            .unwrap_err()
            .to_string()
            .contains("no device")
    );
    // Revoking removes the device's broker account, keeps the gateway's.
    crate::ops::devices::revoke(&g, "lyon", "bin-7").unwrap();
    let reg = Registry::load(&g.gateway.registry).unwrap();
    assert!(reg.get("lyon", "bin-7").unwrap().entry.revoked);
    let names: Vec<_> = accounts(&g).into_iter().map(|(u, _)| u).collect();
    assert_eq!(names, ["gw-mairie"]);
}

#[test]
fn broker_ca_pins_the_sha256_of_the_first_certificate() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(transport(None).unwrap(), Transport::Plain);
    let pem = dir.path().join("ca.pem");
    std::fs::write(
        &pem,
        "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n\
         -----BEGIN CERTIFICATE-----\nAwQF\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let want = ring::digest::digest(&ring::digest::SHA256, &[0, 1, 2]);
    assert_eq!(
        transport(Some(&pem)).unwrap(),
        Transport::Tls {
            ca_sha256: want.as_ref().try_into().unwrap()
        }
    );
    std::fs::write(&pem, "not a certificate").unwrap();
    assert!(
        transport(Some(&pem))
            .unwrap_err()
            .to_string()
            .contains("no PEM certificate")
    );
    let missing = dir.path().join("missing.pem");
    assert!(
        transport(Some(&missing))
            .unwrap_err()
            .to_string()
            .starts_with("--broker-ca")
    );
}

#[test]
fn a_report_interval_writes_a_format_4_blob_that_a_rotation_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let (g, mut a) = bench(dir.path());
    (a.device.sample_interval_s, a.device.transport) = (300, Transport::Plain);
    // Under a minute, or under the sampling interval: refused, the option named.
    for bad in [30, 200] {
        a.device.report_interval_s = bad;
        let e = add(&g, &a, Enrol::Add).unwrap_err().to_string();
        assert!(e.contains("--report-interval"), "{e}");
    }
    a.device.report_interval_s = 21_600;
    add(&g, &a, Enrol::Add).unwrap();
    let bytes = std::fs::read(&a.blob_out).unwrap();
    assert_eq!(&bytes[..4], b"VGP4");
    assert_eq!(
        Provisioning::decode(&bytes).unwrap().report_interval_s,
        21_600
    );
    // A rotation not given the option keeps it (and the previous key: format 4 has both).
    let mut bare = a.clone();
    bare.device.report_interval_s = 0;
    add(&g, &bare, Enrol::Rotate).unwrap();
    let rotated = Provisioning::decode(&std::fs::read(&bare.blob_out).unwrap()).unwrap();
    assert_eq!(rotated.report_interval_s, 21_600);
    assert_eq!(rotated.previous.map(|k| k.epoch()), Some(1));
    let entry = Registry::load(&g.gateway.registry).unwrap();
    assert_eq!(
        entry.get("lyon", "bin-7").unwrap().entry.report_interval_s,
        Some(21_600)
    );
}

/// In a group, a registry change goes to the group's store first: a store that does not
/// take it leaves the registry and the broker's accounts as they were, and says so.
#[test]
fn in_a_group_a_change_the_store_refuses_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut g, a) = bench(dir.path());
    add(&g, &a, Enrol::Add).unwrap();
    let (registry, access) = (
        std::fs::read(&g.gateway.registry).unwrap(),
        std::fs::read(g.gateway.broker_access()).unwrap(),
    );
    g.group = Some(crate::config::GroupConfig {
        // Nothing listens on port 1: the store does not answer.
        etcd: vec!["http://127.0.0.1:1".into()],
        timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    });
    let e = crate::ops::devices::remove(&g, "lyon", "bin-7")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no etcd member answered") && e.contains("nothing was changed"),
        "{e}"
    );
    let e = add(&g, &a, Enrol::Rotate).unwrap_err().to_string();
    assert!(e.contains("nothing was changed"), "{e}");
    assert_eq!(std::fs::read(&g.gateway.registry).unwrap(), registry);
    assert_eq!(std::fs::read(g.gateway.broker_access()).unwrap(), access);
}
