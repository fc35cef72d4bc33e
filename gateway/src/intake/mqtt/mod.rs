//! MQTT shell (MQTT 5): the only place that touches the broker connection. Each turn of
//! its loop writes what is due in one go (the acknowledgements the pure [`AckFlow`]
//! releases: arrival order, never for an earlier connection, never dropped; then the
//! device acknowledgements the broker has room for), then waits for the first of: bytes
//! from the broker, acknowledgements from the worker, room in the worker's channel, the
//! keep-alive, shutdown. It never awaits the worker while holding received messages:
//! they wait in a local queue until the worker has room.
//!
//! The queue is bounded here, not by trusting the broker: at Receive Maximum messages the
//! loop stops reading the socket while the worker is taking messages, so TCP flow control
//! keeps the rest at the broker until the worker catches up. (Draining a backlog,
//! Mosquitto 2.0.11 was seen sending 9,000 to 16,000 unacknowledged messages with Receive
//! Maximum 1,000 while acknowledgements flowed; a queue that trusted it grew with the
//! backlog, to ≈ 200 MiB at 2 million readings.) When the worker takes nothing for half a
//! second (a full disk or buffer), the loop reads again regardless: the connection must
//! stay alive (the broker's ping answers, the subscription's answer after a reconnect),
//! and with no acknowledgement flowing the broker's own in-flight limit holds.
//!
//! Session: stable client id, Clean Start 0 and a session expiry, so the broker keeps
//! unacknowledged messages across gateway restarts and redelivers them.
//!
//! The connection (`conn.rs`) is the gateway's own, with rumqttc's packet codec: rumqttc's
//! event loop wrote each acknowledgement in its own system call (docs/PERFORMANCE.md).

mod conn;
mod publish;
mod shell;

pub use shell::MAX_INTAKE_BYTES;

use crate::clock::Clock;
use crate::config::{MqttConfig, Secret};
use crate::ingest::{Job, ToBroker};
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use conn::{ConnError, Connection};
use rumqttc::v5::mqttbytes::v5::{Disconnect, DisconnectReasonCode, Packet};
use shell::{End, Shell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vigie_core::ack::downlinks::Downlinks;
use vigie_core::ack::flow::AckFlow;
use vigie_core::session::Reconnect;

/// Largest packet accepted from the broker. Larger than any valid frame, so an oversized
/// frame still reaches the worker and is quarantined (`too_long`) rather than breaking the
/// connection; the broker's own `message_size_limit` caps it.
pub(crate) const MAX_INCOMING_PACKET: u32 = 256 * 1024;
/// Device acknowledgements in flight to the broker at most (it may allow fewer).
const OUTGOING_INFLIGHT: u16 = 1000;
/// Device acknowledgements that may wait for the broker before a device's older one gives
/// way to its newer one ([`Downlinks`]).
const DOWNLINKS: usize = 4096;

/// Why the MQTT client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `mqtt.tls` without a CA.
    #[error("mqtt.tls = true needs mqtt.ca_file (the CA that signed the broker's certificate)")]
    NoCaFile,
    /// The CA file cannot be read.
    #[error("mqtt.ca_file {path}: {source}")]
    CaRead {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("mqtt.ca_file {path}: {reason}")]
    CaParse {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// `mqtt.password_file` cannot be read (its content is never shown).
    #[error("mqtt.password_file {path}: {source}")]
    PasswordRead {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS library refused the settings.
    #[error("mqtt TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// How to reach the broker, from `[mqtt]`.
#[derive(Clone)]
pub struct Options {
    /// Broker host (name or address; the TLS server name too).
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id: an account's username (deploy/mosquitto.conf), else `mqtt.client_id`.
    pub client_id: String,
    /// Username and password, for an account.
    pub login: Option<(String, Secret)>,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Session expiry, seconds.
    pub session_expiry_s: u32,
    /// Messages the broker may send unacknowledged (MQTT 5 Receive Maximum).
    pub receive_maximum: u16,
    /// TLS, with the CA that signed the broker's certificate.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("login", &self.login)
            .field("keep_alive", &self.keep_alive)
            .field("session_expiry_s", &self.session_expiry_s)
            .field("receive_maximum", &self.receive_maximum)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Builds the client options.
pub fn options(cfg: &MqttConfig, host: &str, port: u16) -> Result<Options, SetupError> {
    let login = match &cfg.username {
        None => None,
        Some(user) => {
            let password = match (&cfg.password, &cfg.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(path)) => Secret::new(
                    std::fs::read_to_string(path)
                        .map_err(|source| SetupError::PasswordRead {
                            path: path.clone(),
                            source,
                        })?
                        .trim_end_matches(['\r', '\n']),
                ),
                (None, None) => Secret::default(),
            };
            Some((user.clone(), password))
        }
    };
    Ok(Options {
        host: host.to_string(),
        port,
        // An account connects with its own username as client id (deploy/mosquitto.conf).
        client_id: cfg.username.as_ref().unwrap_or(&cfg.client_id).clone(),
        login,
        keep_alive: cfg.keep_alive,
        session_expiry_s: cfg.session_expiry.as_secs().min(u64::from(u32::MAX)) as u32,
        receive_maximum: cfg.receive_maximum,
        tls: if cfg.tls {
            Some(tls_config(cfg)?)
        } else {
            None
        },
    })
}

fn tls_config(cfg: &MqttConfig) -> Result<Arc<rustls::ClientConfig>, SetupError> {
    let path = cfg.ca_file.as_ref().ok_or(SetupError::NoCaFile)?;
    let parse = |reason: String| SetupError::CaParse {
        path: path.clone(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|source| SetupError::CaRead {
        path: path.clone(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| parse(e.to_string()))?;
        roots.add(cert).map_err(|e| parse(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(parse("no certificate found".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Longest wait for the broker's CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Packet id of the SUBSCRIBE: above every publish's (`1..=OUTGOING_INFLIGHT`).
const SUBSCRIBE_ID: u16 = u16::MAX;

/// What the shell talks to.
#[derive(Debug)]
pub struct Links {
    /// The uplink filter (the gateway group's shared subscription).
    pub filter: String,
    /// Received messages, to the worker.
    pub jobs: mpsc::Sender<Job>,
    /// What the worker made durable: acknowledgements to send.
    pub acks: mpsc::UnboundedReceiver<ToBroker>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Health (`/readyz`).
    pub health: Arc<Health>,
    /// Shutdown.
    pub stopping: CancellationToken,
    /// The service's clock (receive times).
    pub clock: Clock,
}

/// Runs the MQTT side until shutdown.
pub async fn run(options: Options, links: Links) {
    let mut shell = Shell {
        links,
        intake: usize::from(options.receive_maximum),
        keep_alive: options.keep_alive,
        flow: AckFlow::default(),
        queue: VecDeque::new(),
        downlinks: Downlinks::new(DOWNLINKS, OUTGOING_INFLIGHT),
        draining: None,
        arrived: Vec::new(),
    };
    let mut reconnect = Reconnect::default();
    loop {
        let opened = tokio::select! {
            opened = tokio::time::timeout(CONNECT_TIMEOUT, Connection::open(&options)) => {
                opened.unwrap_or(Err(ConnError::Timeout(CONNECT_TIMEOUT)))
            }
            _ = shell.links.stopping.cancelled() => return,
        };
        let error = match opened {
            Ok((mut conn, connack)) => {
                reconnect.connected();
                match shell.connected(&mut conn, &connack).await {
                    End::Done => return goodbye(&mut conn).await,
                    End::Lost(e) => e,
                }
            }
            Err(e) => e,
        };
        if shell.draining.is_some() || shell.links.stopping.is_cancelled() {
            shell.lost(&error);
            return;
        }
        let wait = reconnect.failed(crate::clock::jitter());
        shell.lost(&error);
        match &error {
            ConnError::Refused(_) => tracing::error!("{}; retrying in {wait:?}", refusal(&error)),
            _ => tracing::warn!(error = %error, "broker connection lost; reconnecting in {wait:?}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shell.links.stopping.cancelled() => return,
        }
    }
}

/// Flushes a DISCONNECT so the broker keeps the session cleanly.
async fn goodbye(conn: &mut Connection) {
    let bye = Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection));
    if conn.queue(&bye).is_ok() {
        let _ = tokio::time::timeout(Duration::from_millis(500), conn.flush()).await;
    }
}

/// What a refused login means, in words.
fn refusal(error: &ConnError) -> String {
    format!(
        "the broker refused this gateway's account ({error}): check mqtt.username and its \
         password, and that the broker was restarted since `gateways add`"
    )
}

impl Shell {
    /// A connection is gone: the metric and `/readyz` say so.
    fn lost(&self, error: &ConnError) {
        self.links.metrics.mqtt_connected.set(0);
        let why = matches!(error, ConnError::Refused(_)).then(|| refusal(error));
        self.links.health.set_broker(Err(why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_connects_as_its_username_with_its_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mqtt.password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let cfg = MqttConfig {
            username: Some("gw-1".into()),
            password_file: Some(file.clone()),
            ..MqttConfig::default()
        };
        let o = options(&cfg, "broker", 1883).unwrap();
        assert_eq!(o.client_id, "gw-1");
        let (user, password) = o.login.clone().unwrap();
        assert_eq!((user.as_str(), password.expose()), ("gw-1", "s3cret"));
        assert!(
            !format!("{o:?}").contains("s3cret"),
            "never in Debug: {o:?}"
        );
        // An inline password wins; a missing file is named, its content never.
        let inline = MqttConfig {
            password: Some(Secret::new("inline")),
            ..cfg.clone()
        };
        let o = options(&inline, "broker", 1883).unwrap();
        assert_eq!(o.login.unwrap().1.expose(), "inline");
        let missing = MqttConfig {
            password_file: Some(dir.path().join("nope")),
            ..cfg
        };
        let err = options(&missing, "broker", 1883).unwrap_err().to_string();
        assert!(err.starts_with("mqtt.password_file"), "{err}");
        // Without an account: the configured client id, no credentials.
        let o = options(&MqttConfig::default(), "broker", 1883).unwrap();
        assert_eq!(o.client_id, "vigie-gateway");
        assert!(o.login.is_none());
    }
}
