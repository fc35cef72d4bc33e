//! The group's members as etcd knows them (docs/OPERATIONS.md "Scaling out"): each
//! gateway of a group keeps a key `<prefix>/member/<client id>` alive on a lease (see
//! [`lease_ttl_s`]) and lists the others every [`EVERY`], for `/readyz` and the status
//! page. A gateway killed drops out of the list when its lease ends; one stopping, at once.
//!
//! The [`Fence`] lets the sink write only while this gateway is surely listed and has
//! applied the group's log: `erase` deletes from the database once every listed member
//! has erased its copies, so a member cut off from etcd must not write what it holds
//! until it has caught up with the log again.

use crate::observe::health::{GroupView, Health};
use crate::store::group::Etcd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the lease is renewed and the members listed.
pub const EVERY: Duration = Duration::from_secs(2);
/// How long after a turn began the sink may start a write: two turns.
const OPEN_FOR: Duration = Duration::from_secs(4);

/// How long a member's key outlives its last renewal: at least 10 s, and long enough that
/// a write the sink began while the fence was open ends (`database_timeout`) before the
/// key does.
pub fn lease_ttl_s(database_timeout: Duration) -> u32 {
    let needed = OPEN_FOR + database_timeout + Duration::from_secs(2);
    u32::try_from(needed.as_secs().max(10)).unwrap_or(u32::MAX)
}

/// Whether the sink may write: open for 4 s (two turns) after the start of each turn that
/// renewed the lease and followed the log with no erasure waiting.
#[derive(Debug, Default)]
pub struct Fence {
    /// Until when it is open: milliseconds since the process's monotonic origin.
    until_ms: AtomicU64,
}

impl Fence {
    /// Whether a write may start now.
    pub fn is_open(&self) -> bool {
        since_base_ms(Instant::now()) < self.until_ms.load(Ordering::SeqCst)
    }

    fn open_from(&self, turn_began: Instant) {
        let until = since_base_ms(turn_began + OPEN_FOR);
        self.until_ms.fetch_max(until, Ordering::SeqCst);
    }
}

/// A monotonic origin for [`Fence`]'s times.
fn since_base_ms(t: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(t.saturating_duration_since(base).as_millis()).unwrap_or(u64::MAX)
}

/// The member thread's settings.
#[derive(Debug)]
pub struct Member {
    /// This gateway's client id.
    pub me: String,
    /// The group's prefix.
    pub prefix: String,
    /// Its lease, seconds.
    pub ttl_s: u32,
    /// Opened after each good turn.
    pub fence: Arc<Fence>,
}

/// Runs until `stop`: renews this gateway's key, lists the members into `health`, and
/// gives `each_turn` the store (the group's log is followed so, `crate::ops::group`); a
/// turn whose renewal succeeded and whose `each_turn` says this gateway is in step with
/// the log opens the fence.
pub fn run(
    mut etcd: Etcd,
    m: Member,
    health: Arc<Health>,
    stop: CancellationToken,
    mut each_turn: impl FnMut(&mut Etcd) -> bool,
) {
    let mut lease = None;
    while !stop.is_cancelled() {
        let began = Instant::now();
        let view = match etcd.members(&m.me, &mut lease, m.ttl_s) {
            Ok(members) => GroupView {
                prefix: m.prefix.clone(),
                members,
                error: None,
            },
            Err(e) => {
                lease = None;
                GroupView {
                    prefix: m.prefix.clone(),
                    members: Vec::new(),
                    error: Some(e.to_string()),
                }
            }
        };
        let renewed = view.error.is_none();
        health.set_group(view);
        if each_turn(&mut etcd) && renewed {
            m.fence.open_from(began);
        }
        let until = began + EVERY;
        while !stop.is_cancelled() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if let Some(id) = lease
        && let Err(e) = etcd.revoke(id)
    {
        tracing::debug!(error = %e, "could not leave the group's list at once; the lease ends by itself");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_opens_for_a_while_after_a_good_turn_and_the_lease_outlives_a_write() {
        let fence = Fence::default();
        assert!(!fence.is_open(), "closed until a first good turn");
        fence.open_from(Instant::now());
        assert!(fence.is_open());
        fence.open_from(Instant::now() - OPEN_FOR);
        assert!(fence.is_open(), "an older turn does not close it");
        let closed = Fence::default();
        closed.open_from(Instant::now() - OPEN_FOR);
        assert!(!closed.is_open(), "closed once its time is out");
        assert_eq!(lease_ttl_s(Duration::from_secs(3)), 10);
        assert_eq!(lease_ttl_s(Duration::from_secs(10)), 16);
    }
}
