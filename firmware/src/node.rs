//! A provisioned node: its identity, frame counter, store-and-forward queue and uplink.
//!
//! Readings go into the queue; [`Node::flush`] seals the oldest into a frame (taking a
//! fresh counter), moves them out of the queue into that sealed frame, and publishes it
//! until the broker acknowledges. A frame whose send failed is re-sent byte for byte after
//! the reconnect: same counter, so a copy the broker did deliver is a duplicate to the
//! gateway, never a second stored reading. Nothing here blocks on a clock.

use embedded_storage::nor_flash::NorFlash;
use heapless::Vec;
use protocol::provision::Provisioning;
use protocol::reading::error_flags;
use protocol::{DeviceStatus, EncodeError, Field, Reading, Values};
use rust_mqtt::io::Transport;

use crate::counter::{CounterError, FrameCounter};
use crate::outbox::Outbox;
use crate::uplink::{Mqtt, Uplink, UplinkError};

/// Largest frame the node seals. Eleven air-quality readings fit, and the buffer stays
/// small for 16 KiB of RAM; readings beyond it go in the next frame.
pub const FRAME_BUF: usize = 256;

/// This firmware's version as the status frame carries it (`major << 16 | minor << 8 | patch`).
pub const FIRMWARE_VERSION: u32 = version(env!("CARGO_PKG_VERSION"));

/// Why the node could not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum NodeError {
    /// The provisioned tenant or device id is not valid.
    Identity,
    /// The counter could not be reserved in flash: sending would risk reusing a counter.
    Counter(CounterError),
    /// A queued reading could not be framed (a bug: readings are checked when built).
    Frame(EncodeError),
    /// The link failed; the frame is kept for the next connection.
    Uplink(UplinkError),
}

impl From<UplinkError> for NodeError {
    fn from(e: UplinkError) -> Self {
        Self::Uplink(e)
    }
}

/// A sealed frame waiting for its PUBACK, with the readings it carries.
#[derive(Debug)]
struct Sealed {
    bytes: Vec<u8, FRAME_BUF>,
    readings: usize,
}

/// The node, queueing up to `Q` readings.
#[derive(Debug)]
pub struct Node<F, const Q: usize> {
    provisioning: Provisioning,
    uplink: Uplink,
    counter: FrameCounter<F>,
    outbox: Outbox<Q>,
    pending: Option<Sealed>,
    errors: u16,
}

impl<F: NorFlash, const Q: usize> Node<F, Q> {
    /// A node for `provisioning`, counting frames with `counter`. The MQTT keep-alive is
    /// twice the sample interval, so the broker notices a dead node within three intervals.
    pub fn new(provisioning: Provisioning, counter: FrameCounter<F>) -> Result<Self, NodeError> {
        let who = provisioning.identity().map_err(|_| NodeError::Identity)?;
        let keep_alive = provisioning.sample_interval_s.saturating_mul(2);
        let uplink = Uplink::new(who, keep_alive);
        Ok(Self {
            provisioning,
            uplink,
            counter,
            outbox: Outbox::new(),
            pending: None,
            errors: 0,
        })
    }

    /// The provisioning the node runs with.
    pub fn provisioning(&self) -> &Provisioning {
        &self.provisioning
    }

    /// The uplink's topics and options.
    pub fn uplink(&self) -> &Uplink {
        &self.uplink
    }

    /// Queues a reading (the oldest is dropped and counted when the queue is full).
    pub fn record(&mut self, reading: Reading) {
        self.outbox.push(reading);
    }

    /// Notes a fault (bits of [`error_flags`]) for the next status report.
    pub fn flag(&mut self, error: u16) {
        self.errors |= error;
    }

    /// Queues a status reading: battery, signal, uptime, the faults flagged since the last
    /// report, and the readings dropped since boot.
    pub fn report_status(
        &mut self,
        now: u32,
        battery_mv: Option<u16>,
        rssi: Option<i16>,
        uptime_s: u32,
    ) {
        let status = DeviceStatus {
            battery: battery_mv.map_or(Field::Absent, Field::Value),
            rssi: rssi.map_or(Field::Absent, Field::Value),
            firmware: Field::Value(FIRMWARE_VERSION),
            uptime: Field::Value(uptime_s),
            error_flags: Field::Value(core::mem::take(&mut self.errors)),
            dropped: Field::Value(self.outbox.dropped()),
        };
        self.record(Reading {
            time: now,
            values: Values::DeviceStatus(status),
        });
    }

    /// Readings not yet acknowledged (queued or in the frame in flight).
    pub fn unacknowledged(&self) -> usize {
        self.outbox.len() + self.pending.as_ref().map_or(0, |p| p.readings)
    }

    /// Readings dropped since boot because the queue was full.
    pub fn dropped(&self) -> u32 {
        self.outbox.dropped()
    }

    /// The next counter the node will use (for logs and tests).
    pub fn next_counter(&self) -> u32 {
        self.counter.peek()
    }

    /// Sends everything queued over a connected `client`, one frame at a time, each only
    /// forgotten after its PUBACK. Returns the readings acknowledged. On error the
    /// connection must be dropped; nothing is lost.
    pub async fn flush<T: Transport>(
        &mut self,
        client: &mut Mqtt<'_, T>,
    ) -> Result<usize, NodeError> {
        let mut acknowledged = 0;
        loop {
            self.seal_next()?;
            let Some(sealed) = &self.pending else {
                return Ok(acknowledged);
            };
            if let Err(e) = self.uplink.publish(client, &sealed.bytes).await {
                self.errors |= error_flags::UPLINK;
                return Err(e.into());
            }
            acknowledged += sealed.readings;
            self.pending = None;
        }
    }

    /// Moves the oldest queued readings into a sealed frame, unless one is already waiting.
    fn seal_next(&mut self) -> Result<(), NodeError> {
        if self.pending.is_some() {
            return Ok(());
        }
        let mut buf = [0u8; FRAME_BUF];
        let Some((frame, n)) = self.outbox.next_frame(&mut buf) else {
            return Ok(());
        };
        let counter = self.counter.take().map_err(|e| {
            self.errors |= error_flags::STORAGE;
            NodeError::Counter(e)
        })?;
        let who = self
            .provisioning
            .identity()
            .map_err(|_| NodeError::Identity)?;
        let sealed = frame
            .seal(counter, &self.provisioning.key, who)
            .map_err(NodeError::Frame)?;
        let bytes =
            Vec::from_slice(sealed).map_err(|_| NodeError::Frame(EncodeError::BufferFull))?;
        self.outbox.confirm(n);
        self.pending = Some(Sealed { bytes, readings: n });
        Ok(())
    }
}

/// `"1.2.3"` → `0x010203`; parts beyond 255 or missing read as 0.
const fn version(s: &str) -> u32 {
    let b = s.as_bytes();
    let (mut parts, mut part, mut i) = ([0u32; 3], 0, 0);
    while i < b.len() && part < 3 {
        match b[i] {
            b'0'..=b'9' => parts[part] = parts[part] * 10 + (b[i] - b'0') as u32,
            b'.' => part += 1,
            _ => break, // pre-release suffix
        }
        i += 1;
    }
    byte(parts[0]) << 16 | byte(parts[1]) << 8 | byte(parts[2])
}

const fn byte(v: u32) -> u32 {
    if v > 255 { 0 } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_packs_semver() {
        assert_eq!(version("1.2.3"), 0x010203);
        assert_eq!(version("0.1.0"), 0x000100);
        assert_eq!(version("2.10.4-rc.1"), 0x020a04);
    }
}
