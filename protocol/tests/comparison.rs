//! The size comparison of SPEC.md §8, measured: the same six-value air-quality reading as
//! Cayenne LPP, SenML-JSON, SenML-CBOR and a plain JSON object.
//! `cargo test -p protocol --test comparison -- --nocapture` prints the figures.
#![allow(clippy::unwrap_used)]

mod common;

const BASE_NAME: &str = "urn:dev:vigie:lyon:aq-0001:";
/// (SenML name, SenML unit, value) of the typical reading; pressure in Pa as SenML registers it.
const RECORDS: [(&str, &str, f64); 6] = [
    ("pm1", "ug/m3", 8.2),
    ("pm25", "ug/m3", 12.3),
    ("pm10", "ug/m3", 20.1),
    ("temperature", "Cel", 21.4),
    ("humidity", "%RH", 55.5),
    ("pressure", "Pa", 101_320.0),
];

/// Cayenne LPP: channel, type, value per item. No PM type exists, so PM uses analog input
/// (0.01 signed, 2 bytes) as LPP users do; humidity is 1 byte (0.5 %), pressure 2 bytes.
fn cayenne_lpp() -> Vec<u8> {
    let mut out = Vec::new();
    for (ch, pm) in [8.2f64, 12.3, 20.1].iter().enumerate() {
        out.extend_from_slice(&[ch as u8, 0x02]);
        out.extend_from_slice(&((pm * 100.0).round() as i16).to_be_bytes());
    }
    out.extend_from_slice(&[3, 0x67]);
    out.extend_from_slice(&214i16.to_be_bytes());
    out.extend_from_slice(&[4, 0x68, 111]);
    out.extend_from_slice(&[5, 0x73]);
    out.extend_from_slice(&10_132u16.to_be_bytes());
    out
}

fn senml_json() -> String {
    let mut records = Vec::new();
    for (i, (n, u, v)) in RECORDS.iter().enumerate() {
        let mut r = serde_json::json!({ "n": n, "u": u, "v": v });
        if i == 0 {
            r["bn"] = BASE_NAME.into();
            r["bt"] = common::T0.into();
        }
        records.push(r);
    }
    serde_json::to_string(&records).unwrap()
}

/// Minimal CBOR (RFC 8949) for SenML-CBOR (RFC 8428 §6): integer labels bn=-2, bt=-3,
/// n=0, u=1, v=2; values as the shortest exact float, or an integer when whole.
fn senml_cbor() -> Vec<u8> {
    fn head(out: &mut Vec<u8>, major: u8, n: u64) {
        let m = major << 5;
        match n {
            0..24 => out.push(m | n as u8),
            24..0x100 => out.extend_from_slice(&[m | 24, n as u8]),
            0x100..0x1_0000 => {
                out.push(m | 25);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(m | 26);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
        }
    }
    let text = |out: &mut Vec<u8>, s: &str| {
        head(out, 3, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    };
    let mut out = Vec::new();
    head(&mut out, 4, RECORDS.len() as u64);
    for (i, (n, u, v)) in RECORDS.iter().enumerate() {
        head(&mut out, 5, if i == 0 { 5 } else { 3 });
        if i == 0 {
            out.push(0x21); // -2 bn
            text(&mut out, BASE_NAME);
            out.push(0x22); // -3 bt
            head(&mut out, 0, u64::from(common::T0));
        }
        out.push(0x00);
        text(&mut out, n);
        out.push(0x01);
        text(&mut out, u);
        out.push(0x02);
        if v.fract() == 0.0 {
            head(&mut out, 0, *v as u64);
        } else if f64::from(*v as f32) == *v {
            out.push(0xfa);
            out.extend_from_slice(&(*v as f32).to_be_bytes());
        } else {
            out.push(0xfb);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    out
}

fn plain_json() -> String {
    let mut obj = serde_json::json!({ "device": "aq-0001", "tenant": "lyon", "time": "2026-11-22T00:00:00Z" });
    for (n, _, v) in RECORDS {
        obj[n] = v.into();
    }
    serde_json::to_string(&obj).unwrap()
}

#[test]
fn sizes_against_other_encodings() {
    let ours = common::sealed_len(&common::series(common::aq6(), 1));
    let lpp = cayenne_lpp().len();
    let senml_json = senml_json().len();
    let senml_cbor = senml_cbor().len();
    let json = plain_json().len();
    println!(
        "vigie-v1 {ours}\ncayenne-lpp {lpp}\ncayenne-lpp+lorawan-fcnt+mic {}",
        lpp + 6
    );
    println!("senml-cbor {senml_cbor}\nsenml-json {senml_json}\njson {json}");
    // The figures SPEC.md §8 quotes.
    assert_eq!(
        (ours, lpp, senml_cbor, senml_json, json),
        (28, 23, 180, 266, 155)
    );
}
