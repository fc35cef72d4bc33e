//! Per-reading cost of the pure core: topic parse, registry lookup, tag verification and
//! decryption, replay check, time and plausibility checks, line-protocol encoding — for
//! the typical six-value air-quality frame. For scale, the same run decodes the equivalent
//! SenML-JSON record set with serde_json (no verification at all) and prints the ratio.
//! `cargo bench -p gateway --bench core`
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use protocol::{AirQuality, DeviceKey, Field, Identity, MAX_FRAME_LEN, Reading, Values};
use std::hint::black_box;
use std::time::{Duration, Instant};
use vigie_core::fleet::{DeviceEntry, DeviceKind, Registry};
use vigie_core::judge::replay_book::ReplayBook;
use vigie_core::judge::validate::TimeRules;
use vigie_core::judge::verify::{Context, Verdict, assess};
use vigie_core::output::lineproto::StringFields;

const SENML: &str = r#"[{"bn":"urn:dev:vigie:lyon:aq-0001:","bt":1795305600,"n":"pm1","u":"ug/m3","v":8.2},{"n":"pm25","u":"ug/m3","v":12.3},{"n":"pm10","u":"ug/m3","v":20.1},{"n":"temperature","u":"Cel","v":21.4},{"n":"humidity","u":"%RH","v":55.5},{"n":"pressure","u":"Pa","v":101320}]"#;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct SenmlRecord {
    bn: Option<String>,
    bt: Option<f64>,
    n: String,
    u: Option<String>,
    v: Option<f64>,
}

/// Nanoseconds per item: `f` run `runs` times, each doing `items` items.
fn ns_per(runs: u32, items: usize, f: &dyn Fn()) -> f64 {
    let start = Instant::now();
    for _ in 0..runs {
        f();
    }
    start.elapsed().as_nanos() as f64 / (f64::from(runs) * items as f64)
}

fn setup() -> (Registry, Vec<u8>, u64) {
    let key = [7u8; 16];
    let entry = DeviceEntry {
        site: Some("Bellecour".into()),
        ..DeviceEntry::new(
            "lyon",
            "aq-0001",
            DeviceKind::AirQuality,
            hex::encode(key),
            1,
        )
    };
    let registry = Registry::from_entries(vec![entry]).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let reading = Reading {
        time: now as u32,
        values: Values::AirQuality(AirQuality {
            pm1: Field::Value(82),
            pm25: Field::Value(123),
            pm10: Field::Value(201),
            temperature: Field::Value(214),
            relative_humidity: Field::Value(555),
            pressure: Field::Value(10_132),
            ..AirQuality::default()
        }),
    };
    let mut buf = [0u8; MAX_FRAME_LEN];
    let who = Identity::new("lyon", "aq-0001").unwrap();
    let frame = protocol::seal(&mut buf, &[reading], 42, &DeviceKey::new(key, 1), who)
        .unwrap()
        .to_vec();
    (registry, frame, now)
}

fn per_reading(c: &mut Criterion) {
    let (registry, frame, now) = setup();
    let book = ReplayBook::default();
    let rules = TimeRules {
        max_future_skew_s: 300,
        max_age_s: 86_400,
    };
    let topic = "vigie/v1/lyon/aq-0001/up";
    let cx = Context {
        registry: &registry,
        counters: &book,
        rules: &rules,
        strings: StringFields::Fields,
        now_s: now,
        clock_synced: true,
    };
    assert!(matches!(assess(topic, &frame, &cx), Verdict::Accept(_)));
    let mut g = c.benchmark_group("per_reading");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("vigie_assess_aq6", |b| {
        b.iter(|| assess(black_box(topic), black_box(&frame), &cx))
    });
    g.bench_function("senml_json_decode_aq6", |b| {
        b.iter(|| serde_json::from_str::<Vec<SenmlRecord>>(black_box(SENML)).unwrap())
    });
    g.finish();

    // The ratio, measured back to back in this run (criterion's figures above are the
    // detailed ones; this line is for docs/PERFORMANCE.md).
    let time = |f: &dyn Fn()| ns_per(200_000, 1, f);
    let ours = time(&|| {
        black_box(assess(topic, black_box(&frame), &cx));
    });
    let senml = time(&|| {
        black_box(serde_json::from_str::<Vec<SenmlRecord>>(black_box(SENML)).unwrap());
    });
    println!(
        "per-reading: vigie {ours:.0} ns, senml-json decode {senml:.0} ns, ratio vigie/senml = {:.2}",
        ours / senml
    );
}

/// What judging a whole batch costs over judging its frames one by one (the overlay that
/// makes the verdicts independent of batching): 1,000 frames of one device, consecutive
/// counters, so every frame after the first goes through the overlay. Printed as a ratio
/// measured back to back.
fn batch_overlay(_: &mut Criterion) {
    use vigie_core::judge::batch;
    let (registry, _, now) = setup();
    let key = DeviceKey::new([7u8; 16], 1);
    let who = Identity::new("lyon", "aq-0001").unwrap();
    let frames: Vec<Vec<u8>> = (0..1_000u32)
        .map(|c| {
            let r = Reading {
                time: now as u32 - 1_000 + c,
                values: Values::AirQuality(AirQuality {
                    pm25: Field::Value(123),
                    ..AirQuality::default()
                }),
            };
            let mut buf = [0u8; MAX_FRAME_LEN];
            protocol::seal(&mut buf, &[r], c, &key, who)
                .unwrap()
                .to_vec()
        })
        .collect();
    let book = ReplayBook::default();
    let rules = TimeRules {
        max_future_skew_s: 300,
        max_age_s: 86_400,
    };
    let cx = Context {
        registry: &registry,
        counters: &book,
        rules: &rules,
        strings: StringFields::Fields,
        now_s: now,
        clock_synced: true,
    };
    let topic = "vigie/v1/lyon/aq-0001/up";
    let time = |f: &dyn Fn()| ns_per(20, frames.len(), f);
    let alone = time(&|| {
        for f in &frames {
            black_box(assess(topic, f, &cx));
        }
    });
    let batched = time(&|| {
        let plan = batch::judge(frames.iter().map(|f| (topic, f.as_slice())), &cx);
        assert_eq!(plan.accepted.len(), frames.len());
        black_box(plan);
    });
    println!(
        "batch verdicts: {batched:.0} ns per frame in a batch of 1,000, {alone:.0} ns judged alone, ratio {:.2}",
        batched / alone
    );
}

criterion_group!(benches, per_reading, batch_overlay);
criterion_main!(benches);
