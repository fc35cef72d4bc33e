//! Hostile frames, downlinks and topics: nothing may panic or over-read, and nothing
//! forged verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{Ack, DeviceKey, Downlink, Identity, Topic, Verdicts, open, peek, reseal};

fuzz_target!(|data: &[u8]| {
    let key = DeviceKey::new([0; 16], 1);
    if let Ok(who) = Identity::new("lyon", "aq-0001") {
        let _ = peek(data);
        // A random input that verifies would mean the tag check is broken.
        assert!(open(data, &key, who).is_err());
        assert!(Ack::open(data, &key, who).is_err());
        assert!(Verdicts::open(data, &key, who).is_err());
        assert!(Downlink::open(data, &key, who).is_err());
        // Re-sealing is only for the device's own frames: a forged one is left as it was.
        let mut copy = data.to_vec();
        assert!(reseal(&mut copy, 7, &key, who).is_err());
        assert_eq!(copy, data);
    }
    if let Ok(topic) = core::str::from_utf8(data) {
        if let Ok(t) = Topic::parse(topic) {
            assert_eq!(t.render().as_str(), topic);
        }
    }
});
