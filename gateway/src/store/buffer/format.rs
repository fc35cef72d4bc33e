//! The segment format, pure: encoding a record and scanning bytes into records, corrupt
//! stretches and a torn tail. No I/O.
//!
//! ```text
//! segment = "VGB1" record*
//! record  = u32 BE payload length (1..=MAX_PAYLOAD) | u32 BE CRC-32 of the payload | payload
//! ```
//!
//! Scanning tells two kinds of damage apart. Bytes that no valid record follows are a
//! **torn tail**: a write cut short by a crash, never acknowledged. Bytes that a valid
//! record follows are **corruption**: the scan resynchronises on the next position where
//! a whole record checks (length in range, CRC match), so one bad record never takes the
//! records after it along.

/// Segment file magic.
pub const MAGIC: &[u8; 4] = b"VGB1";
/// Record header: length and CRC.
pub const HEADER: usize = 8;
/// Largest payload. A record holds one frame's line protocol (a frame is at most 1 KiB
/// and 64 readings), far below this; the bound also keeps resynchronisation cheap.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Appends one record for `payload` to `out`.
pub fn encode(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Bytes a record of `payload_len` takes.
pub const fn record_len(payload_len: usize) -> u64 {
    (HEADER + payload_len) as u64
}

/// The payload of a whole, checksummed record at `at`, if there is one.
pub fn record_at(data: &[u8], at: usize) -> Option<&[u8]> {
    let header = data.get(at..at.checked_add(HEADER)?)?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_PAYLOAD {
        return None;
    }
    let start = at + HEADER;
    let payload = data.get(start..start + len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

/// A stretch of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// A valid record: its start and end (header included).
    Record {
        /// Offset of the header.
        start: usize,
        /// Offset after the payload.
        end: usize,
    },
    /// Damaged bytes followed by a valid record.
    Corrupt {
        /// First damaged byte.
        start: usize,
        /// Where the next valid record starts.
        end: usize,
    },
    /// Damaged or partial bytes with no valid record after them, up to the end.
    TornTail {
        /// First byte of the tail.
        start: usize,
    },
}

/// The pieces of `data` from `from` to its end, in order.
pub fn scan(data: &[u8], from: usize) -> Scan<'_> {
    Scan { data, at: from }
}

/// Iterator behind [`scan`].
#[derive(Debug)]
pub struct Scan<'a> {
    data: &'a [u8],
    at: usize,
}

impl Iterator for Scan<'_> {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        let start = self.at;
        if start >= self.data.len() {
            return None;
        }
        if let Some(p) = record_at(self.data, start) {
            self.at = start + HEADER + p.len();
            return Some(Piece::Record {
                start,
                end: self.at,
            });
        }
        match (start + 1..self.data.len()).find(|&q| record_at(self.data, q).is_some()) {
            Some(end) => {
                self.at = end;
                Some(Piece::Corrupt { start, end })
            }
            None => {
                self.at = self.data.len();
                Some(Piece::TornTail { start })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(payloads: &[&[u8]]) -> (Vec<u8>, Vec<usize>) {
        let mut out = MAGIC.to_vec();
        let mut starts = Vec::new();
        for p in payloads {
            starts.push(out.len());
            encode(&mut out, p);
        }
        (out, starts)
    }

    #[test]
    fn a_corrupt_record_is_skipped_and_the_next_ones_kept() {
        let (mut data, starts) = segment(&[b"one", b"two", b"three"]);
        data[starts[1] + HEADER] ^= 0x20;
        let pieces: Vec<_> = scan(&data, 4).collect();
        assert_eq!(
            pieces,
            vec![
                Piece::Record {
                    start: starts[0],
                    end: starts[1]
                },
                Piece::Corrupt {
                    start: starts[1],
                    end: starts[2]
                },
                Piece::Record {
                    start: starts[2],
                    end: data.len()
                },
            ]
        );
    }

    #[test]
    fn a_partial_last_record_is_a_torn_tail_at_every_cut() {
        let (data, starts) = segment(&[b"one", b"two"]);
        for cut in starts[1] + 1..data.len() {
            let pieces: Vec<_> = scan(&data[..cut], 4).collect();
            assert_eq!(
                pieces,
                vec![
                    Piece::Record {
                        start: starts[0],
                        end: starts[1]
                    },
                    Piece::TornTail { start: starts[1] },
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn zeros_are_never_a_record() {
        let (mut data, _) = segment(&[b"one"]);
        let end = data.len();
        data.extend_from_slice(&[0; 64]);
        assert_eq!(
            scan(&data, 4).collect::<Vec<_>>(),
            vec![
                Piece::Record { start: 4, end },
                Piece::TornTail { start: end }
            ]
        );
    }
}
