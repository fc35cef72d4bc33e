//! The example frames of SPEC.md §9, pinned byte for byte. The expected hex is read from
//! SPEC.md itself, so the document and the code cannot drift apart.
#![allow(clippy::unwrap_used)]

mod common;

use protocol::{
    AirQuality, DeviceKey, Field, Identity, MAX_FRAME_LEN, Reading, Values, open, seal,
};

/// The hex of the ```hex block after the `<!-- golden:NAME -->` marker in SPEC.md.
fn spec_hex(name: &str) -> Vec<u8> {
    let spec = include_str!("../SPEC.md");
    let marker = format!("<!-- golden:{name} -->");
    let after = &spec[spec
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker} in SPEC.md"))..];
    let block = after
        .split("```hex")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let hex: String = block.split_whitespace().collect();
    hex::decode(hex).unwrap()
}

struct Example {
    name: &'static str,
    tenant: &'static str,
    device: &'static str,
    counter: u32,
    readings: Vec<Reading>,
}

fn examples() -> Vec<Example> {
    let t0 = common::T0;
    let mut aq_later = common::aq6();
    if let Values::AirQuality(a) = &mut aq_later {
        a.pm25 = Field::Value(200);
    }
    let pm_fault = Values::AirQuality(AirQuality {
        pm1: Field::Fault,
        pm25: Field::Fault,
        pm10: Field::Fault,
        temperature: Field::Value(-35),
        relative_humidity: Field::Value(870),
        pressure: Field::Value(9_987),
        ..AirQuality::default()
    });
    vec![
        Example {
            name: "aq6",
            tenant: "lyon",
            device: "aq-0001",
            counter: 42,
            readings: common::series(common::aq6(), 1),
        },
        Example {
            name: "bin",
            tenant: "lyon",
            device: "bin-0042",
            counter: 7,
            readings: common::series(common::bin(), 1),
        },
        Example {
            name: "status",
            tenant: "lyon",
            device: "aq-0001",
            counter: 43,
            readings: common::series(common::status(), 1),
        },
        Example {
            name: "batch3",
            tenant: "lyon",
            device: "aq-0001",
            counter: 44,
            readings: vec![
                Reading {
                    time: t0,
                    values: common::aq6(),
                },
                Reading {
                    time: t0 + 300,
                    values: aq_later,
                },
                Reading {
                    time: t0 + 600,
                    values: pm_fault,
                },
            ],
        },
    ]
}

#[test]
fn spec_examples_byte_for_byte() {
    let key = DeviceKey::new(common::KEY, 1);
    // Collect every mismatch, so one run shows all the hex to review.
    let mut differ = Vec::new();
    for ex in examples() {
        let who = Identity::new(ex.tenant, ex.device).unwrap();
        let mut buf = [0u8; MAX_FRAME_LEN];
        let frame = seal(&mut buf, &ex.readings, ex.counter, &key, who).unwrap();
        if frame != spec_hex(ex.name) {
            differ.push(format!("{}: built {}", ex.name, hex::encode(frame)));
        }
        let opened = open(frame, &key, who).unwrap();
        assert_eq!(opened.header.counter, ex.counter);
        assert_eq!(
            &opened.readings[..],
            &ex.readings[..],
            "example {}",
            ex.name
        );
    }
    assert!(
        differ.is_empty(),
        "SPEC.md examples differ:\n{}",
        differ.join("\n")
    );
}

/// §12's acknowledgement: gateway id bytes 01…08, base 40, counters 42, 43 and 44 settled
/// (the aq6, status and batch3 frames of §9).
#[test]
fn spec_acknowledgement_byte_for_byte() {
    let key = DeviceKey::new(common::KEY, 1);
    let who = Identity::new("lyon", "aq-0001").unwrap();
    let mut ack = protocol::Ack {
        base: 40,
        settled: 0,
    };
    for c in [42, 43, 44] {
        assert!(ack.set(c));
    }
    let sealed = ack.seal([1, 2, 3, 4, 5, 6, 7, 8], &key, who);
    assert_eq!(
        sealed.to_vec(),
        spec_hex("ack"),
        "SPEC.md ack differs: built {}",
        hex::encode(sealed)
    );
    let opened = protocol::Ack::open(&sealed, &key, who).unwrap();
    assert_eq!(opened.settled, 0x1c);
    assert!(opened.covers(42) && opened.covers(44) && !opened.covers(41));
}

/// §12.1's verdict downlink: gateway id bytes 08…01, base 40, counter 40 held, 41 refused
/// for good, 42 and 43 to re-seal, resume 5001.
#[test]
fn spec_verdicts_byte_for_byte() {
    let key = DeviceKey::new(common::KEY, 1);
    let who = Identity::new("lyon", "aq-0001").unwrap();
    let mut v = protocol::Verdicts {
        base: 40,
        resume: 5001,
        ..Default::default()
    };
    assert!(v.settle(40, false) && v.settle(41, true) && v.reseal(42) && v.reseal(43));
    let sealed = v.seal([8, 7, 6, 5, 4, 3, 2, 1], &key, who);
    assert_eq!(
        sealed.to_vec(),
        spec_hex("verdicts"),
        "SPEC.md verdicts differ: built {}",
        hex::encode(sealed)
    );
    assert_eq!((v.settled, v.refused), (0x3, 0xe));
    assert_eq!(protocol::Verdicts::open(&sealed, &key, who), Ok(v));
}
