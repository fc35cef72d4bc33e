//! Device acknowledgements (SPEC §12) on their way to the broker: waiting, bounded, then
//! published QoS 1 under a packet id until the broker's PUBACK. They go to one topic per
//! device, and each covers the counters of one commit; while the
//! broker takes them more slowly than the gateway commits (draining a backlog), they would
//! pile up without end (49,000 for 100 devices at a million-reading backlog, measured).
//! Past the bound, a device's older waiting acknowledgement gives way to its newer one: the
//! frames only the older one covered are resent by the device and acknowledged as
//! duplicates, so nothing is lost, and memory stays bounded by the bound or the number of
//! devices, whichever is larger (the queue's places, empty ones included: at most twice
//! that).
//!
//! In flight: at most the broker's Receive Maximum (and the limit given to
//! [`Downlinks::new`]) at once, under packet ids `1..=limit`; those still unanswered when
//! the connection drops go first on the next one.

use crate::FastMap;
use std::collections::VecDeque;

/// A device acknowledgement: its topic and sealed payload.
pub type Downlink = (String, Vec<u8>);

/// Empty places below this many are never worth a compaction (a few in unit tests, so
/// the property test below goes through compactions).
const MIN_COMPACT: usize = if cfg!(test) { 2 } else { 64 };

/// The acknowledgements waiting (oldest first) and in flight.
#[derive(Debug)]
pub struct Downlinks {
    /// Oldest first; `None` where one gave way to a newer one of its device.
    waiting: VecDeque<Option<Downlink>>,
    /// Sequence number of `waiting`'s front.
    front: u64,
    /// Each topic's waiting ones, by sequence number, oldest first (so that giving way
    /// costs a lookup, not a scan of thousands of topics per commit).
    by_topic: FastMap<String, VecDeque<u64>>,
    /// How many wait (not counting those that gave way).
    live: usize,
    bound: usize,
    /// Slot `i` holds the publish with packet id `i + 1`, numbered in sending order.
    in_flight: Vec<Option<(u64, Downlink)>>,
    flying: usize,
    sent: u64,
    /// In flight at most on this connection.
    limit: usize,
    /// Where the search for a free packet id starts.
    cursor: usize,
}

impl Downlinks {
    /// An empty queue that starts replacing older acknowledgements at `bound`, with at
    /// most `limit` in flight.
    pub fn new(bound: usize, limit: u16) -> Self {
        let limit = usize::from(limit.max(1));
        Self {
            waiting: VecDeque::new(),
            // Room below for those put back first after a reconnect.
            front: 1 << 40,
            by_topic: FastMap::default(),
            live: 0,
            bound,
            in_flight: vec![None; limit],
            flying: 0,
            sent: 0,
            limit,
            cursor: 0,
        }
    }

    /// Queues an acknowledgement for `topic`; true when it replaced an older one of the
    /// same device.
    pub fn push(&mut self, topic: String, payload: Vec<u8>) -> bool {
        let seq = self.front + self.waiting.len() as u64;
        let queued = self.by_topic.entry(topic.clone()).or_default();
        let older = if self.live >= self.bound {
            queued.pop_front()
        } else {
            None
        };
        queued.push_back(seq);
        if let Some(older) = older {
            self.waiting[(older - self.front) as usize] = None;
            self.live -= 1;
        }
        self.waiting.push_back(Some((topic, payload)));
        self.live += 1;
        if self.waiting.len() - self.live > self.live.max(MIN_COMPACT) {
            self.compact();
        }
        older.is_some()
    }

    /// Drops the places of acknowledgements that gave way. Without it the queue keeps one
    /// place per commit until the broker reaches it, and while a backlog drains that grows
    /// with the backlog (65,536 places, 3 MiB, at 2,000,000 readings, measured). Run when
    /// the empty places outnumber the waiting ones, so each push pays O(1) on average and
    /// the queue holds at most twice what waits.
    fn compact(&mut self) {
        self.waiting.retain(Option::is_some);
        for queued in self.by_topic.values_mut() {
            queued.clear();
        }
        for (i, d) in self.waiting.iter().enumerate() {
            if let Some((topic, _)) = d
                && let Some(queued) = self.by_topic.get_mut(topic)
            {
                queued.push_back(self.front + i as u64);
            }
        }
    }

    /// The oldest waiting one, out of the queue.
    fn pop(&mut self) -> Option<Downlink> {
        while let Some(front) = self.waiting.pop_front() {
            self.front += 1;
            let Some(d) = front else { continue };
            if let Some(queued) = self.by_topic.get_mut(&d.0) {
                queued.pop_front();
                if queued.is_empty() {
                    self.by_topic.remove(&d.0);
                }
            }
            self.live -= 1;
            return Some(d);
        }
        None
    }

    /// Puts `d` first in the queue.
    fn push_front(&mut self, d: Downlink) {
        self.front -= 1;
        self.by_topic
            .entry(d.0.clone())
            .or_default()
            .push_front(self.front);
        self.waiting.push_front(Some(d));
        self.live += 1;
    }

    /// The oldest waiting one and the packet id to publish it under, now in flight; `None`
    /// when none waits or the limit is reached.
    pub fn next_publish(&mut self) -> Option<(u16, &Downlink)> {
        if self.flying >= self.limit || self.live == 0 {
            return None;
        }
        let n = self.in_flight.len();
        let slot = (0..n)
            .map(|i| (self.cursor + i) % n)
            .find(|&i| self.in_flight[i].is_none())?;
        self.sent += 1;
        self.in_flight[slot] = self.pop().map(|d| (self.sent, d));
        self.flying += 1;
        self.cursor = (slot + 1) % n;
        let id = u16::try_from(slot + 1).unwrap_or(u16::MAX);
        self.in_flight[slot].as_ref().map(|(_, d)| (id, d))
    }

    /// The broker's PUBACK for `pkid`: true if it answered one of ours in flight.
    pub fn on_puback(&mut self, pkid: u16) -> bool {
        let slot = usize::from(pkid).checked_sub(1);
        match slot.and_then(|i| self.in_flight.get_mut(i)) {
            Some(d @ Some(_)) => {
                *d = None;
                self.flying -= 1;
                true
            }
            _ => false,
        }
    }

    /// A new connection, whose broker takes `broker_limit` publishes in flight: those left
    /// unanswered by the last one go first again, in the order they were sent (a device's
    /// newer acknowledgement stays the retained one).
    pub fn reconnected(&mut self, broker_limit: u16) {
        let mut unanswered: Vec<_> = self.in_flight.iter_mut().filter_map(Option::take).collect();
        unanswered.sort_unstable_by_key(|(sent, _)| *sent);
        for (_, d) in unanswered.into_iter().rev() {
            self.push_front(d);
        }
        self.flying = 0;
        self.cursor = 0;
        self.limit = usize::from(broker_limit).clamp(1, self.in_flight.len());
    }

    /// How many wait (those in flight not counted).
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when none waits.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(d: &mut Downlinks) -> Vec<(u16, u8)> {
        std::iter::from_fn(|| d.next_publish().map(|(id, x)| (id, x.1[0]))).collect()
    }

    #[test]
    fn past_the_bound_a_devices_newer_acknowledgement_replaces_its_older_one() {
        let mut d = Downlinks::new(3, 100);
        for (topic, n) in [("a", 1), ("b", 1), ("a", 2)] {
            assert!(
                !d.push(topic.into(), vec![n]),
                "under the bound all are kept"
            );
        }
        assert!(d.push("b".into(), vec![2]), "b's first gives way");
        assert!(
            !d.push("c".into(), vec![1]),
            "no older one of c: kept, over the bound"
        );
        assert!(d.push("a".into(), vec![3]), "a's oldest gives way");
        let order: Vec<_> =
            std::iter::from_fn(|| d.next_publish().map(|(_, x)| x.clone())).collect();
        assert_eq!(
            order,
            [
                ("a".to_string(), vec![2]),
                ("b".into(), vec![2]),
                ("c".into(), vec![1]),
                ("a".into(), vec![3])
            ]
        );
        assert!(d.is_empty());
    }

    #[test]
    fn the_places_of_those_that_gave_way_do_not_pile_up() {
        let mut d = Downlinks::new(4, 1);
        for n in 0..10_000u32 {
            d.push(format!("t{}", n % 3), n.to_be_bytes().to_vec());
            assert!(d.waiting.len() <= 2 * d.len().max(MIN_COMPACT) + 1);
        }
        assert_eq!(d.len(), 4);
        let first: Vec<_> =
            std::iter::from_fn(|| d.next_publish().map(|(id, x)| (id, x.1.clone())))
                .take(1)
                .collect();
        assert_eq!(
            first,
            [(1, 9_996u32.to_be_bytes().to_vec())],
            "oldest kept first"
        );
    }

    proptest::proptest! {
        /// Same acknowledgements, same order, same replacements as the plain queue that
        /// scans for a device's older one.
        #[test]
        fn giving_way_matches_a_plain_scan(
            ops in proptest::collection::vec((0u8..6, 0u8..4), 0..200),
            bound in 1usize..8,
        ) {
            let mut d = Downlinks::new(bound, 3);
            let mut model: VecDeque<Downlink> = VecDeque::new();
            for (i, (device, op)) in ops.into_iter().enumerate() {
                if op == 0 {
                    let got = d.next_publish().map(|(id, x)| (id, x.clone()));
                    if let Some((id, x)) = got {
                        proptest::prop_assert_eq!(Some(x), model.pop_front());
                        proptest::prop_assert!(d.on_puback(id));
                    } else {
                        proptest::prop_assert!(model.is_empty());
                    }
                } else {
                    let topic = format!("t{device}");
                    let replaced = model.len() >= bound
                        && match model.iter().position(|(t, _)| *t == topic) {
                            Some(i) => model.remove(i).is_some(),
                            None => false,
                        };
                    model.push_back((topic.clone(), vec![i as u8]));
                    proptest::prop_assert_eq!(d.push(topic, vec![i as u8]), replaced);
                }
                proptest::prop_assert_eq!(d.len(), model.len());
            }
        }
    }

    #[test]
    fn in_flight_up_to_the_limit_under_free_packet_ids_and_again_after_a_reconnect() {
        let mut d = Downlinks::new(100, 2);
        for n in 0..4 {
            d.push(format!("t{n}"), vec![n]);
        }
        assert_eq!(sent(&mut d), [(1, 0), (2, 1)], "two in flight at most");
        assert!(!d.on_puback(7), "not ours");
        assert!(d.on_puback(1));
        assert!(!d.on_puback(1), "answered once");
        assert_eq!(sent(&mut d), [(1, 2)]);
        // The connection drops with 1 (id 2) and 2 (id 1) unanswered: they go first again,
        // in the order they were sent, to a broker that takes one at a time.
        d.reconnected(1);
        assert_eq!(d.len(), 3);
        for want in [1, 2, 3] {
            let now = sent(&mut d);
            assert_eq!(now.iter().map(|x| x.1).collect::<Vec<_>>(), [want]);
            assert!(d.on_puback(now[0].0));
        }
        assert!(d.is_empty() && sent(&mut d).is_empty());
    }
}
