//! The body parser behind the tag: arbitrary plaintext, sealed with the right key, must be
//! rejected cleanly or decode to readings that re-encode to the very same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{DeviceKey, Identity, Kind, MAX_FRAME_LEN, open, seal};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let Some(kind) = Kind::from_code(kind % 4) else {
        return;
    };
    let key = DeviceKey::new([3; 16], 1);
    let Ok(who) = Identity::new("lyon", "aq-0001") else {
        return;
    };
    let Some(frame) = protocol::frame::fuzzing::seal_body(kind, 9, body, &key, who) else {
        return;
    };
    if let Ok(decoded) = open(&frame, &key, who) {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let again =
            seal(&mut buf, &decoded.readings, 9, &key, who).expect("decoded readings re-encode");
        assert_eq!(again, &frame[..], "canonical encoding");
    }
});
