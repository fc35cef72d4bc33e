//! The live feed of frames and their verdicts, for the field check: `devices watch` and
//! the status page's device view show each frame of one device as it arrives (stored,
//! duplicate, or rejected and why), so a technician sees the first frame of a freshly
//! flashed board within seconds. The ingest worker appends; the HTTP server reads. It
//! keeps the last [`CAPACITY`] events in memory, whatever their device: bounded, and
//! never saved (the database and the quarantine are the record).

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Events kept.
pub const CAPACITY: usize = 4096;

/// What became of a frame, or a status message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Durable in the buffer (and acknowledged); on its way to the database.
    Stored,
    /// Already stored: a resend, acknowledged again.
    Duplicate,
    /// Refused, with `reason`.
    Rejected,
    /// Held, with `reason`: a time outside the window; not acknowledged, the device
    /// keeps it and resends it.
    Held,
    /// The device said it is online.
    Online,
    /// The device said it is offline.
    Offline,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Increasing number; a reader asks for events after the last it saw.
    pub seq: u64,
    /// When the gateway received it (Unix ms).
    pub at_ms: u64,
    /// Tenant named by the topic.
    pub tenant: String,
    /// Device named by the topic.
    pub device: String,
    /// What became of it.
    pub verdict: Verdict,
    /// The reason code of a rejection (SPEC's reason table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Frame counter of a stored frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter: Option<u32>,
    /// Readings in a stored frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readings: Option<u32>,
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<Event>,
    next: u64,
}

/// The shared feed.
#[derive(Debug, Default)]
pub struct Feed(Mutex<Ring>);

/// An event before it is numbered.
#[derive(Debug, Clone)]
pub struct New<'a> {
    /// Received (Unix ms).
    pub at_ms: u64,
    /// Tenant.
    pub tenant: &'a str,
    /// Device.
    pub device: &'a str,
    /// Verdict.
    pub verdict: Verdict,
    /// Rejection reason.
    pub reason: Option<&'static str>,
    /// Counter of a stored frame.
    pub counter: Option<u32>,
    /// Readings of a stored frame.
    pub readings: Option<u32>,
}

impl Feed {
    /// Appends an event, dropping the oldest beyond [`CAPACITY`].
    pub fn push(&self, e: New<'_>) {
        self.push_all([e]);
    }

    /// Appends events in order under one lock.
    pub fn push_all<'a>(&self, events: impl IntoIterator<Item = New<'a>>) {
        let mut ring = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for e in events {
            ring.next += 1;
            let seq = ring.next;
            // Once full, the oldest event's strings take the new names: no allocation
            // per frame.
            let oldest = if ring.events.len() == CAPACITY {
                ring.events.pop_front()
            } else {
                None
            };
            let (mut tenant, mut device) = oldest.map(|o| (o.tenant, o.device)).unwrap_or_default();
            tenant.clear();
            tenant.push_str(e.tenant);
            device.clear();
            device.push_str(e.device);
            ring.events.push_back(Event {
                seq,
                at_ms: e.at_ms,
                tenant,
                device,
                verdict: e.verdict,
                reason: e.reason,
                counter: e.counter,
                readings: e.readings,
            });
        }
    }

    /// The device's events after `after` (a `seq`), oldest first, at most `limit` of the
    /// newest.
    pub fn of(&self, tenant: &str, device: &str, after: u64, limit: usize) -> Vec<Event> {
        let ring = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Event> = ring
            .events
            .iter()
            .rev()
            .take_while(|e| e.seq > after)
            .filter(|e| e.tenant == tenant && e.device == device)
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// The number the next event will follow (for a reader that wants only new ones).
    pub fn last_seq(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(device: &str, verdict: Verdict) -> New<'_> {
        New {
            at_ms: 1,
            tenant: "lyon",
            device,
            verdict,
            reason: None,
            counter: None,
            readings: None,
        }
    }

    #[test]
    fn a_reader_gets_one_device_after_what_it_saw_and_the_ring_is_bounded() {
        let feed = Feed::default();
        feed.push(new("a", Verdict::Stored));
        feed.push(new("b", Verdict::Rejected));
        feed.push(new("a", Verdict::Duplicate));
        let a = feed.of("lyon", "a", 0, 10);
        assert_eq!(
            a.iter().map(|e| (e.seq, e.verdict)).collect::<Vec<_>>(),
            [(1, Verdict::Stored), (3, Verdict::Duplicate)]
        );
        assert_eq!(feed.of("lyon", "a", 1, 10).len(), 1);
        assert_eq!(
            feed.of("lyon", "a", 0, 1)[0].seq,
            3,
            "the newest within the limit"
        );
        assert_eq!(feed.last_seq(), 3);
        for _ in 0..CAPACITY {
            feed.push(new("b", Verdict::Stored));
        }
        assert!(feed.of("lyon", "a", 0, 10).is_empty());
        assert_eq!(feed.of("lyon", "b", 0, usize::MAX).len(), CAPACITY);
    }
}
