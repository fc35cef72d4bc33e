//! The broker session's timing, pure (time passed in), in the manner of rumqttc's
//! `state.rs`: when to ping and when a missing answer means the connection is dead, when
//! reading pauses for a worker that takes nothing and when it resumes, how long shutdown
//! drains acknowledgements, and how long to wait before reconnecting. The gateway's MQTT
//! shell selects on what this says is due, writes and flushes; it decides nothing itself.

use crate::deliver::retry;
use std::time::{Duration, Instant};

/// How long the worker may take nothing before reading resumes with a full queue: the
/// connection must stay alive (ping answers, the subscription's answer after a
/// reconnect); with no acknowledgement flowing, the broker's in-flight limit holds.
pub const STALLED: Duration = Duration::from_millis(500);
/// Longest wait at shutdown for the acknowledgements of messages already handed over.
pub const DRAIN: Duration = Duration::from_secs(5);
/// First reconnection delay.
pub const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Longest reconnection delay.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// What the ping timer asks for when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    /// Send a PINGREQ.
    Send,
    /// The previous PINGREQ got no answer within a keep-alive: the connection is dead.
    TimedOut,
}

/// One connection's timing.
#[derive(Debug, Clone)]
pub struct Session {
    keep_alive: Duration,
    ping_due: Option<Instant>,
    awaiting_pong: bool,
    draining: Option<Instant>,
    taken: Instant,
    intake: usize,
}

impl Session {
    /// A connection made at `now`: our keep-alive unless the broker's Server Keep Alive
    /// says otherwise (it wins; zero means no pings); reading pauses at `intake` queued
    /// messages (the Receive Maximum). A drain begun before carries over.
    pub fn connected(
        now: Instant,
        ours: Duration,
        server_keep_alive_s: Option<u16>,
        intake: usize,
        draining: Option<Instant>,
    ) -> Self {
        let keep_alive = server_keep_alive_s.map_or(ours, |s| Duration::from_secs(u64::from(s)));
        Self {
            keep_alive,
            ping_due: (!keep_alive.is_zero()).then(|| now + keep_alive),
            awaiting_pong: false,
            draining,
            taken: now,
            intake,
        }
    }

    /// The keep-alive in force.
    pub fn keep_alive(&self) -> Duration {
        self.keep_alive
    }

    /// When the ping timer fires (`None`: no keep-alive).
    pub fn ping_due(&self) -> Option<Instant> {
        self.ping_due
    }

    /// The ping timer fired at `now`.
    pub fn on_ping_timer(&mut self, now: Instant) -> Ping {
        if self.awaiting_pong {
            return Ping::TimedOut;
        }
        self.awaiting_pong = true;
        self.ping_due = Some(now + self.keep_alive);
        Ping::Send
    }

    /// The broker answered a ping.
    pub fn on_pingresp(&mut self) {
        self.awaiting_pong = false;
    }

    /// The worker took messages at `now`.
    pub fn on_taken(&mut self, now: Instant) {
        self.taken = now;
    }

    /// Whether to read the socket at `now` with `queued` messages waiting for the worker:
    /// not while the queue is full and the worker is taking from it, nor with a full
    /// queue while draining.
    pub fn reading(&self, queued: usize, now: Instant) -> bool {
        queued < self.intake || (self.draining.is_none() && now >= self.taken + STALLED)
    }

    /// When a paused read turns into a stall (and reading resumes).
    pub fn stall_at(&self) -> Instant {
        self.taken + STALLED
    }

    /// Shutdown began at `now`: stop handing messages over, send the acknowledgements due
    /// until the drain's deadline.
    pub fn start_drain(&mut self, now: Instant) {
        if self.draining.is_none() {
            self.draining = Some(now + DRAIN);
        }
    }

    /// The drain's deadline, once shutdown began.
    pub fn draining(&self) -> Option<Instant> {
        self.draining
    }

    /// Whether the drain is over at `now`: every message handed over acknowledged
    /// (`settled`), the worker gone (no acknowledgement can come: the broker redelivers
    /// the rest), or the deadline passed.
    pub fn drained(&self, now: Instant, settled: bool, worker_gone: bool) -> bool {
        self.draining
            .is_some_and(|until| settled || worker_gone || now >= until)
    }
}

/// Reconnection delays: doubling from [`RECONNECT_MIN`] to [`RECONNECT_MAX`] with full
/// jitter (a gateway group restarted together does not reconnect in step), back to the
/// start once a connection is made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconnect {
    failures: u32,
}

impl Reconnect {
    /// A connection was made.
    pub fn connected(&mut self) {
        self.failures = 0;
    }

    /// A connection failed; the wait before the next attempt, `unit` a random number in
    /// `[0, 1)`.
    pub fn failed(&mut self, unit: f64) -> Duration {
        let wait = retry::backoff(self.failures, RECONNECT_MIN, RECONNECT_MAX, unit);
        self.failures = self.failures.saturating_add(1);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_ping_ends_the_connection_an_answered_one_does_not() {
        let t0 = Instant::now();
        let mut s = Session::connected(t0, Duration::from_secs(30), None, 10, None);
        assert_eq!(s.ping_due(), Some(t0 + Duration::from_secs(30)));
        assert_eq!(s.on_ping_timer(t0 + Duration::from_secs(30)), Ping::Send);
        assert_eq!(s.ping_due(), Some(t0 + Duration::from_secs(60)));
        s.on_pingresp();
        assert_eq!(s.on_ping_timer(t0 + Duration::from_secs(60)), Ping::Send);
        assert_eq!(
            s.on_ping_timer(t0 + Duration::from_secs(90)),
            Ping::TimedOut
        );
        // The broker's Server Keep Alive wins; zero means no pings at all.
        let s = Session::connected(t0, Duration::from_secs(30), Some(5), 10, None);
        assert_eq!(s.keep_alive(), Duration::from_secs(5));
        let s = Session::connected(t0, Duration::from_secs(30), Some(0), 10, None);
        assert_eq!(s.ping_due(), None);
    }

    #[test]
    fn reading_pauses_on_a_full_queue_until_the_worker_stalls_but_not_while_draining() {
        let t0 = Instant::now();
        let mut s = Session::connected(t0, Duration::from_secs(30), None, 2, None);
        assert!(s.reading(1, t0));
        assert!(!s.reading(2, t0), "full queue, worker taking: paused");
        assert!(
            s.reading(2, t0 + STALLED),
            "the worker took nothing for STALLED"
        );
        s.on_taken(t0 + STALLED);
        assert!(!s.reading(2, t0 + STALLED));
        assert_eq!(s.stall_at(), t0 + STALLED + STALLED);
        s.start_drain(t0 + STALLED);
        assert!(
            !s.reading(2, t0 + Duration::from_secs(9)),
            "draining: no stall read"
        );
        assert!(s.reading(1, t0 + Duration::from_secs(9)));
    }

    #[test]
    fn a_drain_ends_when_settled_when_the_worker_is_gone_or_at_its_deadline() {
        let t0 = Instant::now();
        let mut s = Session::connected(t0, Duration::from_secs(30), None, 2, None);
        assert!(!s.drained(t0, true, true), "no drain before shutdown");
        s.start_drain(t0);
        s.start_drain(t0 + Duration::from_secs(3));
        assert_eq!(
            s.draining(),
            Some(t0 + DRAIN),
            "a second signal keeps the deadline"
        );
        assert!(!s.drained(t0, false, false));
        assert!(s.drained(t0, true, false));
        assert!(s.drained(t0, false, true));
        assert!(s.drained(t0 + DRAIN, false, false));
        // A drain carries over a reconnection.
        let again = Session::connected(t0, Duration::from_secs(30), None, 2, s.draining());
        assert_eq!(again.draining(), Some(t0 + DRAIN));
    }

    #[test]
    fn reconnection_waits_double_with_jitter_up_to_the_cap_and_start_over_once_connected() {
        let mut r = Reconnect::default();
        let waits: Vec<Duration> = (0..12).map(|_| r.failed(0.999)).collect();
        assert!(waits[0] <= RECONNECT_MIN && waits[0] >= RECONNECT_MIN / 2);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
        assert!(waits.iter().all(|w| *w <= RECONNECT_MAX));
        assert!(waits[11] >= RECONNECT_MAX / 2);
        // Jitter spreads a group restarted together.
        let (mut a, mut b) = (Reconnect::default(), Reconnect::default());
        assert_ne!(a.failed(0.0), b.failed(0.9));
        r.connected();
        assert!(r.failed(0.5) <= RECONNECT_MIN);
    }
}
