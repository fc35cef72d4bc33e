//! The configuration: parsing, defaults, environment overrides, validation, secrets.

use super::validate::bad_log_directive;
use super::*;

#[test]
fn log_levels_are_levels_or_target_levels() {
    for good in [
        "info",
        "WARN",
        "gateway=debug",
        "info,rumqttc=warn,gateway::intake::mqtt=trace",
    ] {
        assert_eq!(bad_log_directive(good), None, "{good}");
    }
    for bad in [
        "verbose",
        "",
        "info,",
        "gateway=loud",
        "=info",
        "info debug",
    ] {
        assert!(bad_log_directive(bad).is_some(), "{bad}");
    }
    let mut c = Config::parse("").unwrap();
    c.log.level = "verbose".into();
    assert!(c.validate().unwrap_err().to_string().contains("log.level"));
}

#[test]
fn the_example_file_parses_and_validates() {
    let text = include_str!("../../gateway.example.toml");
    let c = Config::parse(text).unwrap();
    c.validate().unwrap();
    assert_eq!(c.batch.max_lines, 5000);
}

#[test]
fn empty_file_means_defaults_embedded_broker_and_file_sink() {
    let c = Config::parse("").unwrap();
    c.validate().unwrap();
    assert!(c.mqtt.host.is_none() && c.database.is_none());
    assert_eq!(c.batch.linger, Duration::from_millis(500));
}

#[test]
fn a_broken_config_never_prints_its_secrets() {
    let secret = "Sup3rS3cretToken-do-not-print";
    for text in [
        format!("[database]\napi = \"v2\"\nurl = \"http://x\"\ntoken = \"{secret}\n"),
        format!("[mqtt]\npassword = {secret}\n"),
        format!("[http]\nadmin_token = [\"{secret}\"]\n"),
        format!("[database]\napi = \"v1\"\nurl = \"http://x\"\npasswrd = \"{secret}\"\n"),
    ] {
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(!err.contains(secret), "{err}");
        assert!(err.contains("line "), "{err}");
    }
    let mut c = Config::parse(&format!("[http]\nadmin_token = \"{secret}\"\n")).unwrap();
    c.mqtt.password = Some(Secret::new(secret));
    assert!(!format!("{c:?}").contains(secret));
}

#[test]
fn mistakes_get_messages_that_name_the_key() {
    let err = Config::parse("[batch]\nmax_line = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_line"), "{err}");
    let err = Config::parse("[batch]\nlinger = \"soon\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("linger") || err.contains("soon"), "{err}");
    let cases = [
        (
            "[database]\napi = \"v2\"\nurl = \"http://x\"\n",
            "database.org",
        ),
        (
            "[database]\napi = \"v1\"\nurl = \"ftp://x\"\n",
            "database.url",
        ),
        (
            "[database]\napi = \"v1\"\nurl = \"http://\"\n",
            "database.url",
        ),
        (
            "[database]\napi = \"v1\"\nurl = \"influx:8086\"\n",
            "database.url",
        ),
        ("[buffer]\nmax_mib = 8\nsegment_mib = 8\n", "buffer.max_mib"),
        ("[mqtt]\ngroup = \"Bad Group\"\n", "mqtt.group"),
        ("[mqtt]\nsession_expiry = \"0s\"\n", "session_expiry"),
        ("[mqtt]\nreceive_maximum = 5000\n", "receive_maximum"),
        (
            "[mqtt]\nhost = \"b\"\nclient_id = \"gw-a\"\nusername = \"gw-b\"\n",
            "mqtt.client_id",
        ),
        (
            "[mqtt]\nembedded_listen = \"0.0.0.0:1883\"\n",
            "mqtt.embedded_listen",
        ),
    ];
    for (text, key) in cases {
        let err = Config::parse(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn env_overrides_and_secrets_stay_hidden() {
    let mut c = Config::parse("[database]\napi = \"v1\"\nurl = \"http://a\"\n").unwrap();
    c.apply_env(|k| match k {
        "VIGIE_DATABASE_URL" => Some("http://b".into()),
        "VIGIE_DATABASE_PASSWORD" => Some("hunter2".into()),
        "VIGIE_MQTT_PASSWORD" => Some("swordfish".into()),
        _ => None,
    });
    let db = c.database.as_ref().unwrap();
    assert_eq!(db.url, "http://b");
    assert_eq!(db.password.as_ref().unwrap().expose(), "hunter2");
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("swordfish"),
        "{shown}"
    );
}

#[test]
fn the_round_settings_of_the_docs_parse_and_bad_ones_are_named() {
    let docs = include_str!("../../../docs/OPERATIONS.md");
    let block = docs
        .split("```toml\n[round]")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_default();
    let c = Config::parse(&format!("[round]{block}")).unwrap();
    c.validate().unwrap();
    assert_eq!((c.round.threshold_percent, c.round.horizon_days), (80, 2.0));
    assert!(c.round.depots.contains_key("lyon"));
    for (bad, says) in [
        ("[round]\nthreshold_percent = 0", "round.threshold_percent"),
        ("[round]\nhorizon_days = 90", "round.horizon_days"),
        (
            "[round.depots]\nlyon = { latitude = 145.0, longitude = 4.8 }",
            "round.depots.lyon",
        ),
    ] {
        let e = Config::parse(bad).unwrap().validate().unwrap_err();
        assert!(e.to_string().contains(says), "{bad}: {e}");
    }
}

#[test]
fn the_alert_settings_of_the_docs_parse_and_bad_ones_are_named() {
    let docs = include_str!("../../../docs/OPERATIONS.md");
    let block = docs
        .split("```toml\n[alerts]")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_default();
    let c = Config::parse(&format!("[alerts]{block}")).unwrap();
    c.validate().unwrap();
    assert!(c.alerts.enabled());
    assert_eq!(c.alerts.communes["lyon"].bin_full_percent, Some(85));
    assert_eq!(c.alerts.communes["lyon"].bin_full_zones["marche"], 60);
    let t = |tenant, zone| c.alerts.bin_threshold(tenant, zone);
    assert_eq!(
        (
            t("lyon", Some("marche")),
            t("lyon", Some("gare")),
            t("nice", None)
        ),
        (Some(60), Some(85), Some(80)),
        "the zone's, the commune's, the gateway's"
    );
    let smtp = "[alerts.smtp]\nhost = \"h\"\nfrom = \"v@h.fr\"\n";
    for (bad, says) in [
        (
            "[alerts.operator]\nemails = [\"a@b.fr\"]".to_string(),
            "need an [alerts.smtp]",
        ),
        (
            format!("{smtp}[alerts.operator]\nemails = [\"not an address\"]"),
            "not an e-mail address",
        ),
        (
            format!("{smtp}security = \"none\""),
            "never leaves in plain text",
        ),
        (
            "[alerts.communes.lyon]\nwebhooks = [{ url = \"http://hooks.example/t0ken-0123456789abcdef\", secret_file = \"k\" }]".to_string(),
            "alerts.communes.lyon.webhooks[0]: url must be https://",
        ),
        ("[alerts]\ndigest_hour = 24".to_string(), "alerts.digest_hour"),
        (
            "[alerts.communes.lyon]\nbin_full_zones = { marche = 0 }".to_string(),
            "alerts.communes.lyon.bin_full_zones.marche",
        ),
        ("[alerts]\nlanguage = \"de\"".to_string(), "alerts.language"),
    ] {
        let e = Config::parse(&bad).unwrap().validate().unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
        assert!(!e.contains("t0ken"), "a webhook URL may hold a token: {e}");
        let shown = format!("{:?}", Config::parse(&bad).unwrap());
        assert!(!shown.contains("t0ken"), "{shown}");
    }
}

#[test]
fn the_receivers_check_in_the_docs_is_the_one_the_tests_run() {
    let docs = include_str!("../../../docs/OPERATIONS.md");
    let snippet = docs
        .split("```python\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_default();
    let receiver = include_str!("../../../tests/servers/webhook_receiver.py");
    assert!(snippet.starts_with("def verified"), "{snippet}");
    assert!(
        receiver.contains(snippet),
        "docs and tests/servers/webhook_receiver.py differ"
    );
}

#[test]
fn a_tile_server_is_https_with_its_placeholders_and_gives_its_origin() {
    let c =
        Config::parse("[http]\nmap_tiles = \"https://tiles.example.fr:8443/osm/{z}/{x}/{y}.png\"")
            .unwrap();
    c.validate().unwrap();
    assert_eq!(
        c.http.tile_origin().as_deref(),
        Some("https://tiles.example.fr:8443")
    );
    for bad in [
        "http://tiles.example.fr/{z}/{x}/{y}.png",
        "https://tiles.example.fr/tile.png",
    ] {
        let c = Config::parse(&format!("[http]\nmap_tiles = \"{bad}\"")).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("http.map_tiles"), "{bad}: {e}");
    }
}

#[test]
fn the_commune_settings_of_the_docs_parse_and_bad_ones_are_named() {
    let docs = include_str!("../../../docs/OPERATIONS.md");
    let block = docs
        .split("```toml\n[communes.")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_default();
    let c = Config::parse(&format!("[communes.{block}")).unwrap();
    c.validate().unwrap();
    let v = &c.communes["villefranche-sur-saone"];
    assert_eq!(v.name.as_deref(), Some("Villefranche-sur-Saône"));
    assert_eq!(v.public, PUBLIC_DEFAULT);
    let e = Config::parse("[communes.lyon]\npublic = [\"battery\"]")
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(
        e.to_string().contains("communes.lyon.public: \"battery\""),
        "{e}"
    );
}

#[test]
fn a_group_off_this_host_needs_tls_and_a_user() {
    let group = |extra: &str| {
        let text = format!(
            "[mqtt]\nhost = \"mqtt.example\"\n[group]\netcd = [\"https://10.0.0.5:2379\", \"http://127.0.0.1:2379\"]\n{extra}"
        );
        Config::parse(&text).unwrap().validate()
    };
    let err = group("").unwrap_err().to_string();
    assert!(err.contains("group.username"), "{err}");
    group("username = \"vigie\"\npassword_file = \"/etc/vigie/etcd-password\"\n").unwrap();
    let err = group("username = \"vigie\"\n").unwrap_err().to_string();
    assert!(err.contains("go together"), "{err}");
    let clear =
        "[group]\netcd = [\"http://10.0.0.5:2379\"]\nusername = \"v\"\npassword_file = \"/p\"\n";
    let err = Config::parse(clear)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("https://"), "{err}");
    // One host, a test bench: clear text and no user.
    let bench = "[group]\netcd = [\"http://localhost:2379\"]\n";
    let err = Config::parse(bench).unwrap().validate().unwrap_err();
    assert!(err.to_string().contains("mqtt.host"), "{err}");
    Config::parse(&format!("[mqtt]\nhost = \"127.0.0.1\"\n{bench}"))
        .unwrap()
        .validate()
        .unwrap();
    let err = Config::parse("[group]\netcd = []\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("no etcd member"), "{err}");
}
