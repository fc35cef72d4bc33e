//! `quarantine replay`: both quarantines re-submitted through the pipeline. Nothing is
//! removed from a quarantine before what replaced it (stored records, re-quarantined
//! entries) is durable.

use super::worker::encode;
use super::{BrokerTx, Inbound, ReplaySummary, Worker, lock};
use crate::store::quarantine::{Entry, Mark, Origin};
use vigie_core::record::Record;

impl Worker {
    /// Re-submits both quarantines.
    pub(super) fn replay_quarantine(&mut self, acks: &BrokerTx) -> ReplaySummary {
        let Some(((frames, frames_mark), (lines, lines_mark))) = self.marked() else {
            return ReplaySummary::default();
        };
        let mut messages = Vec::new();
        for e in &frames {
            match hex::decode(&e.payload) {
                Ok(payload) if e.origin == Origin::Mqtt => messages.push(Inbound {
                    quarantined_as: Some(e.reason.clone()),
                    ..Inbound::new(e.topic.as_bytes(), &payload, e.received_ms, None)
                }),
                // Not replayable (damaged buffer bytes): kept as it is.
                _ => self.quarantine.add(e),
            }
        }
        let (refused, kept) = refused_records(&lines);
        let Some(mut summary) = self.commit(messages, acks) else {
            return ReplaySummary::default();
        };
        {
            let mut q = lock(&self.db_quarantine);
            for e in &kept {
                q.add(e);
            }
        }
        if !self.store_all(&refused) {
            return ReplaySummary::default();
        }
        if let Err(e) = lock(&self.db_quarantine).sync() {
            tracing::error!(error = %e, "cannot write the database quarantine; replayed lines stay in it");
            return summary;
        }
        summary.database_lines = refused.len();
        // Durable now: the old entries may go.
        if let Err(e) = self.quarantine.drop_before(frames_mark) {
            tracing::error!(error = %e, "replayed entries stay in the quarantine (a second replay finds them as duplicates)");
        }
        if let Err(e) = lock(&self.db_quarantine).drop_before(lines_mark) {
            tracing::error!(error = %e, "replayed lines stay in the database quarantine");
        }
        tracing::info!(?summary, "quarantine replayed");
        summary
    }

    /// Both quarantines' entries, each with the mark of where they end.
    #[allow(clippy::type_complexity)]
    fn marked(&mut self) -> Option<((Vec<Entry>, Mark), (Vec<Entry>, Mark))> {
        let frames = match self.quarantine.mark() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the quarantine for replay");
                return None;
            }
        };
        match lock(&self.db_quarantine).mark() {
            Ok(lines) => Some((frames, lines)),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the database quarantine for replay");
                None
            }
        }
    }
}

/// The database quarantine's entries as buffer records of their lines, and the entries
/// that are not lines (kept as they are).
fn refused_records(entries: &[Entry]) -> (Vec<Vec<u8>>, Vec<Entry>) {
    let mut kept = Vec::new();
    let records = entries
        .iter()
        .filter_map(|e| {
            let text = hex::decode(&e.payload)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|t| !t.is_empty() && e.origin == Origin::Database);
            let Some(text) = text else {
                kept.push(e.clone());
                return None;
            };
            Some(encode(&Record {
                tenant: e.topic.as_str().into(),
                device: "".into(),
                epoch: 0,
                counter: 0,
                readings: text.lines().count() as u32,
                tag: None,
                lines: text,
            }))
        })
        .collect();
    (records, kept)
}
