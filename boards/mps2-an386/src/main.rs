//! Vigie reference air-quality node on the MPS2 AN386 board (Cortex-M4F), as Debian's
//! `qemu-system-arm -M mps2-an386` emulates it.
//!
//! - Boot: the provisioning blob at [`hw::BLOB_ADDR`] (what `gateway devices add` writes);
//!   no valid blob, no start: the reason goes to the console and the core halts.
//! - Frame counter: two pages at [`hw::COUNTER_ADDR`], skip-ahead reservation, so a reset
//!   never reuses a counter.
//! - Sensors: the board has none, so an SDS011 and a BME280 are simulated on the chip
//!   behind the same UART/I2C traits the real drivers use (`firmware::simulated`).
//! - Link: UART0 to a cellular modem (AT commands, network time, TCP in transparent mode),
//!   MQTT 5 over it. UART1 is the console.
#![no_std]
#![no_main]

mod hw;

use core::fmt::Write as _;
use core::sync::atomic::{AtomicU32, Ordering};

use firmware::REFERENCE_QUEUE;
use firmware::backoff::Backoff;
use firmware::boot::{BootError, load_provisioning};
use firmware::counter::{CounterError, FrameCounter};
use firmware::drivers::bme280::{ADDRESS, Bme280};
use firmware::drivers::sds011::Sds011;
use firmware::modem::{Modem, ModemError};
use firmware::node::{Node, NodeError};
use firmware::simulated::{Bme280Sim, Environment, NoDelay, Sds011Sim, Sensor};
use firmware::station::{AirQualityStation, Window};
use firmware::uplink::{Mqtt, Scratch, UplinkError};
use protocol::Kind;
use protocol::provision::ProvisionError;
use rust_mqtt::client::Client;

use hw::{SsramFlash, Uart};

/// Counters one flash write reserves: at most this many are skipped per reset.
const COUNTER_STEP: u32 = 16;
/// The first sample, milliseconds after boot.
const FIRST_SAMPLE_MS: u32 = 3_000;
/// A status report every this many samples.
const STATUS_EVERY: u32 = 6;

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

fn halt(console: &mut Uart, why: core::fmt::Arguments<'_>) -> ! {
    let _ = writeln!(console, "vigie: halted: {why}");
    loop {
        cortex_m::asm::wfi();
    }
}

#[cortex_m_rt::entry]
fn main() -> ! {
    let mut console = Uart::uart1();
    let Some(cp) = cortex_m::Peripherals::take() else {
        halt(&mut console, format_args!("core peripherals taken"))
    };
    hw::start_clock(cp.SYST);
    let _ = writeln!(console, "vigie: node {} booting", env!("CARGO_PKG_VERSION"));

    let provisioning = match load_provisioning(&mut SsramFlash::blob(), 0) {
        Ok(p) => p,
        Err(e) => halt(&mut console, format_args!("{}", boot_error(e))),
    };
    if provisioning.kind != Kind::AirQuality {
        halt(
            &mut console,
            format_args!("this image is an air-quality node"),
        );
    }
    let counter = match FrameCounter::resume(SsramFlash::counter(), 0, COUNTER_STEP) {
        Ok(c) => c,
        Err(e) => halt(&mut console, format_args!("{}", counter_error(e))),
    };
    let _ = writeln!(
        console,
        "vigie: {}/{} next counter {}",
        provisioning.tenant,
        provisioning.device,
        counter.peek()
    );
    let heartbeat = u32::from(provisioning.heartbeat_s);
    let node = match Node::<_, REFERENCE_QUEUE>::new(provisioning, counter) {
        Ok(n) => n,
        Err(e) => halt(&mut console, format_args!("{}", node_error(e))),
    };
    // Statics, so the image's RAM figure (.data + .bss) counts them.
    let node = cortex_m::singleton!(: Node<SsramFlash, REFERENCE_QUEUE> = node);
    let station = AirQualityStation::new(
        Sds011::new(Sds011Sim::new(ChipEnv)),
        Bme280::new(Bme280Sim::new(ChipEnv), ADDRESS).ok(),
        heartbeat,
    );
    let station =
        cortex_m::singleton!(: AirQualityStation<Sds011Sim<ChipEnv>, Bme280Sim<ChipEnv>> = station);
    let (Some(node), Some(station)) = (node, station) else {
        halt(&mut console, format_args!("started twice"))
    };
    hw::block_on(run(node, station, console))
}

/// Longest wait for one link step (a modem command sequence, an MQTT exchange).
const STEP_MS: u32 = 10_000;

/// The node's life: modem up, connect, then sample and send every interval; on any link
/// error or time-out, back off, leave transparent mode and start the link again. Sampling
/// goes on meanwhile (readings queue).
///
/// At boot the modem is taken to be fresh (its reset line follows the MCU's, as on the
/// reference board), so the first `AT` needs no escape.
async fn run(
    node: &mut Node<SsramFlash, REFERENCE_QUEUE>,
    station: &mut AirQualityStation<Sds011Sim<ChipEnv>, Bme280Sim<ChipEnv>>,
    mut console: Uart,
) -> ! {
    let mut modem = Modem::new(Uart::uart0());
    let mut backoff = Backoff::new(1, 60);
    let interval_ms = u32::from(node.provisioning().sample_interval_s) * 1000;
    // Readings carry whole seconds and the database keeps one point per second and
    // series; the network clock is only good to a second or two. Waiting 3 s before the
    // first sample keeps a reading of this boot from sharing a second with the last one
    // of the boot a quick reset ended.
    let (mut next_sample, mut samples, mut first_sent) = (FIRST_SAMPLE_MS, 0u32, false);
    loop {
        let link = async {
            modem.wake().await?;
            let t = modem.clock().await?;
            UNIX_AT_BOOT.store(t.saturating_sub(hw::millis() / 1000), Ordering::Relaxed);
            let p = node.provisioning();
            modem.open(&p.broker_host, p.broker_port).await
        };
        let failure = match hw::with_timeout(STEP_MS, link).await {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(modem_error(e)),
            None => Some("modem: no answer in time"),
        };
        if let Some(why) = failure {
            let wait = backoff.next_delay_s(hw::millis());
            let _ = writeln!(console, "vigie: {why}, retry in {wait} s");
            leave_transparent_mode(&mut modem, wait).await;
            continue;
        }
        let mut buf = [0u8; 512];
        let mut scratch = Scratch::new(&mut buf);
        let mut client: Mqtt<'_, &mut Uart> = Client::new(&mut scratch);
        let connect = node.uplink().connect(&mut client, modem.io());
        let failure = match hw::with_timeout(STEP_MS, connect).await {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(uplink_error(e)),
            None => Some("mqtt: no CONNACK in time"),
        };
        if let Some(why) = failure {
            drop(client);
            let wait = backoff.next_delay_s(hw::millis());
            let _ = writeln!(console, "vigie: {why}, retry in {wait} s");
            leave_transparent_mode(&mut modem, wait).await;
            continue;
        }
        backoff.reset();
        let _ = writeln!(console, "vigie: connected at {} ms", hw::millis());
        loop {
            while hw::millis() < next_sample {
                hw::sleep_ms(10).await;
            }
            next_sample = hw::millis() + interval_ms;
            let t = now();
            let s = station.sample(
                &mut NoDelay,
                t,
                Window {
                    warmup_ms: 0,
                    samples: 5,
                },
            );
            node.flag(s.errors);
            if let Some(r) = s.reading {
                node.record(r);
            }
            samples += 1;
            if samples % STATUS_EVERY == 0 {
                node.report_status(t, None, None, hw::millis() / 1000);
            }
            let why = match hw::with_timeout(STEP_MS, node.flush(&mut client)).await {
                Some(Ok(n)) => {
                    if n > 0 && !first_sent {
                        first_sent = true;
                        let _ = writeln!(
                            console,
                            "vigie: first reading acknowledged at {} ms",
                            hw::millis()
                        );
                    }
                    continue;
                }
                Some(Err(e)) => node_error(e),
                None => "uplink: no PUBACK in time",
            };
            let _ = writeln!(console, "vigie: {why}, reconnecting");
            break;
        }
        drop(client);
        leave_transparent_mode(&mut modem, 1).await;
    }
}

/// Waits out `wait_s` (at least the escape's guard second), then `+++` and a silent second.
async fn leave_transparent_mode(modem: &mut Modem<Uart>, wait_s: u32) {
    hw::sleep_ms(wait_s.max(1) * 1000).await;
    let _ = modem.escape().await;
    hw::sleep_ms(1000).await;
}

// What the console says about each failure: fixed text rather than `Debug`, whose
// formatting machinery alone would cost about 15 KiB of flash (measured).

fn boot_error(e: BootError) -> &'static str {
    match e {
        BootError::Flash => "provisioning flash unreadable",
        BootError::Interval => "provisioning blob: sample interval is zero",
        BootError::Provisioning(p) => match p {
            ProvisionError::Magic => "no provisioning blob (magic VGP1 missing): load one",
            ProvisionError::Truncated => "provisioning blob truncated",
            ProvisionError::Checksum => "provisioning blob checksum mismatch (half-written?)",
            ProvisionError::Id => "provisioning blob: invalid tenant or device id",
            ProvisionError::Kind => "provisioning blob: unknown device kind",
            ProvisionError::Host => "provisioning blob: invalid broker host",
            _ => "provisioning blob invalid",
        },
        _ => "boot failed",
    }
}

fn counter_error(e: CounterError) -> &'static str {
    match e {
        CounterError::Flash(_) => "frame counter: flash error",
        CounterError::Exhausted => "frame counter exhausted: re-key the device",
        CounterError::Verify => "frame counter: flash does not keep what is written",
        _ => "frame counter: flash geometry unsupported",
    }
}

fn modem_error(e: ModemError) -> &'static str {
    match e {
        ModemError::Uart => "UART failed",
        ModemError::Refused => "modem answered ERROR",
        ModemError::NoAnswer => "no answer",
        ModemError::Clock => "bad network time",
        _ => "failed",
    }
}

fn uplink_error(e: UplinkError) -> &'static str {
    match e {
        UplinkError::Network => "link lost",
        UplinkError::Refused(_) => "broker refused",
        _ => "protocol error",
    }
}

fn node_error(e: NodeError) -> &'static str {
    match e {
        NodeError::Uplink(u) => uplink_error(u),
        NodeError::Counter(c) => counter_error(c),
        NodeError::Identity => "invalid identity",
        _ => "frame error",
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut console = Uart::uart1();
    match info.location() {
        Some(at) => halt(&mut console, format_args!("panic at {at}")),
        None => halt(&mut console, format_args!("panic")),
    }
}
