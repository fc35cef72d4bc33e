//! Hostile provisioning blobs (what a technician loads, what a board reads at boot):
//! decoding never panics or over-reads, and a blob that decodes encodes back to the same
//! bytes (one encoding per blob, SPEC §11).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::provision::{MAX_BLOB_LEN, Provisioning};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Provisioning::decode(data) {
        let mut buf = [0u8; MAX_BLOB_LEN];
        let n = p.encode(&mut buf).expect("a decoded blob encodes");
        assert_eq!(&buf[..n], data, "one encoding per blob");
    }
});
