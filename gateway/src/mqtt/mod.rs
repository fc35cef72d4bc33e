//! MQTT shell (rumqttc, MQTT 5): the only place that polls the event loop. It never
//! awaits anything that needs the event loop to progress: received messages wait in a
//! local queue until the worker has room, and acknowledgements go out with `try_ack` as
//! the pure
//! [`AckFlow`] orders them (arrival order, never for an
//! earlier connection, never dropped).
//!
//! The queue is bounded here, not by trusting the broker: at Receive Maximum messages the
//! loop stops reading the socket while the worker is taking messages, so TCP flow control
//! keeps the rest at the broker until the worker catches up. (Draining a backlog,
//! Mosquitto 2.0.11 was seen sending 9,000 to 16,000 unacknowledged messages with Receive
//! Maximum 1,000 while acknowledgements flowed; a queue that trusted it grew with the
//! backlog, to ≈ 200 MiB at 2 million readings.) Acknowledgements wait in the client's
//! request queue meanwhile and go out at the next poll. When the worker takes nothing for
//! half a second (a full disk or buffer), the loop polls again regardless: the connection
//! must stay alive (keep-alive pings, the subscription's answer after a reconnect), and
//! with no acknowledgement flowing the broker's own in-flight limit holds.
//!
//! Session: stable client id, Clean Start 0 and a session expiry, so the broker keeps
//! unacknowledged messages across gateway restarts and redelivers them.

use crate::config::MqttConfig;
use crate::health::Health;
use crate::ingest::{Inbound, Job, ToBroker};
use crate::metrics::Metrics;
use crate::pure::ack_flow::AckFlow;
use crate::pure::downlinks::Downlinks;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Largest packet accepted from the broker. Larger than any valid frame, so an oversized
/// frame still reaches the worker and is quarantined (`too_long`) rather than breaking the
/// connection; the broker's own `message_size_limit` caps it.
const MAX_INCOMING_PACKET: u32 = 256 * 1024;
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

/// Builds the client options.
pub fn options(cfg: &MqttConfig, host: &str, port: u16) -> Result<MqttOptions, SetupError> {
    // An account connects with its own username as client id (deploy/mosquitto.conf).
    let client_id = cfg.username.as_ref().unwrap_or(&cfg.client_id);
    let mut o = MqttOptions::new(client_id.clone(), host, port);
    o.set_keep_alive(cfg.keep_alive)
        .set_clean_start(false)
        .set_session_expiry_interval(Some(
            cfg.session_expiry.as_secs().min(u64::from(u32::MAX)) as u32
        ))
        .set_receive_maximum(Some(cfg.receive_maximum))
        // Our own QoS 1 publishes in flight (device acknowledgements). Without a limit
        // rumqttc sizes its table for 65,535 of them: 14 MB of the process's memory.
        .set_outgoing_inflight_upper_limit(OUTGOING_INFLIGHT)
        .set_max_packet_size(Some(MAX_INCOMING_PACKET))
        .set_manual_acks(true);
    if let Some(user) = &cfg.username {
        let password = match (&cfg.password, &cfg.password_file) {
            (Some(p), _) => p.expose().to_string(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|source| SetupError::PasswordRead {
                    path: path.clone(),
                    source,
                })?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            (None, None) => String::new(),
        };
        o.set_credentials(user.clone(), password);
    }
    if cfg.tls {
        o.set_transport(Transport::Tls(tls_config(cfg)?));
    }
    Ok(o)
}

fn tls_config(cfg: &MqttConfig) -> Result<TlsConfiguration, SetupError> {
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
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}

/// Runs the MQTT side until shutdown.
pub async fn run(
    options: MqttOptions,
    filter: String,
    jobs: mpsc::Sender<Job>,
    mut acks: mpsc::UnboundedReceiver<ToBroker>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stopping: CancellationToken,
) {
    let intake = usize::from(options.receive_maximum().unwrap_or(1000));
    let (client, mut eventloop) = AsyncClient::new(options, intake + 64);
    let mut flow = AckFlow::default();
    let mut queue: VecDeque<Inbound> = VecDeque::new();
    // Device acknowledgements waiting for room in the client's request queue.
    let mut downlinks = Downlinks::new(DOWNLINKS);
    let mut backoff = Duration::from_millis(100);
    let mut draining: Option<tokio::time::Instant> = None;
    // When the worker last took a message from the queue.
    let mut taken = tokio::time::Instant::now();
    // Whether to read the socket: not while the queue is full and the worker is taking
    // from it (see the module note).
    let reading = |queue: &VecDeque<Inbound>, taken: tokio::time::Instant| {
        queue.len() < intake || taken.elapsed() >= STALLED
    };
    loop {
        while let Some(token) = flow.next_ack() {
            let mut p = Publish::new("", QoS::AtLeastOnce, Vec::new(), None);
            p.pkid = token.pkid;
            if client.try_ack(&p).is_err() {
                // Full: the event loop drains it on its next poll; try again then.
                break;
            }
            flow.sent();
        }
        while let Some((topic, payload)) = downlinks.pop() {
            match client.try_publish(topic.as_str(), QoS::AtLeastOnce, true, payload.clone()) {
                Ok(()) => {
                    metrics.device_acks.inc();
                }
                Err(_) => {
                    downlinks.unpop((topic, payload));
                    break;
                }
            }
        }
        metrics
            .device_acks_waiting
            .set(crate::metrics::gauge(downlinks.len() as u64));
        // Draining ends when every message handed over is acked, when the worker has
        // stopped (no ack can come: the broker redelivers the rest), or at the deadline.
        let worker_gone = acks.is_closed() && acks.is_empty() && flow.idle();
        if draining.is_some_and(|until| {
            flow.settled() || worker_gone || tokio::time::Instant::now() >= until
        }) {
            break;
        }
        tokio::select! {
            biased;
            _ = stopping.cancelled(), if draining.is_none() => {
                // Stop taking new messages; keep polling so acks for stored ones go out.
                draining = Some(tokio::time::Instant::now() + DRAIN);
            }
            // Draining: wakes at the deadline (acks and events wake it before).
            _ = tokio::time::sleep_until(draining.unwrap_or_else(tokio::time::Instant::now)), if draining.is_some() => {}
            // `None`: the worker has stopped; the loop's top sees it (no more acks can come).
            received = acks.recv(), if !acks.is_closed() || !acks.is_empty() => {
                let mut next = received;
                while let Some(message) = next.take() {
                    match message {
                        ToBroker::Ack(token) => flow.on_durable(token),
                        ToBroker::Downlink { topic, payload } => {
                            if downlinks.push(topic, payload) {
                                metrics.device_acks_superseded.inc();
                            }
                        }
                    }
                    next = acks.try_recv().ok();
                }
            }
            permit = jobs.reserve(), if !queue.is_empty() && draining.is_none() => {
                let Ok(permit) = permit else { break };
                if let Some(m) = queue.pop_front() {
                    flow.handed_over(m.ack);
                    permit.send(Job::Message(m));
                    taken = tokio::time::Instant::now();
                }
            }
            // Reading paused: wakes when the pause turns into a stall (then `poll` runs).
            _ = tokio::time::sleep_until(taken + STALLED), if !reading(&queue, taken) => {}
            event = eventloop.poll(), if reading(&queue, taken) => match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let ack = (p.qos != QoS::AtMostOnce).then(|| flow.on_publish(p.pkid));
                    queue.push_back(Inbound {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                        received_ms: crate::now_ms(),
                        ack,
                        recovering: false,
                    });
                }
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    flow.on_connack();
                    backoff = Duration::from_millis(100);
                    metrics.mqtt_connects.inc();
                    tracing::info!(session_present = c.session_present, %filter, "connected to the broker");
                    // The uplinks (shared by the group) and every device's status (SPEC §7).
                    let filters = [
                        Filter::new(filter.clone(), QoS::AtLeastOnce),
                        Filter::new(protocol::topic::STATUS_FILTER, QoS::AtLeastOnce),
                    ];
                    if let Err(e) = client.try_subscribe_many(filters) {
                        tracing::error!(error = %e, "cannot subscribe");
                    }
                }
                // Ready only once the broker granted the subscription: a locked-down broker
                // refuses it to an account without the gateway role.
                Ok(Event::Incoming(Packet::SubAck(s))) => match s
                    .return_codes
                    .iter()
                    .find(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                {
                    None => {
                        metrics.mqtt_connected.set(1);
                        health.set_broker(Ok(()));
                        tracing::info!(%filter, "subscribed");
                    }
                    Some(refused) => {
                        let why = format!(
                            "the broker refused the subscription {filter} or {} ({refused:?}): check \
                             that mqtt.username is a gateway account (`gateways add`) and that \
                             the broker was restarted since",
                            protocol::topic::STATUS_FILTER
                        );
                        tracing::error!("{why}");
                        health.set_broker(Err(Some(why)));
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    metrics.mqtt_connected.set(0);
                    let refused = match &e {
                        ConnectionError::ConnectionRefused(code) => Some(format!(
                            "the broker refused this gateway's account ({code:?}): check \
                             mqtt.username and its password, and that the broker was restarted \
                             since `gateways add`"
                        )),
                        _ => None,
                    };
                    health.set_broker(Err(refused.clone()));
                    if draining.is_some() {
                        break;
                    }
                    match refused {
                        Some(why) => tracing::error!("{why}; retrying in {backoff:?}"),
                        None => tracing::warn!(error = %e, "broker connection lost; reconnecting in {backoff:?}"),
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stopping.cancelled() => { draining = Some(tokio::time::Instant::now()); }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
    let _ = client.try_disconnect();
    // Flush the disconnect so the broker keeps the session cleanly.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
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
        assert_eq!(o.client_id(), "gw-1");
        let login = o.credentials().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("gw-1", "s3cret")
        );
        // An inline password wins; a missing file is named, its content never.
        let inline = MqttConfig {
            password: Some(crate::config::Secret::new("inline")),
            ..cfg.clone()
        };
        let o = options(&inline, "broker", 1883).unwrap();
        assert_eq!(o.credentials().unwrap().password, "inline");
        let missing = MqttConfig {
            password_file: Some(dir.path().join("nope")),
            ..cfg
        };
        let err = options(&missing, "broker", 1883).unwrap_err().to_string();
        assert!(err.starts_with("mqtt.password_file"), "{err}");
        // Without an account: the configured client id, no credentials.
        let o = options(&MqttConfig::default(), "broker", 1883).unwrap();
        assert_eq!(o.client_id(), "vigie-gateway");
        assert!(o.credentials().is_none());
    }
}
