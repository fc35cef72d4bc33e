//! Seals the typical air-quality reading, prints the frame in hex, opens it again and
//! prints its JSON view: a two-second tour of the wire contract.
//! `cargo run -q -p protocol --features serde --example frame`
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use protocol::{MAX_FRAME_LEN, open, seal, topic};

fn main() {
    let (key, who) = (common::key(), common::who());
    let readings = common::series(common::aq6(), 1);
    let mut buf = [0u8; MAX_FRAME_LEN];
    let frame = seal(&mut buf, &readings, common::COUNTER, &key, who).unwrap();
    println!("topic   {}", topic::uplink(who));
    println!("frame   {} ({} bytes)", hex::encode(frame), frame.len());
    let opened = open(frame, &key, who).unwrap();
    println!("counter {}", opened.header.counter);
    for r in &opened.readings {
        println!("json    {}", serde_json::to_string(r).unwrap());
    }
}
