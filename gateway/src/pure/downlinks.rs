//! Device acknowledgements (SPEC §12) waiting for room in the broker client's request
//! queue, bounded. They are published retained, one topic per device, and each covers the
//! counters of one commit; while the broker takes them more slowly than the gateway
//! commits (draining a backlog), they would pile up without end (49,000 for 100 devices
//! at a million-reading backlog, measured). Past the bound, a device's older waiting
//! acknowledgement gives way to its newer one: the frames only the older one covered are
//! resent by the device and acknowledged as duplicates, so nothing is lost, and memory
//! stays bounded by the bound or the number of devices, whichever is larger.

use std::collections::VecDeque;

/// The waiting acknowledgements, oldest first.
#[derive(Debug)]
pub struct Downlinks {
    waiting: VecDeque<(String, Vec<u8>)>,
    bound: usize,
}

impl Downlinks {
    /// An empty queue that starts replacing older acknowledgements at `bound`.
    pub fn new(bound: usize) -> Self {
        Self {
            waiting: VecDeque::new(),
            bound,
        }
    }

    /// Queues an acknowledgement for `topic`; true when it replaced an older one of the
    /// same device.
    pub fn push(&mut self, topic: String, payload: Vec<u8>) -> bool {
        let replaced = self.waiting.len() >= self.bound
            && match self.waiting.iter().position(|(t, _)| *t == topic) {
                Some(i) => self.waiting.remove(i).is_some(),
                None => false,
            };
        self.waiting.push_back((topic, payload));
        replaced
    }

    /// The oldest one, to publish.
    pub fn pop(&mut self) -> Option<(String, Vec<u8>)> {
        self.waiting.pop_front()
    }

    /// Puts back the one [`Self::pop`] gave when it could not be published.
    pub fn unpop(&mut self, downlink: (String, Vec<u8>)) {
        self.waiting.push_front(downlink);
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// True when none waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_bound_a_devices_newer_acknowledgement_replaces_its_older_one() {
        let mut d = Downlinks::new(3);
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
        let order: Vec<_> = std::iter::from_fn(|| d.pop()).collect();
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
        d.push("x".into(), vec![9]);
        let first = d.pop().unwrap();
        d.unpop(first.clone());
        assert_eq!((d.len(), d.pop()), (1, Some(first)));
    }
}
