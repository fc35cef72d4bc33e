//! Operator commands: `check-config`, `devices add|rotate|list|revoke`, `gateways add`,
//! `broker-cert`, `quarantine list|replay`.
//! Each returns the text to print or an error message; `main.rs` only prints.

pub mod erase;
pub mod export;

use crate::config::{Config, GatewayConfig};
use crate::deliver::retention;
use crate::deliver::tenants::{self, TenantsError};
use crate::fleet::access;
use crate::fleet::registry::RegistryFile;
use crate::fleet::registry::{self, EnrolError, Enrolment, Metadata, Registry};
use crate::observe::devices::{self, DeviceBook};
use crate::store::quarantine;
use protocol::json::UtcTime;
use protocol::provision::{MAX_BLOB_LEN, Transport};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigie_core::erase::Scope;

/// `check-config FILE`: loads and validates the config, the registry (which must exist:
/// the service refuses to start without it) and the data directory (writable by whoever
/// runs this: run it as the service user).
pub fn check_config(path: &Path, connect: bool) -> Result<String, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let registry = Registry::load_existing(&config.gateway.registry)
        .map_err(|e| format!("{e} (the service needs it to start: `devices add` creates it)"))?;
    check_writable(&config.gateway.data_dir).map_err(|e| {
        format!(
            "gateway.data_dir {}: {e}",
            config.gateway.data_dir.display()
        )
    })?;
    let broker = match &config.mqtt.host {
        Some(h) => format!("{h}:{}", config.mqtt.port),
        None => format!("embedded on {}", config.mqtt.embedded_listen),
    };
    let db = match &config.database {
        Some(d) => format!("{:?} API at {}", d.api, d.url_shown()),
        None => "none: line-protocol files".into(),
    };
    let mut out = format!(
        "config ok: broker {broker}; database {db}; {} devices in {}; data in {}",
        registry.len(),
        config.gateway.registry.display(),
        config.gateway.data_dir.display()
    );
    if connect {
        out.push('\n');
        out.push_str(&check_connections(&config, &registry)?);
    }
    Ok(out)
}

/// `check-config --connect`: the broker answers, and each commune of the registry has its
/// database. An error naming every problem found.
fn check_connections(config: &Config, registry: &Registry) -> Result<String, String> {
    let mut ok = Vec::new();
    let mut problems = Vec::new();
    if let Some(host) = &config.mqtt.host {
        let target = format!("{host}:{}", config.mqtt.port);
        let reached = std::net::ToSocketAddrs::to_socket_addrs(&target)
            .map_err(|e| e.to_string())
            .and_then(|mut addrs| addrs.next().ok_or_else(|| "no address".to_string()))
            .and_then(|addr| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                    .map_err(|e| e.to_string())
            });
        match reached {
            // Its account is checked when the service connects (`/readyz` names a refusal):
            // logging in here with the service's client id would take over its session.
            Ok(_) => ok.push(format!("broker {target} answers")),
            Err(e) => problems.push(format!("broker {target}: {e}")),
        }
    }
    let tenants = registry.tenants();
    if let Some(db) = &config.database {
        let max_age = config.validation.max_age;
        match block_on(retention::ask(db, &tenants))? {
            Ok(keeps) => match retention::bound(max_age, &keeps) {
                (_, short) if short.is_empty() && !keeps.is_empty() => ok.push(format!(
                    "every database keeps validation.max_age ({})",
                    retention::words(max_age)
                )),
                (_, short) if short.is_empty() => {}
                (bound, short) => problems.push(retention::warning(max_age, bound, &short)),
            },
            Err(e) => problems.push(format!("retention not checked: {e}")),
        }
    }
    match tenants::Influx::new(config.database.as_ref()) {
        Ok(influx) => {
            for tenant in tenants {
                match block_on(influx.state(tenant))? {
                    Ok(s) if s.exists => ok.push(format!("database {} exists", s.name)),
                    Ok(s) => problems.push(format!(
                        "database {} of {tenant} is missing: `tenants add --tenant {tenant}`",
                        s.name
                    )),
                    Err(e) => problems.push(e.to_string()),
                }
            }
        }
        Err(TenantsError::NoDatabase | TenantsError::Unsupported(_)) => {}
        Err(e) => problems.push(e.to_string()),
    }
    if problems.is_empty() {
        Ok(format!("connections ok: {}", ok.join("; ")))
    } else {
        Err(format!("check-config --connect: {}", problems.join("; ")))
    }
}

/// Whether files can be created in `dir` (or in the nearest existing parent, which the
/// service would create it in).
fn check_writable(dir: &Path) -> Result<(), String> {
    let existing = dir
        .ancestors()
        .find(|d| d.is_dir())
        .ok_or("no existing parent directory")?;
    let probe = existing.join(format!(".vigie-check-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!("not writable ({}: {e})", existing.display())),
    }
}

/// `config`: the commented example configuration, every key with its default.
pub fn example_config() -> &'static str {
    include_str!("../../gateway.example.toml")
}

/// Options of `devices add` and `devices rotate`.
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
    /// `--broker-host`.
    pub broker_host: bool,
    /// `--broker-port`.
    pub broker_port: bool,
    /// `--broker-ca`.
    pub broker_ca: bool,
}

impl AddDevice {
    /// The enrolment of a rotation: what the command did not give is `old`'s (site, zone,
    /// coordinates, bin depth, intervals, the broker and the CA its blob named).
    fn over(&self, old: &registry::DeviceEntry) -> Enrolment {
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

/// Whether a device must be new or must exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrol {
    /// `devices add`: a new device (an id that exists is refused; one removed before
    /// continues its key epochs).
    Add,
    /// `devices rotate`: an existing device gets a new key, epoch and broker password.
    Rotate,
}

/// `devices add` / `devices rotate`: generates a key and a broker password, writes the
/// registry entry, the board's provisioning blob and the broker's access file. `add`
/// refuses an id that exists (a repeated command must not re-key a deployed board);
/// an id removed before starts at the key epoch after its last, so the new board never
/// inherits the old one's replay state. `rotate` keeps what it is not given again.
pub fn devices_add(g: &GatewayConfig, a: &AddDevice, mode: Enrol) -> Result<String, String> {
    let name = format!("{}/{}", a.device.tenant, a.device.id);
    let (epoch, n, d) = change(g, |registry| {
        let existing = registry.get(&a.device.tenant, &a.device.id);
        let d = match (mode, existing) {
            (Enrol::Rotate, None) => {
                return Err(format!(
                    "no device {name} in {}: use `devices add`",
                    g.registry.display()
                ));
            }
            (Enrol::Add, Some(dev)) => {
                return Err(format!(
                    "{name} is already enrolled (key epoch {}): nothing changed. `devices \
                     rotate` gives it a new key; to enrol another board under this id, \
                     `devices remove` it first",
                    dev.entry.epoch
                ));
            }
            (_, Some(dev)) => a.over(&dev.entry),
            (_, None) => a.device.clone(),
        };
        // SPEC §13.8: the first epoch is 1; 2³²−1 is the last.
        let epoch = registry.next_epoch(&d.tenant, &d.id).ok_or_else(|| {
            format!("{name} is at the last key epoch (2^32-1): enrol the board under a new id")
        })?;
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).map_err(|e| format!("no system randomness for the key: {e}"))?;
        let password = access::new_password()
            .map_err(|e| format!("no system randomness for the password: {e}"))?;
        // Each mistake named by the option that carries it.
        let (entry, blob) = registry::enroll(&d, key, epoch, &password).map_err(|e| match e {
            EnrolError::Tenant(..) => format!("--tenant: {e}"),
            EnrolError::Id(..) => format!("--id: {e}"),
            EnrolError::Host(..) => format!("--broker-host: {e}"),
            EnrolError::Interval => format!("--sample-interval: {e}"),
            EnrolError::BinDepth => format!("--bin-depth-mm: {e}"),
            EnrolError::Password | EnrolError::Random(_) => e.to_string(),
        })?;
        let mut entry = entry;
        // A re-keyed device keeps what it was given before, unless given anew.
        if let Some(old) = existing {
            for (to, from) in [
                (&mut entry.place, &old.entry.place),
                (&mut entry.insee, &old.entry.insee),
                (&mut entry.container, &old.entry.container),
            ] {
                to.clone_from(from);
            }
            entry.capacity_l = old.entry.capacity_l;
        }
        a.meta.apply(&mut entry)?;
        registry.upsert(entry).map_err(|e| e.to_string())?;
        let mut buf = [0u8; MAX_BLOB_LEN];
        let n = blob.encode(&mut buf).map_err(|e| e.to_string())?;
        crate::store::fs::write_atomic(&a.blob_out, &buf[..n], 0o600)
            .map_err(|e| format!("{}: {e}", a.blob_out.display()))?;
        Ok((epoch, n, d))
    })?;
    let transport = match d.transport {
        Transport::Plain => "plain TCP (no --broker-ca: the password travels in clear)".into(),
        Transport::Tls { ca_sha256 } => format!(
            "TLS: load the CA onto the board's modem as {} (docs/FLASHING.md)",
            protocol::provision::ca_file_name(&ca_sha256)
        ),
    };
    Ok(format!(
        "{} {name} ({}, key epoch {epoch}, broker {}:{}, {transport}); provisioning blob: {} ({n} bytes).\n{}",
        if mode == Enrol::Add {
            "added"
        } else {
            "re-keyed"
        },
        d.kind.name(),
        d.broker_host,
        d.broker_port,
        a.blob_out.display(),
        access::restart_hint(&g.broker_access())
    ))
}

/// A read-modify-write of the registry under its lock; the broker's access file is
/// rewritten from the result under the same lock. Nothing is saved if `f` fails.
fn change<T>(
    g: &GatewayConfig,
    f: impl FnOnce(&mut Registry) -> Result<T, String>,
) -> Result<T, String> {
    let mut locked = registry::lock(&g.registry).map_err(|e| e.to_string())?;
    let out = f(&mut locked.registry)?;
    locked.save().map_err(|e| e.to_string())?;
    let path = g.broker_access();
    access::write(&path, &locked.registry).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(out)
}

/// [`change`] of one existing device by `f` (false: no such device).
fn change_device(
    g: &GatewayConfig,
    tenant: &str,
    id: &str,
    f: impl FnOnce(&mut Registry, &str, &str) -> bool,
) -> Result<(), String> {
    change(g, |registry| {
        f(registry, tenant, id)
            .then_some(())
            .ok_or_else(|| format!("no device {tenant}/{id} in {}", g.registry.display()))
    })
}

/// `devices edit`: sets what `meta` gives on an existing device; its key stays.
pub fn devices_edit(
    g: &GatewayConfig,
    tenant: &str,
    id: &str,
    meta: &Metadata,
) -> Result<String, String> {
    if *meta == Metadata::default() {
        return Err("nothing to change: give --site, --zone, --latitude, --longitude, --place, --insee, --container or --capacity-l".into());
    }
    change(g, |registry| {
        let mut entry = registry
            .get(tenant, id)
            .ok_or_else(|| format!("no device {tenant}/{id} in {}", g.registry.display()))?
            .entry
            .clone();
        meta.apply(&mut entry)?;
        registry.upsert(entry).map_err(|e| e.to_string())
    })?;
    Ok(format!("edited {tenant}/{id} (key unchanged)"))
}

/// `devices revoke`: the gateway rejects the device's frames from its next registry
/// reload; the broker refuses the device from its next restart. The entry stays (its
/// frames are counted as `revoked`).
pub fn devices_revoke(g: &GatewayConfig, tenant: &str, id: &str) -> Result<String, String> {
    change_device(g, tenant, id, Registry::revoke)?;
    Ok(format!(
        "revoked {tenant}/{id}.\n{}",
        access::restart_hint(&g.broker_access())
    ))
}

/// `devices remove`: the device leaves the registry and the broker's accounts (its
/// frames are then `unknown_device`). Its stored readings stay in the database.
pub fn devices_remove(g: &GatewayConfig, tenant: &str, id: &str) -> Result<String, String> {
    change_device(g, tenant, id, Registry::remove)?;
    Ok(format!(
        "removed {tenant}/{id} from the registry (its stored readings stay in the database).\n{}",
        access::restart_hint(&g.broker_access())
    ))
}

/// After a registry change: asks the running service to load it and says what happened.
/// An error if the service answered that it cannot load it (the change is saved, but not
/// in force); without `http.admin_token`, or with the service stopped, says what to do.
pub fn reload(config: &Config) -> Result<String, String> {
    const BY_HAND: &str = "run `systemctl reload vigie-gateway` (SIGHUP) to load it";
    let Some(addr) = config.http.listen else {
        return Ok(format!(
            "The gateway's status port is off (http.listen): {BY_HAND}."
        ));
    };
    let not_running = || {
        format!(
            "The gateway service does not answer on {addr}: it loads the registry when it starts."
        )
    };
    let Some(token) = &config.http.admin_token else {
        // No warning before the service ever ran: it will load the file when it starts.
        if let Err(ServiceError::Unreachable(_)) =
            service_request(addr, reqwest::Method::GET, "/healthz", None)
        {
            return Ok(not_running());
        }
        return Ok(format!(
            "No http.admin_token, so this command cannot ask the running gateway: {BY_HAND}."
        ));
    };
    match service_request(addr, reqwest::Method::POST, "/registry/reload", Some(token)) {
        Ok(body) => {
            let devices = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["devices"].as_u64())
                .unwrap_or(0);
            Ok(format!(
                "The running gateway loaded the registry: {devices} devices."
            ))
        }
        Err(ServiceError::Unreachable(_)) => Ok(not_running()),
        Err(ServiceError::Refused(why)) => Err(format!(
            "the registry is saved, but the running gateway cannot load it ({why}); it keeps \
             the previous registry until this is fixed"
        )),
    }
}

/// `gateways add`: a broker account for one gateway (each gateway of a group needs its
/// own: the broker binds the account to one client id, its username). The password goes to
/// `password_out` (mode 0640, group `vigie`: the service reads it), its hash to the registry
/// and the broker's access file.
pub fn gateways_add(
    g: &GatewayConfig,
    username: &str,
    password_out: &Path,
) -> Result<String, String> {
    change(g, |registry| {
        let password = access::new_password()
            .map_err(|e| format!("no system randomness for the password: {e}"))?;
        let password_hash = access::hash_password(&password)
            .map_err(|e| format!("no system randomness for the salt: {e}"))?;
        registry
            .set_gateway(registry::GatewayAccount {
                username: username.into(),
                password_hash,
            })
            .map_err(|e| e.to_string())?;
        // Read by the service: group vigie, like the registry.
        crate::store::fs::replace_for_group(
            password_out,
            format!("{}\n", password.expose()).as_bytes(),
            0o640,
            registry::SERVICE_GROUP,
        )
        .map_err(|e| format!("{}: {e}", password_out.display()))
    })?;
    Ok(format!(
        "gateway account {username}: password in {}. In the gateway's config set \
         mqtt.username = \"{username}\" and mqtt.password_file = \"{}\"; {}",
        password_out.display(),
        password_out.display(),
        access::restart_hint(&g.broker_access())
    ))
}

/// `broker-cert`: the deployment's CA (created beside the registry on first use) issues
/// the broker's TLS certificate for `hosts` into `out_dir` (`vigie-broker.crt`, and
/// `vigie-broker.key` mode 0640, group `mosquitto`; a replaced file keeps its owner and
/// group).
pub fn broker_cert(g: &GatewayConfig, hosts: &[String], out_dir: &Path) -> Result<String, String> {
    let dir = g.registry.parent().unwrap_or(Path::new("."));
    let files = crate::fleet::pki::CaFiles::in_dir(dir);
    let (ca, created) = crate::fleet::pki::load_or_create_ca(&files).map_err(|e| e.to_string())?;
    let issued = crate::fleet::pki::issue_server(&ca, hosts).map_err(|e| e.to_string())?;
    let (cert, key) = (
        out_dir.join("vigie-broker.crt"),
        out_dir.join("vigie-broker.key"),
    );
    let group = access::BROKER_GROUP;
    crate::store::fs::replace_for_group(&cert, issued.cert_pem.as_bytes(), 0o644, group)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    crate::store::fs::replace_for_group(&key, issued.key_pem.as_bytes(), 0o640, group)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    let ca_note = if created {
        format!(
            "created the CA {} (its key {} is mode 0600: keep it safe, boards pin this CA)",
            files.cert.display(),
            files.key.display()
        )
    } else {
        format!("signed by the CA {}", files.cert.display())
    };
    Ok(format!(
        "broker certificate for {} valid until {}: {} and {}; {ca_note}.\n\
         Restart the broker; use --broker-ca {} with `devices add` and \
         mqtt.ca_file = \"{}\" for gateways on other hosts.",
        hosts.join(", "),
        issued.not_after.date(),
        cert.display(),
        key.display(),
        files.cert.display(),
        files.cert.display(),
    ))
}

/// The `transport` a board gets: TLS pinned to the CA in `ca_pem` (its first
/// certificate), or plain TCP without one.
pub fn transport(ca_pem: Option<&Path>) -> Result<Transport, String> {
    let Some(path) = ca_pem else {
        return Ok(Transport::Plain);
    };
    let pem = std::fs::read(path).map_err(|e| format!("--broker-ca {}: {e}", path.display()))?;
    let cert = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .ok_or_else(|| format!("--broker-ca {}: no PEM certificate", path.display()))?
        .map_err(|e| format!("--broker-ca {}: {e}", path.display()))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut ca_sha256 = [0u8; 32];
    ca_sha256.copy_from_slice(digest.as_ref());
    Ok(Transport::Tls { ca_sha256 })
}

/// `devices list`: the registry, with last-seen times from the running service if it answers.
pub fn devices_list(config: &Config) -> Result<String, String> {
    let registry = Registry::load(&config.gateway.registry).map_err(|e| e.to_string())?;
    // The running service's state, else what it saved when it last ran.
    let live = config.http.listen.and_then(|addr| {
        let text = service_request(addr, reqwest::Method::GET, "/devices", None).ok()?;
        DeviceBook::from_json(&text).ok()
    });
    let (book, source) = match live {
        Some(book) => (book, None),
        None => match devices::load_saved(&config.gateway.data_dir) {
            Ok(book) => (
                book,
                Some(" (the gateway service does not answer: state as it last saved it)"),
            ),
            Err(_) => (
                DeviceBook::default(),
                Some(
                    " (last seen unknown: the gateway service does not answer and saved no state)",
                ),
            ),
        },
    };
    let mut rows = vec![
        [
            "TENANT",
            "DEVICE",
            "KIND",
            "EPOCH",
            "STATE",
            "LAST SEEN (UTC)",
            "BATTERY",
            "STATUS",
            "SITE",
        ]
        .map(String::from),
    ];
    for e in registry.entries() {
        let state = book.get(&e.tenant, &e.id);
        let when = state
            .and_then(|d| d.last_reading_s)
            .map_or_else(|| "-".to_string(), |t| UtcTime(t as u32).to_string());
        let battery = state.and_then(|d| d.battery_mv).map_or_else(
            || "-".to_string(),
            |mv| format!("{:.2} V", mv as f64 / 1000.0),
        );
        let status = match state.and_then(|d| d.online) {
            Some(true) => "online",
            Some(false) => "offline",
            None => "-",
        };
        let registered = if e.revoked { "revoked" } else { "active" };
        rows.push([
            e.tenant.clone(),
            e.id.clone(),
            e.kind.name().to_string(),
            e.epoch.to_string(),
            registered.to_string(),
            when,
            battery,
            status.to_string(),
            e.site.clone().unwrap_or_default(),
        ]);
    }
    let mut out = table(&rows);
    out.push_str(&format!("{} devices", registry.len()));
    out.push_str(source.unwrap_or(""));
    Ok(out)
}

/// `rows` as columns as wide as their widest cell (ids go up to 32 characters, site names
/// further): the last column unpadded.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < N {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `tenants add`: the commune's database, kept for `retention` (default
/// `database.retention`; none: for ever). Idempotent: an existing database gets the new
/// retention.
pub fn tenants_add(
    config: &Config,
    tenant: &str,
    retention: Option<Duration>,
) -> Result<String, String> {
    protocol::Id::new(tenant).map_err(|e| format!("--tenant {tenant:?}: {e}"))?;
    let retention = retention.or(config.database.as_ref().and_then(|d| d.retention));
    let influx = match tenants::Influx::new(config.database.as_ref()) {
        Ok(influx) => influx,
        Err(TenantsError::Unsupported(why)) => {
            return Ok(format!("{tenant}: nothing to create here. {why}."));
        }
        Err(e) => return Err(e.to_string()),
    };
    let max_age = config.validation.max_age;
    if let Some(keeps) = retention.filter(|r| *r < max_age + retention::MARGIN) {
        return Err(format!(
            "a retention of {} keeps less than validation.max_age ({}) and a day's margin: \
             readings the gateway accepts would be discarded by the database. Give at least \
             {}, or lower validation.max_age in the config first",
            retention::words(keeps),
            retention::words(max_age),
            retention::words(max_age + retention::MARGIN),
        ));
    }
    let state = block_on(influx.create(tenant, retention))?.map_err(|e| e.to_string())?;
    Ok(format!(
        "database {} ready for {tenant}; readings kept {}",
        state.name,
        kept(state.retention.as_deref())
    ))
}

/// `tenants list`: the communes of the registry (devices, revoked) and their databases.
pub fn tenants_list(config: &Config) -> Result<String, String> {
    let registry = Registry::load(&config.gateway.registry).map_err(|e| e.to_string())?;
    let mut tenants: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for e in registry.entries() {
        let t = tenants.entry(e.tenant.as_str()).or_default();
        t.0 += 1;
        t.1 += usize::from(e.revoked);
    }
    let influx = tenants::Influx::new(config.database.as_ref());
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
        let database = match &influx {
            Ok(influx) => match block_on(influx.state(tenant))? {
                Ok(s) if s.exists => {
                    format!(
                        "{} (readings kept {})",
                        s.name,
                        kept(s.retention.as_deref())
                    )
                }
                Ok(s) => format!("{} MISSING: `tenants add --tenant {tenant}`", s.name),
                Err(e) => format!("unknown ({e})"),
            },
            Err(TenantsError::NoDatabase) => "none: line-protocol files".into(),
            Err(_) => config
                .database
                .as_ref()
                .map_or_else(String::new, |d| d.target(tenant)),
        };
        rows.push([
            tenant.to_string(),
            devices.to_string(),
            revoked.to_string(),
            database,
        ]);
    }
    let mut out = table(&rows);
    out.push_str(&format!("{} tenants", tenants.len()));
    if let Err(TenantsError::Unsupported(why)) = &influx {
        out.push_str(&format!(" ({why})"));
    }
    Ok(out)
}

/// `tenants remove`: a commune leaves. Refused while the registry still holds its devices;
/// its database (and every reading in it) is dropped only with `drop_database`.
pub fn tenants_remove(
    config: &Config,
    tenant: &str,
    drop_database: bool,
) -> Result<String, String> {
    let registry = Registry::load(&config.gateway.registry).map_err(|e| e.to_string())?;
    let devices = registry
        .entries()
        .iter()
        .filter(|e| e.tenant == tenant)
        .count();
    if devices > 0 {
        return Err(format!(
            "{devices} devices of {tenant} are in the registry: `devices remove` them first"
        ));
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
        let mut others: Vec<&str> = registry
            .tenants()
            .into_iter()
            .chain(db.tenants.keys().map(String::as_str))
            .filter(|t| *t != tenant && db.target(t) == name)
            .collect();
        others.dedup();
        if !others.is_empty() {
            return Err(format!(
                "database {name} also holds the readings of {}: not dropped (the communes \
                 share it through database.tenants)",
                others.join(", ")
            ));
        }
    }
    let influx = tenants::Influx::new(config.database.as_ref()).map_err(|e| e.to_string())?;
    let name = block_on(influx.drop(tenant))?.map_err(|e| e.to_string())?;
    Ok(format!(
        "dropped database {name} of {tenant} and every reading in it"
    ))
}

/// How long a retention keeps readings, in words.
/// InfluxDB's retention text in words: `17520h0m0s` → `for 730 days`.
fn kept(retention: Option<&str>) -> String {
    match retention.map(|d| (d, retention::parse_influx(d))) {
        None | Some((_, Some(None))) => "for ever".into(),
        Some((_, Some(Some(d)))) => format!("for {}", retention::words(d)),
        Some((d, None)) => format!("for {d}"),
    }
}

/// What `devices watch` saw.
#[derive(Debug, Default)]
pub struct Watched {
    /// Events printed.
    pub events: usize,
    /// Frames stored.
    pub stored: usize,
    /// Resent frames.
    pub duplicates: usize,
    /// Frames rejected.
    pub rejected: usize,
}

impl Watched {
    /// The closing line.
    pub fn summary(&self, who: &str) -> String {
        format!(
            "watched {who}: {} frames stored, {} duplicates, {} rejected",
            self.stored, self.duplicates, self.rejected
        )
    }
}

/// `devices watch`: prints each new frame of one device as the running service judges
/// it, through `out`, until `count` frames, `timeout` or Ctrl-C.
pub fn devices_watch(
    config: &Config,
    tenant: &str,
    device: &str,
    count: Option<usize>,
    timeout: Option<Duration>,
    out: &mut dyn FnMut(&str),
) -> Result<Watched, String> {
    let addr = config
        .http
        .listen
        .ok_or("http.listen is off: the live feed comes from the running service's status port")?;
    if let Ok(registry) = Registry::load(&config.gateway.registry)
        && registry.get(tenant, device).is_none()
    {
        out(&format!(
            "{tenant}/{device} is not in the registry: its frames will show as rejected (unknown_device)"
        ));
    }
    let feed = |after: u64| async move {
        let path = format!("/devices/{tenant}/{device}/frames?after={after}");
        let text = request(addr, reqwest::Method::GET, &path, None)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| format!("the service's answer: {e}"))
    };
    let started = std::time::Instant::now();
    let mut seen = Watched::default();
    block_on(async {
        // From the newest event on: what arrives from now.
        let mut after = feed(u64::MAX).await?["last_seq"].as_u64().unwrap_or(0);
        out(&format!(
            "watching {tenant}/{device}: waiting for frames (Ctrl-C to stop)"
        ));
        loop {
            let page = feed(after).await?;
            for e in page["events"].as_array().into_iter().flatten() {
                after = after.max(e["seq"].as_u64().unwrap_or(0));
                out(&watch_line(e));
                seen.events += 1;
                match e["verdict"].as_str() {
                    Some("stored") => seen.stored += 1,
                    Some("duplicate") => seen.duplicates += 1,
                    Some("rejected") => seen.rejected += 1,
                    _ => {}
                }
            }
            if count.is_some_and(|n| seen.events >= n) {
                return Ok(());
            }
            if let Some(t) = timeout.filter(|t| started.elapsed() >= *t) {
                return Err(format!(
                    "nothing more within {}s; {}",
                    t.as_secs(),
                    seen.summary(&format!("{tenant}/{device}"))
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    })??;
    Ok(seen)
}

/// One line of `devices watch`.
fn watch_line(e: &serde_json::Value) -> String {
    use chrono::{Local, TimeZone};
    let at = Local
        .timestamp_millis_opt(e["at_ms"].as_i64().unwrap_or(0))
        .single()
        .map_or_else(|| "?".into(), |t| t.format("%H:%M:%S").to_string());
    let counter = e["counter"]
        .as_u64()
        .map_or_else(String::new, |c| format!(" frame {c}"));
    match e["verdict"].as_str().unwrap_or("?") {
        "stored" => match e["readings"].as_u64().unwrap_or(0) {
            1 => format!("{at}{counter}: stored, 1 reading"),
            n => format!("{at}{counter}: stored, {n} readings"),
        },
        "rejected" => {
            let reason = e["reason"].as_str().unwrap_or("?");
            format!(
                "{at}: rejected ({reason}): {}",
                vigie_core::judge::reason::Reason::hint(reason)
            )
        }
        "duplicate" => format!("{at}: duplicate of a stored frame (a resend), acknowledged again"),
        other => format!("{at}: {other}"),
    }
}

/// Runs `f` to completion on a runtime of its own (the CLI is synchronous).
pub(crate) fn block_on<F: Future>(f: F) -> Result<F::Output, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    Ok(runtime.block_on(f))
}

/// `quarantine list`.
pub fn quarantine_list(config: &Config) -> Result<String, String> {
    let data = &config.gateway.data_dir;
    let mut out = format!(
        "{:<20} {:<18} {:<40} {:>6}  DETAIL\n",
        "RECEIVED (UTC)", "REASON", "TOPIC", "BYTES"
    );
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    let mut unreadable = 0;
    for dir in ["quarantine", "quarantine-db"] {
        let (entries, bad) = quarantine::read_all(&data.join(dir))
            .map_err(|e| format!("{}: {e}", data.join(dir).display()))?;
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
pub fn quarantine_replay(config: &Config) -> Result<String, String> {
    let addr = config
        .http
        .listen
        .ok_or("quarantine replay goes through the running service; set http.listen")?;
    let token = config
        .http
        .admin_token
        .as_ref()
        .ok_or("quarantine replay needs http.admin_token (or VIGIE_ADMIN_TOKEN)")?;
    let body = service_request(
        addr,
        reqwest::Method::POST,
        "/quarantine/replay",
        Some(token),
    )
    .map_err(|e| format!("the gateway service on {addr} refused or did not answer ({e})"))?;
    Ok(format!("replayed through the pipeline: {}", body.trim()))
}

/// `erase`: the readings of a commune, or of one of its devices, optionally only those
/// measured before a time, removed from every place they are kept (see [`crate::ops::erase`]).
/// Without `yes`, a dry run that says what would go.
pub fn erase(
    config: &Config,
    tenant: &str,
    device: Option<&str>,
    before_s: Option<u32>,
    yes: bool,
) -> Result<String, String> {
    protocol::Id::new(tenant).map_err(|e| format!("--tenant {tenant:?}: {e}"))?;
    if let Some(d) = device {
        protocol::Id::new(d).map_err(|e| format!("--device {d:?}: {e}"))?;
    }
    let scope = Scope {
        tenant: tenant.into(),
        device: device.map(String::from),
        before_s,
    };
    let report = block_on(erase::run(config, &scope, yes))?.map_err(|e| e.to_string())?;
    let whose = match device {
        Some(d) => format!("{tenant}/{d}"),
        None => format!("every device of {tenant}"),
    };
    let when = before_s.map_or(String::new(), |b| {
        format!(" measured before {}", UtcTime(b))
    });
    let verb = if yes { "erased" } else { "would erase" };
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
    if report.progress_reset {
        out.push_str("  (the service writes its buffer again from the start at its next run; the database keeps each point once)\n");
    }
    out.push_str(&if yes {
        format!(
            "audit line appended to {}",
            config.gateway.data_dir.join("audit.log").display()
        )
    } else {
        "nothing changed: run again with --yes to erase".into()
    });
    Ok(out)
}

/// A UTC time for `--before`: `2026-01-01` (midnight) or `2026-01-01T12:00:00Z`.
pub fn parse_utc(text: &str) -> Result<u32, String> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    let t = humantime::parse_rfc3339(&full)
        .map_err(|e| format!("{e}: expected 2026-01-01 or 2026-01-01T12:00:00Z"))?;
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "before 1970".to_string())?
        .as_secs();
    u32::try_from(secs).map_err(|_| "after 2106".into())
}

/// Why a request to the running service failed.
#[derive(Debug)]
enum ServiceError {
    /// No answer (not running, wrong port).
    Unreachable(String),
    /// It answered with an error status.
    Refused(String),
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(e) | Self::Refused(e) => f.write_str(e),
        }
    }
}

/// One request to the running service's status port; the body of a 2xx answer.
fn service_request(
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    token: Option<&crate::config::Secret>,
) -> Result<String, ServiceError> {
    block_on(request(addr, method, path, token)).map_err(ServiceError::Unreachable)?
}

/// One request to the running service.
async fn request(
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    token: Option<&crate::config::Secret>,
) -> Result<String, ServiceError> {
    let unreachable = |e: &dyn std::fmt::Display| ServiceError::Unreachable(e.to_string());
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        // A replay re-judges the whole quarantine.
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| unreachable(&e))?;
    let mut request = client.request(method, format!("http://{addr}{path}"));
    if let Some(t) = token {
        request = request.bearer_auth(t.expose());
    }
    let answer = request.send().await.map_err(|e| unreachable(&e))?;
    let status = answer.status();
    let body = answer.text().await.map_err(|e| unreachable(&e))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(ServiceError::Refused(format!("{status}: {}", body.trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::registry::DeviceKind;
    use protocol::provision::Provisioning;

    #[test]
    fn retentions_read_in_days_and_columns_hold_long_names() {
        assert_eq!(kept(Some("17520h0m0s")), "for 730 days");
        assert_eq!(kept(Some("0s")), "for ever");
        assert_eq!(kept(None), "for ever");
        assert_eq!(kept(Some("36h0m0s")), "for 36 hours");
        let row = |a: &str, b: &str, c: &str| [a.to_string(), b.to_string(), c.to_string()];
        let t = table(&[
            row("TENANT", "DEVICE", "SITE"),
            row("villefranche-sur-saone", "bin-0001", "Place des Arts"),
            row("lyon", "aq-1", ""),
        ]);
        let starts: Vec<Option<usize>> = t
            .lines()
            .zip(["DEVICE", "bin-0001", "aq-1"])
            .map(|(l, d)| l.find(d))
            .collect();
        assert_eq!(starts, [Some(24); 3], "{t}");
        assert!(t.lines().all(|l| !l.ends_with(' ')), "{t}");
    }

    /// The accounts and ACLs of the access file, as (username, [(acltype, topic)]).
    fn accounts(g: &GatewayConfig) -> Vec<(String, Vec<(String, String)>)> {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(g.broker_access()).unwrap()).unwrap();
        let roles = v["roles"].as_array().unwrap();
        v["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let role = c["roles"][0]["rolename"].as_str().unwrap();
                let r = roles.iter().find(|r| r["rolename"] == role).unwrap();
                let acls = r["acls"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| (a["acltype"].to_string(), a["topic"].to_string()))
                    .collect();
                (c["username"].as_str().unwrap().to_string(), acls)
            })
            .collect()
    }

    #[test]
    fn add_rotate_revoke_keep_registry_blob_and_broker_accounts_in_step() {
        let dir = tempfile::tempdir().unwrap();
        let g = GatewayConfig {
            data_dir: dir.path().join("data"),
            registry: dir.path().join("devices.toml"),
            broker_access: None,
        };
        let mut a = AddDevice {
            device: Enrolment {
                tenant: "lyon".into(),
                id: "bin-7".into(),
                kind: DeviceKind::WasteBin,
                site: None,
                zone: Some("nord".into()),
                latitude: None,
                longitude: None,
                bin_depth_mm: Some(1100),
                sample_interval_s: 600,
                heartbeat_s: 3600,
                broker_host: "mqtt.lyon.example".into(),
                broker_port: 8883,
                transport: Transport::Tls { ca_sha256: [7; 32] },
            },
            meta: Metadata {
                insee: Some("69123".into()),
                container: Some("ground".into()),
                capacity_l: Some(660),
                ..Metadata::default()
            },
            blob_out: dir.path().join("bin-7.vgp"),
            given: Given::default(),
        };
        // Rotating a device that does not exist is refused.
        assert!(
            devices_add(&g, &a, Enrol::Rotate)
                .unwrap_err()
                .contains("devices add")
        );
        devices_add(&g, &a, Enrol::Add).unwrap();
        let blob = Provisioning::decode(&std::fs::read(&a.blob_out).unwrap()).unwrap();
        let registry = Registry::load(&g.registry).unwrap();
        let dev = registry.get("lyon", "bin-7").unwrap();
        assert_eq!(blob.key, dev.key, "blob and registry hold the same key");
        assert_eq!(
            (blob.bin_depth_mm, blob.broker_port, blob.key.epoch()),
            (1100, 8883, 1)
        );
        assert_eq!(blob.transport, a.device.transport);
        // The registry keeps the password's hash only; the blob the password.
        let hash = dev.entry.broker_password_hash.clone().unwrap();
        assert!(access::verify(&hash, &blob.broker_password));
        let text = std::fs::read_to_string(&g.registry).unwrap();
        assert!(!text.contains(blob.broker_password.as_str()));
        // The device's account may publish its uplink and status, read its acks.
        let q = |s: &str| format!("{s:?}");
        assert_eq!(
            accounts(&g),
            [(
                "lyon.bin-7".to_string(),
                vec![
                    (q("publishClientSend"), q("vigie/v1/lyon/bin-7/up")),
                    (q("publishClientSend"), q("vigie/v1/lyon/bin-7/status")),
                    (q("subscribeLiteral"), q("vigie/v1/lyon/bin-7/ack")),
                    (q("publishClientReceive"), q("vigie/v1/lyon/bin-7/ack")),
                ]
            )]
        );
        // A gateway account: may share the uplink subscription and acknowledge.
        let pw = dir.path().join("gw.password");
        gateways_add(&g, "gw-mairie", &pw).unwrap();
        let secret = std::fs::read_to_string(&pw).unwrap();
        assert_eq!(secret.trim().len(), access::PASSWORD_LEN);
        let gw = Registry::load(&g.registry).unwrap().gateways()[0].clone();
        assert!(access::verify(&gw.password_hash, secret.trim()));
        assert!(
            gateways_add(&g, "lyon.bin-7", &pw).is_err(),
            "a device's name"
        );
        // Rotating: next epoch, new key, new password; the gateway account stays.
        a.blob_out = dir.path().join("bin-7b.vgp");
        devices_add(&g, &a, Enrol::Rotate).unwrap();
        let blob2 = Provisioning::decode(&std::fs::read(&a.blob_out).unwrap()).unwrap();
        let again = Registry::load(&g.registry).unwrap();
        let dev2 = again.get("lyon", "bin-7").unwrap();
        assert_eq!(dev2.key.epoch(), 2);
        assert_ne!(dev2.key.expose_secret(), dev.key.expose_secret());
        assert_ne!(blob2.broker_password, blob.broker_password);
        let hash2 = dev2.entry.broker_password_hash.clone().unwrap();
        assert!(
            access::verify(&hash2, &blob2.broker_password)
                && !access::verify(&hash2, &blob.broker_password)
        );
        // Its metadata came with it, and `devices edit` changes it without a new key.
        assert_eq!(
            (
                dev2.entry.insee.as_deref(),
                dev2.entry.container.as_deref(),
                dev2.entry.capacity_l
            ),
            (Some("69123"), Some("ground"), Some(660))
        );
        let moved = Metadata {
            latitude: Some(45.7578),
            longitude: Some(4.832),
            place: Some("Place Bellecour".into()),
            ..Metadata::default()
        };
        devices_edit(&g, "lyon", "bin-7", &moved).unwrap();
        let edited = Registry::load(&g.registry).unwrap();
        let dev3 = edited.get("lyon", "bin-7").unwrap();
        assert_eq!(dev3.key, dev2.key, "the key stays");
        assert_eq!(
            (
                dev3.entry.latitude,
                dev3.entry.place.as_deref(),
                dev3.entry.capacity_l
            ),
            (Some(45.7578), Some("Place Bellecour"), Some(660))
        );
        for (bad, says) in [
            (
                Metadata {
                    latitude: Some(91.0),
                    ..Metadata::default()
                },
                "--latitude",
            ),
            (
                Metadata {
                    insee: Some("6912".into()),
                    ..Metadata::default()
                },
                "--insee",
            ),
            (
                Metadata {
                    container: Some("bag".into()),
                    ..Metadata::default()
                },
                "--container",
            ),
            (Metadata::default(), "nothing to change"),
        ] {
            assert!(
                devices_edit(&g, "lyon", "bin-7", &bad)
                    .unwrap_err()
                    .contains(says)
            );
        }
        // `add` again, as a repeated shell command would: refused, nothing changed.
        let before = std::fs::read(&g.registry).unwrap();
        assert!(
            devices_add(&g, &a, Enrol::Add)
                .unwrap_err()
                .contains("already enrolled (key epoch 2): nothing changed")
        );
        assert_eq!(std::fs::read(&g.registry).unwrap(), before);
        // A rotation given none of the settings keeps the device's: zone, intervals,
        // broker and the CA its blob pinned (not the command's defaults).
        let mut bare = a.clone();
        bare.device.zone = None;
        bare.device.sample_interval_s = 300;
        bare.device.heartbeat_s = 3600;
        bare.device.broker_host = "127.0.0.1".into();
        bare.device.broker_port = 1883;
        bare.device.transport = Transport::Plain;
        bare.blob_out = dir.path().join("bin-7c.vgp");
        assert!(
            devices_add(&g, &bare, Enrol::Rotate)
                .unwrap()
                .contains("key epoch 3")
        );
        let blob3 = Provisioning::decode(&std::fs::read(&bare.blob_out).unwrap()).unwrap();
        assert_eq!(
            (
                blob3.sample_interval_s,
                blob3.heartbeat_s,
                blob3.broker_host.as_str(),
                blob3.broker_port,
                blob3.transport,
            ),
            (600, 3600, "mqtt.lyon.example", 8883, a.device.transport)
        );
        let kept = Registry::load(&g.registry).unwrap();
        assert_eq!(
            kept.get("lyon", "bin-7").unwrap().entry.zone.as_deref(),
            Some("nord")
        );
        // What a rotation is given, it takes.
        let mut moved = bare.clone();
        moved.device.sample_interval_s = 120;
        moved.given.sample_interval = true;
        devices_add(&g, &moved, Enrol::Rotate).unwrap();
        let blob4 = Provisioning::decode(&std::fs::read(&moved.blob_out).unwrap()).unwrap();
        assert_eq!((blob4.sample_interval_s, blob4.key.epoch()), (120, 4));
        // Removed and added again: the next epoch, never 1 again (its replay state is
        // the old board's), and a fresh entry.
        devices_remove(&g, "lyon", "bin-7").unwrap();
        let out = devices_add(&g, &a, Enrol::Add).unwrap();
        assert!(
            out.starts_with("added lyon/bin-7") && out.contains("key epoch 5"),
            "{out}"
        );
        let readded = Registry::load(&g.registry).unwrap();
        assert_eq!(readded.get("lyon", "bin-7").unwrap().key.epoch(), 5);
        assert!(
            readded.removed().is_empty(),
            "the tombstone goes with the new entry"
        );
        // Bad ids get a clear message.
        a.device.id = "Bin 7".into();
        assert!(
            devices_add(&g, &a, Enrol::Add)
                .unwrap_err()
                .contains("--id")
        );
        assert!(
            devices_revoke(&g, "lyon", "nope")
                .unwrap_err()
                .contains("no device")
        );
        // Revoking removes the device's broker account, keeps the gateway's.
        devices_revoke(&g, "lyon", "bin-7").unwrap();
        let reg = Registry::load(&g.registry).unwrap();
        assert!(reg.get("lyon", "bin-7").unwrap().entry.revoked);
        let names: Vec<_> = accounts(&g).into_iter().map(|(u, _)| u).collect();
        assert_eq!(names, ["gw-mairie"]);
    }

    #[test]
    fn broker_ca_pins_the_sha256_of_the_first_certificate() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(transport(None), Ok(Transport::Plain));
        let pem = dir.path().join("ca.pem");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\nAwQF\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let want = ring::digest::digest(&ring::digest::SHA256, &[0, 1, 2]);
        assert_eq!(
            transport(Some(&pem)),
            Ok(Transport::Tls {
                ca_sha256: want.as_ref().try_into().unwrap()
            })
        );
        std::fs::write(&pem, "not a certificate").unwrap();
        assert!(
            transport(Some(&pem))
                .unwrap_err()
                .contains("no PEM certificate")
        );
        let missing = dir.path().join("missing.pem");
        assert!(
            transport(Some(&missing))
                .unwrap_err()
                .starts_with("--broker-ca")
        );
    }
}
