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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not connected: start again (network time) at this time.
    Down { at: u64 },
    /// This step next, at once.
    Next(Step),
    /// Connected; the last exchange ended at `last`; `more` frames wait.
    Up { last: u64, more: bool },
    /// A step failed: escape at this time.
    Escape { at: u64 },
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
            self.next_sample = Some(now + self.schedule.interval_ms);
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
            Phase::Up { last, more } => {
                let idle_until = last + self.schedule.idle_ms;
                if more || now >= idle_until {
                    return Action::Run(Step::Exchange);
                }
                idle_until
            }
            Phase::Down { at } | Phase::Escape { at } => at,
        };
        Action::WaitUntil(self.next_sample.map_or(wake, |s| s.min(wake)))
    }

    /// `step` ended at `now` with `outcome`; returns what changed, if anything.
    pub fn done(&mut self, step: Step, outcome: Outcome, now: u64) -> Option<Change> {
        if let Outcome::Failed(why) = outcome {
            if step == Step::Escape {
                // Nothing more to undo: start again after the silence.
                self.phase = Phase::Down {
                    at: now + SILENCE_MS,
                };
                return None;
            }
            let (wait_ms, change) = if self.is_up() {
                (SILENCE_MS, Change::Reconnecting(why))
            } else {
                let jitter = self.schedule.seed ^ (now as u32);
                let wait_s = self.backoff.next_delay_s(jitter);
                (u64::from(wait_s) * 1000, Change::LinkFailed(why, wait_s))
            };
            self.phase = Phase::Escape { at: now + wait_ms };
            return Some(change);
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
                (
                    Phase::Up {
                        last: now,
                        more: true,
                    },
                    Some(Change::Connected),
                )
            }
            (Step::Exchange, Outcome::Exchanged { more }) => (Phase::Up { last: now, more }, None),
            (Step::Exchange, _) => (
                Phase::Up {
                    last: now,
                    more: false,
                },
                None,
            ),
            (Step::Escape, _) => (
                Phase::Down {
                    at: now + SILENCE_MS,
                },
                None,
            ),
        };
        self.phase = phase;
        change
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
        let steps: Vec<Step> = actions
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Run(s) => Some(*s),
                _ => None,
            })
            .collect();
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
        let (actions, changes) = run(&mut l, 0, 95_000, |step, _| match step {
            Step::Exchange => Outcome::Exchanged { more: false },
            _ => Outcome::Done,
        });
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
        let (actions, _) = run(&mut quiet, 0, 95_000, |step, _| match step {
            Step::Exchange => Outcome::Exchanged { more: false },
            _ => Outcome::Done,
        });
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
        l.done(Step::Exchange, Outcome::Exchanged { more: true }, now);
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
}
