//! The embedded broker (rumqttd) for a first try with nothing installed: MQTT 5 on one
//! loopback address. Production uses Mosquitto with the project's config
//! (`deploy/mosquitto.conf`): persistence and queue limits set deliberately.

use std::net::SocketAddr;

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Its address is taken or not ours.
    #[error(
        "embedded broker cannot listen on {addr}: {source} (set mqtt.embedded_listen, or mqtt.host to use an external broker)"
    )]
    Listen {
        /// `mqtt.embedded_listen`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Its generated configuration did not parse (a bug).
    #[error("embedded broker config: {0}")]
    Config(#[from] toml::de::Error),
    /// Its thread.
    #[error("cannot start the embedded broker thread: {0}")]
    Thread(std::io::Error),
}

/// Starts rumqttd on `listen` in its own threads.
pub fn start(listen: SocketAddr) -> Result<(), BrokerError> {
    // rumqttd reports a busy port only in its log; check first so the error is ours.
    std::net::TcpListener::bind(listen).map_err(|source| BrokerError::Listen {
        addr: listen,
        source,
    })?;
    let text = format!(
        r#"
id = 0
[router]
max_connections = 10000
max_outgoing_packet_count = 200
max_segment_size = 1048576
max_segment_count = 10

[v5.1]
name = "v5-1"
listen = "{listen}"
next_connection_delay_ms = 1
[v5.1.connections]
connection_timeout_ms = 60000
max_payload_size = 262144
max_inflight_count = 1000
"#
    );
    let config: rumqttd::Config = toml::from_str(&text)?;
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(BrokerError::Thread)?;
    Ok(())
}
