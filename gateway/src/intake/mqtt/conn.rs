//! One MQTT 5 connection to the broker: TCP or TLS, packets encoded and decoded with
//! rumqttc's codec (`mqttbytes`) but for the PUBLISHes it delivers, read in place
//! (`publish.rs`), and everything queued in a turn of the shell's loop written in one
//! system call.
//!
//! Why not rumqttc's event loop: it writes and flushes each request on its own, so every
//! PUBACK cost the gateway a `write` (and the broker a `read`): 300,000 writes for 300,000
//! readings drained, a third of the MQTT thread's time (`perf`, docs/PERFORMANCE.md).
//! Here the shell queues the acknowledgements of a whole commit and sends them at once.

use super::publish::{self, Publish};
use super::{MAX_INCOMING_PACKET, Options};
use bytes::{Buf, BytesMut};
use rumqttc::v5::mqttbytes::Error as CodecError;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Connect, ConnectProperties, ConnectReturnCode, DisconnectReasonCode, Login, Packet,
    check,
};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Room kept free in the read buffer before each read.
const READ_ROOM: usize = 64 * 1024;

/// A byte stream to the broker.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why a connection failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The socket or TLS failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A packet could not be encoded or decoded.
    #[error("MQTT packet: {0}")]
    Codec(CodecError),
    /// The broker refused the CONNECT.
    #[error("connection refused: {0:?}")]
    Refused(ConnectReturnCode),
    /// The broker answered the CONNECT with another packet.
    #[error("the broker answered the connection with something other than CONNACK")]
    NoConnAck,
    /// The broker closed the connection.
    #[error("connection closed by the broker")]
    Closed,
    /// The broker sent DISCONNECT.
    #[error("the broker ended the connection: {0:?}")]
    Disconnected(DisconnectReasonCode),
    /// No PINGRESP within the keep-alive.
    #[error("no answer to a ping within the keep-alive")]
    PingTimeout,
    /// No CONNACK in time.
    #[error("no answer from the broker within {0:?}")]
    Timeout(Duration),
}

/// The next whole packet in `read`: `None` while it is incomplete (more bytes will come).
/// A packet whose fixed header promises more than its fields hold (a truncated PUBLISH) is
/// an error that ends the connection: it is never taken, so it is never left without its
/// PUBACK holding one of the broker's in-flight slots (issue 30); the broker redelivers
/// it on the next connection of the session.
fn next_packet(read: &mut BytesMut) -> Result<Option<Packet>, ConnError> {
    match Packet::read(read, Some(MAX_INCOMING_PACKET)) {
        Ok(p) => Ok(Some(p)),
        Err(CodecError::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(ConnError::Codec(e)),
    }
}

/// A packet read from the buffer.
#[derive(Debug)]
pub enum Incoming {
    /// A PUBLISH, read in place: its ranges are in [`Connection::buffered`].
    Publish(Publish),
    /// Any other packet (boxed: they are few, and a `Packet` is ten times a PUBLISH's
    /// ranges).
    Other(Box<Packet>),
}

/// The next whole packet of `buf` from `at` (`None` while it is incomplete), and its end:
/// a PUBLISH read in place, any other packet by rumqttc from a copy of its few bytes.
/// Errors as [`next_packet`].
fn packet_at(buf: &[u8], at: usize) -> Result<Option<(Incoming, usize)>, ConnError> {
    let rest = &buf[at..];
    let frame = match check(rest.iter(), Some(MAX_INCOMING_PACKET)) {
        Ok(header) => header.frame_length(),
        Err(CodecError::InsufficientBytes(_)) => return Ok(None),
        Err(e) => return Err(ConnError::Codec(e)),
    };
    let packet = &rest[..frame];
    let incoming = match packet[0] >> 4 {
        PUBLISH => Incoming::Publish(publish::read(packet).map_err(ConnError::Codec)?.shifted(at)),
        _ => match next_packet(&mut BytesMut::from(packet))? {
            Some(p) => Incoming::Other(Box::new(p)),
            None => return Err(ConnError::Codec(CodecError::MalformedPacket)),
        },
    };
    Ok(Some((incoming, at + frame)))
}

/// The packet type of a PUBLISH.
const PUBLISH: u8 = 3;

/// An open connection.
pub struct Connection {
    stream: Box<dyn Stream>,
    read: BytesMut,
    write: BytesMut,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("buffered_in", &self.read.len())
            .field("queued_out", &self.write.len())
            .finish()
    }
}

impl Connection {
    /// Connects, sends CONNECT and waits for the broker's CONNACK (refused: an error).
    pub async fn open(o: &Options) -> Result<(Self, ConnAck), ConnError> {
        let tcp = TcpStream::connect((o.host.as_str(), o.port)).await?;
        let stream = Self::secure(o, tcp).await?;
        Self::handshake(stream, o).await
    }

    /// TCP as it is, or TLS over it, as `o` says.
    async fn secure(o: &Options, tcp: TcpStream) -> Result<Box<dyn Stream>, ConnError> {
        // Writes are whole turns of the loop already; Nagle would only delay them.
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match &o.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(o.host.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                Box::new(connector.connect(name, tcp).await?)
            }
        };
        Ok(stream)
    }

    /// A connection over `stream` whose handshake is done (tests: a scripted broker).
    #[cfg(test)]
    pub fn over(stream: Box<dyn Stream>) -> Self {
        Self {
            stream,
            read: BytesMut::with_capacity(READ_ROOM),
            write: BytesMut::new(),
        }
    }

    /// Sends CONNECT over `stream` and waits for the broker's CONNACK (refused: an error).
    pub async fn handshake(
        stream: Box<dyn Stream>,
        o: &Options,
    ) -> Result<(Self, ConnAck), ConnError> {
        let mut conn = Self {
            stream,
            read: BytesMut::with_capacity(READ_ROOM),
            write: BytesMut::new(),
        };
        let mut properties = ConnectProperties::new();
        properties.session_expiry_interval = Some(o.session_expiry_s);
        properties.receive_maximum = Some(o.receive_maximum);
        properties.max_packet_size = Some(MAX_INCOMING_PACKET);
        let connect = Connect {
            keep_alive: u16::try_from(o.keep_alive.as_secs()).unwrap_or(u16::MAX),
            client_id: o.client_id.clone(),
            clean_start: false,
            properties: Some(properties),
        };
        let login = o
            .login
            .as_ref()
            .map(|(user, password)| Login::new(user.clone(), password.expose()));
        conn.queue(&Packet::Connect(connect, None, login))?;
        conn.flush().await?;
        loop {
            match conn.next_packet()? {
                Some(Packet::ConnAck(c)) if c.code == ConnectReturnCode::Success => {
                    return Ok((conn, c));
                }
                Some(Packet::ConnAck(c)) => return Err(ConnError::Refused(c.code)),
                Some(_) => return Err(ConnError::NoConnAck),
                None => conn.read().await?,
            }
        }
    }

    /// Waits for bytes from the broker and buffers them. Cancel-safe: cancelled, it has
    /// read nothing.
    pub async fn read(&mut self) -> Result<(), ConnError> {
        self.read.reserve(READ_ROOM);
        match self.stream.read_buf(&mut self.read).await? {
            0 => Err(ConnError::Closed),
            _ => Ok(()),
        }
    }

    /// The next whole packet buffered, if any.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, ConnError> {
        next_packet(&mut self.read)
    }

    /// The next whole packet buffered from `at` (the end of those already looked at),
    /// if any, and its end; nothing is consumed ([`Self::consume`]).
    pub fn packet_at(&self, at: usize) -> Result<Option<(Incoming, usize)>, ConnError> {
        packet_at(&self.read, at)
    }

    /// What is buffered: where [`Incoming::Publish`] ranges point.
    pub fn buffered(&self) -> &[u8] {
        &self.read
    }

    /// Drops the first `n` bytes buffered (packets handled).
    pub fn consume(&mut self, n: usize) {
        self.read.advance(n);
    }

    /// Queues a packet for the next [`Self::flush`].
    pub fn queue(&mut self, packet: &Packet) -> Result<(), ConnError> {
        packet
            .write(&mut self.write, None)
            .map(drop)
            .map_err(ConnError::Codec)
    }

    /// Queues a PUBACK of success for `pkid`, as rumqttc encodes it (no reason code, no
    /// properties): written here, the packet's value built, encoded and dropped by
    /// rumqttc was 1 % of a drain's instructions.
    pub fn queue_puback(&mut self, pkid: u16) {
        let [hi, lo] = pkid.to_be_bytes();
        self.write.extend_from_slice(&[0x40, 2, hi, lo]);
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.write.is_empty() {
            self.stream.write_all(&self.write).await?;
            self.stream.flush().await?;
            self.write.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Publish;

    fn publish_bytes() -> BytesMut {
        let mut p = Publish::new(
            "vigie/v1/lyon/aq-1/up",
            QoS::AtLeastOnce,
            vec![7u8; 40],
            None,
        );
        p.pkid = 9;
        let mut out = BytesMut::new();
        Packet::Publish(p).write(&mut out, None).unwrap();
        out
    }

    /// The publish of `buf` from `at`, read in place: its pkid, topic and payload.
    fn publish_at(buf: &[u8], at: usize) -> Option<(u16, &[u8], &[u8], usize)> {
        match packet_at(buf, at) {
            Ok(Some((Incoming::Publish(p), end))) => {
                Some((p.pkid, &buf[p.topic], &buf[p.payload], end))
            }
            Ok(None) => None,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_whole_publish_is_read_and_a_partial_one_waits() {
        let whole = publish_bytes();
        let mut buf = whole.to_vec();
        buf.extend_from_slice(&whole[..whole.len() - 5]);
        let (pkid, topic, payload, end) = publish_at(&buf, 0).unwrap();
        assert_eq!(
            (pkid, topic, payload),
            (9, &b"vigie/v1/lyon/aq-1/up"[..], &[7u8; 40][..])
        );
        assert_eq!(end, whole.len());
        assert!(publish_at(&buf, end).is_none(), "incomplete: wait");
        buf.extend_from_slice(&whole[whole.len() - 5..]);
        let (pkid, _, payload, end) = publish_at(&buf, end).unwrap();
        assert_eq!((pkid, payload, end), (9, &[7u8; 40][..], buf.len()));
        // The handshake's reader, rumqttc's, reads the same.
        match next_packet(&mut whole.clone()) {
            Ok(Some(Packet::Publish(p))) => assert_eq!(p.pkid, 9),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_puback_is_what_rumqttc_writes() {
        let (_, client) = tokio::io::duplex(64);
        let mut conn = Connection::over(Box::new(client));
        for pkid in [1, 255, 256, 0xABCD, u16::MAX] {
            conn.queue_puback(pkid);
            let mut theirs = BytesMut::new();
            Packet::PubAck(rumqttc::v5::mqttbytes::v5::PubAck::new(pkid, None))
                .write(&mut theirs, None)
                .unwrap();
            assert_eq!(conn.write, theirs, "{pkid}");
            conn.write.clear();
        }
    }

    #[test]
    fn other_packets_are_read_by_rumqttc_between_publishes() {
        let mut buf = publish_bytes().to_vec();
        let mut ack = BytesMut::new();
        Packet::PubAck(rumqttc::v5::mqttbytes::v5::PubAck::new(4, None))
            .write(&mut ack, None)
            .unwrap();
        buf.extend_from_slice(&ack);
        buf.extend_from_slice(&publish_bytes());
        let (_, _, _, end) = publish_at(&buf, 0).unwrap();
        let Ok(Some((Incoming::Other(packet), after))) = packet_at(&buf, end) else {
            panic!("no packet");
        };
        let Packet::PubAck(a) = *packet else {
            panic!("{packet:?}");
        };
        assert_eq!((a.pkid, after), (4, end + ack.len()));
        assert_eq!(publish_at(&buf, after).unwrap().3, buf.len());
    }

    #[test]
    fn a_truncated_publish_ends_the_connection_instead_of_being_taken() {
        // The fixed header says 3 bytes follow; the topic's length says 21.
        let buf = [0x32, 3, 0, 21, b'v'];
        assert!(matches!(packet_at(&buf, 0), Err(ConnError::Codec(_))));
        // A topic length beyond the packet, the rest present.
        let mut p = publish_bytes();
        p[3] = 0xFF;
        assert!(matches!(packet_at(&p, 0), Err(ConnError::Codec(_))));
        // A packet larger than the bound, before its bytes arrive.
        let big = [0x32, 0xFF, 0xFF, 0x7F];
        assert!(matches!(packet_at(&big, 0), Err(ConnError::Codec(_))));
    }
}
