//! Vigie air-quality node on an ST Nucleo-F411RE.
//!
//! Wiring: SIM7600 modem on USART1 (PA9 TX, PA10 RX, 115,200 baud, its reset line on the
//! board's NRST so both restart together, its PWRKEY pulled low by PB0 through an NPN
//! transistor); SDS011 on USART6 (PA11 TX, PA12 RX, 9,600 baud); BME280 on I2C1 (PB8 SCL,
//! PB9 SDA, address 0x76). Messages go out as defmt over RTT (`probe-rs run` or
//! `probe-rs attach` shows them).
//!
//! The core sleeps (`wfi`) whenever the node waits: the millisecond tick and USART1's
//! receive interrupt wake it; that interrupt moves each byte from the modem into a queue
//! the node reads, so none is overrun while the core sleeps or works.
//!
//! Flash: the image in sectors 0–3 (64 KiB, the image budget), the provisioning blob at
//! 0x08010000 (sector 4), the frame ring in sector 5 (0x08020000, one 128 KiB erase unit),
//! the frame-counter pages in sectors 6 and 7. Counter and ring share the flash
//! peripheral ([`firmware::flash::Shared`]).
#![no_std]
#![no_main]

use core::cell::{Cell, RefCell};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use cortex_m::interrupt::Mutex;
use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use defmt_rtt as _;
use firmware::REFERENCE_QUEUE;
use firmware::app::{self, Event, Platform};
use firmware::boot::load_provisioning;
use firmware::counter::FrameCounter;
use firmware::drivers::bme280::{ADDRESS, Bme280};
use firmware::drivers::sds011::Sds011;
use firmware::energy::{Slept, tick_time};
use firmware::flash::{Region, Shared};
use firmware::modem::Modem;
use firmware::node::Node;
use firmware::ring::FrameRing;
use firmware::serial_io::NbSerial;
use firmware::station::{AirQualityStation, Sample, Window};
use heapless::spsc::{Consumer, Producer, Queue};
use panic_probe as _;
use protocol::Kind;
use stm32f4xx_hal::flash::{FlashExt, LockedFlash, UnlockedFlash};
use stm32f4xx_hal::gpio::{Output, PB0};
use stm32f4xx_hal::i2c::{I2c, Mode};
use stm32f4xx_hal::pac::{self, I2C1, TIM5, USART1, USART6, interrupt};
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rcc::{Config, Rcc};
use stm32f4xx_hal::rtc::{Event as RtcEvent, Rtc};
use stm32f4xx_hal::serial::{Rx, RxListen, Serial, Tx};
use stm32f4xx_hal::timer::DelayUs;

/// Offsets from the start of flash (0x08000000).
const BLOB_OFFSET: u32 = 0x1_0000;
const RING_OFFSET: u32 = 0x2_0000;
const RING_LEN: u32 = 0x2_0000;
const COUNTER_OFFSET: u32 = 0x4_0000;
const COUNTER_LEN: u32 = 0x4_0000;
/// Counters one flash write reserves.
const COUNTER_STEP: u32 = 64;
const SYSCLK_HZ: u32 = 84_000_000;
/// SysTick counts per millisecond.
const TICKS_PER_MS: u32 = SYSCLK_HZ / 1000;
/// Bytes from the modem the receive interrupt can hold before the node reads them.
const RX_QUEUE: usize = 256;

static MILLIS: AtomicU32 = AtomicU32::new(0);

#[cortex_m_rt::exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}

fn millis() -> u32 {
    MILLIS.load(Ordering::Relaxed)
}

/// USART1's receiver and the queue's writing end, handed to its interrupt.
type RxEnd = (Rx<USART1>, Producer<'static, u8>);
static MODEM_RX: Mutex<RefCell<Option<RxEnd>>> = Mutex::new(RefCell::new(None));

/// A byte (or several) from the modem: into the queue. A full queue drops the byte: the
/// MQTT stream then fails its next check and the link starts again (nothing is lost).
#[interrupt]
fn USART1() {
    cortex_m::interrupt::free(|cs| {
        if let Some((rx, queue)) = MODEM_RX.borrow(cs).borrow_mut().as_mut() {
            while let Ok(b) = embedded_hal_nb::serial::Read::read(rx) {
                let _ = queue.enqueue(b);
            }
        }
    });
}

/// The modem's UART as the node reads it: bytes from the interrupt's queue, writes
/// straight to the transmitter.
struct ModemUart {
    tx: Tx<USART1>,
    rx: Consumer<'static, u8>,
}

impl embedded_hal_nb::serial::ErrorType for ModemUart {
    type Error = embedded_hal_nb::serial::ErrorKind;
}

impl embedded_hal_nb::serial::Read<u8> for ModemUart {
    fn read(&mut self) -> embedded_hal_nb::nb::Result<u8, Self::Error> {
        self.rx
            .dequeue()
            .ok_or(embedded_hal_nb::nb::Error::WouldBlock)
    }
}

impl embedded_hal_nb::serial::Write<u8> for ModemUart {
    fn write(&mut self, b: u8) -> embedded_hal_nb::nb::Result<(), Self::Error> {
        embedded_hal_nb::serial::Write::write(&mut self.tx, b)
            .map_err(|e| e.map(|_| embedded_hal_nb::serial::ErrorKind::Other))
    }
    fn flush(&mut self) -> embedded_hal_nb::nb::Result<(), Self::Error> {
        embedded_hal_nb::serial::Write::flush(&mut self.tx)
            .map_err(|e| e.map(|_| embedded_hal_nb::serial::ErrorKind::Other))
    }
}

/// The RTC, whose wake-up timer ends a [`Nucleo::rest`] in Stop mode.
static RTC: Mutex<RefCell<Option<Rtc>>> = Mutex::new(RefCell::new(None));

/// The wake-up timer fired.
static WOKE: AtomicBool = AtomicBool::new(false);

/// The wake-up timer fired: say so, and clear its flag (RTC and EXTI line 22), or the
/// interrupt would fire again at once.
#[interrupt]
fn RTC_WKUP() {
    WOKE.store(true, Ordering::Relaxed);
    cortex_m::interrupt::free(|cs| {
        if let Some(rtc) = RTC.borrow(cs).borrow_mut().as_mut() {
            rtc.clear_interrupt(RtcEvent::Wakeup);
        }
    });
}

/// Shortest rest worth Stop mode (waking takes the PLL's lock, about 100 µs), and the
/// longest one the wake-up timer takes in one go.
const MIN_REST_MS: u32 = 20;
const MAX_REST_MS: u32 = 3_600_000;

/// Time the core slept in [`idle`] and in Stop. Only the main loop writes it.
static SLEPT: Mutex<Cell<Slept>> = Mutex::new(Cell::new(Slept::new()));

fn ticks_now() -> (u32, u32) {
    tick_time(millis, SYST::get_current, TICKS_PER_MS, 1)
}

/// Sleeps until the next interrupt (the tick, a modem byte) and counts it.
fn idle() {
    let before = ticks_now();
    cortex_m::asm::wfi();
    slept(before, ticks_now());
}

/// Counts the core asleep from `before` to `after`.
fn slept(before: (u32, u32), after: (u32, u32)) {
    cortex_m::interrupt::free(|cs| {
        let slept = SLEPT.borrow(cs);
        let mut s = slept.get();
        s.add(before, after, TICKS_PER_MS);
        slept.set(s);
    });
}

type Station = AirQualityStation<Serial<USART6>, I2c<I2C1>>;
type Flash = Region<Shared<'static, UnlockedFlash<'static>>>;

struct Nucleo {
    station: &'static mut Station,
    delay: DelayUs<TIM5>,
    /// High: the transistor pulls the modem's PWRKEY low (a key press).
    pwrkey: PB0<Output>,
    /// Clocks, to bring the PLL back after Stop.
    rcc: Rcc,
    pwr: pac::PWR,
    scb: cortex_m::peripheral::SCB,
}

impl Nucleo {
    /// A 500 ms press of the modem's power key: powers it on when it is off (SIM7600:
    /// at least 100 ms); a running modem takes 2.5 s to power off, so it stays on.
    fn press_power_key(&mut self) {
        self.pwrkey.set_high();
        self.delay.delay_ms(500);
        self.pwrkey.set_low();
    }

    /// Stop mode for `ms`: the voltage regulator in low-power mode and the flash powered
    /// down (DS10314: 9 to 42 µA), SysTick stopped, the RTC's wake-up timer (LSE) ends it.
    /// The core wakes on the HSI: the PLL is started again and selected, and the
    /// millisecond clock advanced by the time stopped.
    fn stop_for(&mut self, ms: u32) {
        WOKE.store(false, Ordering::Relaxed);
        let started = cortex_m::interrupt::free(|cs| {
            let mut rtc = RTC.borrow(cs).borrow_mut();
            rtc.as_mut().map(|rtc| {
                rtc.enable_wakeup(fugit::MicrosDurationU64::millis(u64::from(ms)));
            })
        });
        if started.is_none() {
            return; // the RTC is not set up yet: Sleep mode will do
        }
        let before = ticks_now();
        self.pwr
            .cr()
            .modify(|_, w| w.pdds().clear_bit().lpds().set_bit().fpds().set_bit());
        self.scb.set_sleepdeep();
        // Only the wake-up timer ends the rest: an interrupt already pending (a tick that
        // came just before) wakes the core at once, and it stops again.
        while !WOKE.load(Ordering::Relaxed) {
            cortex_m::asm::dsb();
            cortex_m::asm::wfi();
        }
        self.scb.clear_sleepdeep();
        self.rcc.cr().modify(|_, w| w.pllon().set_bit());
        while self.rcc.cr().read().pllrdy().bit_is_clear() {}
        self.rcc.cfgr().modify(|_, w| w.sw().pll());
        while !self.rcc.cfgr().read().sws().is_pll() {}
        cortex_m::interrupt::free(|cs| {
            if let Some(rtc) = RTC.borrow(cs).borrow_mut().as_mut() {
                rtc.disable_wakeup();
            }
        });
        MILLIS.fetch_add(ms, Ordering::Relaxed);
        slept(before, ticks_now());
    }
}

impl Platform for Nucleo {
    fn millis(&self) -> u32 {
        millis()
    }

    fn asleep_ms(&self) -> u64 {
        cortex_m::interrupt::free(|cs| SLEPT.borrow(cs).get().ms())
    }

    /// On: the power key (after `AT+CPOF` the modem is off and waits for it). Off: the
    /// modem already is, after `AT+CPOF`.
    fn modem_power(&mut self, on: bool) {
        if on {
            self.press_power_key();
        }
    }

    fn rest(&mut self, ms: u32) {
        if ms >= MIN_REST_MS {
            self.stop_for(ms.min(MAX_REST_MS));
        }
    }

    fn set_unix_at_boot(&mut self, unix: u32) {
        defmt::info!("network time: {=u32} s at boot", unix);
    }

    fn sample(&mut self, now: u32) -> Sample {
        let window = Window {
            warmup_ms: 30_000, // SDS011: let the airflow settle
            samples: 5,
        };
        self.station.sample(&mut self.delay, now, window)
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Connected(ms) => defmt::info!("connected at {=u32} ms", ms),
            Event::FirstReading(ms) => defmt::info!("first reading acknowledged at {=u32} ms", ms),
            Event::LinkFailed(why, s) => defmt::warn!("{=str}, retry in {=u32} s", why, s),
            Event::Reconnecting(why) => defmt::warn!("{=str}, reconnecting", why),
        }
    }
}

fn halt(why: &str) -> ! {
    defmt::error!("halted: {=str}", why);
    loop {
        cortex_m::asm::wfi();
    }
}

#[cortex_m_rt::entry]
fn main() -> ! {
    let (Some(dp), Some(cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        halt("peripherals taken")
    };
    let mut rcc = dp.RCC.freeze(Config::hsi().sysclk(SYSCLK_HZ.Hz()));
    let mut syst = cp.SYST;
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(SYSCLK_HZ / 1000 - 1);
    syst.clear_current();
    syst.enable_counter();
    syst.enable_interrupt();
    defmt::info!("vigie node {=str} booting", env!("CARGO_PKG_VERSION"));

    let Some(flash) = cortex_m::singleton!(: LockedFlash = LockedFlash::new(dp.FLASH)) else {
        halt("started twice")
    };
    let provisioning = match load_provisioning(flash, BLOB_OFFSET) {
        Ok(p) => p,
        Err(e) => halt(app::boot_error(e)),
    };
    if provisioning.kind != Kind::AirQuality {
        halt("this image is an air-quality node");
    }
    let Some(flash) = cortex_m::singleton!(
        : core::cell::RefCell<UnlockedFlash<'static>> = core::cell::RefCell::new(flash.unlocked())
    ) else {
        halt("started twice")
    };
    let counter = match FrameCounter::resume(
        Region::new(Shared(flash), COUNTER_OFFSET, COUNTER_LEN),
        0,
        COUNTER_STEP,
    ) {
        Ok(c) => c,
        Err(e) => halt(app::counter_error(e)),
    };
    let ring = match FrameRing::resume(Region::new(Shared(flash), RING_OFFSET, RING_LEN)) {
        Ok(r) => r,
        Err(e) => halt(app::ring_error(e)),
    };
    defmt::info!(
        "{=str}/{=str}, next counter {=u32}",
        provisioning.tenant.as_str(),
        provisioning.device.as_str(),
        counter.peek()
    );
    let heartbeat = u32::from(provisioning.heartbeat_s);
    let node = match Node::<Flash, REFERENCE_QUEUE>::new(provisioning, counter, ring) {
        Ok(n) => n,
        Err(e) => halt(app::node_error(e)),
    };

    let gpioa = dp.GPIOA.split(&mut rcc);
    let gpiob = dp.GPIOB.split(&mut rcc);
    let Ok(modem_uart) = dp
        .USART1
        .serial((gpioa.pa9, gpioa.pa10), 115_200.bps(), &mut rcc)
    else {
        halt("USART1 configuration")
    };
    let Some(queue) = cortex_m::singleton!(: Queue<u8, RX_QUEUE> = Queue::new()) else {
        halt("started twice")
    };
    let (producer, consumer) = queue.split();
    let (tx, mut rx) = modem_uart.split();
    rx.listen();
    cortex_m::interrupt::free(|cs| MODEM_RX.borrow(cs).replace(Some((rx, producer))));
    // SAFETY: the handler only moves bytes into the queue inside a critical section; no
    // critical section of the node depends on USART1's interrupt staying masked.
    #[allow(unsafe_code)]
    unsafe {
        cortex_m::peripheral::NVIC::unmask(pac::Interrupt::USART1)
    };
    let Ok(pm_uart) = dp
        .USART6
        .serial((gpioa.pa11, gpioa.pa12), 9_600.bps(), &mut rcc)
    else {
        halt("USART6 configuration")
    };
    let i2c = I2c::new(
        dp.I2C1,
        (gpiob.pb8, gpiob.pb9),
        Mode::standard(100.kHz()),
        &mut rcc,
    );
    let climate = match Bme280::new(i2c, ADDRESS) {
        Ok(b) => Some(b),
        Err(_) => {
            defmt::warn!("BME280 not answering at 0x76: climate fields reported as faults");
            None
        }
    };
    let station = Station::new(Sds011::new(pm_uart), climate, heartbeat);
    let (Some(node), Some(station)) = (
        cortex_m::singleton!(: Node<Flash, REFERENCE_QUEUE> = node),
        cortex_m::singleton!(: Station = station),
    ) else {
        halt("started twice")
    };
    let mut pwr = dp.PWR;
    let mut exti = dp.EXTI;
    let mut rtc = Rtc::new(dp.RTC, &mut rcc, &mut pwr);
    rtc.listen(&mut exti, RtcEvent::Wakeup);
    cortex_m::interrupt::free(|cs| RTC.borrow(cs).replace(Some(rtc)));
    // SAFETY: its handler only clears the wake-up flag inside a critical section.
    #[allow(unsafe_code)]
    unsafe {
        cortex_m::peripheral::NVIC::unmask(pac::Interrupt::RTC_WKUP)
    };
    let mut board = Nucleo {
        station,
        delay: dp.TIM5.delay_us(&mut rcc),
        pwrkey: gpiob.pb0.into_push_pull_output(),
        rcc,
        pwr,
        scb: cp.SCB,
    };
    // The modem may be off (its last session ended with `AT+CPOF`): press its key.
    board.press_power_key();
    let uart = ModemUart { tx, rx: consumer };
    app::block_on_idle(app::run(node, Modem::new(NbSerial(uart)), &mut board), idle)
}
