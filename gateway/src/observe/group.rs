//! The group's members as etcd knows them (docs/OPERATIONS.md "Scaling out"): each
//! gateway of a group keeps a key `<prefix>/member/<client id>` alive on a lease of
//! [`TTL_S`] seconds and lists the others every [`EVERY`], for `/readyz` and the status
//! page. A gateway killed drops out of the list when its lease ends; one stopping, at once.

use crate::observe::health::{GroupView, Health};
use crate::store::group::Etcd;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a member's key outlives its last renewal.
pub const TTL_S: u32 = 10;
/// How often the lease is renewed and the members listed.
pub const EVERY: Duration = Duration::from_secs(2);

/// Runs until `stop`: renews this gateway's key, lists the members into `health`, and
/// gives `each_turn` the store (the group's log is followed so, `crate::ops::group`).
pub fn run(
    mut etcd: Etcd,
    me: String,
    prefix: String,
    health: Arc<Health>,
    stop: CancellationToken,
    mut each_turn: impl FnMut(&mut Etcd),
) {
    let mut lease = None;
    while !stop.is_cancelled() {
        let view = match etcd.members(&me, &mut lease, TTL_S) {
            Ok(members) => GroupView {
                prefix: prefix.clone(),
                members,
                error: None,
            },
            Err(e) => {
                lease = None;
                GroupView {
                    prefix: prefix.clone(),
                    members: Vec::new(),
                    error: Some(e.to_string()),
                }
            }
        };
        health.set_group(view);
        each_turn(&mut etcd);
        let until = std::time::Instant::now() + EVERY;
        while !stop.is_cancelled() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if let Some(id) = lease
        && let Err(e) = etcd.revoke(id)
    {
        tracing::debug!(error = %e, "could not leave the group's list at once; the lease ends by itself");
    }
}
