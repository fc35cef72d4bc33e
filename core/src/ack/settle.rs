//! Which frames a durable commit settled, and the downlink each device gets for them
//! (SPEC §12). Pure: the caller seals and publishes.
//!
//! A frame is settled when it is stored, was already held (a duplicate), or got a final
//! verdict after its tag verified. Per device and commit one downlink: its base is the
//! lowest counter the commit judged after the tag, its bitmap every counter from there
//! that the commit settled; never a counter only the replay book holds, which may be
//! another frame's (a board whose counter went back holds different frames under the
//! same counters: told "held" for them, it would forget them unstored). When the commit
//! refused any of the device's frames it is a verdict downlink (§12.1), which also names
//! those refused for good and those to re-seal, with the counter to resume from.

use crate::FastMap;
use crate::device_map::DeviceRef;
use crate::fleet::Registry;
use crate::judge::batch::{Outcome, Plan};
use crate::judge::reason::Reason;
use crate::judge::replay_book::ReplayBook;
use protocol::{Downlink, Topic, Verdicts};

/// What the device is told of one of its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Stored, or already held: forget it.
    Held,
    /// Refused for good (quarantined): forget it.
    Refused,
    /// Its counter was used before: re-seal it under a fresh counter.
    Reseal,
}

/// The frames a commit settled, by device (tenant, device) → counters. Borrows the names
/// from the batch (no allocation per frame); hashed per frame, sorted once per commit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settled<'a> {
    by_device: FastMap<DeviceRef<'a>, Vec<(u32, Fate)>>,
}

impl<'a> Settled<'a> {
    /// Notes the message `index` of a judged batch, if its outcome settles an
    /// authenticated frame.
    pub fn note(&mut self, plan: &'a Plan, index: usize, topic: &'a str, payload: &[u8]) {
        let fate = match &plan.outcomes[index] {
            Outcome::Store(i) => {
                let r = &plan.accepted[*i].record;
                self.add(&r.tenant, &r.device, r.counter, Fate::Held);
                return;
            }
            Outcome::Duplicate => Fate::Held,
            Outcome::Reject(Reason::CounterReused) => Fate::Reseal,
            Outcome::Reject(reason) if reason.settles() => Fate::Refused,
            // Held: storable later; the device must keep it (SPEC §12).
            Outcome::Reject(_) | Outcome::Hold(_) | Outcome::Status { .. } => return,
        };
        if let (Ok(h), Ok(t)) = (protocol::peek(payload), Topic::parse(topic)) {
            let (tenant, device) = (t.who.tenant.as_str(), t.who.device.as_str());
            self.add(tenant, device, h.counter, fate);
        }
    }

    fn add(&mut self, tenant: &'a str, device: &'a str, counter: u32, fate: Fate) {
        // Room for a few dozen frames at once: growing from none was 0.6 % of a drain's
        // instructions, growing past 8 another 0.5 %.
        self.by_device
            .entry(DeviceRef::new(tenant, device))
            .or_insert_with(|| Vec::with_capacity(32))
            .push((counter, fate));
    }

    /// Devices with settled frames.
    pub fn len(&self) -> usize {
        self.by_device.len()
    }

    /// True when nothing was settled.
    pub fn is_empty(&self) -> bool {
        self.by_device.is_empty()
    }

    /// One downlink per device, once the commit is durable and `book` updated. Devices
    /// no longer in the registry (or revoked) get none.
    pub fn acks(&self, book: &ReplayBook, registry: &Registry) -> Vec<(String, String, Downlink)> {
        let mut out = Vec::with_capacity(self.by_device.len());
        let mut devices: Vec<_> = self.by_device.iter().collect();
        devices.sort_unstable_by_key(|(names, _)| **names);
        for (&DeviceRef { tenant, device }, frames) in devices {
            let Some(dev) = registry.get(tenant, device).filter(|d| !d.entry.revoked) else {
                continue;
            };
            let Some(base) = frames.iter().map(|(c, _)| *c).min() else {
                continue;
            };
            let mut v = Verdicts {
                base,
                ..Verdicts::default()
            };
            for &(c, fate) in frames {
                match fate {
                    Fate::Held => v.settle(c, false),
                    Fate::Refused => v.settle(c, true),
                    Fate::Reseal => continue,
                };
            }
            // Last, so that it wins: a redelivery in the same batch of the frame stored
            // under that counter is not the device's own.
            let reseal = frames.iter().filter(|(_, f)| *f == Fate::Reseal);
            for &(c, _) in reseal.clone() {
                v.reseal(c);
            }
            let downlink = if v.refused == 0 {
                Downlink::Ack(v.ack())
            } else {
                if let Some(top) = reseal.map(|(c, _)| *c).max() {
                    let highest = book.highest(tenant, device, dev.key.epoch()).unwrap_or(0);
                    v.resume = top.max(highest).saturating_add(1);
                }
                Downlink::Verdicts(v)
            };
            out.push((tenant.to_string(), device.to_string(), downlink));
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
    use protocol::{Ack, AirQuality, Field, Identity, MAX_FRAME_LEN, Reading, Values};

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

    /// Judges and "commits" `messages` like the worker; returns the downlinks it would send.
    fn downlinks(book: &mut ReplayBook, messages: &[(String, Vec<u8>)]) -> Vec<Downlink> {
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

    /// The acknowledgement part of each downlink.
    fn commit(book: &mut ReplayBook, messages: &[(String, Vec<u8>)]) -> Vec<Ack> {
        let acks = downlinks(book, messages).into_iter().map(|d| match d {
            Downlink::Ack(a) => a,
            Downlink::Verdicts(v) => v.ack(),
        });
        acks.collect()
    }

    #[test]
    fn a_counter_gone_back_is_to_be_resealed_above_the_highest_never_settled() {
        let mut book = ReplayBook::default();
        let t = NOW as u32 - 1_000;
        let first: Vec<_> = (0..40).map(|c| frame(c, t + c)).collect();
        assert!(matches!(
            downlinks(&mut book, &first)[..],
            [Downlink::Ack(_)]
        ));
        // The board erased: counters 0.. again with new readings, the old board's frame 5
        // redelivered in the same batch, and a fresh stale one (refused for good).
        let again = [
            frame(0, t + 100),
            frame(41, 1_000),
            frame(5, t + 5),
            frame(2, t + 102),
        ];
        let d = downlinks(&mut book, &again);
        let [Downlink::Verdicts(v)] = d[..] else {
            panic!("{d:?}");
        };
        assert_eq!((v.base, v.resume), (0, 40));
        assert!(v.to_reseal().covers(0) && v.to_reseal().covers(2));
        assert!(
            !v.ack().covers(0) && !v.ack().covers(2),
            "never forgotten unstored"
        );
        assert!(v.refused_for_good().covers(41), "stale: refused for good");
        // Counter 5: the old board's frame redelivered, held. Counter 3: the book holds
        // the old board's frame under it, which says nothing of the board's own frame 3
        // (with the book's counters in the bitmap, the board forgot it unstored).
        assert!(v.ack().covers(5) && !v.refused_for_good().covers(5));
        assert!(!v.ack().covers(3) && !v.to_reseal().covers(3));
        // A frame of the erased board far below the window is a counter gone back too.
        let w = protocol::replay::WINDOW;
        let top: Vec<_> = (0..3).map(|c| frame(w + 100 + c, t + 200 + c)).collect();
        downlinks(&mut book, &top);
        let d = downlinks(&mut book, &[frame(50, t + 300)]);
        let [Downlink::Verdicts(v)] = d[..] else {
            panic!("{d:?}");
        };
        assert_eq!((v.base, v.settled, v.resume), (50, 0, w + 103));
        assert!(v.to_reseal().covers(50));
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
