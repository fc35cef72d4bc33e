//! The receiver conformance vectors of `protocol/vectors/receiver.jsonl` (SPEC §13.11),
//! run through the gateway's pure core: every case judged in its batches and again one
//! message at a time (the verdicts may not depend on batching), each verdict and each
//! stored point (measurement, tags, time, every field with its line-protocol type and
//! value) compared with what the case expects. Then the reason table of SPEC §13.6
//! against the code's reasons and the decoder's codes, so the names cannot drift.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::collections::BTreeSet;
use vigie_core::fleet::{DeviceEntry, DeviceKind, Registry};
use vigie_core::judge::batch::{self, Outcome};
use vigie_core::judge::reason::Reason;
use vigie_core::judge::replay_book::ReplayBook;
use vigie_core::judge::validate::TimeRules;
use vigie_core::judge::verify::Context;
use vigie_core::output::lineproto::StringFields;
use vigie_core::record::Record;

fn root(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn registry(case: &Value) -> Registry {
    let entries = case["registry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let kind = match d["kind"].as_str().unwrap() {
                "air_quality" => DeviceKind::AirQuality,
                "waste_bin" => DeviceKind::WasteBin,
                other => panic!("kind {other}"),
            };
            let (tenant, id) = (d["tenant"].as_str().unwrap(), d["device"].as_str().unwrap());
            let key = d["key"].as_str().unwrap().to_string();
            DeviceEntry {
                bin_depth_mm: d["bin_depth_mm"].as_u64().map(|v| v as u16),
                revoked: d["revoked"].as_bool().unwrap(),
                ..DeviceEntry::new(tenant, id, kind, key, d["epoch"].as_u64().unwrap() as u32)
            }
        })
        .collect();
    Registry::from_entries(entries).unwrap()
}

/// Splits `text` on `sep` outside double quotes (line-protocol string fields).
fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// One line of line protocol as a vector's point: measurement, tags, time, typed fields.
fn point(line: &str) -> Value {
    let parts = split_outside_quotes(line, ' ');
    assert_eq!(parts.len(), 3, "{line}");
    let mut key = parts[0].split(',');
    let measurement = key.next().unwrap();
    let tags: serde_json::Map<String, Value> = key
        .map(|t| {
            let (k, v) = t.split_once('=').unwrap();
            (k.to_string(), json!(v))
        })
        .collect();
    let mut fields = serde_json::Map::new();
    for f in split_outside_quotes(parts[1], ',') {
        let (name, raw) = f.split_once('=').unwrap();
        let typed = if let Some(s) = raw.strip_prefix('"') {
            json!({ "type": "string", "value": s.strip_suffix('"').unwrap().replace("\\\"", "\"") })
        } else if let Some(i) = raw.strip_suffix('i') {
            json!({ "type": "integer", "value": i.parse::<i64>().unwrap() })
        } else if matches!(raw, "true" | "false" | "t" | "f") {
            json!({ "type": "boolean", "value": raw.starts_with('t') })
        } else {
            json!({ "type": "float", "value": raw.parse::<f64>().unwrap() })
        };
        fields.insert(name.to_string(), typed);
    }
    json!({
        "measurement": measurement,
        "tags": tags,
        "time_ms": parts[2].parse::<u64>().unwrap(),
        "fields": fields,
    })
}

/// The case's messages judged in `batches`, each batch made durable before the next.
fn run(case: &Value, batches: &[usize]) -> Vec<Value> {
    let registry = registry(case);
    let mut book = ReplayBook::default();
    for s in case["stored"].as_array().unwrap() {
        let tag: [u8; 8] = hex::decode(s["tag"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        // No lines: the case's prior state says nothing of when it was measured.
        book.accept(&Record {
            tenant: s["tenant"].as_str().unwrap().into(),
            device: s["device"].as_str().unwrap().into(),
            epoch: s["epoch"].as_u64().unwrap() as u32,
            counter: s["counter"].as_u64().unwrap() as u32,
            readings: 0,
            tag: Some(tag),
            lines: String::new(),
        });
    }
    let rules = TimeRules {
        max_future_skew_s: case["max_future_skew"].as_u64().unwrap(),
        max_age_s: case["max_age"].as_u64().unwrap(),
    };
    let messages: Vec<(String, Vec<u8>)> = case["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().to_string(),
                hex::decode(m["payload"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    let mut verdicts = Vec::new();
    let mut at = 0;
    for &n in batches {
        let cx = Context {
            registry: &registry,
            counters: &book,
            rules: &rules,
            strings: StringFields::Fields,
            now_s: case["now"].as_u64().unwrap(),
            clock_synced: case["clock_synchronised"].as_bool().unwrap_or(true),
        };
        let chunk = &messages[at..at + n];
        let plan = batch::judge(chunk.iter().map(|(t, p)| (t.as_str(), p.as_slice())), &cx);
        for outcome in &plan.outcomes {
            verdicts.push(match outcome {
                Outcome::Store(i) => json!({
                    "verdict": "stored",
                    "points": plan.accepted[*i].record.lines.lines().map(point).collect::<Vec<_>>(),
                }),
                Outcome::Duplicate => json!({ "verdict": "duplicate" }),
                Outcome::Status { online, .. } => json!({ "verdict": "status", "online": online }),
                Outcome::Reject(Reason::Malformed(e)) => {
                    json!({ "verdict": "refused", "reason": "malformed", "detail": e.code() })
                }
                Outcome::Reject(r) => json!({ "verdict": "refused", "reason": r.code() }),
                Outcome::Hold(r) => json!({ "verdict": "held", "reason": r.code() }),
            });
        }
        batch::apply(&mut book, plan.accepted.iter());
        at += n;
    }
    assert_eq!(at, messages.len(), "batches cover the messages");
    verdicts
}

/// Whether two JSON values agree, floats to 1e-9.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() <= 1e-9
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}

#[test]
fn every_conformance_vector_gets_the_verdict_spec_gives() {
    let text = root("protocol/vectors/receiver.jsonl");
    let mut reasons = BTreeSet::new();
    let mut cases = 0;
    for line in text.lines() {
        let case: Value = serde_json::from_str(line).unwrap();
        let name = case["name"].as_str().unwrap();
        let expect = case["expect"].as_array().unwrap();
        let all = vec![expect.len()];
        let given: Vec<usize> = case["batches"]
            .as_array()
            .map(|b| b.iter().map(|n| n.as_u64().unwrap() as usize).collect())
            .unwrap_or(all);
        for batches in [given, vec![1; expect.len()]] {
            let got = run(&case, &batches);
            for (i, (g, e)) in got.iter().zip(expect).enumerate() {
                assert!(
                    same(g, e),
                    "{name}, message {i}, batches {batches:?}:\n got    {g}\n expect {e}"
                );
            }
        }
        for e in expect {
            if let Some(r) = e["reason"].as_str() {
                reasons.insert(r.to_string());
            }
        }
        cases += 1;
    }
    // At least one case per reason a receiver gives (the last three are the gateway's
    // own, after storing).
    let receiver: BTreeSet<String> = Reason::CODES
        .iter()
        .filter(|c| !["database_rejected", "database_discarded", "buffer_corrupt"].contains(c))
        .map(|c| c.to_string())
        .collect();
    assert_eq!(reasons, receiver, "reasons covered by the vectors");
    println!("{cases} conformance cases, {} reasons", reasons.len());
}

#[test]
fn the_reason_table_of_spec_is_the_code_s() {
    let spec = root("protocol/SPEC.md");
    let table = spec
        .split("<!-- reasons -->")
        .nth(1)
        .and_then(|t| t.split("<!-- /reasons -->").next())
        .expect("SPEC §13.6 reason table");
    let mut names = Vec::new();
    let mut details = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`');
        if !names.contains(&name.to_string()) {
            names.push(name.to_string());
        }
        // Decoder codes named in the row, for `malformed`.
        if name == "malformed" {
            for code in cells[2].split('`').skip(1).step_by(2) {
                details.insert(code.to_string());
            }
        }
    }
    let names: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let codes: BTreeSet<&str> = Reason::CODES.into_iter().collect();
    assert_eq!(names, codes, "SPEC §13.6 rows against Reason::CODES");
    let decoder: BTreeSet<String> = [
        protocol::DecodeError::TooShort,
        protocol::DecodeError::TooLong,
        protocol::DecodeError::UnsupportedVersion(2),
        protocol::DecodeError::UnknownKind(5),
        protocol::DecodeError::Truncated,
        protocol::DecodeError::BadVarint,
        protocol::DecodeError::UnknownField,
        protocol::DecodeError::BadFaultMap,
        protocol::DecodeError::EmptyReading,
        protocol::DecodeError::OutOfRange { field: 0 },
        protocol::DecodeError::TimeOrder,
        protocol::DecodeError::TooManyReadings,
    ]
    .iter()
    .map(|e| e.code().to_string())
    .collect();
    assert_eq!(details, decoder, "the decoder codes SPEC gives `malformed`");
    // Every reason the docs name in a metric label is one of them.
    for doc in [
        "docs/OPERATIONS.md",
        "docs/FLASHING.md",
        "docs/SCHEMA.md",
        "docs/TESTING.md",
    ] {
        let text = root(doc);
        for label in text.split("reason=\"").skip(1) {
            let code = label.split('"').next().unwrap();
            if code != "…" {
                assert!(Reason::CODES.contains(&code), "{doc} names reason {code:?}");
            }
        }
    }
}
