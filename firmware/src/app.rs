//! The node's main loop, the same on every board: modem up (network time, TCP in
//! transparent mode), MQTT connect, then sample and send every interval; on any link error
//! or time-out, back off, leave transparent mode and start the link again, sampling all
//! the while once the network time is known (readings queue meanwhile). A board supplies its clock, its modem UART, its sampling
//! and where messages go ([`Platform`]); time-outs and sleeps are polled on its clock, so
//! any executor will do, even a plain spin `block_on`.
//!
//! Also the fixed texts boards print for each failure: `Debug` formatting of the error
//! types would cost about 15 KiB of flash (measured on the reference image).

use core::future::{Future, poll_fn};
use core::task::Poll;

use embedded_io_async::{Read, Write};
use embedded_storage::nor_flash::NorFlash;
use protocol::provision::ProvisionError;
use rust_mqtt::client::Client;

use crate::backoff::Backoff;
use crate::boot::BootError;
use crate::counter::CounterError;
use crate::modem::{Modem, ModemError};
use crate::node::{Node, NodeError};
use crate::station::Sample;
use crate::uplink::{Mqtt, Scratch, UplinkError};

/// Longest wait for one link step (a modem command sequence, an MQTT exchange).
const STEP_MS: u32 = 10_000;
/// The first sample, milliseconds after boot. Readings carry whole seconds and the
/// database keeps one point per second and series, and the network clock is good to a
/// second or two: waiting 3 s keeps a reading of this boot from sharing a second with the
/// last one of the boot a quick reset ended.
const FIRST_SAMPLE_MS: u32 = 3_000;
/// A status report every this many samples.
const STATUS_EVERY: u32 = 6;

/// What the loop tells the board (console, defmt, LED…).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Connected to the broker, at this many ms after boot.
    Connected(u32),
    /// The broker acknowledged the first reading, at this many ms after boot.
    FirstReading(u32),
    /// The link failed (why); next attempt in this many seconds.
    LinkFailed(&'static str, u32),
    /// Sending failed (why); reconnecting.
    Reconnecting(&'static str),
}

/// What the loop needs from a board.
pub trait Platform {
    /// Milliseconds since boot.
    fn millis(&self) -> u32;
    /// The network time is known: Unix seconds at boot.
    fn set_unix_at_boot(&mut self, unix: u32);
    /// One sampling cycle at Unix time `now`.
    fn sample(&mut self, now: u32) -> Sample;
    /// Something worth telling.
    fn event(&mut self, e: Event);
}

/// Runs a future to completion on this core: poll, and poll again. Every waker is a no-op:
/// the node's futures poll their UART and clock rather than wait for interrupts.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = core::pin::pin!(f);
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// Returns `Pending` once, so the executor gets the hand back.
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|_| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            Poll::Pending
        }
    })
    .await
}

/// `f`'s output, or `None` if it takes longer than `ms` on `clock`. Dropping the node's
/// flush mid-way is safe: the frame in flight stays sealed and is sent again.
pub async fn with_timeout<F: Future>(clock: impl Fn() -> u32, ms: u32, f: F) -> Option<F::Output> {
    let start = clock();
    let mut f = core::pin::pin!(f);
    poll_fn(|cx| match f.as_mut().poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        _ if clock().wrapping_sub(start) >= ms => Poll::Ready(None),
        _ => Poll::Pending,
    })
    .await
}

/// Waits `ms` on `clock`.
pub async fn sleep_ms(clock: impl Fn() -> u32, ms: u32) {
    let start = clock();
    while clock().wrapping_sub(start) < ms {
        yield_now().await;
    }
}

/// When the next sample is due; samples go into the node's queue whether the link is up
/// or not, once the network time is known.
#[derive(Debug)]
struct Sampler {
    interval_ms: u32,
    next_ms: u32,
    count: u32,
    unix_at_boot: Option<u32>,
}

impl Sampler {
    /// Takes a sample if one is due; returns whether it did.
    fn tick<F: NorFlash, const Q: usize, P: Platform>(
        &mut self,
        node: &mut Node<F, Q>,
        board: &mut P,
    ) -> bool {
        let Some(base) = self.unix_at_boot else {
            return false; // readings need a real time
        };
        let ms = board.millis();
        if ms < self.next_ms {
            return false;
        }
        self.next_ms = ms + self.interval_ms;
        let now = base + ms / 1000;
        node.record_sample(board.sample(now));
        self.count += 1;
        if self.count.is_multiple_of(STATUS_EVERY) {
            node.report_status(now, None, None, ms / 1000);
        }
        true
    }

    /// Waits `ms`, sampling whenever a sample is due.
    async fn wait<F: NorFlash, const Q: usize, P: Platform>(
        &mut self,
        node: &mut Node<F, Q>,
        board: &mut P,
        ms: u32,
    ) {
        let start = board.millis();
        while board.millis().wrapping_sub(start) < ms {
            self.tick(node, board);
            yield_now().await;
        }
    }
}

/// Runs the node for ever over `modem`.
pub async fn run<F, const Q: usize, U, P>(
    node: &mut Node<F, Q>,
    mut modem: Modem<U>,
    board: &mut P,
) -> !
where
    F: NorFlash,
    U: Read + Write,
    P: Platform,
{
    let mut backoff = Backoff::new(1, 60);
    let mut sampler = Sampler {
        interval_ms: u32::from(node.provisioning().sample_interval_s) * 1000,
        next_ms: FIRST_SAMPLE_MS,
        count: 0,
        unix_at_boot: None,
    };
    let mut first_sent = false;
    loop {
        let link = async {
            modem.wake().await?;
            let t = modem.clock().await?;
            let p = node.provisioning();
            modem.open(&p.broker_host, p.broker_port).await.map(|()| t)
        };
        let failure = match with_timeout(|| board.millis(), STEP_MS, link).await {
            Some(Ok(t)) => {
                let base = t.saturating_sub(board.millis() / 1000);
                sampler.unix_at_boot = Some(base);
                board.set_unix_at_boot(base);
                None
            }
            Some(Err(e)) => Some(modem_error(e)),
            None => Some("modem: no answer in time"),
        };
        if let Some(why) = failure {
            let wait = backoff.next_delay_s(board.millis());
            board.event(Event::LinkFailed(why, wait));
            sampler.wait(node, board, wait * 1000).await;
            escape(&mut modem, &mut sampler, node, board).await;
            continue;
        }
        let mut buf = [0u8; 512];
        let mut scratch = Scratch::new(&mut buf);
        let mut client: Mqtt<'_, &mut U> = Client::new(&mut scratch);
        let connect = node.uplink().connect(&mut client, modem.io());
        let failure = match with_timeout(|| board.millis(), STEP_MS, connect).await {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(uplink_error(e)),
            None => Some("mqtt: no CONNACK in time"),
        };
        if let Some(why) = failure {
            drop(client);
            let wait = backoff.next_delay_s(board.millis());
            board.event(Event::LinkFailed(why, wait));
            sampler.wait(node, board, wait * 1000).await;
            escape(&mut modem, &mut sampler, node, board).await;
            continue;
        }
        backoff.reset();
        board.event(Event::Connected(board.millis()));
        loop {
            while !sampler.tick(node, board) {
                sleep_ms(|| board.millis(), 10).await;
            }
            let why = match with_timeout(|| board.millis(), STEP_MS, node.flush(&mut client)).await
            {
                Some(Ok(n)) => {
                    if n > 0 && !first_sent {
                        first_sent = true;
                        board.event(Event::FirstReading(board.millis()));
                    }
                    continue;
                }
                Some(Err(e)) => node_error(e),
                None => "uplink: no PUBACK in time",
            };
            board.event(Event::Reconnecting(why));
            break;
        }
        drop(client);
        sampler.wait(node, board, 1000).await;
        escape(&mut modem, &mut sampler, node, board).await;
    }
}

/// Leaves transparent mode: `+++` after a second of silence (the caller's wait) and
/// before another, sampling meanwhile.
async fn escape<U: Read + Write, F: NorFlash, const Q: usize, P: Platform>(
    modem: &mut Modem<U>,
    sampler: &mut Sampler,
    node: &mut Node<F, Q>,
    board: &mut P,
) {
    let _ = modem.escape().await;
    sampler.wait(node, board, 1000).await;
}

/// What to tell a technician about a boot failure.
pub fn boot_error(e: BootError) -> &'static str {
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
    }
}

/// What to tell about a frame-counter failure.
pub fn counter_error(e: CounterError) -> &'static str {
    match e {
        CounterError::Flash(_) => "frame counter: flash error",
        CounterError::Exhausted => "frame counter exhausted: re-key the device",
        CounterError::Verify => "frame counter: flash does not keep what is written",
        CounterError::Unsupported => "frame counter: flash geometry unsupported",
    }
}

fn modem_error(e: ModemError) -> &'static str {
    match e {
        ModemError::Uart => "modem: UART failed",
        ModemError::Refused => "modem answered ERROR",
        ModemError::NoAnswer => "modem: no answer",
        ModemError::Clock => "modem: bad network time",
    }
}

fn uplink_error(e: UplinkError) -> &'static str {
    match e {
        UplinkError::Network => "mqtt: link lost",
        UplinkError::Refused(_) => "mqtt: broker refused",
        UplinkError::Protocol => "mqtt: protocol error",
    }
}

/// What to tell about a node failure.
pub fn node_error(e: NodeError) -> &'static str {
    match e {
        NodeError::Uplink(u) => uplink_error(u),
        NodeError::Counter(c) => counter_error(c),
        NodeError::Identity => "invalid identity",
        NodeError::Frame(_) => "frame error",
    }
}
