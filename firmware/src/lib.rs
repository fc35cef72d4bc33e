//! Vigie field firmware (`no_std`, no heap).
//!
//! Module map:
//! - [`drivers`]: sensor drivers over embedded-hal 1.0 (SDS011 PM, BME280 climate,
//!   A02YYUW distance, tilt switch).
//! - [`sampling`]: median of a window, report-on-change with heartbeat, bin fill level,
//!   fire suspicion (pure).
//! - [`station`]: one sampling cycle per kind, drivers in, a reading and fault flags out.
//! - [`counter`]: the frame counter, never reused, persisted by skip-ahead reservation.
//! - [`outbox`]: readings waiting in RAM to be sealed (only while the flash fails); when
//!   full the oldest is dropped and counted.
//! - [`ring`]: sealed frames in flash until a gateway acknowledges them; torn-write-safe,
//!   wear-levelled, bounded (the oldest page goes, counted, when full).
//! - [`node`]: identity, counter, ring and uplink together: seal, publish, forget on a
//!   gateway's acknowledgement, resend what none covered.
//! - [`downlink`]: a gateway's downlinks applied: forget what it holds, count what it
//!   refused, re-seal under fresh counters what it had seen under a used counter.
//! - [`mqtt`]: the MQTT 5 a node needs (connect with will, QoS 1 publish, one QoS 0
//!   subscription, ping), small enough for the image budget.
//! - [`uplink`]: the node's topics and session over [`mqtt`].
//! - [`energy`]: the node's energy ledger (time asleep, awake, modem on and active,
//!   sensor on), sent with each status report.
//! - [`flash`]: a window of a flash, and one flash shared by the counter and the ring.
//! - [`modem`]: cellular modem AT commands: network time, TCP in transparent mode.
//! - [`serial_io`]: an `embedded-hal-nb` UART as an async byte stream (polling).
//! - [`backoff`]: reconnect back-off with jitter.
//! - [`boot`]: the provisioning blob read from flash; no valid blob, no start.
//! - [`app`]: the node's main loop for any board (link, connect, sample, send, back off),
//!   and the texts boards show for each failure.
//! - [`simulated`]: sensors and NOR flash behind the same traits, for the host simulator and
//!   emulated boards that have none.
//!
//! Drivers and sampling are blocking (embedded-hal 1.0); only the uplink is async, because
//! the maintained no_std MQTT clients are (see `uplink`). A board runs it under any
//! executor, even a plain `block_on`; the host simulator under tokio.
#![no_std]
// Layout (docs/ARCHITECTURE.md): functions of at most 60 lines (`clippy.toml`) outside tests.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod app;
pub mod backoff;
pub mod boot;
pub mod counter;
pub mod downlink;
pub mod drivers;
pub mod energy;
pub mod flash;
pub mod link;
pub mod modem;
pub mod mqtt;
pub mod node;
pub mod outbox;
pub mod ring;
pub mod sampling;
pub mod serial_io;
pub mod simulated;
pub mod station;
pub mod uplink;

pub use protocol;

/// `n` in decimal, written into the end of `buf`. For the modem's commands and board
/// consoles: `core::fmt` would cost a board image 0.7 KiB of flash for this
/// (docs/PERFORMANCE.md).
pub fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    core::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// Readings the reference node keeps in RAM while its flash cannot take them (an outage
/// of the link needs none: readings wait in the flash ring).
pub const REFERENCE_QUEUE: usize = 16;
