//! `devices add`, `devices rotate` and `devices import`: a key, a broker password and a
//! provisioning blob per device, the registry entry and the broker's accounts in step.

use super::{DeviceRef, Metadata, change, registry_change};
use crate::config::Config;
use crate::fleet::access;
use crate::fleet::registry::{self, DeviceEntry, DeviceKind, EnrolError, Enrolment};
use crate::ops::error::file;
use crate::ops::text::choice;
use crate::ops::{OpsError, load};
use protocol::provision::{MAX_BLOB_LEN, Provisioning, Transport};
use std::path::{Path, PathBuf};

/// `devices add` and `devices rotate`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    #[command(flatten)]
    pub device: DeviceRef,
    /// Device kind.
    #[arg(long, value_parser = choice::<DeviceKind>(DeviceKind::NAMES))]
    pub kind: DeviceKind,
    #[command(flatten)]
    pub meta: Metadata,
    /// Bin depth from sensor to bottom, mm (bins).
    #[arg(long)]
    pub bin_depth_mm: Option<u16>,
    /// Seconds between samples (default: 300; `rotate`: the device's).
    #[arg(long)]
    pub sample_interval: Option<u16>,
    /// Seconds after which a reading is sent even without change (default: 3600;
    /// `rotate`: the device's).
    #[arg(long)]
    pub heartbeat: Option<u16>,
    /// Seconds between reports of a battery node, its modem off in between: 0 (default)
    /// stays connected; 60 to 65535 and at least the sample interval (`rotate`: the
    /// device's). docs/ENERGY.md: a bin on a D cell lasts ten years at 21600 (6 h).
    #[arg(long)]
    pub report_interval: Option<u16>,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Where to write the provisioning blob (default: `<tenant>-<id>.vgp`).
    #[arg(long)]
    pub blob_out: Option<PathBuf>,
}

/// The broker a board dials, when not the configuration's.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BrokerArgs {
    /// Broker host the board connects to (default: mqtt.host; `rotate`: the one its
    /// blob named).
    #[arg(long)]
    pub broker_host: Option<String>,
    /// Broker port the board connects to (default: mqtt.port; `rotate`: its blob's).
    #[arg(long)]
    pub broker_port: Option<u16>,
    /// PEM certificate of the CA that signed the broker's certificate: the board then
    /// connects over TLS and accepts only a broker chaining to it. Without it: plain TCP
    /// (`rotate`: the CA its blob pinned).
    #[arg(long)]
    pub broker_ca: Option<PathBuf>,
}

/// `devices import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Configuration file.
    #[arg(long, env = "VIGIE_CONFIG")]
    pub config: PathBuf,
    /// The CSV file.
    #[arg(long)]
    pub csv: PathBuf,
    /// Folder for the blobs, `<tenant>-<id>.vgp` each.
    #[arg(long, default_value = ".")]
    pub blob_dir: PathBuf,
    /// Every board's broker, as `devices add` takes it.
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// Options of `devices add` and `devices rotate`, resolved against the configuration.
#[derive(Debug, Clone)]
pub struct AddDevice {
    /// The device and the settings its blob carries.
    pub device: Enrolment,
    /// Where it stands and what it watches.
    pub meta: Metadata,
    /// Where to write the provisioning blob.
    pub blob_out: PathBuf,
    /// Which settings with a default the command was given: on a rotation the others
    /// are the device's own.
    pub given: Given,
}

/// The settings of `devices add` / `rotate` that have a default, and whether the
/// command gave them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Given {
    /// `--sample-interval`.
    pub sample_interval: bool,
    /// `--heartbeat`.
    pub heartbeat: bool,
    /// `--report-interval`.
    pub report_interval: bool,
    /// `--broker-host`.
    pub broker_host: bool,
    /// `--broker-port`.
    pub broker_port: bool,
    /// `--broker-ca`.
    pub broker_ca: bool,
}

/// Whether a device must be new or must exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrol {
    /// `devices add`: a new device (an id that exists is refused; one removed before
    /// continues its key epochs).
    Add,
    /// `devices rotate`: an existing device gets a new key, epoch and broker password.
    Rotate,
}

impl AddDevice {
    /// The command's arguments against the configuration `c`: the broker is `mqtt.host`
    /// (or the embedded broker's address) unless given.
    pub fn from_args(c: &Config, a: DeviceArgs) -> Result<Self, OpsError> {
        let DeviceRef { tenant, id, .. } = a.device;
        let b = a.broker;
        let given = Given {
            sample_interval: a.sample_interval.is_some(),
            heartbeat: a.heartbeat.is_some(),
            report_interval: a.report_interval.is_some(),
            broker_host: b.broker_host.is_some(),
            broker_port: b.broker_port.is_some(),
            broker_ca: b.broker_ca.is_some(),
        };
        let (host, port) = match &c.mqtt.host {
            Some(h) => (h.clone(), c.mqtt.port),
            None => (
                c.mqtt.embedded_listen.ip().to_string(),
                c.mqtt.embedded_listen.port(),
            ),
        };
        Ok(Self {
            given,
            blob_out: a
                .blob_out
                .unwrap_or_else(|| PathBuf::from(format!("{tenant}-{id}.vgp"))),
            device: Enrolment {
                tenant,
                id,
                kind: a.kind,
                site: a.meta.site.clone(),
                zone: a.meta.zone.clone(),
                latitude: a.meta.latitude,
                longitude: a.meta.longitude,
                bin_depth_mm: a.bin_depth_mm,
                sample_interval_s: a.sample_interval.unwrap_or(300),
                heartbeat_s: a.heartbeat.unwrap_or(3600),
                report_interval_s: a.report_interval.unwrap_or(0),
                broker_host: b.broker_host.unwrap_or(host),
                broker_port: b.broker_port.unwrap_or(port),
                transport: transport(b.broker_ca.as_deref())?,
            },
            meta: a.meta,
        })
    }

    /// The enrolment of a rotation: what the command did not give is `old`'s (site, zone,
    /// coordinates, bin depth, intervals, the broker and the CA its blob named).
    fn over(&self, old: &DeviceEntry) -> Enrolment {
        let mut d = self.device.clone();
        d.site = d.site.or_else(|| old.site.clone());
        d.zone = d.zone.or_else(|| old.zone.clone());
        d.latitude = d.latitude.or(old.latitude);
        d.longitude = d.longitude.or(old.longitude);
        d.bin_depth_mm = d.bin_depth_mm.or(old.bin_depth_mm);
        let g = self.given;
        if let (false, Some(v)) = (g.sample_interval, old.sample_interval_s) {
            d.sample_interval_s = v;
        }
        if let (false, Some(v)) = (g.heartbeat, old.heartbeat_s) {
            d.heartbeat_s = v;
        }
        if !g.report_interval {
            d.report_interval_s = old.report_interval_s.unwrap_or(0);
        }
        if let (false, Some(h)) = (g.broker_host, &old.broker_host) {
            d.broker_host.clone_from(h);
        }
        if let (false, Some(p)) = (g.broker_port, old.broker_port) {
            d.broker_port = p;
        }
        if !g.broker_ca && old.broker_host.is_some() {
            d.transport = old
                .broker_ca_sha256
                .as_deref()
                .and_then(|h| hex::decode(h).ok()?.try_into().ok())
                .map_or(Transport::Plain, |ca_sha256| Transport::Tls { ca_sha256 });
        }
        d
    }
}

/// `devices add` / `rotate` from the command line: the report, then the reload.
pub fn enrol(a: DeviceArgs, mode: Enrol) -> Result<(), OpsError> {
    let config = a.device.config.clone();
    registry_change(&config, |c| add(c, &AddDevice::from_args(c, a)?, mode))
}

/// `devices add` / `devices rotate`: generates a key and a broker password, writes the
/// registry entry, the board's provisioning blob and the broker's access file. `add`
/// refuses an id that exists (a repeated command must not re-key a deployed board);
/// an id removed before starts at the key epoch after its last, so the new board never
/// inherits the old one's replay state. `rotate` keeps what it is not given again.
pub fn add(c: &Config, a: &AddDevice, mode: Enrol) -> Result<String, OpsError> {
    let (g, name) = (&c.gateway, format!("{}/{}", a.device.tenant, a.device.id));
    let (epoch, n, d) = change(c, |registry| {
        let existing = registry.get(&a.device.tenant, &a.device.id);
        let d = match (mode, existing) {
            (Enrol::Rotate, None) => {
                return Err(OpsError::NotEnrolled {
                    name: name.clone(),
                    registry: g.registry.clone(),
                });
            }
            (Enrol::Add, Some(dev)) => {
                return Err(OpsError::AlreadyEnrolled {
                    name: name.clone(),
                    epoch: dev.entry.epoch,
                });
            }
            (_, Some(dev)) => a.over(&dev.entry),
            (_, None) => a.device.clone(),
        };
        // SPEC §13.8: the first epoch is 1; 2³²−1 is the last.
        let epoch = registry
            .next_epoch(&d.tenant, &d.id)
            .ok_or_else(|| OpsError::LastEpoch(name.clone()))?;
        let (mut entry, mut blob) = enrolled(&d, epoch)?;
        // A re-keyed device keeps what it was given before, unless given anew, and its
        // blob carries the old key: the board re-seals what waits under it (SPEC §11).
        if let Some(old) = existing {
            keep_described(&mut entry, &old.entry);
            blob.previous = Some(old.key.clone());
        }
        a.meta.apply(&mut entry)?;
        registry.upsert(entry)?;
        // Last: nothing is written if anything above failed.
        let n = write_blob(&blob, &a.blob_out)?;
        Ok((epoch, n, d))
    })?;
    Ok(format!(
        "{} {name} ({}, key epoch {epoch}, broker {}:{}, {}); provisioning blob: {} ({n} bytes).\n{}",
        if mode == Enrol::Add {
            "added"
        } else {
            "re-keyed"
        },
        d.kind.name(),
        d.broker_host,
        d.broker_port,
        transport_words(d.transport),
        a.blob_out.display(),
        access::restart_hint(&g.broker_access())
    ))
}

/// The registry entry and the provisioning blob of `d` under a fresh key and broker
/// password at `epoch`.
fn enrolled(d: &Enrolment, epoch: u32) -> Result<(DeviceEntry, Provisioning), OpsError> {
    let mut key = [0u8; 16];
    getrandom::fill(&mut key).map_err(|source| OpsError::Random {
        what: "key",
        reason: source,
    })?;
    let password = access::new_password().map_err(|source| OpsError::Random {
        what: "password",
        reason: source,
    })?;
    // Each mistake named by the option that carries it.
    registry::enroll(d, key, epoch, &password).map_err(|e| {
        let option = match e {
            EnrolError::Tenant(..) => "--tenant",
            EnrolError::Id(..) => "--id",
            EnrolError::Host(..) => "--broker-host",
            EnrolError::Interval => "--sample-interval",
            EnrolError::ReportInterval => "--report-interval",
            EnrolError::BinDepth => "--bin-depth-mm",
            EnrolError::Password | EnrolError::Random(_) => return OpsError::Enrolment(e),
        };
        OpsError::Enrol { option, source: e }
    })
}

/// Writes `blob` to `path` (mode 0600); its length.
fn write_blob(blob: &Provisioning, path: &Path) -> Result<usize, OpsError> {
    let mut buf = [0u8; MAX_BLOB_LEN];
    let n = blob.encode(&mut buf).map_err(OpsError::Blob)?;
    crate::store::fs::write_atomic(path, &buf[..n], 0o600).map_err(file(path))?;
    Ok(n)
}

/// What a re-keyed device keeps of its old entry that `devices add` has no option for.
fn keep_described(entry: &mut DeviceEntry, old: &DeviceEntry) {
    for (to, from) in [
        (&mut entry.place, &old.place),
        (&mut entry.insee, &old.insee),
        (&mut entry.container, &old.container),
    ] {
        to.clone_from(from);
    }
    entry.capacity_l = old.capacity_l;
}

fn transport_words(t: Transport) -> String {
    match t {
        Transport::Plain => "plain TCP (no --broker-ca: the password travels in clear)".into(),
        Transport::Tls { ca_sha256 } => format!(
            "TLS: load the CA onto the board's modem as {} (docs/FLASHING.md)",
            protocol::provision::ca_file_name(&ca_sha256)
        ),
    }
}

/// The `transport` a board gets: TLS pinned to the CA in `ca_pem` (its first
/// certificate), or plain TCP without one.
pub fn transport(ca_pem: Option<&Path>) -> Result<Transport, OpsError> {
    let Some(path) = ca_pem else {
        return Ok(Transport::Plain);
    };
    let unreadable = |source| OpsError::BrokerCa {
        path: path.to_path_buf(),
        source,
    };
    let pem = std::fs::read(path).map_err(unreadable)?;
    let cert = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .ok_or_else(|| OpsError::BrokerCaEmpty(path.to_path_buf()))?
        .map_err(unreadable)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut ca_sha256 = [0u8; 32];
    ca_sha256.copy_from_slice(digest.as_ref());
    Ok(Transport::Tls { ca_sha256 })
}

/// One row of a `devices import` file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvDevice {
    tenant: String,
    id: String,
    kind: String,
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
    #[serde(default)]
    place: Option<String>,
    #[serde(default)]
    insee: Option<String>,
    #[serde(default)]
    container: Option<String>,
    #[serde(default)]
    capacity_l: Option<u32>,
    #[serde(default)]
    bin_depth_mm: Option<u16>,
    #[serde(default)]
    sample_interval: Option<u16>,
    #[serde(default)]
    heartbeat: Option<u16>,
    #[serde(default)]
    report_interval: Option<u16>,
}

/// `devices import`: each row enrolled on its own; the refused ones named by line, the
/// others kept. Run again after fixing, the rows already added are refused as enrolled.
pub fn import(a: &ImportArgs) -> Result<(), OpsError> {
    let c = load(&a.config)?;
    let csv_error = |source| OpsError::Csv {
        path: a.csv.clone(),
        source,
    };
    let mut reader = csv::Reader::from_path(&a.csv).map_err(csv_error)?;
    let headers = reader.headers().map_err(csv_error)?.clone();
    let (mut added, mut refused) = (0usize, Vec::new());
    for record in reader.records() {
        let line = record
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map_or(0, |p| p.line());
        let row = record
            .and_then(|r| r.deserialize::<CsvDevice>(Some(&headers)))
            .map_err(csv_error)
            .and_then(|d| import_args(a, d))
            .and_then(|args| add(&c, &AddDevice::from_args(&c, args)?, Enrol::Add));
        match row {
            Ok(_) => added += 1,
            Err(OpsError::Csv { source, .. }) => {
                refused.push(format!("{}:{line}: {source}", a.csv.display()))
            }
            Err(e) => refused.push(format!("{}:{line}: {e}", a.csv.display())),
        }
    }
    for r in &refused {
        eprintln!("{r}");
    }
    println!(
        "{}: {added} devices added, {} refused; blobs in {}",
        a.csv.display(),
        refused.len(),
        a.blob_dir.display()
    );
    if added > 0 {
        println!("{}", access::restart_hint(&c.gateway.broker_access()));
        println!("{}", crate::ops::service::reload(&c)?);
    }
    match refused.len() {
        0 => Ok(()),
        n => Err(OpsError::ImportRefused(n)),
    }
}

/// The `devices add` arguments of one imported row.
fn import_args(a: &ImportArgs, d: CsvDevice) -> Result<DeviceArgs, OpsError> {
    let kind: DeviceKind = d.kind.parse()?;
    Ok(DeviceArgs {
        blob_out: Some(a.blob_dir.join(format!("{}-{}.vgp", d.tenant, d.id))),
        device: DeviceRef {
            config: a.config.clone(),
            tenant: d.tenant,
            id: d.id,
        },
        kind,
        meta: Metadata {
            site: d.site,
            zone: d.zone,
            latitude: d.latitude,
            longitude: d.longitude,
            place: d.place,
            insee: d.insee,
            container: d.container,
            capacity_l: d.capacity_l,
        },
        bin_depth_mm: d.bin_depth_mm,
        sample_interval: d.sample_interval,
        heartbeat: d.heartbeat,
        report_interval: d.report_interval,
        broker: a.broker.clone(),
    })
}

#[cfg(test)]
mod tests;
