//! A group member's start (docs/OPERATIONS.md "Scaling out"): a crash between writing a
//! commit's records and claiming them in the group's store leaves records in the buffer
//! that the store does not know. Before the sink may read anything, the buffer's last
//! records (a commit is at most [`MAX_BATCH`] of them) are claimed: a counter the store
//! does not hold is added to it (the record is durable here); one it holds with the same
//! tag was claimed already; one it holds with another tag was claimed by another gateway
//! for another frame while this one was down, so this record is emptied of its readings
//! (its frame was never acknowledged: its device resends it and every gateway refuses it
//! as a reused counter).

use super::claim::Keys;
use super::{MAX_BATCH, OpenError};
use crate::store::buffer;
use crate::store::group::{Etcd, GroupError};
use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};
use vigie_core::judge::replay_book::{Counters, ReplayBook, Seen};
use vigie_core::record::Record;

/// How long a start waits for the group's store before giving up (the service manager
/// starts the gateway again).
const PATIENCE: Duration = Duration::from_secs(30);
/// Claims tried again when other gateways keep committing the same devices.
const TRIES: usize = 20;

/// The buffer's last records of devices, oldest first, as recovery finds them.
#[derive(Debug, Default)]
pub(super) struct Tail(VecDeque<Record>);

impl Tail {
    /// Notes a recovered record, forgetting the oldest beyond [`MAX_BATCH`].
    pub(super) fn note(&mut self, record: &Record) {
        if record.device.is_empty() || record.readings == 0 {
            return;
        }
        if self.0.len() == MAX_BATCH {
            self.0.pop_front();
        }
        self.0.push_back(record.clone());
    }
}

/// A record's identity: tenant, device, key epoch, counter, tag.
type Frame = (String, String, u32, u32, Option<[u8; 8]>);

/// What claiming the tail did.
#[derive(Debug, Default)]
struct Claimed {
    /// Records the store did not hold, now claimed.
    fresh: usize,
    /// Frames another gateway's claim beat.
    beaten: Vec<Frame>,
}

/// Claims the tail in the store, then empties the records another gateway's claim beat
/// (`buffer_dir` rewritten; the caller opens the buffer again). Returns how many were
/// emptied.
pub(super) fn rejoin(store: &mut Etcd, tail: &Tail, buffer_dir: &Path) -> Result<u64, OpenError> {
    let Claimed { fresh, beaten } = claim_all(store, tail)?;
    if fresh > 0 {
        tracing::info!(
            records = fresh,
            "buffer records a crash had left unclaimed in the group's store: claimed"
        );
    }
    if beaten.is_empty() {
        return Ok(0);
    }
    let emptied = empty(buffer_dir, &beaten).map_err(OpenError::Rejoin)?;
    tracing::warn!(
        records = emptied,
        "buffer records written before a crash were claimed meanwhile by another gateway for other frames under the same counters: emptied (never acknowledged; their devices' resends are refused as reused counters)"
    );
    Ok(emptied)
}

/// Claims every device's records of the tail, a run of devices at a time; the frames
/// another gateway's claim beat. Gives up after [`PATIENCE`] without an answer.
fn claim_all(store: &mut Etcd, tail: &Tail) -> Result<Claimed, GroupError> {
    let records: Vec<&Record> = tail.0.iter().collect();
    let mut all = Claimed::default();
    for (chunk, keys) in chunks(&records, store.max_ops()) {
        let until = Instant::now() + PATIENCE;
        let mut tries = 0;
        loop {
            match claim(store, &chunk, &keys) {
                Ok(Some(c)) => {
                    all.fresh += c.fresh;
                    all.beaten.extend(c.beaten);
                    break;
                }
                Ok(None) if tries < TRIES => tries += 1,
                Ok(None) => return Err(GroupError::Unreadable("the store's keys keep moving")),
                Err(e) if Instant::now() < until => {
                    tracing::warn!(error = %e, "the group's store does not answer; start-up waits for it");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(all)
}

/// Empties the `beaten` records of the buffer, and resets the sink's progress (offsets
/// moved: it starts again from the oldest record, at least once).
fn empty(buffer_dir: &Path, beaten: &[Frame]) -> std::io::Result<u64> {
    let emptied = buffer::rewrite_offline(buffer_dir, true, |payload| {
        let r = Record::decode(payload).ok()?;
        let frame = (
            r.tenant.to_string(),
            r.device.to_string(),
            r.epoch,
            r.counter,
            r.tag,
        );
        if r.readings == 0 || !beaten.contains(&frame) {
            return None;
        }
        let mut out = Vec::new();
        Record {
            readings: 0,
            lines: String::new(),
            ..r
        }
        .encode(&mut out);
        Some(out)
    })?;
    if let Some(data) = buffer_dir.parent() {
        match std::fs::remove_file(data.join("sink.state")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(emptied)
}

/// One claim of `records`: `None` when a head moved since it was read (try again).
fn claim(
    store: &mut Etcd,
    records: &[&Record],
    keys: &Keys,
) -> Result<Option<Claimed>, GroupError> {
    let mut book = ReplayBook::default();
    let revisions = keys.load(store, &mut book)?;
    let (mut beaten, mut fresh) = (Vec::new(), Vec::new());
    for &r in records {
        let tag = r.tag.unwrap_or_default();
        match book.seen(&r.tenant, &r.device, r.epoch, r.counter, &tag) {
            Seen::Fresh => {
                book.accept(r);
                fresh.push(r);
            }
            Seen::Reused => {
                let (tenant, device) = (r.tenant.to_string(), r.device.to_string());
                beaten.push((tenant, device, r.epoch, r.counter, r.tag));
            }
            Seen::Duplicate | Seen::TooOld => {}
        }
    }
    let claimed = Claimed {
        fresh: fresh.len(),
        beaten,
    };
    let (compare, puts) = keys.claim(store, &revisions, &book, fresh.into_iter());
    Ok(store.commit(&compare, &puts)?.then_some(claimed))
}

/// The records in runs one transaction can claim, with their keys.
fn chunks<'a>(records: &[&'a Record], max: usize) -> Vec<(Vec<&'a Record>, Keys)> {
    let mut out: Vec<(Vec<&Record>, Keys)> = vec![(Vec::new(), Keys::new(max))];
    for &r in records {
        let last = out.len() - 1;
        if !out[last]
            .1
            .admit(&r.tenant, &r.device, r.epoch, Some(r.counter))
        {
            let mut keys = Keys::new(max);
            keys.admit(&r.tenant, &r.device, r.epoch, Some(r.counter));
            out.push((Vec::new(), keys));
        }
        if let Some((chunk, _)) = out.last_mut() {
            chunk.push(r);
        }
    }
    out
}
