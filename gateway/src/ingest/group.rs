//! Committing a batch as one gateway of a group (docs/OPERATIONS.md "Scaling out"): the
//! devices' states are read from the group's store, the batch is judged against them
//! exactly as one gateway would judge it, the accepted records are written and fsynced
//! but not yet handed to the sink ([`Buffer::stage`](crate::store::buffer::Buffer::stage)),
//! their counters are claimed in the store in one compare-and-swap, and only then are
//! they published, counted and acknowledged. When another gateway committed one of the
//! devices meanwhile, the staged records are removed and the batch is judged again.
//!
//! So the store only ever holds counters durable in some gateway's buffer, and a frame
//! is stored by the one gateway whose claim won: a resent frame is a duplicate on every
//! other, a reused counter refused by all. While the store does not answer, nothing is
//! judged or acknowledged (the broker keeps the messages). A claim whose answer was lost
//! is settled by reading the devices again: published if the store holds its frames,
//! removed if not.

use super::worker::Encoded;
use super::{BrokerTx, Inbound, RETRY_PAUSE, ReplaySummary, Worker};
use crate::observe::health::Store;
use crate::store::buffer::Staged;
use crate::store::group::{Etcd, GroupError, Held, MAX_DEVICES, Write};
use vigie_core::judge::batch::{self, Plan};
use vigie_core::judge::replay_book::{Counters, ReplayBook, Seen};
use vigie_core::judge::verify::{Accepted, Context};

/// The devices a commit touches, with the revision each was read at.
type Devices = Vec<((String, String), i64)>;

/// How a claim ended.
enum Claim {
    /// The store holds the batch's frames: publish.
    Won,
    /// Another gateway committed first: judge again.
    Lost,
    /// Shutdown while the store did not answer: the staged records stay on disk for the
    /// next start's reconciliation.
    Stopped,
}

impl Worker {
    /// Commits `messages` through the group's store, at most [`MAX_DEVICES`] devices at a
    /// time. `None` on shutdown (what was not committed is not acknowledged).
    pub(super) fn commit_in_group(
        &mut self,
        messages: &[Inbound],
        acks: &BrokerTx,
    ) -> Option<ReplaySummary> {
        let mut summary = ReplaySummary {
            replayed: messages.len(),
            ..ReplaySummary::default()
        };
        let mut rest = messages;
        while !rest.is_empty() {
            let n = devices_prefix(rest);
            self.commit_chunk(&rest[..n], acks, &mut summary)?;
            self.metrics.messages_received.inc_by(n as u64);
            rest = &rest[n..];
        }
        self.report_store(Store::Ok);
        self.update_buffer_gauges();
        Some(summary)
    }

    /// Judges, stages, claims and publishes `messages`, again until a claim wins.
    fn commit_chunk(
        &mut self,
        messages: &[Inbound],
        acks: &BrokerTx,
        summary: &mut ReplaySummary,
    ) -> Option<()> {
        let wanted = devices_of(messages);
        loop {
            if self.stopping.is_cancelled() {
                return None;
            }
            let Some(devices) = self.refresh(&wanted) else {
                self.buffer.wait_for_delivery(RETRY_PAUSE);
                continue;
            };
            let mut plan = self.judge(messages);
            for (m, outcome) in messages.iter().zip(plan.outcomes.iter_mut()) {
                self.hold_without_room(m, outcome);
            }
            let accepted: Vec<&Accepted> = plan.accepted.iter().collect();
            let Some(staged) = self.stage(&accepted) else {
                self.buffer.wait_for_delivery(RETRY_PAUSE);
                continue;
            };
            let gaps = batch::apply(&mut self.book, accepted.iter().copied());
            match self.claim(&devices, &accepted) {
                Claim::Won => {
                    self.buffer.publish(staged);
                    self.settle(messages, &plan, summary, acks)?;
                    self.account(&accepted, gaps, self.clock.now_ms());
                    self.note_group_missing(&devices);
                    summary.accepted += accepted.len();
                    return Some(());
                }
                Claim::Lost => {
                    self.buffer.retract(staged);
                    self.metrics.group_conflicts.inc();
                }
                Claim::Stopped => return None,
            }
        }
    }

    /// The batch's verdicts against the book (just refreshed from the store).
    fn judge(&mut self, messages: &[Inbound]) -> Plan {
        let cx = Context {
            registry: &self.registry,
            counters: &self.book,
            rules: &self.rules,
            strings: self.strings,
            now_s: self.clock.now_ms() / 1000,
            clock_synced: self.host_clock.synchronised(),
        };
        batch::judge(messages.iter().map(|m| (m.topic(), m.payload())), &cx)
    }

    /// Reads `wanted` from the store into the book; their revisions, or `None` (reported)
    /// when the store does not answer.
    fn refresh(&mut self, wanted: &[(String, String)]) -> Option<Devices> {
        let pairs: Vec<(&str, &str)> = wanted.iter().map(|(t, d)| (&**t, &**d)).collect();
        let held = match self.group_store()?.fetch(&pairs) {
            Ok(held) => held,
            Err(e) => return self.unreachable(&e),
        };
        let mut devices = Vec::with_capacity(wanted.len());
        for ((tenant, device), Held { revision, state }) in wanted.iter().zip(held) {
            if self
                .book
                .set_device_state(tenant, device, state.as_deref())
                .is_err()
            {
                return self.unreachable(&GroupError::Unreadable("a device's state is corrupt"));
            }
            devices.push(((tenant.clone(), device.clone()), revision));
        }
        Some(devices)
    }

    /// The accepted records written and fsynced, not yet readable; `None` (reported) when
    /// the disk refuses them.
    fn stage(&mut self, accepted: &[&Accepted]) -> Option<Staged> {
        let encoded = Encoded::of(accepted.iter().map(|a| &a.record));
        match self.buffer.stage(&encoded.payloads()) {
            Ok(staged) => Some(staged),
            Err(e) => {
                self.report_store(super::worker::store_problem(&e));
                self.free_space();
                None
            }
        }
    }

    /// Claims the accepted frames' counters: the new states of their devices, written if
    /// no other gateway wrote one of them since `devices` were read.
    fn claim(&mut self, devices: &Devices, accepted: &[&Accepted]) -> Claim {
        let writes: Vec<Write<'_>> = devices
            .iter()
            .filter(|((t, d), _)| {
                accepted
                    .iter()
                    .any(|a| *a.record.tenant == **t && *a.record.device == **d)
            })
            .filter_map(|((tenant, device), revision)| {
                Some(Write {
                    tenant,
                    device,
                    revision: *revision,
                    state: self.book.device_state(tenant, device)?,
                })
            })
            .collect();
        let Some(store) = self.group.as_mut() else {
            return Claim::Won;
        };
        match store.commit(&writes) {
            Ok(true) => Claim::Won,
            Ok(false) => Claim::Lost,
            Err(e) => {
                tracing::warn!(error = %e, devices = writes.len(), "a claim's answer was lost; reading its devices again to know whether it was applied");
                self.unreachable::<()>(&e);
                self.settle_unknown_claim(&writes, accepted)
            }
        }
    }

    /// A claim whose answer was lost: the store holds it when every accepted frame is
    /// there, stored with its tag (by this claim, or by another gateway that stored the
    /// very same frames); otherwise it was not applied (a transaction is all or nothing).
    fn settle_unknown_claim(&mut self, writes: &[Write<'_>], accepted: &[&Accepted]) -> Claim {
        let pairs: Vec<(&str, &str)> = writes.iter().map(|w| (w.tenant, w.device)).collect();
        loop {
            if self.stopping.is_cancelled() {
                return Claim::Stopped;
            }
            self.buffer.wait_for_delivery(RETRY_PAUSE);
            let Some(store) = self.group.as_mut() else {
                return Claim::Stopped;
            };
            let held = match store.fetch(&pairs) {
                Ok(held) => held,
                Err(e) => {
                    self.unreachable::<()>(&e);
                    continue;
                }
            };
            let mut there = ReplayBook::default();
            for ((tenant, device), h) in pairs.iter().zip(&held) {
                // A corrupt state holds nothing of this claim.
                let _ = there.set_device_state(tenant, device, h.state.as_deref());
            }
            let stored = accepted.iter().all(|a| {
                let r = &a.record;
                let tag = r.tag.unwrap_or_default();
                there.seen(&r.tenant, &r.device, r.epoch, r.counter, &tag) == Seen::Duplicate
            });
            return if stored { Claim::Won } else { Claim::Lost };
        }
    }

    /// Verdicts counted, refusals quarantined durably, then every message of the chunk
    /// acknowledged. `None` on shutdown (the published records stay: their devices'
    /// resends are duplicates).
    fn settle(
        &mut self,
        messages: &[Inbound],
        plan: &Plan,
        summary: &mut ReplaySummary,
        acks: &BrokerTx,
    ) -> Option<()> {
        for (m, outcome) in messages.iter().zip(&plan.outcomes) {
            self.note(m, outcome, summary);
        }
        if !self.store_all::<&[u8]>(&[]) {
            return None;
        }
        self.acknowledge(messages, plan, 0, acks);
        Some(())
    }

    /// The devices' missing frames as the group counts them, on this gateway's pages.
    fn note_group_missing(&self, devices: &Devices) {
        self.traffic.devices.update(|b| {
            for ((tenant, device), _) in devices {
                if let Some(missing) = self.book.missing(tenant, device) {
                    b.set_missing(tenant, device, missing);
                }
            }
        });
    }

    fn group_store(&mut self) -> Option<&mut Etcd> {
        self.group.as_mut()
    }

    /// Reports the store unreachable; `None` to the caller.
    fn unreachable<T>(&self, e: &GroupError) -> Option<T> {
        self.report_store(Store::Group {
            error: e.to_string(),
        });
        None
    }
}

/// How many of `messages` (at least one) touch at most [`MAX_DEVICES`] devices.
fn devices_prefix(messages: &[Inbound]) -> usize {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if let Some(who) = device_of(m)
            && !seen.contains(&who)
        {
            if seen.len() == MAX_DEVICES {
                return i.max(1);
            }
            seen.push(who);
        }
    }
    messages.len()
}

/// The distinct devices `messages` name, in order.
fn devices_of(messages: &[Inbound]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (t, d) in messages.iter().filter_map(device_of) {
        if !out.iter().any(|(a, b)| a == t && b == d) {
            out.push((t.to_string(), d.to_string()));
        }
    }
    out
}

/// The tenant and device a message's topic names, if it is well formed.
fn device_of(m: &Inbound) -> Option<(&str, &str)> {
    let t = protocol::topic::Topic::parse(m.topic()).ok()?;
    Some((t.who.tenant.as_str(), t.who.device.as_str()))
}
