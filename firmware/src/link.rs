//! The node's schedule and link as one state machine without I/O, in the style of
//! rumqttc's `state.rs`: asked "what now" with the time ([`Link::poll`]), it answers take
//! a sample, run one link step, or wait; told how a step ended ([`Link::done`]), it moves
//! on. Boards ([`crate::app`]) and the fleet simulator execute its actions, so both keep
//! the same schedule:
//!
//! - sample every interval once the network time is known, connected or not (readings
//!   wait in the flash ring during an outage), with a status report every few samples;
//! - link steps in order: wake the modem and read the network time, open the socket, MQTT
//!   connect, then exchange (send what waits, ping, collect acknowledgements);
//! - exchange after every sample, while frames remain, and when idle for half the
//!   keep-alive: the exchange ends with a ping, so a node whose readings stay inside their
//!   deadband is not dropped by the broker for silence;
//! - after a failed attempt, back off (exponential, with jitter); after a connection that
//!   worked drops, wait one second; either way leave transparent mode (escape) with a
//!   second of silence before trying again.
//!
//! A node with a report interval (a battery node, SPEC §11 format 4) does not stay
//! connected: every report interval it powers the modem up, connects, sends what waits,
//! exchanges until everything sent is acknowledged (at most [`LINGER_MS`]), and powers
//! the modem down; samples go on in between, kept in flash. An alarm starts a report at
//! once ([`Link::report_now`]); a failed report is retried after the back-off, the modem
//! off meanwhile.

use crate::backoff::Backoff;

/// A link step with I/O, run by the executor within its own time-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Wake the modem and read the network time.
    Clock,
    /// Open the socket (TCP or TLS, as the blob says) to the broker.
    Open,
    /// MQTT connect: account, `online`, the acknowledgement subscription.
    Connect,
    /// Send what waits, ping, apply the acknowledgements that arrive.
    Exchange,
    /// Drop the connection and leave transparent mode (`+++`).
    Escape,
    /// Power the modem down until the next report (a node with a report interval).
    PowerDown,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Take a sample, and a status report with it if `status`.
    Sample {
        /// A status report is due too.
        status: bool,
    },
    /// Run this step, then report how it ended with [`Link::done`].
    Run(Step),
    /// Nothing to do before this time (ms since boot): sleep, then poll again.
    WaitUntil(u64),
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It worked.
    Done,
    /// An exchange worked; `more` frames wait to be sent on this connection.
    Exchanged {
        /// Exchange again at once.
        more: bool,
        /// Nothing waits for an acknowledgement any more: a reporting node may power
        /// down.
        settled: bool,
    },
    /// It failed, for this reason (the board prints it).
    Failed(&'static str),
}

/// What changed on the link, for the board to tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Connected to the broker.
    Connected,
    /// An attempt failed (why); next one in this many seconds.
    LinkFailed(&'static str, u32),
    /// A working connection dropped (why); reconnecting.
    Reconnecting(&'static str),
}

/// The fixed parameters of a node's schedule.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The first sample, ms after boot (once the time is known).
    pub first_sample_ms: u64,
    /// Between samples, ms.
    pub interval_ms: u64,
    /// A status report every this many samples.
    pub status_every: u32,
    /// Exchange (and so ping) after this long without one, ms.
    pub idle_ms: u64,
    /// Between reports, ms: 0, stay connected; otherwise connect for each report only,
    /// the modem off in between.
    pub report_ms: u64,
    /// Back-off between failed attempts.
    pub backoff: Backoff,
    /// Mixed into the back-off jitter, so nodes that fail together spread out.
    pub seed: u32,
}

impl Schedule {
    /// Idle time for a keep-alive of `keep_alive_s`: half of it (the broker drops a client
    /// after 1.5 × keep-alive of silence), at least one second.
    pub fn idle_ms_for(keep_alive_s: u16) -> u64 {
        (u64::from(keep_alive_s) * 1000 / 2).max(1000)
    }
}

/// The silence around an escape sequence, and the wait after a working connection drops.
const SILENCE_MS: u64 = 1000;
/// Longest a report stays connected for the acknowledgements of what it sent, from its
/// connection; what is not acknowledged by then waits in flash for the next report.
pub const LINGER_MS: u64 = 30_000;
/// While a report waits for acknowledgements, it exchanges (pings) this often.
const ACK_POLL_MS: u64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not connected: start again (network time) at this time.
    Down { at: u64 },
    /// This step next, at once.
    Next(Step),
    /// Connected; the last exchange ended at `last`; `more` frames wait; `settled`:
    /// nothing waits for an acknowledgement.
    Up {
        last: u64,
        more: bool,
        settled: bool,
    },
    /// A step failed: escape at this time.
    Escape { at: u64 },
    /// The modem is off (a reporting node) until `at`, when it reports; `scheduled`: this
    /// is the periodic report (not a retry or an alarm's).
    Off { at: u64, scheduled: bool },
}

/// The node's link and sampling schedule.
#[derive(Debug, Clone)]
pub struct Link {
    schedule: Schedule,
    backoff: Backoff,
    phase: Phase,
    /// The next sample, once the network time is known.
    next_sample: Option<u64>,
    samples: u32,
    /// A reporting node's next periodic report.
    next_report: u64,
    /// When this connection came up (a report lingers from there).
    up_since: u64,
    /// A failed report's retry, once the modem is down.
    retry_at: Option<u64>,
}

impl Link {
    /// Starts down, about to wake the modem.
    pub fn new(schedule: Schedule) -> Self {
        Self {
            backoff: schedule.backoff,
            schedule,
            phase: Phase::Down { at: 0 },
            next_sample: None,
            samples: 0,
            next_report: schedule.report_ms,
            up_since: 0,
            retry_at: None,
        }
    }

    fn reporting(&self) -> bool {
        self.schedule.report_ms > 0
    }

    /// An alarm: a reporting node with its modem off reports at once (the periodic
    /// schedule stays as it was).
    pub fn report_now(&mut self, now: u64) {
        if let Phase::Off { at, .. } = &mut self.phase {
            *at = now.min(*at);
        }
    }

    /// Connected to the broker (the last step that ended did not fail).
    pub fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Up { .. })
    }

    /// What to do at `now` (ms since boot).
    pub fn poll(&mut self, now: u64) -> Action {
        if let Some(due) = self.next_sample
            && now >= due
        {
            // On the schedule to the millisecond, however late this poll came (a link
            // step ran over the due time); a whole interval late, from now.
            let next = due + self.schedule.interval_ms;
            self.next_sample = Some(if next > now {
                next
            } else {
                now + self.schedule.interval_ms
            });
            self.samples = self.samples.wrapping_add(1);
            if let Phase::Up { more, .. } = &mut self.phase {
                *more = true; // send it at once
            }
            let every = self.schedule.status_every.max(1);
            return Action::Sample {
                status: self.samples.is_multiple_of(every),
            };
        }
        let wake = match self.phase {
            Phase::Next(step) => return Action::Run(step),
            Phase::Down { at } if now >= at => return Action::Run(Step::Clock),
            Phase::Escape { at } if now >= at => return Action::Run(Step::Escape),
            Phase::Off { at, scheduled } if now >= at => {
                if scheduled {
                    while self.next_report <= now {
                        self.next_report += self.schedule.report_ms;
                    }
                }
                self.phase = Phase::Down { at };
                return Action::Run(Step::Clock);
            }
            Phase::Up { more: true, .. } => return Action::Run(Step::Exchange),
            Phase::Up { last, settled, .. } if self.reporting() => {
                if settled || now >= self.up_since + LINGER_MS {
                    return Action::Run(Step::PowerDown);
                }
                let poll = last + ACK_POLL_MS;
                if now >= poll {
                    return Action::Run(Step::Exchange);
                }
                poll.min(self.up_since + LINGER_MS)
            }
            Phase::Up { last, .. } => {
                let idle_until = last + self.schedule.idle_ms;
                if now >= idle_until {
                    return Action::Run(Step::Exchange);
                }
                idle_until
            }
            Phase::Down { at } | Phase::Escape { at } | Phase::Off { at, .. } => at,
        };
        Action::WaitUntil(self.next_sample.map_or(wake, |s| s.min(wake)))
    }

    /// `step` ended at `now` with `outcome`; returns what changed, if anything.
    pub fn done(&mut self, step: Step, outcome: Outcome, now: u64) -> Option<Change> {
        if let Outcome::Failed(why) = outcome {
            return self.failed(step, why, now);
        }
        let (phase, change) = match (step, outcome) {
            (Step::Clock, _) => {
                self.next_sample
                    .get_or_insert(self.schedule.first_sample_ms.max(now));
                (Phase::Next(Step::Open), None)
            }
            (Step::Open, _) => (Phase::Next(Step::Connect), None),
            (Step::Connect, _) => {
                self.backoff.reset();
                self.up_since = now;
                let up = Phase::Up {
                    last: now,
                    more: true,
                    settled: false,
                };
                (up, Some(Change::Connected))
            }
            (Step::Exchange, Outcome::Exchanged { more, settled }) => {
                let up = Phase::Up {
                    last: now,
                    more,
                    settled,
                };
                (up, None)
            }
            (Step::Exchange, _) => {
                let up = Phase::Up {
                    last: now,
                    more: false,
                    settled: false,
                };
                (up, None)
            }
            (Step::Escape, _) => (self.after_escape(now), None),
            (Step::PowerDown, _) => (self.off(), None),
        };
        self.phase = phase;
        change
    }

    /// A step failed: escape after a wait, then start again (a reporting node powers
    /// down first and retries once the wait is over).
    fn failed(&mut self, step: Step, why: &'static str, now: u64) -> Option<Change> {
        match step {
            // Nothing more to undo: start again after the silence.
            Step::Escape => {
                self.phase = self.after_escape(now);
                return None;
            }
            Step::PowerDown => {
                self.phase = self.off();
                return None;
            }
            _ => {}
        }
        let (wait_ms, change) = if self.is_up() {
            (SILENCE_MS, Change::Reconnecting(why))
        } else {
            let jitter = self.schedule.seed ^ (now as u32);
            let wait_s = self.backoff.next_delay_s(jitter);
            (u64::from(wait_s) * 1000, Change::LinkFailed(why, wait_s))
        };
        if self.reporting() {
            // The modem goes down at once; the retry waits with it off.
            self.retry_at = Some(now + wait_ms);
            self.phase = Phase::Escape {
                at: now + SILENCE_MS,
            };
        } else {
            self.phase = Phase::Escape { at: now + wait_ms };
        }
        Some(change)
    }

    /// After leaving transparent mode: a second of silence, then the network time again;
    /// a reporting node powers the modem down instead.
    fn after_escape(&self, now: u64) -> Phase {
        if self.reporting() {
            Phase::Next(Step::PowerDown)
        } else {
            Phase::Down {
                at: now + SILENCE_MS,
            }
        }
    }

    /// The modem is off: until a failed report's retry, or the next periodic report.
    fn off(&mut self) -> Phase {
        match self.retry_at.take() {
            Some(at) => Phase::Off {
                at,
                scheduled: false,
            },
            None => Phase::Off {
                at: self.next_report,
                scheduled: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn link() -> Link {
        Link::new(Schedule {
            first_sample_ms: 3_000,
            interval_ms: 10_000,
            status_every: 3,
            idle_ms: Schedule::idle_ms_for(60),
            report_ms: 0,
            backoff: Backoff::new(1, 60),
            seed: 0,
        })
    }

    /// Runs `link` from `now` to `until`, answering each step with `answer`; returns what
    /// it did, in order, with the time.
    fn run(
        link: &mut Link,
        mut now: u64,
        until: u64,
        answer: impl Fn(Step, u64) -> Outcome,
    ) -> (Vec<(u64, Action)>, Vec<Change>) {
        let (mut actions, mut changes) = (Vec::new(), Vec::new());
        while now < until {
            let action = link.poll(now);
            actions.push((now, action));
            match action {
                Action::Sample { .. } => {}
                Action::WaitUntil(t) => {
                    assert!(t > now, "a wait must end later: {t} at {now}");
                    now = t;
                }
                Action::Run(step) => {
                    now += 100; // every step takes 100 ms
                    changes.extend(link.done(step, answer(step, now), now));
                }
            }
        }
        (actions, changes)
    }

    /// Every step works; every exchange sends all and is acknowledged.
    fn all_well(step: Step, _: u64) -> Outcome {
        match step {
            Step::Exchange => Outcome::Exchanged {
                more: false,
                settled: true,
            },
            _ => Outcome::Done,
        }
    }

    fn samples(actions: &[(u64, Action)]) -> Vec<(u64, bool)> {
        actions
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Sample { status } => Some((*t, *status)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn link_down_samples_keep_their_schedule_and_attempts_back_off() {
        let mut l = link();
        let (actions, changes) = run(&mut l, 0, 70_000, |step, _| match step {
            Step::Open => Outcome::Failed("no data link"),
            _ => Outcome::Done,
        });
        // Samples from 3 s on, every 10 s, a status report with every third, although
        // no attempt ever connects.
        let s = samples(&actions);
        assert_eq!(s.len(), 7, "{s:?}");
        assert_eq!(s[0], (3_000, false));
        assert!(s.windows(2).all(|w| w[1].0 - w[0].0 == 10_000), "{s:?}");
        assert_eq!(
            s.iter().map(|x| x.1).collect::<Vec<_>>(),
            [false, false, true, false, false, true, false]
        );
        // Each failed attempt backs off longer: the n-th waits between half of 2ⁿ⁻¹ s and
        // 2ⁿ⁻¹ s (jitter), each followed by an escape and a second of silence.
        let waits: Vec<u32> = changes
            .iter()
            .map(|c| match c {
                Change::LinkFailed("no data link", w) => *w,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(waits.len() >= 4, "{waits:?}");
        for (n, w) in waits.iter().enumerate() {
            let step = 1u32 << n;
            assert!((step / 2..=step).contains(w), "{waits:?}");
        }
        let steps = steps(&actions);
        assert_eq!(
            steps[..6],
            [
                Step::Clock,
                Step::Open,
                Step::Escape,
                Step::Clock,
                Step::Open,
                Step::Escape
            ]
        );
        assert!(!steps.contains(&Step::Connect) && !steps.contains(&Step::Exchange));
    }

    #[test]
    fn connected_it_exchanges_after_each_sample_and_pings_when_idle() {
        let mut l = link();
        let (actions, changes) = run(&mut l, 0, 95_000, all_well);
        assert_eq!(changes, [Change::Connected]);
        assert!(l.is_up());
        let mut after_sample = 0;
        let mut idle = 0;
        for w in actions.windows(2) {
            if let (Action::Sample { .. }, (_, Action::Run(Step::Exchange))) = (w[0].1, w[1]) {
                after_sample += 1;
            }
        }
        // With a 30 s idle time and samples every 10 s, no exchange is for idleness; with
        // samples every 100 s (below), one every 30 s is.
        assert_eq!(after_sample, samples(&actions).len());
        let mut quiet = Link::new(Schedule {
            interval_ms: 100_000,
            ..l.schedule
        });
        let (actions, _) = run(&mut quiet, 0, 95_000, all_well);
        let exchanges: Vec<u64> = actions
            .iter()
            .filter(|(_, a)| *a == Action::Run(Step::Exchange))
            .map(|(t, _)| *t)
            .collect();
        for w in exchanges.windows(2) {
            if w[1] - w[0] >= 30_000 {
                idle += 1;
            }
            assert!(w[1] - w[0] <= 30_100, "silent too long: {exchanges:?}");
        }
        assert!(idle >= 2, "{exchanges:?}");
    }

    #[test]
    fn more_frames_are_sent_at_once_and_a_dropped_connection_reconnects_after_a_second() {
        let mut l = link();
        let mut now = 0;
        for step in [Step::Clock, Step::Open, Step::Connect] {
            assert_eq!(l.poll(now), Action::Run(step));
            now += 100;
            l.done(step, Outcome::Done, now);
        }
        assert_eq!(l.poll(now), Action::Run(Step::Exchange));
        l.done(
            Step::Exchange,
            Outcome::Exchanged {
                more: true,
                settled: false,
            },
            now,
        );
        assert_eq!(
            l.poll(now),
            Action::Run(Step::Exchange),
            "more waits: at once"
        );
        assert_eq!(
            l.done(Step::Exchange, Outcome::Failed("mqtt: no answer"), now),
            Some(Change::Reconnecting("mqtt: no answer"))
        );
        assert!(!l.is_up());
        assert_eq!(l.poll(now), Action::WaitUntil(now + 1_000));
        assert_eq!(l.poll(now + 1_000), Action::Run(Step::Escape));
        now += 1_100;
        l.done(Step::Escape, Outcome::Done, now);
        assert_eq!(
            l.poll(now),
            Action::WaitUntil(now + 1_000),
            "a second of silence"
        );
        now += 1_000;
        assert_eq!(l.poll(now), Action::Run(Step::Clock));
        // A connection that worked resets the back-off: the next failed attempt waits 1 s.
        l.done(Step::Clock, Outcome::Done, now + 100);
        let change = l.done(
            Step::Open,
            Outcome::Failed("modem: no answer in time"),
            now + 200,
        );
        assert_eq!(
            change,
            Some(Change::LinkFailed("modem: no answer in time", 1))
        );
    }
    fn reporting() -> Link {
        Link::new(Schedule {
            report_ms: 60_000,
            backoff: Backoff::new(1, 60),
            ..link().schedule
        })
    }

    /// The steps run, in order.
    fn steps(actions: &[(u64, Action)]) -> Vec<Step> {
        actions
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Run(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    fn steps_at(actions: &[(u64, Action)], step: Step) -> Vec<u64> {
        actions
            .iter()
            .filter(|(_, a)| *a == Action::Run(step))
            .map(|(t, _)| *t)
            .collect()
    }

    #[test]
    fn a_reporting_node_connects_once_per_report_and_samples_with_its_modem_off() {
        let mut l = reporting();
        let (actions, changes) = run(&mut l, 0, 250_000, all_well);
        // A report at boot, then every 60 s to the millisecond, each ended by a power-down.
        assert_eq!(
            steps_at(&actions, Step::Clock),
            [0, 60_000, 120_000, 180_000, 240_000]
        );
        assert_eq!(steps_at(&actions, Step::PowerDown).len(), 5);
        assert_eq!(changes.len(), 5, "{changes:?}");
        // Samples keep their 10 s pace although the modem is off between reports.
        let s = samples(&actions);
        assert_eq!(s.len(), 25, "{s:?}");
        assert!(s.windows(2).all(|w| w[1].0 - w[0].0 == 10_000), "{s:?}");
        // Off, it only waits for the next sample or report: no exchange, no ping.
        for (t, a) in &actions {
            if let Action::Run(Step::Exchange) = a {
                let since = t % 60_000;
                assert!(since < 1_000, "an exchange outside a report at {t}");
            }
        }
    }

    #[test]
    fn a_report_lingers_for_its_acknowledgements_at_most_thirty_seconds() {
        let mut l = reporting();
        let (actions, _) = run(&mut l, 0, 59_000, |step, now| match step {
            // Acknowledgements come 2 s after the connection.
            Step::Exchange => Outcome::Exchanged {
                more: false,
                settled: now >= 2_300,
            },
            _ => Outcome::Done,
        });
        let downs = steps_at(&actions, Step::PowerDown);
        assert_eq!(downs.len(), 1);
        assert!((2_300..3_000).contains(&downs[0]), "{downs:?}");
        // Never acknowledged: it polls every half second, then gives up after 30 s.
        let mut l = reporting();
        let (actions, _) = run(&mut l, 0, 59_000, |step, _| match step {
            Step::Exchange => Outcome::Exchanged {
                more: false,
                settled: false,
            },
            _ => Outcome::Done,
        });
        let downs = steps_at(&actions, Step::PowerDown);
        assert_eq!(downs.len(), 1);
        assert!((30_300..31_000).contains(&downs[0]), "{downs:?}");
        let exchanges = steps_at(&actions, Step::Exchange);
        // 100 ms each, every 600 ms, and one after each of the 3 samples: about 53.
        assert!((48..=56).contains(&exchanges.len()), "{}", exchanges.len());
    }

    #[test]
    fn a_failed_report_retries_with_the_modem_off_and_keeps_the_schedule() {
        let mut l = reporting();
        // The network is away for the first 10 s.
        let (actions, changes) = run(&mut l, 0, 125_000, |step, now| match step {
            Step::Open if now < 10_000 => Outcome::Failed("no data link"),
            other => all_well(other, now),
        });
        assert!(matches!(changes[0], Change::LinkFailed("no data link", _)));
        // Every failed attempt escapes and powers down before its retry.
        let runs = steps(&actions);
        assert_eq!(
            runs[..5],
            [
                Step::Clock,
                Step::Open,
                Step::Escape,
                Step::PowerDown,
                Step::Clock
            ]
        );
        // Retries come sooner than the next report; the periodic reports stay on time.
        let clocks = steps_at(&actions, Step::Clock);
        assert!(
            clocks.contains(&60_000) && clocks.contains(&120_000),
            "{clocks:?}"
        );
        assert!(
            clocks.iter().filter(|&&t| t < 60_000).count() >= 3,
            "{clocks:?}"
        );
    }

    #[test]
    fn an_alarm_reports_at_once() {
        let mut l = reporting();
        let (_, _) = run(&mut l, 0, 20_000, all_well);
        assert_eq!(
            l.poll(20_000),
            Action::WaitUntil(23_000),
            "off until the sample"
        );
        l.report_now(20_000);
        assert_eq!(l.poll(20_000), Action::Run(Step::Clock));
        // The periodic report is still due at 60 s.
        let (actions, _) = run(&mut l, 20_000, 61_000, all_well);
        assert_eq!(steps_at(&actions, Step::Clock), [20_000, 60_000]);
    }
}
