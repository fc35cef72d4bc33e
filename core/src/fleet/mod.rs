//! The device registry as a model: which devices exist, their tenant, kind, key, place and
//! broker account, and the gateways' broker accounts. Checked on construction (identifiers,
//! keys, bin depths, no device twice); looked up on the per-message path without
//! allocation. No files here: the gateway's `registry` module stores it as TOML. Keys are secrets and
//! never appear in `Debug` output.

use crate::device_map::{DeviceMap, DeviceName, DeviceRef, Hashed};
use crate::output::lineproto::{TagSet, Tags};
use protocol::{DeviceKey, Id, Kind};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

mod password;
pub use password::{HASH_LEN, HashFormatError, PasswordHash};

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

/// Device kind as the registry spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// Air-quality node.
    AirQuality,
    /// Waste-bin node.
    WasteBin,
}

/// A kind name that is none of [`DeviceKind::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kind {0:?}: air-quality or waste-bin")]
pub struct UnknownKind(pub String);

impl std::str::FromStr for DeviceKind {
    type Err = UnknownKind;

    /// A kind by its name (`air-quality`, `waste-bin`), any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::AirQuality, Self::WasteBin]
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

impl DeviceKind {
    /// Every kind's name, as the commands take it.
    pub const NAMES: &[&str] = &["air-quality", "waste-bin"];

    /// As the commands spell it (`--kind air-quality`), in every listing and message.
    pub fn name(self) -> &'static str {
        match self {
            Self::AirQuality => "air-quality",
            Self::WasteBin => "waste-bin",
        }
    }

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
    /// Address or place name (open data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// INSEE code of the commune the device stands in (open data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insee: Option<String>,
    /// Bin category, FIWARE `WasteContainer.category`: `fixed`, `ground`, `other`,
    /// `portable`, `underground` (bins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Bin capacity, litres (bins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_l: Option<u32>,
    /// Sampling interval its blob sets, s: with the heartbeat, when a frame is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_interval_s: Option<u16>,
    /// Longest quiet time its blob allows before it sends anyway, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_s: Option<u16>,
    /// Seconds between its reports, its modem off in between (none: it stays connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_interval_s: Option<u16>,
    /// Hash of the device's broker password (Mosquitto's format); none for entries made
    /// before broker accounts: such a device has no account until `devices rotate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_password_hash: Option<PasswordHash>,
    /// The broker its blob names (host, port), and the SHA-256 of the CA it pins (hex;
    /// none: plain TCP): what `devices rotate` gives its next blob unless told otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_host: Option<String>,
    /// See `broker_host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_port: Option<u16>,
    /// See `broker_host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_ca_sha256: Option<String>,
    /// A revoked device's frames are rejected and its broker account removed.
    #[serde(default)]
    pub revoked: bool,
}

/// The longest site, zone or place, in characters.
pub const MAX_TEXT_CHARS: usize = 64;

/// A device removed from the registry: its last key epoch, so that the same id added
/// again starts at the next one (a new, empty replay state: SPEC §13.2) and never
/// inherits the old board's counters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Removed {
    /// Tenant id.
    pub tenant: String,
    /// Device id.
    pub id: String,
    /// Its last key epoch.
    pub epoch: u32,
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

impl DeviceEntry {
    /// A device of `kind` with its key (32 hex digits) and epoch, nothing else set.
    pub fn new(tenant: &str, id: &str, kind: DeviceKind, key: String, epoch: u32) -> Self {
        Self {
            id: id.into(),
            tenant: tenant.into(),
            kind,
            key,
            epoch,
            site: None,
            zone: None,
            latitude: None,
            longitude: None,
            bin_depth_mm: None,
            place: None,
            insee: None,
            container: None,
            capacity_l: None,
            sample_interval_s: None,
            heartbeat_s: None,
            report_interval_s: None,
            broker_password_hash: None,
            broker_host: None,
            broker_port: None,
            broker_ca_sha256: None,
            revoked: false,
        }
    }
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

/// A checked registry entry, ready for verification.
#[derive(Debug, Clone)]
pub struct Device {
    /// As stored.
    pub entry: DeviceEntry,
    /// Parsed key.
    pub key: DeviceKey,
    /// Tenant and device id, shared with every record of the device (a count, not a copy,
    /// per accepted frame).
    pub names: (Arc<str>, Arc<str>),
    /// Its database tags, escaped once.
    pub tags: TagSet,
}

/// The registry, by tenant then device (nested so a lookup borrows `&str`, no allocation
/// on the per-message path).
#[derive(Debug, Default, Clone)]
pub struct Registry {
    devices: DeviceMap<Device>,
    gateways: Vec<GatewayAccount>,
    removed: Vec<Removed>,
}

impl Registry {
    /// Builds from entries, checking each.
    pub fn from_entries(entries: Vec<DeviceEntry>) -> Result<Self, RegistryError> {
        let mut devices: DeviceMap<Device> = DeviceMap::default();
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
            // Tags go into every line of the device's readings: bounded, so that a frame of
            // 64 readings always fits a buffer record (64 KiB).
            for (name, value) in [
                ("site", &entry.site),
                ("zone", &entry.zone),
                ("place", &entry.place),
            ] {
                if value
                    .as_ref()
                    .is_some_and(|v| v.chars().count() > MAX_TEXT_CHARS)
                {
                    return Err(err(format!("{name}: at most {MAX_TEXT_CHARS} characters")));
                }
            }
            if entry.kind == DeviceKind::WasteBin && entry.bin_depth_mm.is_none_or(|d| d == 0) {
                return Err(err("a waste_bin needs bin_depth_mm above 0".into()));
            }
            if devices
                .get(DeviceRef::new(&entry.tenant, &entry.id))
                .is_some()
            {
                return Err(err("listed twice".into()));
            }
            let device = Device {
                key: DeviceKey::new(key, entry.epoch),
                names: (entry.tenant.as_str().into(), entry.id.as_str().into()),
                tags: TagSet::new(&Tags {
                    tenant: &entry.tenant,
                    device: &entry.id,
                    site: entry.site.as_deref(),
                    zone: entry.zone.as_deref(),
                }),
                entry,
            };
            let (tenant, id) = device.names.clone();
            devices.insert(DeviceName { tenant, device: id }, device);
        }
        Ok(Self {
            devices,
            gateways: Vec::new(),
            removed: Vec::new(),
        })
    }

    /// Looks a device up.
    pub fn get(&self, tenant: &str, device: &str) -> Option<&Device> {
        self.devices.get(DeviceRef::new(tenant, device))
    }

    /// Looks a device up by its names hashed (once per frame, for every map).
    pub fn find(&self, who: Hashed<'_>) -> Option<&Device> {
        self.devices.get(who)
    }

    fn devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.values()
    }

    /// All entries, sorted by tenant then id.
    pub fn entries(&self) -> Vec<&DeviceEntry> {
        let mut v: Vec<_> = self.devices().map(|d| &d.entry).collect();
        v.sort_by(|a, b| (&a.tenant, &a.id).cmp(&(&b.tenant, &b.id)));
        v
    }

    /// The tenants with devices, sorted.
    pub fn tenants(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.devices.iter().map(|(k, _)| &*k.tenant).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Adds or replaces an entry (checked).
    pub fn upsert(&mut self, entry: DeviceEntry) -> Result<(), RegistryError> {
        let mut entries: Vec<DeviceEntry> = self
            .devices()
            .filter(|d| (&d.entry.tenant, &d.entry.id) != (&entry.tenant, &entry.id))
            .map(|d| d.entry.clone())
            .collect();
        self.removed
            .retain(|r| (&r.tenant, &r.id) != (&entry.tenant, &entry.id));
        entries.push(entry);
        let gateways = std::mem::take(&mut self.gateways);
        let removed = std::mem::take(&mut self.removed);
        *self = Self::from_entries(entries)?;
        self.gateways = gateways;
        self.removed = removed;
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
        match self.devices.get_mut(DeviceRef::new(tenant, device)) {
            Some(d) => {
                d.entry.revoked = true;
                true
            }
            None => false,
        }
    }

    /// Removes a device, keeping its last key epoch ([`Removed`]); false if it does not
    /// exist.
    pub fn remove(&mut self, tenant: &str, device: &str) -> bool {
        let Some(gone) = self.devices.remove(DeviceRef::new(tenant, device)) else {
            return false;
        };
        self.removed
            .retain(|r| (r.tenant.as_str(), r.id.as_str()) != (tenant, device));
        self.removed.push(Removed {
            tenant: tenant.into(),
            id: device.into(),
            epoch: gone.entry.epoch,
        });
        true
    }

    /// The devices removed, with their last key epoch.
    pub fn removed(&self) -> &[Removed] {
        &self.removed
    }

    /// Sets the removed devices (from the file).
    pub fn set_removed(&mut self, removed: Vec<Removed>) {
        self.removed = removed;
    }

    /// The key epoch a device enrolled now starts at: after its current one, or after
    /// the last one it had before it was removed; 1 for an id never seen. `None` past
    /// 2³²−1.
    pub fn next_epoch(&self, tenant: &str, device: &str) -> Option<u32> {
        let last = self.get(tenant, device).map(|d| d.entry.epoch).or_else(|| {
            self.removed
                .iter()
                .find(|r| (r.tenant.as_str(), r.id.as_str()) == (tenant, device))
                .map(|r| r.epoch)
        });
        last.map_or(Some(1), |e| e.checked_add(1))
    }
}

/// Parses 32 hex digits.
pub fn parse_key(hex_key: &str) -> Option<[u8; 16]> {
    let bytes = hex::decode(hex_key).ok()?;
    bytes.try_into().ok()
}
