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
use crate::station::Sample;
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

    /// Takes one sampling cycle's outcome: its faults for the next status report, its
    /// reading (if worth sending) into the queue. Returns whether a reading was queued.
    pub fn record_sample(&mut self, s: Sample) -> bool {
        self.flag(s.errors);
        s.reading.map(|r| self.record(r)).is_some()
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
    extern crate std;
    use super::*;
    use crate::app::block_on;
    use crate::simulated::RamFlash;
    use crate::uplink::Scratch;
    use protocol::{AirQuality, DeviceKey, Kind};
    use rust_mqtt::client::Client;
    use std::vec::Vec;

    /// A broker just big enough for one node: CONNACK, PUBACK for each QoS 1 PUBLISH
    /// (unless told to lose the connection before the PUBACK of an uplink frame), and a
    /// record of every uplink payload it took.
    #[derive(Default)]
    struct Broker {
        from_client: Vec<u8>,
        to_client: std::collections::VecDeque<u8>,
        uplinks: Vec<Vec<u8>>,
        die_before_uplink_puback: bool,
        dead: bool,
    }

    impl Broker {
        fn packet(&mut self) -> Option<(u8, Vec<u8>)> {
            let b = &self.from_client;
            let (mut len, mut shift, mut i) = (0usize, 0, 1);
            loop {
                let byte = *b.get(i)?;
                len |= usize::from(byte & 0x7f) << shift;
                (shift, i) = (shift + 7, i + 1);
                if byte & 0x80 == 0 {
                    break;
                }
            }
            let body = b.get(i..i + len)?.to_vec();
            let kind = b[0];
            self.from_client.drain(..i + len);
            Some((kind, body))
        }

        fn serve(&mut self) {
            while let Some((kind, body)) = self.packet() {
                match kind >> 4 {
                    1 => self.to_client.extend([0x20, 0x03, 0x00, 0x00, 0x00]),
                    3 => {
                        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                        let topic = &body[2..2 + topic_len];
                        let pid = [body[2 + topic_len], body[3 + topic_len]];
                        let props_at = 4 + topic_len;
                        let payload = body[props_at + 1 + usize::from(body[props_at])..].to_vec();
                        if topic.ends_with(b"/up") {
                            self.uplinks.push(payload);
                            if self.die_before_uplink_puback {
                                self.dead = true;
                                return;
                            }
                        }
                        self.to_client.extend([0x40, 0x02, pid[0], pid[1]]);
                    }
                    _ => {}
                }
            }
        }
    }

    impl embedded_io_async::ErrorType for Broker {
        type Error = embedded_io_async::ErrorKind;
    }

    impl embedded_io_async::Read for Broker {
        async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            // Every exchange is request/answer: nothing to read means the link is gone.
            if self.dead || self.to_client.is_empty() {
                return Err(embedded_io_async::ErrorKind::ConnectionReset);
            }
            let n = buf.len().min(self.to_client.len());
            for b in &mut buf[..n] {
                *b = self.to_client.pop_front().unwrap_or(0);
            }
            Ok(n)
        }
    }

    impl embedded_io_async::Write for Broker {
        async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            self.from_client.extend_from_slice(buf);
            self.serve();
            Ok(buf.len())
        }

        async fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    fn node() -> Node<RamFlash<1024, 512>, 8> {
        let p = Provisioning {
            tenant: "lyon".try_into().unwrap(),
            device: "aq-1".try_into().unwrap(),
            kind: Kind::AirQuality,
            key: DeviceKey::new([7; 16], 1),
            sample_interval_s: 300,
            heartbeat_s: 3600,
            bin_depth_mm: 0,
            broker_host: "broker".try_into().unwrap(),
            broker_port: 1883,
        };
        let counter = FrameCounter::resume(RamFlash::default(), 0, 4).unwrap();
        Node::new(p, counter).unwrap()
    }

    fn aq(time: u32) -> Reading {
        let values = AirQuality {
            pm25: Field::Value(123),
            ..AirQuality::default()
        };
        Reading {
            time,
            values: Values::AirQuality(values),
        }
    }

    /// Connects over `broker` and flushes the node.
    fn flush(
        node: &mut Node<RamFlash<1024, 512>, 8>,
        broker: &mut Broker,
    ) -> Result<usize, NodeError> {
        let mut buf = [0u8; 512];
        let mut scratch = Scratch::new(&mut buf);
        let mut client: Mqtt<'_, &mut Broker> = Client::new(&mut scratch);
        block_on(node.uplink().connect(&mut client, broker))?;
        block_on(node.flush(&mut client))
    }

    #[test]
    fn a_frame_whose_puback_was_lost_goes_again_byte_for_byte() {
        let mut node = node();
        node.record(aq(1_795_305_600));
        node.record(aq(1_795_305_900));

        // The broker took the frame, then the link died before its PUBACK.
        let mut lost = Broker {
            die_before_uplink_puback: true,
            ..Broker::default()
        };
        assert!(matches!(
            flush(&mut node, &mut lost),
            Err(NodeError::Uplink(_))
        ));
        assert_eq!(
            node.unacknowledged(),
            2,
            "nothing forgotten without a PUBACK"
        );
        assert_eq!(lost.uplinks.len(), 1);

        // After the reconnect: the same bytes, so the same counter, and only then forgotten.
        node.record(aq(1_795_306_200));
        let mut ok = Broker::default();
        assert_eq!(flush(&mut node, &mut ok), Ok(3));
        assert_eq!(ok.uplinks[0], lost.uplinks[0]);
        assert_eq!(
            ok.uplinks.len(),
            2,
            "the newer reading in a frame of its own"
        );
        let counters: Vec<u32> = ok
            .uplinks
            .iter()
            .map(|f| protocol::peek(f).unwrap().counter)
            .collect();
        assert_eq!(counters, [0, 1]);
        assert_eq!(node.unacknowledged(), 0);
    }

    #[test]
    fn version_packs_semver() {
        assert_eq!(version("1.2.3"), 0x010203);
        assert_eq!(version("0.1.0"), 0x000100);
        assert_eq!(version("2.10.4-rc.1"), 0x020a04);
    }
}
