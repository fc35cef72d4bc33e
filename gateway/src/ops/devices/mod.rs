//! `devices …`: enrol, re-key, edit, revoke, remove, list and watch devices. Enrolment
//! is in [`enrol`], listing and the live feed in [`watch`].

pub mod enrol;
pub mod watch;

use crate::config::{Config, GatewayConfig};
use crate::fleet::access;
use crate::fleet::registry::{self, DeviceEntry, DeviceKind, Registry};
use crate::ops::error::MetadataError;
use crate::ops::group::GroupOpsError;
use crate::ops::{OpsError, load};
use enrol::{DeviceArgs, Enrol, ImportArgs};
use std::path::PathBuf;
use watch::WatchArgs;

/// `devices …`.
#[derive(Debug, clap::Subcommand)]
pub enum DevicesCommand {
    /// Register a new device, write its provisioning blob and its broker account (an id
    /// that exists is refused: `rotate` re-keys).
    Add(DeviceArgs),
    /// Re-key an existing device: new key, key epoch and broker password, new blob; what
    /// is not given again stays as it was.
    Rotate(DeviceArgs),
    /// Enrol many devices from a CSV file, each row as `devices add` would (the same
    /// checks; an id that exists is refused), one blob per device, one summary line.
    /// Columns, named on the first line: tenant, id, kind (air-quality, waste-bin), and
    /// any of site, zone, latitude, longitude, place, insee, container, capacity_l,
    /// bin_depth_mm, sample_interval, heartbeat.
    Import(ImportArgs),
    /// List devices, with last-seen times from the running service.
    List {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
    },
    /// Show each frame of one device as the running service judges it (stored, or
    /// rejected and why): the field check after flashing a board.
    Watch(WatchArgs),
    /// Change where a device stands or what it watches (site, zone, coordinates, place,
    /// INSEE code, bin container and capacity): no new key, no new blob.
    Edit {
        #[command(flatten)]
        device: DeviceRef,
        #[command(flatten)]
        meta: Metadata,
    },
    /// Revoke a device: its frames are rejected from the next registry reload, its broker
    /// account is removed.
    Revoke(DeviceRef),
    /// Remove a device from the registry and the broker's accounts (its stored readings
    /// stay in the database).
    Remove(DeviceRef),
}

/// Which device, in which configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceRef {
    /// Configuration file.
    #[arg(long, env = "VIGIE_CONFIG")]
    pub config: PathBuf,
    /// Tenant id (commune), e.g. `lyon`.
    #[arg(long)]
    pub tenant: String,
    /// Device id, e.g. `aq-0001`.
    #[arg(long)]
    pub id: String,
}

/// Runs a `devices` command, printing what it did.
pub fn run(cmd: DevicesCommand) -> Result<(), OpsError> {
    match cmd {
        DevicesCommand::Add(a) => enrol::enrol(a, Enrol::Add),
        DevicesCommand::Rotate(a) => enrol::enrol(a, Enrol::Rotate),
        DevicesCommand::Import(a) => enrol::import(&a),
        DevicesCommand::List { config } => {
            println!("{}", watch::list(&load(&config)?)?);
            Ok(())
        }
        DevicesCommand::Watch(a) => watch::run(&a),
        DevicesCommand::Edit { device, meta } => registry_change(&device.config, |c| {
            edit(c, &device.tenant, &device.id, &meta)
        }),
        DevicesCommand::Revoke(d) => registry_change(&d.config, |c| revoke(c, &d.tenant, &d.id)),
        DevicesCommand::Remove(d) => registry_change(&d.config, |c| remove(c, &d.tenant, &d.id)),
    }
}

/// A command that changes the registry: its report, then whether the running gateway
/// loaded the change.
pub fn registry_change(
    config: &std::path::Path,
    change: impl FnOnce(&Config) -> Result<String, OpsError>,
) -> Result<(), OpsError> {
    let c = load(config)?;
    println!("{}", change(&c)?);
    println!("{}", crate::ops::service::reload(&c)?);
    Ok(())
}

/// [`change_here`], and in a group the changed devices' entries added to the group's log
/// first (every member applies them, [`crate::ops::group`]): nothing is saved if the
/// group's store does not take them.
pub fn change<T>(
    c: &Config,
    f: impl FnOnce(&mut Registry) -> Result<T, OpsError>,
) -> Result<T, OpsError> {
    let Some(group) = &c.group else {
        return change_here(&c.gateway, f);
    };
    let mut etcd = crate::store::group::Etcd::new(group).map_err(GroupOpsError::from)?;
    change_here(&c.gateway, |registry| {
        let before = registry.clone();
        let out = f(registry)?;
        let ops = crate::ops::group::registry_ops(&before, registry, &c.mqtt.client_id);
        crate::ops::group::publish(&mut etcd, &ops).map_err(GroupOpsError::from)?;
        Ok(out)
    })
}

/// A read-modify-write of this gateway's registry under its lock; the broker's access
/// file is rewritten from the result under the same lock. Nothing is saved if `f` fails.
pub fn change_here<T>(
    g: &GatewayConfig,
    f: impl FnOnce(&mut Registry) -> Result<T, OpsError>,
) -> Result<T, OpsError> {
    let mut locked = registry::lock(&g.registry)?;
    let out = f(&mut locked.registry)?;
    locked.save()?;
    let path = g.broker_access();
    access::write(&path, &locked.registry).map_err(crate::ops::error::file(&path))?;
    Ok(out)
}

/// [`change`] of one existing device by `f` (false: no such device).
fn change_device(
    c: &Config,
    tenant: &str,
    id: &str,
    f: impl FnOnce(&mut Registry, &str, &str) -> bool,
) -> Result<(), OpsError> {
    change(c, |registry| {
        f(registry, tenant, id)
            .then_some(())
            .ok_or_else(|| no_device(&c.gateway, tenant, id))
    })
}

fn no_device(g: &GatewayConfig, tenant: &str, id: &str) -> OpsError {
    OpsError::NoDevice {
        name: format!("{tenant}/{id}"),
        registry: g.registry.clone(),
    }
}

/// `devices edit`: sets what `meta` gives on an existing device; its key stays.
pub fn edit(c: &Config, tenant: &str, id: &str, meta: &Metadata) -> Result<String, OpsError> {
    if *meta == Metadata::default() {
        return Err(OpsError::NothingToChange);
    }
    change(c, |registry| {
        let mut entry = registry
            .get(tenant, id)
            .ok_or_else(|| no_device(&c.gateway, tenant, id))?
            .entry
            .clone();
        meta.apply(&mut entry)?;
        Ok(registry.upsert(entry)?)
    })?;
    Ok(format!("edited {tenant}/{id} (key unchanged)"))
}

/// `devices revoke`: the gateway rejects the device's frames from its next registry
/// reload; the broker refuses the device from its next restart. The entry stays (its
/// frames are counted as `revoked`).
pub fn revoke(c: &Config, tenant: &str, id: &str) -> Result<String, OpsError> {
    change_device(c, tenant, id, Registry::revoke)?;
    Ok(format!(
        "revoked {tenant}/{id}.\n{}",
        access::restart_hint(&c.gateway.broker_access())
    ))
}

/// `devices remove`: the device leaves the registry and the broker's accounts (its
/// frames are then `unknown_device`). Its stored readings stay in the database.
pub fn remove(c: &Config, tenant: &str, id: &str) -> Result<String, OpsError> {
    change_device(c, tenant, id, Registry::remove)?;
    Ok(format!(
        "removed {tenant}/{id} from the registry (its stored readings stay in the database).\n{}",
        access::restart_hint(&c.gateway.broker_access())
    ))
}

/// What the registry says of a device besides its key and settings: where it stands and,
/// for a bin, what container it watches (`devices add` and `devices edit`). It goes to the
/// database as `device_info` and to open-data exports.
#[derive(Debug, Default, Clone, PartialEq, clap::Args)]
pub struct Metadata {
    /// Site name (database tag).
    #[arg(long)]
    pub site: Option<String>,
    /// Zone (database tag).
    #[arg(long)]
    pub zone: Option<String>,
    /// Latitude (WGS84 degrees).
    #[arg(long, allow_negative_numbers = true)]
    pub latitude: Option<f64>,
    /// Longitude (WGS84 degrees).
    #[arg(long, allow_negative_numbers = true)]
    pub longitude: Option<f64>,
    /// Address or place name, e.g. "12 place Bellecour".
    #[arg(long)]
    pub place: Option<String>,
    /// INSEE code of the commune the device stands in, e.g. 69123.
    #[arg(long)]
    pub insee: Option<String>,
    /// Bin category: fixed, ground, other, portable, underground (FIWARE WasteContainer).
    #[arg(long)]
    pub container: Option<String>,
    /// Bin capacity, litres.
    #[arg(long)]
    pub capacity_l: Option<u32>,
}

/// FIWARE `WasteContainer.category` values.
pub const CONTAINER_CATEGORIES: &[&str] = &["fixed", "ground", "other", "portable", "underground"];

impl Metadata {
    /// Sets on `entry` what was given, checked first (nothing changes on an error).
    pub fn apply(&self, entry: &mut DeviceEntry) -> Result<(), MetadataError> {
        if self.latitude.is_some_and(|v| !(-90.0..=90.0).contains(&v)) {
            return Err(MetadataError::Latitude);
        }
        if self
            .longitude
            .is_some_and(|v| !(-180.0..=180.0).contains(&v))
        {
            return Err(MetadataError::Longitude);
        }
        if let Some(code) = &self.insee {
            let ok = code.len() == 5
                && code.is_ascii()
                && (code.bytes().all(|b| b.is_ascii_digit())
                    || (code.starts_with("2A") || code.starts_with("2B"))
                        && code[2..].bytes().all(|b| b.is_ascii_digit()));
            if !ok {
                return Err(MetadataError::Insee(code.clone()));
            }
        }
        if let Some(c) = &self.container
            && !CONTAINER_CATEGORIES.contains(&c.as_str())
        {
            return Err(MetadataError::Container(c.clone()));
        }
        if (self.container.is_some() || self.capacity_l.is_some())
            && entry.kind != DeviceKind::WasteBin
        {
            return Err(MetadataError::NotABin);
        }
        let set = |to: &mut Option<String>, from: &Option<String>| {
            if let Some(v) = from {
                *to = (!v.is_empty()).then(|| v.clone());
            }
        };
        set(&mut entry.site, &self.site);
        set(&mut entry.zone, &self.zone);
        set(&mut entry.place, &self.place);
        set(&mut entry.insee, &self.insee);
        set(&mut entry.container, &self.container);
        entry.latitude = self.latitude.or(entry.latitude);
        entry.longitude = self.longitude.or(entry.longitude);
        entry.capacity_l = self.capacity_l.or(entry.capacity_l);
        Ok(())
    }
}
