//! What each verdict leaves behind besides the buffer: counters, device state, the live
//! feed, the quarantine, rate-limited log lines, and the devices' acknowledgements.

use super::{BrokerTx, Inbound, ReplaySummary, ToBroker, Worker};
use crate::observe::devices::Stored;
use crate::observe::feed::{self, Verdict};
use crate::observe::metrics::ReasonLabel;
use crate::store::quarantine;
use protocol::Downlink;
use vigie_core::ack::settle::Settled;
use vigie_core::condition::missing::Gap;
use vigie_core::judge::batch::Outcome;
use vigie_core::judge::reason::Reason;
use vigie_core::judge::verify;

impl Worker {
    /// Counts a message's verdict and does what it asks besides storing.
    pub(super) fn note(&mut self, m: &Inbound, outcome: &Outcome, summary: &mut ReplaySummary) {
        match outcome {
            Outcome::Store(_) => {}
            Outcome::Duplicate
                if m.quarantined_as.as_deref() == Some(Reason::CounterReused.code()) =>
            {
                // Its counter's tag is no longer kept: not proof that it is the stored
                // frame. Kept as it was.
                summary.rejected += 1;
                self.quarantine.add(&quarantine::Entry::rejected(
                    m.received_ms,
                    m.topic(),
                    m.payload(),
                    &Reason::CounterReused,
                ));
            }
            Outcome::Duplicate => {
                summary.duplicates += 1;
                self.metrics.frames_duplicate.inc();
                self.to_feed(m, Verdict::Duplicate, None);
            }
            Outcome::Reject(reason) => {
                summary.rejected += 1;
                self.rejected(m, reason);
            }
            Outcome::Hold(reason) => {
                summary.held += 1;
                self.hold(m, *reason);
            }
            Outcome::Status {
                tenant,
                device,
                online,
            } => {
                self.traffic.devices.update(|b| {
                    b.status(tenant, device, *online, m.received_ms);
                });
                let verdict = if *online {
                    Verdict::Online
                } else {
                    Verdict::Offline
                };
                self.to_feed(m, verdict, None);
            }
        }
    }

    /// A refused frame: logged (rate-limited), counted, on the feed and its device, and
    /// quarantined once.
    fn rejected(&mut self, m: &Inbound, reason: &Reason) {
        self.log_rejection(m.topic(), reason, m.received_ms);
        self.metrics
            .frames_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.code(),
            })
            .inc();
        self.to_feed(m, Verdict::Rejected, Some(reason.code()));
        // Counted on the device only if the topic names a registered one: anyone may
        // publish on any name, and the state must stay bounded.
        if let Ok(t) = protocol::topic::Topic::parse(m.topic())
            && let (tenant, device) = (t.who.tenant.as_str(), t.who.device.as_str())
            && let Some(dev) = self.registry.get(tenant, device)
        {
            // A frame whose tag verified arrived: its counter is not missing.
            let arrived = reason
                .after_authentication()
                .then(|| protocol::peek(m.payload()).ok())
                .flatten()
                .filter(|_| *reason != Reason::CounterReused);
            let highest = self.book.highest(tenant, device, dev.key.epoch());
            self.traffic.devices.update(|b| {
                b.rejected(tenant, device, reason.code(), m.received_ms);
                if let Some(h) = arrived {
                    b.refused(tenant, device, h.counter, highest);
                }
            });
        }
        // Never acknowledged, so resent as it is (or, from firmware that cannot re-seal, a
        // reused counter): once in the quarantine. One replayed from the quarantine goes
        // back there whatever the recent arrivals (its entry was taken out for the replay).
        if reason.settles()
            || m.quarantined_as.is_some()
            || self.refused_lately.first_time(m.topic(), m.payload())
        {
            self.quarantine.add(&quarantine::Entry::rejected(
                m.received_ms,
                m.topic(),
                m.payload(),
                reason,
            ));
        }
    }

    /// A frame storable later, not now (SPEC §13.3), or refused when the quarantine has
    /// no room for its entry: counted, logged (rate-limited) and shown on its device; no
    /// acknowledgement, so the device keeps it and resends it.
    /// One re-submitted from the quarantine goes back there: its device forgot it.
    pub(super) fn hold(&mut self, m: &Inbound, reason: Reason) {
        self.metrics
            .frames_held
            .get_or_create(&ReasonLabel {
                reason: reason.code(),
            })
            .inc();
        self.to_feed(m, Verdict::Held, Some(reason.code()));
        if let Ok(t) = protocol::topic::Topic::parse(m.topic()) {
            let (tenant, device) = (t.who.tenant.as_str(), t.who.device.as_str());
            self.traffic
                .devices
                .update(|b| b.held(tenant, device, reason.code(), m.received_ms));
            let (log, left_out) = self.hold_log.admit(m.received_ms);
            if left_out > 0 {
                tracing::warn!(
                    left_out,
                    "more frames were held in the last minute than logged; all are counted in \
                     vigie_frames_held_total"
                );
            }
            if log && matches!(reason, Reason::FutureTimestamp | Reason::StaleTimestamp) {
                tracing::warn!(
                    tenant,
                    device,
                    reason = reason.code(),
                    clock_synchronised = self.host_clock.synchronised(),
                    "frame held, not acknowledged: its time is outside the window; the device \
                     keeps it and resends it"
                );
            } else if log {
                tracing::warn!(
                    tenant,
                    device,
                    reason = reason.code(),
                    "frame held, not acknowledged: refused, but the quarantine has no room left \
                     for this device's refused frames (`quarantine list`, then `quarantine \
                     replay` or `erase`); the device keeps it and resends it"
                );
            }
        }
        if m.quarantined_as.is_some() {
            self.quarantine.add(&quarantine::Entry::rejected(
                m.received_ms,
                m.topic(),
                m.payload(),
                &reason,
            ));
        }
    }
    /// One warning line per rejected frame, with tenant, device and reason (rate-limited).
    fn log_rejection(&mut self, topic: &str, reason: &Reason, received_ms: u64) {
        let (log, left_out) = self.reject_log.admit(received_ms);
        if left_out > 0 {
            tracing::warn!(
                left_out,
                "more frames were rejected in the last minute than logged; all are counted in \
                 vigie_frames_rejected_total and kept in the quarantine (`quarantine list`)"
            );
        }
        if !log {
            return;
        }
        // The topic comes from whoever published: named by its identifiers when they are
        // valid, else quoted (escaped) as it came.
        match protocol::topic::Topic::parse(topic) {
            Ok(t) => tracing::warn!(
                tenant = t.who.tenant.as_str(),
                device = t.who.device.as_str(),
                reason = reason.code(),
                detail = %reason.detail(),
                "frame rejected"
            ),
            Err(_) => tracing::warn!(
                topic = ?topic,
                reason = reason.code(),
                detail = %reason.detail(),
                "frame rejected"
            ),
        }
    }
    /// Seals and hands over one downlink per device the commit settled frames of (an
    /// acknowledgement, or verdicts when some were refused: SPEC §12).
    pub(super) fn acknowledge_devices(&self, settled: &Settled, to_broker: &BrokerTx) {
        let acks = settled.acks(&self.book, &self.registry);
        // Fresh ids for all of them in one system call.
        let mut ids = vec![0u8; 8 * acks.len()];
        if let Err(e) = getrandom::fill(&mut ids) {
            // Without a fresh id the nonce could repeat: send nothing, the devices resend.
            tracing::error!(error = %e, "no system randomness for an acknowledgement id");
            return;
        }
        let ids = ids
            .chunks_exact(8)
            .filter_map(|id| <[u8; 8]>::try_from(id).ok());
        for ((tenant, device, downlink), id) in acks.into_iter().zip(ids) {
            let (Some(dev), Ok(who)) = (
                self.registry.get(&tenant, &device),
                protocol::Identity::new(&tenant, &device),
            ) else {
                continue;
            };
            let payload = match downlink {
                Downlink::Ack(ack) => ack.seal(id, &dev.key, who).to_vec(),
                Downlink::Verdicts(v) => v.seal(id, &dev.key, who).to_vec(),
            };
            let _ = to_broker.send(ToBroker::Downlink {
                topic: protocol::topic::ack(who).to_string(),
                payload,
            });
        }
    }
    /// Metrics, device state and live feed for durable frames (one lock each per commit).
    pub(super) fn account(&mut self, accepted: &[&verify::Accepted], gaps: Vec<Gap>, now_ms: u64) {
        self.metrics.frames_accepted.inc_by(accepted.len() as u64);
        let flagged = accepted.iter().map(|a| u64::from(a.flagged)).sum();
        self.metrics.readings_flagged.inc_by(flagged);
        // Counted per run of frames of one commune (usually the whole commit): a counter
        // found per frame was 1 % of a drain's instructions.
        for run in accepted.chunk_by(|a, b| a.record.tenant == b.record.tenant) {
            let tenant: &str = &run[0].record.tenant;
            let readings: u64 = run.iter().map(|a| u64::from(a.record.readings)).sum();
            let metric = &self.metrics.readings_accepted;
            self.tenant_readings
                .entry_ref(tenant)
                .or_insert_with(|| metric.of(tenant).clone())
                .inc_by(readings);
        }
        self.traffic.devices.update(|b| {
            for (a, gap) in accepted.iter().zip(gaps) {
                let r = &a.record;
                let frame = Stored {
                    last_time: a.last_time,
                    readings: r.readings,
                    counter: r.counter,
                    gap,
                    battery_mv: a.battery_mv,
                    dropped: a.dropped,
                };
                b.stored_as(a.names(), frame, &a.glance, now_ms);
            }
        });
        self.traffic
            .feed
            .push_all(accepted.iter().map(|a| feed::New {
                at_ms: now_ms,
                tenant: &a.record.tenant,
                device: &a.record.device,
                verdict: Verdict::Stored,
                reason: None,
                counter: Some(a.record.counter),
                readings: Some(a.record.readings),
            }));
    }
    /// Tells the live feed what became of a message whose topic names a device.
    fn to_feed(&self, m: &Inbound, verdict: Verdict, reason: Option<&'static str>) {
        if let Ok(t) = protocol::topic::Topic::parse(m.topic()) {
            self.traffic.feed.push(feed::New {
                at_ms: m.received_ms,
                tenant: t.who.tenant.as_str(),
                device: t.who.device.as_str(),
                verdict,
                reason,
                counter: None,
                readings: None,
            });
        }
    }
}
