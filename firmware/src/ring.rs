//! Sealed frames in flash until a gateway acknowledges them (SPEC.md §12): a reset, a
//! power cut or a broker crash loses nothing the device has sealed.
//!
//! The region is `P` erase pages used in turn (wear levelling: each page is erased once
//! per trip round the ring). A page starts with `seq u32 LE ‖ !seq u32 LE`, `seq` growing
//! by one per page opened. Records follow, each written in one program operation:
//!
//! ```text
//! len u16 LE | readings u8 | 0x5A | CRC-32 u32 LE (of the 4 bytes before and the frame)
//! frame, padded with 0xFF to 8 bytes | ack slot, 8 bytes: 0xFF… until acknowledged
//! ```
//!
//! A record that does not check (a write torn by a power cut) ends its page: nothing after
//! it is trusted, and the next record goes to the next page. Acknowledging programs the
//! ack slot to zeros; any programmed bit counts, so a torn acknowledgement is one too (the
//! device had it). When the ring is full, the oldest page is erased: the readings of its
//! unacknowledged frames are counted as lost and reported in the next status frame.
//! Emulated flash that starts zeroed has no valid page header and is erased before use.

use embedded_storage::nor_flash::{NorFlash, NorFlashErrorKind};
use protocol::Ack;

const PAGE_HEADER: u32 = 8;
const RECORD_HEADER: u32 = 8;
const ACK_SLOT: u32 = 8;
const MARK: u8 = 0x5a;
/// Largest frame a record holds.
pub const MAX_FRAME: usize = 256;

/// Why the ring cannot store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// The flash failed to read, erase or write.
    Flash(NorFlashErrorKind),
    /// The flash geometry does not suit 8-byte records, or the frame is too long.
    Unsupported,
}

#[cfg(feature = "defmt")]
impl defmt::Format for RingError {
    fn format(&self, f: defmt::Formatter<'_>) {
        match self {
            Self::Flash(kind) => {
                defmt::write!(f, "ring flash error: {}", defmt::Debug2Format(kind))
            }
            Self::Unsupported => defmt::write!(f, "ring flash geometry unsupported"),
        }
    }
}

impl<E: embedded_storage::nor_flash::NorFlashError> From<E> for RingError {
    fn from(e: E) -> Self {
        Self::Flash(e.kind())
    }
}

/// Where a record is: the page's sequence number and the offset in that page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    seq: u32,
    offset: u32,
}

/// A valid record's header.
#[derive(Debug, Clone, Copy)]
struct Record {
    len: u32,
    readings: u8,
    acked: bool,
}

impl Record {
    fn size(&self) -> u32 {
        RECORD_HEADER + pad(self.len) + ACK_SLOT
    }
}

fn pad(n: u32) -> u32 {
    n.div_ceil(8) * 8
}

/// The frame ring over its own flash region.
#[derive(Debug)]
pub struct FrameRing<F> {
    flash: F,
    pages: u32,
    /// Page being written, its sequence number, and where the next record goes (`None`:
    /// the page is closed, the next record opens a new one).
    page: u32,
    seq: u32,
    offset: Option<u32>,
    frames: u32,
    readings: u32,
}

impl<F: NorFlash> FrameRing<F> {
    const PAGE: u32 = F::ERASE_SIZE as u32;

    /// Scans the region (its whole capacity) and resumes after the last valid record.
    pub fn resume(flash: F) -> Result<Self, RingError> {
        let pages = (flash.capacity() / F::ERASE_SIZE) as u32;
        if !8usize.is_multiple_of(F::WRITE_SIZE)
            || !F::ERASE_SIZE.is_multiple_of(8)
            || pages == 0
            || Self::PAGE < PAGE_HEADER + RECORD_HEADER + pad(MAX_FRAME as u32) + ACK_SLOT
        {
            return Err(RingError::Unsupported);
        }
        let mut ring = Self {
            flash,
            pages,
            page: pages - 1,
            seq: 0,
            offset: None,
            frames: 0,
            readings: 0,
        };
        for p in 0..pages {
            if let Some(seq) = ring.page_seq(p)?
                && seq > ring.seq
            {
                (ring.page, ring.seq, ring.offset) = (p, seq, Some(PAGE_HEADER));
            }
        }
        // Count what waits, and find the end of the page being written.
        let mut pos = ring.first()?;
        while let Some(p) = pos {
            let Some(r) = ring.record(p.seq, p.offset)? else {
                break;
            };
            if !r.acked {
                ring.frames += 1;
                ring.readings += u32::from(r.readings);
            }
            pos = ring.after(p, r)?;
        }
        if ring.offset.is_some() {
            ring.offset = ring.end_of(ring.page)?;
        }
        Ok(ring)
    }

    /// Frames waiting for an acknowledgement.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Readings in those frames.
    pub fn readings(&self) -> u32 {
        self.readings
    }

    /// Stores a sealed frame carrying `readings` readings. Returns the readings of
    /// unacknowledged frames dropped to make room (0 unless the ring was full).
    pub fn append(&mut self, frame: &[u8], readings: u8) -> Result<u32, RingError> {
        if frame.is_empty() || frame.len() > MAX_FRAME {
            return Err(RingError::Unsupported);
        }
        let len = frame.len() as u32;
        let size = RECORD_HEADER + pad(len) + ACK_SLOT;
        let mut lost = 0;
        // Two tries: a write that fails closes its page, the next page gets the record.
        for _ in 0..2 {
            let at = match self.offset {
                Some(o) if o + size <= Self::PAGE => o,
                _ => {
                    lost += self.open_next()?;
                    PAGE_HEADER
                }
            };
            let mut buf = [0xffu8; (RECORD_HEADER as usize) + MAX_FRAME];
            buf[..2].copy_from_slice(&(len as u16).to_le_bytes());
            buf[2] = readings;
            buf[3] = MARK;
            let end = RECORD_HEADER as usize + frame.len();
            buf[8..end].copy_from_slice(frame);
            let crc = crc(&buf[..4], frame);
            buf[4..8].copy_from_slice(&crc.to_le_bytes());
            let written = (RECORD_HEADER + pad(len)) as usize;
            self.offset = None; // closed unless the write succeeds
            if self
                .flash
                .write(self.address(self.page, at), &buf[..written])
                .is_ok()
                && self.record(self.seq, at)?.is_some()
            {
                self.offset = Some(at + size);
                self.frames += 1;
                self.readings += u32::from(readings);
                return Ok(lost);
            }
        }
        Err(RingError::Flash(NorFlashErrorKind::Other))
    }

    /// The first unacknowledged record after `after` (from the oldest when `None`).
    pub fn next_unacked(&mut self, after: Option<Pos>) -> Result<Option<Pos>, RingError> {
        let mut pos = self.first()?;
        while let Some(p) = pos {
            let Some(r) = self.record(p.seq, p.offset)? else {
                return Ok(None);
            };
            if !r.acked && after.is_none_or(|a| p > a) {
                return Ok(Some(p));
            }
            pos = self.after(p, r)?;
        }
        Ok(None)
    }

    /// Readings the frame at `pos` carries.
    pub fn readings_at(&mut self, pos: Pos) -> Result<u8, RingError> {
        let r = self
            .record(pos.seq, pos.offset)?
            .ok_or(RingError::Unsupported)?;
        Ok(r.readings)
    }

    /// Copies the frame at `pos` into `buf`; returns its length.
    pub fn read(&mut self, pos: Pos, buf: &mut [u8; MAX_FRAME]) -> Result<usize, RingError> {
        let page = self.page_of(pos.seq)?.ok_or(RingError::Unsupported)?;
        let r = self
            .record(pos.seq, pos.offset)?
            .ok_or(RingError::Unsupported)?;
        let n = r.len as usize;
        self.flash.read(
            self.address(page, pos.offset + RECORD_HEADER),
            &mut buf[..n],
        )?;
        Ok(n)
    }

    /// Marks every waiting frame `ack` covers; returns the readings acknowledged.
    pub fn acknowledge(&mut self, ack: &Ack) -> Result<u32, RingError> {
        let mut done = 0;
        let mut pos = self.first()?;
        while let Some(p) = pos {
            let Some(r) = self.record(p.seq, p.offset)? else {
                break;
            };
            if !r.acked {
                let page = self.page_of(p.seq)?.ok_or(RingError::Unsupported)?;
                let mut counter = [0u8; 4];
                self.flash.read(
                    self.address(page, p.offset + RECORD_HEADER + 1),
                    &mut counter,
                )?;
                if ack.covers(u32::from_be_bytes(counter)) {
                    let slot = p.offset + RECORD_HEADER + pad(r.len);
                    self.flash.write(self.address(page, slot), &[0; 8])?;
                    self.frames -= 1;
                    self.readings -= u32::from(r.readings);
                    done += u32::from(r.readings);
                }
            }
            pos = self.after(p, r)?;
        }
        Ok(done)
    }

    /// Gives the flash back (tests, re-provisioning).
    pub fn release(self) -> F {
        self.flash
    }

    fn address(&self, page: u32, offset: u32) -> u32 {
        page * Self::PAGE + offset
    }

    fn page_seq(&mut self, page: u32) -> Result<Option<u32>, RingError> {
        let mut h = [0u8; 8];
        self.flash.read(self.address(page, 0), &mut h)?;
        let seq = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let check = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        Ok((check == !seq && seq != 0 && seq != u32::MAX).then_some(seq))
    }

    /// The page holding sequence number `seq`, if it still does.
    fn page_of(&mut self, seq: u32) -> Result<Option<u32>, RingError> {
        if seq == 0 || seq > self.seq || self.seq - seq >= self.pages {
            return Ok(None);
        }
        let page = (self.page + self.pages - (self.seq - seq)) % self.pages;
        Ok((self.page_seq(page)? == Some(seq)).then_some(page))
    }

    /// The oldest record position, on the oldest valid page.
    fn first(&mut self) -> Result<Option<Pos>, RingError> {
        if self.seq == 0 {
            return Ok(None);
        }
        self.page_start_from(self.seq.saturating_sub(self.pages - 1).max(1))
    }

    /// The position after record `r` at `p`: the next record in its page, or the start of
    /// the next valid page.
    fn after(&mut self, p: Pos, r: Record) -> Result<Option<Pos>, RingError> {
        let next = p.offset + r.size();
        if next + RECORD_HEADER <= Self::PAGE && self.record(p.seq, next)?.is_some() {
            return Ok(Some(Pos {
                seq: p.seq,
                offset: next,
            }));
        }
        self.page_start_from(p.seq + 1)
    }

    /// The start of the first valid page numbered `from` or later.
    fn page_start_from(&mut self, from: u32) -> Result<Option<Pos>, RingError> {
        for seq in from..=self.seq {
            if self.page_of(seq)?.is_some() {
                return Ok(Some(Pos {
                    seq,
                    offset: PAGE_HEADER,
                }));
            }
        }
        Ok(None)
    }

    /// The valid record at `offset` of page `seq`, or `None` (free space, torn record, or
    /// the page is gone).
    fn record(&mut self, seq: u32, offset: u32) -> Result<Option<Record>, RingError> {
        let Some(page) = self.page_of(seq)? else {
            return Ok(None);
        };
        if offset + RECORD_HEADER + ACK_SLOT > Self::PAGE {
            return Ok(None);
        }
        let mut h = [0u8; 8];
        self.flash.read(self.address(page, offset), &mut h)?;
        let len = u32::from(u16::from_le_bytes([h[0], h[1]]));
        if h[3] != MARK || len == 0 || len as usize > MAX_FRAME {
            return Ok(None);
        }
        let r = Record {
            len,
            readings: h[2],
            acked: false,
        };
        if offset + r.size() > Self::PAGE {
            return Ok(None);
        }
        let mut frame = [0u8; MAX_FRAME];
        let frame = &mut frame[..len as usize];
        self.flash
            .read(self.address(page, offset + RECORD_HEADER), frame)?;
        if crc(&h[..4], frame).to_le_bytes() != h[4..8] {
            return Ok(None);
        }
        let mut slot = [0u8; 8];
        self.flash.read(
            self.address(page, offset + RECORD_HEADER + pad(len)),
            &mut slot,
        )?;
        Ok(Some(Record {
            acked: slot != [0xff; 8],
            ..r
        }))
    }

    /// Where the next record of `page` goes: after its last valid record, or `None` when a
    /// torn record closed it.
    fn end_of(&mut self, page: u32) -> Result<Option<u32>, RingError> {
        let Some(seq) = self.page_seq(page)? else {
            return Ok(None);
        };
        let mut offset = PAGE_HEADER;
        while offset + RECORD_HEADER <= Self::PAGE {
            if let Some(r) = self.record(seq, offset)? {
                offset += r.size();
                continue;
            }
            let mut h = [0u8; 8];
            self.flash.read(self.address(page, offset), &mut h)?;
            return Ok((h == [0xff; 8]).then_some(offset));
        }
        Ok(None)
    }

    /// Erases the next page (counting its unacknowledged readings as lost) and opens it.
    fn open_next(&mut self) -> Result<u32, RingError> {
        let next = (self.page + 1) % self.pages;
        let mut lost = 0;
        if let Some(seq) = self.page_seq(next)?
            && seq < self.seq + 1
            && self.page_of(seq)? == Some(next)
        {
            let mut pos = Some(Pos {
                seq,
                offset: PAGE_HEADER,
            });
            while let Some(p) = pos.filter(|p| p.seq == seq) {
                let Some(r) = self.record(p.seq, p.offset)? else {
                    break;
                };
                if !r.acked {
                    self.frames -= 1;
                    self.readings -= u32::from(r.readings);
                    lost += u32::from(r.readings);
                }
                pos = self.after(p, r)?;
            }
        }
        let from = self.address(next, 0);
        self.flash.erase(from, from + Self::PAGE)?;
        let seq = self.seq + 1;
        let mut h = [0u8; 8];
        h[..4].copy_from_slice(&seq.to_le_bytes());
        h[4..].copy_from_slice(&(!seq).to_le_bytes());
        self.flash.write(from, &h)?;
        (self.page, self.seq, self.offset) = (next, seq, Some(PAGE_HEADER));
        Ok(lost)
    }
}

/// CRC-32 (IEEE) of `head` then `frame`, bitwise: no table in flash.
fn crc(head: &[u8], frame: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in head.iter().chain(frame) {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                c >> 1 ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use embedded_storage::nor_flash::{ErrorType, NorFlashError, ReadNorFlash};
    use std::vec::Vec;

    /// NOR flash in RAM whose power can go after a number of programmed or erased bytes:
    /// the operation then stops half done.
    #[derive(Debug, Clone)]
    struct CutFlash {
        mem: Vec<u8>,
        budget: Option<usize>,
    }

    #[derive(Debug)]
    struct Off;

    impl NorFlashError for Off {
        fn kind(&self) -> NorFlashErrorKind {
            NorFlashErrorKind::Other
        }
    }

    impl ErrorType for CutFlash {
        type Error = Off;
    }

    impl CutFlash {
        fn new(pages: usize, zeroed: bool) -> Self {
            Self {
                mem: std::vec![if zeroed { 0 } else { 0xff }; pages * 512],
                budget: None,
            }
        }

        fn spend(&mut self) -> Result<(), Off> {
            match self.budget.as_mut() {
                Some(0) => Err(Off),
                Some(n) => {
                    *n -= 1;
                    Ok(())
                }
                None => Ok(()),
            }
        }
    }

    impl ReadNorFlash for CutFlash {
        const READ_SIZE: usize = 1;
        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Off> {
            let o = offset as usize;
            bytes.copy_from_slice(&self.mem[o..o + bytes.len()]);
            Ok(())
        }
        fn capacity(&self) -> usize {
            self.mem.len()
        }
    }

    impl NorFlash for CutFlash {
        const WRITE_SIZE: usize = 4;
        const ERASE_SIZE: usize = 512;
        fn erase(&mut self, from: u32, to: u32) -> Result<(), Off> {
            for i in from..to {
                self.spend()?;
                self.mem[i as usize] = 0xff;
            }
            Ok(())
        }
        fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Off> {
            for (i, b) in bytes.iter().enumerate() {
                self.spend()?;
                self.mem[offset as usize + i] &= *b;
            }
            Ok(())
        }
    }

    /// A stand-in sealed frame: header byte, counter, `len - 5` bytes of filler.
    fn frame(counter: u32) -> Vec<u8> {
        let len = 20 + (counter as usize * 37) % 120;
        let mut f = std::vec![0x11];
        f.extend_from_slice(&counter.to_be_bytes());
        f.extend((5..len).map(|i| (i as u32 ^ counter) as u8));
        f
    }

    /// Every waiting frame, oldest first.
    fn waiting(ring: &mut FrameRing<CutFlash>) -> Vec<Vec<u8>> {
        let (mut out, mut pos) = (Vec::new(), None);
        while let Some(p) = ring.next_unacked(pos).unwrap() {
            let mut buf = [0u8; MAX_FRAME];
            let n = ring.read(p, &mut buf).unwrap();
            out.push(buf[..n].to_vec());
            pos = Some(p);
        }
        out
    }

    #[test]
    fn frames_wait_across_reboots_until_an_acknowledgement_covers_them() {
        for zeroed in [false, true] {
            let mut ring = FrameRing::resume(CutFlash::new(4, zeroed)).unwrap();
            for c in 0..10 {
                assert_eq!(ring.append(&frame(c), 1), Ok(0));
            }
            let mut ack = Ack::new(2);
            ack.set(3);
            ack.set(7);
            assert_eq!(ring.acknowledge(&ack), Ok(3));
            let mut ring = FrameRing::resume(ring.release()).unwrap();
            let want: Vec<_> = [0, 1, 4, 5, 6, 8, 9].iter().map(|&c| frame(c)).collect();
            assert_eq!(waiting(&mut ring), want);
            assert_eq!((ring.frames(), ring.readings()), (7, 7));
            // More frames go after the old ones, in order.
            ring.append(&frame(10), 2).unwrap();
            assert_eq!(waiting(&mut ring).last(), Some(&frame(10)));
            assert_eq!(ring.readings(), 9);
        }
    }

    #[test]
    fn a_full_ring_drops_the_oldest_page_and_counts_its_readings() {
        let mut ring = FrameRing::resume(CutFlash::new(3, false)).unwrap();
        let (mut lost, mut appended) = (0, 0);
        for c in 0..40 {
            lost += ring.append(&frame(c), 3).unwrap();
            appended += 3;
        }
        assert!(lost > 0);
        assert_eq!(
            lost + ring.readings(),
            appended,
            "every reading kept or counted"
        );
        let kept = waiting(&mut ring);
        assert_eq!(kept.last(), Some(&frame(39)), "the newest are kept");
        let first = u32::from_be_bytes([kept[0][1], kept[0][2], kept[0][3], kept[0][4]]);
        let want: Vec<_> = (first..40).map(frame).collect();
        assert_eq!(kept, want, "a contiguous run of the newest frames");
        let again = FrameRing::resume(ring.release()).unwrap();
        assert_eq!(again.readings(), appended - lost);
    }

    #[test]
    fn a_power_cut_at_any_byte_keeps_every_frame_stored_before_it() {
        // One run without a cut gives the number of bytes programmed or erased.
        let script = |ring: &mut FrameRing<CutFlash>, stored: &mut Vec<u32>| {
            for c in 0..24 {
                if ring.append(&frame(c), 1).is_err() {
                    return;
                }
                stored.push(c);
                if c % 5 == 4 {
                    // Acknowledged by a gateway: it may go, whether or not the mark lands.
                    stored.retain(|&s| s != c - 3);
                    if ring.acknowledge(&Ack::new(c - 3)).is_err() {
                        return;
                    }
                }
            }
        };
        let mut full = CutFlash::new(3, true);
        full.budget = Some(usize::MAX);
        let mut ring = FrameRing::resume(full).unwrap();
        script(&mut ring, &mut Vec::new());
        let total = usize::MAX - ring.release().budget.unwrap_or(0);
        let mut checked = 0;
        for cut in 0..total {
            let mut flash = CutFlash::new(3, true);
            flash.budget = Some(cut);
            let mut ring = FrameRing::resume(flash).unwrap();
            let mut stored = Vec::new();
            script(&mut ring, &mut stored);
            let mut flash = ring.release();
            flash.budget = None;
            let mut ring = FrameRing::resume(flash).unwrap();
            let after = waiting(&mut ring);
            // Nothing made up, nothing stored (and not acknowledged, not dropped) lost.
            for f in &after {
                let c = u32::from_be_bytes([f[1], f[2], f[3], f[4]]);
                assert_eq!(f, &frame(c), "cut at {cut}: a damaged frame came back");
            }
            let back: Vec<u32> = after
                .iter()
                .map(|f| u32::from_be_bytes([f[1], f[2], f[3], f[4]]))
                .collect();
            for c in &stored {
                assert!(
                    back.contains(c) || back.first().is_some_and(|b| c < b),
                    "cut at {cut}: frame {c} lost ({back:?})"
                );
            }
            assert_eq!(ring.frames() as usize, after.len());
            // And the ring goes on working.
            ring.append(&frame(99), 1).unwrap();
            checked += 1;
        }
        std::eprintln!("ring: {checked} power-cut points over {total} programmed or erased bytes");
        assert!(checked > 100, "{checked}");
    }
}
