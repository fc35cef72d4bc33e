//! Which frames a durable commit settled, and the acknowledgement each device gets for
//! them (SPEC §12). Pure: the caller seals and publishes.
//!
//! A frame is settled when it is stored, was already held (a duplicate), or got a final
//! verdict after its tag verified. Per device and commit one acknowledgement: its base is
//! the lowest counter settled in the commit, its bitmap every counter from there that the
//! commit settled or the replay book holds.

use crate::FastMap;
use crate::fleet::Registry;
use crate::judge::batch::{Outcome, Plan};
use crate::judge::replay_book::ReplayBook;
use protocol::{Ack, Topic};

/// The frames a commit settled, by device (tenant, device) → counters. Borrows the names
/// from the batch (no allocation per frame); hashed per frame, sorted once per commit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settled<'a> {
    by_device: FastMap<(&'a str, &'a str), Vec<u32>>,
}

impl<'a> Settled<'a> {
    /// Notes the message `index` of a judged batch, if its outcome settles an
    /// authenticated frame.
    pub fn note(&mut self, plan: &'a Plan, index: usize, topic: &'a str, payload: &[u8]) {
        let counter = match &plan.outcomes[index] {
            Outcome::Store(i) => {
                let r = &plan.accepted[*i].record;
                self.add(&r.tenant, &r.device, r.counter);
                return;
            }
            Outcome::Duplicate => protocol::peek(payload).ok().map(|h| h.counter),
            Outcome::Reject(reason) if reason.after_authentication() => {
                protocol::peek(payload).ok().map(|h| h.counter)
            }
            // Held: storable later; the device must keep it (SPEC §12).
            Outcome::Reject(_) | Outcome::Hold(_) | Outcome::Status { .. } => None,
        };
        if let (Some(counter), Ok(t)) = (counter, Topic::parse(topic)) {
            self.add(t.who.tenant.as_str(), t.who.device.as_str(), counter);
        }
    }

    fn add(&mut self, tenant: &'a str, device: &'a str, counter: u32) {
        self.by_device
            .entry((tenant, device))
            .or_default()
            .push(counter);
    }

    /// Devices with settled frames.
    pub fn len(&self) -> usize {
        self.by_device.len()
    }

    /// True when nothing was settled.
    pub fn is_empty(&self) -> bool {
        self.by_device.is_empty()
    }

    /// One acknowledgement per device, once the commit is durable and `book` updated.
    /// Devices no longer in the registry (or revoked) get none.
    pub fn acks(&self, book: &ReplayBook, registry: &Registry) -> Vec<(String, String, Ack)> {
        let mut out = Vec::with_capacity(self.by_device.len());
        let mut devices: Vec<_> = self.by_device.iter().collect();
        devices.sort_unstable_by_key(|(names, _)| **names);
        for (&(tenant, device), counters) in devices {
            let Some(dev) = registry.get(tenant, device).filter(|d| !d.entry.revoked) else {
                continue;
            };
            let Some(&base) = counters.iter().min() else {
                continue;
            };
            let mut ack = Ack { base, settled: 0 };
            for &c in counters {
                ack.set(c);
            }
            let holds = book.holds(tenant, device, dev.key.epoch());
            for c in base..=base.saturating_add(protocol::ack::ACK_SPAN - 1) {
                if holds(c) {
                    ack.set(c);
                }
            }
            out.push((tenant.to_string(), device.to_string(), ack));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, NOW, RULES};
    use crate::judge::batch;
    use crate::judge::verify::Context;
    use crate::output::lineproto::StringFields;
    use protocol::{AirQuality, Field, Identity, MAX_FRAME_LEN, Reading, Values};

    fn registry() -> Registry {
        fixtures::registry(&["a"])
    }

    fn frame(counter: u32, time: u32) -> (String, Vec<u8>) {
        let key = fixtures::key("a");
        let reading = Reading {
            time,
            values: Values::AirQuality(AirQuality {
                pm25: Field::Value(100),
                ..AirQuality::default()
            }),
        };
        let mut buf = [0u8; MAX_FRAME_LEN];
        let who = Identity::new("lyon", "a").unwrap();
        let f = protocol::seal(&mut buf, &[reading], counter, &key, who).unwrap();
        ("vigie/v1/lyon/a/up".into(), f.to_vec())
    }

    /// Judges and "commits" `messages` like the worker; returns the acks it would send.
    fn commit(book: &mut ReplayBook, messages: &[(String, Vec<u8>)]) -> Vec<Ack> {
        let registry = registry();
        let cx = Context {
            registry: &registry,
            counters: &*book,
            rules: &RULES,
            strings: StringFields::Fields,
            now_s: NOW,
            clock_synced: true,
        };
        let plan = batch::judge(
            messages.iter().map(|(t, p)| (t.as_str(), p.as_slice())),
            &cx,
        );
        let mut settled = Settled::default();
        for (i, (t, p)) in messages.iter().enumerate() {
            settled.note(&plan, i, t, p);
        }
        batch::apply(book, &plan.accepted);
        settled
            .acks(book, &registry)
            .into_iter()
            .map(|(_, _, a)| a)
            .collect()
    }

    #[test]
    fn stored_duplicate_and_final_rejections_are_settled_forgeries_are_not() {
        let mut book = ReplayBook::default();
        let t = NOW as u32 - 100;
        let acks = commit(&mut book, &[frame(10, t), frame(12, t + 1)]);
        assert_eq!(acks.len(), 1);
        assert!(acks[0].covers(10) && acks[0].covers(12) && !acks[0].covers(11));
        // Next commit: a redelivery of 12, a fresh 11, a stale 13 (final: the clock is
        // synchronised), a forged 14, a future 15 (held: the device must keep it).
        let mut forged = frame(14, t + 3);
        let last = forged.1.len() - 1;
        forged.1[last] ^= 1;
        let future = frame(15, NOW as u32 + 3_600);
        let acks = commit(
            &mut book,
            &[
                frame(12, t + 1),
                frame(11, t + 2),
                frame(13, 1_000),
                forged,
                future,
            ],
        );
        assert_eq!(acks.len(), 1);
        let a = acks[0];
        assert_eq!(a.base, 11);
        for c in [10, 14, 15] {
            assert!(!a.covers(c), "{c}");
        }
        for c in [11, 12, 13] {
            assert!(a.covers(c), "{c}");
        }
        // Only forgeries: nothing to say.
        let mut only = frame(20, t);
        only.1[5] ^= 1;
        assert!(commit(&mut book, &[only]).is_empty());
    }
}
