//! The MQTT 5 a node needs, over any `embedded_io_async` byte stream: CONNECT with a
//! will, QoS 1 PUBLISH awaited until its PUBACK, one QoS 0 subscription, PINGREQ, and
//! incoming QoS 0 PUBLISH handed to the caller. Nothing else: no sessions, no topic
//! aliases, no properties sent, every property received skipped.
//!
//! Hand-written because it is small: rust-mqtt, the maintained no_std client used before,
//! took 22 KiB of the reference image's 64 KiB flash budget and its receive path needs a
//! bump allocator that only an `unsafe` reset can reuse; this module takes about 2 KiB
//! (docs/PERFORMANCE.md). Incoming packets are read into a fixed buffer; a packet larger
//! than it is read and dropped, never stored.

use embedded_io_async::{Read, Write};

/// Largest incoming packet body kept (an acknowledgement with its topic is about 70 bytes).
pub const RX_MAX: usize = 192;

/// Why the connection failed. Every variant means: drop this connection and reconnect
/// after a back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum MqttError {
    /// The byte stream failed or closed.
    Network,
    /// The broker refused (CONNACK, PUBACK, SUBACK or DISCONNECT reason code ≥ 0x80).
    Refused(u8),
    /// The broker sent something this client cannot accept.
    Protocol,
}

/// What arrived from the broker.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// CONNACK with its reason code.
    ConnAck(u8),
    /// PUBACK: packet id, reason code.
    PubAck(u16, u8),
    /// SUBACK: packet id, first reason code.
    SubAck(u16, u8),
    /// PINGRESP.
    PingResp,
    /// An application message: its payload.
    Publish(&'a [u8]),
    /// DISCONNECT from the broker, with its reason code.
    Disconnect(u8),
    /// Anything else (or a packet too large to keep): ignored.
    Other,
}

/// A last will: topic and payload, published at QoS 1, retained.
#[derive(Debug, Clone, Copy)]
pub struct Will<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Payload.
    pub payload: &'a [u8],
}

/// One connection to a broker over `io`.
#[derive(Debug)]
pub struct Mqtt<T> {
    io: T,
    next_pid: u16,
    rx: [u8; RX_MAX],
}

impl<T: Read + Write> Mqtt<T> {
    /// A client over an open byte stream (nothing is sent yet).
    pub fn new(io: T) -> Self {
        Self {
            io,
            next_pid: 0,
            rx: [0; RX_MAX],
        }
    }

    /// CONNECT with Clean Start, `will` and the account `client_id` / `password` (the
    /// username is the client id, SPEC §11), then waits for the CONNACK.
    pub async fn connect(
        &mut self,
        client_id: &str,
        password: &str,
        keep_alive_s: u16,
        will: Will<'_>,
    ) -> Result<(), MqttError> {
        let body_len = 10
            + 1
            + str_len(client_id)
            + 1
            + str_len(will.topic)
            + 2
            + will.payload.len()
            + str_len(client_id)
            + str_len(password);
        self.header(0x10, body_len).await?;
        // Protocol name, version 5, flags: username, password, will retain, will QoS 1,
        // will, clean start.
        self.put(&[
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            5,
            0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02,
        ])
        .await?;
        self.put(&keep_alive_s.to_be_bytes()).await?;
        self.put(&[0]).await?; // no properties
        self.string(client_id).await?;
        self.put(&[0]).await?; // no will properties
        self.string(will.topic).await?;
        self.binary(will.payload).await?;
        self.string(client_id).await?;
        self.binary(password.as_bytes()).await?;
        self.flush().await?;
        match self.next().await? {
            Incoming::ConnAck(0) => Ok(()),
            Incoming::ConnAck(code) | Incoming::Disconnect(code) => Err(MqttError::Refused(code)),
            _ => Err(MqttError::Protocol),
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK; messages arriving meanwhile go to
    /// `on_message`.
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        on_message: &mut dyn FnMut(&[u8]),
    ) -> Result<(), MqttError> {
        let pid = self.pid();
        self.header(
            0x32 | u8::from(retain),
            str_len(topic) + 2 + 1 + payload.len(),
        )
        .await?;
        self.string(topic).await?;
        self.put(&pid.to_be_bytes()).await?;
        self.put(&[0]).await?; // no properties
        self.put(payload).await?;
        self.flush().await?;
        self.until(on_message, |i| match i {
            Incoming::PubAck(p, code) if *p == pid => Some(code_result(*code)),
            _ => None,
        })
        .await
    }

    /// Subscribes to `filter` at QoS 0 with Retain Handling 2 (no retained message at
    /// subscribe: an old acknowledgement could clear frames a board sealed after its
    /// counter went back) and waits for the SUBACK (messages meanwhile: `on_message`).
    pub async fn subscribe(
        &mut self,
        filter: &str,
        on_message: &mut dyn FnMut(&[u8]),
    ) -> Result<(), MqttError> {
        let pid = self.pid();
        self.header(0x82, 2 + 1 + str_len(filter) + 1).await?;
        self.put(&pid.to_be_bytes()).await?;
        self.put(&[0]).await?; // no properties
        self.string(filter).await?;
        self.put(&[0x20]).await?; // maximum QoS 0, Retain Handling 2
        self.flush().await?;
        self.until(on_message, |i| match i {
            Incoming::SubAck(p, code) if *p == pid => Some(code_result(*code)),
            _ => None,
        })
        .await
    }

    /// PINGREQ, and waits for the PINGRESP (messages meanwhile: `on_message`).
    pub async fn ping(&mut self, on_message: &mut dyn FnMut(&[u8])) -> Result<(), MqttError> {
        self.put(&[0xc0, 0]).await?;
        self.flush().await?;
        self.until(on_message, |i| {
            matches!(i, Incoming::PingResp).then_some(Ok(()))
        })
        .await
    }

    /// DISCONNECT, normal (the broker discards the will).
    pub async fn disconnect(&mut self) -> Result<(), MqttError> {
        self.put(&[0xe0, 0]).await?;
        self.flush().await
    }

    /// Reads packets until `done` says one ends the wait; application messages go to
    /// `on_message`, a DISCONNECT from the broker ends it with an error.
    async fn until(
        &mut self,
        on_message: &mut dyn FnMut(&[u8]),
        done: impl Fn(&Incoming<'_>) -> Option<Result<(), MqttError>>,
    ) -> Result<(), MqttError> {
        loop {
            let incoming = self.next().await?;
            if let Some(result) = done(&incoming) {
                return result;
            }
            match incoming {
                Incoming::Publish(payload) => on_message(payload),
                Incoming::Disconnect(code) => return Err(MqttError::Refused(code)),
                _ => {}
            }
        }
    }

    /// The next packet from the broker.
    pub async fn next(&mut self) -> Result<Incoming<'_>, MqttError> {
        let mut first = [0u8; 1];
        self.read_exact(&mut first).await?;
        let mut len = 0usize;
        for shift in [0, 7, 14, 21] {
            let mut b = [0u8; 1];
            self.read_exact(&mut b).await?;
            len |= usize::from(b[0] & 0x7f) << shift;
            if b[0] & 0x80 == 0 {
                break;
            }
            if shift == 21 {
                return Err(MqttError::Protocol);
            }
        }
        if len > RX_MAX {
            // Too large to keep: read it away.
            let mut left = len;
            while left > 0 {
                let n = left.min(RX_MAX);
                self.io
                    .read_exact(&mut self.rx[..n])
                    .await
                    .map_err(|_| MqttError::Network)?;
                left -= n;
            }
            return Ok(Incoming::Other);
        }
        self.io
            .read_exact(&mut self.rx[..len])
            .await
            .map_err(|_| MqttError::Network)?;
        if first[0] & 0x36 == 0x32 {
            // A QoS 1 PUBLISH (the broker should send QoS 0): acknowledge it.
            let topic = usize::from(u16::from_be_bytes(pair(&self.rx, 0)?));
            let pid = pair(&self.rx, 2 + topic)?;
            self.put(&[0x40, 2, pid[0], pid[1]]).await?;
            self.flush().await?;
        }
        parse(first[0], &self.rx[..len])
    }

    fn pid(&mut self) -> u16 {
        self.next_pid = self.next_pid.wrapping_add(1).max(1);
        self.next_pid
    }

    async fn header(&mut self, kind: u8, mut len: usize) -> Result<(), MqttError> {
        let mut h = [kind, 0, 0, 0, 0];
        let mut n = 1;
        loop {
            let mut b = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                b |= 0x80;
            }
            h[n] = b;
            n += 1;
            if len == 0 || n == h.len() {
                break;
            }
        }
        self.put(&h[..n]).await
    }

    async fn string(&mut self, s: &str) -> Result<(), MqttError> {
        self.binary(s.as_bytes()).await
    }

    async fn binary(&mut self, b: &[u8]) -> Result<(), MqttError> {
        self.put(&(b.len() as u16).to_be_bytes()).await?;
        self.put(b).await
    }

    async fn put(&mut self, bytes: &[u8]) -> Result<(), MqttError> {
        self.io
            .write_all(bytes)
            .await
            .map_err(|_| MqttError::Network)
    }

    async fn flush(&mut self) -> Result<(), MqttError> {
        self.io.flush().await.map_err(|_| MqttError::Network)
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), MqttError> {
        self.io
            .read_exact(buf)
            .await
            .map_err(|_| MqttError::Network)
    }
}

fn str_len(s: &str) -> usize {
    2 + s.len()
}

fn code_result(code: u8) -> Result<(), MqttError> {
    if code < 0x80 {
        Ok(())
    } else {
        Err(MqttError::Refused(code))
    }
}

fn pair(b: &[u8], at: usize) -> Result<[u8; 2], MqttError> {
    match b.get(at..at + 2) {
        Some(&[x, y]) => Ok([x, y]),
        _ => Err(MqttError::Protocol),
    }
}

/// A variable-byte integer at `at`: (value, bytes used).
fn varint(b: &[u8], at: usize) -> Result<(usize, usize), MqttError> {
    let mut v = 0;
    for i in 0..4 {
        let byte = *b.get(at + i).ok_or(MqttError::Protocol)?;
        v |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(MqttError::Protocol)
}

/// Parses one packet body (after the fixed header `first` and its length).
fn parse(first: u8, body: &[u8]) -> Result<Incoming<'_>, MqttError> {
    let code_at = |i: usize| body.get(i).copied().unwrap_or(0);
    Ok(match first >> 4 {
        2 => Incoming::ConnAck(code_at(1)),
        3 => {
            let topic = usize::from(u16::from_be_bytes(pair(body, 0)?));
            let mut at = 2 + topic + if first & 0x06 != 0 { 2 } else { 0 };
            let (props, n) = varint(body, at)?;
            at += n + props;
            Incoming::Publish(body.get(at..).ok_or(MqttError::Protocol)?)
        }
        4 => Incoming::PubAck(u16::from_be_bytes(pair(body, 0)?), code_at(2)),
        9 => {
            let (props, n) = varint(body, 2)?;
            let code = *body.get(2 + n + props).ok_or(MqttError::Protocol)?;
            Incoming::SubAck(u16::from_be_bytes(pair(body, 0)?), code)
        }
        13 => Incoming::PingResp,
        14 => Incoming::Disconnect(code_at(0)),
        _ => Incoming::Other,
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::app::block_on;
    use std::collections::VecDeque;
    use std::vec::Vec;

    /// A byte stream with canned broker bytes; records what the client wrote.
    #[derive(Default)]
    struct Wire {
        sent: Vec<u8>,
        inbox: VecDeque<u8>,
    }

    impl embedded_io_async::ErrorType for Wire {
        type Error = embedded_io_async::ErrorKind;
    }

    impl Read for Wire {
        async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            let n = buf.len().min(self.inbox.len());
            if n == 0 {
                return Err(embedded_io_async::ErrorKind::ConnectionReset);
            }
            for b in &mut buf[..n] {
                *b = self.inbox.pop_front().unwrap_or(0);
            }
            Ok(n)
        }
    }

    impl Write for Wire {
        async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            self.sent.extend_from_slice(buf);
            Ok(buf.len())
        }

        async fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    fn client(inbox: &[u8]) -> Mqtt<Wire> {
        Mqtt::new(Wire {
            sent: Vec::new(),
            inbox: inbox.iter().copied().collect(),
        })
    }

    #[test]
    fn connect_bytes_as_mqtt_5_says() {
        let mut c = client(&[0x20, 3, 0, 0, 0]);
        let will = Will {
            topic: "t/s",
            payload: b"off",
        };
        assert_eq!(block_on(c.connect("a.b", "pw", 600, will)), Ok(()));
        let want = [
            0x10, 36, 0, 4, b'M', b'Q', b'T', b'T', 5, 0xee, 0x02, 0x58, 0, // header, props
            0, 3, b'a', b'.', b'b', 0, 0, 3, b't', b'/', b's', 0, 3, b'o', b'f', b'f', // will
            0, 3, b'a', b'.', b'b', 0, 2, b'p', b'w', // username, password
        ];
        assert_eq!(c.io.sent, want);
        // A refusal carries its reason code.
        let mut c = client(&[0x20, 3, 0, 0x86, 0]);
        assert_eq!(
            block_on(c.connect("a.b", "pw", 600, will)),
            Err(MqttError::Refused(0x86))
        );
    }

    #[test]
    fn publish_waits_for_its_puback_and_hands_over_messages_meanwhile() {
        // A QoS 0 message with a property, then the PUBACK (short form).
        let inbox = [
            0x30, 9, 0, 1, b'x', 2, 0x01, 0x01, b'h', b'i', b'!', // publish "hi!"
            0x40, 2, 0, 1, // PUBACK pid 1
        ];
        let mut c = client(&inbox);
        let mut got = Vec::new();
        let r = block_on(c.publish("up", b"frame", false, &mut |m| got.push(m.to_vec())));
        assert_eq!(r, Ok(()));
        assert_eq!(got, [b"hi!".to_vec()]);
        assert_eq!(
            c.io.sent,
            [
                0x32, 12, 0, 2, b'u', b'p', 0, 1, 0, b'f', b'r', b'a', b'm', b'e'
            ]
        );
        // A refused publish (PUBACK reason 0x87, not authorised).
        let mut c = client(&[0x40, 4, 0, 1, 0x87, 0]);
        assert_eq!(
            block_on(c.publish("up", b"x", true, &mut |_| {})),
            Err(MqttError::Refused(0x87))
        );
        assert_eq!(c.io.sent[0], 0x33, "retain flag");
    }

    #[test]
    fn subscribe_ping_oversized_and_broken_input() {
        let mut c = client(&[0x90, 4, 0, 1, 0, 0]);
        assert_eq!(block_on(c.subscribe("a/ack", &mut |_| {})), Ok(()));
        assert_eq!(
            c.io.sent,
            [0x82, 11, 0, 1, 0, 0, 5, b'a', b'/', b'a', b'c', b'k', 0x20],
            "QoS 0, Retain Handling 2"
        );
        // An oversized message is read away, then the PINGRESP still arrives.
        let mut inbox = std::vec![0x30, 0xc8, 0x01]; // 200 bytes
        inbox.extend([0u8; 200]);
        inbox.extend([0xd0, 0]);
        let mut c = client(&inbox);
        let mut n = 0;
        assert_eq!(block_on(c.ping(&mut |_| n += 1)), Ok(()));
        assert_eq!(n, 0);
        // The broker hangs up: a network error; a DISCONNECT: refused with its reason.
        assert_eq!(
            block_on(client(&[0xd0]).ping(&mut |_| {})),
            Err(MqttError::Network)
        );
        assert_eq!(
            block_on(client(&[0xe0, 1, 0x8e]).ping(&mut |_| {})),
            Err(MqttError::Refused(0x8e))
        );
        // A truncated PUBLISH body is a protocol error, not a panic.
        assert_eq!(parse(0x30, &[0, 9, b'x']), Err(MqttError::Protocol));
        assert_eq!(parse(0x90, &[0, 1, 0x85]), Err(MqttError::Protocol));
    }
}
