//! `erase` on the command line: the arguments and the report.

use super::{Scope, run};
use crate::config::Config;
use crate::ops::text::parse_utc;
use crate::ops::{OpsError, error, load};
use protocol::json::UtcTime;
use std::path::PathBuf;

/// `erase`.
#[derive(Debug, clap::Args)]
pub struct EraseArgs {
    /// Configuration file.
    #[arg(long, env = "VIGIE_CONFIG")]
    pub config: PathBuf,
    /// The commune.
    #[arg(long)]
    pub tenant: String,
    /// Only this device of the commune.
    #[arg(long)]
    pub device: Option<String>,
    /// Only readings measured before this UTC time: `2026-01-01` or
    /// `2026-01-01T12:00:00Z`.
    #[arg(long, value_parser = parse_utc)]
    pub before: Option<u32>,
    /// Erase for good (otherwise a dry run).
    #[arg(long)]
    pub yes: bool,
    /// In a group of gateways: how long to wait, in seconds, for the others to erase
    /// their copies before the database is erased.
    #[arg(long, default_value_t = 120)]
    pub group_wait: u64,
}

/// Runs `erase` and prints its report.
pub fn command(a: &EraseArgs) -> Result<(), OpsError> {
    let c = load(&a.config)?;
    println!("{}", erase(&c, a)?);
    Ok(())
}

/// `erase`: the readings of a commune, or of one of its devices, optionally only those
/// measured before a time, removed from every place they are kept (see [`super`]).
/// Without `--yes`, a dry run that says what would go.
pub fn erase(config: &Config, a: &EraseArgs) -> Result<String, OpsError> {
    error::id("--tenant", &a.tenant)?;
    if let Some(d) = &a.device {
        error::id("--device", d)?;
    }
    let scope = Scope {
        tenant: a.tenant.clone(),
        device: a.device.clone(),
        before_s: a.before,
    };
    let report = run(
        config,
        &scope,
        a.yes,
        std::time::Duration::from_secs(a.group_wait),
    )?;
    let whose = match &a.device {
        Some(d) => format!("{}/{d}", a.tenant),
        None => format!("every device of {}", a.tenant),
    };
    let when = a.before.map_or(String::new(), |b| {
        format!(" measured before {}", UtcTime(b))
    });
    let verb = if a.yes { "erased" } else { "would erase" };
    let mut out = format!(
        "{verb} the readings of {whose}{when}:\n  buffer: {} readings\n  quarantine: {} \
         entries\n  line-protocol files: {} lines\n  device state (last seen, battery): {} \
         devices\n  database: {}\n",
        report.buffer_readings,
        report.quarantine_entries,
        report.file_lines,
        report.device_states,
        report.database
    );
    if config.group.is_some() {
        out.push_str(if a.yes {
            "  every other gateway of the group erased its own copies before the database was\n"
        } else {
            "  (counted on this gateway only: each other gateway of the group erases its own)\n"
        });
    }
    if report.progress_reset {
        out.push_str("  (the service writes its buffer again from the start at its next run; the database keeps each point once)\n");
    }
    out.push_str(&if a.yes {
        format!(
            "audit line appended to {}",
            config.gateway.data_dir.join("audit.log").display()
        )
    } else {
        "nothing changed: run again with --yes to erase".into()
    });
    Ok(out)
}
