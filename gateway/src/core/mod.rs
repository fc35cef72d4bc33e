//! The pure core: no sockets, no files, time passed in. Everything here is tested without
//! a broker or a database.
//!
//! - [`reason`]: why a frame is rejected, as stable codes.
//! - [`batch`]: a batch of messages → the verdicts one-at-a-time delivery would give.
//! - [`verify`]: topic + payload + registry + replay book → accept / duplicate / reject.
//! - [`validate`]: time window and plausibility flags.
//! - [`lineproto`]: readings → InfluxDB line protocol.
//! - [`replay_book`]: replay windows of every device, persisted as a snapshot.
//! - [`retry`]: database answer → what to do, and backoff.
//! - [`record`]: the buffer's record payload.

pub mod batch;
pub mod lineproto;
pub mod reason;
pub mod record;
pub mod replay_book;
pub mod retry;
pub mod validate;
pub mod verify;
