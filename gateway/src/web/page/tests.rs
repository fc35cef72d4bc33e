//! The pages: bands, lights, reasons, the public view, the device page.

use super::*;
use protocol::{AirQuality, Field, Reading, Values};
use vigie_core::condition::glance::Glance;

fn listing(device: &str, kind: DeviceKind, site: Option<&str>) -> Listing {
    Listing::of(&vigie_core::fleet::DeviceEntry {
        site: site.map(str::to_string),
        sample_interval_s: Some(60),
        heartbeat_s: Some(600),
        ..vigie_core::fleet::DeviceEntry::new("lyon", device, kind, String::new(), 1)
    })
}

#[test]
fn a_commune_page_shows_bands_lights_and_reasons_and_the_public_one_hides_ids() {
    let now_ms = 1_795_305_600_000;
    let roster = vec![
        listing("aq-1", DeviceKind::AirQuality, None),
        listing("aq-2", DeviceKind::AirQuality, Some("École <Jaurès>")),
    ];
    let mut book = DeviceBook::default();
    let mut g = Glance::default();
    g.add(&Reading {
        time: (now_ms / 1000) as u32 - 60,
        values: Values::AirQuality(AirQuality {
            pm25: Field::Value(221),
            pm10: Field::Value(300),
            ..AirQuality::default()
        }),
    });
    let frame = crate::observe::devices::Stored::default();
    book.stored("lyon", "aq-1", frame, &g, now_ms - 1_000);
    let mut v = View::new(&roster, &book, now_ms, |_| true);
    let html = commune(&v, "lyon").unwrap();
    assert!(
        html.contains(r#"data-pollutant="pm25" data-band="degraded""#),
        "{html}"
    );
    assert!(html.contains("PM2,5 : <strong>Dégradé</strong> (22,1 µg/m³)"));
    assert!(html.contains(r#"data-pollutant="pm10" data-band="fair""#));
    assert!(html.contains(r#"id="device-aq-2" data-light="red""#));
    assert!(html.contains("jamais entendu"));
    assert!(html.contains("École &lt;Jaurès&gt;"));
    v.lang = Lang::En;
    assert!(commune(&v, "lyon").unwrap().contains("never heard from"));
    v.public = true;
    v.for_citizens();
    let public = commune(&v, "lyon").unwrap();
    assert!(
        !public.contains("aq-1") && !public.contains("aq-2"),
        "{public}"
    );
    assert!(public.contains("Station 1"));
    assert!(
        !public.contains("never heard from") && !public.contains("battery"),
        "operators' reasons stay off the public view: {public}"
    );
    assert!(commune(&v, "paris").is_none());
}

#[test]
fn a_commune_shows_its_name_and_publishes_only_the_parts_it_chose() {
    let now_ms = 1_795_305_600_000;
    let mut bin = listing("bin-1", DeviceKind::WasteBin, None);
    (bin.latitude, bin.longitude) = (Some(45.76), Some(4.83));
    let roster = vec![listing("aq-1", DeviceKind::AirQuality, None), bin];
    let book = DeviceBook::default();
    let settings = |public: &[&str]| Settings {
        map_tiles: None,
        bin_threshold: 0,
        communes: [(
            "lyon".to_string(),
            crate::config::CommuneConfig {
                name: Some("Lyon 3e".into()),
                public: public.iter().map(|p| p.to_string()).collect(),
            },
        )]
        .into(),
    };
    let only_air = settings(&["air_quality"]);
    let mut v = View::new(&roster, &book, now_ms, |_| true);
    v.settings = Some(&only_air);
    let operators = commune(&v, "lyon").unwrap();
    assert!(operators.contains("<h1>Lyon 3e</h1>") && operators.contains(r#"id="bins""#));
    v.public = true;
    v.for_citizens();
    let public = commune(&v, "lyon").unwrap();
    assert!(public.contains(r#"id="air""#), "{public}");
    assert!(!public.contains(r#"id="bins""#) && !public.contains("figure class=\"map\""));
    assert!(
        !public.contains("jamais entendu"),
        "no condition unless published"
    );
    let all = settings(&["air_quality", "bin_fill", "map", "condition"]);
    let mut v = View::new(&roster, &book, now_ms, |_| true);
    (v.settings, v.public) = (Some(&all), true);
    v.for_citizens();
    let public = commune(&v, "lyon").unwrap();
    assert!(public.contains(r#"id="bins""#) && public.contains("figure class=\"map\""));
    assert!(
        public.contains("jamais entendu"),
        "the condition, published"
    );
}

#[test]
fn a_device_page_gives_the_battery_life_its_latest_ledger_says() {
    let now_ms = 1_795_305_600_000;
    let roster = vec![listing("bin-1", DeviceKind::WasteBin, None)];
    let mut book = DeviceBook::default();
    let mut g = Glance::default();
    // A day asleep but for 1 %, the modem on all day (docs/ENERGY.md: about 55 days).
    g.add(&Reading {
        time: (now_ms / 1000) as u32 - 60,
        values: Values::Energy(protocol::Energy {
            awake: Field::Value(864_000),
            asleep: Field::Value(85_536_000),
            modem_on: Field::Value(86_400_000),
            modem_active: Field::Value(1_728_000),
            sensor_on: Field::Value(432_000),
        }),
    });
    let frame = crate::observe::devices::Stored::default();
    book.stored("lyon", "bin-1", frame, &g, now_ms - 1_000);
    let mut v = View::new(&roster, &book, now_ms, |_| true);
    v.lang = Lang::En;
    let html = device(&v, "lyon", "bin-1", &[]).unwrap_or_default();
    assert!(
        html.contains("Estimated battery life</th><td>55 days (14.29 mA)"),
        "{html}"
    );
}
