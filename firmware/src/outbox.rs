//! Readings waiting in RAM, oldest first, to be sealed into a frame: normally for an
//! instant (the node seals each reading into the flash ring when it is recorded), longer
//! only while the counter or the ring cannot be written. When the queue is full the oldest
//! reading is dropped and counted, and the count goes out in the next status report, so a
//! loss is reported rather than silent.

use heapless::Deque;
use protocol::{FrameWriter, Reading};

/// The queue, holding up to `N` readings.
#[derive(Debug)]
pub struct Outbox<const N: usize> {
    queue: Deque<Reading, N>,
    dropped: u32,
}

impl<const N: usize> Default for Outbox<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Outbox<N> {
    /// An empty queue.
    pub const fn new() -> Self {
        Self {
            queue: Deque::new(),
            dropped: 0,
        }
    }

    /// Queues a reading; when full, drops the oldest first and counts it.
    pub fn push(&mut self, reading: Reading) {
        if self.queue.is_full() {
            self.queue.pop_front();
            self.dropped = self.dropped.saturating_add(1);
        }
        // Cannot fail: there is room now.
        let _ = self.queue.push_back(reading);
    }

    /// Readings dropped since boot (reported as `droppedReadings` in status frames).
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// Readings waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Fills a frame in `buf` with the oldest readings: those of the oldest reading's kind,
    /// in order, as many as fit. The readings stay queued until [`Self::confirm`], which the
    /// node calls once the frame is sealed and kept. Returns the unsealed frame and its
    /// reading count, or `None` when the queue is empty.
    pub fn next_frame<'b>(&self, buf: &'b mut [u8]) -> Option<(FrameWriter<'b>, usize)> {
        let kind = self.queue.front()?.values.kind();
        let mut frame = FrameWriter::new(buf);
        for r in self.queue.iter().take_while(|r| r.values.kind() == kind) {
            // Full, too many, or a time that does not increase: the frame ends here.
            if frame.push(r).is_err() {
                break;
            }
        }
        let n = frame.count();
        (n > 0).then_some((frame, n))
    }

    /// The first `n` readings are taken care of (sealed into a frame now in the flash
    /// ring): forget them.
    pub fn confirm(&mut self, n: usize) {
        for _ in 0..n {
            self.queue.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{
        AirQuality, DeviceKey, DeviceStatus, Field, Identity, Kind, MAX_FRAME_LEN, Values,
    };

    fn aq(time: u32) -> Reading {
        let a = AirQuality {
            pm25: Field::Value(time as u16 % 1000),
            ..AirQuality::default()
        };
        Reading {
            time,
            values: Values::AirQuality(a),
        }
    }

    fn status(time: u32, dropped: u32) -> Reading {
        let s = DeviceStatus {
            dropped: Field::Value(dropped),
            ..DeviceStatus::default()
        };
        Reading {
            time,
            values: Values::DeviceStatus(s),
        }
    }

    /// Seals and opens the next frame as the gateway would; returns its readings.
    fn send<const N: usize>(
        o: &Outbox<N>,
        counter: u32,
    ) -> Option<(heapless::Vec<Reading, 64>, usize)> {
        let key = DeviceKey::new([1; 16], 1);
        let who = Identity::new("lyon", "aq-1").ok()?;
        let mut buf = [0u8; MAX_FRAME_LEN];
        let (frame, n) = o.next_frame(&mut buf)?;
        let sealed = frame.seal(counter, &key, who).ok()?;
        let opened = protocol::open(sealed, &key, who).ok()?;
        Some((opened.readings, n))
    }

    #[test]
    fn frames_follow_kind_runs_and_nothing_leaves_before_confirm() {
        let mut o: Outbox<32> = Outbox::new();
        for t in 0..10 {
            o.push(aq(1000 + t));
        }
        o.push(status(1010, 0));
        for t in 11..16 {
            o.push(aq(1000 + t));
        }
        let (first, n) = send(&o, 1).unwrap_or_default();
        assert_eq!(n, 10);
        assert!(first.iter().all(|r| r.values.kind() == Kind::AirQuality));
        // Not confirmed: the same readings make the next frame again.
        assert_eq!(send(&o, 2).map(|(_, n)| n), Some(10));
        o.confirm(n);
        assert_eq!(
            send(&o, 3).map(|(r, n)| (r[0].values.kind(), n)),
            Some((Kind::DeviceStatus, 1))
        );
        o.confirm(1);
        let (last, n) = send(&o, 4).unwrap_or_default();
        assert_eq!((n, last[4].time), (5, 1015));
        o.confirm(n);
        assert!(o.is_empty() && send(&o, 5).is_none());
    }

    #[test]
    fn an_outage_longer_than_the_queue_drops_oldest_and_counts() {
        let mut o: Outbox<8> = Outbox::new();
        for t in 0..20 {
            o.push(aq(2000 + t));
        }
        assert_eq!((o.len(), o.dropped()), (8, 12));
        let (readings, _) = send(&o, 1).unwrap_or_default();
        assert_eq!(
            readings[0].time, 2012,
            "the newest readings are kept, with their own times"
        );
    }

    #[test]
    fn a_small_buffer_splits_a_backlog_into_several_frames() {
        let mut o: Outbox<64> = Outbox::new();
        for t in 0..64 {
            o.push(aq(3000 + 60 * t));
        }
        let mut sent = 0;
        let mut buf = [0u8; 51]; // LoRaWAN DR0-sized frames
        while let Some((frame, n)) = o.next_frame(&mut buf) {
            assert!(frame.sealed_len() <= 51);
            o.confirm(n);
            sent += n;
        }
        assert_eq!(sent, 64);
    }
}
