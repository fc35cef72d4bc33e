//! LEB128 varints (canonical form only) and zigzag for signed values, over a byte cursor.
//!
//! Decoding rejects overlong encodings (a trailing `0x00` group) and values that overflow
//! `u32`, so every value has exactly one encoding: the golden vectors in SPEC.md depend on it.

use crate::error::{DecodeError, EncodeError};

/// The longest varint of a `u32`.
pub const MAX_VARINT_LEN: usize = 5;

/// Maps a signed value to an unsigned one so small magnitudes stay short (0, -1, 1, -2 → 0, 1, 2, 3).
pub const fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

/// Inverse of [`zigzag`].
pub const fn unzigzag(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

/// Number of bytes [`Writer::varint`] uses for `v`.
pub const fn varint_len(v: u32) -> usize {
    match v {
        0..0x80 => 1,
        0x80..0x4000 => 2,
        0x4000..0x20_0000 => 3,
        0x20_0000..0x1000_0000 => 4,
        _ => 5,
    }
}

/// Appends bytes to a caller-provided buffer; never writes past its end.
#[derive(Debug)]
pub struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    /// Starts writing at `pos` in `buf`.
    pub fn at(buf: &'b mut [u8], pos: usize) -> Self {
        Self { buf, pos }
    }

    /// Bytes written so far, counted from the start of the buffer.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self
            .pos
            .checked_add(bytes.len())
            .ok_or(EncodeError::BufferFull)?;
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(EncodeError::BufferFull)?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    /// Appends a canonical LEB128 varint.
    pub fn varint(&mut self, mut v: u32) -> Result<(), EncodeError> {
        let mut tmp = [0u8; MAX_VARINT_LEN];
        let mut n = 0;
        loop {
            let low = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                tmp[n] = low;
                n += 1;
                break;
            }
            tmp[n] = low | 0x80;
            n += 1;
        }
        self.bytes(&tmp[..n])
    }
}

/// Reads from a byte slice; every read is bounds-checked and reports [`DecodeError::Truncated`].
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `bytes` from the start.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// True when every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads a canonical LEB128 varint of at most 32 bits.
    pub fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for i in 0..MAX_VARINT_LEN {
            let [byte] = self.array::<1>()?;
            let group = u32::from(byte & 0x7f);
            // The fifth group may only carry the top 4 bits of a u32.
            if i == MAX_VARINT_LEN - 1 && group > 0x0f {
                return Err(DecodeError::BadVarint);
            }
            value |= group << (7 * i);
            if byte & 0x80 == 0 {
                // A last group of zero (other than a lone 0x00) is an overlong encoding.
                if i > 0 && group == 0 {
                    return Err(DecodeError::BadVarint);
                }
                return Ok(value);
            }
        }
        Err(DecodeError::BadVarint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(v: u32) -> ([u8; 8], usize) {
        let mut buf = [0u8; 8];
        let mut w = Writer::at(&mut buf, 0);
        w.varint(v).unwrap();
        let n = w.pos();
        (buf, n)
    }

    #[test]
    fn known_encodings() {
        let cases: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (10132, &[0x94, 0x4f]),
            (u32::MAX, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for &(v, bytes) in cases {
            let (buf, n) = encode(v);
            assert_eq!(&buf[..n], bytes, "encoding of {v}");
            assert_eq!(varint_len(v), n);
            let mut r = Reader::new(bytes);
            assert_eq!(r.varint().unwrap(), v);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn rejects_overlong_and_overflow() {
        for bad in [
            &[0x80, 0x00][..],
            &[0xff, 0x00],
            &[0xff, 0xff, 0xff, 0xff, 0x10],
            &[0xff, 0xff, 0xff, 0xff, 0x8f, 0x01],
        ] {
            assert_eq!(
                Reader::new(bad).varint(),
                Err(DecodeError::BadVarint),
                "{bad:02x?}"
            );
        }
        assert_eq!(Reader::new(&[0x80]).varint(), Err(DecodeError::Truncated));
        assert_eq!(Reader::new(&[]).varint(), Err(DecodeError::Truncated));
    }

    #[test]
    fn zigzag_round_trip() {
        for v in [0, -1, 1, -2, 2, 214, -400, 1250, i32::MIN, i32::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(214), 428);
    }

    #[test]
    fn writer_never_overflows() {
        let mut buf = [0u8; 2];
        let mut w = Writer::at(&mut buf, 0);
        assert_eq!(w.varint(1 << 20), Err(EncodeError::BufferFull));
        assert_eq!(w.pos(), 0);
    }
}
