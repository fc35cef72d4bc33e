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

use super::claim::Keys;
use super::refused::Refusals;
use super::worker::Encoded;
use super::{BrokerTx, Inbound, RETRY_PAUSE, ReplaySummary, Worker};
use crate::observe::health::Store;
use crate::store::buffer::Staged;
use crate::store::group::GroupError;
use vigie_core::judge::batch::{self, Plan};
use vigie_core::judge::replay_book::{Counters, ReplayBook, Seen};
use vigie_core::judge::verify::Accepted;

/// How a claim ended.
enum Claim {
    /// The store holds the batch's frames: publish.
    Won,
    /// Another gateway committed first: judge again.
    Lost,
    /// The store refused the claim (nothing written): judge again after a pause.
    Refused,
    /// Shutdown while the store did not answer: the staged records stay on disk for the
    /// next start's reconciliation.
    Stopped,
}

impl Worker {
    /// Commits `messages` through the group's store, as many at a time as one
    /// transaction can read and write. `None` on shutdown (what was not committed is not
    /// acknowledged).
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
            let (n, keys) = self.keys_prefix(rest);
            self.commit_chunk(&rest[..n], &keys, acks, &mut summary)?;
            self.metrics.messages_received.inc_by(n as u64);
            rest = &rest[n..];
        }
        self.report_store(Store::Ok);
        self.update_buffer_gauges();
        Some(summary)
    }

    /// How many of `messages` (at least one) one transaction can claim, and their keys.
    fn keys_prefix(&self, messages: &[Inbound]) -> (usize, Keys) {
        let max = self.group.as_ref().map_or(usize::MAX, |g| g.max_ops());
        let mut keys = Keys::new(max);
        for (i, m) in messages.iter().enumerate() {
            let Ok(topic) = protocol::topic::Topic::parse(m.topic()) else {
                continue;
            };
            let (tenant, device) = (topic.who.tenant.as_str(), topic.who.device.as_str());
            // Only a registered device's uplink has a state to judge it by.
            let Some(dev) = self.registry.get(tenant, device) else {
                continue;
            };
            let counter = protocol::peek(m.payload()).ok().map(|h| h.counter);
            if topic.channel == protocol::topic::Channel::Uplink
                && !keys.admit(tenant, device, dev.key.epoch(), counter)
            {
                return (i.max(1), keys);
            }
        }
        (messages.len(), keys)
    }

    /// Judges, stages, claims and publishes `messages`, again until a claim wins.
    fn commit_chunk(
        &mut self,
        messages: &[Inbound],
        keys: &Keys,
        acks: &BrokerTx,
        summary: &mut ReplaySummary,
    ) -> Option<()> {
        loop {
            if self.stopping.is_cancelled() {
                return None;
            }
            let Some(revisions) = self.refresh(keys) else {
                self.buffer.wait_for_delivery(RETRY_PAUSE);
                continue;
            };
            let mut plan = self.judge(messages);
            for (m, outcome) in messages.iter().zip(plan.outcomes.iter_mut()) {
                self.hold_without_room(m, outcome);
            }
            let Some(refusals) = self.refusals(messages, &plan, keys) else {
                self.buffer.wait_for_delivery(RETRY_PAUSE);
                continue;
            };
            let accepted: Vec<&Accepted> = plan.accepted.iter().collect();
            let Some(staged) = self.stage(&accepted) else {
                self.buffer.wait_for_delivery(RETRY_PAUSE);
                continue;
            };
            let gaps = batch::apply(&mut self.book, accepted.iter().copied());
            match self.claim(keys, &revisions, &accepted, &refusals) {
                Claim::Won => {
                    refusals.decide(&mut self.refused_lately, messages);
                    self.buffer.publish(staged);
                    self.account(&accepted, gaps, self.clock.now_ms());
                    self.note_group_missing(&accepted);
                    summary.accepted += accepted.len();
                    let settled = self.settle(messages, &plan, summary, acks);
                    plan.recycle(&mut self.spare);
                    return settled;
                }
                Claim::Lost => {
                    self.buffer.retract(staged);
                    self.metrics.group_conflicts.inc();
                }
                Claim::Refused => {
                    self.buffer.retract(staged);
                    self.buffer.wait_for_delivery(RETRY_PAUSE);
                }
                Claim::Stopped => return None,
            }
        }
    }

    /// Reads the keys from the store into the book; the heads' revisions, or `None`
    /// (reported) when the store does not answer.
    fn refresh(&mut self, keys: &Keys) -> Option<Vec<i64>> {
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let store = self.group.as_mut()?;
        match keys.load(store, &mut self.book) {
            Ok(revisions) => Some(revisions),
            Err(e) => self.unreachable(&e),
        }
    }

    /// The batch's refusals the group quarantines once, with their lists as the store
    /// holds them; `None` (reported) when the store does not answer.
    fn refusals(&mut self, messages: &[Inbound], plan: &Plan, keys: &Keys) -> Option<Refusals> {
        let store = self.group.as_mut()?;
        let room = store.max_ops().saturating_sub(keys.len());
        match Refusals::read(store, messages, plan, room) {
            Ok(r) => Some(r),
            Err(e) => self.unreachable(&e),
        }
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

    /// Claims the accepted frames' counters: their devices' new heads and blocks, written
    /// if no other gateway wrote one of those heads since they were read.
    fn claim(
        &mut self,
        keys: &Keys,
        revisions: &[i64],
        accepted: &[&Accepted],
        refusals: &Refusals,
    ) -> Claim {
        let Some(store) = self.group.as_mut() else {
            return Claim::Won;
        };
        let records = accepted.iter().map(|a| &a.record);
        let (mut compare, mut puts) = keys.claim(store, revisions, &self.book, records);
        let (more_compare, more_puts) = refusals.claim();
        compare.extend(more_compare);
        puts.extend(more_puts);
        match store.commit(&compare, &puts) {
            Ok(true) => Claim::Won,
            Ok(false) => Claim::Lost,
            // An answer: nothing was written (a permission, a limit).
            Err(e @ GroupError::Refused { .. }) => {
                self.unreachable::<()>(&e);
                Claim::Refused
            }
            Err(e) => {
                tracing::warn!(error = %e, heads = compare.len(), "a claim's answer was lost; reading its devices again to know whether it was applied");
                self.unreachable::<()>(&e);
                self.settle_unknown_claim(keys, accepted)
            }
        }
    }

    /// A claim whose answer was lost: the store holds it when every accepted frame is
    /// there, stored with its tag (by this claim, or by another gateway that stored the
    /// very same frames); otherwise it was not applied (a transaction is all or nothing).
    fn settle_unknown_claim(&mut self, keys: &Keys, accepted: &[&Accepted]) -> Claim {
        loop {
            if self.stopping.is_cancelled() {
                return Claim::Stopped;
            }
            self.buffer.wait_for_delivery(RETRY_PAUSE);
            let Some(store) = self.group.as_mut() else {
                return Claim::Stopped;
            };
            let mut there = ReplayBook::default();
            if let Err(e) = keys.load(store, &mut there) {
                self.unreachable::<()>(&e);
                continue;
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
    fn note_group_missing(&self, accepted: &[&Accepted]) {
        self.traffic.devices.update(|b| {
            for a in accepted {
                let (tenant, device) = (&*a.record.tenant, &*a.record.device);
                if let Some(missing) = self.book.missing(tenant, device) {
                    b.set_missing(tenant, device, missing);
                }
            }
        });
    }

    /// Reports the store unreachable; `None` to the caller.
    fn unreachable<T>(&self, e: &GroupError) -> Option<T> {
        self.report_store(Store::Group {
            error: e.to_string(),
        });
        None
    }
}
