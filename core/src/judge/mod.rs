//! Judging a frame: topic + payload + registry + replay book → accepted, duplicate, held
//! or refused, one at a time or as a batch, with stable reason codes.

pub mod batch;
pub mod reason;
pub mod recent;
pub mod replay_book;
pub mod spare;
pub mod validate;
pub mod verify;
