//! The receiver conformance vectors checked in (`vectors/receiver.jsonl`, SPEC §13.11)
//! are exactly what `examples/vectors.rs` writes from this crate's sealer: a change to the
//! wire format or to a case shows up here, and the file is never edited by hand.

#[path = "../examples/vectors.rs"]
#[allow(dead_code)]
mod generator;

#[test]
fn the_checked_in_vectors_are_what_the_generator_writes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/receiver.jsonl");
    let file = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        file == generator::render(),
        "{path} is stale: run `cargo run -p protocol --example vectors`"
    );
}
