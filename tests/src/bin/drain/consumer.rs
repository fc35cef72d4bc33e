//! The drain benchmark's reference: the least a consumer can do with the backlog. A
//! process of its own (so its CPU is its own) speaking MQTT 5 over one TCP connection with
//! the gateway's account settings (persistent session, shared subscription, QoS 1, the
//! gateway's Receive Maximum): it reads what the broker sends, parses each PUBLISH only
//! as far as its packet identifier, and acknowledges everything one read brought in one
//! write (the gateway acknowledges per committed batch, later than this). The drain ends
//! when the broker answers a PINGREQ sent after the last PUBACK: the broker handles a
//! connection's packets in order, so it has then processed every acknowledgement.

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// What the consumer is asked to do.
pub struct Consume<'a> {
    /// `host:port` of the broker.
    pub broker: &'a str,
    /// Account and client id.
    pub user: &'a str,
    /// Its password.
    pub password: &'a str,
    /// Messages to drain; 0: only create the session and its subscription.
    pub want: u64,
    /// The gateway's `mqtt.receive_maximum`.
    pub receive_maximum: u16,
}

/// The shared subscription the gateway uses (here for the bench's group).
const FILTER: &str = "$share/bench/vigie/v1/+/+/up";

/// Connects (a new session when `want` is 0), subscribes, drains `want` messages.
pub fn run(c: &Consume<'_>) -> io::Result<()> {
    let mut s = TcpStream::connect(c.broker)?;
    s.set_nodelay(true)?;
    s.write_all(&connect(c))?;
    let mut stream = Packets::new(s);
    let (kind, body) = stream.next()?;
    if kind != 0x20 || body.get(1) != Some(&0) {
        return Err(io::Error::other(format!("CONNACK refused: {body:?}")));
    }
    if c.want == 0 {
        stream.sock.write_all(&subscribe())?;
        let (kind, body) = stream.next()?;
        if kind != 0x90 || body.last().is_some_and(|&code| code > 1) {
            return Err(io::Error::other("SUBACK refused"));
        }
        return stream.sock.write_all(&[0xE0, 0x00]);
    }
    drain(&mut stream, c.want)?;
    stream.sock.write_all(&[0xE0, 0x00])
}

/// Reads PUBLISH packets until `want` are in, acknowledging each read's worth at once;
/// then PINGREQ, and waits for its answer.
fn drain(stream: &mut Packets, want: u64) -> io::Result<()> {
    let mut got = 0u64;
    let mut acks = Vec::with_capacity(64 * 1024);
    while got < want {
        stream.fill()?;
        while let Some((kind, range)) = stream.take() {
            let body = &stream.buf[range];
            if kind & 0xF0 == 0x30 {
                got += 1;
                if (kind >> 1) & 3 == 1 {
                    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                    let id = &body[2 + topic_len..4 + topic_len];
                    acks.extend_from_slice(&[0x40, 0x02, id[0], id[1]]);
                }
            }
        }
        stream.sock.write_all(&acks)?;
        acks.clear();
    }
    stream.sock.write_all(&[0xC0, 0x00])?;
    loop {
        let (kind, _) = stream.next()?;
        if kind == 0xD0 {
            return Ok(());
        }
    }
}

/// CONNECT: MQTT 5, user name and password, keep-alive 60 s, a session kept a day, the
/// Receive Maximum; a clean start only to create the session.
fn connect(c: &Consume<'_>) -> Vec<u8> {
    let mut v = vec![0, 4, b'M', b'Q', b'T', b'T', 5];
    v.push(0x80 | 0x40 | if c.want == 0 { 0x02 } else { 0 });
    v.extend_from_slice(&60u16.to_be_bytes());
    let mut props = vec![0x11];
    props.extend_from_slice(&86_400u32.to_be_bytes());
    props.push(0x21);
    props.extend_from_slice(&c.receive_maximum.to_be_bytes());
    varint(&mut v, props.len());
    v.extend_from_slice(&props);
    for s in [c.user, c.user, c.password] {
        string(&mut v, s);
    }
    packet(0x10, &v)
}

/// SUBSCRIBE to [`FILTER`] at QoS 1.
fn subscribe() -> Vec<u8> {
    let mut v = vec![0, 1, 0];
    string(&mut v, FILTER);
    v.push(0x01);
    packet(0x82, &v)
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    varint(&mut p, body.len());
    p.extend_from_slice(body);
    p
}

fn string(v: &mut Vec<u8>, s: &str) {
    v.extend_from_slice(&(s.len() as u16).to_be_bytes());
    v.extend_from_slice(s.as_bytes());
}

fn varint(v: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        v.push(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            return;
        }
    }
}

/// The packets of a byte stream: a read buffer and where the next packet starts.
struct Packets {
    sock: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

impl Packets {
    fn new(sock: TcpStream) -> Self {
        Self {
            sock,
            buf: Vec::with_capacity(1 << 20),
            start: 0,
        }
    }

    /// One read more into the buffer (what was taken dropped first).
    fn fill(&mut self) -> io::Result<()> {
        self.buf.drain(..self.start);
        self.start = 0;
        let len = self.buf.len();
        self.buf.resize(len + (256 << 10), 0);
        let n = self.sock.read(&mut self.buf[len..])?;
        self.buf.truncate(len + n);
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// The next whole packet in the buffer: its first byte and where its body is.
    fn take(&mut self) -> Option<(u8, std::ops::Range<usize>)> {
        let rest = &self.buf[self.start..];
        let (mut len, mut shift, mut at) = (0usize, 0, 1);
        loop {
            let b = *rest.get(at)?;
            len |= usize::from(b & 0x7F) << shift;
            at += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        rest.get(at..at + len)?;
        let (kind, body) = (rest[0], self.start + at..self.start + at + len);
        self.start += at + len;
        Some((kind, body))
    }

    /// The next packet, reading as needed.
    fn next(&mut self) -> io::Result<(u8, Vec<u8>)> {
        loop {
            if let Some((kind, body)) = self.take() {
                return Ok((kind, self.buf[body].to_vec()));
            }
            self.fill()?;
        }
    }
}
