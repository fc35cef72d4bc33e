//! The registry file: round trips that keep comments, locking, enrolment.

use super::*;
use protocol::Kind;

#[test]
fn enrolment_builds_one_entry_and_its_blob_or_names_the_mistake() {
    let e = Enrolment {
        tenant: "lyon".into(),
        id: "bin-1".into(),
        kind: DeviceKind::WasteBin,
        site: Some("Bellecour".into()),
        zone: None,
        latitude: Some(45.76),
        longitude: Some(4.83),
        bin_depth_mm: Some(1100),
        sample_interval_s: 600,
        heartbeat_s: 3600,
        report_interval_s: 0,
        broker_host: "mqtt.lyon.example".into(),
        broker_port: 8883,
        transport: Transport::Plain,
    };
    let pw = Secret::new("Pa55word");
    let (entry, blob) = enroll(&e, [9; 16], 3, &pw).unwrap();
    let registry = Registry::from_entries(vec![entry]).unwrap();
    let dev = registry.get("lyon", "bin-1").unwrap();
    assert_eq!(dev.key, blob.key, "the registry and the blob hold one key");
    assert_eq!(blob.key.epoch(), 3);
    assert_eq!(
        (blob.bin_depth_mm, blob.broker_port, blob.kind),
        (1100, 8883, Kind::WasteBin)
    );
    let bad = |f: fn(&mut Enrolment)| {
        let mut b = e.clone();
        f(&mut b);
        enroll(&b, [9; 16], 1, &pw).unwrap_err()
    };
    for p in ["", "has space", &"x".repeat(33)] {
        assert_eq!(
            enroll(&e, [9; 16], 1, &Secret::new(p)).unwrap_err(),
            EnrolError::Password
        );
    }
    assert!(matches!(
        bad(|b| b.tenant = "Lyon".into()),
        EnrolError::Tenant(..)
    ));
    assert!(matches!(bad(|b| b.id = "bin 1".into()), EnrolError::Id(..)));
    assert!(matches!(
        bad(|b| b.broker_host = "h".repeat(65)),
        EnrolError::Host(..)
    ));
    assert!(matches!(
        bad(|b| b.broker_host = String::new()),
        EnrolError::Host(..)
    ));
}

fn entry(tenant: &str, id: &str) -> DeviceEntry {
    let key = "000102030405060708090a0b0c0d0e0f".to_string();
    DeviceEntry {
        site: Some("Place Bellecour".into()),
        latitude: Some(45.757),
        longitude: Some(4.832),
        ..DeviceEntry::new(tenant, id, DeviceKind::AirQuality, key, 1)
    }
}

#[test]
fn save_load_round_trip_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.toml");
    let mut r = Registry::default();
    r.upsert(entry("lyon", "aq-0001")).unwrap();
    r.upsert(entry("villeurbanne", "aq-0001")).unwrap();
    assert!(r.revoke("lyon", "aq-0001"));
    r.save(&path).unwrap();
    let back = Registry::load(&path).unwrap();
    assert_eq!(back.len(), 2);
    assert!(back.get("lyon", "aq-0001").unwrap().entry.revoked);
    assert_eq!(
        back.get("villeurbanne", "aq-0001")
            .unwrap()
            .key
            .expose_secret()[15],
        15
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    assert!(!format!("{back:?}").contains("0a0b0c"));
}

#[test]
fn edits_keep_comments_owner_and_mode_and_parallel_edits_all_land() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.toml");
    let edit = |change: &dyn Fn(&mut Registry) -> bool| {
        let mut l = lock(&path).unwrap();
        if change(&mut l.registry) {
            l.save().unwrap();
        }
    };
    edit(&|r| r.upsert(entry("lyon", "aq-0001")).is_ok());
    // An operator's comments, and a mode they chose.
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[[device]]",
        "# Bellecour, on the lamp post by the fountain\n[[device]]",
    );
    let text = text.replace("epoch = 1", "epoch = 1 # re-keyed after the storm");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

    let threads: Vec<_> = (0..10)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut l = lock(&path).unwrap();
                l.registry
                    .upsert(entry("villeurbanne", &format!("bin-{i}")))
                    .unwrap();
                l.save().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    edit(&|r| r.revoke("lyon", "aq-0001"));
    let back = Registry::load(&path).unwrap();
    assert_eq!(back.len(), 11, "every parallel edit landed");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("# Bellecour, on the lamp post by the fountain\n"),
        "{text}"
    );
    assert!(text.contains("# re-keyed after the storm"), "{text}");
    assert!(text.starts_with("# Vigie device registry"), "{text}");
    assert!(back.get("lyon", "aq-0001").unwrap().entry.revoked);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the mode the operator chose is kept");
    // Removal drops the table and nothing else; a change not saved is not kept.
    edit(&|r| r.remove("villeurbanne", "bin-3"));
    edit(&|r| !r.remove("lyon", "aq-0001"));
    let back = Registry::load(&path).unwrap();
    assert_eq!(back.len(), 10);
    assert!(back.get("villeurbanne", "bin-3").is_none());
    assert!(back.get("lyon", "aq-0001").is_some());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bad_entries_are_named() {
    let mut e = entry("lyon", "aq-0001");
    e.key = "abc".into();
    let err = Registry::from_entries(vec![e]).unwrap_err().to_string();
    assert!(
        err.contains("lyon/aq-0001") && err.contains("32 hex"),
        "{err}"
    );
    let mut bin = entry("lyon", "bin-1");
    bin.kind = DeviceKind::WasteBin;
    assert!(
        Registry::from_entries(vec![bin])
            .unwrap_err()
            .to_string()
            .contains("bin_depth_mm")
    );
    // Tags are bounded: a frame of 64 readings must fit one buffer record.
    let mut long = entry("lyon", "aq-long");
    long.site = Some("é".repeat(MAX_TEXT_CHARS));
    assert!(Registry::from_entries(vec![long.clone()]).is_ok());
    long.zone = Some("z".repeat(MAX_TEXT_CHARS + 1));
    assert!(
        Registry::from_entries(vec![long])
            .unwrap_err()
            .to_string()
            .contains("zone: at most 64 characters")
    );
    let dup = vec![entry("lyon", "a"), entry("lyon", "a")];
    assert!(
        Registry::from_entries(dup)
            .unwrap_err()
            .to_string()
            .contains("twice")
    );
    assert!(Registry::from_entries(vec![entry("Lyon", "a")]).is_err());
    assert!(
        Registry::load(Path::new("/nonexistent/devices.toml"))
            .unwrap()
            .is_empty()
    );
}

/// A broken registry line names line and column, never the line: it may hold a key
/// (an unterminated string, a mistyped value, the save path too).
#[test]
fn a_broken_line_is_named_by_position_never_quoted() {
    let key = "5ec2e75ec2e75ec2e75ec2e75ec2e75e";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.toml");
    // (text, line named, a syntax error that saving over it also reports)
    for (text, line, syntax) in [
        (
            format!("[[device]]\ntenant = \"lyon\"\nkey = \"{key}\n"),
            3,
            true,
        ),
        (
            format!("[[device]]\ntenant = \"lyon\"\nepoch = \"{key}\"\n"),
            3,
            false,
        ),
        (format!("[[device]]\nkey = {key}\n"), 2, true),
    ] {
        std::fs::write(&path, &text).unwrap();
        let err = Registry::load(&path).unwrap_err().to_string();
        assert!(!err.contains("5ec2e7"), "{err}");
        assert!(err.contains(&format!("line {line}, column")), "{err}");
        if syntax {
            let saved = Registry::default().save(&path).unwrap_err().to_string();
            assert!(!saved.contains("5ec2e7"), "{saved}");
            assert!(saved.contains(&format!("line {line}, column")), "{saved}");
        }
    }
}
