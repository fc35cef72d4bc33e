//! A group member's start (docs/OPERATIONS.md "Scaling out"): a crash between writing a
//! commit's records and claiming them in the group's store leaves records in the buffer
//! that the store does not know. Before the sink may read anything, the buffer's last
//! records (a commit is at most [`MAX_BATCH`] of them) are claimed: a counter the store
//! does not hold is added to it (the record is durable here); one it holds with the same
//! tag was claimed already; one it holds with another tag was claimed by another gateway
//! for another frame while this one was down, so this record is emptied of its readings
//! (its frame was never acknowledged: its device resends it and every gateway refuses it
//! as a reused counter).

use super::{MAX_BATCH, OpenError};
use crate::store::buffer;
use crate::store::group::{Etcd, GroupError, MAX_DEVICES, Write};
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

/// Claims the tail in the store, then empties the records another gateway's claim beat
/// (`buffer_dir` rewritten; the caller opens the buffer again). Returns how many were
/// emptied.
pub(super) fn rejoin(store: &mut Etcd, tail: &Tail, buffer_dir: &Path) -> Result<u64, OpenError> {
    let beaten = claim_all(store, tail)?;
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
fn claim_all(store: &mut Etcd, tail: &Tail) -> Result<Vec<Frame>, GroupError> {
    let records: Vec<&Record> = tail.0.iter().collect();
    let mut beaten = Vec::new();
    for chunk in device_chunks(&records) {
        let until = Instant::now() + PATIENCE;
        let mut tries = 0;
        loop {
            match claim(store, &chunk) {
                Ok(Some(lost)) => {
                    beaten.extend(lost);
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
    Ok(beaten)
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

/// One claim of `records`: `Some` with the frames another gateway's claim beat, `None`
/// when a key moved since it was read (try again).
fn claim(store: &mut Etcd, records: &[&Record]) -> Result<Option<Vec<Frame>>, GroupError> {
    let devices = distinct(records);
    let pairs: Vec<(&str, &str)> = devices.iter().map(|(t, d)| (&**t, &**d)).collect();
    let held = store.fetch(&pairs)?;
    let mut book = ReplayBook::default();
    for ((tenant, device), h) in pairs.iter().zip(&held) {
        book.set_device_state(tenant, device, h.state.as_deref())
            .map_err(|_| GroupError::Unreadable("a device's state is corrupt"))?;
    }
    let (mut beaten, mut changed) = (Vec::new(), Vec::new());
    for r in records {
        let tag = r.tag.unwrap_or_default();
        match book.seen(&r.tenant, &r.device, r.epoch, r.counter, &tag) {
            Seen::Fresh => {
                book.accept(r);
                changed.push((&*r.tenant, &*r.device));
            }
            Seen::Reused => {
                let (tenant, device) = (r.tenant.to_string(), r.device.to_string());
                beaten.push((tenant, device, r.epoch, r.counter, r.tag));
            }
            Seen::Duplicate | Seen::TooOld => {}
        }
    }
    let writes: Vec<Write<'_>> = pairs
        .iter()
        .zip(&held)
        .filter(|(who, _)| changed.contains(who))
        .filter_map(|(&(tenant, device), h)| {
            Some(Write {
                tenant,
                device,
                revision: h.revision,
                state: book.device_state(tenant, device)?,
            })
        })
        .collect();
    Ok(store.commit(&writes)?.then_some(beaten))
}

/// The records in runs of at most [`MAX_DEVICES`] devices.
fn device_chunks<'a>(records: &[&'a Record]) -> Vec<Vec<&'a Record>> {
    let mut chunks: Vec<Vec<&Record>> = Vec::new();
    let mut devices: Vec<(&str, &str)> = Vec::new();
    for r in records {
        let who = (&*r.tenant, &*r.device);
        if !devices.contains(&who) {
            if devices.len() == MAX_DEVICES {
                devices.clear();
            }
            if devices.is_empty() {
                chunks.push(Vec::new());
            }
            devices.push(who);
        }
        if let Some(last) = chunks.last_mut() {
            last.push(r);
        }
    }
    chunks
}

/// The distinct devices of `records`, in order.
fn distinct(records: &[&Record]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in records {
        if !out
            .iter()
            .any(|(t, d)| **t == *r.tenant && **d == *r.device)
        {
            out.push((r.tenant.to_string(), r.device.to_string()));
        }
    }
    out
}
