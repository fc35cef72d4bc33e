//! An MQTT 5 PUBLISH read in place: where its topic and payload are in the packet, without
//! copying them. rumqttc's reader made each a `Bytes` of a frozen split of the read
//! buffer, read the properties into a struct and moved the packet around by value (with the
//! packet's drop, 3.9 % of a drain's instructions; reading in place took 1.9 % off,
//! docs/PERFORMANCE.md), where the shell only needs the two slices to copy them once,
//! into the messages of the read (`Inbound::together`). Every other packet is still
//! rumqttc's; so is the framing (`check`: the fixed header, the size bound).
//!
//! What rumqttc refuses, this refuses: a QoS of 3, a packet id of 0 with QoS 1 or 2, and
//! fields that end beyond the packet (a truncated PUBLISH, issue 30: the connection ends,
//! the broker redelivers it). The properties are skipped by their length, not read: the
//! shell uses none of them (the gateway allows no topic aliases at CONNECT).

use rumqttc::v5::mqttbytes::Error as CodecError;
use rumqttc::v5::mqttbytes::QoS;
use std::ops::Range;

/// Where a PUBLISH's parts are, as ranges of its packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Its quality of service.
    pub qos: QoS,
    /// Its packet id (0 for QoS 0).
    pub pkid: u16,
    /// Its topic.
    pub topic: Range<usize>,
    /// Its payload.
    pub payload: Range<usize>,
}

impl Publish {
    /// The same ranges, `by` bytes further (the packet's place in a larger buffer).
    pub fn shifted(self, by: usize) -> Self {
        let shift = |r: Range<usize>| r.start + by..r.end + by;
        Self {
            topic: shift(self.topic),
            payload: shift(self.payload),
            ..self
        }
    }
}

/// Reads `packet`, one whole PUBLISH from its first byte (framed by rumqttc's `check`).
pub fn read(packet: &[u8]) -> Result<Publish, CodecError> {
    let mut r = Reader { packet, at: 0 };
    let byte1 = r.byte()?;
    r.varint()?;
    let qos = match (byte1 >> 1) & 0b11 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        n => return Err(CodecError::InvalidQoS(n)),
    };
    let topic_len = usize::from(r.u16()?);
    let topic = r.take(topic_len)?;
    let pkid = match qos {
        QoS::AtMostOnce => 0,
        _ => match r.u16()? {
            0 => return Err(CodecError::PacketIdZero),
            id => id,
        },
    };
    let properties = r.varint()?;
    r.take(properties)?;
    Ok(Publish {
        qos,
        pkid,
        topic,
        payload: r.at..packet.len(),
    })
}

struct Reader<'a> {
    packet: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    /// The next `n` bytes' range; a field ending beyond the packet is malformed.
    fn take(&mut self, n: usize) -> Result<Range<usize>, CodecError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.packet.len());
        let end = end.ok_or(CodecError::MalformedPacket)?;
        let range = self.at..end;
        self.at = end;
        Ok(range)
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let at = self.take(1)?.start;
        Ok(self.packet[at])
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from(self.byte()?) << 8 | u16::from(self.byte()?))
    }

    /// A variable byte integer (at most four bytes).
    fn varint(&mut self) -> Result<usize, CodecError> {
        let mut value = 0;
        for shift in [0, 7, 14, 21] {
            let b = self.byte()?;
            value |= usize::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::MalformedRemainingLength)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use proptest::prelude::*;
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};

    fn encode(p: rumqttc::v5::mqttbytes::v5::Publish) -> Vec<u8> {
        let mut out = BytesMut::new();
        Packet::Publish(p).write(&mut out, None).unwrap();
        out.to_vec()
    }

    fn qos(n: u8) -> QoS {
        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][usize::from(n % 3)]
    }

    proptest! {
        /// What rumqttc writes, this reads as rumqttc reads it: topic, payload, QoS, id,
        /// whatever the properties.
        #[test]
        fn reads_what_rumqttc_reads(
            topic in proptest::collection::vec(any::<u8>(), 0..300),
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            q in 0u8..3,
            pkid in 1u16..,
            props in any::<bool>(),
            retain in any::<bool>(),
        ) {
            let mut p = rumqttc::v5::mqttbytes::v5::Publish::new("", qos(q), payload, None);
            p.topic = Bytes::from(topic);
            p.pkid = if q == 0 { 0 } else { pkid };
            p.retain = retain;
            if props {
                p.properties = Some(PublishProperties {
                    message_expiry_interval: Some(60),
                    user_properties: vec![("k".into(), "v".repeat(200))],
                    content_type: Some("application/octet-stream".into()),
                    ..PublishProperties::default()
                });
            }
            let bytes = encode(p);
            let ours = read(&bytes).unwrap();
            let Ok(Packet::Publish(theirs)) = Packet::read(&mut BytesMut::from(&bytes[..]), None) else {
                panic!("rumqttc does not read it back");
            };
            prop_assert_eq!(&bytes[ours.topic.clone()], &theirs.topic[..]);
            prop_assert_eq!(&bytes[ours.payload.clone()], &theirs.payload[..]);
            prop_assert_eq!(ours.qos, theirs.qos);
            prop_assert_eq!(ours.pkid, theirs.pkid);
        }

        /// A PUBLISH cut anywhere after its fixed header, its fixed header saying the
        /// shorter length, is malformed for both readers, never taken.
        #[test]
        fn a_truncated_publish_is_refused_as_rumqttc_refuses_it(cut in 0usize..60) {
            let mut p = rumqttc::v5::mqttbytes::v5::Publish::new("vigie/v1/lyon/aq-1/up", QoS::AtLeastOnce, vec![7; 20], None);
            p.pkid = 3;
            let whole = encode(p);
            let body = &whole[2..];
            let cut = cut.min(body.len() - 21);
            let mut short = vec![whole[0], cut as u8];
            short.extend_from_slice(&body[..cut]);
            let ours = read(&short);
            let theirs = Packet::read(&mut BytesMut::from(&short[..]), None);
            prop_assert!(ours.is_err(), "{:?}", ours);
            prop_assert!(theirs.is_err(), "{:?}", theirs);
        }
    }

    #[test]
    fn qos_3_and_a_zero_id_are_refused() {
        let mut p = rumqttc::v5::mqttbytes::v5::Publish::new("t", QoS::AtLeastOnce, vec![1], None);
        p.pkid = 1;
        let mut bytes = encode(p);
        bytes[0] |= 0b110;
        assert!(matches!(read(&bytes), Err(CodecError::InvalidQoS(3))));
        bytes[0] &= !0b100;
        let id = 2 + 2 + 1;
        bytes[id..id + 2].copy_from_slice(&[0, 0]);
        assert!(matches!(read(&bytes), Err(CodecError::PacketIdZero)));
    }
}
