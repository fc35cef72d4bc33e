//! `tenants add | list | remove`: a commune's database and its retention.

use crate::config::Config;
use crate::deliver::retention;
use crate::deliver::tenants::{Influx, TenantsError};
use crate::fleet::registry::{Registry, RegistryFile};
use crate::ops::service::block_on;
use crate::ops::text::table;
use crate::ops::{OpsError, error, load};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `tenants …`.
#[derive(Debug, clap::Subcommand)]
pub enum TenantsCommand {
    /// Create a commune's database (InfluxDB 1.x) with its retention; an existing one
    /// gets the new retention.
    Add {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
        /// The commune's id, as its devices carry it.
        #[arg(long)]
        tenant: String,
        /// How long readings are kept, e.g. `730d` (default: database.retention; none:
        /// for ever).
        #[arg(long, value_parser = humantime::parse_duration)]
        retention: Option<Duration>,
    },
    /// List the communes of the registry and their databases.
    List {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
    },
    /// A commune leaves: refused while it has devices; its database only with
    /// --drop-database.
    Remove {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
        /// The commune's id.
        #[arg(long)]
        tenant: String,
        /// Also drop its database and every reading in it.
        #[arg(long)]
        drop_database: bool,
    },
}

/// Runs a `tenants` command and prints its report.
pub fn run(cmd: TenantsCommand) -> Result<(), OpsError> {
    let out = match cmd {
        TenantsCommand::Add {
            config,
            tenant,
            retention,
        } => add(&load(&config)?, &tenant, retention),
        TenantsCommand::List { config } => list(&load(&config)?),
        TenantsCommand::Remove {
            config,
            tenant,
            drop_database,
        } => remove(&load(&config)?, &tenant, drop_database),
    }?;
    println!("{out}");
    Ok(())
}

/// `tenants add`: the commune's database, kept for `retention` (default
/// `database.retention`; none: for ever). Idempotent: an existing database gets the new
/// retention.
pub fn add(config: &Config, tenant: &str, retention: Option<Duration>) -> Result<String, OpsError> {
    error::id("--tenant", tenant)?;
    let retention = retention.or(config.database.as_ref().and_then(|d| d.retention));
    let influx = match Influx::new(config.database.as_ref()) {
        Ok(influx) => influx,
        Err(TenantsError::Unsupported(why)) => {
            return Ok(format!("{tenant}: nothing to create here. {why}."));
        }
        Err(e) => return Err(e.into()),
    };
    let max_age = config.validation.max_age;
    if let Some(keeps) = retention.filter(|r| *r < max_age + retention::MARGIN) {
        return Err(OpsError::RetentionTooShort { keeps, max_age });
    }
    let state = block_on(influx.create(tenant, retention))??;
    Ok(format!(
        "database {} ready for {tenant}; readings kept {}",
        state.name,
        kept(state.retention.as_deref())
    ))
}

/// `tenants list`: the communes of the registry (devices, revoked) and their databases.
pub fn list(config: &Config) -> Result<String, OpsError> {
    let registry = Registry::load(&config.gateway.registry)?;
    let mut tenants: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for e in registry.entries() {
        let t = tenants.entry(e.tenant.as_str()).or_default();
        t.0 += 1;
        t.1 += usize::from(e.revoked);
    }
    let influx = Influx::new(config.database.as_ref());
    // Communes made with `tenants add` before any device was enrolled are listed too.
    let made = match &influx {
        Ok(influx) => block_on(influx.communes())?.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    for tenant in &made {
        tenants.entry(tenant.as_str()).or_default();
    }
    let mut rows = vec![["TENANT", "DEVICES", "REVOKED", "DATABASE"].map(String::from)];
    for (tenant, (devices, revoked)) in &tenants {
        rows.push([
            tenant.to_string(),
            devices.to_string(),
            revoked.to_string(),
            database(config, &influx, tenant)?,
        ]);
    }
    let mut out = table(&rows);
    out.push_str(&format!("{} tenants", tenants.len()));
    if let Err(TenantsError::Unsupported(why)) = &influx {
        out.push_str(&format!(" ({why})"));
    }
    Ok(out)
}

/// The DATABASE column of `tenants list`.
fn database(
    config: &Config,
    influx: &Result<Influx, TenantsError>,
    tenant: &str,
) -> Result<String, OpsError> {
    Ok(match influx {
        Ok(influx) => match block_on(influx.state(tenant))? {
            Ok(s) if s.exists => format!(
                "{} (readings kept {})",
                s.name,
                kept(s.retention.as_deref())
            ),
            Ok(s) => format!("{} MISSING: `tenants add --tenant {tenant}`", s.name),
            Err(e) => format!("unknown ({e})"),
        },
        Err(TenantsError::NoDatabase) => "none: line-protocol files".into(),
        Err(_) => config
            .database
            .as_ref()
            .map_or_else(String::new, |d| d.target(tenant)),
    })
}

/// `tenants remove`: a commune leaves. Refused while the registry still holds its devices;
/// its database (and every reading in it) is dropped only with `drop_database`.
pub fn remove(config: &Config, tenant: &str, drop_database: bool) -> Result<String, OpsError> {
    let registry = Registry::load(&config.gateway.registry)?;
    let devices = registry
        .entries()
        .iter()
        .filter(|e| e.tenant == tenant)
        .count();
    if devices > 0 {
        let tenant = tenant.to_string();
        return Err(OpsError::TenantHasDevices { tenant, devices });
    }
    if !drop_database {
        return Ok(format!(
            "{tenant} has no devices left; its readings stay in the database (add \
             --drop-database to delete them)"
        ));
    }
    if let Some(db) = &config.database {
        let name = db.target(tenant);
        // Another commune writing to the same database (database.tenants maps it there,
        // or its default name is this one): dropping it would take that one's readings.
        let mut others: Vec<String> = registry
            .tenants()
            .into_iter()
            .chain(db.tenants.keys().map(String::as_str))
            .filter(|t| *t != tenant && db.target(t) == name)
            .map(String::from)
            .collect();
        others.dedup();
        if !others.is_empty() {
            return Err(OpsError::SharedDatabase { name, others });
        }
    }
    let influx = Influx::new(config.database.as_ref())?;
    let name = block_on(influx.drop(tenant))??;
    Ok(format!(
        "dropped database {name} of {tenant} and every reading in it"
    ))
}

/// InfluxDB's retention text in words: `17520h0m0s` → `for 730 days`.
fn kept(retention: Option<&str>) -> String {
    match retention.map(|d| (d, retention::parse_influx(d))) {
        None | Some((_, Some(None))) => "for ever".into(),
        Some((_, Some(Some(d)))) => format!("for {}", retention::words(d)),
        Some((d, None)) => format!("for {d}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentions_read_in_days() {
        assert_eq!(kept(Some("17520h0m0s")), "for 730 days");
        assert_eq!(kept(Some("0s")), "for ever");
        assert_eq!(kept(None), "for ever");
        assert_eq!(kept(Some("36h0m0s")), "for 36 hours");
    }
}
