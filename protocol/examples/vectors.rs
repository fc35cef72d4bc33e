//! Writes the receiver conformance vectors, `protocol/vectors/receiver.jsonl` (SPEC
//! §13.11): each case a registry, a replay state, messages and the verdict SPEC §13 gives
//! each. Valid frames come from this crate's sealer; frames with broken bodies are sealed
//! here from SPEC §5 directly (Ascon-AEAD128, the nonce and associated data as written
//! there), since the sealer refuses to build them. The expected verdicts and stored points
//! are written out by hand from SPEC, not computed by any receiver.
//!
//! `cargo run -p protocol --example vectors` (the file is checked in; the gateway's tests
//! run every case, and `tests/receiver_vectors.rs` here checks the file is what this writes).
#![allow(clippy::unwrap_used)]

use ascon_aead::aead::consts::U8;
use ascon_aead::aead::{AeadInOut, KeyInit};
use ascon_aead::{Key, Nonce, TruncatedAsconAead128};
use protocol::{
    AirQuality, DeviceKey, DeviceStatus, Energy, Field, Identity, MAX_FRAME_LEN, Reading, Values,
    WasteBin,
};
use serde_json::{Value, json};

/// The receiver's clock in every case: 2026-11-22T00:00:00Z.
const NOW: u32 = 1_795_305_600;
const SKEW: u32 = 300;
const MAX_AGE: u32 = 90 * 86_400;

struct Dev {
    tenant: &'static str,
    device: &'static str,
    kind: &'static str,
    key: [u8; 16],
    epoch: u32,
    revoked: bool,
    bin_depth_mm: Option<u16>,
}

const AQ: Dev = Dev {
    tenant: "lyon",
    device: "aq-1",
    kind: "air_quality",
    key: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    epoch: 1,
    revoked: false,
    bin_depth_mm: None,
};
const BIN: Dev = Dev {
    tenant: "lyon",
    device: "bin-1",
    kind: "waste_bin",
    key: [0x10; 16],
    epoch: 2,
    revoked: false,
    bin_depth_mm: Some(1000),
};
const REVOKED: Dev = Dev {
    tenant: "lyon",
    device: "aq-rev",
    kind: "air_quality",
    key: [0x20; 16],
    epoch: 1,
    revoked: true,
    bin_depth_mm: None,
};
const PARIS: Dev = Dev {
    tenant: "paris",
    device: "aq-1",
    kind: "air_quality",
    key: [0x30; 16],
    epoch: 1,
    revoked: false,
    bin_depth_mm: None,
};

impl Dev {
    fn up(&self) -> String {
        format!("vigie/v1/{}/{}/up", self.tenant, self.device)
    }

    fn who(&self) -> Identity<'static> {
        Identity::new(self.tenant, self.device).unwrap()
    }

    fn seal(&self, readings: &[Reading], counter: u32) -> Vec<u8> {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let key = DeviceKey::new(self.key, self.epoch);
        protocol::seal(&mut buf, readings, counter, &key, self.who())
            .unwrap()
            .to_vec()
    }

    /// SPEC §5 by hand: `header ‖ encrypted body ‖ 8-byte tag`, whatever the body.
    fn seal_body(&self, header: u8, counter: u32, body: &[u8]) -> Vec<u8> {
        let mut clear = vec![header];
        clear.extend_from_slice(&counter.to_be_bytes());
        let mut nonce = [0u8; 16];
        nonce[..4].copy_from_slice(&self.epoch.to_be_bytes());
        nonce[4..8].copy_from_slice(&counter.to_be_bytes());
        nonce[8] = 0x01;
        let mut ad = clear.clone();
        for id in [self.tenant, self.device] {
            ad.push(id.len() as u8);
            ad.extend_from_slice(id.as_bytes());
        }
        let cipher =
            TruncatedAsconAead128::<U8>::new(&Key::<TruncatedAsconAead128<U8>>::from(self.key));
        let mut text = body.to_vec();
        let tag = cipher
            .encrypt_inout_detached(
                &Nonce::<TruncatedAsconAead128<U8>>::from(nonce),
                &ad,
                text.as_mut_slice().into(),
            )
            .unwrap();
        let mut frame = clear;
        frame.extend_from_slice(&text);
        frame.extend_from_slice(&tag);
        frame
    }

    fn registry(&self) -> Value {
        json!({
            "tenant": self.tenant, "device": self.device, "kind": self.kind,
            "key": hex::encode(self.key), "epoch": self.epoch, "revoked": self.revoked,
            "bin_depth_mm": self.bin_depth_mm,
        })
    }
}

/// The usual air-quality reading at `time`: PM1 8.2, PM2.5 12.3, PM10 20.1 µg/m³,
/// 21.4 °C, 55.5 %, 1013.2 hPa.
fn aq(time: u32) -> Reading {
    Reading {
        time,
        values: Values::AirQuality(AirQuality {
            pm1: Field::Value(82),
            pm25: Field::Value(123),
            pm10: Field::Value(201),
            temperature: Field::Value(214),
            relative_humidity: Field::Value(555),
            pressure: Field::Value(10132),
            ..AirQuality::default()
        }),
    }
}

fn float(v: f64) -> Value {
    json!({ "type": "float", "value": v })
}

fn int(v: i64) -> Value {
    json!({ "type": "integer", "value": v })
}

fn point(dev: &Dev, measurement: &str, time: u32, counter: u32, fields: Value) -> Value {
    json!({
        "measurement": measurement,
        "tags": { "device": dev.device, "tenant": dev.tenant },
        "time_ms": u64::from(time) * 1000 + u64::from(counter % 1000),
        "fields": fields,
    })
}

/// The point of [`aq`].
fn aq_point(dev: &Dev, time: u32, counter: u32) -> Value {
    point(
        dev,
        "air_quality",
        time,
        counter,
        json!({
            "pm1": float(8.2), "pm25": float(12.3), "pm10": float(20.1),
            "temperature": float(21.4), "relativeHumidity": float(0.555),
            "atmosphericPressure": float(1013.2),
        }),
    )
}

/// The point of the status reading of the kind cases.
fn status_point(dev: &Dev, time: u32, counter: u32) -> Value {
    point(
        dev,
        "device_status",
        time,
        counter,
        json!({
            "batteryVoltage": float(3.65), "rssi": int(-71),
            "firmwareVersion": { "type": "string", "value": "1.4.2" },
            "uptime": int(86_400), "errorFlags": int(0), "droppedReadings": int(0),
        }),
    )
}

fn stored(points: Vec<Value>) -> Value {
    json!({ "verdict": "stored", "points": points })
}

fn refused(reason: &str) -> Value {
    json!({ "verdict": "refused", "reason": reason })
}

fn malformed(detail: &str) -> Value {
    json!({ "verdict": "refused", "reason": "malformed", "detail": detail })
}

fn held(reason: &str) -> Value {
    json!({ "verdict": "held", "reason": reason })
}

fn duplicate() -> Value {
    json!({ "verdict": "duplicate" })
}

fn msg(topic: &str, payload: &[u8]) -> Value {
    json!({ "topic": topic, "qos": 1, "retain": false, "payload": hex::encode(payload) })
}

struct Case {
    name: &'static str,
    stored: Vec<Value>,
    messages: Vec<Value>,
    batches: Option<Vec<usize>>,
    /// The receiver's host clock is known to be synchronised (§13.3).
    clock_synchronised: bool,
    expect: Vec<Value>,
}

fn case(name: &'static str, messages: Vec<Value>, expect: Vec<Value>) -> Case {
    Case {
        name,
        stored: Vec::new(),
        messages,
        batches: None,
        clock_synchronised: true,
        expect,
    }
}

/// The 8-byte tag of a sealed frame.
fn tag(frame: &[u8]) -> String {
    hex::encode(&frame[frame.len() - 8..])
}

fn cases() -> Vec<Case> {
    let t = NOW - 60;
    let good = AQ.seal(&[aq(t)], 5);
    let mut out = Vec::new();

    // 1. Topics and the registry (§13.1 checks 1–3).
    for (name, topic) in [
        ("topic: another root", "vigie/v2/lyon/aq-1/up"),
        ("topic: uppercase identifier", "vigie/v1/Lyon/aq-1/up"),
        ("topic: empty level", "vigie/v1//aq-1/up"),
        ("topic: dot-dot level", "vigie/v1/../aq-1/up"),
        (
            "topic: 33-character identifier",
            "vigie/v1/lyon/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/up",
        ),
        ("topic: non-ASCII identifier", "vigie/v1/lyon/aq-\u{e9}/up"),
        ("topic: extra level", "vigie/v1/lyon/aq-1/up/x"),
        ("topic: acknowledgement channel", "vigie/v1/lyon/aq-1/ack"),
        ("topic: unknown channel", "vigie/v1/lyon/aq-1/down"),
    ] {
        out.push(case(name, vec![msg(topic, &good)], vec![refused("topic")]));
    }
    out.push(case(
        "topic: 32-character identifier is valid (and unknown)",
        vec![msg(
            "vigie/v1/lyon/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/up",
            &good,
        )],
        vec![refused("unknown_device")],
    ));
    out.push(case(
        "registry: unknown device",
        vec![msg("vigie/v1/lyon/aq-404/up", &good)],
        vec![refused("unknown_device")],
    ));
    out.push(case(
        "registry: unknown tenant is an unknown device",
        vec![msg("vigie/v1/nice/aq-1/up", &good)],
        vec![refused("unknown_device")],
    ));
    out.push(case(
        "order: unknown device before length",
        vec![msg("vigie/v1/lyon/aq-404/up", &[0x11, 0, 0])],
        vec![refused("unknown_device")],
    ));
    out.push(case(
        "registry: revoked",
        vec![msg(&REVOKED.up(), &REVOKED.seal(&[aq(t)], 1))],
        vec![refused("revoked")],
    ));
    out.push(case(
        "order: revoked before length",
        vec![msg(&REVOKED.up(), b"x")],
        vec![refused("revoked")],
    ));

    // 2. Status (§13.5).
    let status = "vigie/v1/lyon/aq-1/status";
    out.push(case(
        "status: online, offline",
        vec![msg(status, b"online"), msg(status, b"offline")],
        vec![
            json!({ "verdict": "status", "online": true }),
            json!({ "verdict": "status", "online": false }),
        ],
    ));
    let mut retained = msg(status, b"online");
    retained["qos"] = json!(0);
    retained["retain"] = json!(true);
    out.push(case(
        "status: retained at QoS 0 is the same",
        vec![retained],
        vec![json!({ "verdict": "status", "online": true })],
    ));
    for (name, payload) in [
        ("status: other payload", &b"ONLINE"[..]),
        ("status: empty payload", &b""[..]),
        ("status: a frame on the status topic", &good[..]),
    ] {
        out.push(case(
            name,
            vec![msg(status, payload)],
            vec![refused("bad_status")],
        ));
    }
    out.push(case(
        "status: unknown device",
        vec![msg("vigie/v1/lyon/aq-404/status", b"online")],
        vec![refused("unknown_device")],
    ));

    // 3. The clear header (§13.1 check 5), both sides of each bound.
    let mut short = good[..18].to_vec();
    short[0] = 0x11;
    out.push(case(
        "length: 18 bytes is too short",
        vec![msg(&AQ.up(), &short)],
        vec![malformed("too_short")],
    ));
    let mut len19 = vec![0u8; 19];
    len19[0] = 0x11;
    out.push(case(
        "length: 19 bytes passes the length check (then the tag)",
        vec![msg(&AQ.up(), &len19)],
        vec![refused("authentication")],
    ));
    let mut len1024 = vec![0u8; 1024];
    len1024[0] = 0x11;
    out.push(case(
        "length: 1024 bytes passes the length check (then the tag)",
        vec![msg(&AQ.up(), &len1024)],
        vec![refused("authentication")],
    ));
    let mut len1025 = vec![0u8; 1025];
    len1025[0] = 0x11;
    out.push(case(
        "length: 1025 bytes is too long",
        vec![msg(&AQ.up(), &len1025)],
        vec![malformed("too_long")],
    ));
    let mut v2 = good.clone();
    v2[0] = 0x21;
    out.push(case(
        "header: version 2",
        vec![msg(&AQ.up(), &v2)],
        vec![malformed("unsupported_version")],
    ));
    for (name, byte) in [
        ("header: kind 5", 0x15u8),
        ("header: kind 0xA (an acknowledgement)", 0x1a),
    ] {
        let mut f = good.clone();
        f[0] = byte;
        out.push(case(
            name,
            vec![msg(&AQ.up(), &f)],
            vec![malformed("unknown_kind")],
        ));
    }
    let mut short_v2 = vec![0u8; 10];
    short_v2[0] = 0x21;
    out.push(case(
        "order: length before version",
        vec![msg(&AQ.up(), &short_v2)],
        vec![malformed("too_short")],
    ));

    // 4. The tag (check 6).
    let wrong_key = Dev {
        key: [0x99; 16],
        ..AQ
    };
    out.push(case(
        "tag: another key",
        vec![msg(&AQ.up(), &wrong_key.seal(&[aq(t)], 5))],
        vec![refused("authentication")],
    ));
    let old_epoch = Dev { epoch: 0, ..AQ };
    out.push(case(
        "tag: the right key under another epoch",
        vec![msg(&AQ.up(), &old_epoch.seal(&[aq(t)], 5))],
        vec![refused("authentication")],
    ));
    out.push(case(
        "tag: another device's topic",
        vec![msg(&PARIS.up(), &good)],
        vec![refused("authentication")],
    ));
    for (name, at) in [
        ("tag: a counter bit flipped", 4),
        ("tag: a body bit flipped", 12),
        ("tag: a tag bit flipped", good.len() - 1),
    ] {
        let mut f = good.clone();
        f[at] ^= 1;
        out.push(case(
            name,
            vec![msg(&AQ.up(), &f)],
            vec![refused("authentication")],
        ));
    }
    let bin_wrong_key = Dev {
        key: [0x98; 16],
        ..BIN
    };
    out.push(case(
        "order: the tag before the kind",
        vec![msg(&AQ.up(), &bin_wrong_key.seal(&[bin_reading(t, 40)], 5))],
        vec![refused("authentication")],
    ));

    // 5. The body (check 7): sealed from SPEC §5 with bodies the sealer refuses.
    let time = t.to_be_bytes();
    let body = |rest: &[u8]| [&time[..], rest].concat();
    // One reading: PM2.5 only (presence bit 1), 12.3.
    let pm25 = [0x02u8, 123];
    for (name, rest, detail) in [
        (
            "body: a trailing 0x00 is a zero time delta",
            [&pm25[..], &[0x00]].concat(),
            "time_order",
        ),
        (
            "body: a trailing 0x01 starts a reading that is not there",
            [&pm25[..], &[0x01]].concat(),
            "truncated",
        ),
        (
            "body: a time delta of 0 between readings",
            [&pm25[..], &[0x00], &pm25[..]].concat(),
            "time_order",
        ),
        (
            "body: no reading is shorter than any frame",
            vec![],
            "too_short",
        ),
        (
            "body: an empty reading after a good one",
            vec![0x02, 123, 0x01, 0x00],
            "empty_reading",
        ),
        (
            "body: an empty reading alone is shorter than any frame",
            vec![0x00],
            "too_short",
        ),
        (
            "body: a presence bit beyond the fault-map bit",
            vec![0x80, 0x10, 0x7b],
            "unknown_field",
        ),
        (
            "body: an empty fault map",
            vec![0x80, 0x08, 0x00],
            "bad_fault_map",
        ),
        (
            "body: a fault on a present field",
            vec![0x82, 0x08, 0x02, 0x7b],
            "bad_fault_map",
        ),
        (
            "body: an overlong varint",
            vec![0x02, 0xfb, 0x00],
            "bad_varint",
        ),
        (
            "body: a value that stops inside",
            vec![0x02, 0xfb],
            "truncated",
        ),
        (
            "body: PM2.5 10 001 (raw) is out of range",
            vec![0x02, 0x91, 0x4e],
            "out_of_range",
        ),
    ] {
        out.push(case(
            name,
            vec![msg(&AQ.up(), &AQ.seal_body(0x11, 5, &body(&rest)))],
            vec![malformed(detail)],
        ));
    }
    out.push(case(
        "body: PM2.5 10 000 (raw) is in range",
        vec![msg(
            &AQ.up(),
            &AQ.seal_body(0x11, 5, &body(&[0x02, 0x90, 0x4e])),
        )],
        vec![stored(vec![point(
            &AQ,
            "air_quality",
            t,
            5,
            json!({ "pm25": float(1000.0) }),
        )])],
    ));
    let one = |time: u32| Reading {
        time,
        values: Values::AirQuality(AirQuality {
            pm25: Field::Value(123),
            ..AirQuality::default()
        }),
    };
    let sixty_four: Vec<Reading> = (0..64).map(|i| one(t - 64 + i)).collect();
    let points: Vec<Value> = sixty_four
        .iter()
        .map(|r| {
            point(
                &AQ,
                "air_quality",
                r.time,
                5,
                json!({ "pm25": float(12.3) }),
            )
        })
        .collect();
    out.push(case(
        "readings: 64 in a frame",
        vec![msg(&AQ.up(), &AQ.seal(&sixty_four, 5))],
        vec![stored(points)],
    ));
    let mut sixty_five = vec![0x02u8, 123];
    for _ in 0..64 {
        sixty_five.extend_from_slice(&[0x01, 0x02, 123]);
    }
    out.push(case(
        "readings: 65 in a frame",
        vec![msg(&AQ.up(), &AQ.seal_body(0x11, 5, &body(&sixty_five)))],
        vec![malformed("too_many_readings")],
    ));

    // 6. The kind (check 8).
    out.push(case(
        "kind: a bin frame from an air-quality device",
        vec![msg(&AQ.up(), &AQ.seal(&[bin_reading(t, 40)], 5))],
        vec![refused("kind_mismatch")],
    ));
    let status_reading = Reading {
        time: t,
        values: Values::DeviceStatus(DeviceStatus {
            battery: Field::Value(3_650),
            rssi: Field::Value(-71),
            firmware: Field::Value(0x01_04_02),
            uptime: Field::Value(86_400),
            error_flags: Field::Value(0),
            dropped: Field::Value(0),
        }),
    };
    out.push(case(
        "kind: device status from any device; its field types",
        vec![msg(&AQ.up(), &AQ.seal(&[status_reading], 5))],
        vec![stored(vec![status_point(&AQ, t, 5)])],
    ));
    // The energy ledger (kind 4) from a bin: every device sends it; milliseconds stored
    // as seconds (floats).
    let ledger = Reading {
        time: t,
        values: Values::Energy(Energy {
            awake: Field::Value(1_500),
            asleep: Field::Value(298_500),
            modem_on: Field::Value(300_000),
            modem_active: Field::Value(2_250),
            sensor_on: Field::Value(800),
        }),
    };
    out.push(case(
        "kind: energy ledger from any device; its field types",
        vec![msg(&BIN.up(), &BIN.seal(&[ledger], 9))],
        vec![stored(vec![point(
            &BIN,
            "device_energy",
            t,
            9,
            json!({
                "cpuAwakeTime": float(1.5), "cpuAsleepTime": float(298.5),
                "modemOnTime": float(300.0), "modemActiveTime": float(2.25),
                "sensorOnTime": float(0.8),
            }),
        )])],
    ));
    let late_kind = AQ.seal(&[bin_reading(NOW + 3_600, 40)], 5);
    out.push(case(
        "order: the kind before the time",
        vec![msg(&AQ.up(), &late_kind)],
        vec![refused("kind_mismatch")],
    ));

    // 7. The replay state (check 9, §13.2).
    out.push(case(
        "replay: the same frame twice",
        vec![msg(&AQ.up(), &good), msg(&AQ.up(), &good)],
        vec![stored(vec![aq_point(&AQ, t, 5)]), duplicate()],
    ));
    let other = AQ.seal(&[aq(t - 1)], 5);
    out.push(case(
        "replay: the same counter with other content",
        vec![msg(&AQ.up(), &good), msg(&AQ.up(), &other)],
        vec![stored(vec![aq_point(&AQ, t, 5)]), refused("counter_reused")],
    ));
    let edge_in = AQ.seal(&[aq(t)], 2953);
    let edge_out = AQ.seal(&[aq(t)], 2952);
    let top = AQ.seal(&[aq(t - 10)], 5000);
    out.push(Case {
        name: "replay: below the window's edge the counter went back (highest 5000: 2953 stored, 2952 refused)",
        stored: vec![json!({ "tenant": "lyon", "device": "aq-1", "epoch": 1, "counter": 5000, "tag": tag(&top) })],
        messages: vec![msg(&AQ.up(), &edge_in), msg(&AQ.up(), &edge_out), msg(&AQ.up(), &top)],
        batches: None,
        clock_synchronised: true,
        expect: vec![
            stored(vec![aq_point(&AQ, t, 2953)]),
            refused("counter_reused"),
            duplicate(),
        ],
    });
    // A board erased and flashed again: its frame under counter 5 is refused; re-sealed
    // under the counter the verdict downlink names (§12.1: highest + 1), it is stored.
    let erased = AQ.seal(&[aq(t - 3)], 5);
    let resealed = AQ.seal(&[aq(t - 3)], 5001);
    out.push(Case {
        name: "replay: a counter gone back, then the same readings re-sealed under the resume counter",
        stored: vec![json!({ "tenant": "lyon", "device": "aq-1", "epoch": 1, "counter": 5000, "tag": tag(&top) })],
        messages: vec![msg(&AQ.up(), &erased), msg(&AQ.up(), &resealed)],
        batches: None,
        clock_synchronised: true,
        expect: vec![
            refused("counter_reused"),
            stored(vec![aq_point(&AQ, t - 3, 5001)]),
        ],
    });
    let old_dup = AQ.seal(&[aq(NOW - MAX_AGE - 10)], 7);
    out.push(Case {
        name: "order: a duplicate before the time window",
        stored: vec![json!({ "tenant": "lyon", "device": "aq-1", "epoch": 1, "counter": 7, "tag": tag(&old_dup) })],
        messages: vec![msg(&AQ.up(), &old_dup)],
        batches: None,
        clock_synchronised: true,
        expect: vec![duplicate()],
    });
    // Stored time (check 11, §13.2): counters 1000 apart share a millisecond.
    let c3 = AQ.seal(&[aq(t - 5)], 3);
    out.push(case(
        "stored time: counters 3 and 1003 in one second, the second refused",
        vec![
            msg(&AQ.up(), &c3),
            msg(&AQ.up(), &AQ.seal(&[aq(t - 5)], 1003)),
        ],
        vec![
            stored(vec![aq_point(&AQ, t - 5, 3)]),
            refused("time_collision"),
        ],
    ));
    out.push(case(
        "stored time: a frame spanning a second another block stored is refused",
        vec![
            msg(&AQ.up(), &c3),
            msg(&AQ.up(), &AQ.seal(&[aq(t - 9), aq(t - 1)], 1500)),
        ],
        vec![
            stored(vec![aq_point(&AQ, t - 5, 3)]),
            refused("time_collision"),
        ],
    ));
    out.push(case(
        "stored time: the next block one second later, the same block's second, a status",
        vec![
            msg(&AQ.up(), &c3),
            msg(&AQ.up(), &AQ.seal(&[aq(t - 4)], 1003)),
            msg(&AQ.up(), &AQ.seal(&[aq(t - 5)], 999)),
            msg(
                &AQ.up(),
                &AQ.seal(
                    &[Reading {
                        time: t - 5,
                        ..status_reading
                    }],
                    2003,
                ),
            ),
        ],
        vec![
            stored(vec![aq_point(&AQ, t - 5, 3)]),
            stored(vec![aq_point(&AQ, t - 4, 1003)]),
            stored(vec![aq_point(&AQ, t - 5, 999)]),
            stored(vec![status_point(&AQ, t - 5, 2003)]),
        ],
    ));
    let c10 = AQ.seal(&[aq(t - 3)], 10);
    let c11 = AQ.seal(&[aq(t - 2)], 11);
    let c12 = AQ.seal(&[aq(t - 1)], 12);
    let sequence = vec![
        msg(&AQ.up(), &c10),
        msg(&AQ.up(), &c12),
        msg(&AQ.up(), &c11),
        msg(&AQ.up(), &c12),
        msg(&AQ.up(), &c10),
    ];
    let sequence_expect = vec![
        stored(vec![aq_point(&AQ, t - 3, 10)]),
        stored(vec![aq_point(&AQ, t - 1, 12)]),
        stored(vec![aq_point(&AQ, t - 2, 11)]),
        duplicate(),
        duplicate(),
    ];
    for (name, batches) in [
        ("replay: late and repeated frames, one batch", vec![5]),
        (
            "replay: late and repeated frames, one message a batch",
            vec![1, 1, 1, 1, 1],
        ),
        (
            "replay: late and repeated frames, batches of 2, 2, 1",
            vec![2, 2, 1],
        ),
    ] {
        out.push(Case {
            name,
            stored: Vec::new(),
            messages: sequence.clone(),
            batches: Some(batches),
            clock_synchronised: true,
            expect: sequence_expect.clone(),
        });
    }
    let refused_first = AQ.seal(&[aq(NOW + 3_600)], 20);
    let same_counter_good = AQ.seal(&[aq(t)], 20);
    out.push(case(
        "replay: a held frame leaves the state unchanged",
        vec![
            msg(&AQ.up(), &refused_first),
            msg(&AQ.up(), &same_counter_good),
        ],
        vec![held("future_timestamp"), stored(vec![aq_point(&AQ, t, 20)])],
    ));

    // 8. The time window (check 10, §13.3), inclusive bounds.
    for (name, time, expect) in [
        ("time: now + skew is accepted", NOW + SKEW, None),
        (
            "time: now + skew + 1 is in the future",
            NOW + SKEW + 1,
            Some("future_timestamp"),
        ),
        ("time: now − max age is accepted", NOW - MAX_AGE, None),
        (
            "time: now − max age − 1 is stale",
            NOW - MAX_AGE - 1,
            Some("stale_timestamp"),
        ),
    ] {
        let f = AQ.seal(&[aq(time)], 30);
        let e = match expect {
            None => stored(vec![aq_point(&AQ, time, 30)]),
            Some("future_timestamp") => held("future_timestamp"),
            Some(reason) => refused(reason),
        };
        out.push(case(name, vec![msg(&AQ.up(), &f)], vec![e]));
    }
    out.push(case(
        "time: one reading in the future holds the frame",
        vec![msg(&AQ.up(), &AQ.seal(&[aq(t), aq(NOW + 3_600)], 31))],
        vec![held("future_timestamp")],
    ));
    // An unsynchronised host clock refuses nothing for its time: stale is held too.
    out.push(Case {
        clock_synchronised: false,
        ..case(
            "time: an unsynchronised clock holds what is stale and what is in the future",
            vec![
                msg(&AQ.up(), &AQ.seal(&[aq(NOW - MAX_AGE - 1)], 33)),
                msg(&AQ.up(), &AQ.seal(&[aq(NOW + SKEW + 1)], 34)),
                msg(&AQ.up(), &AQ.seal(&[aq(t)], 35)),
            ],
            vec![
                held("stale_timestamp"),
                held("future_timestamp"),
                stored(vec![aq_point(&AQ, t, 35)]),
            ],
        )
    });
    out.push(case(
        "time: the first failing reading gives the reason",
        vec![msg(
            &AQ.up(),
            &AQ.seal(&[aq(NOW - MAX_AGE - 5), aq(NOW + 3_600)], 32),
        )],
        vec![refused("stale_timestamp")],
    ));

    // 9. Faults, plausibility and stored types (§13.4, §13.7).
    let faults_only = Reading {
        time: t,
        values: Values::AirQuality(AirQuality {
            pm1: Field::Fault,
            pm25: Field::Fault,
            pm10: Field::Fault,
            ..AirQuality::default()
        }),
    };
    out.push(case(
        "faults: a reading made only of faults is stored",
        vec![msg(&AQ.up(), &AQ.seal(&[faults_only], 40))],
        vec![stored(vec![point(
            &AQ,
            "air_quality",
            t,
            40,
            json!({ "faults": { "type": "string", "value": "pm1,pm25,pm10" } }),
        )])],
    ));
    let air = |pm1: u16, pm25: u16, pm10: u16, temperature: i16, pressure: u16| Reading {
        time: t,
        values: Values::AirQuality(AirQuality {
            pm1: Field::Value(pm1),
            pm25: Field::Value(pm25),
            pm10: Field::Value(pm10),
            temperature: Field::Value(temperature),
            pressure: Field::Value(pressure),
            co2: Field::Value(415),
            ..AirQuality::default()
        }),
    };
    let fields =
        |pm1: f64, pm25: f64, pm10: f64, temperature: f64, pressure: f64, quality: Option<&str>| {
            let mut f = json!({
                "pm1": float(pm1), "pm25": float(pm25), "pm10": float(pm10),
                "temperature": float(temperature), "atmosphericPressure": float(pressure),
                "co2": int(415),
            });
            if let Some(q) = quality {
                f["quality"] = json!({ "type": "string", "value": q });
            }
            f
        };
    for (name, reading, expected) in [
        (
            "plausibility: all limits met",
            air(100, 100, 100, -300, 8_700),
            fields(10.0, 10.0, 10.0, -30.0, 870.0, None),
        ),
        (
            "plausibility: upper limits met",
            air(10, 20, 30, 500, 10_850),
            fields(1.0, 2.0, 3.0, 50.0, 1085.0, None),
        ),
        (
            "plausibility: PM1 above PM2.5",
            air(101, 100, 100, 0, 10_000),
            fields(10.1, 10.0, 10.0, 0.0, 1000.0, Some("pm1_above_pm25")),
        ),
        (
            "plausibility: PM2.5 above PM10",
            air(10, 101, 100, 0, 10_000),
            fields(1.0, 10.1, 10.0, 0.0, 1000.0, Some("pm25_above_pm10")),
        ),
        (
            "plausibility: −30.1 °C",
            air(10, 20, 30, -301, 10_000),
            fields(
                1.0,
                2.0,
                3.0,
                -30.1,
                1000.0,
                Some("temperature_implausible"),
            ),
        ),
        (
            "plausibility: 50.1 °C",
            air(10, 20, 30, 501, 10_000),
            fields(1.0, 2.0, 3.0, 50.1, 1000.0, Some("temperature_implausible")),
        ),
        (
            "plausibility: 869.9 hPa",
            air(10, 20, 30, 0, 8_699),
            fields(1.0, 2.0, 3.0, 0.0, 869.9, Some("pressure_implausible")),
        ),
        (
            "plausibility: 1085.1 hPa",
            air(10, 20, 30, 0, 10_851),
            fields(1.0, 2.0, 3.0, 0.0, 1085.1, Some("pressure_implausible")),
        ),
        (
            "plausibility: several flags",
            air(200, 150, 100, 600, 10_000),
            fields(
                20.0,
                15.0,
                10.0,
                60.0,
                1000.0,
                Some("pm1_above_pm25,pm25_above_pm10,temperature_implausible"),
            ),
        ),
    ] {
        out.push(case(
            name,
            vec![msg(&AQ.up(), &AQ.seal(&[reading], 50))],
            vec![stored(vec![point(&AQ, "air_quality", t, 50, expected)])],
        ));
    }
    let bin_fields = |distance: i64, fill: f64, quality: Option<&str>| {
        let mut f = json!({
            "distance": int(distance), "fillingLevel": float(fill),
            "tilted": { "type": "boolean", "value": true },
            "lidOpen": { "type": "boolean", "value": false },
            "fireSuspected": { "type": "boolean", "value": false },
            "batteryVoltage": float(3.3),
        });
        if let Some(q) = quality {
            f["quality"] = json!({ "type": "string", "value": q });
        }
        f
    };
    for (name, distance, fill, expected) in [
        (
            "bin: distance = depth, empty",
            1000u16,
            0u8,
            bin_fields(1000, 0.0, None),
        ),
        (
            "bin: distance beyond depth",
            1001,
            0,
            bin_fields(1001, 0.0, Some("distance_beyond_depth")),
        ),
        (
            "bin: fill 10 points off is consistent",
            400,
            50,
            bin_fields(400, 0.5, None),
        ),
        (
            "bin: fill 11 points off is inconsistent",
            400,
            49,
            bin_fields(400, 0.49, Some("fill_level_inconsistent")),
        ),
    ] {
        let r = Reading {
            time: t,
            values: Values::WasteBin(WasteBin {
                distance: Field::Value(distance),
                fill_level: Field::Value(fill),
                flags: Field::Value(0b001),
                battery: Field::Value(3_300),
                ..WasteBin::default()
            }),
        };
        out.push(case(
            name,
            vec![msg(&BIN.up(), &BIN.seal(&[r], 60))],
            vec![stored(vec![point(&BIN, "waste_bin", t, 60, expected)])],
        ));
    }

    // 10. Transport flags do not change a verdict (§13.5).
    let mut qos0 = msg(&AQ.up(), &AQ.seal(&[aq(t)], 70));
    qos0["qos"] = json!(0);
    let mut qos2 = msg(&AQ.up(), &AQ.seal(&[aq(t + 1)], 71));
    qos2["qos"] = json!(2);
    qos2["retain"] = json!(true);
    out.push(case(
        "transport: QoS 0, QoS 2 retained",
        vec![qos0, qos2],
        vec![
            stored(vec![aq_point(&AQ, t, 70)]),
            stored(vec![aq_point(&AQ, t + 1, 71)]),
        ],
    ));
    out
}

fn bin_reading(time: u32, fill: u8) -> Reading {
    Reading {
        time,
        values: Values::WasteBin(WasteBin {
            distance: Field::Value(1000 - 10 * u16::from(fill)),
            fill_level: Field::Value(fill),
            ..WasteBin::default()
        }),
    }
}

/// The file's text.
pub fn render() -> String {
    let registry: Vec<Value> = [&AQ, &BIN, &REVOKED, &PARIS]
        .iter()
        .map(|d| d.registry())
        .collect();
    let mut text = String::new();
    for c in cases() {
        assert_eq!(c.messages.len(), c.expect.len(), "{}", c.name);
        let mut v = json!({
            "name": c.name,
            "registry": registry,
            "now": NOW,
            "max_future_skew": SKEW,
            "max_age": MAX_AGE,
            "clock_synchronised": c.clock_synchronised,
            "stored": c.stored,
            "messages": c.messages,
            "expect": c.expect,
        });
        if let Some(b) = c.batches {
            v["batches"] = json!(b);
        }
        text += &serde_json::to_string(&v).unwrap();
        text.push('\n');
    }
    text
}

fn main() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/receiver.jsonl");
    let text = render();
    std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
    std::fs::write(path, &text).unwrap();
    println!("{path}: {} cases", text.lines().count());
}
