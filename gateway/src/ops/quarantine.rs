//! `quarantine list | replay`: the frames and lines the gateway refused or a database
//! would not keep.

use crate::config::Config;
use crate::ops::error::file;
use crate::ops::service::request_blocking;
use crate::ops::{OpsError, load};
use crate::store::quarantine;
use protocol::json::UtcTime;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `quarantine …`.
#[derive(Debug, clap::Subcommand)]
pub enum QuarantineCommand {
    /// List quarantined frames with their reasons.
    List {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
    },
    /// Re-submit quarantined frames through the running service's pipeline.
    Replay {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
    },
}

/// Runs a `quarantine` command and prints its report.
pub fn run(cmd: QuarantineCommand) -> Result<(), OpsError> {
    let out = match cmd {
        QuarantineCommand::List { config } => list(&load(&config)?),
        QuarantineCommand::Replay { config } => replay(&load(&config)?),
    }?;
    println!("{out}");
    Ok(())
}

/// `quarantine list`.
pub fn list(config: &Config) -> Result<String, OpsError> {
    let data = &config.gateway.data_dir;
    let mut out = format!(
        "{:<20} {:<18} {:<40} {:>6}  DETAIL\n",
        "RECEIVED (UTC)", "REASON", "TOPIC", "BYTES"
    );
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    let mut unreadable = 0;
    for dir in ["quarantine", "quarantine-db"] {
        let dir = data.join(dir);
        let (entries, bad) = quarantine::read_all(&dir).map_err(file(&dir))?;
        unreadable += bad;
        for e in entries {
            *by_reason.entry(e.reason.clone()).or_default() += 1;
            out.push_str(&format!(
                "{:<20} {:<18} {:<40} {:>6}  {}\n",
                UtcTime((e.received_ms / 1000) as u32).to_string(),
                e.reason,
                e.topic,
                e.payload.len() / 2,
                e.detail
            ));
        }
    }
    let total: usize = by_reason.values().sum();
    let counts: Vec<String> = by_reason.iter().map(|(r, n)| format!("{r}={n}")).collect();
    out.push_str(&format!("{total} quarantined ({})", counts.join(" ")));
    if unreadable > 0 {
        out.push_str(&format!("; {unreadable} unreadable lines"));
    }
    Ok(out)
}

/// `quarantine replay`: asks the running service to re-submit its quarantine.
pub fn replay(config: &Config) -> Result<String, OpsError> {
    const WHAT: &str = "quarantine replay";
    let addr = config.http.listen.ok_or(OpsError::NoStatusPort(WHAT))?;
    let token = config
        .http
        .admin_token
        .as_ref()
        .ok_or(OpsError::NoAdminToken(WHAT))?;
    let body = request_blocking(
        addr,
        reqwest::Method::POST,
        "/quarantine/replay",
        Some(token),
    )
    .map_err(|source| OpsError::Service { addr, source })?;
    Ok(format!("replayed through the pipeline: {}", body.trim()))
}
