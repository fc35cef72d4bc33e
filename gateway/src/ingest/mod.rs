//! The ingest worker: one thread that owns the registry, the replay book, the durable
//! buffer and the quarantine. It takes every message waiting (up to a batch), judges the
//! batch with the pure core ([`vigie_core::judge::batch`]: each message gets the verdict it
//! would get alone), appends the accepted records and quarantines the rejected ones,
//! fsyncs (group commit), only then advances the replay windows, and hands back the
//! broker acknowledgements in arrival order and one sealed acknowledgement per device
//! whose frames the commit settled (SPEC §12).
//!
//! When the buffer is full or the disk fails, it keeps the batch and waits: no ack leaves,
//! so the broker holds the traffic (backpressure); health (`/readyz`), a metric and one
//! log line per change of state say why, and it resumes by itself when writes succeed
//! again. Shutdown interrupts the wait (nothing of that batch is acknowledged).
//!
//! A gateway of a group (`[group]`) judges against the group's state in etcd and claims
//! what it stores there before publishing it to the sink (`group.rs`, `claim.rs`); at its
//! start, what a crash left unclaimed is claimed first (`rejoin.rs`).

mod claim;
mod group;
mod refused;
mod rejoin;
mod replay;
mod reserve;
mod verdicts;
mod worker;

use crate::clock::{self, Clock, HostClock};
use crate::fleet::registry::Registry;
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use crate::store::buffer::Buffer;
use crate::store::fs::SharedFs;
use crate::store::quarantine::{self, Origin, Quarantine};
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use vigie_core::FastMap;
use vigie_core::judge::reason::Reason;
use vigie_core::judge::replay_book::ReplayBook;
use vigie_core::judge::validate::TimeRules;
use vigie_core::output::lineproto::StringFields;
use vigie_core::record::Record;

/// Most messages judged and committed together (a commit may take the rest of the last
/// hand-over, [`HANDOVER`] at most).
pub const MAX_BATCH: usize = 2048;
/// Most messages handed to the worker in one job: a job per message (the channel's send,
/// receive and permit) and an acknowledgement message per message back were 3.7 % of a
/// drain's instructions together (docs/PERFORMANCE.md).
pub const HANDOVER: usize = 64;
/// Jobs waiting in the worker's channel at most: 4,096 messages.
pub const JOB_QUEUE: usize = 4096 / HANDOVER;
/// How often a failing store is tried again when nothing else wakes the worker (space
/// freed by an operator has no event).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

pub use vigie_core::ack::flow::AckToken;

/// What the worker hands the MQTT task once a commit is durable.
#[derive(Debug)]
pub enum ToBroker {
    /// Acknowledge these messages to the broker, in this order (a commit's at once, not
    /// one message each: [`HANDOVER`]).
    Acks(Vec<AckToken>),
    /// Publish a device's acknowledgement, retained, on its ack topic.
    Downlink {
        /// `vigie/v1/<tenant>/<device>/ack`.
        topic: String,
        /// The sealed acknowledgement.
        payload: Vec<u8>,
    },
}

/// The channel to the MQTT task.
pub type BrokerTx = mpsc::UnboundedSender<ToBroker>;

/// A received message: its topic and payload, shared with the messages that arrived with
/// it ([`Inbound::together`]).
#[derive(Debug)]
pub struct Inbound {
    /// The topics of the messages that arrived with it; its own is `topic`.
    topics: Arc<str>,
    topic: Range<usize>,
    /// Its payload.
    payload: Bytes,
    /// Receive time, Unix ms.
    pub received_ms: u64,
    /// Ack to send once durable (`None` for QoS 0 or a quarantine replay).
    pub ack: Option<AckToken>,
    /// Re-submitted from the quarantine, where it was for this reason: held again, it
    /// goes back there (its device forgot it when an earlier version acknowledged it),
    /// and so does a reused counter now judged a duplicate (its tag no longer kept: the
    /// evidence stays).
    pub quarantined_as: Option<String>,
}

impl Inbound {
    /// A message on `topic` (not UTF-8: its invalid bytes replaced, so that it is
    /// refused as a bad topic like any other) carrying `payload`.
    pub fn new(topic: &[u8], payload: &[u8], received_ms: u64, ack: Option<AckToken>) -> Self {
        let mut one = Self::together([(topic, payload, ack)], received_ms);
        one.pop()
            .unwrap_or_else(|| unreachable!("one message in, one out"))
    }

    /// Messages that arrived together (topic, payload, broker acknowledgement), as
    /// [`Self::new`] makes them, but their topics copied into one string and their
    /// payloads into one buffer, each message holding a share of both: an allocation per
    /// message was a quarter of the hot path's allocations, and a topic kept as bytes was
    /// checked as UTF-8 again at each look, three times a message (docs/PERFORMANCE.md).
    /// They are freed with the last of them; messages are committed in order, so within
    /// two batches.
    pub fn together<'a, I>(arrived: I, received_ms: u64) -> Vec<Self>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8], Option<AckToken>)>,
        I::IntoIter: Clone,
    {
        let arrived = arrived.into_iter();
        let (topics, topic_ranges) = joined(arrived.clone().map(|m| m.0));
        let mut payloads = Vec::with_capacity(arrived.clone().map(|m| m.1.len()).sum());
        let mut ranges = Vec::with_capacity(topic_ranges.len());
        for ((_, p, _), topic) in arrived.clone().zip(topic_ranges) {
            let start = payloads.len();
            payloads.extend_from_slice(p);
            ranges.push((topic, start..payloads.len()));
        }
        let (topics, payloads) = (Arc::<str>::from(topics), Bytes::from(payloads));
        let share = |((topic, payload), ack)| Self {
            topics: topics.clone(),
            topic,
            payload: payloads.slice(payload),
            received_ms,
            ack,
            quarantined_as: None,
        };
        let acks = arrived.map(|m| m.2);
        ranges.into_iter().zip(acks).map(share).collect()
    }

    /// Its topic.
    pub fn topic(&self) -> &str {
        // Ranges of `topics` made in `together`: empty rather than a panic should that
        // ever change.
        self.topics.get(self.topic.clone()).unwrap_or_default()
    }

    /// Its payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// What it holds in memory, about (its topic and payload).
    pub fn bytes(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}

/// `topics` in one string, and where each is in it. Checked as UTF-8 all at once (each on
/// its own was 0.7 % of a drain's instructions); when one is not, each is checked and its
/// invalid bytes replaced, so that it is refused as a bad topic like any other.
fn joined<'a>(topics: impl Iterator<Item = &'a [u8]> + Clone) -> (String, Vec<Range<usize>>) {
    let mut ranges = Vec::with_capacity(topics.size_hint().0);
    let mut bytes = Vec::with_capacity(topics.clone().map(<[u8]>::len).sum());
    for t in topics.clone() {
        let start = bytes.len();
        bytes.extend_from_slice(t);
        ranges.push(start..bytes.len());
    }
    if let Ok(text) = String::from_utf8(bytes) {
        return (text, ranges);
    }
    let mut text = String::new();
    ranges.clear();
    for t in topics {
        let start = text.len();
        text.push_str(&String::from_utf8_lossy(t));
        ranges.push(start..text.len());
    }
    (text, ranges)
}

/// What a quarantine replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplaySummary {
    /// Entries re-submitted.
    pub replayed: usize,
    /// Accepted this time.
    pub accepted: usize,
    /// Already stored.
    pub duplicates: usize,
    /// Rejected again (back in quarantine).
    pub rejected: usize,
    /// Held: storable later, not now (a time outside the window); back in quarantine.
    pub held: usize,
    /// Lines a database had refused, queued for writing again.
    pub database_lines: usize,
}

/// Work for the ingest worker.
#[derive(Debug)]
pub enum Job {
    /// Messages to judge, in arrival order ([`HANDOVER`] at most).
    Messages(Vec<Inbound>),
    /// Re-submit every quarantined frame and refused line through the pipeline.
    ReplayQuarantine(oneshot::Sender<ReplaySummary>),
    /// Swap in a reloaded registry, and the age bound its databases' retention allows
    /// (when asked).
    Registry(Box<Registry>, Option<Duration>),
}

/// The quarantine of lines the databases refused: the sink adds, the worker replays.
pub type SharedQuarantine = Arc<Mutex<Quarantine>>;

/// The worker's state.
#[derive(Debug)]
pub struct Worker {
    registry: Registry,
    book: ReplayBook,
    buffer: Buffer,
    quarantine: Quarantine,
    db_quarantine: SharedQuarantine,
    snapshot_path: PathBuf,
    rules: TimeRules,
    strings: StringFields,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stopping: CancellationToken,
    reserve: reserve::Reserve,
    /// The last snapshot write failed (logged once until it works again).
    snapshot_failing: bool,
    /// Rate limit of the rejected-frame log lines.
    reject_log: LogBudget,
    /// Rate limit of the held-frame log lines.
    hold_log: LogBudget,
    /// Frames refused before their tag verified lately: resent, they are counted, not
    /// quarantined again.
    refused_lately: vigie_core::judge::recent::Recent,
    /// Whether the host clock is synchronised (a stale reading is refused only then).
    host_clock: HostClock,
    /// The service's clock.
    clock: Clock,
    /// Device state and live feed.
    traffic: crate::observe::Traffic,
    /// Each tenant's `readings_accepted` counter, found once (the family's lookup hashes
    /// an allocated label under a lock, per frame otherwise).
    tenant_readings: FastMap<String, Counter>,
    /// Line buffers of durable frames, for the next frames (no allocation per frame).
    spare: vigie_core::judge::spare::SpareLines,
    /// The group's shared store of device state; `None` for a gateway alone.
    group: Option<crate::store::group::Etcd>,
}

/// Log lines for rejected frames: at most [`LogBudget::LINES`] per [`LogBudget::WINDOW_MS`],
/// so a flood of forged frames cannot flood the journal; what is left out is counted and
/// said in one line when the window ends (every rejection is in the metrics and the
/// quarantine anyway). Pure: the time is passed in.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogBudget {
    window_start_ms: u64,
    logged: u32,
    left_out: u64,
}

impl LogBudget {
    /// Lines per window.
    pub const LINES: u32 = 20;
    /// The window.
    pub const WINDOW_MS: u64 = 60_000;

    /// At `now_ms`: whether this rejection gets its line, and how many were left out in the
    /// window that just ended (to say so), if one did.
    pub fn admit(&mut self, now_ms: u64) -> (bool, u64) {
        let mut ended = 0;
        if now_ms.saturating_sub(self.window_start_ms) >= Self::WINDOW_MS {
            ended = std::mem::take(&mut self.left_out);
            self.window_start_ms = now_ms;
            self.logged = 0;
        }
        if self.logged < Self::LINES {
            self.logged += 1;
            (true, ended)
        } else {
            self.left_out += 1;
            (false, ended)
        }
    }
}

/// Everything needed to open the worker.
#[derive(Debug)]
pub struct WorkerSetup {
    /// Filesystem under buffer and quarantine.
    pub fs: SharedFs,
    /// Device registry.
    pub registry: Registry,
    /// Buffer directory.
    pub buffer_dir: PathBuf,
    /// Segment size.
    pub segment_bytes: u64,
    /// Buffer limit.
    pub max_bytes: u64,
    /// Quarantine of rejected frames.
    pub quarantine: Quarantine,
    /// Quarantine of refused lines (shared with the sink).
    pub db_quarantine: SharedQuarantine,
    /// Replay-state snapshot file.
    pub snapshot_path: PathBuf,
    /// Time rules.
    pub rules: TimeRules,
    /// Where string values go in line protocol.
    pub strings: StringFields,
    /// How the host clock's synchronisation is known.
    pub host_clock: clock::SyncSource,
    /// The service's clock.
    pub clock: Clock,
    /// Device state and live feed, written as frames are judged.
    pub traffic: crate::observe::Traffic,
    /// The group's shared store of device state; `None` for a gateway alone.
    pub group: Option<crate::store::group::Etcd>,
}

/// Why the worker cannot open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The buffer (or a quarantine) cannot be opened.
    #[error(transparent)]
    Buffer(#[from] crate::store::buffer::BufferError),
    /// The group's store did not answer the start-up's reconciliation.
    #[error("the group's store: {0}")]
    Group(#[from] crate::store::group::GroupError),
    /// Emptying the buffer records another gateway's claim beat failed.
    #[error("rewriting the buffer after rejoining the group: {0}")]
    Rejoin(std::io::Error),
}

/// Locks a shared quarantine (a panic elsewhere leaves it usable: its state is on disk).
pub fn lock(q: &SharedQuarantine) -> std::sync::MutexGuard<'_, Quarantine> {
    q.lock().unwrap_or_else(|e| e.into_inner())
}

/// A quarantine entry for corrupt buffer bytes. Where the damage spared the record's
/// content (a flipped bit in its checksum or length), the entry holds its lines as a
/// database entry, which a replay writes; otherwise it keeps the raw bytes.
pub fn corrupt_entry(received_ms: u64, bytes: &[u8]) -> quarantine::Entry {
    let reason = Reason::BufferCorrupt;
    let detail = format!("{} bytes of the buffer are not a valid record", bytes.len());
    let record = bytes
        .get(crate::store::buffer::format::HEADER..)
        .and_then(|b| Record::decode(b).ok())
        .filter(|r| !r.lines.is_empty() && r.lines.ends_with('\n'));
    match record {
        Some(r) => quarantine::Entry {
            received_ms,
            origin: Origin::Database,
            topic: r.tenant.to_string(),
            reason: reason.code().into(),
            detail,
            payload: hex::encode(r.lines.as_bytes()),
            // Acknowledged readings: their only copy.
            acknowledged: true,
        },
        None => quarantine::Entry {
            received_ms,
            origin: Origin::Buffer,
            topic: String::new(),
            reason: reason.code().into(),
            detail,
            payload: hex::encode(bytes),
            acknowledged: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{AckToken, Inbound, LogBudget};

    #[test]
    fn a_message_keeps_its_topic_and_payload_apart() {
        let m = Inbound::new(b"vigie/v1/lyon/aq-1/up", &[0, 0xff, 7], 5, None);
        assert_eq!(
            (m.topic(), m.payload()),
            ("vigie/v1/lyon/aq-1/up", &[0, 0xff, 7][..])
        );
        assert_eq!(m.bytes(), 21 + 3);
        // A topic that is not UTF-8 keeps its shape with the bad bytes replaced, so it is
        // refused as a bad topic, never mistaken for another device's.
        let bad = Inbound::new(b"vigie/v1/ly\xffon/aq-1/up", b"", 5, None);
        assert_eq!(bad.topic(), "vigie/v1/ly\u{fffd}on/aq-1/up");
        assert!(bad.payload().is_empty());
    }

    #[test]
    fn messages_that_arrive_together_share_their_allocations_and_stay_apart() {
        let token = |pkid| {
            Some(AckToken {
                generation: 3,
                pkid,
            })
        };
        let arrived = [
            (&b"vigie/v1/lyon/aq-1/up"[..], &[1u8, 2][..], token(7)),
            (&b"vigie/v1/ly\xffon/aq-2/up"[..], &[][..], None),
            (&b"vigie/v1/lyon/aq-3/up"[..], &[3u8][..], token(8)),
        ];
        let m = Inbound::together(arrived, 5);
        let seen: Vec<_> = m.iter().map(|m| (m.topic(), m.payload(), m.ack)).collect();
        assert_eq!(
            seen,
            [
                ("vigie/v1/lyon/aq-1/up", &[1u8, 2][..], token(7)),
                ("vigie/v1/ly\u{fffd}on/aq-2/up", &[][..], None),
                ("vigie/v1/lyon/aq-3/up", &[3u8][..], token(8)),
            ]
        );
        // One after the other in the same allocations, each counting its own bytes.
        let end = |m: &Inbound| m.payload().as_ptr_range().end;
        assert_eq!(end(&m[0]), m[2].payload().as_ptr());
        assert_eq!(
            m[0].topic().as_bytes().as_ptr_range().end,
            m[1].topic().as_ptr()
        );
        let sizes: Vec<_> = m.iter().map(Inbound::bytes).collect();
        assert_eq!(sizes, [21 + 2, 24, 21 + 1]);
    }

    #[test]
    fn a_flood_of_rejections_gets_a_bounded_number_of_lines_then_one_summary() {
        let mut b = LogBudget::default();
        let start = LogBudget::WINDOW_MS;
        let logged = (0..1000).filter(|i| b.admit(start + i).0).count() as u32;
        assert_eq!(logged, LogBudget::LINES);
        // The next window: its first line comes with the count of what was left out.
        let next = start + LogBudget::WINDOW_MS;
        assert_eq!(b.admit(next), (true, u64::from(1000 - LogBudget::LINES)));
        assert_eq!(b.admit(next + 1), (true, 0));
    }
}
