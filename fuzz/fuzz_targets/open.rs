//! Hostile frames, acknowledgements and topics: nothing may panic or over-read, and
//! nothing forged verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{Ack, DeviceKey, Identity, Topic, open, peek};

fuzz_target!(|data: &[u8]| {
    let key = DeviceKey::new([0; 16], 1);
    if let Ok(who) = Identity::new("lyon", "aq-0001") {
        let _ = peek(data);
        // A random input that verifies would mean the tag check is broken.
        assert!(open(data, &key, who).is_err());
        assert!(Ack::open(data, &key, who).is_err());
    }
    if let Ok(topic) = core::str::from_utf8(data) {
        if let Ok(t) = Topic::parse(topic) {
            assert_eq!(t.render().as_str(), topic);
        }
    }
});
