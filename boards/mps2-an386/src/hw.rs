//! The MPS2 AN386 hardware the node uses, and the only `unsafe` of the image: CMSDK APB
//! UARTs (UART0 to the modem, UART1 the console), SysTick as the clock (a tick every
//! 10 ms, read to the millisecond), and
//! the RAM areas that play the board's flash: the provisioning blob in SSRAM1, the
//! frame-counter pages and the frame ring in PSRAM, which the QEMU test backs with a file
//! so that they survive a power cut (the process killed) as flash would.

use core::cell::Cell;
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::interrupt::Mutex;
use firmware::energy::{Slept, tick_time};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};

/// Where `gateway devices add`'s blob is loaded (`-device loader,file=…,addr=0x003f0000`).
pub const BLOB_ADDR: usize = 0x003f_0000;
/// End of the blob area.
const BLOB_END: usize = 0x003f_8000;
/// PSRAM (16 MiB at 0x21000000, QEMU's machine RAM: `-machine memory-backend=` can put
/// it in a file). Two 4 KiB pages for the frame counter, then the frame ring.
pub const COUNTER_ADDR: usize = 0x2100_0000;
const PAGE: usize = 4096;
/// The frame ring: four 4 KiB pages.
pub const RING_ADDR: usize = COUNTER_ADDR + 2 * PAGE;
const RING_PAGES: usize = 4;

/// The CPU clock of the AN386 image (25 MHz).
const SYSCLK_HZ: u32 = 25_000_000;

/// SysTick's period. Every tick wakes the core, which polls the node's main loop once and
/// sleeps again: at 1 kHz that polling kept QEMU at 6 to 11 % of a host core while the
/// node waited (2026-12-07); nothing in the node needs a finer wake-up (its waits are a
/// second or more, and a modem byte wakes the core by its own interrupt). The clock is
/// still read to the millisecond, from the tick count and SysTick's down-counter.
const TICK_MS: u32 = 10;

/// Ticks since boot.
static TICKS: AtomicU32 = AtomicU32::new(0);

/// Starts SysTick, a tick every [`TICK_MS`].
pub fn start_clock(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(COUNTS_PER_MS * TICK_MS - 1);
    syst.clear_current();
    syst.enable_counter();
    syst.enable_interrupt();
    // The peripheral stays configured when the handle goes.
}

/// Milliseconds since boot.
pub fn millis() -> u32 {
    now().0
}

#[cortex_m_rt::exception]
fn SysTick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

// The AN386 has 32 external interrupts. The node uses one: UART0's receive interrupt
// (IRQ 0), only to wake the core from `wfi` when the modem sends a byte; the node still
// reads the byte by polling. The others go to cortex-m-rt's default handler.
#[allow(unsafe_code)] // declaring the linker-provided handler; it is never called from Rust
unsafe extern "C" {
    fn DefaultHandler();
}

/// UART0's receive interrupt number on the AN386.
const UART0_RX_IRQ: u16 = 0;

/// The interrupt part of the vector table.
#[allow(unsafe_code)] // placing the table where the linker script expects it
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
static __INTERRUPTS: [unsafe extern "C" fn(); 32] = {
    let mut table: [unsafe extern "C" fn(); 32] = [DefaultHandler; 32];
    table[UART0_RX_IRQ as usize] = uart0_rx;
    table
};

/// A byte arrived from the modem: clear the UART's interrupt flag. Waking the core from
/// `wfi` was the whole point; the main loop reads the byte.
extern "C" fn uart0_rx() {
    Uart { base: UART0_BASE }.write_reg(INTCLEAR, INT_RX);
}

/// Lets UART0's receive interrupt reach the core, so `wfi` returns on a modem byte.
pub fn wake_on_modem_bytes() {
    #[derive(Clone, Copy)]
    struct Uart0Rx;
    // SAFETY: the interrupt number of the AN386's UART0 receive line.
    #[allow(unsafe_code)]
    unsafe impl cortex_m::interrupt::InterruptNumber for Uart0Rx {
        fn number(self) -> u16 {
            UART0_RX_IRQ
        }
    }
    // SAFETY: its handler only clears the UART's flag; no critical section depends on
    // this interrupt staying masked.
    #[allow(unsafe_code)]
    unsafe {
        cortex_m::peripheral::NVIC::unmask(Uart0Rx)
    };
}

/// SysTick counts per millisecond.
const COUNTS_PER_MS: u32 = SYSCLK_HZ / 1000;

/// Time the core slept in [`idle`]. Only the main loop writes it.
static SLEPT: Mutex<Cell<Slept>> = Mutex::new(Cell::new(Slept::new()));

/// The clock to the SysTick count: milliseconds and the counts into the current one.
fn now() -> (u32, u32) {
    let ticks = || TICKS.load(Ordering::Relaxed);
    tick_time(ticks, SYST::get_current, COUNTS_PER_MS, TICK_MS)
}

/// Sleeps until the next interrupt (the next tick or a byte from the modem), and
/// counts the time asleep for the energy ledger.
pub fn idle() {
    let before = now();
    cortex_m::asm::wfi();
    let after = now();
    cortex_m::interrupt::free(|cs| {
        let slept = SLEPT.borrow(cs);
        let mut s = slept.get();
        s.add(before, after, COUNTS_PER_MS);
        slept.set(s);
    });
}

/// Milliseconds the core has slept in [`idle`] since boot.
pub fn asleep_ms() -> u64 {
    cortex_m::interrupt::free(|cs| SLEPT.borrow(cs).get().ms())
}

/// A CMSDK APB UART.
#[derive(Debug)]
pub struct Uart {
    base: usize,
}

const UART0_BASE: usize = 0x4000_4000;
const DATA: usize = 0x000;
const STATE: usize = 0x004;
const CTRL: usize = 0x008;
/// Interrupt status on read, clear on write.
const INTCLEAR: usize = 0x00C;
const BAUDDIV: usize = 0x010;
const CTRL_TX_RX: u32 = 0b11;
const CTRL_RX_INTERRUPT: u32 = 1 << 3;
const INT_RX: u32 = 1 << 1;
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;

impl Uart {
    /// UART0, wired to the cellular modem; its receive interrupt raised (see
    /// [`wake_on_modem_bytes`]).
    pub fn uart0() -> Self {
        Self::enable(UART0_BASE, CTRL_TX_RX | CTRL_RX_INTERRUPT)
    }

    /// UART1, the console: no interrupts.
    pub fn uart1() -> Self {
        Self::enable(0x4000_5000, CTRL_TX_RX)
    }

    fn enable(base: usize, ctrl: u32) -> Self {
        let u = Self { base };
        u.write_reg(BAUDDIV, SYSCLK_HZ / 115_200);
        u.write_reg(CTRL, ctrl);
        u
    }

    fn read_reg(&self, offset: usize) -> u32 {
        // SAFETY: `base` is one of the CMSDK UART blocks of the AN386 memory map and the
        // offsets are its documented 32-bit registers; volatile as they are device memory.
        #[allow(unsafe_code)]
        unsafe {
            core::ptr::read_volatile((self.base + offset) as *const u32)
        }
    }

    fn write_reg(&self, offset: usize, value: u32) {
        // SAFETY: as in `read_reg`.
        #[allow(unsafe_code)]
        unsafe {
            core::ptr::write_volatile((self.base + offset) as *mut u32, value)
        }
    }

    /// A received byte, if one waits.
    pub fn try_read(&mut self) -> Option<u8> {
        (self.read_reg(STATE) & STATE_RX_FULL != 0).then(|| self.read_reg(DATA) as u8)
    }

    /// Sends a byte, waiting for room.
    pub fn write_byte(&mut self, b: u8) {
        while self.read_reg(STATE) & STATE_TX_FULL != 0 {}
        self.write_reg(DATA, u32::from(b));
    }
}

/// One piece of a console line: text, or a number in decimal.
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    /// Text.
    S(&'a str),
    /// A number.
    N(u32),
}

impl Uart {
    /// Writes one console line. No `core::fmt`: nothing else in the image uses it, and a
    /// single `writeln!` with two numbers links 696 bytes of it (measured).
    pub fn line(&mut self, parts: &[Part<'_>]) {
        for p in parts {
            match *p {
                Part::S(s) => s.bytes().for_each(|b| self.write_byte(b)),
                Part::N(n) => {
                    let mut digits = [0u8; 10];
                    let text = firmware::decimal(n, &mut digits);
                    text.bytes().for_each(|b| self.write_byte(b));
                }
            }
        }
        self.write_byte(b'\n');
    }
}

impl embedded_io_async::ErrorType for Uart {
    type Error = core::convert::Infallible;
}

impl embedded_io_async::Read for Uart {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(b) = self.try_read() {
                buf[0] = b;
                let mut n = 1;
                while n < buf.len() {
                    match self.try_read() {
                        Some(b) => buf[n] = b,
                        None => break,
                    }
                    n += 1;
                }
                return Ok(n);
            }
            firmware::app::yield_now().await;
        }
    }
}

impl embedded_io_async::Write for Uart {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        for b in buf {
            self.write_byte(*b);
        }
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(()) // every byte is in the UART once `write` returns
    }
}

/// A region of RAM used as NOR flash: reads, page erases to 0xFF, programming that only
/// clears bits, as the real part does.
#[derive(Debug)]
pub struct RamAsFlash {
    base: usize,
    len: usize,
}

impl RamAsFlash {
    /// The provisioning blob area (read only in practice).
    pub fn blob() -> Self {
        Self {
            base: BLOB_ADDR,
            len: BLOB_END - BLOB_ADDR,
        }
    }

    /// The two frame-counter pages.
    pub fn counter() -> Self {
        Self {
            base: COUNTER_ADDR,
            len: 2 * PAGE,
        }
    }

    /// The frame ring.
    pub fn ring() -> Self {
        Self {
            base: RING_ADDR,
            len: RING_PAGES * PAGE,
        }
    }

    fn check(&self, offset: u32, len: usize) -> Result<usize, NorFlashErrorKind> {
        let at = offset as usize;
        match at.checked_add(len) {
            Some(end) if end <= self.len => Ok(self.base + at),
            _ => Err(NorFlashErrorKind::OutOfBounds),
        }
    }
}

impl ErrorType for RamAsFlash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for RamAsFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let at = self.check(offset, bytes.len())?;
        for (i, b) in bytes.iter_mut().enumerate() {
            // SAFETY: `check` keeps [at, at + len) inside this region (SSRAM1 above the
            // code, or PSRAM), which no Rust object occupies (memory.x places none there).
            #[allow(unsafe_code)]
            unsafe {
                *b = core::ptr::read_volatile((at + i) as *const u8);
            }
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.len
    }
}

impl NorFlash for RamAsFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let at = self.check(from, to.saturating_sub(from) as usize)?;
        for i in 0..(to - from) as usize {
            // SAFETY: as in `read`.
            #[allow(unsafe_code)]
            unsafe {
                core::ptr::write_volatile((at + i) as *mut u8, 0xff);
            }
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let at = self.check(offset, bytes.len())?;
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: as in `read`. NOR programming only clears bits.
            #[allow(unsafe_code)]
            unsafe {
                let p = (at + i) as *mut u8;
                core::ptr::write_volatile(p, core::ptr::read_volatile(p) & b);
            }
        }
        Ok(())
    }
}
