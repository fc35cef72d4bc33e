//! Vigie reference air-quality node on the MPS2 AN386 board (Cortex-M4F), as Debian's
//! `qemu-system-arm -M mps2-an386` emulates it.
//!
//! - Boot: the provisioning blob at [`hw::BLOB_ADDR`] (what `gateway devices add` writes);
//!   no valid blob, no start: the reason goes to the console and the core halts.
//! - Frame counter: two pages at [`hw::COUNTER_ADDR`], skip-ahead reservation, so a reset
//!   never reuses a counter. Frame ring: four pages at [`hw::RING_ADDR`]; sealed frames
//!   stay there until a gateway acknowledges them.
//! - Sensors: the board has none, so an SDS011 and a BME280 are simulated on the chip
//!   behind the same UART/I2C traits the real drivers use (`firmware::simulated`).
//! - Link: UART0 to a cellular modem (AT commands, network time, TCP in transparent mode),
//!   MQTT 5 over it. UART1 is the console.
#![no_std]
#![no_main]

mod hw;

use core::sync::atomic::{AtomicU32, Ordering};

use firmware::REFERENCE_QUEUE;
use firmware::app::{self, Event, Platform};
use firmware::boot::load_provisioning;
use firmware::counter::FrameCounter;
use firmware::drivers::bme280::{ADDRESS, Bme280};
use firmware::drivers::sds011::Sds011;
use firmware::modem::Modem;
use firmware::node::Node;
use firmware::ring::FrameRing;
use firmware::simulated::{Bme280Sim, Environment, NoDelay, Sds011Sim, Sensor};
use firmware::station::{AirQualityStation, Sample, Window};
use protocol::Kind;

use hw::{Part, RamAsFlash, Uart};

/// Counters one flash write reserves: at most this many are skipped per reset.
const COUNTER_STEP: u32 = 16;

/// Unix time at boot, from the modem's network clock.
static UNIX_AT_BOOT: AtomicU32 = AtomicU32::new(0);

fn now() -> u32 {
    UNIX_AT_BOOT.load(Ordering::Relaxed) + hw::millis() / 1000
}

/// The simulated air around the emulated board: PM with a morning and an evening peak, a
/// daily temperature swing; integer arithmetic only.
#[derive(Debug, Clone, Copy)]
struct ChipEnv;

impl Environment for ChipEnv {
    fn now(&self) -> u32 {
        now()
    }

    fn pm(&self) -> (u16, u16) {
        let hour = (now() % 86_400 / 3600) as i32;
        let peak = |h: i32| (60 - 15 * (hour - h).abs()).max(0);
        let pm25 = (70 + peak(8) + peak(18) + (hw::millis() % 7) as i32) as u16;
        (pm25, pm25 * 16 / 10 + 30)
    }

    fn climate(&self) -> (i32, u32, u32) {
        let minute = (now() % 86_400 / 60) as i32;
        let swing = (minute - 900).abs(); // coolest at 03:00, warmest at 15:00
        (2200 - swing, 55 * 1024, 101_325 * 256)
    }

    fn distance_mm(&self) -> u16 {
        0
    }

    fn tilted(&self) -> bool {
        false
    }

    fn faulty(&self, _: Sensor) -> bool {
        false
    }
}

fn halt(console: &mut Uart, why: &str) -> ! {
    console.line(&[Part::S("vigie: halted: "), Part::S(why)]);
    loop {
        cortex_m::asm::wfi();
    }
}

#[cortex_m_rt::entry]
fn main() -> ! {
    let mut console = Uart::uart1();
    let Some(cp) = cortex_m::Peripherals::take() else {
        halt(&mut console, "core peripherals taken")
    };
    hw::start_clock(cp.SYST);
    hw::wake_on_modem_bytes();
    console.line(&[
        Part::S("vigie: node "),
        Part::S(env!("CARGO_PKG_VERSION")),
        Part::S(" booting"),
    ]);

    let provisioning = match load_provisioning(&mut RamAsFlash::blob(), 0) {
        Ok(p) => p,
        Err(e) => halt(&mut console, app::boot_error(e)),
    };
    if provisioning.kind != Kind::AirQuality {
        halt(&mut console, "this image is an air-quality node");
    }
    let counter = match FrameCounter::resume(RamAsFlash::counter(), 0, COUNTER_STEP) {
        Ok(c) => c,
        Err(e) => halt(&mut console, app::counter_error(e)),
    };
    let ring = match FrameRing::resume(RamAsFlash::ring()) {
        Ok(r) => r,
        Err(e) => halt(&mut console, app::ring_error(e)),
    };
    console.line(&[
        Part::S("vigie: "),
        Part::S(&provisioning.tenant),
        Part::S("/"),
        Part::S(&provisioning.device),
        Part::S(" next counter "),
        Part::N(counter.peek()),
        Part::S(" waiting "),
        Part::N(ring.readings()),
    ]);
    let heartbeat = u32::from(provisioning.heartbeat_s);
    let node = match Node::<_, REFERENCE_QUEUE>::new(provisioning, counter, ring) {
        Ok(n) => n,
        Err(e) => halt(&mut console, app::node_error(e)),
    };
    // Statics, so the image's RAM figure (.data + .bss) counts them.
    let node = cortex_m::singleton!(: Node<RamAsFlash, REFERENCE_QUEUE> = node);
    let station = AirQualityStation::new(
        Sds011::new(Sds011Sim::new(ChipEnv)),
        Bme280::new(Bme280Sim::new(ChipEnv), ADDRESS).ok(),
        heartbeat,
    );
    let station =
        cortex_m::singleton!(: AirQualityStation<Sds011Sim<ChipEnv>, Bme280Sim<ChipEnv>> = station);
    let (Some(node), Some(station)) = (node, station) else {
        halt(&mut console, "started twice")
    };
    let mut board = Mps2 { console, station };
    // Sleeps between interrupts: the 10 ms tick and the modem's bytes. Feature
    // `spin`: the old busy loop, the reference of `scripts/bench-idle.sh`.
    let idle: fn() = if cfg!(feature = "spin") {
        || {}
    } else {
        hw::idle
    };
    app::block_on_idle(app::run(node, Modem::new(Uart::uart0()), &mut board), idle)
}

/// The board as the node's main loop sees it.
struct Mps2 {
    console: Uart,
    station: &'static mut AirQualityStation<Sds011Sim<ChipEnv>, Bme280Sim<ChipEnv>>,
}

impl Platform for Mps2 {
    fn millis(&self) -> u32 {
        hw::millis()
    }

    fn asleep_ms(&self) -> u64 {
        hw::asleep_ms()
    }

    fn set_unix_at_boot(&mut self, unix: u32) {
        UNIX_AT_BOOT.store(unix, Ordering::Relaxed);
    }

    fn sample(&mut self, now: u32) -> Sample {
        let window = Window {
            warmup_ms: 0, // simulated fan: no airflow to settle
            samples: 5,
        };
        self.station.sample(&mut NoDelay, now, window)
    }

    fn event(&mut self, e: Event) {
        let c = &mut self.console;
        match e {
            Event::Connected(ms) => {
                c.line(&[Part::S("vigie: connected at "), Part::N(ms), Part::S(" ms")])
            }
            Event::FirstReading(ms) => c.line(&[
                Part::S("vigie: first reading acknowledged at "),
                Part::N(ms),
                Part::S(" ms"),
            ]),
            Event::LinkFailed(why, s) => c.line(&[
                Part::S("vigie: "),
                Part::S(why),
                Part::S(", retry in "),
                Part::N(s),
                Part::S(" s"),
            ]),
            Event::Reconnecting(why) => {
                c.line(&[Part::S("vigie: "), Part::S(why), Part::S(", reconnecting")])
            }
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut console = Uart::uart1();
    if let Some(at) = info.location() {
        console.line(&[
            Part::S("vigie: panic at "),
            Part::S(at.file()),
            Part::S(":"),
            Part::N(at.line()),
        ]);
    }
    halt(&mut console, "panic")
}
