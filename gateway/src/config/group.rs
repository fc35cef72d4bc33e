//! `[group]`: the store a group of gateways shares its device state in (docs/OPERATIONS.md
//! "Scaling out"). Absent: one gateway, its device state in its own data directory.

use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[group]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// The etcd cluster's client URLs (`http://host:2379`), every member: a request goes
    /// to the next one when a member does not answer.
    pub etcd: Vec<String>,
    /// Key prefix of this group's state (several groups may share one cluster).
    pub prefix: String,
    /// How long one request to the store may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The CA certificate that verifies the members' (`https://`) certificates, if not
    /// one the system trusts (`vigie-gateway broker-cert` issues them from the
    /// project's CA, as for the broker).
    pub ca_file: Option<PathBuf>,
    /// The gateways' etcd user (`etcdctl user add`), with `password_file`.
    pub username: Option<String>,
    /// The file holding that user's password (never in this one).
    pub password_file: Option<PathBuf>,
    /// Most operations in one etcd transaction: etcd's `--max-txn-ops` (128 unless set).
    /// A commit claims at most about half as many devices: 1024 (with etcd run with
    /// `--max-txn-ops 1024`) drains a backlog 13 to 16 times faster (docs/PERFORMANCE.md).
    pub max_txn_ops: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            etcd: Vec::new(),
            prefix: "vigie".into(),
            timeout: Duration::from_secs(2),
            ca_file: None,
            username: None,
            password_file: None,
            max_txn_ops: 128,
        }
    }
}

impl GroupConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.etcd.is_empty() {
            return invalid(
                "group.etcd lists no etcd member (remove [group] for one gateway)".into(),
            );
        }
        if let Some(bad) = self
            .etcd
            .iter()
            .find(|u| !u.starts_with("http://") && !u.starts_with("https://"))
        {
            return invalid(format!(
                "group.etcd: {bad:?} is not an http:// or https:// URL"
            ));
        }
        if self.username.is_some() != self.password_file.is_some() {
            return invalid("group: username and password_file go together".into());
        }
        // Off this host, the store holds what decides which readings are stored: no
        // clear text, no anonymous access (a test bench on one host may do without).
        if let Some(url) = self.etcd.iter().find(|u| !on_loopback(u)) {
            if url.starts_with("http://") {
                return invalid(format!(
                    "group.etcd: {url:?} is not on this host: use https:// (docs/OPERATIONS.md \"Scaling out\")"
                ));
            }
            if self.username.is_none() {
                return invalid(format!(
                    "group.etcd: {url:?} is not on this host: set group.username and group.password_file"
                ));
            }
        }
        if self.prefix.is_empty() || self.prefix.contains(|c: char| c.is_whitespace()) {
            return invalid("group.prefix must be a non-empty word".into());
        }
        if !(4..=100_000).contains(&self.max_txn_ops) {
            return invalid(
                "group.max_txn_ops must be between 4 and 100000 (etcd's --max-txn-ops)".into(),
            );
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return invalid("group.timeout must be between 1 ms and 60 s".into());
        }
        Ok(())
    }
}

/// Whether a member's URL names this host.
fn on_loopback(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or_default();
    let host = rest.split('/').next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}
