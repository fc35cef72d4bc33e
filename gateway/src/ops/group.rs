//! What reaches every gateway of a group (docs/OPERATIONS.md "Scaling out"): `erase`, and
//! every change of the registry's devices (`devices add`, `rotate`, `edit`, `revoke`,
//! `remove`, `import`).
//!
//! The command that makes the change adds a [`GroupOp`] to the group's log in etcd
//! (`<prefix>/op/…`, in the order etcd took them). Each member applies the log's
//! operations in that order and records the last one it applied
//! (`<prefix>/applied/<client id>`): at its start, before its registry is loaded and
//! before its sink reads the buffer ([`catch_up`]); and while it runs, every 2 s with
//! its membership ([`follow`]): a device's entry at once (the registry file rewritten and
//! reloaded), an erasure by stopping and starting again in place, so that the erasure
//! runs on its stores as `erase` does on a stopped gateway. `erase` deletes from the
//! database only once every listed member has applied it ([`wait_for_members`]): no
//! gateway's buffer can write an erased reading back afterwards.

use crate::config::Config;
use crate::ops::erase::{self, EraseError, Report};
use crate::store::group::{Etcd, GroupError};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use vigie_core::erase::Scope;
use vigie_core::fleet::{DeviceEntry, Registry, RegistryError, Removed};

/// One operation of the group's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum GroupOp {
    /// `erase`: each member erases its own copies of these readings.
    Erase {
        /// Tenant.
        tenant: String,
        /// One device, or all of the tenant's.
        device: Option<String>,
        /// Only readings measured before this Unix second.
        before_s: Option<u32>,
        /// The gateway whose command it was.
        by: String,
    },
    /// A device's registry entry as it now is (with its key: etcd holds what the registry
    /// file holds), or, with none, its removal at key epoch `epoch`.
    Device {
        /// Tenant.
        tenant: String,
        /// Device id.
        id: String,
        /// The entry; `None`: removed.
        entry: Option<Box<DeviceEntry>>,
        /// The key epoch it was removed at (0 with an entry).
        epoch: u32,
        /// The gateway whose command it was.
        by: String,
    },
}

impl GroupOp {
    /// The erasure's scope, for an erasure.
    pub fn scope(&self) -> Option<Scope> {
        match self {
            GroupOp::Erase {
                tenant,
                device,
                before_s,
                ..
            } => Some(Scope {
                tenant: tenant.clone(),
                device: device.clone(),
                before_s: *before_s,
            }),
            GroupOp::Device { .. } => None,
        }
    }
}

/// Why the group's log could not be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum GroupOpsError {
    /// The group's store.
    #[error("the group's store: {0}")]
    Store(#[from] GroupError),
    /// Its client.
    #[error(transparent)]
    Setup(#[from] crate::store::group::SetupError),
    /// An erasure could not be carried out on this gateway's stores.
    #[error("erasing as the group asked: {0}")]
    Erase(Box<EraseError>),
    /// A device's entry could not be written into the registry.
    #[error("applying the group's registry change of {name}: {reason}")]
    Registry {
        /// `tenant/id`.
        name: String,
        /// Why.
        reason: String,
    },
}

/// The operations that turn the devices of `before` into those of `after`.
pub fn registry_ops(before: &Registry, after: &Registry, by: &str) -> Vec<GroupOp> {
    let mut ops = Vec::new();
    for entry in after.entries() {
        if before.get(&entry.tenant, &entry.id).map(|d| &d.entry) != Some(entry) {
            ops.push(GroupOp::Device {
                tenant: entry.tenant.clone(),
                id: entry.id.clone(),
                entry: Some(Box::new(entry.clone())),
                epoch: 0,
                by: by.into(),
            });
        }
    }
    for gone in before.entries() {
        if after.get(&gone.tenant, &gone.id).is_none() {
            ops.push(GroupOp::Device {
                tenant: gone.tenant.clone(),
                id: gone.id.clone(),
                entry: None,
                epoch: gone.epoch,
                by: by.into(),
            });
        }
    }
    ops
}

/// Adds `ops` to the group's log; the revision of the last.
pub fn publish(etcd: &mut Etcd, ops: &[GroupOp]) -> Result<i64, GroupError> {
    let mut last = 0;
    for op in ops {
        let json = serde_json::to_vec(op).unwrap_or_default();
        last = etcd.put_op(&json)?;
    }
    Ok(last)
}

/// Writes a device's entry (or its removal) into `registry`.
pub fn apply_device(registry: &mut Registry, op: &GroupOp) -> Result<(), RegistryError> {
    let GroupOp::Device {
        tenant,
        id,
        entry,
        epoch,
        ..
    } = op
    else {
        return Ok(());
    };
    match entry {
        Some(entry) => registry.upsert((**entry).clone()),
        None => {
            if !registry.remove(tenant, id) {
                let mut removed: Vec<Removed> = registry.removed().to_vec();
                removed.retain(|r| (&r.tenant, &r.id) != (tenant, id));
                removed.push(Removed {
                    tenant: tenant.clone(),
                    id: id.clone(),
                    epoch: *epoch,
                });
                registry.set_removed(removed);
            }
            Ok(())
        }
    }
}

/// What applying one operation did here.
#[derive(Debug)]
pub struct Applied {
    /// Its revision in the log.
    pub revision: i64,
    /// The operation.
    pub op: GroupOp,
    /// For an erasure, what it removed here.
    pub report: Option<Report>,
}

/// Applies one operation to this gateway's stopped stores (its data directory locked by
/// the caller) and registry file.
fn apply(config: &Config, revision: i64, op: GroupOp) -> Result<Applied, GroupOpsError> {
    let report = match op.scope() {
        Some(scope) => {
            let data = &config.gateway.data_dir;
            let report =
                erase::local(data, &scope, true).map_err(|e| GroupOpsError::Erase(Box::new(e)))?;
            erase::audit(data, &scope, &report).map_err(|e| GroupOpsError::Erase(Box::new(e)))?;
            Some(report)
        }
        None => {
            let name = match &op {
                GroupOp::Device { tenant, id, .. } => format!("{tenant}/{id}"),
                GroupOp::Erase { .. } => String::new(),
            };
            crate::ops::devices::change_here(&config.gateway, |r| Ok(apply_device(r, &op)?))
                .map_err(|e| GroupOpsError::Registry {
                    name,
                    reason: e.to_string(),
                })?;
            None
        }
    };
    Ok(Applied {
        revision,
        op,
        report,
    })
}

/// Applies the operations of the log this gateway has not applied yet, in order, each
/// recorded as applied once done (one interrupted by a crash runs again: each is
/// idempotent). Without `erasures` (a running gateway), it stops before the first
/// erasure and says one waits.
fn apply_log(
    config: &Config,
    etcd: &mut Etcd,
    erasures: bool,
) -> Result<(Vec<Applied>, bool), GroupOpsError> {
    let me = &config.mqtt.client_id;
    let after = etcd.applied(std::slice::from_ref(me))?[0];
    let mut done = Vec::new();
    for (revision, bytes) in etcd.ops_after(after)? {
        match serde_json::from_slice::<GroupOp>(&bytes) {
            Ok(GroupOp::Erase { .. }) if !erasures => return Ok((done, true)),
            Ok(op) => done.push(apply(config, revision, op)?),
            Err(_) => tracing::warn!(
                revision,
                "an operation of the group's log this gateway cannot read: skipped (a newer gateway's?)"
            ),
        }
        etcd.set_applied(me, revision)?;
    }
    Ok((done, false))
}

/// Applies every operation of the log this gateway has not applied yet, erasures
/// included. The data directory must be locked by the caller.
pub fn catch_up(config: &Config, etcd: &mut Etcd) -> Result<Vec<Applied>, GroupOpsError> {
    Ok(apply_log(config, etcd, true)?.0)
}

/// What a running member found in the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Followed {
    /// Devices' entries applied to the registry file: reload it.
    pub registry_changed: bool,
    /// An erasure waits: stop and start again to apply it on the stores.
    pub erase_pending: bool,
}

/// A running member's turn: applies the devices' entries the log holds in order, up to
/// the first erasure, which it leaves for [`catch_up`] at a start.
pub fn follow(config: &Config, etcd: &mut Etcd) -> Result<Followed, GroupOpsError> {
    let (done, erase_pending) = apply_log(config, etcd, false)?;
    Ok(Followed {
        registry_changed: !done.is_empty(),
        erase_pending,
    })
}

/// Waits until every member listed in the group (this one aside) has applied the log up
/// to `revision`, at most `patience`, saying on stderr whom it waits for; the members
/// still behind then.
pub fn wait_for_members(
    etcd: &mut Etcd,
    me: &str,
    revision: i64,
    patience: Duration,
) -> Result<Vec<String>, GroupError> {
    let until = Instant::now() + patience;
    let mut said = Instant::now();
    loop {
        let mut members = etcd.listed()?;
        members.retain(|m| m != me);
        let applied = etcd.applied(&members)?;
        let behind: Vec<String> = members
            .into_iter()
            .zip(applied)
            .filter(|(_, a)| *a < revision)
            .map(|(m, _)| m)
            .collect();
        if behind.is_empty() || Instant::now() >= until {
            return Ok(behind);
        }
        if said.elapsed() >= Duration::from_secs(5) {
            eprintln!("waiting for {} to erase their copies…", behind.join(", "));
            said = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// How long a start waits for the group's store to read the log.
const PATIENCE: Duration = Duration::from_secs(30);

/// [`catch_up`] at a member's start, waiting up to 30 s for the store; each operation
/// applied said in the log.
pub fn catch_up_at_start(config: &Config) -> Result<(), GroupOpsError> {
    let Some(group) = &config.group else {
        return Ok(());
    };
    let mut etcd = Etcd::new(group)?;
    let until = Instant::now() + PATIENCE;
    let applied = loop {
        match catch_up(config, &mut etcd) {
            // Unreachable: waited for. Refused (a user or prefix not granted): said now.
            Err(GroupOpsError::Store(e))
                if Instant::now() < until && !matches!(e, GroupError::Refused { .. }) =>
            {
                tracing::warn!(error = %e, "the group's store does not answer; start-up waits for it");
                std::thread::sleep(Duration::from_secs(1));
            }
            other => break other?,
        }
    };
    for a in applied {
        say(&a.op, a.report.as_ref());
    }
    Ok(())
}

/// One log line for an operation of the group applied here.
fn say(op: &GroupOp, report: Option<&Report>) {
    match (op, report) {
        (
            GroupOp::Erase {
                tenant, device, by, ..
            },
            Some(r),
        ) => tracing::info!(
            tenant,
            device = device.as_deref().unwrap_or("*"),
            by,
            buffer_readings = r.buffer_readings,
            quarantine_entries = r.quarantine_entries,
            file_lines = r.file_lines,
            "erased as the group asked (audit.log)"
        ),
        (
            GroupOp::Device {
                tenant,
                id,
                entry,
                by,
                ..
            },
            _,
        ) => tracing::info!(
            tenant,
            device = id,
            by,
            removed = entry.is_none(),
            "registry entry changed by the group"
        ),
        _ => {}
    }
}

/// The member thread's turn on the log ([`follow`]): `on_registry` when devices' entries
/// were applied, `on_erase` when an erasure waits. True when this gateway is in step with
/// the log (nothing left to apply). A failure is logged once until it changes.
pub fn follower(
    config: std::sync::Arc<Config>,
    on_registry: impl Fn() + Send + 'static,
    on_erase: impl Fn() + Send + 'static,
) -> impl FnMut(&mut Etcd) -> bool + Send + 'static {
    let mut last_error = String::new();
    move |etcd| match follow(&config, etcd) {
        Ok(f) => {
            last_error.clear();
            if f.registry_changed {
                on_registry();
            }
            if f.erase_pending {
                tracing::info!(
                    "the group asks for an erasure: the gateway stops and starts again in place to carry it out"
                );
                on_erase();
            }
            !f.erase_pending
        }
        Err(e) => {
            let text = e.to_string();
            if text != last_error {
                tracing::warn!(error = %text, "the group's log could not be followed; this gateway's deliveries wait; tried again every 2 s");
                last_error = text;
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigie_core::fleet::DeviceKind;

    fn entry(id: &str, epoch: u32) -> DeviceEntry {
        let key = format!("{:032x}", epoch);
        DeviceEntry::new("lyon", id, DeviceKind::AirQuality, key, epoch)
    }

    /// The log's operations, through their JSON, applied to another gateway's copy of
    /// the registry: it ends as the first one's, removed devices' epochs kept.
    #[test]
    fn a_registry_change_replayed_from_the_log_gives_the_same_registry() {
        let mut here = Registry::default();
        for id in ["aq-1", "aq-2", "aq-3"] {
            here.upsert(entry(id, 1)).unwrap();
        }
        let mut there = here.clone();
        let before = here.clone();
        here.upsert(entry("aq-2", 2)).unwrap();
        assert!(here.remove("lyon", "aq-3"));
        here.upsert(entry("aq-4", 1)).unwrap();
        let ops = registry_ops(&before, &here, "gw-a");
        assert_eq!(ops.len(), 3, "a change, an addition, a removal: {ops:?}");
        for op in &ops {
            let json = serde_json::to_vec(op).unwrap();
            let back: GroupOp = serde_json::from_slice(&json).unwrap();
            assert_eq!(&back, op);
            apply_device(&mut there, &back).unwrap();
            // Applying twice (a crash before it was recorded) changes nothing more.
            apply_device(&mut there, &back).unwrap();
        }
        assert_eq!(there.entries(), here.entries());
        assert_eq!(
            there.next_epoch("lyon", "aq-3"),
            Some(2),
            "aq-3's epoch kept"
        );
        assert!(registry_ops(&here, &there, "gw-b").is_empty());
    }

    #[test]
    fn an_erasure_carries_its_scope() {
        let op = GroupOp::Erase {
            tenant: "lyon".into(),
            device: Some("aq-1".into()),
            before_s: Some(5),
            by: "gw-a".into(),
        };
        let json = String::from_utf8(serde_json::to_vec(&op).unwrap()).unwrap();
        assert!(json.contains("\"op\":\"erase\""), "{json}");
        let scope = op.scope().unwrap();
        assert!(scope.covers("lyon", "aq-1", 4_999));
        assert!(!scope.covers("lyon", "aq-1", 5_000));
        assert!(!scope.covers("lyon", "aq-2", 0));
    }
}
