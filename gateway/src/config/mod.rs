//! Configuration: nested serde structs with explicit defaults, loaded from TOML, then
//! environment overrides for secrets and addresses, then validated into messages a person
//! can act on. The commented reference is `gateway/gateway.example.toml`.

pub use alerts::{AlertsConfig, Recipients, SmtpConfig, WebhookConfig};
pub use group::GroupConfig;
pub use parse_error::ParseError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use vigie_core::Secret;

mod alerts;
mod group;
mod parse_error;
#[cfg(test)]
mod tests;
mod validate;

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
    /// Collection rounds of the communes' bins.
    pub round: RoundConfig,
    /// Who is told of what goes wrong, by e-mail and webhook.
    pub alerts: AlertsConfig,
    /// How each commune is shown: its name, what its public view shows.
    pub communes: std::collections::BTreeMap<String, CommuneConfig>,
    /// Device state shared by a group of gateways; absent for one gateway.
    pub group: Option<GroupConfig>,
}

/// What the public view can show of a commune: its stations' air quality, its bins'
/// fill, the map, and its devices' condition (battery, faults, silence, refused frames).
pub const PUBLIC_PARTS: [&str; 4] = ["air_quality", "bin_fill", "map", "condition"];
/// What it shows unless told otherwise: no device's battery, faults or key.
pub const PUBLIC_DEFAULT: [&str; 3] = ["air_quality", "bin_fill", "map"];

/// How one commune is shown (`[communes.<tenant>]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommuneConfig {
    /// Its name on the pages and in the alerts (`Villefranche-sur-Saône`); default its id.
    pub name: Option<String>,
    /// What its public view shows, of [`PUBLIC_PARTS`].
    pub public: Vec<String>,
}

impl Default for CommuneConfig {
    fn default() -> Self {
        Self {
            name: None,
            public: PUBLIC_DEFAULT.iter().map(|p| p.to_string()).collect(),
        }
    }
}

/// Collection rounds (`round`): which bins are due and where the truck starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoundConfig {
    /// A bin at or above this fill level (%) is due now.
    pub threshold_percent: u8,
    /// A bin expected to reach the threshold within this many days is due too.
    pub horizon_days: f64,
    /// Each commune's depot, `lyon = { latitude = 45.75, longitude = 4.85 }`; a round
    /// without one starts at its first bin.
    pub depots: std::collections::BTreeMap<String, Depot>,
}

/// Where a commune's collection truck starts and ends (WGS84 degrees).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Depot {
    /// Latitude.
    pub latitude: f64,
    /// Longitude.
    pub longitude: f64,
}

impl Default for RoundConfig {
    fn default() -> Self {
        Self {
            threshold_percent: vigie_core::condition::BIN_FULL_PERCENT,
            horizon_days: 2.0,
            depots: Default::default(),
        }
    }
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
    /// A tile server the site runs, drawn under the commune maps:
    /// `https://tiles.example.fr/{z}/{x}/{y}.png`; unset, the maps ask nothing of anyone.
    pub map_tiles: Option<String>,
}

impl HttpConfig {
    /// The tile server's origin (`https://tiles.example.fr`), which the pages may load
    /// images from.
    pub fn tile_origin(&self) -> Option<String> {
        let url = reqwest::Url::parse(self.map_tiles.as_deref()?.split('{').next()?).ok()?;
        Some(url.origin().ascii_serialization())
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9650))),
            admin_token: None,
            public_listen: None,
            public_tenants: Vec::new(),
            allowed_hosts: Vec::new(),
            map_tiles: None,
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
}
