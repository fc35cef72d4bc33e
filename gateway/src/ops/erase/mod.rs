//! `erase --tenant T [--device D] [--before TIME]` (docs/OPERATIONS.md, "Erasing data"):
//! removes the readings a [`Scope`] covers from every place the gateway keeps them (its
//! buffer, both quarantines, the line-protocol files) and from the database, then
//! appends an audit line to `<data_dir>/audit.log`.
//!
//! It runs with the service stopped: it takes the data directory's lock, so a running
//! service makes it refuse, and the service cannot start until it is done (a dry run only
//! reads, and may run beside the service). Nothing is lost
//! meanwhile: devices keep their frames until the gateway acknowledges them, and the
//! broker queues what they send. The database is checked first: a scope the server cannot
//! erase (a time bound on VictoriaMetrics) is refused before anything changes.

pub mod command;

use crate::config::{Config, DatabaseApi, DatabaseConfig, DatabaseKind};
use crate::deliver::tenants::{Influx, TenantsError};
use crate::store::quarantine::{self, Entry, Origin};
use protocol::json::UtcTime;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigie_core::erase::Scope;
use vigie_core::record::Record;

/// Why an erasure did not (wholly) happen.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// The service holds the data directory.
    #[error(
        "the gateway is running on {0}: stop it first (`systemctl stop vigie-gateway`), erase, \
         then start it again; devices keep their readings meanwhile"
    )]
    Running(PathBuf),
    /// The database cannot erase this scope; nothing was changed.
    #[error("{0}; nothing was erased")]
    Unsupported(String),
    /// A local store could not be read or rewritten.
    #[error("{what} {path}: {source}")]
    Io {
        /// Which store.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The group's store did not take or give the erasure (nothing was erased in the
    /// database).
    #[error("{0}; the database was not erased: run the same command again")]
    Group(Box<crate::ops::group::GroupOpsError>),
    /// Members of the group have not erased their copies in time.
    #[error(
        "the copies of this gateway are erased, but {} have not erased theirs within {waited_s} s (they will at their next start, or as soon as they reach the group's store); the database was not erased: run the same command again",
        .members.join(", ")
    )]
    Behind {
        /// Their client ids.
        members: Vec<String>,
        /// How long the command waited.
        waited_s: u64,
    },
    /// The gateway's own copies are erased, the database's are not.
    #[error(
        "the gateway's copies are erased, the database's are not: {0}; run the same command \
         again once the database answers"
    )]
    Database(DatabaseRefusal),
}

/// Why the database did not erase.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseRefusal {
    /// Its client could not be set up.
    #[error(transparent)]
    Setup(#[from] crate::deliver::SetupError),
    /// An InfluxDB 1.x server.
    #[error(transparent)]
    Influx(#[from] TenantsError),
    /// An InfluxDB 2.x server.
    #[error(transparent)]
    V2(#[from] crate::deliver::v2::DeleteError),
    /// The HTTP request.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    /// VictoriaMetrics answered with an error status.
    #[error("VictoriaMetrics answered {0}")]
    Status(reqwest::StatusCode),
}

/// How the database erases the scope's readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// No database: readings are in the line-protocol files only.
    Files,
    /// InfluxDB 1.x: an InfluxQL `DELETE` in the tenant's database.
    InfluxQl {
        /// The tenant's database.
        database: String,
        /// The statement.
        statement: String,
    },
    /// InfluxDB 2.x/3.x: the delete API on the tenant's bucket.
    InfluxV2 {
        /// The tenant's bucket.
        bucket: String,
        /// Tag predicate.
        predicate: String,
        /// Unix seconds: readings before it (the end of time without `--before`).
        stop_s: u32,
    },
    /// VictoriaMetrics: `delete_series` of the matching series, whole.
    Victoria {
        /// Series selector.
        selector: String,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Files => write!(f, "none configured (line-protocol files only)"),
            Target::InfluxQl {
                database,
                statement,
            } => write!(f, "InfluxDB database {database}: {statement}"),
            Target::InfluxV2 {
                bucket, predicate, ..
            } => write!(f, "InfluxDB bucket {bucket}: delete where {predicate}"),
            Target::Victoria { selector } => {
                write!(f, "VictoriaMetrics: delete_series {selector}")
            }
        }
    }
}

/// What erasing `scope` means for the configured database; refused when it cannot.
pub fn plan(database: Option<&DatabaseConfig>, scope: &Scope) -> Result<Target, EraseError> {
    let Some(cfg) = database else {
        return Ok(Target::Files);
    };
    // Ids are checked (`a-z`, `0-9`, `-`, `_`): no quoting trouble in any of these.
    let tenant = &scope.tenant;
    let device = scope.device.as_deref();
    Ok(match (cfg.kind, cfg.api) {
        (DatabaseKind::Influxdb, DatabaseApi::V1) => {
            let mut statement = format!("DELETE WHERE \"tenant\" = '{tenant}'");
            if let Some(d) = device {
                statement.push_str(&format!(" AND \"device\" = '{d}'"));
            }
            if let Some(b) = scope.before_s {
                statement.push_str(&format!(" AND time < '{}'", UtcTime(b)));
            }
            Target::InfluxQl {
                database: cfg.target(tenant),
                statement,
            }
        }
        (DatabaseKind::Influxdb, DatabaseApi::V2) => {
            let mut predicate = format!("tenant=\"{tenant}\"");
            if let Some(d) = device {
                predicate.push_str(&format!(" AND device=\"{d}\""));
            }
            Target::InfluxV2 {
                bucket: cfg.target(tenant),
                predicate,
                stop_s: scope.before_s.unwrap_or(u32::MAX),
            }
        }
        (DatabaseKind::Victoriametrics, _) => {
            if scope.before_s.is_some() {
                return Err(EraseError::Unsupported(
                    "VictoriaMetrics deletes whole series, not a time range: erase without \
                     --before, or let its -retentionPeriod remove old readings"
                        .into(),
                ));
            }
            let mut selector = format!("{{tenant=\"{tenant}\"");
            if let Some(d) = device {
                selector.push_str(&format!(",device=\"{d}\""));
            }
            selector.push('}');
            Target::Victoria { selector }
        }
    })
}

/// What an erasure removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Readings removed from the buffer.
    pub buffer_readings: u64,
    /// Quarantined frames or lines removed or cut.
    pub quarantine_entries: u64,
    /// Lines removed from the line-protocol files.
    pub file_lines: u64,
    /// Devices whose saved state (last seen, battery) was forgotten: a whole device or
    /// commune only, not with `--before`.
    pub device_states: u64,
    /// What the database did.
    pub database: String,
    /// The sink's progress was reset (the buffer's records moved).
    pub progress_reset: bool,
}

/// Erases `scope` everywhere (`apply`), or says what it would erase (a dry run, which
/// writes nothing and asks the database nothing). In a group, every member erases its
/// own copies first ([`crate::ops::group`]), the database last.
/// `group_wait`: how long, in a group, to wait for the other members.
pub fn run(
    config: &Config,
    scope: &Scope,
    apply: bool,
    group_wait: Duration,
) -> Result<Report, EraseError> {
    let target = plan(config.database.as_ref(), scope)?;
    let data = &config.gateway.data_dir;
    // A dry run only reads, and may run beside the service.
    let _lock = if apply { Some(lock(data)?) } else { None };
    let mut report = match &config.group {
        Some(group) if apply => in_group(config, group, scope, group_wait)?,
        _ => local(data, scope, apply)?,
    };
    if !apply {
        report.database = match target {
            Target::Files => target.to_string(),
            _ => format!("would erase from {target}"),
        };
        return Ok(report);
    }
    let done = match config.database.as_ref() {
        Some(cfg) => block_on(database(cfg, &target))?,
        None => Ok(()),
    };
    report.database = match &done {
        Ok(()) => target.to_string(),
        Err(e) => format!("failed: {e}"),
    };
    audit(data, scope, &report)?;
    done.map_err(EraseError::Database)?;
    Ok(report)
}

/// A group member's erasure: the erasure added to the group's log, this gateway's log
/// applied (the erasure with it), then the other members waited for.
fn in_group(
    config: &Config,
    group: &crate::config::GroupConfig,
    scope: &Scope,
    wait: Duration,
) -> Result<Report, EraseError> {
    use crate::ops::group::{self, GroupOp, GroupOpsError};
    let failed = |e: GroupOpsError| EraseError::Group(Box::new(e));
    let store = |e: crate::store::group::GroupError| failed(GroupOpsError::Store(e));
    let me = &config.mqtt.client_id;
    let mut etcd = crate::store::group::Etcd::new(group).map_err(|e| failed(e.into()))?;
    let op = GroupOp::Erase {
        tenant: scope.tenant.clone(),
        device: scope.device.clone(),
        before_s: scope.before_s,
        by: me.clone(),
    };
    let revision = group::publish(&mut etcd, std::slice::from_ref(&op)).map_err(store)?;
    let applied = group::catch_up(config, &mut etcd).map_err(failed)?;
    let report = applied
        .into_iter()
        .find(|a| a.revision == revision)
        .and_then(|a| a.report)
        .unwrap_or_default();
    let members = group::wait_for_members(&mut etcd, me, revision, wait).map_err(store)?;
    if members.is_empty() {
        Ok(report)
    } else {
        Err(EraseError::Behind {
            members,
            waited_s: wait.as_secs(),
        })
    }
}

/// Runs `f` on a runtime of its own (the database's clients are asynchronous).
fn block_on<F: Future>(f: F) -> Result<F::Output, EraseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| EraseError::Io {
            what: "async runtime",
            path: PathBuf::new(),
            source,
        })?;
    Ok(runtime.block_on(f))
}

/// The data directory's lock, as the service takes it.
fn lock(data: &Path) -> Result<std::fs::File, EraseError> {
    crate::lock_data_dir(data).map_err(|e| match e {
        crate::RunError::Locked(dir) => EraseError::Running(dir),
        other => EraseError::Io {
            what: "data directory",
            path: data.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}

/// The gateway's own copies: buffer, quarantines, line-protocol files.
pub(crate) fn local(data: &Path, scope: &Scope, apply: bool) -> Result<Report, EraseError> {
    let io = |what: &'static str, path: PathBuf| {
        move |source: std::io::Error| EraseError::Io { what, path, source }
    };
    let mut report = Report::default();
    let buffer = data.join("buffer");
    let mut readings = 0;
    let records = crate::store::buffer::rewrite_offline(&buffer, apply, |payload| {
        let r = Record::decode(payload).ok()?;
        let (lines, gone) = scope.keep_lines(&r.tenant, &r.lines);
        if gone == 0 {
            return None;
        }
        readings += gone as u64;
        // The record stays, emptied or cut: its frame counter keeps the replay window
        // whole, so a device resending that frame is still told "duplicate".
        let mut out = Vec::new();
        Record {
            readings: lines.lines().count() as u32,
            lines,
            ..r
        }
        .encode(&mut out);
        Some(out)
    })
    .map_err(io("buffer", buffer))?;
    report.buffer_readings = readings;
    if records > 0 && apply {
        // Offsets moved: the sink starts again from the oldest record (at least once).
        let progress = data.join("sink.state");
        match std::fs::remove_file(&progress) {
            Ok(()) => report.progress_reset = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("sink progress", progress)(e)),
        }
    }
    for dir in ["quarantine", "quarantine-db"] {
        let dir = data.join(dir);
        report.quarantine_entries += quarantine::rewrite_offline(&dir, apply, |e| entry(scope, e))
            .map_err(io("quarantine", dir))?;
    }
    let export = data.join("export");
    report.file_lines = crate::deliver::erase_files(&export, scope, apply)
        .map_err(io("line-protocol files", export))?;
    if scope.before_s.is_none() {
        report.device_states = device_states(data, scope, apply)?;
    }
    Ok(report)
}

/// The device state a stopped gateway saved, without the erased devices; how many.
fn device_states(data: &Path, scope: &Scope, apply: bool) -> Result<u64, EraseError> {
    let io = |path: PathBuf| {
        move |source: std::io::Error| EraseError::Io {
            what: "device state",
            path,
            source,
        }
    };
    let path = data.join(crate::observe::devices::FILE_NAME);
    let mut book = match crate::observe::devices::load_saved(data) {
        Ok(book) => book,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(path)(e)),
    };
    let gone = book.forget(&scope.tenant, scope.device.as_deref());
    if gone > 0 && apply {
        let json = book.to_json();
        crate::store::fs::replace_for_group(&path, json.as_bytes(), 0o640, "vigie")
            .map_err(io(path))?;
    }
    Ok(gone as u64)
}

/// A quarantined entry after the erasure: frames by topic and arrival, database lines by
/// their own tags and times. Damaged buffer bytes cannot be attributed and stay.
fn entry(scope: &Scope, e: Entry) -> Option<Entry> {
    match e.origin {
        Origin::Mqtt => (!scope.covers_frame(&e.topic, e.received_ms)).then_some(e),
        Origin::Database => {
            let text = hex::decode(&e.payload)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let Some(text) = text else { return Some(e) };
            let (kept, gone) = scope.keep_lines(&e.topic, &text);
            match (gone, kept.is_empty()) {
                (0, _) => Some(e),
                (_, true) => None,
                _ => Some(Entry {
                    payload: hex::encode(kept),
                    ..e
                }),
            }
        }
        Origin::Buffer => Some(e),
    }
}

/// Carries the plan out on the database.
async fn database(cfg: &DatabaseConfig, target: &Target) -> Result<(), DatabaseRefusal> {
    match target {
        Target::Files => Ok(()),
        Target::InfluxQl {
            database,
            statement,
        } => {
            let influx = Influx::new(Some(cfg))?;
            match influx.query_in(database, statement).await {
                Ok(_) => Ok(()),
                // A database that was never made holds nothing to erase.
                Err(TenantsError::Refused { answer, .. })
                    if answer.contains("database not found") =>
                {
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        Target::InfluxV2 {
            bucket,
            predicate,
            stop_s,
        } => Ok(crate::deliver::v2::delete(cfg, bucket, *stop_s, predicate).await?),
        Target::Victoria { selector } => {
            let client = crate::deliver::client_builder(cfg)?
                .build()
                .map_err(|e| DatabaseRefusal::Http(e.without_url()))?;
            let url = format!(
                "{}/api/v1/admin/tsdb/delete_series",
                cfg.url.trim_end_matches('/')
            );
            let request = client.post(url).form(&[("match[]", selector.as_str())]);
            let answer = crate::deliver::authorize(request, cfg)
                .send()
                .await
                .map_err(|e| DatabaseRefusal::Http(e.without_url()))?;
            match answer.status() {
                s if s.is_success() => Ok(()),
                s => Err(DatabaseRefusal::Status(s)),
            }
        }
    }
}

/// Appends the audit line: who erased what, when, and what each store gave up. It names
/// no reading.
pub(crate) fn audit(data: &Path, scope: &Scope, report: &Report) -> Result<(), EraseError> {
    let path = data.join("audit.log");
    let now = u32::try_from(crate::clock::Clock::system().now_ms() / 1000).unwrap_or(u32::MAX);
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self").map_or("unknown".into(), |m| format!("uid {}", m.uid()))
        });
    let line = serde_json::json!({
        "time": UtcTime(now).to_string(),
        "action": "erase",
        "user": user,
        "tenant": scope.tenant,
        "device": scope.device,
        "before": scope.before_s.map(|b| UtcTime(b).to_string()),
        "buffer_readings": report.buffer_readings,
        "quarantine_entries": report.quarantine_entries,
        "file_lines": report.file_lines,
        "device_states": report.device_states,
        "database": report.database,
    });
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(&path)?;
        writeln!(f, "{line}")?;
        f.sync_data()
    };
    write().map_err(|source| EraseError::Io {
        what: "audit log",
        path: path.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(kind: DatabaseKind, api: DatabaseApi) -> DatabaseConfig {
        let text = format!(
            "api = \"{}\"\nkind = \"{}\"\nurl = \"http://127.0.0.1:1\"\nprefix = \"vigie_\"\n",
            match api {
                DatabaseApi::V1 => "v1",
                DatabaseApi::V2 => "v2",
            },
            match kind {
                DatabaseKind::Influxdb => "influxdb",
                DatabaseKind::Victoriametrics => "victoriametrics",
            }
        );
        toml::from_str(&text).unwrap()
    }

    fn scope(device: Option<&str>, before_s: Option<u32>) -> Scope {
        Scope {
            tenant: "lyon".into(),
            device: device.map(String::from),
            before_s,
        }
    }

    #[test]
    fn each_database_gets_its_own_statement() {
        let v1 = db(DatabaseKind::Influxdb, DatabaseApi::V1);
        assert_eq!(
            plan(Some(&v1), &scope(Some("aq-1"), Some(1_767_225_600))).unwrap(),
            Target::InfluxQl {
                database: "vigie_lyon".into(),
                statement: "DELETE WHERE \"tenant\" = 'lyon' AND \"device\" = 'aq-1' AND time \
                            < '2026-01-01T00:00:00Z'"
                    .into()
            }
        );
        assert_eq!(
            plan(Some(&v1), &scope(None, None)).unwrap(),
            Target::InfluxQl {
                database: "vigie_lyon".into(),
                statement: "DELETE WHERE \"tenant\" = 'lyon'".into()
            }
        );
        let v2 = db(DatabaseKind::Influxdb, DatabaseApi::V2);
        assert_eq!(
            plan(Some(&v2), &scope(Some("aq-1"), None)).unwrap(),
            Target::InfluxV2 {
                bucket: "vigie_lyon".into(),
                predicate: "tenant=\"lyon\" AND device=\"aq-1\"".into(),
                stop_s: u32::MAX,
            }
        );
        let vm = db(DatabaseKind::Victoriametrics, DatabaseApi::V1);
        assert_eq!(
            plan(Some(&vm), &scope(Some("aq-1"), None)).unwrap(),
            Target::Victoria {
                selector: "{tenant=\"lyon\",device=\"aq-1\"}".into()
            }
        );
        assert!(matches!(
            plan(Some(&vm), &scope(None, Some(5))),
            Err(EraseError::Unsupported(_))
        ));
        assert_eq!(plan(None, &scope(None, Some(5))).unwrap(), Target::Files);
    }

    #[test]
    fn quarantined_database_lines_are_cut_and_frames_dropped() {
        let lines = "air_quality,device=aq-1,tenant=lyon pm25=1 1000\n\
                     air_quality,device=aq-2,tenant=lyon pm25=2 1000\n";
        let refused = Entry {
            received_ms: 5,
            origin: Origin::Database,
            topic: "lyon".into(),
            reason: "database_rejected".into(),
            detail: String::new(),
            payload: hex::encode(lines),
            acknowledged: true,
        };
        let s = scope(Some("aq-1"), None);
        let cut = entry(&s, refused.clone()).unwrap();
        assert_eq!(
            hex::decode(cut.payload).unwrap(),
            b"air_quality,device=aq-2,tenant=lyon pm25=2 1000\n"
        );
        assert_eq!(entry(&scope(None, None), refused.clone()), None);
        let frame = Entry {
            origin: Origin::Mqtt,
            topic: "vigie/v1/lyon/aq-1/up".into(),
            ..refused.clone()
        };
        assert_eq!(entry(&s, frame), None);
        let damaged = Entry {
            origin: Origin::Buffer,
            ..refused
        };
        assert_eq!(entry(&s, damaged.clone()), Some(damaged));
    }
}
