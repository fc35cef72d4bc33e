//! Frame layout (SPEC.md §3), building with [`FrameWriter`] and verifying with [`open`].
//!
//! ```text
//! clear header (5 B)              | ciphertext                                        | tag (8 B)
//! version<<4|kind, counter u32 BE | time u32 BE, reading, (Δtime varint, reading)*   |
//! ```
//! The header is authenticated as associated data; nothing after it is parsed before the
//! tag verifies.

use heapless::Vec;

use crate::codec::{decode_values, encode_values};
use crate::crypto::{self, DeviceKey};
use crate::error::{DecodeError, EncodeError};
use crate::limits::TAG_LEN;
use crate::reading::{Kind, Reading};
use crate::topic::Identity;
use crate::varint::{Reader, Writer};

pub use crate::limits::{HEADER_LEN, MAX_FRAME_LEN, MAX_READINGS, MIN_FRAME_LEN, VERSION};

/// What the clear header says, before anything is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// Message kind.
    pub kind: Kind,
    /// Frame counter (the nonce); used for replay detection once the tag verifies.
    pub counter: u32,
}

/// The readings of one frame.
pub type Readings = Vec<Reading, MAX_READINGS>;

/// A verified, decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Frame {
    /// Kind and counter.
    pub header: Header,
    /// The readings, in strictly increasing time.
    pub readings: Readings,
}

/// Reads the clear header without authenticating anything: use it to pick the key and to
/// pre-check the counter, never to trust the frame.
pub fn peek(frame: &[u8]) -> Result<Header, DecodeError> {
    if frame.len() > MAX_FRAME_LEN {
        return Err(DecodeError::TooLong);
    }
    if frame.len() < MIN_FRAME_LEN {
        return Err(DecodeError::TooShort);
    }
    let version = frame[0] >> 4;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let kind = Kind::from_code(frame[0] & 0x0f).ok_or(DecodeError::UnknownKind(frame[0] & 0x0f))?;
    let counter = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
    Ok(Header { kind, counter })
}

/// Verifies `frame` for the device `who` with `key`, then decodes it.
pub fn open(frame: &[u8], key: &DeviceKey, who: Identity<'_>) -> Result<Frame, DecodeError> {
    let mut readings = Vec::new();
    let header = open_into(frame, key, who, &mut readings)?;
    Ok(Frame { header, readings })
}

/// [`open`] decoding into `readings` (cleared first), for callers on a hot path: a
/// [`Frame`] returned by value copies all 64 reading slots, used or not.
pub fn open_into(
    frame: &[u8],
    key: &DeviceKey,
    who: Identity<'_>,
    readings: &mut Readings,
) -> Result<Header, DecodeError> {
    readings.clear();
    let header = peek(frame)?;
    let (clear, rest) = frame.split_at(HEADER_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut clear_header = [0u8; HEADER_LEN];
    clear_header.copy_from_slice(clear);
    let mut tag_bytes = [0u8; TAG_LEN];
    tag_bytes.copy_from_slice(tag);

    // Copied, then decrypted in place: a buffer zeroed first was a kilobyte of zeroes per
    // frame (0.6 % of a drain's instructions, docs/PERFORMANCE.md).
    let mut plain: Vec<u8, MAX_FRAME_LEN> = Vec::new();
    plain
        .extend_from_slice(ciphertext)
        .map_err(|_| DecodeError::TooLong)?;
    if !crypto::open_in_place(key, &clear_header, who, &mut plain, &tag_bytes) {
        return Err(DecodeError::Authentication);
    }
    decode_body(&plain, header.kind, readings)?;
    Ok(header)
}

/// Decodes the plaintext body: first time in full, then deltas, until the body ends.
fn decode_body(body: &[u8], kind: Kind, readings: &mut Readings) -> Result<(), DecodeError> {
    let mut r = Reader::new(body);
    let mut time = u32::from_be_bytes(r.array::<4>()?);
    loop {
        let values = decode_values(&mut r, kind)?;
        readings
            .push(Reading { time, values })
            .map_err(|_| DecodeError::TooManyReadings)?;
        if r.is_empty() {
            return Ok(());
        }
        let delta = r.varint()?;
        if delta == 0 {
            return Err(DecodeError::TimeOrder);
        }
        time = time.checked_add(delta).ok_or(DecodeError::TimeOrder)?;
    }
}

/// Builds one frame in a caller-provided buffer, reading by reading, without allocation.
///
/// A push that does not fit leaves the frame as it was, so firmware can fill a frame from
/// its queue until [`EncodeError::BufferFull`] and send it.
#[derive(Debug)]
pub struct FrameWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    kind: Option<Kind>,
    last_time: u32,
    count: usize,
}

impl<'b> FrameWriter<'b> {
    /// Starts an empty frame in `buf` (at most [`MAX_FRAME_LEN`] bytes of it are used).
    pub fn new(buf: &'b mut [u8]) -> Self {
        Self {
            buf,
            len: HEADER_LEN,
            kind: None,
            last_time: 0,
            count: 0,
        }
    }

    /// Readings in the frame so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Size the frame would have if sealed now.
    pub fn sealed_len(&self) -> usize {
        self.len + TAG_LEN
    }

    /// Appends a reading; readings must share one kind and have strictly increasing times.
    pub fn push(&mut self, reading: &Reading) -> Result<(), EncodeError> {
        let kind = reading.values.kind();
        if self.kind.is_some_and(|k| k != kind) {
            return Err(EncodeError::MixedKinds);
        }
        if self.count > 0 && reading.time <= self.last_time {
            return Err(EncodeError::TimeOrder);
        }
        if self.count == MAX_READINGS {
            return Err(EncodeError::TooManyReadings);
        }
        let limit = self.buf.len().min(MAX_FRAME_LEN).saturating_sub(TAG_LEN);
        let Some(room) = self.buf.get_mut(..limit) else {
            return Err(EncodeError::BufferFull);
        };
        let mut w = Writer::at(room, self.len);
        if self.count == 0 {
            w.bytes(&reading.time.to_be_bytes())?;
        } else {
            w.varint(reading.time - self.last_time)?;
        }
        encode_values(&mut w, &reading.values)?;
        // Commit only now: an error above left `len` untouched.
        self.len = w.pos();
        self.kind = Some(kind);
        self.last_time = reading.time;
        self.count += 1;
        Ok(())
    }

    /// Writes the header, encrypts the body and appends the tag. `counter` must never have
    /// been used before with this key (see SPEC.md §6 for how firmware persists it).
    pub fn seal(
        self,
        counter: u32,
        key: &DeviceKey,
        who: Identity<'_>,
    ) -> Result<&'b [u8], EncodeError> {
        let kind = self.kind.ok_or(EncodeError::NoReadings)?;
        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION << 4 | kind.code();
        header[1..].copy_from_slice(&counter.to_be_bytes());
        self.buf[..HEADER_LEN].copy_from_slice(&header);
        let tag = crypto::seal(key, &header, who, &mut self.buf[HEADER_LEN..self.len]);
        let end = self.len + TAG_LEN;
        self.buf[self.len..end].copy_from_slice(&tag);
        Ok(&self.buf[..end])
    }
}

/// Re-seals a device's own frame under a fresh `counter` (SPEC §12.1, a device whose
/// counter went back): verifies it, then encrypts the same plaintext again under the new
/// nonce. The readings and the length stay; header counter and tag change. `counter` must
/// never have been used before with this key.
pub fn reseal(
    frame: &mut [u8],
    counter: u32,
    key: &DeviceKey,
    who: Identity<'_>,
) -> Result<(), DecodeError> {
    rekey(frame, counter, key, key, who)
}

/// [`reseal`] from the key `from` (and its epoch) to `to`: a frame sealed under the key a
/// board had before `devices rotate`, re-sealed under its new one (SPEC §11).
pub fn rekey(
    frame: &mut [u8],
    counter: u32,
    from: &DeviceKey,
    to: &DeviceKey,
    who: Identity<'_>,
) -> Result<(), DecodeError> {
    peek(frame)?;
    let body_len = frame.len() - HEADER_LEN - TAG_LEN;
    let (head, rest) = frame.split_at_mut(HEADER_LEN);
    let (body, tag) = rest.split_at_mut(body_len);
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(head);
    let mut tag_bytes = [0u8; TAG_LEN];
    tag_bytes.copy_from_slice(tag);
    let mut plain = [0u8; MAX_FRAME_LEN];
    let plain = &mut plain[..body_len];
    if !crypto::open(from, &header, who, body, &tag_bytes, plain) {
        return Err(DecodeError::Authentication);
    }
    header[1..].copy_from_slice(&counter.to_be_bytes());
    let tag_bytes = crypto::seal(to, &header, who, plain);
    head.copy_from_slice(&header);
    body.copy_from_slice(plain);
    tag.copy_from_slice(&tag_bytes);
    Ok(())
}

/// Seals `readings` (one kind, increasing time) into `buf` in one call.
pub fn seal<'b>(
    buf: &'b mut [u8],
    readings: &[Reading],
    counter: u32,
    key: &DeviceKey,
    who: Identity<'_>,
) -> Result<&'b [u8], EncodeError> {
    let mut w = FrameWriter::new(buf);
    for r in readings {
        w.push(r)?;
    }
    w.seal(counter, key, who)
}

/// For the fuzz targets and tests only: seal an arbitrary plaintext body, as a buggy or
/// hostile sender holding the key could, to reach the parser behind the tag.
#[cfg(any(test, fuzzing))]
pub mod fuzzing {
    use super::*;

    /// Header + `body` encrypted + tag, or `None` if it would exceed [`MAX_FRAME_LEN`].
    pub fn seal_body(
        kind: Kind,
        counter: u32,
        body: &[u8],
        key: &DeviceKey,
        who: Identity<'_>,
    ) -> Option<Vec<u8, MAX_FRAME_LEN>> {
        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION << 4 | kind.code();
        header[1..].copy_from_slice(&counter.to_be_bytes());
        let mut out: Vec<u8, MAX_FRAME_LEN> = Vec::new();
        out.extend_from_slice(&header).ok()?;
        out.extend_from_slice(body).ok()?;
        let tag = crypto::seal(key, &header, who, &mut out[HEADER_LEN..]);
        out.extend_from_slice(&tag).ok()?;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{AirQuality, Field, Values, WasteBin};

    fn key() -> DeviceKey {
        DeviceKey::new([7; 16], 1)
    }

    fn who() -> Identity<'static> {
        Identity::new("t", "d").unwrap_or_else(|_| unreachable!())
    }

    fn pm(time: u32, pm25: u16) -> Reading {
        let aq = AirQuality {
            pm25: Field::Value(pm25),
            ..AirQuality::default()
        };
        Reading {
            time,
            values: Values::AirQuality(aq),
        }
    }

    fn seal_raw_body(kind: Kind, body: &[u8]) -> Vec<u8, MAX_FRAME_LEN> {
        fuzzing::seal_body(kind, 1, body, &key(), who()).unwrap_or_else(|| unreachable!())
    }

    #[test]
    fn a_resealed_frame_carries_the_same_readings_under_its_new_counter_only() {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let readings = [pm(1_800_000_000, 12), pm(1_800_000_300, 34)];
        let frame = seal(&mut buf, &readings, 5, &key(), who()).unwrap_or_default();
        let mut again = std::vec::Vec::from(frame);
        assert_eq!(reseal(&mut again, 900, &key(), who()), Ok(()));
        assert_eq!(again.len(), frame.len());
        let opened = open(&again, &key(), who()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(opened.header.counter, 900);
        assert_eq!(opened.readings.as_slice(), &readings);
        // The same as sealing the readings under 900 in the first place: a nonce is only
        // ever used for this content.
        let mut direct = [0u8; MAX_FRAME_LEN];
        let sealed = seal(&mut direct, &readings, 900, &key(), who()).unwrap_or_default();
        assert_eq!(again.as_slice(), sealed);
        // Another device's key or an altered frame: refused, the bytes untouched.
        let mut altered = std::vec::Vec::from(frame);
        altered[7] ^= 1;
        let before = altered.clone();
        assert_eq!(
            reseal(&mut altered, 901, &key(), who()),
            Err(DecodeError::Authentication)
        );
        assert_eq!(altered, before);
        // Under a new key: only the new one opens it.
        let new = DeviceKey::new([8; 16], 2);
        let mut moved = std::vec::Vec::from(frame);
        assert_eq!(rekey(&mut moved, 3, &key(), &new, who()), Ok(()));
        assert_eq!(
            open(&moved, &new, who()).map(|f| f.readings),
            Ok(opened.readings)
        );
        assert!(open(&moved, &key(), who()).is_err());
    }

    #[test]
    fn authenticated_but_malformed_bodies_get_typed_errors() {
        let t = 1_000_u32.to_be_bytes();
        let one = [t[0], t[1], t[2], t[3], 0x02, 0x05]; // pm25 = 0.5
        let ok = seal_raw_body(Kind::AirQuality, &one);
        assert_eq!(open(&ok, &key(), who()).map(|f| f.readings.len()), Ok(1));
        let cases: &[(&[u8], DecodeError)] = &[
            (&[0x01], DecodeError::Truncated), // trailing byte: a delta without reading
            (&[0x00, 0x02, 0x05], DecodeError::TimeOrder), // delta 0
            (&[0x01, 0x02], DecodeError::Truncated), // reading cut short
        ];
        for (tail, want) in cases {
            let mut body = std::vec::Vec::from(one);
            body.extend_from_slice(tail);
            let frame = seal_raw_body(Kind::AirQuality, &body);
            assert_eq!(open(&frame, &key(), who()), Err(*want), "{tail:02x?}");
        }
        // Time overflow past u32::MAX.
        let late = [0xff, 0xff, 0xff, 0xff, 0x02, 0x05, 0x01, 0x02, 0x05];
        let frame = seal_raw_body(Kind::AirQuality, &late);
        assert_eq!(open(&frame, &key(), who()), Err(DecodeError::TimeOrder));
        // 65 readings.
        let mut body = std::vec::Vec::from(one);
        for _ in 1..=MAX_READINGS {
            body.extend_from_slice(&[0x01, 0x02, 0x05]);
        }
        let frame = seal_raw_body(Kind::AirQuality, &body);
        assert_eq!(
            open(&frame, &key(), who()),
            Err(DecodeError::TooManyReadings)
        );
    }

    #[test]
    fn writer_rules() {
        let mut buf = [0u8; 64];
        let mut w = FrameWriter::new(&mut buf);
        w.push(&pm(100, 5)).unwrap();
        assert_eq!(w.push(&pm(100, 5)), Err(EncodeError::TimeOrder));
        let bin = Reading {
            time: 200,
            values: Values::WasteBin(WasteBin {
                fill_level: Field::Value(3),
                ..WasteBin::default()
            }),
        };
        assert_eq!(w.push(&bin), Err(EncodeError::MixedKinds));
        assert_eq!(w.count(), 1);
        assert_eq!(
            FrameWriter::new(&mut [0u8; 64]).seal(1, &key(), who()),
            Err(EncodeError::NoReadings)
        );
    }

    #[test]
    fn a_push_that_does_not_fit_changes_nothing() {
        let mut buf = [0u8; 30];
        let mut w = FrameWriter::new(&mut buf);
        let mut time = 10;
        while w.push(&pm(time, 9_999)).is_ok() {
            time += 1;
        }
        let before = w.sealed_len();
        assert!(before <= 30);
        assert_eq!(w.push(&pm(time, 9_999)), Err(EncodeError::BufferFull));
        assert_eq!(w.sealed_len(), before);
        let n = w.count();
        let frame = w.seal(5, &key(), who()).unwrap();
        assert_eq!(frame.len(), before);
        assert_eq!(open(frame, &key(), who()).map(|f| f.readings.len()), Ok(n));
        // A buffer too small for anything reports BufferFull, not a panic.
        assert_eq!(
            FrameWriter::new(&mut [0u8; 3]).push(&pm(1, 1)),
            Err(EncodeError::BufferFull)
        );
    }
}
