//! Device registry: which devices exist, their tenant, kind, key and place. A TOML file
//! (`[[device]]` tables) that `devices add` / `devices revoke` edit and the service reloads
//! on SIGHUP. Keys are secrets: the file is written with mode 0600 and keys never appear
//! in `Debug` output.

use crate::access::PasswordHash;
use crate::config::Secret;
use protocol::provision::{Provisioning, Transport};
use protocol::{DeviceKey, Id, Kind};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Why the registry could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// File I/O.
    #[error("registry {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or schema.
    #[error("registry {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// Parser message.
        message: String,
    },
    /// A gateway account is invalid.
    #[error("registry gateway account {username:?}: {message}")]
    Gateway {
        /// Its username.
        username: String,
        /// What is wrong.
        message: String,
    },
    /// An entry is invalid.
    #[error("registry entry {tenant}/{device}: {message}")]
    Entry {
        /// Tenant.
        tenant: String,
        /// Device.
        device: String,
        /// What is wrong.
        message: String,
    },
}

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
    let tenant = Id::new(&e.tenant).map_err(|err| EnrolError::Tenant(e.tenant.clone(), err))?;
    let id = Id::new(&e.id).map_err(|err| EnrolError::Id(e.id.clone(), err))?;
    let host = e.broker_host.as_str();
    let blob = Provisioning {
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
    };
    let broker_password_hash = Some(PasswordHash::new(password).map_err(EnrolError::Random)?);
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
        broker_password_hash,
        revoked: false,
    };
    Ok((entry, blob))
}

/// Device kind as the registry spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// Air-quality node.
    AirQuality,
    /// Waste-bin node.
    WasteBin,
}

impl DeviceKind {
    /// The observation kind its frames carry (all devices also send status frames).
    pub fn kind(self) -> Kind {
        match self {
            Self::AirQuality => Kind::AirQuality,
            Self::WasteBin => Kind::WasteBin,
        }
    }
}

/// One registry entry as stored.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    /// Device id.
    pub id: String,
    /// Tenant id.
    pub tenant: String,
    /// Kind.
    pub kind: DeviceKind,
    /// 32 hex digits.
    pub key: String,
    /// Key epoch.
    pub epoch: u32,
    /// Site name (database tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Zone (database tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// WGS84 latitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    /// WGS84 longitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    /// Bin depth, sensor to bottom (bins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin_depth_mm: Option<u16>,
    /// Hash of the device's broker password (Mosquitto's format); none for entries made
    /// before broker accounts: such a device has no account until `devices rotate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_password_hash: Option<PasswordHash>,
    /// A revoked device's frames are rejected and its broker account removed.
    #[serde(default)]
    pub revoked: bool,
}

/// A gateway's broker account (`gateways add`): may share the uplink subscription and
/// publish acknowledgements, nothing else.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayAccount {
    /// Broker username; with `use_username_as_clientid` also its MQTT client id.
    pub username: String,
    /// Hash of its password (Mosquitto's format).
    pub password_hash: PasswordHash,
}

impl std::fmt::Debug for DeviceEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceEntry")
            .field("tenant", &self.tenant)
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("key", &"<redacted>")
            .field("epoch", &self.epoch)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gateway: Vec<GatewayAccount>,
    #[serde(default)]
    device: Vec<DeviceEntry>,
}

/// A checked registry entry, ready for verification.
#[derive(Debug, Clone)]
pub struct Device {
    /// As stored.
    pub entry: DeviceEntry,
    /// Parsed key.
    pub key: DeviceKey,
}

/// The registry, by tenant then device (nested so a lookup borrows `&str`, no allocation
/// on the per-message path).
#[derive(Debug, Default, Clone)]
pub struct Registry {
    tenants: HashMap<String, HashMap<String, Device>>,
    gateways: Vec<GatewayAccount>,
}

impl Registry {
    /// The service's load: the file must exist (an empty file is an empty registry). A
    /// missing registry at start or on reload is an error, never "no devices".
    pub fn load_existing(path: &Path) -> Result<Self, RegistryError> {
        if let Err(source) = std::fs::metadata(path) {
            return Err(RegistryError::Io {
                path: path.display().to_string(),
                source,
            });
        }
        Self::load(path)
    }

    /// Loads the file; a missing file is an empty registry (for `devices add`).
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
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
        let file: File = toml::from_str(&text).map_err(|e| RegistryError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut registry = Self::from_entries(file.device)?;
        for g in file.gateway {
            registry.set_gateway(g)?;
        }
        Ok(registry)
    }

    /// Builds from entries, checking each.
    pub fn from_entries(entries: Vec<DeviceEntry>) -> Result<Self, RegistryError> {
        let mut tenants: HashMap<String, HashMap<String, Device>> = HashMap::new();
        for entry in entries {
            let err = |message: String| RegistryError::Entry {
                tenant: entry.tenant.clone(),
                device: entry.id.clone(),
                message,
            };
            Id::new(&entry.tenant).map_err(|e| err(format!("tenant: {e}")))?;
            Id::new(&entry.id).map_err(|e| err(format!("id: {e}")))?;
            let key =
                parse_key(&entry.key).ok_or_else(|| err("key must be 32 hex digits".into()))?;
            if entry.kind == DeviceKind::WasteBin && entry.bin_depth_mm.is_none_or(|d| d == 0) {
                return Err(err("a waste_bin needs bin_depth_mm above 0".into()));
            }
            let devices = tenants.entry(entry.tenant.clone()).or_default();
            if devices.contains_key(&entry.id) {
                return Err(err("listed twice".into()));
            }
            let device = Device {
                key: DeviceKey::new(key, entry.epoch),
                entry,
            };
            devices.insert(device.entry.id.clone(), device);
        }
        Ok(Self {
            tenants,
            gateways: Vec::new(),
        })
    }

    /// Looks a device up.
    pub fn get(&self, tenant: &str, device: &str) -> Option<&Device> {
        self.tenants.get(tenant)?.get(device)
    }

    fn devices(&self) -> impl Iterator<Item = &Device> {
        self.tenants.values().flat_map(|d| d.values())
    }

    /// All entries, sorted by tenant then id.
    pub fn entries(&self) -> Vec<&DeviceEntry> {
        let mut v: Vec<_> = self.devices().map(|d| &d.entry).collect();
        v.sort_by(|a, b| (&a.tenant, &a.id).cmp(&(&b.tenant, &b.id)));
        v
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices().count()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.tenants.values().all(HashMap::is_empty)
    }

    /// Adds or replaces an entry (checked).
    pub fn upsert(&mut self, entry: DeviceEntry) -> Result<(), RegistryError> {
        let mut entries: Vec<DeviceEntry> = self
            .devices()
            .filter(|d| (&d.entry.tenant, &d.entry.id) != (&entry.tenant, &entry.id))
            .map(|d| d.entry.clone())
            .collect();
        entries.push(entry);
        let gateways = std::mem::take(&mut self.gateways);
        *self = Self::from_entries(entries)?;
        self.gateways = gateways;
        Ok(())
    }

    /// The gateway broker accounts, by username.
    pub fn gateways(&self) -> &[GatewayAccount] {
        &self.gateways
    }

    /// Adds or replaces a gateway account. Its username must not be a device's: device
    /// usernames contain a `.`, gateway usernames may not.
    pub fn set_gateway(&mut self, account: GatewayAccount) -> Result<(), RegistryError> {
        if Id::new(&account.username).is_err() {
            return Err(RegistryError::Gateway {
                username: account.username,
                message: "a gateway username is 1 to 32 of a-z, 0-9, - (like an identifier)".into(),
            });
        }
        self.gateways.retain(|g| g.username != account.username);
        self.gateways.push(account);
        self.gateways.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(())
    }

    /// Marks a device revoked; false if it does not exist.
    pub fn revoke(&mut self, tenant: &str, device: &str) -> bool {
        match self.tenants.get_mut(tenant).and_then(|d| d.get_mut(device)) {
            Some(d) => {
                d.entry.revoked = true;
                true
            }
            None => false,
        }
    }

    /// Writes atomically (temp file, fsync, rename), readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<(), RegistryError> {
        let io = |source| RegistryError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File {
            gateway: self.gateways.clone(),
            device: self.entries().into_iter().cloned().collect(),
        };
        let text = toml::to_string(&file).map_err(|e| RegistryError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let text = format!(
            "# Vigie device registry: contains device keys, keep it private (mode 0600).\n\
             # Edit with `vigie-gateway devices ...` / `gateways ...`: they also rewrite the\n\
             # broker's access file.\n\n{text}"
        );
        crate::fs::write_atomic(path, text.as_bytes(), 0o600).map_err(io)
    }
}

/// Parses 32 hex digits.
pub fn parse_key(hex_key: &str) -> Option<[u8; 16]> {
    let bytes = hex::decode(hex_key).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrolment_builds_one_entry_and_its_blob_or_names_the_mistake() {
        let e = Enrolment {
            tenant: "lyon".into(),
            id: "bin-1".into(),
            kind: DeviceKind::WasteBin,
            site: Some("Bellecour".into()),
            zone: None,
            latitude: Some(45.76),
            longitude: Some(4.83),
            bin_depth_mm: Some(1100),
            sample_interval_s: 600,
            heartbeat_s: 3600,
            broker_host: "mqtt.lyon.example".into(),
            broker_port: 8883,
            transport: Transport::Plain,
        };
        let pw = Secret::new("Pa55word");
        let (entry, blob) = enroll(&e, [9; 16], 3, &pw).unwrap();
        let registry = Registry::from_entries(vec![entry]).unwrap();
        let dev = registry.get("lyon", "bin-1").unwrap();
        assert_eq!(dev.key, blob.key, "the registry and the blob hold one key");
        assert_eq!(blob.key.epoch(), 3);
        assert_eq!(
            (blob.bin_depth_mm, blob.broker_port, blob.kind),
            (1100, 8883, Kind::WasteBin)
        );
        let bad = |f: fn(&mut Enrolment)| {
            let mut b = e.clone();
            f(&mut b);
            enroll(&b, [9; 16], 1, &pw).unwrap_err()
        };
        for p in ["", "has space", &"x".repeat(33)] {
            assert_eq!(
                enroll(&e, [9; 16], 1, &Secret::new(p)).unwrap_err(),
                EnrolError::Password
            );
        }
        assert!(matches!(
            bad(|b| b.tenant = "Lyon".into()),
            EnrolError::Tenant(..)
        ));
        assert!(matches!(bad(|b| b.id = "bin 1".into()), EnrolError::Id(..)));
        assert!(matches!(
            bad(|b| b.broker_host = "h".repeat(65)),
            EnrolError::Host(..)
        ));
        assert!(matches!(
            bad(|b| b.broker_host = String::new()),
            EnrolError::Host(..)
        ));
    }

    fn entry(tenant: &str, id: &str) -> DeviceEntry {
        DeviceEntry {
            id: id.into(),
            tenant: tenant.into(),
            kind: DeviceKind::AirQuality,
            key: "000102030405060708090a0b0c0d0e0f".into(),
            epoch: 1,
            site: Some("Place Bellecour".into()),
            zone: None,
            latitude: Some(45.757),
            longitude: Some(4.832),
            bin_depth_mm: None,
            broker_password_hash: None,
            revoked: false,
        }
    }

    #[test]
    fn save_load_round_trip_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.toml");
        let mut r = Registry::default();
        r.upsert(entry("lyon", "aq-0001")).unwrap();
        r.upsert(entry("villeurbanne", "aq-0001")).unwrap();
        assert!(r.revoke("lyon", "aq-0001"));
        r.save(&path).unwrap();
        let back = Registry::load(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert!(back.get("lyon", "aq-0001").unwrap().entry.revoked);
        assert_eq!(
            back.get("villeurbanne", "aq-0001")
                .unwrap()
                .key
                .expose_secret()[15],
            15
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{back:?}").contains("0a0b0c"));
    }

    #[test]
    fn bad_entries_are_named() {
        let mut e = entry("lyon", "aq-0001");
        e.key = "abc".into();
        let err = Registry::from_entries(vec![e]).unwrap_err().to_string();
        assert!(
            err.contains("lyon/aq-0001") && err.contains("32 hex"),
            "{err}"
        );
        let mut bin = entry("lyon", "bin-1");
        bin.kind = DeviceKind::WasteBin;
        assert!(
            Registry::from_entries(vec![bin])
                .unwrap_err()
                .to_string()
                .contains("bin_depth_mm")
        );
        let dup = vec![entry("lyon", "a"), entry("lyon", "a")];
        assert!(
            Registry::from_entries(dup)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(Registry::from_entries(vec![entry("Lyon", "a")]).is_err());
        assert!(
            Registry::load(Path::new("/nonexistent/devices.toml"))
                .unwrap()
                .is_empty()
        );
    }
}
