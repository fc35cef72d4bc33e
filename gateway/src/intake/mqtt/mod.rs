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

use crate::clock::Clock;
use crate::config::{MqttConfig, Secret};
use crate::ingest::{Inbound, Job, ToBroker};
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use conn::{ConnError, Connection};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Disconnect, DisconnectReasonCode, Filter, Packet, PingReq, PubAck, PubAckReason,
    Publish, Subscribe, SubscribeReasonCode,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vigie_core::ack::downlinks::Downlinks;
use vigie_core::ack::flow::AckFlow;

/// Largest packet accepted from the broker. Larger than any valid frame, so an oversized
/// frame still reaches the worker and is quarantined (`too_long`) rather than breaking the
/// connection; the broker's own `message_size_limit` caps it.
pub(crate) const MAX_INCOMING_PACKET: u32 = 256 * 1024;
/// Bytes of received messages in memory (not yet committed) past which QoS 0 publishes
/// are dropped and counted: they have no PUBACK to withhold, and their devices resend
/// what no end-to-end acknowledgement covered. QoS 1 is bounded by Receive Maximum.
pub const MAX_INTAKE_BYTES: i64 = 16 << 20;
/// Longest wait at shutdown for the acks of messages already handed to the worker.
const DRAIN: Duration = Duration::from_secs(5);
/// How long the worker may take nothing before the loop reads the socket again with a
/// full queue.
const STALLED: Duration = Duration::from_millis(500);
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

/// The shell's state across connections.
struct Shell {
    links: Links,
    /// Messages the worker may hold unacknowledged before reading pauses.
    intake: usize,
    /// Our keep-alive (the broker's Server Keep Alive wins).
    keep_alive: Duration,
    flow: AckFlow,
    /// Received messages waiting for room in the worker's channel.
    queue: VecDeque<Inbound>,
    /// Device acknowledgements waiting for, and in flight to, the broker.
    downlinks: Downlinks,
    /// Shutdown began: stop handing messages over, send the acks due, until this instant.
    draining: Option<Instant>,
    /// When the worker last took a message from the queue.
    taken: Instant,
}

/// How a connection ended.
enum End {
    /// Shutdown finished: acknowledgements sent.
    Done,
    /// The connection failed.
    Lost(ConnError),
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
        taken: Instant::now(),
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let opened = tokio::select! {
            opened = tokio::time::timeout(CONNECT_TIMEOUT, Connection::open(&options)) => {
                opened.unwrap_or(Err(ConnError::Timeout(CONNECT_TIMEOUT)))
            }
            _ = shell.links.stopping.cancelled() => return,
        };
        let error = match opened {
            Ok((mut conn, connack)) => {
                backoff = Duration::from_millis(100);
                match shell.connected(&mut conn, &connack).await {
                    End::Done => {
                        // Flush the disconnect so the broker keeps the session cleanly.
                        let bye = Packet::Disconnect(Disconnect::new(
                            DisconnectReasonCode::NormalDisconnection,
                        ));
                        if conn.queue(&bye).is_ok() {
                            let _ = tokio::time::timeout(Duration::from_millis(500), conn.flush())
                                .await;
                        }
                        return;
                    }
                    End::Lost(e) => e,
                }
            }
            Err(e) => e,
        };
        shell.links.metrics.mqtt_connected.set(0);
        let refused = match &error {
            ConnError::Refused(code) => Some(format!(
                "the broker refused this gateway's account ({code:?}): check mqtt.username \
                 and its password, and that the broker was restarted since `gateways add`"
            )),
            _ => None,
        };
        shell.links.health.set_broker(Err(refused.clone()));
        if shell.draining.is_some() || shell.links.stopping.is_cancelled() {
            return;
        }
        match refused {
            Some(why) => tracing::error!("{why}; retrying in {backoff:?}"),
            None => {
                tracing::warn!(error = %error, "broker connection lost; reconnecting in {backoff:?}")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shell.links.stopping.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

impl Shell {
    /// Whether to read the socket: not while the queue is full and the worker is taking
    /// from it, nor with a full queue at shutdown (see the module note).
    fn reading(&self) -> bool {
        self.queue.len() < self.intake
            || (self.draining.is_none() && self.taken.elapsed() >= STALLED)
    }

    /// Serves one connection until it fails or shutdown has sent what it could.
    async fn connected(&mut self, conn: &mut Connection, connack: &ConnAck) -> End {
        self.flow.on_connack();
        let broker_limit = connack
            .properties
            .as_ref()
            .and_then(|p| p.receive_max)
            .unwrap_or(u16::MAX);
        self.downlinks.reconnected(broker_limit);
        self.links.metrics.mqtt_connects.inc();
        tracing::info!(session_present = connack.session_present, filter = %self.links.filter, "connected to the broker");
        // The uplinks (shared by the group) and every device's status (SPEC §7).
        let mut subscribe = Subscribe::new_many(
            [
                Filter::new(self.links.filter.clone(), QoS::AtLeastOnce),
                Filter::new(protocol::topic::STATUS_FILTER, QoS::AtLeastOnce),
            ],
            None,
        );
        subscribe.pkid = SUBSCRIBE_ID;
        if let Err(e) = conn.queue(&Packet::Subscribe(subscribe)) {
            return End::Lost(e);
        }
        let keep_alive = connack
            .properties
            .as_ref()
            .and_then(|p| p.server_keep_alive)
            .map_or(self.keep_alive, |s| Duration::from_secs(u64::from(s)));
        // Zero is MQTT's "no keep-alive": no pings then.
        let pinging = !keep_alive.is_zero();
        let mut ping_due = Instant::now() + keep_alive;
        let mut awaiting_pong = false;
        loop {
            // Everything due goes out in one write: acknowledgements in arrival order,
            // then device acknowledgements while the broker has room for them.
            while let Some(token) = self.flow.next_ack() {
                if let Err(e) = conn.queue(&Packet::PubAck(PubAck::new(token.pkid, None))) {
                    return End::Lost(e);
                }
                self.flow.sent();
            }
            while let Some((pkid, (topic, payload))) = self.downlinks.next_publish() {
                let mut p = Publish::new(topic.as_str(), QoS::AtLeastOnce, payload.clone(), None);
                p.pkid = pkid;
                p.retain = true;
                if let Err(e) = conn.queue(&Packet::Publish(p)) {
                    return End::Lost(e);
                }
            }
            self.links
                .metrics
                .device_acks_waiting
                .set(crate::observe::metrics::gauge(self.downlinks.len() as u64));
            if let Err(e) = conn.flush().await {
                return End::Lost(e);
            }
            // Draining ends when every message handed over is acked, when the worker has
            // stopped (no ack can come: the broker redelivers the rest), or at the deadline.
            let worker_gone =
                self.links.acks.is_closed() && self.links.acks.is_empty() && self.flow.idle();
            if self
                .draining
                .is_some_and(|until| self.flow.settled() || worker_gone || Instant::now() >= until)
            {
                return End::Done;
            }
            let reading = self.reading();
            let mut got = None;
            tokio::select! {
                biased;
                _ = self.links.stopping.cancelled(), if self.draining.is_none() => {
                    // Stop taking new messages; keep going so acks for stored ones go out.
                    self.draining = Some(Instant::now() + DRAIN);
                }
                // Draining: wakes at the deadline (acks and packets wake it before).
                _ = tokio::time::sleep_until(self.draining.unwrap_or_else(Instant::now)), if self.draining.is_some() => {}
                // `None`: the worker has stopped; the loop's top sees it.
                received = self.links.acks.recv(), if !self.links.acks.is_closed() || !self.links.acks.is_empty() => {
                    let mut next = received;
                    while let Some(message) = next.take() {
                        match message {
                            ToBroker::Ack(token) => self.flow.on_durable(token),
                            ToBroker::Downlink { topic, payload } => {
                                if self.downlinks.push(topic, payload) {
                                    self.links.metrics.device_acks_superseded.inc();
                                }
                            }
                        }
                        next = self.links.acks.try_recv().ok();
                    }
                }
                permit = self.links.jobs.reserve(), if !self.queue.is_empty() && self.draining.is_none() => {
                    let Ok(permit) = permit else { return End::Done };
                    // Everything queued the channel has room for, in one go.
                    let mut permit = Some(permit);
                    while let Some(p) = permit.take() {
                        let Some(m) = self.queue.pop_front() else { break };
                        self.flow.handed_over(m.ack);
                        p.send(Job::Message(m));
                        permit = self.links.jobs.try_reserve().ok();
                    }
                    self.taken = Instant::now();
                }
                _ = tokio::time::sleep_until(ping_due), if pinging => {
                    if awaiting_pong {
                        return End::Lost(ConnError::PingTimeout);
                    }
                    if let Err(e) = conn.queue(&Packet::PingReq(PingReq)) {
                        return End::Lost(e);
                    }
                    awaiting_pong = true;
                    ping_due = Instant::now() + keep_alive;
                }
                // Reading paused: wakes when the pause turns into a stall.
                _ = tokio::time::sleep_until(self.taken + STALLED), if !reading => {}
                read = conn.read(), if reading => got = Some(read),
            }
            // Bytes from the broker: every whole packet in them.
            if let Some(read) = got {
                let received_ms = self.links.clock.now_ms();
                let handled = read.and_then(|()| {
                    while let Some(packet) = conn.next_packet()? {
                        self.on_packet(packet, received_ms, &mut awaiting_pong)?;
                    }
                    Ok(())
                });
                if let Err(e) = handled {
                    return End::Lost(e);
                }
            }
        }
    }

    /// One packet from the broker, read at `received_ms`.
    fn on_packet(
        &mut self,
        packet: Packet,
        received_ms: u64,
        awaiting_pong: &mut bool,
    ) -> Result<(), ConnError> {
        match packet {
            Packet::Publish(p) => {
                let intake = &self.links.metrics.intake_bytes;
                if p.qos == QoS::AtMostOnce && intake.get() >= MAX_INTAKE_BYTES {
                    self.links.metrics.qos0_dropped.inc();
                    return Ok(());
                }
                let ack = (p.qos != QoS::AtMostOnce).then(|| self.flow.on_publish(p.pkid));
                let m = Inbound {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.to_vec(),
                    received_ms,
                    ack,
                    quarantined_as: None,
                };
                intake.inc_by(m.bytes() as i64);
                self.queue.push_back(m);
            }
            // Counted when the broker took it, by its answer: a refusal (the gateway's
            // account may not publish there) is seen, not counted as sent.
            Packet::PubAck(a) if self.downlinks.on_puback(a.pkid) => match a.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {
                    self.links.metrics.device_acks.inc();
                }
                refused => {
                    self.links.metrics.device_acks_refused.inc();
                    let n = self.links.metrics.device_acks_refused.get();
                    if n.is_power_of_two() {
                        tracing::error!(
                            reason = ?refused,
                            refused = n,
                            "the broker refused a device acknowledgement: devices resend what \
                             it covered; check that the gateway's account may publish on \
                             vigie/v1/+/+/ack (gateways add, then restart the broker)"
                        );
                    }
                }
            },
            Packet::PubAck(_) => {}
            Packet::PingResp(_) => *awaiting_pong = false,
            // Ready only once the broker granted the subscription: a locked-down broker
            // refuses it to an account without the gateway role.
            Packet::SubAck(s) => match s
                .return_codes
                .iter()
                .find(|c| !matches!(c, SubscribeReasonCode::Success(_)))
            {
                None => {
                    self.links.metrics.mqtt_connected.set(1);
                    self.links.health.set_broker(Ok(()));
                    tracing::info!(filter = %self.links.filter, "subscribed");
                }
                Some(refused) => {
                    let why = format!(
                        "the broker refused the subscription {} or {} ({refused:?}): check \
                         that mqtt.username is a gateway account (`gateways add`) and that \
                         the broker was restarted since",
                        self.links.filter,
                        protocol::topic::STATUS_FILTER
                    );
                    tracing::error!("{why}");
                    self.links.health.set_broker(Err(Some(why)));
                }
            },
            Packet::Disconnect(d) => return Err(ConnError::Disconnected(d.reason_code)),
            _ => {}
        }
        Ok(())
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
