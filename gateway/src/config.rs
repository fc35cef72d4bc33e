//! Configuration: nested serde structs with explicit defaults, loaded from TOML, then
//! environment overrides for secrets and addresses, then validated into messages a person
//! can act on. The commented reference is `gateway/gateway.example.toml`.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use vigie_core::Secret;

/// A configuration mistake, said so that it can be fixed without reading code.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown / mistyped key.
    #[error("config file {path}: {error}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        error: ParseError,
    },
    /// A value is out of its allowed range or inconsistent with another.
    #[error("config: {0}")]
    Invalid(String),
}

/// Where a config text is wrong and why: line, column, the key on that line and the
/// parser's reason, never the text of the line or a value (it may hold a password, a
/// token or a device key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}{}: {reason}", key.as_ref().map(|k| format!(" (`{k}`)")).unwrap_or_default())]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The key the line sets, when it reads as `key = …`.
    pub key: Option<String>,
    /// The parser's reason, values left out.
    pub reason: String,
}

impl ParseError {
    /// The error at byte range `span` of `text`, for `message` (the parser's own, which
    /// for `toml` and `toml_edit` never holds the line but for serde may quote a value:
    /// anything quoted is left out).
    pub fn at(text: &str, span: Option<std::ops::Range<usize>>, message: &str) -> Self {
        let start = span.map_or(0, |s| s.start.min(text.len()));
        let start = (0..=start)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        let before = &text[..start];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let key = text[line_start..]
            .split_once('=')
            .map(|(k, _)| k.trim())
            .filter(|k| looks_like_a_name(k))
            .map(String::from);
        Self {
            key,
            line: before.matches('\n').count() + 1,
            column: before.chars().count()
                - before
                    .rfind('\n')
                    .map_or(0, |i| before[..=i].chars().count())
                + 1,
            reason: never_from(text, &without_quoted(&unknown_name_out(message.trim()))),
        }
    }
}

/// serde's `unknown field `NAME`, expected …` (and `unknown variant`) with NAME left out
/// unless it reads as one of ours; NAME may itself hold backticks, so it runs to the last
/// "`, " of the message.
fn unknown_name_out(message: &str) -> String {
    for head in ["unknown field `", "unknown variant `"] {
        if let Some(rest) = message.strip_prefix(head)
            && let Some(end) = rest.rfind("`, ").or_else(|| rest.rfind('`'))
        {
            let name = &rest[..end];
            let shown = if looks_like_a_name(name) { name } else { "…" };
            return format!("{head}{shown}{}", &rest[end..]);
        }
    }
    message.to_string()
}

/// `reason` with every run of 16 or more letters and digits that `text` holds replaced by
/// `…`: the last guard, whatever a parser's message quotes (a key is 32 hex digits).
fn never_from(text: &str, reason: &str) -> String {
    let mut out = reason.to_string();
    for run in reason
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|r| r.len() >= 16 && text.contains(*r))
    {
        out = out.replace(run, "…");
    }
    out
}

/// `message` with the values serde quotes replaced by `…`: a string in double quotes
/// (`invalid type: string "…", expected u32`), a number, character or boolean in
/// backticks (`integer `…``). Field names in backticks stay (`unknown field `pasword``)
/// when they read as one of ours ([`looks_like_a_name`]): an unknown "field" may be a key
/// or a password pasted on a line of its own (found by `fuzz-gateway`).
fn without_quoted(message: &str) -> String {
    const VALUES: [&str; 4] = ["integer ", "floating point ", "character ", "boolean "];
    let mut out = String::with_capacity(message.len());
    // The quote that opened, whether it holds a value, and what it holds so far.
    let mut open: Option<(char, bool, String)> = None;
    for c in message.chars() {
        match &mut open {
            Some((q, value, held)) if c == *q => {
                if !*value && looks_like_a_name(held) {
                    out.push_str(held);
                } else {
                    out.push('…');
                }
                out.push(c);
                open = None;
            }
            Some((_, _, held)) => held.push(c),
            None => {
                if c == '"' || c == '`' {
                    let value = c == '"' || VALUES.iter().any(|v| out.ends_with(v));
                    open = Some((c, value, String::new()));
                }
                out.push(c);
            }
        }
    }
    if open.is_some() {
        out.push('…');
    }
    out
}

/// A configuration or registry field name as this schema spells them (`max_age`,
/// `broker_access`): lowercase, at most 40 characters, no run of 16 letters or digits.
/// Anything else in a key's place is not shown: it may be a secret.
fn looks_like_a_name(s: &str) -> bool {
    s.len() <= 40
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c))
        && s.split(|c: char| !c.is_ascii_alphanumeric())
            .all(|run| run.len() < 16)
}

#[cfg(test)]
#[test]
fn serde_values_are_left_out_field_names_kept() {
    assert_eq!(
        without_quoted("invalid type: string \"s3cret\", expected u32"),
        "invalid type: string \"…\", expected u32"
    );
    assert_eq!(
        without_quoted("invalid type: integer `1234`, expected a string"),
        "invalid type: integer `…`, expected a string"
    );
    assert_eq!(
        without_quoted("unknown field `pasword`, expected one of `password`"),
        "unknown field `pasword`, expected one of `password`"
    );
    assert_eq!(without_quoted("unterminated \"abc"), "unterminated \"…");
    // A key or password where a field name goes is not one of ours: left out.
    assert_eq!(
        without_quoted("unknown field `00112233445566778899aabbccddeeff`, expected `device`"),
        "unknown field `…`, expected `device`"
    );
    assert_eq!(
        without_quoted("unknown field `1JJJJJJJJJJJJJJJJJJ`"),
        "unknown field `…`"
    );
    let e = ParseError::at(
        "00112233445566778899aabbccddeeff = 1\n",
        Some(0..1),
        "unknown",
    );
    assert_eq!(e.key, None);
    let e = ParseError::at(
        "k`p,act77777777777777z2ed\n",
        Some(0..1),
        "unknown field `k`p,act77777777777777z2ed`, expected `device`",
    );
    assert_eq!(e.reason, "unknown field `…`, expected `device`");
    let e = ParseError::at("max_age = \"x\"\n", Some(0..1), "bad");
    assert_eq!(e.key.as_deref(), Some("max_age"));
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Paths.
    pub gateway: GatewayConfig,
    /// Broker connection; absent host means the embedded broker.
    pub mqtt: MqttConfig,
    /// Database; absent means line-protocol files under the data directory.
    pub database: Option<DatabaseConfig>,
    /// Write batching.
    pub batch: BatchConfig,
    /// Durable buffer.
    pub buffer: BufferConfig,
    /// Quarantine of rejected frames.
    pub quarantine: QuarantineConfig,
    /// Plausibility rules.
    pub validation: ValidationConfig,
    /// Metrics and health endpoints.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// Open-data exports.
    pub export: ExportConfig,
}

/// Open-data exports (`export`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// The fields each commune publishes (stored names, docs/SCHEMA.md); a commune not
    /// named publishes [`vigie_core::output::opendata::DEFAULT_PUBLIC`].
    pub public_fields: std::collections::BTreeMap<String, Vec<String>>,
}

impl ExportConfig {
    /// The public fields of `tenant`.
    pub fn public(&self, tenant: &str) -> Vec<String> {
        match self.public_fields.get(tenant) {
            Some(fields) => fields.clone(),
            None => vigie_core::output::opendata::DEFAULT_PUBLIC
                .iter()
                .map(|f| f.to_string())
                .collect(),
        }
    }
}

/// Paths.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Buffer, quarantine, replay state and line-protocol files live here.
    pub data_dir: PathBuf,
    /// Device registry file (`devices add` writes it).
    pub registry: PathBuf,
    /// The broker's access file (accounts and ACLs) that `devices` and `gateways`
    /// commands rewrite; default `broker-access.json` beside the registry.
    pub broker_access: Option<PathBuf>,
}

impl GatewayConfig {
    /// Where the broker's access file is.
    pub fn broker_access(&self) -> PathBuf {
        self.broker_access.clone().unwrap_or_else(|| {
            self.registry
                .parent()
                .unwrap_or(Path::new("."))
                .join("broker-access.json")
        })
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/vigie"),
            registry: PathBuf::from("/etc/vigie/devices.toml"),
            broker_access: None,
        }
    }
}

/// Broker connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host; unset runs the embedded broker on `embedded_listen`.
    pub host: Option<String>,
    /// Broker port.
    pub port: u16,
    /// Stable client id: the broker keeps this gateway's session (and unacked messages)
    /// under it. With `username` set, the username is the client id.
    pub client_id: String,
    /// Shared-subscription group: gateways of one group split the fleet.
    pub group: String,
    /// Broker account (`gateways add`). The shipped broker config binds each account to
    /// one client id, its username: with a username, the client id is the username.
    pub username: Option<String>,
    /// Password (or `VIGIE_MQTT_PASSWORD`, or `password_file`).
    pub password: Option<Secret>,
    /// File holding the password (what `gateways add` writes), read at start; `password`
    /// wins when both are set.
    pub password_file: Option<PathBuf>,
    /// Connect with TLS (rustls).
    pub tls: bool,
    /// PEM CA bundle for TLS; unset uses the system roots.
    pub ca_file: Option<PathBuf>,
    /// How long the broker keeps the session while the gateway is away.
    #[serde(with = "humantime_serde")]
    pub session_expiry: Duration,
    /// Unacknowledged QoS 1 messages the broker may send at once (MQTT 5 Receive Maximum).
    pub receive_maximum: u16,
    /// MQTT keep-alive: a ping at this period, and a broker that does not answer one before
    /// the next counts as lost. Zero turns it off (MQTT's meaning).
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Listen address of the embedded broker (used when `host` is unset).
    pub embedded_listen: SocketAddr,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: None,
            port: 1883,
            client_id: "vigie-gateway".into(),
            group: "vigie".into(),
            username: None,
            password: None,
            password_file: None,
            tls: false,
            ca_file: None,
            session_expiry: Duration::from_secs(24 * 3600),
            receive_maximum: 1000,
            keep_alive: Duration::from_secs(30),
            embedded_listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
        }
    }
}

/// Which write API the database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseApi {
    /// `/write?db=` (InfluxDB 1.x, and the v1-compatible endpoint of 2.x/3.x).
    V1,
    /// `/api/v2/write` through the influxdb2 crate (InfluxDB 2.x/3.x, VictoriaMetrics).
    V2,
}

/// Which server the database is, where it matters to what is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    /// InfluxDB (1.x, 2.x, 3.x): string values are string fields.
    #[default]
    Influxdb,
    /// VictoriaMetrics: it stores string fields as 0, so string values are written as
    /// tags (docs/SCHEMA.md).
    Victoriametrics,
}

/// Database connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Write API.
    pub api: DatabaseApi,
    /// Server kind (default `influxdb`).
    #[serde(default)]
    pub kind: DatabaseKind,
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// v2 organisation.
    #[serde(default)]
    pub org: Option<String>,
    /// v2 token, or v1 token (sent as `Authorization: Token …`); or `VIGIE_DATABASE_TOKEN`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// v1 username.
    #[serde(default)]
    pub username: Option<String>,
    /// v1 password (or `VIGIE_DATABASE_PASSWORD`).
    #[serde(default)]
    pub password: Option<Secret>,
    /// Database / bucket name = prefix + tenant, unless `tenants` maps it.
    #[serde(default)]
    pub prefix: String,
    /// Explicit tenant → database/bucket names.
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, String>,
    /// Per-request timeout.
    #[serde(default = "default_db_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// PEM CA bundle to trust for an `https://` URL (besides the system roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How long a commune's readings are kept, set by `tenants add` on its database
    /// (InfluxDB 1.x); none: for ever.
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// Send write bodies gzip-compressed (`Content-Encoding: gzip`; InfluxDB 1.x and
    /// VictoriaMetrics take it): about a tenth of the bytes, for a database across a slow
    /// or metered link, at some CPU on both ends (docs/PERFORMANCE.md).
    #[serde(default)]
    pub gzip: bool,
}

fn default_db_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `url` as messages and pages show it: without the user and password it may carry
/// (`http://user:pw@host`) and without its query (InfluxDB 1.x takes `?u=…&p=…`).
pub fn shown_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
#[test]
fn shown_urls_carry_no_credentials() {
    assert_eq!(
        shown_url("https://vigie:S3cret@db.example:8086/x?u=a&p=b"),
        "https://db.example:8086/x"
    );
    assert_eq!(shown_url("http://127.0.0.1:8086"), "http://127.0.0.1:8086");
    assert_eq!(shown_url("http://h/write?db=x&p=pw"), "http://h/write");
}

impl DatabaseConfig {
    /// [`shown_url`] of its `url`.
    pub fn url_shown(&self) -> String {
        shown_url(&self.url)
    }

    /// Where string values go in line protocol for this server.
    pub fn string_fields(&self) -> vigie_core::output::lineproto::StringFields {
        match self.kind {
            DatabaseKind::Influxdb => vigie_core::output::lineproto::StringFields::Fields,
            DatabaseKind::Victoriametrics => vigie_core::output::lineproto::StringFields::Tags,
        }
    }

    /// Database (v1) or bucket (v2) of a tenant.
    pub fn target(&self, tenant: &str) -> String {
        self.tenants
            .get(tenant)
            .cloned()
            .unwrap_or_else(|| format!("{}{}", self.prefix, tenant))
    }
}

/// Write batching.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Lines per write request.
    pub max_lines: usize,
    /// Longest wait for a batch to fill. Half a second by default: a reading is queryable
    /// within a second of its publication even when batches close by time, not by size,
    /// for at most two writes a second per tenant.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// First retry delay; doubles up to `max_backoff`, with jitter.
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_lines: 5000,
            linger: Duration::from_millis(500),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Durable buffer.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BufferConfig {
    /// Disk the buffer may use; when full the gateway stops acknowledging (backpressure).
    pub max_mib: u64,
    /// Size of one segment file.
    pub segment_mib: u64,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            max_mib: 1024,
            segment_mib: 8,
        }
    }
}

/// Quarantine.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuarantineConfig {
    /// Disk the quarantine may use; past it the oldest entries go (counted in metrics).
    pub max_mib: u64,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        Self { max_mib: 64 }
    }
}

/// Plausibility rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// Frames with a reading further in the future than this are held, not
    /// acknowledged, until they are not (a device clock ahead, a gateway clock behind).
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Frames with a reading older than this are refused, when the host clock is
    /// synchronised (else held).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// How the gateway knows its host clock is synchronised: `"kernel"` (adjtimex, as
    /// `timedatectl` reads it), `"always"`, or the path of a file that exists while it is.
    pub host_clock: crate::clock::SyncSource,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            max_future_skew: Duration::from_secs(300),
            max_age: Duration::from_secs(90 * 86_400),
            host_clock: crate::clock::SyncSource::Kernel,
        }
    }
}

/// Metrics and health endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `/metrics`, `/healthz`, `/readyz`, quarantine replay; unset disables.
    pub listen: Option<SocketAddr>,
    /// Bearer token for the state-changing endpoints (`POST /quarantine/replay`); unset
    /// turns them off. Also `VIGIE_ADMIN_TOKEN`.
    pub admin_token: Option<Secret>,
    /// The citizens' read-only view (commune pages without device ids); unset disables.
    pub public_listen: Option<SocketAddr>,
    /// The communes the public view shows.
    pub public_tenants: Vec<String>,
    /// Host names the listeners answer to besides IP addresses and `localhost` (a reverse
    /// proxy's public name); any other `Host` gets 421 (DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9650))),
            admin_token: None,
            public_listen: None,
            public_tenants: Vec::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// `tracing` filter, e.g. `info` or `gateway=debug` (`RUST_LOG` overrides).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Config {
    /// Reads, applies environment overrides, validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            error,
        })?;
        config.apply_env(|k| std::env::var(k).ok());
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        toml::from_str(text).map_err(|e| ParseError::at(text, e.span(), e.message()))
    }

    /// Environment overrides, so secrets need not sit in the file (systemd `LoadCredential`,
    /// `EnvironmentFile`): `VIGIE_DATA_DIR`, `VIGIE_MQTT_HOST`, `VIGIE_MQTT_PASSWORD`,
    /// `VIGIE_DATABASE_URL`, `VIGIE_DATABASE_TOKEN`, `VIGIE_DATABASE_PASSWORD`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("VIGIE_DATA_DIR") {
            self.gateway.data_dir = v.into();
        }
        if let Some(v) = get("VIGIE_MQTT_HOST") {
            self.mqtt.host = Some(v);
        }
        if let Some(v) = get("VIGIE_MQTT_PASSWORD") {
            self.mqtt.password = Some(Secret::new(v));
        }
        if let Some(v) = get("VIGIE_ADMIN_TOKEN") {
            self.http.admin_token = Some(Secret::new(v));
        }
        if let Some(db) = &mut self.database {
            if let Some(v) = get("VIGIE_DATABASE_URL") {
                db.url = v;
            }
            if let Some(v) = get("VIGIE_DATABASE_TOKEN") {
                db.token = Some(Secret::new(v));
            }
            if let Some(v) = get("VIGIE_DATABASE_PASSWORD") {
                db.password = Some(Secret::new(v));
            }
        }
    }

    /// Checks ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if let Some(user) = &self.mqtt.username
            && self.mqtt.client_id != user.as_str()
            && self.mqtt.client_id != MqttConfig::default().client_id
        {
            return bad(format!(
                "mqtt.client_id {:?} differs from mqtt.username {user:?}: the broker lets an \
                 account connect with its own username as client id only; remove \
                 mqtt.client_id",
                self.mqtt.client_id
            ));
        }
        if self.mqtt.host.is_none() && !self.mqtt.embedded_listen.ip().is_loopback() {
            return bad(format!(
                "mqtt.embedded_listen {}: the embedded broker has no accounts, so it listens on \
                 loopback only; for devices on a network set mqtt.host and run Mosquitto with \
                 deploy/mosquitto.conf",
                self.mqtt.embedded_listen
            ));
        }
        if let Some(db) = &self.database {
            // A URL the HTTP client cannot use is a config error, not a failure at the first
            // write (the v2 client would panic on it).
            match reqwest::Url::parse(&db.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                Ok(_) => return bad("database.url: an http:// or https:// URL with a host".into()),
                Err(e) => return bad(format!("database.url: {e}")),
            }
        }
        if self
            .http
            .admin_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            return bad(
                "http.admin_token: at least 16 characters (e.g. `openssl rand -hex 16`)".into(),
            );
        }
        if self
            .database
            .as_ref()
            .is_some_and(|d| d.gzip && d.api == DatabaseApi::V2)
        {
            return bad("database.gzip: only with api = \"v1\" (InfluxDB 1.x, VictoriaMetrics); the InfluxDB 2.x client sends plain bodies".into());
        }
        for (tenant, fields) in &self.export.public_fields {
            if let Some(f) = fields
                .iter()
                .find(|f| !vigie_core::output::opendata::DEFAULT_PUBLIC.contains(&f.as_str()))
            {
                return bad(format!(
                    "export.public_fields.{tenant}: {f:?} is not a field that can be published (one of {})",
                    vigie_core::output::opendata::DEFAULT_PUBLIC.join(", ")
                ));
            }
        }
        if self.http.public_listen.is_some() && self.http.public_tenants.is_empty() {
            return bad(
                "http.public_listen is set but http.public_tenants names no commune to show".into(),
            );
        }
        if let Some(t) = self
            .http
            .public_tenants
            .iter()
            .find(|t| protocol::Id::new(t).is_err())
        {
            return bad(format!(
                "http.public_tenants: {t:?} is not a tenant identifier"
            ));
        }
        if self.mqtt.client_id.is_empty() || self.mqtt.client_id.len() > 64 {
            return bad(
                "mqtt.client_id must be 1 to 64 characters and stable across restarts".into(),
            );
        }
        if let Err(e) = protocol::Id::new(&self.mqtt.group) {
            return bad(format!("mqtt.group {:?}: {e}", self.mqtt.group));
        }
        if self.mqtt.receive_maximum == 0
            || u32::from(self.mqtt.receive_maximum) > protocol::replay::WINDOW / 2
        {
            return bad(format!(
                "mqtt.receive_maximum must be 1 to {}: everything in flight must fit the replay window, so that messages redelivered after a crash are recognised as duplicates",
                protocol::replay::WINDOW / 2
            ));
        }
        if self.mqtt.session_expiry.is_zero() {
            return bad("mqtt.session_expiry must be above 0, or the broker forgets unacknowledged messages when the gateway restarts".into());
        }
        if self.mqtt.password.is_some() && self.mqtt.username.is_none() {
            return bad("mqtt.password is set but mqtt.username is not".into());
        }
        if let Some(db) = &self.database {
            if db.api == DatabaseApi::V2 && (db.org.is_none() || db.token.is_none()) {
                return bad("database.api = \"v2\" needs database.org and database.token (or VIGIE_DATABASE_TOKEN)".into());
            }
            if db.password.is_some() && db.username.is_none() {
                return bad("database.password is set but database.username is not".into());
            }
        }
        if self.batch.max_lines == 0 {
            return bad("batch.max_lines must be at least 1".into());
        }
        if self.batch.min_backoff.is_zero() || self.batch.min_backoff > self.batch.max_backoff {
            return bad("batch.min_backoff must be above 0 and at most batch.max_backoff".into());
        }
        if self.buffer.segment_mib == 0 || self.buffer.max_mib < 2 * self.buffer.segment_mib {
            return bad(format!(
                "buffer.max_mib ({}) must be at least twice buffer.segment_mib ({}), which must be above 0",
                self.buffer.max_mib, self.buffer.segment_mib
            ));
        }
        if self.quarantine.max_mib == 0 {
            return bad("quarantine.max_mib must be at least 1".into());
        }
        if let Some(directive) = bad_log_directive(&self.log.level) {
            return bad(format!(
                "log.level: {directive:?} is not a level (trace, debug, info, warn, error, off) \
                 nor target=level; a word the filter does not know would turn logging off"
            ));
        }
        Ok(())
    }
}

/// Each comma-separated directive of a log filter is a level or `target=level`; the first
/// that is not, if any.
fn bad_log_directive(filter: &str) -> Option<&str> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let level = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    for directive in filter.split(',').map(str::trim) {
        let ok = match directive.split_once('=') {
            Some((target, l)) => {
                !target.is_empty()
                    && target
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_:-".contains(c))
                    && level(l)
            }
            None => level(directive),
        };
        if !ok {
            return Some(directive);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_are_levels_or_target_levels() {
        for good in [
            "info",
            "WARN",
            "gateway=debug",
            "info,rumqttc=warn,gateway::intake::mqtt=trace",
        ] {
            assert_eq!(bad_log_directive(good), None, "{good}");
        }
        for bad in [
            "verbose",
            "",
            "info,",
            "gateway=loud",
            "=info",
            "info debug",
        ] {
            assert!(bad_log_directive(bad).is_some(), "{bad}");
        }
        let mut c = Config::parse("").unwrap();
        c.log.level = "verbose".into();
        assert!(c.validate().unwrap_err().to_string().contains("log.level"));
    }

    #[test]
    fn the_example_file_parses_and_validates() {
        let text = include_str!("../gateway.example.toml");
        let c = Config::parse(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.batch.max_lines, 5000);
    }

    #[test]
    fn empty_file_means_defaults_embedded_broker_and_file_sink() {
        let c = Config::parse("").unwrap();
        c.validate().unwrap();
        assert!(c.mqtt.host.is_none() && c.database.is_none());
        assert_eq!(c.batch.linger, Duration::from_millis(500));
    }

    #[test]
    fn a_broken_config_never_prints_its_secrets() {
        let secret = "Sup3rS3cretToken-do-not-print";
        for text in [
            format!("[database]\napi = \"v2\"\nurl = \"http://x\"\ntoken = \"{secret}\n"),
            format!("[mqtt]\npassword = {secret}\n"),
            format!("[http]\nadmin_token = [\"{secret}\"]\n"),
            format!("[database]\napi = \"v1\"\nurl = \"http://x\"\npasswrd = \"{secret}\"\n"),
        ] {
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(!err.contains(secret), "{err}");
            assert!(err.contains("line "), "{err}");
        }
        let mut c = Config::parse(&format!("[http]\nadmin_token = \"{secret}\"\n")).unwrap();
        c.mqtt.password = Some(Secret::new(secret));
        assert!(!format!("{c:?}").contains(secret));
    }

    #[test]
    fn mistakes_get_messages_that_name_the_key() {
        let err = Config::parse("[batch]\nmax_line = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_line"), "{err}");
        let err = Config::parse("[batch]\nlinger = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("linger") || err.contains("soon"), "{err}");
        let cases = [
            (
                "[database]\napi = \"v2\"\nurl = \"http://x\"\n",
                "database.org",
            ),
            (
                "[database]\napi = \"v1\"\nurl = \"ftp://x\"\n",
                "database.url",
            ),
            (
                "[database]\napi = \"v1\"\nurl = \"http://\"\n",
                "database.url",
            ),
            (
                "[database]\napi = \"v1\"\nurl = \"influx:8086\"\n",
                "database.url",
            ),
            ("[buffer]\nmax_mib = 8\nsegment_mib = 8\n", "buffer.max_mib"),
            ("[mqtt]\ngroup = \"Bad Group\"\n", "mqtt.group"),
            ("[mqtt]\nsession_expiry = \"0s\"\n", "session_expiry"),
            ("[mqtt]\nreceive_maximum = 5000\n", "receive_maximum"),
            (
                "[mqtt]\nhost = \"b\"\nclient_id = \"gw-a\"\nusername = \"gw-b\"\n",
                "mqtt.client_id",
            ),
            (
                "[mqtt]\nembedded_listen = \"0.0.0.0:1883\"\n",
                "mqtt.embedded_listen",
            ),
        ];
        for (text, key) in cases {
            let err = Config::parse(text)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn env_overrides_and_secrets_stay_hidden() {
        let mut c = Config::parse("[database]\napi = \"v1\"\nurl = \"http://a\"\n").unwrap();
        c.apply_env(|k| match k {
            "VIGIE_DATABASE_URL" => Some("http://b".into()),
            "VIGIE_DATABASE_PASSWORD" => Some("hunter2".into()),
            "VIGIE_MQTT_PASSWORD" => Some("swordfish".into()),
            _ => None,
        });
        let db = c.database.as_ref().unwrap();
        assert_eq!(db.url, "http://b");
        assert_eq!(db.password.as_ref().unwrap().expose(), "hunter2");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("swordfish"),
            "{shown}"
        );
    }
}
