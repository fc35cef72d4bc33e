//! Health: a typed value the loops set and `/readyz` reads (never the metrics).
//!
//! Ready means the gateway takes traffic and stores it: connected to the broker, and the
//! buffer and quarantine writable. A tenant whose database refuses is *held* (its data
//! waits in the buffer, the others flow): that is reported in the detail and in metrics,
//! and does not make the gateway unready.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// Whether accepted frames can be made durable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Store {
    /// Appends succeed.
    #[default]
    Ok,
    /// The buffer reached `buffer.max_mib`: waiting for the database to drain it.
    Full {
        /// Bytes in use.
        used: u64,
        /// Limit.
        max: u64,
    },
    /// The disk has no room left (`ENOSPC`/`EDQUOT`).
    DiskFull {
        /// The error.
        error: String,
    },
    /// Another disk error (`EIO`, permissions…).
    Failing {
        /// The error.
        error: String,
    },
    /// The group's shared store (etcd) does not answer: nothing can be judged.
    Group {
        /// The error.
        error: String,
    },
}

impl Store {
    /// What is wrong, in one line; `None` when appends succeed.
    pub fn problem(&self) -> Option<String> {
        match self {
            Self::Ok => None,
            Self::Full { used, max } => Some(format!(
                "buffer full ({used} of {max} bytes): acknowledgements withheld until the database catches up"
            )),
            Self::DiskFull { error } => Some(format!(
                "disk full ({error}): acknowledgements withheld until space is freed"
            )),
            Self::Failing { error } => {
                Some(format!("disk error ({error}): acknowledgements withheld"))
            }
            Self::Group { error } => Some(format!(
                "the group's store cannot be used ({error}): acknowledgements withheld"
            )),
        }
    }
}

/// Delivery to one tenant's database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Tenant {
    /// Writes succeed.
    Flowing,
    /// Writes fail; the tenant's data waits in the buffer and is retried on its own.
    Held {
        /// Why, as the database answered.
        error: String,
        /// Unix ms since when.
        since_ms: u64,
    },
}

/// Everything `/readyz` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Connected to the broker and subscribed.
    pub broker_connected: bool,
    /// Why the broker refused this gateway (its account, its subscription), if it did.
    pub broker_error: Option<String>,
    /// Buffer and quarantine.
    pub store: Store,
    /// Delivery per tenant that has been written to (or tried).
    pub tenants: BTreeMap<String, Tenant>,
    /// The last registry reload failed (the previous registry stays in force).
    pub registry_error: Option<String>,
    /// The host clock is not known to be synchronised (`clock.synchronised`): readings
    /// older than `validation.max_age` are held, not refused (SPEC §13.3).
    pub clock_unsynchronised: bool,
    /// The database dropped rows it had answered 2xx for, and what was done, until a
    /// later write is confirmed kept.
    pub database_dropped: Option<String>,
    /// The last alert message failed to go, and why (until one goes).
    pub alerts_error: Option<String>,
    /// The group of gateways this one belongs to (`[group]`), as etcd lists it.
    pub group: Option<GroupView>,
}

/// A group's members, as the group's etcd lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupView {
    /// The group's key prefix.
    pub prefix: String,
    /// The gateways alive in it (their client ids), this one included.
    pub members: Vec<String>,
    /// Why the list could not be read, if it could not.
    pub error: Option<String>,
}

impl Snapshot {
    /// Ready to take traffic.
    pub fn ready(&self) -> bool {
        self.broker_connected && self.store == Store::Ok
    }

    /// One line naming what is wrong, for `/readyz` and logs.
    pub fn summary(&self) -> String {
        let mut problems = Vec::new();
        if !self.broker_connected {
            problems.push(match &self.broker_error {
                Some(e) => format!("not connected to the broker: {e}"),
                None => "not connected to the broker".to_string(),
            });
        }
        problems.extend(self.store.problem());
        for (tenant, state) in &self.tenants {
            if let Tenant::Held { error, .. } = state {
                problems.push(format!("tenant {tenant} held: {error}"));
            }
        }
        if let Some(e) = &self.registry_error {
            problems.push(format!("registry reload failed: {e}"));
        }
        if self.clock_unsynchronised {
            problems.push("readings held: host clock not synchronised".into());
        }
        problems.extend(self.database_dropped.clone());
        if let Some(e) = &self.alerts_error {
            problems.push(format!("alert messages not delivered: {e}"));
        }
        if problems.is_empty() {
            "ready".into()
        } else {
            problems.join("; ")
        }
    }
}

/// Shared health, set by the loops.
#[derive(Debug, Default)]
pub struct Health(Mutex<Snapshot>);

impl Health {
    fn lock(&self) -> MutexGuard<'_, Snapshot> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    /// Sets the broker connection state: subscribed (`Ok`), or not, with the broker's
    /// refusal if there was one.
    pub fn set_broker(&self, state: Result<(), Option<String>>) {
        let mut s = self.lock();
        s.broker_connected = state.is_ok();
        s.broker_error = state.err().flatten();
    }

    /// Sets the store state; returns the previous one.
    pub fn set_store(&self, store: Store) -> Store {
        std::mem::replace(&mut self.lock().store, store)
    }

    /// Sets a tenant's delivery state; returns the previous one.
    pub fn set_tenant(&self, tenant: &str, state: Tenant) -> Option<Tenant> {
        self.lock().tenants.insert(tenant.to_string(), state)
    }

    /// Records whether the host clock is synchronised.
    pub fn set_clock_synchronised(&self, synced: bool) {
        self.lock().clock_unsynchronised = !synced;
    }

    /// Says (or stops saying) that the database dropped rows it had accepted.
    pub fn set_database_dropped(&self, what: Option<String>) {
        self.lock().database_dropped = what;
    }

    /// Records why the last alert message did not go (`None` once one goes).
    pub fn set_alerts_error(&self, error: Option<String>) {
        self.lock().alerts_error = error;
    }

    /// Records the group's members as etcd last listed them.
    pub fn set_group(&self, view: GroupView) {
        self.lock().group = Some(view);
    }

    /// Records the outcome of a registry reload.
    pub fn set_registry_error(&self, error: Option<String>) {
        self.lock().registry_error = error;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_tenant_is_reported_but_keeps_the_gateway_ready() {
        let h = Health::default();
        h.set_broker(Ok(()));
        h.set_tenant(
            "lyon",
            Tenant::Held {
                error: "HTTP 404: database not found".into(),
                since_ms: 1,
            },
        );
        let s = h.snapshot();
        assert!(s.ready());
        assert!(s.summary().contains("tenant lyon held: HTTP 404"));
        h.set_store(Store::DiskFull {
            error: "No space left on device".into(),
        });
        let s = h.snapshot();
        assert!(!s.ready());
        assert!(s.summary().starts_with("disk full"), "{}", s.summary());
    }

    #[test]
    fn a_refusing_broker_is_named_in_the_summary() {
        let h = Health::default();
        h.set_broker(Err(Some(
            "the broker refused this gateway's account".into(),
        )));
        let s = h.snapshot();
        assert!(!s.ready());
        assert_eq!(
            s.summary(),
            "not connected to the broker: the broker refused this gateway's account"
        );
        h.set_broker(Ok(()));
        assert!(h.snapshot().ready() && h.snapshot().broker_error.is_none());
    }
}
