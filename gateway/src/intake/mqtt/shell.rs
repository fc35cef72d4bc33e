//! The shell around one broker connection: each turn writes what is due in one go (the
//! acknowledgements [`AckFlow`] releases, then the device acknowledgements the broker has
//! room for), flushes, then waits for the first of what the [`Session`] says is due and
//! what the channels bring. It decides nothing of timing itself.

use super::conn::{ConnError, Connection, Incoming};
use super::{Links, SUBSCRIBE_ID};
use crate::ingest::{AckToken, HANDOVER, Inbound, Job, ToBroker};
use crate::observe::metrics::gauge;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Filter, Packet, PingReq, PubAckReason, Publish, Subscribe, SubscribeReasonCode,
};
use std::collections::VecDeque;
use std::ops::Range;
use std::time::Duration;
use tokio::sync::mpsc::OwnedPermit;
use tokio::time::Instant;
use vigie_core::ack::downlinks::Downlinks;
use vigie_core::ack::flow::AckFlow;
use vigie_core::session::{Ping, Session};

/// Bytes of received messages in memory (not yet committed) past which QoS 0 publishes
/// are dropped and counted: they have no PUBACK to withhold, and their devices resend
/// what no end-to-end acknowledgement covered. QoS 1 is bounded by Receive Maximum.
pub const MAX_INTAKE_BYTES: i64 = 16 << 20;

/// How a connection ended.
#[derive(Debug)]
pub(super) enum End {
    /// Shutdown finished: acknowledgements sent.
    Done,
    /// The connection failed.
    Lost(ConnError),
}

/// The shell's state across connections.
#[derive(Debug)]
pub(super) struct Shell {
    pub(super) links: Links,
    /// Messages the worker may hold unacknowledged before reading pauses.
    pub(super) intake: usize,
    /// Our keep-alive (the broker's Server Keep Alive wins).
    pub(super) keep_alive: Duration,
    pub(super) flow: AckFlow,
    /// Received messages waiting for room in the worker's channel.
    pub(super) queue: VecDeque<Inbound>,
    /// Device acknowledgements waiting for, and in flight to, the broker.
    pub(super) downlinks: Downlinks,
    /// Shutdown began: the drain's deadline (it carries over a reconnection).
    pub(super) draining: Option<std::time::Instant>,
    /// The publishes of one read (topic, payload, acknowledgement owed), kept empty between
    /// reads: grown anew at each read, it was 0.6 % of a drain's instructions.
    pub(super) arrived: Vec<Arrived>,
}

/// A publish as read: where its topic and payload are in the connection's buffer, the
/// acknowledgement it owes the broker.
pub(super) type Arrived = (Range<usize>, Range<usize>, Option<AckToken>);

/// What woke a connection's wait.
enum Woke {
    /// Shutdown was asked.
    Stop,
    /// A deadline or a stall: the loop's top looks again.
    Time,
    /// The worker made messages durable (`None`: it stopped).
    Acks(Option<ToBroker>),
    /// Room in the worker's channel (`None`: it is closed).
    Room(Option<OwnedPermit<Job>>),
    /// The ping timer.
    Ping,
    /// Bytes from the broker, or why none can come.
    Read(Result<(), ConnError>),
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Shell {
    /// Serves one connection until it fails or shutdown has sent what it could.
    pub(super) async fn connected(&mut self, conn: &mut Connection, connack: &ConnAck) -> End {
        let mut s = match self.start(conn, connack) {
            Ok(s) => s,
            Err(e) => return End::Lost(e),
        };
        let end = loop {
            if let Err(e) = self.write_due(conn).await {
                break End::Lost(e);
            }
            if s.drained(now(), self.flow.settled(), self.worker_gone()) {
                break End::Done;
            }
            if let Some(end) = self.wait(conn, &mut s).await {
                break end;
            }
        };
        self.draining = s.draining();
        end
    }

    /// A new connection: the flow and the downlinks learn of it, the subscription is
    /// queued, the session's timing starts.
    fn start(&mut self, conn: &mut Connection, connack: &ConnAck) -> Result<Session, ConnError> {
        self.flow.on_connack();
        let properties = connack.properties.as_ref();
        let broker_limit = properties.and_then(|p| p.receive_max).unwrap_or(u16::MAX);
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
        conn.queue(&Packet::Subscribe(subscribe))?;
        let server_keep_alive = properties.and_then(|p| p.server_keep_alive);
        Ok(Session::connected(
            now(),
            self.keep_alive,
            server_keep_alive,
            self.intake,
            self.draining,
        ))
    }

    /// Everything due, in one write: acknowledgements in arrival order, then device
    /// acknowledgements while the broker has room for them.
    async fn write_due(&mut self, conn: &mut Connection) -> Result<(), ConnError> {
        while let Some(token) = self.flow.next_ack() {
            conn.queue_puback(token.pkid);
            self.flow.sent();
        }
        while let Some((pkid, (topic, payload))) = self.downlinks.next_publish() {
            let mut p = Publish::new(topic.as_str(), QoS::AtLeastOnce, payload.clone(), None);
            // Not retained: an acknowledgement is about frames of the device's current
            // connection; one kept for the next could clear frames of a board whose
            // counter went back (SPEC §7).
            p.pkid = pkid;
            conn.queue(&Packet::Publish(p))?;
        }
        let waiting = gauge(self.downlinks.len() as u64);
        self.links.metrics.device_acks_waiting.set(waiting);
        conn.flush().await
    }

    /// The worker stopped: no acknowledgement can come any more.
    fn worker_gone(&self) -> bool {
        self.links.acks.is_closed() && self.links.acks.is_empty() && self.flow.idle()
    }

    /// Waits for the first thing due and deals with it; what ends the connection, if it
    /// does.
    async fn wait(&mut self, conn: &mut Connection, s: &mut Session) -> Option<End> {
        let reading = s.reading(self.queue.len(), now());
        let draining = s.draining().map(Instant::from_std);
        let ping_due = s.ping_due().map(Instant::from_std);
        let acks_open = !self.links.acks.is_closed() || !self.links.acks.is_empty();
        let handing = !self.queue.is_empty() && draining.is_none();
        let (stopping, jobs) = (self.links.stopping.clone(), self.links.jobs.clone());
        let woke = tokio::select! {
            biased;
            _ = stopping.cancelled(), if draining.is_none() => Woke::Stop,
            // Draining: wakes at the deadline (acks and packets wake it before).
            _ = tokio::time::sleep_until(draining.unwrap_or_else(Instant::now)), if draining.is_some() => Woke::Time,
            // `None`: the worker has stopped; the loop's top sees it.
            received = self.links.acks.recv(), if acks_open => Woke::Acks(received),
            permit = jobs.reserve_owned(), if handing => Woke::Room(permit.ok()),
            _ = tokio::time::sleep_until(ping_due.unwrap_or_else(Instant::now)), if ping_due.is_some() => Woke::Ping,
            // Reading paused: wakes when the pause turns into a stall.
            _ = tokio::time::sleep_until(Instant::from_std(s.stall_at())), if !reading => Woke::Time,
            read = conn.read(), if reading => Woke::Read(read),
        };
        match woke {
            // Stop taking new messages; keep going so acks for stored ones go out.
            Woke::Stop => s.start_drain(now()),
            Woke::Time => {}
            Woke::Acks(received) => self.take_acks(received),
            Woke::Room(None) => return Some(End::Done),
            Woke::Room(Some(permit)) => {
                self.hand_over(permit);
                s.on_taken(now());
            }
            Woke::Ping => {
                if s.on_ping_timer(now()) == Ping::TimedOut {
                    return Some(End::Lost(ConnError::PingTimeout));
                }
                if let Err(e) = conn.queue(&Packet::PingReq(PingReq)) {
                    return Some(End::Lost(e));
                }
            }
            Woke::Read(read) => {
                if let Err(e) = read.and_then(|()| self.on_bytes(conn, s)) {
                    return Some(End::Lost(e));
                }
            }
        }
        None
    }

    /// What the worker made durable: every message waiting on the channel.
    fn take_acks(&mut self, first: Option<ToBroker>) {
        let mut next = first;
        while let Some(message) = next.take() {
            match message {
                ToBroker::Acks(tokens) => {
                    for token in tokens {
                        self.flow.on_durable(token);
                    }
                }
                ToBroker::Downlink { topic, payload } => {
                    if self.downlinks.push(topic, payload) {
                        self.links.metrics.device_acks_superseded.inc();
                    }
                }
            }
            next = self.links.acks.try_recv().ok();
        }
    }

    /// Everything queued the worker's channel has room for, in one go, [`HANDOVER`]
    /// messages a job.
    fn hand_over(&mut self, first: OwnedPermit<Job>) {
        let mut permit = Some(first);
        while let Some(p) = permit.take() {
            if self.queue.is_empty() {
                break;
            }
            let n = self.queue.len().min(HANDOVER);
            let batch: Vec<Inbound> = self.queue.drain(..n).collect();
            for m in &batch {
                self.flow.handed_over(m.ack);
            }
            permit = p.send(Job::Messages(batch)).try_reserve_owned().ok();
        }
    }

    /// Bytes from the broker: every whole packet in them. The messages among them are
    /// queued together, in one allocation ([`Inbound::together`]).
    fn on_bytes(&mut self, conn: &mut Connection, s: &mut Session) -> Result<(), ConnError> {
        let received_ms = self.links.clock.now_ms();
        let (mut arrived, mut taken, mut at) = (std::mem::take(&mut self.arrived), 0, 0);
        let end = loop {
            let packet = match conn.packet_at(at) {
                Ok(Some((packet, end))) => {
                    at = end;
                    packet
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            let packet = match packet {
                Incoming::Publish(p) => {
                    if let Some(ack) = self.admit(p.qos, p.pkid, taken) {
                        taken += p.topic.len() + p.payload.len();
                        arrived.push((p.topic, p.payload, ack));
                    }
                    continue;
                }
                Incoming::Other(packet) => *packet,
            };
            match packet {
                Packet::PubAck(a) if self.downlinks.on_puback(a.pkid) => {
                    self.on_downlink_ack(a.reason)
                }
                Packet::PingResp(_) => s.on_pingresp(),
                Packet::SubAck(a) => self.on_suback(&a.return_codes),
                Packet::Disconnect(d) => break Err(ConnError::Disconnected(d.reason_code)),
                _ => {}
            }
        };
        let buf = conn.buffered();
        let parts = arrived
            .iter()
            .map(|(t, p, ack)| (&buf[t.clone()], &buf[p.clone()], *ack));
        for m in Inbound::together(parts, received_ms) {
            self.links.metrics.intake_bytes.inc_by(m.bytes() as i64);
            self.queue.push_back(m);
        }
        conn.consume(at);
        arrived.clear();
        self.arrived = arrived;
        end
    }

    /// Whether a message is taken (`Some`, with the acknowledgement it owes the broker):
    /// a QoS 0 one is dropped and counted once the messages in memory, with the `taken`
    /// bytes of the same read, reach the bound.
    fn admit(&mut self, qos: QoS, pkid: u16, taken: usize) -> Option<Option<AckToken>> {
        let intake = self.links.metrics.intake_bytes.get() + taken as i64;
        if qos == QoS::AtMostOnce && intake >= MAX_INTAKE_BYTES {
            self.links.metrics.qos0_dropped.inc();
            return None;
        }
        Some((qos != QoS::AtMostOnce).then(|| self.flow.on_publish(pkid)))
    }

    /// The broker's answer to a device acknowledgement: counted when it took it, a
    /// refusal (the gateway's account may not publish there) seen, not counted as sent.
    fn on_downlink_ack(&self, reason: PubAckReason) {
        let metrics = &self.links.metrics;
        match reason {
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {
                metrics.device_acks.inc();
            }
            refused => {
                metrics.device_acks_refused.inc();
                let n = metrics.device_acks_refused.get();
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
        }
    }

    /// Ready only once the broker granted the subscription: a locked-down broker refuses
    /// it to an account without the gateway role.
    fn on_suback(&self, codes: &[SubscribeReasonCode]) {
        let refused = codes
            .iter()
            .find(|c| !matches!(c, SubscribeReasonCode::Success(_)));
        let Some(refused) = refused else {
            self.links.metrics.mqtt_connected.set(1);
            self.links.health.set_broker(Ok(()));
            tracing::info!(filter = %self.links.filter, "subscribed");
            return;
        };
        let why = format!(
            "the broker refused the subscription {} or {} ({refused:?}): check that \
             mqtt.username is a gateway account (`gateways add`) and that the broker was \
             restarted since",
            self.links.filter,
            protocol::topic::STATUS_FILTER
        );
        tracing::error!("{why}");
        self.links.health.set_broker(Err(Some(why)));
    }
}

/// The shell through a fake connection: a scripted broker on the other end of an
/// in-memory pipe, the test playing the worker (in the manner of ChirpStack's backend
/// mock).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::observe::health::Health;
    use crate::observe::metrics::Metrics;
    use bytes::BytesMut;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    /// The broker's end of the pipe.
    struct Broker {
        io: DuplexStream,
        read: BytesMut,
    }

    impl Broker {
        async fn send(&mut self, packet: Packet) {
            let mut out = BytesMut::new();
            packet.write(&mut out, None).unwrap();
            self.io.write_all(&out).await.unwrap();
        }

        async fn publish(&mut self, pkid: u16) {
            let mut p = Publish::new("vigie/v1/lyon/aq-1/up", QoS::AtLeastOnce, vec![1, 2], None);
            p.pkid = pkid;
            self.send(Packet::Publish(p)).await;
        }

        /// The next packet the gateway sent.
        async fn next(&mut self) -> Packet {
            loop {
                if let Ok(p) = Packet::read(&mut self.read, None) {
                    return p;
                }
                let n = self.io.read_buf(&mut self.read).await.unwrap();
                assert!(n > 0, "the gateway closed the pipe");
            }
        }

        /// The PUBACKs' packet ids among the next `n` packets that are PUBACKs.
        async fn pubacks(&mut self, n: usize) -> Vec<u16> {
            let mut ids = Vec::new();
            while ids.len() < n {
                if let Packet::PubAck(a) = self.next().await {
                    ids.push(a.pkid);
                }
            }
            ids
        }
    }

    struct Worker {
        jobs: mpsc::Receiver<Job>,
        acks: mpsc::UnboundedSender<ToBroker>,
        /// Messages of a job not taken yet.
        taken: VecDeque<Inbound>,
    }

    impl Worker {
        async fn take(&mut self) -> Inbound {
            while self.taken.is_empty() {
                match self.jobs.recv().await {
                    Some(Job::Messages(batch)) => self.taken.extend(batch),
                    _ => panic!("no message"),
                }
            }
            self.taken.pop_front().unwrap()
        }

        fn durable(&self, m: &Inbound) {
            self.acks
                .send(ToBroker::Acks(vec![m.ack.unwrap()]))
                .unwrap();
        }
    }

    fn shell(keep_alive_s: u16) -> (Shell, Connection, Broker, Worker, CancellationToken) {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (jobs_tx, jobs) = mpsc::channel(16);
        let (acks, acks_rx) = mpsc::unbounded_channel();
        let stopping = CancellationToken::new();
        let links = Links {
            filter: "$share/g/vigie/v1/+/+/up".into(),
            jobs: jobs_tx,
            acks: acks_rx,
            metrics: Arc::new(Metrics::default()),
            health: Arc::new(Health::default()),
            stopping: stopping.clone(),
            clock: Clock::fixed(1_000),
        };
        let shell = Shell {
            links,
            intake: 10,
            keep_alive: Duration::from_secs(u64::from(keep_alive_s)),
            flow: AckFlow::default(),
            queue: VecDeque::new(),
            downlinks: Downlinks::new(16, 16),
            draining: None,
            arrived: Vec::new(),
        };
        let broker = Broker {
            io: theirs,
            read: BytesMut::new(),
        };
        let conn = Connection::over(Box::new(ours));
        (
            shell,
            conn,
            broker,
            Worker {
                jobs,
                acks,
                taken: VecDeque::new(),
            },
            stopping,
        )
    }

    fn connack() -> ConnAck {
        ConnAck {
            session_present: false,
            code: rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success,
            properties: None,
        }
    }

    #[tokio::test]
    async fn acknowledgements_go_out_once_durable_and_shutdown_drains_what_was_handed_over() {
        let (mut shell, mut conn, mut broker, mut worker, stopping) = shell(60);
        let served = tokio::spawn(async move {
            let end = shell.connected(&mut conn, &connack()).await;
            (end, shell)
        });
        assert!(matches!(broker.next().await, Packet::Subscribe(_)));
        broker.publish(7).await;
        broker.publish(8).await;
        let (first, second) = (worker.take().await, worker.take().await);
        assert_eq!(
            first.received_ms, 1_000,
            "stamped by the clock it was given"
        );
        // Nothing goes out before the worker says durable; then in the order it says.
        let early = tokio::time::timeout(Duration::from_millis(100), broker.next()).await;
        assert!(early.is_err(), "sent before durable: {early:?}");
        worker.durable(&first);
        worker.durable(&second);
        assert_eq!(broker.pubacks(2).await, [7, 8]);
        // Shutdown with one message handed over: its acknowledgement still goes out.
        broker.publish(9).await;
        let third = worker.take().await;
        stopping.cancel();
        worker.durable(&third);
        assert_eq!(broker.pubacks(1).await, [9]);
        let (end, shell) = served.await.unwrap();
        assert!(matches!(end, End::Done), "{end:?}");
        assert!(shell.draining.is_some(), "the drain carries over");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_ping_ends_the_connection_an_answered_one_keeps_it() {
        let (mut shell, mut conn, mut broker, _worker, _stopping) = shell(1);
        let served = tokio::spawn(async move { shell.connected(&mut conn, &connack()).await });
        assert!(matches!(broker.next().await, Packet::Subscribe(_)));
        assert!(matches!(broker.next().await, Packet::PingReq(_)));
        broker
            .send(Packet::PingResp(rumqttc::v5::mqttbytes::v5::PingResp))
            .await;
        assert!(matches!(broker.next().await, Packet::PingReq(_)));
        // No answer this time: one keep-alive later the connection is given up.
        let end = served.await.unwrap();
        assert!(matches!(end, End::Lost(ConnError::PingTimeout)), "{end:?}");
    }

    #[tokio::test]
    async fn a_granted_subscription_makes_the_gateway_ready() {
        let (mut shell, mut conn, mut broker, _worker, stopping) = shell(60);
        let health = shell.links.health.clone();
        let metrics = shell.links.metrics.clone();
        let served = tokio::spawn(async move { shell.connected(&mut conn, &connack()).await });
        let Packet::Subscribe(s) = broker.next().await else {
            panic!("no SUBSCRIBE")
        };
        let granted = rumqttc::v5::mqttbytes::v5::SubAck {
            pkid: s.pkid,
            return_codes: vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); 2],
            properties: None,
        };
        broker.send(Packet::SubAck(granted)).await;
        for _ in 0..100 {
            if metrics.counts().mqtt_connected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(metrics.counts().mqtt_connected);
        let ready = health.snapshot();
        assert!(
            ready.broker_connected && ready.broker_error.is_none(),
            "{ready:?}"
        );
        stopping.cancel();
        assert!(matches!(served.await.unwrap(), End::Done));
    }
}
