//! Hostile frames, downlinks and topics: nothing may panic or over-read, and whatever
//! verifies is exactly what the key's holder would have sealed.
//!
//! "Nothing random verifies" is not asserted here: libFuzzer traces comparisons, so it
//! reads the expected 8-byte tag off the tag check and writes it into its next input (CI
//! found such an input on 2026-12-06). That property is proven without instrumentation in
//! `protocol/tests/properties.rs` (arbitrary bytes behind a valid header, every bit flip).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{Ack, DeviceKey, Downlink, Identity, Topic, Verdicts, open, peek, reseal};

fuzz_target!(|data: &[u8]| {
    let key = DeviceKey::new([0; 16], 1);
    if let Ok(who) = Identity::new("lyon", "aq-0001") {
        frame(data, &key, who);
        downlinks(data, &key, who);
    }
    if let Ok(topic) = core::str::from_utf8(data)
        && let Ok(t) = Topic::parse(topic)
    {
        assert_eq!(t.render().as_str(), topic);
    }
});

/// A frame that verifies re-seals under its own counter to the very same bytes; one that
/// does not is left untouched by `reseal`.
fn frame(data: &[u8], key: &DeviceKey, who: Identity<'_>) {
    let header = peek(data);
    let opened = open(data, key, who);
    let mut copy = data.to_vec();
    let counter = header.map_or(7, |h| h.counter);
    match reseal(&mut copy, counter, key, who) {
        Ok(()) => assert!(header.is_ok()),
        Err(_) => assert!(opened.is_err()),
    }
    assert_eq!(copy, data);
}

/// A downlink that verifies seals back to the very same bytes.
fn downlinks(data: &[u8], key: &DeviceKey, who: Identity<'_>) {
    let id = || {
        let mut id = [0u8; 8];
        id.copy_from_slice(&data[1..9]);
        id
    };
    if let Ok(ack) = Ack::open(data, key, who) {
        assert_eq!(&ack.seal(id(), key, who)[..], data);
    }
    if let Ok(verdicts) = Verdicts::open(data, key, who) {
        assert_eq!(&verdicts.seal(id(), key, who)[..], data);
    }
    match Downlink::open(data, key, who) {
        Ok(Downlink::Ack(ack)) => assert_eq!(&ack.seal(id(), key, who)[..], data),
        Ok(Downlink::Verdicts(v)) => assert_eq!(&v.seal(id(), key, who)[..], data),
        Err(_) => {}
    }
}
