//! Test devices: registry entries with known keys, sealed frames, QoS 1 publishing that
//! waits for every PUBACK, and a gateway configuration pointing at the test servers.

use gateway::config::{Config, DatabaseApi, DatabaseConfig, Secret};
use gateway::fleet::access;
use gateway::fleet::registry::{
    self, DeviceEntry, DeviceKind, Enrolment, GatewayAccount, Registry, RegistryFile,
};
use protocol::provision::{Provisioning, Transport};
use protocol::{AirQuality, DeviceKey, Field, Identity, MAX_FRAME_LEN, Reading, Values, WasteBin};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// One simulated device.
#[derive(Debug, Clone)]
pub struct Device {
    /// Tenant id.
    pub tenant: String,
    /// Device id.
    pub id: String,
    /// Kind.
    pub kind: DeviceKind,
    /// Key bytes (epoch 1).
    pub key: [u8; 16],
}

impl Device {
    /// A device whose key is derived from its name (tests only).
    pub fn new(tenant: &str, id: &str, kind: DeviceKind) -> Self {
        let mut key = [0u8; 16];
        for (i, b) in format!("{tenant}/{id}").bytes().enumerate() {
            key[i % 16] ^= b.rotate_left(i as u32);
        }
        Self {
            tenant: tenant.into(),
            id: id.into(),
            kind,
            key,
        }
    }

    /// What `devices add` would be given for this device, dialling `broker` in clear.
    fn enrolment(&self, broker: SocketAddr, sample_interval_s: u16, heartbeat_s: u16) -> Enrolment {
        Enrolment {
            tenant: self.tenant.clone(),
            id: self.id.clone(),
            kind: self.kind,
            site: None,
            zone: None,
            latitude: None,
            longitude: None,
            bin_depth_mm: (self.kind == DeviceKind::WasteBin).then_some(1000),
            sample_interval_s,
            heartbeat_s,
            report_interval_s: 0,
            broker_host: broker.ip().to_string(),
            broker_port: broker.port(),
            transport: Transport::Plain,
        }
    }

    /// Its broker username (client id).
    pub fn username(&self) -> String {
        access::device_username(&self.tenant, &self.id)
    }

    /// Registry entry (key epoch 1), as `devices add` writes it.
    pub fn entry(&self) -> DeviceEntry {
        let any = SocketAddr::from(([127, 0, 0, 1], 1883));
        registry::enroll(
            &self.enrolment(any, 300, 0),
            self.key,
            1,
            &password(&self.username()),
        )
        .unwrap()
        .0
    }

    /// The provisioning blob `devices add` would write for this device, pointing at
    /// `broker`, for the fleet simulator.
    pub fn provisioning(
        &self,
        broker: SocketAddr,
        sample_interval_s: u16,
        heartbeat_s: u16,
    ) -> Provisioning {
        let e = self.enrolment(broker, sample_interval_s, heartbeat_s);
        registry::enroll(&e, self.key, 1, &password(&self.username()))
            .unwrap()
            .1
    }

    /// [`Self::provisioning`] for a board that connects over TLS to `broker`, pinning the
    /// CA whose certificate's SHA-256 is `ca_sha256` (`devices add --broker-ca`).
    pub fn provisioning_tls(
        &self,
        broker: SocketAddr,
        ca_sha256: [u8; 32],
        sample_interval_s: u16,
        heartbeat_s: u16,
    ) -> Provisioning {
        let mut e = self.enrolment(broker, sample_interval_s, heartbeat_s);
        e.transport = Transport::Tls { ca_sha256 };
        registry::enroll(&e, self.key, 1, &password(&self.username()))
            .unwrap()
            .1
    }

    /// Uplink topic.
    pub fn topic(&self) -> String {
        format!("vigie/v1/{}/{}/up", self.tenant, self.id)
    }

    /// The `n`-th reading: values derived from `n` so tests can recompute them.
    pub fn reading(&self, n: u32, time: u32) -> Reading {
        let values = match self.kind {
            DeviceKind::AirQuality => Values::AirQuality(AirQuality {
                pm25: Field::Value(100 + (n % 500) as u16),
                pm10: Field::Value(700 + (n % 500) as u16),
                temperature: Field::Value(-50 + (n % 300) as i16),
                ..AirQuality::default()
            }),
            DeviceKind::WasteBin => {
                let fill = (n % 101) as u8;
                Values::WasteBin(WasteBin {
                    distance: Field::Value(1000 - 10 * u16::from(fill)),
                    fill_level: Field::Value(fill),
                    ..WasteBin::default()
                })
            }
        };
        Reading { time, values }
    }

    /// The `n`-th reading with the six values a real air-quality node sends (PM1, PM2.5,
    /// PM10, temperature, humidity, pressure), for the drain benchmark.
    pub fn full_reading(&self, n: u32, time: u32) -> Reading {
        let values = Values::AirQuality(AirQuality {
            pm1: Field::Value(50 + (n % 50) as u16),
            pm25: Field::Value(100 + (n % 500) as u16),
            pm10: Field::Value(700 + (n % 500) as u16),
            temperature: Field::Value(-50 + (n % 300) as i16),
            relative_humidity: Field::Value(400 + (n % 300) as u16),
            pressure: Field::Value(10_130 - (n % 200) as u16),
            ..AirQuality::default()
        });
        Reading { time, values }
    }

    /// A sealed frame of `readings` with `counter`.
    pub fn frame(&self, readings: &[Reading], counter: u32) -> Vec<u8> {
        self.frame_under(readings, counter, &DeviceKey::new(self.key, 1))
    }

    /// [`Device::frame`] sealed under `key` (a rotated one).
    pub fn frame_under(&self, readings: &[Reading], counter: u32, key: &DeviceKey) -> Vec<u8> {
        let who = Identity::new(&self.tenant, &self.id).unwrap();
        let mut buf = [0u8; MAX_FRAME_LEN];
        protocol::seal(&mut buf, readings, counter, key, who)
            .unwrap()
            .to_vec()
    }
}

/// A bin's reading at `time`: `fill` %, its `flags` (`protocol::reading::bin_flags`), its
/// battery.
pub fn bin_reading(time: u32, fill: u8, flags: u8, battery_mv: u16) -> Reading {
    Reading {
        time,
        values: Values::WasteBin(WasteBin {
            distance: Field::Value(1000 - 10 * u16::from(fill)),
            fill_level: Field::Value(fill),
            flags: Field::Value(flags),
            battery: Field::Value(battery_mv),
            ..WasteBin::default()
        }),
    }
}

/// The gateway usernames (client ids) the tests use; each gets a broker account.
pub const GATEWAYS: &[&str] = &[
    "gw",
    "gw-a",
    "gw-b",
    "gw-v1",
    "gw-v2",
    "gw-bench",
    "gw-ca",
    "gw-no-ca",
    "gw-expiry",
    "gw-hostile",
    "gw-qemu",
    "gw-fleet",
    "gw-crash",
    "gw-outage",
    "gw-clock",
    "gw-c",
    "gw-solo",
];

/// The broker password of a test account, derived from its username (tests only).
pub fn password(username: &str) -> Secret {
    let h = crc32fast::hash(username.as_bytes());
    let r = crc32fast::hash(&username.bytes().rev().collect::<Vec<_>>());
    Secret::new(format!("pw{h:08x}{r:08x}"))
}

/// A registry holding `entries` and the broker accounts of [`GATEWAYS`].
pub fn registry(entries: Vec<DeviceEntry>) -> Registry {
    let mut r = Registry::from_entries(entries).unwrap();
    for g in GATEWAYS {
        r.set_gateway(GatewayAccount {
            username: (*g).into(),
            password_hash: access::hash_password(&password(g)).unwrap(),
        })
        .unwrap();
    }
    r
}

/// Saves `registry` at `path` and the broker's access file beside it, as the `devices`
/// commands do.
pub fn save_registry(path: &Path, registry: &Registry) {
    registry.save(path).unwrap();
    access::write(&path.with_file_name("broker-access.json"), registry).unwrap();
}

/// Writes a registry holding `devices` (and the test gateways' accounts), and the
/// broker's access file beside it.
pub fn write_registry(path: &Path, devices: &[Device]) {
    save_registry(path, &registry(devices.iter().map(Device::entry).collect()));
}

/// A gateway config for the test servers: external broker, the given database (or files),
/// short linger, metrics on a free port.
pub fn gateway_config(
    dir: &Path,
    client_id: &str,
    broker: SocketAddr,
    database: Option<DatabaseConfig>,
) -> Config {
    let mut c = Config::default();
    c.gateway.data_dir = dir.join(format!("data-{client_id}"));
    c.gateway.registry = dir.join("devices.toml");
    c.mqtt.host = Some(broker.ip().to_string());
    c.mqtt.port = broker.port();
    c.mqtt.client_id = client_id.into();
    c.mqtt.group = client_id.into();
    c.mqtt.username = Some(client_id.into());
    c.mqtt.password = Some(password(client_id));
    c.http.listen = Some(SocketAddr::from(([127, 0, 0, 1], crate::free_port())));
    c.batch.linger = Duration::from_millis(200);
    c.batch.min_backoff = Duration::from_millis(100);
    c.batch.max_backoff = Duration::from_secs(2);
    c.database = database;
    c.validate().unwrap();
    c
}

/// Database settings: one database (v1) or bucket (v2) per tenant, `vigie_<tenant>`. In
/// the tests v1 is InfluxDB 1.x and v2 is VictoriaMetrics.
pub fn database(api: DatabaseApi, server: SocketAddr) -> DatabaseConfig {
    DatabaseConfig {
        api,
        kind: match api {
            DatabaseApi::V1 => gateway::config::DatabaseKind::Influxdb,
            DatabaseApi::V2 => gateway::config::DatabaseKind::Victoriametrics,
        },
        url: format!("http://{server}"),
        org: Some("vigie".into()),
        token: Some(Secret::new("test-token")),
        username: None,
        password: None,
        prefix: "vigie_".into(),
        tenants: Default::default(),
        timeout: Duration::from_secs(5),
        ca_file: None,
        retention: None,
        gzip: false,
    }
}

/// Publishes every message at QoS 1, each from the account of the device whose topic it
/// goes to (the broker allows nothing else), and waits for every successful PUBACK.
pub async fn publish_all(broker: SocketAddr, messages: &[(String, Vec<u8>)]) {
    let mut by_device: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    for m in messages {
        by_device
            .entry(topic_username(&m.0))
            .or_default()
            .push(m.clone());
    }
    let tasks: Vec<_> = by_device
        .into_iter()
        .map(|(user, list)| tokio::spawn(publish_as(broker, user, list)))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// `<tenant>.<device>` of an uplink topic.
fn topic_username(topic: &str) -> String {
    let levels: Vec<_> = topic.split('/').collect();
    assert_eq!(levels.len(), 5, "not an uplink topic: {topic}");
    access::device_username(levels[2], levels[3])
}

async fn publish_as(broker: SocketAddr, user: String, messages: Vec<(String, Vec<u8>)>) {
    let mut o = MqttOptions::new(&user, broker.ip().to_string(), broker.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_credentials(&user, password(&user).expose());
    let (client, mut events) = AsyncClient::new(o, 1024);
    let sender = {
        let client = client.clone();
        let messages = messages.clone();
        tokio::spawn(async move {
            for (topic, payload) in messages {
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
            }
        })
    };
    let mut acked = 0;
    // A minute, and more for a large preload (100 devices × 20,000 share the broker).
    let until =
        Instant::now() + Duration::from_secs(60) + Duration::from_millis(5) * messages.len() as u32;
    while acked < messages.len() {
        assert!(
            Instant::now() < until,
            "broker acknowledged {acked} of {} from {user}",
            messages.len()
        );
        match tokio::time::timeout(Duration::from_secs(1), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                assert!(
                    matches!(
                        ack.reason,
                        PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                    ),
                    "broker refused a publish of {user}: {:?}",
                    ack.reason
                );
                acked += 1;
            }
            Ok(Ok(Event::Incoming(Packet::ConnAck(c)))) => {
                assert_eq!(c.code, ConnectReturnCode::Success, "broker refused {user}")
            }
            _ => {}
        }
    }
    sender.await.unwrap();
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
}

/// Floods `device`'s uplink topic at QoS 0 from its own account: `count` payloads, the
/// `i`-th of `size(i)` bytes, for at most `limit`; how many went out (the broker may end
/// the connection, on an oversized one for instance, which ends the flood).
pub async fn flood_qos0(
    broker: SocketAddr,
    device: &Device,
    count: usize,
    size: impl Fn(usize) -> usize,
    limit: Duration,
) -> usize {
    let user = access::device_username(&device.tenant, &device.id);
    let mut o = MqttOptions::new(&user, broker.ip().to_string(), broker.port());
    o.set_credentials(&user, password(&user).expose());
    o.set_max_packet_size(Some(2 << 20));
    let (client, mut events) = AsyncClient::new(o, 64);
    // The client's event loop in a task of its own; whatever was sent by `limit` is the
    // flood, and nothing here can wait for ever.
    let poller = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let topic = device.topic();
    let mut sent = 0;
    let _ = tokio::time::timeout(limit, async {
        for i in 0..count {
            let payload = vec![(i % 251) as u8; size(i)];
            if client
                .publish(&topic, QoS::AtMostOnce, false, payload)
                .await
                .is_err()
            {
                break;
            }
            sent += 1;
        }
        let _ = client.disconnect().await;
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while !poller.is_finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    poller.abort();
    sent
}
