//! Writing a batch while the next one is read (issue 33): the database parses one batch
//! while the sink reads the next from the buffer, so neither waits for the other.
//!
//! Only for a full batch (a backlog, a high rate: at low rates batches still fill while
//! they linger) and while nothing is held back: no tenant behind its own cursor, not
//! stopping. With VictoriaMetrics, once its counters have a first reading; its writes then
//! wait for their confirmation as the others do (`confirm.rs`: the counters are read on
//! this thread between writes, a write's settle time counts from when this thread sees
//! its answer, after the answer itself), and the head moves only past confirmed writes.
//! What is read ahead is what is durable already, without waiting, so the head moves as
//! soon as the write ends; the next turn of the loop goes on filling that batch. It then
//! holds every tenant's records. A tenant whose write fails is held from its first record
//! of the batch written, so its records in the batch read ahead are left to its own cursor
//! (taken out of that batch), and it cannot rejoin the head before the head has passed
//! them: catch-up waits until the batch read ahead is written (`Sink::run`). The head,
//! and with it what the buffer may delete, moves only past batches written.

use super::{Answer, Batch, Chunk, Confirm, LineWriter, Sink, Text, Written};
use std::time::Instant;

/// Stands in for the writer while a thread of the batch being written holds it; the
/// sink writes nothing meanwhile.
#[derive(Debug)]
struct Away;

impl LineWriter for Away {
    fn write(&mut self, _: &str, _: &Text) -> Answer {
        Answer::Transport("the database writer is busy with the previous batch".into())
    }
}

impl Sink {
    /// Whether `batch` may be written while the next is read: a full one (a backlog, a
    /// high rate), so that at low rates batches still fill up while they linger; with
    /// VictoriaMetrics, once its counters were read before any write.
    pub(super) fn may_overlap(&self, stopping: bool, batch: &Batch) -> bool {
        !stopping
            && self.confirm.as_ref().is_none_or(Confirm::has_baseline)
            && self.lanes.behind.is_empty()
            && batch.lines >= self.s.cfg.max_lines
    }

    /// Writes `batch` as [`Sink::write_batch`] does, on a thread of its own while this
    /// one reads ahead what is durable of the next batch; that batch (the next turn of
    /// the loop goes on filling it), without the records of the tenants this write left
    /// held, if it has any record.
    pub(super) fn write_overlapped(&mut self, batch: &Batch) -> Option<Batch> {
        let mut writer = std::mem::replace(&mut self.s.writer, Box::new(Away));
        let (answers, next) = std::thread::scope(|scope| {
            let writing = std::thread::Builder::new()
                .name("vigie-write".into())
                .spawn_scoped(scope, || write_all(writer.as_mut(), batch));
            let next = writing
                .is_ok()
                .then(|| self.collect(Batch::default(), false, true));
            (writing.map(|w| w.join()), next)
        });
        self.s.writer = writer;
        let answers = match answers {
            Ok(Ok(answers)) => answers,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a writing thread; writing in turn");
                self.write_batch(batch);
                return None;
            }
        };
        for ((tenant, chunk), answer) in batch.by_tenant.iter().zip(answers) {
            let Some((answer, started)) = answer else {
                continue;
            };
            let records = Self::records(batch, chunk);
            let written = self.answered(tenant, &chunk.lines, records, answer, started);
            if let Written::Failed { error, wait } = written {
                self.fall_behind(tenant, chunk.first, error, wait);
            }
        }
        let mut next = next?;
        next.by_tenant
            .retain(|tenant, _| !self.lanes.is_behind(tenant));
        next.lines = next.by_tenant.values().map(|c| c.readings).sum();
        next.end.is_some().then_some(next)
    }
}

/// Each tenant's answer and when its write started (`None`: no lines, records `erase`
/// emptied).
fn write_all(writer: &mut dyn LineWriter, batch: &Batch) -> Vec<Option<(Answer, Instant)>> {
    let write = |(tenant, chunk): (&String, &Chunk)| {
        (!chunk.lines.is_empty()).then(|| {
            let started = Instant::now();
            (writer.write(tenant, &chunk.lines), started)
        })
    };
    batch.by_tenant.iter().map(write).collect()
}
