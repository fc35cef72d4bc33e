//! `devices list` and `devices watch`: what the registry holds, and what the running
//! service sees of it.

use crate::config::Config;
use crate::fleet::registry::{Registry, RegistryFile};
use crate::observe::devices::{self, DeviceBook};
use crate::ops::service::{block_on, request, request_blocking};
use crate::ops::text::table;
use crate::ops::{OpsError, load};
use protocol::json::UtcTime;
use std::path::PathBuf;
use std::time::Duration;

/// `devices list`: the registry, with last-seen times from the running service if it answers.
pub fn list(config: &Config) -> Result<String, OpsError> {
    let registry = Registry::load(&config.gateway.registry)?;
    let (book, source) = state(config);
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

/// The running service's device state, else what it saved when it last ran, and a note
/// when it is not the live one.
fn state(config: &Config) -> (DeviceBook, Option<&'static str>) {
    let live = config.http.listen.and_then(|addr| {
        let text = request_blocking(addr, reqwest::Method::GET, "/devices", None).ok()?;
        DeviceBook::from_json(&text).ok()
    });
    match live {
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
    }
}

/// `devices watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Configuration file.
    #[arg(long, env = "VIGIE_CONFIG")]
    pub config: PathBuf,
    /// The device, as `tenant/device`, e.g. `lyon/aq-0001`.
    pub device: String,
    /// Stop after this many frames.
    #[arg(long)]
    pub count: Option<usize>,
    /// Give up after this many seconds (an error if --count was not reached).
    #[arg(long)]
    pub timeout: Option<u64>,
}

/// `devices watch` from the command line: each frame on its line, then the summary.
pub fn run(a: &WatchArgs) -> Result<(), OpsError> {
    let c = load(&a.config)?;
    let (tenant, id) = a
        .device
        .split_once('/')
        .ok_or_else(|| OpsError::DeviceName(a.device.clone()))?;
    let timeout = a.timeout.map(Duration::from_secs);
    let seen = watch(&c, tenant, id, a.count, timeout, &mut |line| {
        println!("{line}")
    })?;
    println!("{}", seen.summary(&a.device));
    Ok(())
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

    /// Counts one event of the feed.
    fn count(&mut self, e: &serde_json::Value) {
        self.events += 1;
        match e["verdict"].as_str() {
            Some("stored") => self.stored += 1,
            Some("duplicate") => self.duplicates += 1,
            Some("rejected") => self.rejected += 1,
            _ => {}
        }
    }
}

/// `devices watch`: prints each new frame of one device as the running service judges
/// it, through `out`, until `count` frames, `timeout` or Ctrl-C.
pub fn watch(
    config: &Config,
    tenant: &str,
    device: &str,
    count: Option<usize>,
    timeout: Option<Duration>,
    out: &mut dyn FnMut(&str),
) -> Result<Watched, OpsError> {
    let addr = config
        .http
        .listen
        .ok_or(OpsError::NoStatusPort("devices watch"))?;
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
            .map_err(|source| OpsError::Service { addr, source })?;
        serde_json::from_str::<serde_json::Value>(&text).map_err(OpsError::Answer)
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
                seen.count(e);
            }
            if count.is_some_and(|n| seen.events >= n) {
                return Ok(());
            }
            if let Some(after) = timeout.filter(|t| started.elapsed() >= *t) {
                let summary = seen.summary(&format!("{tenant}/{device}"));
                return Err(OpsError::WatchTimeout { after, summary });
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
