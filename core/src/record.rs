//! Payload of one durable-buffer record: an accepted frame, already turned into line
//! protocol, plus what rebuilding the replay windows after a restart needs.
//!
//! ```text
//! 0xFF | u8 len, tenant | u8 len, device | u32 epoch | u32 counter | u32 readings
//!      | 8-byte frame tag | lines (UTF-8)
//! ```
//!
//! Records written before the tag existed start directly with the tenant's length (ids
//! are at most 32 bytes, so never 0xFF); they still decode, with no tag.

use crate::judge::replay_book::Seconds;
use protocol::Kind;
use std::sync::Arc;

/// One accepted frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Tenant id.
    pub tenant: Arc<str>,
    /// Device id.
    pub device: Arc<str>,
    /// Key epoch the frame verified under.
    pub epoch: u32,
    /// Frame counter.
    pub counter: u32,
    /// Readings (lines) in the frame.
    pub readings: u32,
    /// The frame's authentication tag (absent in records of the first format).
    pub tag: Option<[u8; 8]>,
    /// Line protocol, one line per reading, each ending in `\n`.
    pub lines: String,
}

impl Record {
    /// The frame's kind and the seconds its readings were measured at, read back from its
    /// lines (measurement first, millisecond timestamp last): what the replay book keeps
    /// of a stored frame's time. `None` for lines that do not end in a timestamp.
    pub fn seconds(&self) -> Option<Seconds> {
        let mut out: Option<Seconds> = None;
        for line in self.lines.lines() {
            let measurement = line.split([',', ' ']).next()?;
            let kind = Kind::ALL
                .into_iter()
                .find(|k| k.measurement() == measurement)?;
            let ms: u64 = line.rsplit(' ').next()?.parse().ok()?;
            let s = u32::try_from(ms / 1000).ok()?;
            let here = Seconds {
                kind: kind.code(),
                first: s,
                last: s,
            };
            match &mut out {
                Some(o) if o.kind == here.kind => {
                    o.first = o.first.min(s);
                    o.last = o.last.max(s);
                }
                Some(_) => return None,
                None => out = Some(here),
            }
        }
        out
    }
}

/// A payload that does not parse (the checksum matched, so this is a bug or an old format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("buffer record payload does not parse")]
pub struct RecordError;

impl Record {
    /// Appends the encoded payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(TAGGED);
        for s in [&self.tenant, &self.device] {
            // Ids are validated to at most 32 bytes.
            out.push(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.extend_from_slice(&self.readings.to_be_bytes());
        out.extend_from_slice(&self.tag.unwrap_or_default());
        out.extend_from_slice(self.lines.as_bytes());
    }

    /// Parses a payload into an owned record.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let v = RecordView::decode(bytes)?;
        Ok(Self {
            tenant: v.tenant.into(),
            device: text(v.device)?.into(),
            epoch: v.epoch,
            counter: v.counter,
            readings: v.readings,
            tag: v.tag,
            lines: text(v.lines)?.into(),
        })
    }
}

/// A record read in place: its names and lines borrowed from the payload, so the sink
/// copies a record's lines once, into the database body, and allocates nothing per record.
/// Only the tenant is checked for UTF-8 (the sink routes by it): the sink sends the lines
/// as bytes, and checking them on every read was 2.3 % of a drain's instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Device id, as written.
    pub device: &'a [u8],
    /// Key epoch.
    pub epoch: u32,
    /// Frame counter.
    pub counter: u32,
    /// Readings in the frame.
    pub readings: u32,
    /// The frame's tag, when written.
    pub tag: Option<[u8; 8]>,
    /// Line protocol, as written.
    pub lines: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// Parses a payload.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, RecordError> {
        let tagged = bytes.first() == Some(&TAGGED);
        let mut c = Cursor(if tagged { &bytes[1..] } else { bytes });
        let tenant = text(c.field()?)?;
        let device = c.field()?;
        let (epoch, counter, readings) = (c.u32()?, c.u32()?, c.u32()?);
        let tag = if tagged {
            let t = c.take(8)?;
            Some([t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]])
        } else {
            None
        };
        let lines = c.0;
        Ok(Self {
            tenant,
            device,
            epoch,
            counter,
            readings,
            tag,
            lines,
        })
    }
}

fn text(bytes: &[u8]) -> Result<&str, RecordError> {
    std::str::from_utf8(bytes).map_err(|_| RecordError)
}

/// First byte of a record in the current format.
const TAGGED: u8 = 0xFF;

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let (head, tail) = self.0.split_at_checked(n).ok_or(RecordError)?;
        self.0 = tail;
        Ok(head)
    }

    /// A length-prefixed field.
    fn field(&mut self) -> Result<&'a [u8], RecordError> {
        let len = self.take(1)?[0] as usize;
        self.take(len)
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_short_input() {
        let r = Record {
            tenant: "lyon".into(),
            device: "aq-0001".into(),
            epoch: 2,
            counter: 77,
            readings: 1,
            tag: Some([9; 8]),
            lines: "air_quality,device=aq-0001,tenant=lyon pm25=12.3 1795305600000\n".into(),
        };
        let mut buf = Vec::new();
        r.encode(&mut buf);
        assert_eq!(Record::decode(&buf), Ok(r.clone()));
        // The first format: no marker, no tag.
        let old = [&buf[1..26], &buf[34..]].concat();
        assert_eq!(Record::decode(&old), Ok(Record { tag: None, ..r }));
        for cut in 0..28 {
            assert_eq!(Record::decode(&buf[..cut]), Err(RecordError), "cut {cut}");
        }
    }

    #[test]
    fn seconds_are_read_back_from_the_lines() {
        let mut r = Record {
            tenant: "lyon".into(),
            device: "aq-1".into(),
            epoch: 1,
            counter: 1003,
            readings: 2,
            tag: None,
            lines: "air_quality,site=a\\ b pm25=1 1795305600003\n\
                    air_quality,site=a pm25=2,q=\"x y\" 1795305660003\n"
                .into(),
        };
        let s = r.seconds().unwrap();
        assert_eq!((s.kind, s.first, s.last), (1, 1_795_305_600, 1_795_305_660));
        r.lines = "device_status battery=3.6 1795305600003\nair_quality pm25=1 1\n".into();
        assert_eq!(r.seconds(), None, "two kinds in one frame: none");
        r.lines = "air_quality pm25=1\n".into();
        assert_eq!(r.seconds(), None, "no timestamp");
    }
}
