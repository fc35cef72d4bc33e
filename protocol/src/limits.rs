//! Every size and version the wire format fixes, in one leaf module that imports nothing:
//! the frame, crypto, topic and reading modules take their limits from here, so none of
//! them imports another for a constant (SPEC §3, §7, §8).

/// Protocol version in the header's high nibble.
pub const VERSION: u8 = 1;
/// Clear header: version/kind byte and the 32-bit frame counter.
pub const HEADER_LEN: usize = 5;
/// Bytes of the truncated authentication tag on the wire.
pub const TAG_LEN: usize = 8;
/// Largest frame accepted or built.
pub const MAX_FRAME_LEN: usize = 1024;
/// Most readings in one frame.
pub const MAX_READINGS: usize = 64;
/// Shortest possible frame: header, time, a one-field reading (2 bytes), tag.
pub const MIN_FRAME_LEN: usize = HEADER_LEN + 4 + 2 + TAG_LEN;
/// Longest tenant, device or group identifier.
pub const MAX_ID_LEN: usize = 32;
/// Longest topic the topic module builds (`$share/<group>/…` with maximal ids fits).
pub const MAX_TOPIC_LEN: usize = 96;
/// Most fields a kind may have (bitmaps are u32 with one bit for the fault-map flag).
pub const MAX_FIELDS: usize = 16;
