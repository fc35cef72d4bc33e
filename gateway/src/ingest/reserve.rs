//! The space set aside for the replay-state snapshot, so a full disk never locks
//! delivered segments in.

use std::path::PathBuf;

/// Smallest reserve kept beside the replay state.
const RESERVE_MIN: u64 = 1 << 20;
/// Space set aside in `data_dir` for the replay-state snapshot. Delivered segments may
/// only be deleted after the snapshot is written; on a full disk that write fails, and
/// without a reserve nothing could ever be freed, even once the database has everything.
/// So the worker keeps a file of zeros (at least 1 MiB, twice the snapshot), releases it
/// when the snapshot does not fit, and remakes it after the segments are gone. Should it
/// be gone too (spent on a segment roll, not remade for lack of room), the delivered
/// segments are deleted before the snapshot is written (`Worker::collect_garbage`).
#[derive(Debug)]
pub(super) struct Reserve {
    pub(super) path: PathBuf,
}
impl Reserve {
    /// Releases the reserve; true if there was one.
    pub(super) fn release(&self) -> bool {
        std::fs::remove_file(&self.path).is_ok()
    }

    /// Makes sure the reserve holds room for a snapshot of `snapshot` bytes (real
    /// blocks: zeros written and fsynced, not a sparse file). Best effort.
    pub(super) fn restore(&self, snapshot: usize) {
        let want = RESERVE_MIN.max(2 * snapshot as u64);
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= want) {
            return;
        }
        let zeros = vec![0u8; want as usize];
        if let Err(e) = crate::store::fs::write_atomic(&self.path, &zeros, 0o600) {
            tracing::debug!(error = %e, "cannot make the space reserve now; tried again later");
        }
    }
}
