//! A provisioned node: its identity, frame counter, flash ring of sealed frames and uplink.
//!
//! A reading is sealed into a frame as soon as it is recorded (taking a fresh counter) and
//! the frame goes into the flash ring ([`FrameRing`]), where it stays until a gateway's
//! acknowledgement (SPEC §12) covers it: across reconnects, resets and power cuts. Only if
//! the counter or the ring cannot be written does a reading wait in RAM ([`Outbox`]), to
//! be sealed at the next chance. Each [`Node::exchange`] sends the frames not yet sent on
//! this connection, byte for byte as sealed, then pings to collect the acknowledgements
//! that arrived; frames no acknowledgement covered after [`RESEND_AFTER`] exchanges are
//! sent again (a broker that lost them, a gateway whose session expired). Nothing here
//! blocks on a clock.

use embedded_io_async::{Read, Write};
use embedded_storage::nor_flash::NorFlash;
use protocol::provision::Provisioning;
use protocol::reading::error_flags;
use protocol::{DeviceStatus, EncodeError, Field, Reading, Values};

use crate::counter::{CounterError, FrameCounter};
use crate::downlink::{Heard, Store};
use crate::outbox::Outbox;
use crate::ring::{self, FrameRing, Pos, RingError};
use crate::station::Sample;
use crate::uplink::{Mqtt, Uplink, UplinkError};

/// Largest frame the node seals: a frame normally carries one reading; after a flash
/// failure the readings that waited in RAM share one, as many as fit.
pub const FRAME_BUF: usize = ring::MAX_FRAME;

/// Exchanges during which the oldest waiting frame, already sent, stays unacknowledged
/// before the waiting frames are sent again on the same connection.
pub const RESEND_AFTER: u8 = 3;

/// Longest wait, in exchanges, before a stuck backlog is sent again (the wait doubles
/// from [`RESEND_AFTER`] each time nothing moves).
pub const RESEND_MAX: u8 = 64;

/// Most frames sent in one exchange: what arrives meanwhile (acknowledgements) must fit
/// the MQTT client's scratch buffer, which is emptied between exchanges.
pub const BURST: u32 = 4;

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
    /// The frame ring's flash failed.
    Ring(RingError),
    /// A queued reading could not be framed (a bug: readings are checked when built).
    Frame(EncodeError),
    /// The link failed; the frames wait in flash for the next connection.
    Uplink(UplinkError),
}

impl From<UplinkError> for NodeError {
    fn from(e: UplinkError) -> Self {
        Self::Uplink(e)
    }
}

impl From<RingError> for NodeError {
    fn from(e: RingError) -> Self {
        Self::Ring(e)
    }
}

/// What one exchange did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// Frames sent (first time or again).
    pub sent: u32,
    /// Of those, frames this boot had sent before (no acknowledgement came for them).
    pub resent: u32,
    /// Readings a gateway acknowledged (holds).
    pub acknowledged: u32,
    /// Readings a gateway refused for good (its quarantine keeps them).
    pub refused: u32,
    /// More frames wait to be sent on this connection: exchange again now.
    pub more: bool,
}

/// The node, keeping up to `Q` readings in RAM while its flash cannot take them.
#[derive(Debug)]
pub struct Node<F, const Q: usize> {
    provisioning: Provisioning,
    uplink: Uplink,
    counter: FrameCounter<F>,
    ring: FrameRing<F>,
    staged: Outbox<Q>,
    /// The last frame sent on this connection (`None`: send from the oldest waiting).
    sent_up_to: Option<Pos>,
    /// The furthest frame ever sent this boot.
    high_water: Option<Pos>,
    /// The oldest waiting frame at the last exchange, and for how many exchanges it has
    /// stayed the oldest after being sent.
    stuck: Option<Pos>,
    quiet: u8,
    resend_after: u8,
    lost: u32,
    /// Readings acknowledged since boot.
    acknowledged: u32,
    /// Readings refused for good since boot.
    refused: u32,
    /// Frames re-sealed since boot because their counter had been used (SPEC §12.1).
    resealed: u32,
    /// Frames sent again since boot.
    resent: u32,
    errors: u16,
}

impl<F: NorFlash, const Q: usize> Node<F, Q> {
    /// A node for `provisioning`, counting frames with `counter` and keeping them in
    /// `ring`. The MQTT keep-alive is twice the sample interval. What waits in the ring
    /// under the blob's previous key is re-sealed under its key; what no key of the blob
    /// opens is forgotten and counted as lost (SPEC §11).
    pub fn new(
        provisioning: Provisioning,
        counter: FrameCounter<F>,
        ring: FrameRing<F>,
    ) -> Result<Self, NodeError> {
        let who = provisioning.identity().map_err(|_| NodeError::Identity)?;
        let keep_alive = provisioning.sample_interval_s.saturating_mul(2);
        let uplink = Uplink::new(who, keep_alive);
        let mut node = Self {
            provisioning,
            uplink,
            counter,
            ring,
            staged: Outbox::new(),
            sent_up_to: None,
            high_water: None,
            stuck: None,
            quiet: 0,
            resend_after: RESEND_AFTER,
            lost: 0,
            acknowledged: 0,
            refused: 0,
            resealed: 0,
            resent: 0,
            errors: 0,
        };
        let mut heard = Heard::default();
        let mut store = Store {
            ring: &mut node.ring,
            counter: &mut node.counter,
            provisioning: &node.provisioning,
        };
        heard.failed = store.adopt_blob(&mut heard).is_err();
        node.count(&heard);
        Ok(node)
    }

    /// The provisioning the node runs with.
    pub fn provisioning(&self) -> &Provisioning {
        &self.provisioning
    }

    /// The uplink's topics and options.
    pub fn uplink(&self) -> &Uplink {
        &self.uplink
    }

    /// Seals a reading into the ring (or keeps it in RAM while the flash fails).
    pub fn record(&mut self, reading: Reading) {
        self.staged.push(reading);
        self.seal_staged();
    }

    /// Takes one sampling cycle's outcome: its faults for the next status report, its
    /// reading (if worth sending) into the ring. Returns whether a reading was recorded.
    pub fn record_sample(&mut self, s: Sample) -> bool {
        self.flag(s.errors);
        s.reading.map(|r| self.record(r)).is_some()
    }

    /// Notes a fault (bits of [`error_flags`]) for the next status report.
    pub fn flag(&mut self, error: u16) {
        self.errors |= error;
    }

    /// Records a status reading: battery, signal, uptime, the faults flagged since the
    /// last report, and the readings lost since boot.
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
            dropped: Field::Value(self.dropped()),
        };
        self.record(Reading {
            time: now,
            values: Values::DeviceStatus(status),
        });
    }

    /// Readings no gateway has acknowledged yet (in the ring or in RAM).
    pub fn unacknowledged(&self) -> usize {
        self.ring.readings() as usize + self.staged.len()
    }

    /// Readings lost since boot: dropped from a full ring or a full RAM queue.
    pub fn dropped(&self) -> u32 {
        self.lost.saturating_add(self.staged.dropped())
    }

    /// Readings a gateway acknowledged since boot (for the simulator's figures).
    pub fn acknowledged(&self) -> u32 {
        self.acknowledged
    }

    /// Frames sent again since boot because no acknowledgement covered them.
    pub fn resent(&self) -> u32 {
        self.resent
    }

    /// Readings a gateway refused for good since boot (for the simulator's figures).
    pub fn refused(&self) -> u32 {
        self.refused
    }

    /// Frames re-sealed under fresh counters since boot, because a gateway had seen their
    /// counters already (the board's counter went back).
    pub fn resealed(&self) -> u32 {
        self.resealed
    }

    /// The next counter the node will use (for logs and tests).
    pub fn next_counter(&self) -> u32 {
        self.counter.peek()
    }

    /// Connects (see [`Uplink::connect`]); every waiting frame is sent again on this
    /// connection.
    pub async fn connect<T: Read + Write>(
        &mut self,
        client: &mut Mqtt<T>,
    ) -> Result<u32, NodeError> {
        self.sent_up_to = None;
        self.quiet = 0;
        let Self {
            uplink,
            ring,
            counter,
            provisioning,
            ..
        } = self;
        let mut heard = Heard::default();
        let mut store = Store {
            ring,
            counter,
            provisioning,
        };
        let mut on_message = |m: &[u8]| store.apply(m, &mut heard);
        let password = provisioning.broker_password.as_str();
        let connected = uplink.connect(client, password, &mut on_message).await;
        self.count(&heard);
        connected?;
        Ok(heard.acknowledged)
    }

    /// Counts what the downlinks of an exchange did.
    fn count(&mut self, heard: &Heard) {
        self.acknowledged = self.acknowledged.saturating_add(heard.acknowledged);
        self.refused = self.refused.saturating_add(heard.refused);
        self.resealed = self.resealed.saturating_add(heard.resealed);
        self.lost = self.lost.saturating_add(heard.lost);
        if heard.failed {
            self.errors |= error_flags::STORAGE;
        }
    }

    /// Sends every frame not yet sent on this connection, each awaited until its PUBACK,
    /// then pings; applies the acknowledgements that arrive. On error the connection must
    /// be dropped; nothing is lost.
    pub async fn exchange<T: Read + Write>(
        &mut self,
        client: &mut Mqtt<T>,
    ) -> Result<Exchange, NodeError> {
        self.seal_staged();
        let mut done = Exchange::default();
        let result = self.send_and_ping(client, &mut done).await;
        if let Err(NodeError::Uplink(_)) = result {
            self.errors |= error_flags::UPLINK;
        }
        result?;
        // The oldest waiting frame, sent and still not covered after RESEND_AFTER
        // exchanges: everything from it goes again (acknowledgements of newer frames do
        // not count: the broker may have lost just the older ones).
        // While it stays stuck (a gateway away for long), the wait doubles up to
        // RESEND_MAX: resending a growing backlog often would only cost radio time.
        let oldest = self.ring.next_unacked(None)?;
        let sent = oldest.is_some_and(|o| self.sent_up_to.is_some_and(|s| o <= s));
        if sent && oldest == self.stuck {
            self.quiet = self.quiet.saturating_add(1);
            if self.quiet >= self.resend_after {
                (self.sent_up_to, self.quiet) = (None, 0);
                self.resend_after = self.resend_after.saturating_mul(2).min(RESEND_MAX);
            }
        } else {
            (self.stuck, self.quiet, self.resend_after) = (oldest, 0, RESEND_AFTER);
        }
        Ok(done)
    }

    /// Sends, then pings; `done` counts what happened even when the link fails halfway
    /// (acknowledgements that arrived before the failure were applied).
    async fn send_and_ping<T: Read + Write>(
        &mut self,
        client: &mut Mqtt<T>,
        done: &mut Exchange,
    ) -> Result<(), NodeError> {
        let mut frame = [0u8; FRAME_BUF];
        let Self {
            uplink,
            ring,
            counter,
            provisioning,
            sent_up_to,
            high_water,
            resent,
            ..
        } = self;
        let mut heard = Heard::default();
        let result = 'exchange: {
            loop {
                let pos = match ring.next_unacked(*sent_up_to) {
                    Ok(Some(pos)) => pos,
                    Ok(None) => break,
                    Err(e) => break 'exchange Err(e.into()),
                };
                if done.sent == BURST {
                    done.more = true;
                    break;
                }
                let n = match ring.read(pos, &mut frame) {
                    Ok(n) => n,
                    Err(e) => break 'exchange Err(e.into()),
                };
                if high_water.is_some_and(|h| pos <= h) {
                    done.resent += 1;
                    *resent = resent.saturating_add(1);
                } else {
                    *high_water = Some(pos);
                }
                let mut store = Store {
                    ring,
                    counter,
                    provisioning,
                };
                let mut on_message = |m: &[u8]| store.apply(m, &mut heard);
                if let Err(e) = uplink.publish(client, &frame[..n], &mut on_message).await {
                    break 'exchange Err(e.into());
                }
                *sent_up_to = Some(pos);
                done.sent += 1;
            }
            let mut store = Store {
                ring,
                counter,
                provisioning,
            };
            let mut on_message = |m: &[u8]| store.apply(m, &mut heard);
            client.ping(&mut on_message).await.map_err(NodeError::from)
        };
        done.acknowledged += heard.acknowledged;
        done.refused += heard.refused;
        // Re-sealed frames wait at the end of the ring: send them now.
        done.more |= heard.resealed > 0;
        self.count(&heard);
        result
    }

    /// Seals what waits in RAM into frames in the ring, until it is empty or the flash
    /// fails (the readings then wait for the next try; a counter taken for a frame that
    /// could not be stored is skipped, never reused).
    fn seal_staged(&mut self) {
        let mut buf = [0u8; FRAME_BUF];
        while let Some((frame, n)) = self.staged.next_frame(&mut buf) {
            let counter = match self.counter.take() {
                Ok(c) => c,
                Err(_) => {
                    self.errors |= error_flags::STORAGE;
                    return;
                }
            };
            let Ok(who) = self.provisioning.identity() else {
                return;
            };
            let Ok(sealed) = frame.seal(counter, &self.provisioning.key, who) else {
                return;
            };
            match self.ring.append(sealed, n as u8) {
                Ok(lost) => {
                    self.lost = self.lost.saturating_add(lost);
                    self.staged.confirm(n);
                }
                Err(_) => {
                    self.errors |= error_flags::STORAGE;
                    return;
                }
            }
        }
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
    use protocol::{AirQuality, DeviceKey, Identity, Kind};
    use std::vec::Vec;

    type Flash = RamFlash<2048, 512>;

    fn key() -> DeviceKey {
        DeviceKey::new([7; 16], 1)
    }

    /// A broker just big enough for one node, with a gateway behind it: CONNACK, SUBACK,
    /// PINGRESP, a PUBACK for each QoS 1 PUBLISH (unless told to lose the connection
    /// first), and, if `gateway` is set, an acknowledgement of each uplink frame.
    #[derive(Default)]
    struct Broker {
        from_client: Vec<u8>,
        to_client: std::collections::VecDeque<u8>,
        uplinks: Vec<Vec<u8>>,
        die_before_uplink_puback: bool,
        gateway: bool,
        /// A frame the broker loses (PUBACK sent, never delivered): no acknowledgement.
        loses: Option<u32>,
        dead: bool,
        /// A gateway with a replay state: counter → the frame it stored (SPEC §13.2, a
        /// window as wide as the counters used here); answers a counter it holds under
        /// other bytes with verdicts asking for a re-seal (§12.1).
        book: Option<std::collections::BTreeMap<u32, Vec<u8>>>,
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
                        let uplink = topic.ends_with(b"/up");
                        if uplink {
                            self.uplinks.push(payload.clone());
                            if self.die_before_uplink_puback {
                                self.dead = true;
                                return;
                            }
                        }
                        self.to_client.extend([0x40, 0x02, pid[0], pid[1]]);
                        let lost =
                            protocol::peek(&payload).is_ok_and(|h| Some(h.counter) == self.loses);
                        if uplink && self.gateway && !lost {
                            self.acknowledge(&payload);
                        }
                        if uplink && !lost && self.book.is_some() {
                            self.judge(payload);
                        }
                    }
                    8 => self
                        .to_client
                        .extend([0x90, 0x04, body[0], body[1], 0x00, 0x00]),
                    12 => self.to_client.extend([0xd0, 0x00]),
                    _ => {}
                }
            }
        }

        /// What a gateway publishes on the device's ack topic (QoS 0 to the device).
        fn acknowledge(&mut self, frame: &[u8]) {
            let counter = protocol::peek(frame).unwrap().counter;
            let who = Identity::new("lyon", "aq-1").unwrap();
            let ack = protocol::Ack::new(counter).seal([counter as u8; 8], &key(), who);
            self.downlink(&ack);
        }

        /// The gateway with a book: stores a fresh counter (or acknowledges the same
        /// bytes again), asks for a re-seal of a used one.
        fn judge(&mut self, frame: Vec<u8>) {
            let counter = protocol::peek(&frame).unwrap().counter;
            let who = Identity::new("lyon", "aq-1").unwrap();
            let book = self.book.get_or_insert_default();
            let id = [counter as u8, book.len() as u8, 0, 0, 0, 0, 0, 1];
            let sealed = match book.get(&counter) {
                Some(held) if *held != frame => {
                    let highest = book.keys().max().copied().unwrap_or(0);
                    let mut v = protocol::Verdicts {
                        base: counter,
                        resume: highest + 1,
                        ..Default::default()
                    };
                    v.reseal(counter);
                    v.seal(id, &key(), who).to_vec()
                }
                _ => {
                    book.insert(counter, frame);
                    protocol::Ack::new(counter).seal(id, &key(), who).to_vec()
                }
            };
            self.downlink(&sealed);
        }

        fn downlink(&mut self, payload: &[u8]) {
            let topic = b"vigie/v1/lyon/aq-1/ack";
            let len = 2 + topic.len() + 1 + payload.len();
            self.to_client
                .extend([0x30, len as u8, 0, topic.len() as u8]);
            self.to_client.extend(topic);
            self.to_client.push_back(0); // no properties
            self.to_client.extend(payload);
        }
    }

    impl embedded_io_async::ErrorType for Broker {
        type Error = embedded_io_async::ErrorKind;
    }

    impl Read for Broker {
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

    impl Write for Broker {
        async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            self.from_client.extend_from_slice(buf);
            self.serve();
            Ok(buf.len())
        }

        async fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    fn provisioning() -> Provisioning {
        Provisioning {
            tenant: "lyon".try_into().unwrap(),
            device: "aq-1".try_into().unwrap(),
            kind: Kind::AirQuality,
            key: key(),
            sample_interval_s: 300,
            heartbeat_s: 3600,
            report_interval_s: 0,
            bin_depth_mm: 0,
            broker_host: "broker".try_into().unwrap(),
            broker_port: 1883,
            broker_password: "pw".try_into().unwrap(),
            transport: protocol::provision::Transport::Plain,
            previous: None,
        }
    }

    /// A node booting on `flash` (counter pages, ring).
    fn boot(flash: (Flash, Flash)) -> Node<Flash, 8> {
        let counter = FrameCounter::resume(flash.0, 0, 4).unwrap();
        let ring = FrameRing::resume(flash.1).unwrap();
        Node::new(provisioning(), counter, ring).unwrap()
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

    /// Connects over `broker` and runs `exchanges` exchanges; the sum of what they did.
    fn session(
        node: &mut Node<Flash, 8>,
        broker: &mut Broker,
        exchanges: usize,
    ) -> Result<Exchange, NodeError> {
        let mut client = Mqtt::new(broker);
        let mut total = Exchange {
            acknowledged: block_on(node.connect(&mut client))?,
            ..Exchange::default()
        };
        for _ in 0..exchanges {
            let e = block_on(node.exchange(&mut client))?;
            total.sent += e.sent;
            total.resent += e.resent;
            total.acknowledged += e.acknowledged;
            total.more = e.more;
        }
        Ok(total)
    }

    fn counters(frames: &[Vec<u8>]) -> Vec<u32> {
        frames
            .iter()
            .map(|f| protocol::peek(f).unwrap().counter)
            .collect()
    }

    #[test]
    fn a_frame_whose_puback_was_lost_goes_again_byte_for_byte() {
        let mut node = boot(Default::default());
        node.record(aq(1_795_305_600));
        node.record(aq(1_795_305_900));

        // The broker took the frame, then the link died before its PUBACK.
        let mut lost = Broker {
            die_before_uplink_puback: true,
            ..Broker::default()
        };
        assert!(matches!(
            session(&mut node, &mut lost, 1),
            Err(NodeError::Uplink(_))
        ));
        assert_eq!(node.unacknowledged(), 2, "nothing forgotten");
        assert_eq!(lost.uplinks.len(), 1);

        // After the reconnect: the same bytes, so the same counter, and only then forgotten.
        node.record(aq(1_795_306_200));
        let mut ok = Broker {
            gateway: true,
            ..Broker::default()
        };
        assert_eq!(
            session(&mut node, &mut ok, 1),
            Ok(Exchange {
                sent: 3,
                resent: 1,
                acknowledged: 3,
                refused: 0,
                more: false
            })
        );
        assert_eq!(ok.uplinks[0], lost.uplinks[0]);
        assert_eq!(counters(&ok.uplinks), [0, 1, 2], "a frame per reading");
        assert_eq!(node.unacknowledged(), 0);
    }

    #[test]
    fn a_broker_puback_clears_nothing_a_reboot_resends_and_an_ack_clears() {
        let mut node = boot(Default::default());
        for i in 0..3 {
            node.record(aq(1_795_305_600 + 300 * i));
        }
        // The broker acknowledges, but no gateway ever hears of the frames (a broker
        // crash before its save, an expired gateway session).
        let mut amnesic = Broker::default();
        let done = session(&mut node, &mut amnesic, 1).unwrap();
        assert_eq!((done.sent, done.acknowledged), (3, 0));
        assert_eq!(node.unacknowledged(), 3);

        // Power cut: only the flash stays. The new boot resends the same bytes, and
        // forgets them once the gateway acknowledges.
        let flash = (node.counter.release(), node.ring.release());
        let mut node = boot(flash);
        assert_eq!(node.unacknowledged(), 3, "the ring survived the reboot");
        let mut good = Broker {
            gateway: true,
            ..Broker::default()
        };
        let done = session(&mut node, &mut good, 2).unwrap();
        assert_eq!((done.sent, done.acknowledged), (3, 3));
        assert_eq!(good.uplinks, amnesic.uplinks, "byte for byte");
        assert_eq!(node.unacknowledged(), 0);
        // New frames do not reuse a counter of the old boot.
        node.record(aq(1_795_400_000));
        let mut later = Broker {
            gateway: true,
            ..Broker::default()
        };
        session(&mut node, &mut later, 1).unwrap();
        assert!(counters(&later.uplinks)[0] > *counters(&good.uplinks).iter().max().unwrap());
    }

    #[test]
    fn frames_no_gateway_acknowledged_are_resent_on_the_same_connection() {
        let mut node = boot(Default::default());
        node.record(aq(1_795_305_600));
        let mut amnesic = Broker::default();
        let exchanges = usize::from(RESEND_AFTER) + 2;
        let done = session(&mut node, &mut amnesic, exchanges).unwrap();
        assert_eq!(
            (done.sent, done.resent),
            (2, 1),
            "sent, then once again after {RESEND_AFTER} quiet exchanges"
        );
        assert_eq!(amnesic.uplinks[0], amnesic.uplinks[1]);
    }

    #[test]
    fn a_frame_lost_while_newer_ones_are_acknowledged_is_resent() {
        let mut node = boot(Default::default());
        let mut broker = Broker {
            gateway: true,
            loses: Some(0),
            ..Broker::default()
        };
        {
            let mut client = Mqtt::new(&mut broker);
            block_on(node.connect(&mut client)).unwrap();
            for i in 0..6 {
                node.record(aq(1_795_305_600 + 300 * i));
                block_on(node.exchange(&mut client)).unwrap();
            }
        }
        let sent = counters(&broker.uplinks);
        assert_eq!(sent.iter().filter(|&&c| c == 0).count(), 2, "{sent:?}");
        assert_eq!(
            node.unacknowledged(),
            1,
            "the resend went to the same lossy broker"
        );
    }

    #[test]
    fn a_board_erased_then_told_its_counter_went_back_reseals_and_is_stored() {
        let mut gateway = Broker {
            book: Some(Default::default()),
            ..Broker::default()
        };
        let mut old = boot(Default::default());
        for i in 0..10 {
            old.record(aq(1_795_305_600 + 60 * i));
        }
        session(&mut old, &mut gateway, 4).unwrap();
        assert_eq!(old.unacknowledged(), 0);
        let before = gateway.uplinks.len();

        // Chip erase, the same blob flashed again: the counter restarts at 0.
        let mut new = boot(Default::default());
        let times: Vec<u32> = (0..3).map(|i| 1_795_400_000 + 60 * i).collect();
        for &t in &times {
            new.record(aq(t));
        }
        gateway.uplinks.clear();
        session(&mut new, &mut gateway, 4).unwrap();
        assert_eq!(new.unacknowledged(), 0);
        assert_eq!((new.resealed(), new.refused()), (3, 0));
        let book = gateway.book.take().unwrap_or_default();
        assert_eq!(book.len(), before + 3, "every reading stored, once");
        // What the new board sent after the first verdict: fresh counters only.
        let sent = counters(&gateway.uplinks);
        assert_eq!(&sent[..1], [0]);
        assert!(
            sent[1..].iter().all(|c| [1, 2].contains(c) || *c >= 10),
            "{sent:?}"
        );
        for (c, t) in (10..).zip(&times) {
            let f = protocol::open(&book[&c], &key(), Identity::new("lyon", "aq-1").unwrap());
            assert_eq!(f.map(|f| f.readings[0].time), Ok(*t), "counter {c}");
        }
        assert!(new.next_counter() > 12);
    }

    #[test]
    fn a_board_flashed_with_its_rotated_blob_reseals_what_waited_under_the_old_key() {
        let old_key = DeviceKey::new([3; 16], 1);
        let old_blob = Provisioning {
            key: old_key.clone(),
            ..provisioning()
        };
        let boot_on = |p: Provisioning, flash: (Flash, Flash)| -> Node<Flash, 8> {
            let counter = FrameCounter::resume(flash.0, 0, 4).unwrap();
            Node::new(p, counter, FrameRing::resume(flash.1).unwrap()).unwrap()
        };
        let mut node = boot_on(old_blob.clone(), Default::default());
        let times: Vec<u32> = (0..3).map(|i| 1_795_305_600 + 60 * i).collect();
        for &t in &times {
            node.record(aq(t));
        }
        // Rotated at the gateway: nothing the old blob sends is acknowledged.
        session(&mut node, &mut Broker::default(), 1).unwrap();
        assert_eq!(node.unacknowledged(), 3);
        let flash = (node.counter.release(), node.ring.release());

        // A blob without the old key (another enrolment): what waits can never be
        // delivered, so it is forgotten and counted, not resent into a quarantine.
        let stranger = boot_on(provisioning(), (flash.0.clone(), flash.1.clone()));
        assert_eq!((stranger.unacknowledged(), stranger.dropped()), (0, 3));
        let forgotten = FrameRing::resume(stranger.ring.release()).unwrap();
        assert_eq!(forgotten.frames(), 0, "for good: also after a reboot");

        // The rotated blob: key() with the old key as the previous one.
        let rotated = Provisioning {
            previous: Some(old_key),
            ..provisioning()
        };
        let mut node = boot_on(rotated, flash);
        assert_eq!((node.unacknowledged(), node.resealed()), (3, 3));
        let mut gateway = Broker {
            book: Some(Default::default()),
            ..Broker::default()
        };
        session(&mut node, &mut gateway, 3).unwrap();
        assert_eq!((node.unacknowledged(), node.dropped()), (0, 0));
        let who = Identity::new("lyon", "aq-1").unwrap();
        let stored: Vec<u32> = gateway
            .book
            .unwrap_or_default()
            .values()
            .map(|f| protocol::open(f, &key(), who).unwrap().readings[0].time)
            .collect();
        assert_eq!(stored, times, "under the new key, with their own times");
    }

    #[test]
    fn version_packs_semver() {
        assert_eq!(version("1.2.3"), 0x010203);
        assert_eq!(version("0.1.0"), 0x000100);
        assert_eq!(version("2.10.4-rc.1"), 0x020a04);
    }
}
