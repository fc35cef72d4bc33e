//! Vigie air-quality node on an ST Nucleo-F411RE.
//!
//! Wiring: SIM7600 modem on USART1 (PA9 TX, PA10 RX, 115,200 baud, its reset line on the
//! board's NRST so both restart together); SDS011 on USART6 (PA11 TX, PA12 RX, 9,600
//! baud); BME280 on I2C1 (PB8 SCL, PB9 SDA, address 0x76). Messages go out as defmt over
//! RTT (`probe-rs run` or `probe-rs attach` shows them).
//!
//! Flash: the image in sectors 0–3 (64 KiB, the image budget), the provisioning blob at
//! 0x08010000 (sector 4), the frame ring in sector 5 (0x08020000, one 128 KiB erase unit),
//! the frame-counter pages in sectors 6 and 7. Counter and ring share the flash
//! peripheral ([`firmware::flash::Shared`]).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use defmt_rtt as _;
use firmware::REFERENCE_QUEUE;
use firmware::app::{self, Event, Platform};
use firmware::boot::load_provisioning;
use firmware::counter::FrameCounter;
use firmware::drivers::bme280::{ADDRESS, Bme280};
use firmware::drivers::sds011::Sds011;
use firmware::flash::{Region, Shared};
use firmware::modem::Modem;
use firmware::node::Node;
use firmware::ring::FrameRing;
use firmware::serial_io::NbSerial;
use firmware::station::{AirQualityStation, Sample, Window};
use panic_probe as _;
use protocol::Kind;
use stm32f4xx_hal::flash::{FlashExt, LockedFlash, UnlockedFlash};
use stm32f4xx_hal::i2c::{I2c, Mode};
use stm32f4xx_hal::pac::{self, I2C1, TIM5, USART6};
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rcc::Config;
use stm32f4xx_hal::serial::Serial;
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

static MILLIS: AtomicU32 = AtomicU32::new(0);

#[cortex_m_rt::exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}

type Station = AirQualityStation<Serial<USART6>, I2c<I2C1>>;
type Flash = Region<Shared<'static, UnlockedFlash<'static>>>;

struct Nucleo {
    station: &'static mut Station,
    delay: DelayUs<TIM5>,
}

impl Platform for Nucleo {
    fn millis(&self) -> u32 {
        MILLIS.load(Ordering::Relaxed)
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
    let mut board = Nucleo {
        station,
        delay: dp.TIM5.delay_us(&mut rcc),
    };
    app::block_on(app::run(node, Modem::new(NbSerial(modem_uart)), &mut board))
}
