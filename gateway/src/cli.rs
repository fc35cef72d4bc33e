//! Operator commands: `check-config`, `devices add|list|revoke`, `quarantine list|replay`.
//! Each returns the text to print or an error message; `main.rs` only prints.

use crate::config::Config;
use crate::quarantine;
use crate::registry::{self, DeviceKind, EnrolError, Enrolment, Registry};
use protocol::json::UtcTime;
use protocol::provision::MAX_BLOB_LEN;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `check-config FILE`: loads and validates config and registry.
pub fn check_config(path: &Path) -> Result<String, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let registry = Registry::load(&config.gateway.registry).map_err(|e| e.to_string())?;
    let broker = match &config.mqtt.host {
        Some(h) => format!("{h}:{}", config.mqtt.port),
        None => format!("embedded on {}", config.mqtt.embedded_listen),
    };
    let db = match &config.database {
        Some(d) => format!("{:?} API at {}", d.api, d.url),
        None => "none: line-protocol files".into(),
    };
    Ok(format!(
        "config ok: broker {broker}; database {db}; {} devices in {}",
        registry.len(),
        config.gateway.registry.display()
    ))
}

/// Options of `devices add`.
#[derive(Debug, Clone)]
pub struct AddDevice {
    /// The device and the settings its blob carries.
    pub device: Enrolment,
    /// Where to write the provisioning blob.
    pub blob_out: PathBuf,
}

/// `devices add`: generates a key (or the next epoch's key for an existing device), writes
/// the registry entry and the board's provisioning blob.
pub fn devices_add(registry_path: &Path, a: &AddDevice) -> Result<String, String> {
    let d = &a.device;
    let mut registry = Registry::load(registry_path).map_err(|e| e.to_string())?;
    // Re-adding a device is a re-keying: new key, next epoch, counter may restart.
    let epoch = registry
        .get(&d.tenant, &d.id)
        .map_or(1, |dev| dev.entry.epoch.saturating_add(1));
    let mut key = [0u8; 16];
    getrandom::fill(&mut key).map_err(|e| format!("no system randomness for the key: {e}"))?;
    // Each mistake named by the option that carries it.
    let (entry, blob) = registry::enroll(d, key, epoch).map_err(|e| match e {
        EnrolError::Tenant(..) => format!("--tenant: {e}"),
        EnrolError::Id(..) => format!("--id: {e}"),
        EnrolError::Host(..) => format!("--broker-host: {e}"),
    })?;
    registry.upsert(entry).map_err(|e| e.to_string())?;
    let mut buf = [0u8; MAX_BLOB_LEN];
    let n = blob.encode(&mut buf).map_err(|e| e.to_string())?;
    crate::fs::write_atomic(&a.blob_out, &buf[..n], 0o600)
        .map_err(|e| format!("{}: {e}", a.blob_out.display()))?;
    registry.save(registry_path).map_err(|e| e.to_string())?;
    Ok(format!(
        "added {}/{} ({:?}, key epoch {epoch}); provisioning blob: {} ({n} bytes). \
         Send SIGHUP to a running gateway to load it.",
        d.tenant,
        d.id,
        d.kind,
        a.blob_out.display()
    ))
}

/// `devices revoke`.
pub fn devices_revoke(registry_path: &Path, tenant: &str, id: &str) -> Result<String, String> {
    let mut registry = Registry::load(registry_path).map_err(|e| e.to_string())?;
    if !registry.revoke(tenant, id) {
        return Err(format!(
            "no device {tenant}/{id} in {}",
            registry_path.display()
        ));
    }
    registry.save(registry_path).map_err(|e| e.to_string())?;
    Ok(format!(
        "revoked {tenant}/{id}; send SIGHUP to a running gateway to apply it"
    ))
}

/// `devices list`: the registry, with last-seen times from the running service if it answers.
pub fn devices_list(config: &Config) -> Result<String, String> {
    let registry = Registry::load(&config.gateway.registry).map_err(|e| e.to_string())?;
    let seen = config
        .http
        .listen
        .and_then(|addr| http_request(addr, "GET", "/metrics", None).ok())
        .map(|text| last_seen(&text))
        .unwrap_or_default();
    let mut out = format!(
        "{:<16} {:<16} {:<12} {:>5} {:<8} {:<21} SITE\n",
        "TENANT", "DEVICE", "KIND", "EPOCH", "STATE", "LAST SEEN (UTC)"
    );
    for e in registry.entries() {
        let when = seen
            .get(&(e.tenant.clone(), e.id.clone()))
            .map_or_else(|| "-".to_string(), |t| UtcTime(*t as u32).to_string());
        let kind = match e.kind {
            DeviceKind::AirQuality => "air_quality",
            DeviceKind::WasteBin => "waste_bin",
        };
        let state = if e.revoked { "revoked" } else { "active" };
        out.push_str(&format!(
            "{:<16} {:<16} {:<12} {:>5} {:<8} {:<21} {}\n",
            e.tenant,
            e.id,
            kind,
            e.epoch,
            state,
            when,
            e.site.as_deref().unwrap_or("")
        ));
    }
    out.push_str(&format!("{} devices", registry.len()));
    if config.http.listen.is_some() && seen.is_empty() {
        out.push_str(" (last seen unknown: the gateway service does not answer on http.listen)");
    }
    Ok(out)
}

fn last_seen(metrics: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("vigie_device_last_seen_timestamp_seconds{"))
    {
        let label = |name: &str| {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            let end = line[start..].find('"')? + start;
            Some(line[start..end].to_string())
        };
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let (Some(t), Some(d), Some(v)) = (label("tenant"), label("device"), value) {
            out.insert((t, d), v);
        }
    }
    out
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
    let body = http_request(addr, "POST", "/quarantine/replay", Some(token))
        .map_err(|e| format!("the gateway service on {addr} refused or did not answer ({e})"))?;
    Ok(format!("replayed through the pipeline: {}", body.trim()))
}

/// Minimal HTTP/1.1 request to the service's status port; returns the body of a 200.
fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&crate::config::Secret>,
) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let auth = token.map_or(String::new(), |t| {
        format!("authorization: Bearer {}\r\n", t.expose())
    });
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or("").to_string());
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::provision::Provisioning;

    #[test]
    fn add_writes_registry_and_a_blob_the_firmware_accepts_and_rekeys() {
        let dir = tempfile::tempdir().unwrap();
        let reg = dir.path().join("devices.toml");
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
            },
            blob_out: dir.path().join("bin-7.vgp"),
        };
        devices_add(&reg, &a).unwrap();
        let blob = Provisioning::decode(&std::fs::read(&a.blob_out).unwrap()).unwrap();
        let registry = Registry::load(&reg).unwrap();
        let dev = registry.get("lyon", "bin-7").unwrap();
        assert_eq!(blob.key, dev.key, "blob and registry hold the same key");
        assert_eq!(
            (blob.bin_depth_mm, blob.broker_port, blob.key.epoch()),
            (1100, 8883, 1)
        );
        // Adding again re-keys with the next epoch.
        a.blob_out = dir.path().join("bin-7b.vgp");
        devices_add(&reg, &a).unwrap();
        let again = Registry::load(&reg).unwrap();
        let dev2 = again.get("lyon", "bin-7").unwrap();
        assert_eq!(dev2.key.epoch(), 2);
        assert_ne!(dev2.key.expose_secret(), dev.key.expose_secret());
        // Bad ids get a clear message.
        a.device.id = "Bin 7".into();
        assert!(devices_add(&reg, &a).unwrap_err().contains("--id"));
        assert!(
            devices_revoke(&reg, "lyon", "nope")
                .unwrap_err()
                .contains("no device")
        );
        devices_revoke(&reg, "lyon", "bin-7").unwrap();
        assert!(
            Registry::load(&reg)
                .unwrap()
                .get("lyon", "bin-7")
                .unwrap()
                .entry
                .revoked
        );
    }

    #[test]
    fn parses_last_seen_from_metrics() {
        let text = "vigie_device_last_seen_timestamp_seconds{tenant=\"lyon\",device=\"aq-1\"} 1795305600\nother 1\n";
        let seen = last_seen(text);
        assert_eq!(
            seen.get(&("lyon".into(), "aq-1".into())),
            Some(&1_795_305_600.0)
        );
    }
}
