//! The device registry's store: a TOML file (`[[device]]` and `[[gateway]]` tables) that
//! the `devices` and `gateways` commands edit and the service reloads on SIGHUP. The model
//! is [`vigie_core::fleet`], re-exported here.
//!
//! Edits keep the service working: a read-modify-write holds an exclusive lock (parallel
//! commands all land), the rewrite keeps the file's comments and layout (`toml_edit`),
//! the new file replaces the old atomically under a unique temporary name with the old
//! one's owner, group and mode (a new file: group `vigie`, mode 0640, so the service
//! reads it and nobody else does).

pub use vigie_core::fleet::*;

use crate::config::{ParseError, Secret};
use protocol::provision::{Provisioning, Transport};
use protocol::{DeviceKey, Id};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table};

/// What one device is enrolled with: the registry entry's fields and the settings its
/// provisioning blob carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrolment {
    /// Tenant id.
    pub tenant: String,
    /// Device id.
    pub id: String,
    /// Kind.
    pub kind: DeviceKind,
    /// Site name (database tag).
    pub site: Option<String>,
    /// Zone (database tag).
    pub zone: Option<String>,
    /// WGS84 latitude.
    pub latitude: Option<f64>,
    /// WGS84 longitude.
    pub longitude: Option<f64>,
    /// Bin depth, sensor to bottom (bins).
    pub bin_depth_mm: Option<u16>,
    /// Seconds between samples.
    pub sample_interval_s: u16,
    /// Seconds after which an unchanged reading is sent anyway (0: never).
    pub heartbeat_s: u16,
    /// Seconds between reports, the modem off in between (0: stays connected).
    pub report_interval_s: u16,
    /// Broker host the device dials.
    pub broker_host: String,
    /// Broker port.
    pub broker_port: u16,
    /// How the board's connection to the broker is protected.
    pub transport: Transport,
}

/// Why a device cannot be enrolled as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrolError {
    /// The tenant id breaks the identifier rules.
    #[error("tenant {0:?}: {1}")]
    Tenant(String, protocol::TopicError),
    /// The device id breaks the identifier rules.
    #[error("device id {0:?}: {1}")]
    Id(String, protocol::TopicError),
    /// The broker host does not fit the blob.
    #[error("broker host {0:?}: 1 to 64 ASCII bytes")]
    Host(String),
    /// The broker password does not fit the blob (never shown).
    #[error("broker password: 1 to 32 printable ASCII characters without space")]
    Password,
    /// A sampling interval of 0 (the firmware refuses to run).
    #[error("the sampling interval must be 1 to 65535 s")]
    Interval,
    /// A report interval under a minute or under the sampling interval.
    #[error(
        "the report interval must be 0 (stay connected) or 60 to 65535 s and at least the \
         sampling interval"
    )]
    ReportInterval,
    /// A bin without its depth, or with one beyond what the sensor measures.
    #[error("a waste bin needs its depth, sensor to bottom, 1 to 10000 mm")]
    BinDepth,
    /// No system randomness for the password's salt.
    #[error("no system randomness: {0}")]
    Random(getrandom::Error),
}

/// The registry entry and the provisioning blob of one device under `key` and `epoch`,
/// with broker `password` (the entry keeps only its hash): the one place where a device's
/// identity, key and settings are put together (the `devices add` command, the demo and
/// the test harness).
pub fn enroll(
    e: &Enrolment,
    key: [u8; 16],
    epoch: u32,
    password: &Secret,
) -> Result<(DeviceEntry, Provisioning), EnrolError> {
    let blob = blob(e, key, epoch, password)?;
    let broker_password_hash =
        Some(crate::fleet::access::hash_password(password).map_err(EnrolError::Random)?);
    let entry = DeviceEntry {
        id: e.id.clone(),
        tenant: e.tenant.clone(),
        kind: e.kind,
        key: hex::encode(key),
        epoch,
        site: e.site.clone(),
        zone: e.zone.clone(),
        latitude: e.latitude,
        longitude: e.longitude,
        bin_depth_mm: e.bin_depth_mm,
        sample_interval_s: Some(e.sample_interval_s),
        place: None,
        insee: None,
        container: None,
        capacity_l: None,
        heartbeat_s: Some(e.heartbeat_s),
        report_interval_s: (e.report_interval_s > 0).then_some(e.report_interval_s),
        broker_password_hash,
        broker_host: Some(e.broker_host.clone()),
        broker_port: Some(e.broker_port),
        broker_ca_sha256: match e.transport {
            Transport::Plain => None,
            Transport::Tls { ca_sha256 } => Some(hex::encode(ca_sha256)),
        },
        revoked: false,
    };
    Ok((entry, blob))
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gateway: Vec<GatewayAccount>,
    #[serde(default)]
    device: Vec<DeviceEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    removed: Vec<Removed>,
}

/// The registry file: [`Registry`] (the core's model) read from and written to TOML.
pub trait RegistryFile: Sized {
    /// The service's load: the file must exist (an empty file is an empty registry). A
    /// missing registry at start or on reload is an error, never "no devices".
    fn load_existing(path: &Path) -> Result<Self, RegistryError>;
    /// Loads the file; a missing file is an empty registry (for `devices add`).
    fn load(path: &Path) -> Result<Self, RegistryError>;
    /// Parses a registry file's `text` (`path` names it in errors).
    fn parse(text: &str, path: &str) -> Result<Self, RegistryError>;
    /// Writes the registry to `path`, keeping the comments and layout of the file it
    /// replaces; atomically, with that file's owner, group and mode (a new file: group
    /// [`SERVICE_GROUP`], mode 0640). A read-modify-write goes through [`lock`].
    fn save(&self, path: &Path) -> Result<(), RegistryError>;
}

impl RegistryFile for Registry {
    /// The service's load: the file must exist (an empty file is an empty registry). A
    /// missing registry at start or on reload is an error, never "no devices".
    fn load_existing(path: &Path) -> Result<Self, RegistryError> {
        if let Err(source) = std::fs::metadata(path) {
            return Err(RegistryError::Io {
                path: path.display().to_string(),
                source,
            });
        }
        Self::load(path)
    }

    /// Loads the file; a missing file is an empty registry (for `devices add`).
    fn load(path: &Path) -> Result<Self, RegistryError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(RegistryError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses a registry file's `text` (`path` names it in errors).
    fn parse(text: &str, path: &str) -> Result<Self, RegistryError> {
        // Line, column and reason only: toml's own `Display` quotes the line, and a
        // registry line holds a device key.
        let file: File = toml::from_str(text).map_err(|e| RegistryError::Parse {
            path: path.to_string(),
            message: ParseError::at(text, e.span(), e.message()).to_string(),
        })?;
        let mut registry = Self::from_entries(file.device)?;
        for g in file.gateway {
            registry.set_gateway(g)?;
        }
        registry.set_removed(file.removed);
        Ok(registry)
    }

    /// Writes the registry to `path`, keeping the comments and layout of the file it
    /// replaces; atomically, with that file's owner, group and mode (a new file: group
    /// [`SERVICE_GROUP`], mode 0640). A read-modify-write goes through [`lock`].
    fn save(&self, path: &Path) -> Result<(), RegistryError> {
        let io = |source| RegistryError::Io {
            path: path.display().to_string(),
            source,
        };
        let old = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let text = render(&old, self).map_err(|e| RegistryError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        crate::store::fs::replace_for_group(path, text.as_bytes(), 0o640, SERVICE_GROUP).map_err(io)
    }
}

/// The provisioning blob of one device, its settings checked.
fn blob(
    e: &Enrolment,
    key: [u8; 16],
    epoch: u32,
    password: &Secret,
) -> Result<Provisioning, EnrolError> {
    let tenant = Id::new(&e.tenant).map_err(|err| EnrolError::Tenant(e.tenant.clone(), err))?;
    let id = Id::new(&e.id).map_err(|err| EnrolError::Id(e.id.clone(), err))?;
    let host = e.broker_host.as_str();
    if e.sample_interval_s == 0 {
        return Err(EnrolError::Interval);
    }
    let r = e.report_interval_s;
    if r != 0 && (r < 60 || r < e.sample_interval_s) {
        return Err(EnrolError::ReportInterval);
    }
    if e.kind == DeviceKind::WasteBin && !e.bin_depth_mm.is_some_and(|d| (1..=10_000).contains(&d))
    {
        return Err(EnrolError::BinDepth);
    }
    Ok(Provisioning {
        // Valid identifiers always fit.
        tenant: tenant
            .as_str()
            .try_into()
            .map_err(|_| EnrolError::Tenant(e.tenant.clone(), protocol::TopicError::IdLength))?,
        device: id
            .as_str()
            .try_into()
            .map_err(|_| EnrolError::Id(e.id.clone(), protocol::TopicError::IdLength))?,
        kind: e.kind.kind(),
        key: DeviceKey::new(key, epoch),
        sample_interval_s: e.sample_interval_s,
        heartbeat_s: e.heartbeat_s,
        report_interval_s: e.report_interval_s,
        bin_depth_mm: e.bin_depth_mm.unwrap_or(0),
        broker_host: (!host.is_empty() && host.is_ascii())
            .then(|| host.try_into().ok())
            .flatten()
            .ok_or_else(|| EnrolError::Host(host.to_string()))?,
        broker_port: e.broker_port,
        broker_password: protocol::provision::password_ok(password.expose())
            .then(|| password.expose().try_into().ok())
            .flatten()
            .ok_or(EnrolError::Password)?,
        transport: e.transport,
        previous: None,
    })
}

/// The group the service runs as: a new registry is readable by it.
pub const SERVICE_GROUP: &str = "vigie";

/// The first lines of a new registry file.
const HEADER: &str = "\
# Vigie device registry: it holds every device's key; readable by the service's group
# only (mode 0640). Edit it with `vigie-gateway devices ...` / `gateways ...`: they keep
# this file's comments, and also rewrite the broker's access file.

";

/// The registry loaded under an exclusive lock on its file (a file beside it,
/// `<name>.lock`), held until this is dropped: a read-modify-write through it cannot lose
/// a parallel command's change, and files derived from the registry (the broker's
/// accounts) are written under the same lock.
#[derive(Debug)]
pub struct Locked {
    _lock: std::fs::File,
    path: std::path::PathBuf,
    /// The registry as stored when the lock was taken (empty if there is none yet).
    pub registry: Registry,
}

/// Locks the registry at `path` and loads it.
pub fn lock(path: &Path) -> Result<Locked, RegistryError> {
    let io = |source| RegistryError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io)?;
    lock.lock().map_err(io)?;
    Ok(Locked {
        registry: Registry::load(path)?,
        path: path.to_path_buf(),
        _lock: lock,
    })
}

impl Locked {
    /// Saves the (changed) registry; the lock stays held.
    pub fn save(&self) -> Result<(), RegistryError> {
        self.registry.save(&self.path)
    }
}

/// The file's new text: `old` (its comments, key order and layout) with its `[[gateway]]`,
/// `[[device]]` and `[[removed]]` tables made to match `r`: changed values replaced in place, new
/// tables appended, tables of removed entries dropped.
fn render(old: &str, r: &Registry) -> Result<String, RenderError> {
    let mut doc: DocumentMut = old.parse().map_err(|e: toml_edit::TomlError| {
        RenderError::Old(ParseError::at(old, e.span(), e.message()))
    })?;
    let gateways: Vec<(Vec<String>, Table)> = r
        .gateways()
        .iter()
        .map(|g| Ok((vec![g.username.clone()], table(g)?)))
        .collect::<Result<_, RenderError>>()?;
    let devices: Vec<(Vec<String>, Table)> = r
        .entries()
        .into_iter()
        .map(|d| Ok((vec![d.tenant.clone(), d.id.clone()], table(d)?)))
        .collect::<Result<_, RenderError>>()?;
    let removed: Vec<(Vec<String>, Table)> = r
        .removed()
        .iter()
        .map(|d| Ok((vec![d.tenant.clone(), d.id.clone()], table(d)?)))
        .collect::<Result<_, RenderError>>()?;
    sync(&mut doc, "gateway", &["username"], gateways);
    sync(&mut doc, "device", &["tenant", "id"], devices);
    sync(&mut doc, "removed", &["tenant", "id"], removed);
    let header = if old.trim().is_empty() { HEADER } else { "" };
    Ok(format!("{header}{doc}"))
}

/// Why the registry's new text could not be made.
#[derive(Debug, thiserror::Error)]
enum RenderError {
    /// The file it replaces does not parse (where and why, never the line's text).
    #[error(transparent)]
    Old(ParseError),
    /// An entry does not serialize.
    #[error(transparent)]
    Serialize(#[from] toml_edit::ser::Error),
}

/// `value` as a TOML table.
fn table(value: &impl Serialize) -> Result<Table, RenderError> {
    let doc = toml_edit::ser::to_document(value)?;
    Ok(doc.as_table().clone())
}

/// Makes the array of tables `name` in `doc` hold exactly `wanted` (each with the values
/// of its `key_fields`), keeping the existing tables' order, comments and formatting.
fn sync(doc: &mut DocumentMut, name: &str, key_fields: &[&str], wanted: Vec<(Vec<String>, Table)>) {
    let key_of = |t: &Table| -> Vec<String> {
        key_fields
            .iter()
            .map(|f| t.get(f).and_then(|v| v.as_str()).unwrap_or("").to_string())
            .collect()
    };
    if wanted.is_empty() && doc.get(name).is_none() {
        return;
    }
    if !doc.get(name).is_some_and(|i| i.is_array_of_tables()) {
        doc.insert(name, Item::ArrayOfTables(ArrayOfTables::new()));
    }
    let Some(tables) = doc.get_mut(name).and_then(Item::as_array_of_tables_mut) else {
        return;
    };
    tables.retain(|t| wanted.iter().any(|(k, _)| *k == key_of(t)));
    for (key, new) in wanted {
        let found = tables.iter().position(|t| key_of(t) == key);
        match found {
            Some(i) => {
                let Some(old) = tables.get_mut(i) else {
                    continue;
                };
                old.retain(|k, _| new.contains_key(k));
                for (k, item) in new.iter() {
                    match (old.get_mut(k).and_then(Item::as_value_mut), item.as_value()) {
                        (Some(o), Some(n)) if o.to_string().trim() != n.to_string().trim() => {
                            let decor = o.decor().clone();
                            *o = n.clone();
                            *o.decor_mut() = decor;
                        }
                        (Some(_), Some(_)) => {}
                        _ => {
                            old.insert(k, item.clone());
                        }
                    }
                }
            }
            None => tables.push(new),
        }
    }
}

#[cfg(test)]
mod tests;
