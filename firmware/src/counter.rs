//! Frame counter that is never reused, across any number of reboots and power cuts, with
//! few flash writes: skip-ahead reservation (protocol/SPEC.md §6).
//!
//! The flash region is two erase pages. Each reservation appends an 8-byte record
//! `limit (u32 LE) ‖ !limit (u32 LE)` to the current page; when it is full, the other page
//! is erased and used. At boot the largest valid record wins (limits only grow), so a power
//! cut while erasing one page leaves the other's records intact, and a torn record fails
//! its complement check and is ignored. Counters are handed out only below a limit that is
//! already on flash: after a reboot counting resumes at that limit, above every counter
//! ever sent. Cost: one 8-byte write per `step` frames, at most `step - 1` counters skipped
//! per reboot.

use embedded_storage::nor_flash::{NorFlash, NorFlashError, NorFlashErrorKind};

const RECORD: usize = 8;

/// Why the counter cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CounterError {
    /// The flash failed to read, erase or write; nothing is sent with an unpersisted counter.
    Flash(NorFlashErrorKind),
    /// All 2³² counters of this key epoch are used: the device needs a new key (re-keying).
    Exhausted,
    /// The flash's write or erase size does not fit 8-byte records in two pages.
    Unsupported,
    /// A record did not read back as written, on either page.
    Verify,
}

#[cfg(feature = "defmt")]
impl defmt::Format for CounterError {
    fn format(&self, f: defmt::Formatter<'_>) {
        match self {
            Self::Flash(kind) => {
                defmt::write!(f, "counter flash error: {}", defmt::Debug2Format(kind))
            }
            Self::Exhausted => defmt::write!(f, "frame counter exhausted: re-key the device"),
            Self::Unsupported => defmt::write!(f, "counter flash geometry unsupported"),
            Self::Verify => defmt::write!(f, "counter record does not read back: flash worn?"),
        }
    }
}

impl<E: NorFlashError> From<E> for CounterError {
    fn from(e: E) -> Self {
        Self::Flash(e.kind())
    }
}

/// The device's frame counter.
#[derive(Debug)]
pub struct FrameCounter<F> {
    flash: F,
    base: u32,
    step: u32,
    next: u32,
    limit: u32,
    /// Page (0 or 1) holding the latest record, and its number of used slots.
    page: u32,
    used: u32,
}

impl<F: NorFlash> FrameCounter<F> {
    const PAGE: u32 = F::ERASE_SIZE as u32;
    const SLOTS: u32 = (F::ERASE_SIZE / RECORD) as u32;

    /// Reads the persisted limit from the two pages at `base` and resumes from it.
    /// `step` is how many counters one flash write reserves.
    pub fn resume(mut flash: F, base: u32, step: u32) -> Result<Self, CounterError> {
        if !RECORD.is_multiple_of(F::WRITE_SIZE)
            || !F::ERASE_SIZE.is_multiple_of(RECORD)
            || step == 0
        {
            return Err(CounterError::Unsupported);
        }
        let (mut best, mut page, mut used) = (None::<u32>, 0, 0);
        for p in 0..2 {
            // Every slot is read: a write that failed leaves an erased hole, and records
            // after it (the retry) must still count.
            let mut slots = 0;
            for slot in 0..Self::SLOTS {
                let mut rec = [0u8; RECORD];
                flash.read(base + p * Self::PAGE + slot * RECORD as u32, &mut rec)?;
                if rec == [0xff; RECORD] {
                    continue;
                }
                slots = slot + 1;
                let limit = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
                let check = u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]);
                if check == !limit && best.is_none_or(|b| limit > b) {
                    (best, page) = (Some(limit), p);
                }
            }
            if best.is_some() && page == p {
                used = slots;
            }
        }
        let start = best.unwrap_or(0);
        Ok(Self {
            flash,
            base,
            step,
            next: start,
            limit: start,
            page,
            used,
        })
    }

    /// The next unused counter, persisting a new reservation first when needed.
    pub fn take(&mut self) -> Result<u32, CounterError> {
        if self.next == self.limit {
            self.reserve()?;
        }
        let c = self.next;
        self.next += 1;
        Ok(c)
    }

    /// The counter `take` would return, without taking it.
    pub fn peek(&self) -> u32 {
        self.next
    }

    /// Moves the next counter up to `counter` (a gateway said the device's counter went
    /// back, SPEC §12.1), persisting a reservation that covers it first; never down.
    pub fn skip_to(&mut self, counter: u32) -> Result<(), CounterError> {
        if counter <= self.next {
            return Ok(());
        }
        if counter > self.limit {
            // Reserved from the multiple of the step just below it: the limit stays a
            // multiple of the step, as every limit (SPEC §6).
            self.reserve_from(counter - counter % self.step)?;
        }
        self.next = counter;
        Ok(())
    }

    fn reserve(&mut self) -> Result<(), CounterError> {
        self.reserve_from(self.limit)
    }

    /// Persists `from + step` as the limit; only then is it the limit.
    fn reserve_from(&mut self, from: u32) -> Result<(), CounterError> {
        let limit = from.checked_add(self.step).ok_or(CounterError::Exhausted)?;
        let mut rec = [0u8; RECORD];
        rec[..4].copy_from_slice(&limit.to_le_bytes());
        rec[4..].copy_from_slice(&(!limit).to_le_bytes());
        // A slot that does not read back as the record (flash never erased, as emulated
        // flash that starts zeroed; a worn cell) sends the record to the other page.
        for _ in 0..2 {
            if self.used == Self::SLOTS {
                let other = 1 - self.page;
                let from = self.base + other * Self::PAGE;
                self.flash.erase(from, from + Self::PAGE)?;
                (self.page, self.used) = (other, 0);
            }
            let at = self.base + self.page * Self::PAGE + self.used * RECORD as u32;
            self.used += 1; // a failed write still consumed the slot
            self.flash.write(at, &rec)?;
            let mut back = [0u8; RECORD];
            self.flash.read(at, &mut back)?;
            if back == rec {
                self.limit = limit;
                return Ok(());
            }
            self.used = Self::SLOTS;
        }
        Err(CounterError::Verify)
    }

    /// Gives the flash back (for tests and for re-provisioning).
    pub fn release(self) -> F {
        self.flash
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use embedded_storage::nor_flash::{ErrorType, ReadNorFlash};
    use std::collections::BTreeSet;
    use std::vec::Vec;

    /// RAM-backed NOR flash: writes can only clear bits, erase sets a page to 0xFF, and a
    /// power cut can be scheduled after a number of programmed bytes.
    #[derive(Debug, Clone)]
    struct SimFlash {
        mem: Vec<u8>,
        writes: usize,
        cut_after_bytes: Option<usize>,
        /// The next write fails without programming anything.
        fail_next: bool,
        /// The next erase stops half way and fails.
        fail_erase_next: bool,
        /// Erases that failed so.
        erase_failures: usize,
    }

    #[derive(Debug)]
    struct PowerCut;

    impl NorFlashError for PowerCut {
        fn kind(&self) -> NorFlashErrorKind {
            NorFlashErrorKind::Other
        }
    }

    impl ErrorType for SimFlash {
        type Error = PowerCut;
    }

    impl ReadNorFlash for SimFlash {
        const READ_SIZE: usize = 1;
        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), PowerCut> {
            let o = offset as usize;
            bytes.copy_from_slice(&self.mem[o..o + bytes.len()]);
            Ok(())
        }
        fn capacity(&self) -> usize {
            self.mem.len()
        }
    }

    impl NorFlash for SimFlash {
        const WRITE_SIZE: usize = 8;
        const ERASE_SIZE: usize = 64;
        fn erase(&mut self, from: u32, to: u32) -> Result<(), PowerCut> {
            if std::mem::take(&mut self.fail_erase_next) {
                let half = (from + to) as usize / 2;
                self.mem[from as usize..half].fill(0xff);
                self.erase_failures += 1;
                return Err(PowerCut);
            }
            self.mem[from as usize..to as usize].fill(0xff);
            Ok(())
        }
        fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), PowerCut> {
            if std::mem::take(&mut self.fail_next) {
                return Err(PowerCut);
            }
            self.writes += 1;
            for (i, b) in bytes.iter().enumerate() {
                if let Some(n) = self.cut_after_bytes.as_mut() {
                    if *n == 0 {
                        return Err(PowerCut);
                    }
                    *n -= 1;
                }
                self.mem[offset as usize + i] &= *b;
            }
            Ok(())
        }
    }

    fn flash() -> SimFlash {
        SimFlash {
            mem: std::vec![0xff; 256],
            writes: 0,
            cut_after_bytes: None,
            fail_next: false,
            fail_erase_next: false,
            erase_failures: 0,
        }
    }

    /// A small deterministic generator for the reboot pattern.
    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *seed >> 33
    }

    #[test]
    fn a_thousand_reboots_never_reuse_a_counter_and_rarely_write() {
        let mut f = flash();
        let mut used = BTreeSet::new();
        let mut seed = 7;
        let (mut frames, step) = (0u64, 16);
        for _ in 0..1000 {
            let mut c = FrameCounter::resume(f, 64, step).unwrap();
            for _ in 0..lcg(&mut seed) % 40 {
                let n = c.take().unwrap();
                assert!(used.insert(n), "counter {n} reused");
                frames += 1;
            }
            f = c.release();
        }
        // One write per reservation: at most one per `step` frames plus one per boot that sent.
        assert!(
            (f.writes as u64) <= frames / u64::from(step) + 1000,
            "{} writes for {frames} frames",
            f.writes
        );
        assert!(frames > 15_000);
    }

    #[test]
    fn skipping_ahead_persists_first_and_never_goes_back() {
        let mut c = FrameCounter::resume(flash(), 64, 16).unwrap();
        assert_eq!(c.take(), Ok(0));
        c.skip_to(1_000).unwrap();
        assert_eq!(c.take(), Ok(1_000));
        // Never down, and within the reservation no write.
        c.skip_to(5).unwrap();
        let writes = c.flash.writes;
        c.skip_to(1_003).unwrap();
        assert_eq!((c.take(), c.flash.writes), (Ok(1_003), writes));
        // A reboot resumes above the skip, at a multiple of the step.
        let mut again = FrameCounter::resume(c.release(), 64, 16).unwrap();
        assert_eq!(again.take(), Ok(1_008));
        // A failed write skips nothing: the counter stays where it was.
        again.flash.fail_next = true;
        assert!(again.skip_to(5_000).is_err());
        assert_eq!(again.take(), Ok(1_009));
    }

    #[test]
    fn power_cuts_during_writes_never_cause_reuse() {
        let mut f = flash();
        let mut used = BTreeSet::new();
        let mut seed = 11;
        for boot in 0..500 {
            // Every third boot loses power somewhere in one of its flash writes.
            f.cut_after_bytes = (boot % 3 == 0).then(|| (lcg(&mut seed) % 20) as usize);
            let mut c = match FrameCounter::resume(f.clone(), 0, 4) {
                Ok(c) => c,
                Err(e) => panic!("resume failed: {e:?}"),
            };
            for _ in 0..lcg(&mut seed) % 12 {
                match c.take() {
                    Ok(n) => assert!(used.insert(n), "counter {n} reused after a power cut"),
                    // The power went: nothing more is sent this boot.
                    Err(CounterError::Flash(_)) => break,
                    Err(e) => panic!("{e:?}"),
                }
            }
            f = c.release();
            f.cut_after_bytes = None;
        }
        assert!(used.len() > 1000);
    }

    #[test]
    fn a_write_or_erase_error_then_a_retry_never_reuses_a_counter_after_reboot() {
        // The flash refuses some writes outright (nothing programmed: an erased hole) and
        // stops some erases half way; the node retries in the same boot, and reboots now
        // and then.
        let mut f = flash();
        let mut used = BTreeSet::new();
        let mut seed = 5;
        let mut failures = 0;
        for _ in 0..300 {
            let mut c = FrameCounter::resume(f, 0, 4).unwrap();
            for _ in 0..lcg(&mut seed) % 16 {
                c.flash.fail_next = lcg(&mut seed).is_multiple_of(4);
                c.flash.fail_erase_next = lcg(&mut seed).is_multiple_of(3);
                match c.take() {
                    Ok(n) => assert!(used.insert(n), "counter {n} reused after a write error"),
                    Err(CounterError::Flash(_)) => failures += 1,
                    Err(e) => panic!("{e:?}"),
                }
            }
            f = c.release();
            f.fail_next = false;
        }
        assert!(
            failures > 50 && used.len() > 500,
            "{failures} {}",
            used.len()
        );
    }

    #[test]
    fn flash_that_was_never_erased_is_erased_before_use() {
        // Emulated flash (QEMU's RAM) starts zeroed: no record can be programmed there.
        let mut f = SimFlash {
            mem: std::vec![0; 256],
            writes: 0,
            cut_after_bytes: None,
            fail_next: false,
            fail_erase_next: false,
            erase_failures: 0,
        };
        let mut used = BTreeSet::new();
        for _ in 0..20 {
            let mut c = FrameCounter::resume(f, 0, 4).unwrap();
            for _ in 0..3 {
                assert!(used.insert(c.take().unwrap()), "counter reused");
            }
            f = c.release();
        }
    }

    #[test]
    fn exhaustion_and_unsupported_geometry() {
        let mut f = flash();
        // A limit near the end of the counter space.
        let limit = u32::MAX - 2;
        f.mem[..4].copy_from_slice(&limit.to_le_bytes());
        f.mem[4..8].copy_from_slice(&(!limit).to_le_bytes());
        let mut c = FrameCounter::resume(f, 0, 4).unwrap();
        assert_eq!(c.peek(), u32::MAX - 2);
        assert_eq!(c.take(), Err(CounterError::Exhausted));
        assert_eq!(
            FrameCounter::resume(flash(), 0, 0).err(),
            Some(CounterError::Unsupported)
        );
    }
}
