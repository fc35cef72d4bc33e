//! The status page in a real browser (Debian's headless Chromium through chromedriver),
//! against the gateway process with real Mosquitto and InfluxDB 1.x: what a person
//! checks. A station's ATMO bands match the PM means InfluxDB holds; a bin over 80 % is
//! amber with its fill level in words; a device silent past its heartbeat turns red with
//! "muet depuis HH:MM"; the English switch; the device page's live frames and
//! `devices watch` show a stored and a forged frame with their verdicts; the public view
//! shows no device id and no other commune; after a restart every device keeps its
//! last-seen time and condition. Screenshots go to `target/test-output/status_page/`.
#![allow(clippy::unwrap_used)]

use gateway::fleet::registry::DeviceKind;
use gateway::web::page::Lang;
use protocol::{AirQuality, Field, Reading, Values, WasteBin};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use vigie_core::condition::atmo;
use vigie_tests::browser::Browser;
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{self, GatewayProcess, GatewaySettings};
use vigie_tests::{free_port, influxdb, mosquitto, now_s, readback, wait_for};

/// Where the screenshots go.
fn output_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-output/status_page")
}

fn air(time: u32, pm25: u16, pm10: u16) -> Reading {
    Reading {
        time,
        values: Values::AirQuality(AirQuality {
            pm25: Field::Value(pm25),
            pm10: Field::Value(pm10),
            temperature: Field::Value(120),
            ..AirQuality::default()
        }),
    }
}

fn bin(time: u32, fill: u8) -> Reading {
    Reading {
        time,
        values: Values::WasteBin(WasteBin {
            distance: Field::Value(1000 - 10 * u16::from(fill)),
            fill_level: Field::Value(fill),
            ..WasteBin::default()
        }),
    }
}

/// HH:MM of a Unix ms time in UTC (the gateway runs with TZ=UTC).
fn hh_mm(ms: u64) -> String {
    let s = ms / 1000 % 86_400;
    format!("{:02}:{:02}", s / 3600, s % 3600 / 60)
}

/// `/devices` of one commune, by device id.
fn devices_json(gw: &GatewayProcess, tenant: &str) -> serde_json::Map<String, serde_json::Value> {
    let (_, body) = gw.get(&format!("/devices?tenant={tenant}")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["device"].as_str().unwrap().to_string(), d.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_person_what_works_in_a_real_browser() {
    let influx = influxdb();
    for db in ["vigie_lyon", "vigie_paris"] {
        readback::influx_create_db(influx.addr, db).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let station = Device::new("lyon", "aq-0", DeviceKind::AirQuality);
    let silent = Device::new("lyon", "aq-1", DeviceKind::AirQuality);
    let bin_dev = Device::new("lyon", "bin-0", DeviceKind::WasteBin);
    let other = Device::new("paris", "aq-0", DeviceKind::AirQuality);
    let mut entries: Vec<_> = [&station, &silent, &bin_dev, &other]
        .iter()
        .map(|d| {
            let mut e = d.entry();
            (e.sample_interval_s, e.heartbeat_s) = (Some(300), Some(3600));
            e
        })
        .collect();
    entries[0].site = Some("Place Bellecour".into());
    (entries[2].latitude, entries[2].longitude) = (Some(45.76), Some(4.835));
    (entries[0].latitude, entries[0].longitude) = (Some(45.757), Some(4.832));
    // aq-1 is due every 5 s + 2 × 1 s: silent after 7 s.
    (entries[1].sample_interval_s, entries[1].heartbeat_s) = (Some(1), Some(5));
    fleet::save_registry(&dir.path().join("devices.toml"), &fleet::registry(entries));
    let broker = mosquitto(dir.path());
    let public = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut settings = GatewaySettings::new("gw", broker.addr, Some(influx.addr));
    settings.public = Some((public, vec!["lyon".into()]));
    // Lyon's name on the pages; its public view what a commune publishes by default.
    settings.extra_toml = "[communes.lyon]\nname = \"Lyon 3e\"\n".into();
    let mut gw = GatewayProcess::start(dir.path(), &settings);

    // The station: 12 readings over the last hour, in two frames; the bin at 85 %; one
    // reading each from aq-1 and from Paris.
    let now = now_s();
    let readings: Vec<Reading> = (0..12u16)
        .map(|i| air(now - 3_600 + u32::from(i) * 300, 180 + 10 * i, 300 + 10 * i))
        .collect();
    let messages = vec![
        (station.topic(), station.frame(&readings[..6], 1)),
        (station.topic(), station.frame(&readings[6..], 2)),
        (silent.topic(), silent.frame(&[air(now, 50, 80)], 1)),
        (bin_dev.topic(), bin_dev.frame(&[bin(now, 85)], 1)),
        (other.topic(), other.frame(&[air(now, 90, 120)], 1)),
    ];
    fleet::publish_all(broker.addr, &messages).await;
    wait_for(
        "every reading in InfluxDB",
        Duration::from_secs(30),
        async || {
            let lyon =
                readback::influx_points(influx.addr, "vigie_lyon", &["air_quality", "waste_bin"])
                    .await;
            let paris = readback::influx_points(influx.addr, "vigie_paris", &["air_quality"]).await;
            let pm = |p: &String| p.contains("|pm25|") || p.contains("|fillingLevel|");
            lyon.iter().filter(|p| pm(p)).count() == 14
                && paris.iter().filter(|p| pm(p)).count() == 1
        },
    )
    .await;

    // What the ATMO bands must say: the means of what InfluxDB holds.
    let means = readback::influx_query(
        influx.addr,
        "vigie_lyon",
        "SELECT MEAN(pm25), MEAN(pm10) FROM air_quality WHERE device = 'aq-0' AND time > now() - 24h",
    )
    .await;
    let row = &means["results"][0]["series"][0]["values"][0];
    let (pm25, pm10) = (row[1].as_f64().unwrap(), row[2].as_f64().unwrap());
    let (band25, band10) = (atmo::pm25(pm25), atmo::pm10(pm10));
    let code = |b: atmo::Band| {
        serde_json::to_value(b)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    };

    // Paris's station says it goes offline (its last will, as the broker would publish
    // it): red, "hors ligne depuis".
    fleet::publish_all(
        broker.addr,
        &[(
            "vigie/v1/paris/aq-0/status".to_string(),
            protocol::topic::STATUS_OFFLINE.to_vec(),
        )],
    )
    .await;
    wait_for("paris/aq-0 offline", Duration::from_secs(10), async || {
        devices_json(&gw, "paris")["aq-0"]["condition"]["reasons"][0]["reason"] == "offline"
    })
    .await;

    // aq-1 falls silent: wait past its allowed silence.
    let last_ms = devices_json(&gw, "lyon")["aq-1"]["last_frame_ms"]
        .as_u64()
        .unwrap();
    wait_for("aq-1 overdue", Duration::from_secs(30), async || {
        devices_json(&gw, "lyon")["aq-1"]["condition"]["light"] == "red"
    })
    .await;

    let browser = Browser::start(412, 1600).await;
    let out = output_dir();
    let gw_url = format!("http://{}", gw.http);

    browser.goto(&format!("{gw_url}/")).await;
    let row = browser.text("#commune-lyon").await.unwrap();
    assert!(row.contains("Lyon 3e") && row.contains('3'), "{row}");
    let paris = browser.text("#commune-paris").await.unwrap();
    assert!(paris.contains("1 en panne ou muet"), "{paris}");
    browser.screenshot(&out.join("overview.png")).await;

    browser.goto(&format!("{gw_url}/commune/lyon")).await;
    assert_eq!(browser.attribute("html", "lang").await.unwrap(), "fr");
    // The silenced device: red, with the time of its last frame.
    assert_eq!(
        browser
            .attribute("#device-aq-1", "data-light")
            .await
            .unwrap(),
        "red"
    );
    let aq1 = browser.text("#device-aq-1").await.unwrap();
    let silent_since = format!("muet depuis {}", hh_mm(last_ms));
    assert!(
        aq1.contains(&silent_since),
        "{aq1:?} lacks {silent_since:?}"
    );
    // The station: green, its bands those of the stored means.
    assert_eq!(
        browser
            .attribute("#device-aq-0", "data-light")
            .await
            .unwrap(),
        "green"
    );
    let fr = Lang::Fr;
    for (pollutant, band, mean, label) in [
        ("pm25", band25, pm25, "PM2,5"),
        ("pm10", band10, pm10, "PM10"),
    ] {
        let css = format!("#station-aq-0 [data-pollutant=\"{pollutant}\"]");
        assert_eq!(
            browser.attribute(&css, "data-band").await.unwrap(),
            code(band)
        );
        let text = browser.text(&css).await.unwrap();
        let expected = format!("{label} : {} ({} µg/m³)", fr.band(band), fr.number(mean, 1));
        assert_eq!(text, expected);
    }
    assert!(
        browser
            .text("#station-aq-0 h3")
            .await
            .unwrap()
            .contains("Place Bellecour")
    );
    // The bin over 80 %: amber, its level in words and on its gauge.
    assert_eq!(
        browser
            .attribute("#device-bin-0", "data-light")
            .await
            .unwrap(),
        "amber"
    );
    let bin_card = browser.text("#station-bin-0").await.unwrap();
    assert!(bin_card.contains("bac plein à 85 %"), "{bin_card}");
    assert_eq!(
        browser
            .attribute("#station-bin-0 .fill", "data-fill")
            .await
            .unwrap(),
        "85"
    );
    assert!(
        browser.text("#station-aq-0 svg").await.is_some(),
        "a 24-hour chart"
    );
    // The map: the station green and the bin amber on it, drawn by the page itself (no
    // request to anyone, not even to the gateway).
    assert!(
        browser
            .attribute("figure.map circle.amber", "data-device-rank")
            .await
            .is_some()
    );
    assert!(
        browser
            .text("figure.map")
            .await
            .is_some_and(|t| t.contains("en service"))
    );
    let title = browser.source().await;
    assert!(
        title.contains("<title>bin-0 — à surveiller</title>"),
        "the bin's dot"
    );
    assert!(
        title.contains("<title>Place Bellecour — en service</title>"),
        "the station's dot"
    );
    assert_eq!(
        browser.resources().await,
        Vec::<String>::new(),
        "requests made by the page"
    );
    browser.screenshot(&out.join("commune-lyon.png")).await;

    // The English switch.
    browser.click("a[hreflang=\"en\"]").await;
    assert_eq!(browser.attribute("html", "lang").await.unwrap(), "en");
    let aq1 = browser.text("#device-aq-1").await.unwrap();
    assert!(
        aq1.contains(&format!("silent since {}", hh_mm(last_ms))),
        "{aq1}"
    );
    assert!(
        browser
            .text("#station-bin-0")
            .await
            .unwrap()
            .contains("bin 85 % full")
    );
    browser.screenshot(&out.join("commune-lyon-en.png")).await;

    // The field check: `devices watch` and the device page see a stored frame and a
    // forged one, with their verdicts.
    let mut watch = Command::new(process::binary())
        .args([
            "devices",
            "watch",
            "lyon/bin-0",
            "--count",
            "2",
            "--timeout",
            "60",
        ])
        .arg("--config")
        .arg(&gw.config)
        .env("TZ", "UTC")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut watch_out = std::io::BufReader::new(watch.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut watch_out, &mut first).unwrap();
    assert!(first.starts_with("watching lyon/bin-0"), "{first}");
    let mut forger = bin_dev.clone();
    forger.key[0] ^= 1;
    fleet::publish_all(
        broker.addr,
        &[
            (bin_dev.topic(), bin_dev.frame(&[bin(now_s(), 90)], 2)),
            (bin_dev.topic(), forger.frame(&[bin(now_s(), 10)], 3)),
        ],
    )
    .await;
    let rest = std::io::read_to_string(watch_out).unwrap();
    assert!(watch.wait().unwrap().success(), "{rest}");
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(lines.len(), 3, "{rest}");
    assert!(lines[0].ends_with("frame 2: stored, 1 reading"), "{rest}");
    assert!(lines[1].contains("rejected (authentication)"), "{rest}");
    assert_eq!(
        lines[2],
        "watched lyon/bin-0: 1 frames stored, 0 duplicates, 1 rejected"
    );
    browser.goto(&format!("{gw_url}/commune/lyon/bin-0")).await;
    let frames = browser.text("#frames").await.unwrap();
    assert!(frames.contains("refusée : authentication"), "{frames}");
    assert!(frames.contains("enregistrée (1 mesure)"), "{frames}");
    assert!(
        browser
            .text("#station-bin-0")
            .await
            .unwrap()
            .contains("bac plein à 90 %")
    );
    browser.screenshot(&out.join("device-bin-0.png")).await;

    // The collection round: the bin at 90 % is due now; the driver's file and the page.
    let (status, csv) = gw.get("/round/lyon?format=csv").unwrap();
    assert_eq!(status, 200, "{csv}");
    assert_eq!(
        csv,
        "order,device,latitude,longitude,fill_percent,due\n1,bin-0,45.760000,4.835000,90,now\n"
    );
    let (status, gpx) = gw.get("/round/lyon?format=gpx").unwrap();
    assert!(
        status == 200
            && gpx.contains(r#"<rtept lat="45.760000" lon="4.835000"><name>bin-0</name>"#),
        "{gpx}"
    );
    browser.goto(&format!("{gw_url}/round/lyon")).await;
    let page = browser.text("main").await.unwrap();
    assert!(
        page.contains("bin-0") && page.contains("maintenant"),
        "{page}"
    );
    browser.screenshot(&out.join("round-lyon.png")).await;
    // The driver's file, by the page's own link.
    let csv_link = browser
        .attribute("main a[href*='format=csv']", "href")
        .await
        .unwrap();
    assert!(csv_link.starts_with("/round/lyon?"), "{csv_link}");
    let got = reqwest::get(format!("{gw_url}{csv_link}")).await.unwrap();
    assert_eq!(got.status(), 200, "{csv_link}");
    assert!(got.text().await.unwrap().contains("1,bin-0,"));

    // The public view: the commune's stations and bins, no device id, no other commune,
    // nothing else of the status port.
    let public_url = format!("http://{public}");
    browser.goto(&format!("{public_url}/commune/lyon")).await;
    assert_eq!(browser.text("h1").await.unwrap(), "Lyon 3e");
    let main = browser.text("main").await.unwrap();
    assert!(
        !main.contains("en panne ou muet") && !main.contains("muet depuis"),
        "the public view shows no device's condition unless the commune publishes it: {main}"
    );
    let source = browser.source().await;
    for id in ["aq-0", "aq-1", "bin-0"] {
        assert!(!source.contains(id), "the public view names {id}");
    }
    assert!(source.contains("Place Bellecour"));
    assert_eq!(
        browser
            .attribute("[data-pollutant=\"pm25\"]", "data-band")
            .await
            .unwrap(),
        code(band25)
    );
    assert!(
        browser
            .attribute("figure.map circle", "data-device-rank")
            .await
            .is_some()
    );
    assert_eq!(
        browser.resources().await,
        Vec::<String>::new(),
        "requests made by the page"
    );
    browser.screenshot(&out.join("public-lyon.png")).await;
    drop(browser);
    for path in [
        "/commune/paris",
        "/metrics",
        "/devices",
        "/commune/lyon/bin-0",
    ] {
        let code = reqwest::get(format!("{public_url}{path}"))
            .await
            .unwrap()
            .status();
        assert_eq!(code, 404, "public {path}");
    }

    // A restart keeps every device's last-seen time and condition.
    let before = devices_json(&gw, "lyon");
    gw.terminate();
    gw.restart();
    let after = devices_json(&gw, "lyon");
    for (id, d) in &before {
        for field in ["last_frame_ms", "last_reading_s", "condition", "history"] {
            assert_eq!(after[id][field], d[field], "{id} {field} after a restart");
        }
    }
    assert_eq!(after["aq-1"]["condition"]["light"], "red");
}
