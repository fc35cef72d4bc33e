//! The alert messages waiting to go: bounded, each retried with a jittered back-off until
//! the receiving server takes it, refuses it for good, or it is a day old. Messages to one
//! destination go in order (an alert's end never before its start); a destination that
//! fails holds back only its own.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;
use vigie_core::deliver::retry::backoff;

/// Messages kept at most; beyond, the oldest is given up (and counted).
pub const CAPACITY: usize = 1_000;
/// A message not sent within this is given up.
const MAX_AGE_MS: u64 = 24 * 3_600_000;
const RETRY_MIN: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(30 * 60);

/// Where a message goes.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub enum To {
    /// These addresses, one e-mail.
    Email(Vec<String>),
    /// This webhook (its key is looked up by URL when sent).
    Webhook(String),
}

/// A webhook by its host only: the URL may hold a token.
impl std::fmt::Debug for To {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            To::Email(to) => f.debug_tuple("Email").field(to).finish(),
            To::Webhook(url) => {
                let host = url
                    .split("://")
                    .nth(1)
                    .and_then(|r| r.split(['/', '?']).next());
                f.debug_tuple("Webhook")
                    .field(&host.unwrap_or_default())
                    .finish()
            }
        }
    }
}

impl To {
    /// `email` or `webhook`.
    pub fn channel(&self) -> &'static str {
        match self {
            To::Email(_) => "email",
            To::Webhook(_) => "webhook",
        }
    }
}

/// One message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// Its number in the outbox.
    pub id: u64,
    /// Where.
    pub to: To,
    /// E-mail subject.
    pub subject: String,
    /// E-mail text, or webhook JSON.
    pub body: String,
    made_ms: u64,
    attempts: u32,
    next_ms: u64,
}

/// The outbox.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Outbox {
    queue: VecDeque<Pending>,
    next_id: u64,
    #[serde(skip)]
    dropped: Vec<&'static str>,
}

impl Outbox {
    /// Adds a message; returns the one given up to make room, if any.
    pub fn push(&mut self, to: To, subject: String, body: String, now_ms: u64) -> Option<Pending> {
        let dropped = (self.queue.len() >= CAPACITY)
            .then(|| self.queue.pop_front())
            .flatten();
        if let Some(d) = &dropped {
            self.dropped.push(d.to.channel());
        }
        self.next_id += 1;
        self.queue.push_back(Pending {
            id: self.next_id,
            to,
            subject,
            body,
            made_ms: now_ms,
            attempts: 0,
            next_ms: now_ms,
        });
        dropped
    }

    /// The messages due at `now_ms` whose destination has no earlier message waiting.
    pub fn due(&self, now_ms: u64) -> Vec<Pending> {
        let mut held: Vec<&To> = Vec::new();
        let mut out = Vec::new();
        for p in &self.queue {
            if held.contains(&&p.to) {
                continue;
            }
            held.push(&p.to);
            if p.next_ms <= now_ms {
                out.push(p.clone());
            }
        }
        out
    }

    /// Message `id` went.
    pub fn sent(&mut self, id: u64) {
        self.queue.retain(|p| p.id != id);
    }

    /// Message `id` failed: given up (returns true) when `permanent` or a day old, else
    /// retried after a back-off (`unit` in `[0, 1)` for its jitter).
    pub fn failed(&mut self, id: u64, permanent: bool, now_ms: u64, unit: f64) -> bool {
        let Some(p) = self.queue.iter_mut().find(|p| p.id == id) else {
            return false;
        };
        if permanent || now_ms.saturating_sub(p.made_ms) >= MAX_AGE_MS {
            self.sent(id);
            return true;
        }
        p.attempts += 1;
        p.next_ms = now_ms + backoff(p.attempts - 1, RETRY_MIN, RETRY_MAX, unit).as_millis() as u64;
        false
    }

    /// How many messages of `channel` were pushed out of a full outbox since last asked.
    pub fn take_dropped(&mut self, channel: &str) -> u64 {
        let n = self.dropped.iter().filter(|c| **c == channel).count();
        self.dropped.retain(|c| *c != channel);
        n as u64
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(o: &mut Outbox, now_ms: u64) -> Option<Pending> {
        o.push(
            To::Email(vec!["a@b.fr".into()]),
            "s".into(),
            "b".into(),
            now_ms,
        )
    }

    fn ids(o: &Outbox, now_ms: u64) -> Vec<u64> {
        o.due(now_ms).iter().map(|p| p.id).collect()
    }

    #[test]
    fn a_failed_message_waits_longer_each_time_and_is_given_up_after_a_day() {
        let mut o = Outbox::default();
        mail(&mut o, 0);
        assert_eq!(ids(&o, 0), [1]);
        assert!(!o.failed(1, false, 0, 0.0));
        assert!(ids(&o, 4_999).is_empty(), "at least half of 10 s");
        assert_eq!(ids(&o, 5_000), [1]);
        assert!(!o.failed(1, false, 5_000, 0.99));
        assert!(ids(&o, 24_000).is_empty(), "twice as long");
        assert!(o.failed(1, false, MAX_AGE_MS, 0.0), "a day old");
        assert_eq!(o.len(), 0);
        mail(&mut o, 0);
        assert!(o.failed(2, true, 0, 0.0), "refused for good");
    }

    #[test]
    fn a_failing_destination_holds_back_only_its_own_messages_in_order() {
        let mut o = Outbox::default();
        mail(&mut o, 0);
        o.push(
            To::Webhook("https://h/".into()),
            String::new(),
            "{}".into(),
            0,
        );
        mail(&mut o, 0);
        assert_eq!(ids(&o, 0), [1, 2], "the second e-mail waits for the first");
        assert!(!o.failed(1, false, 0, 0.0));
        assert_eq!(ids(&o, 1), [2], "the webhook goes on");
        o.sent(2);
        assert!(ids(&o, 1).is_empty());
        o.sent(1);
        assert_eq!(ids(&o, 1), [3]);
    }

    #[test]
    fn a_webhook_shows_its_host_only() {
        let to = To::Webhook("https://hooks.example/t0ken?k=s3cret".into());
        assert_eq!(format!("{to:?}"), r#"Webhook("hooks.example")"#);
    }

    #[test]
    fn a_full_outbox_gives_up_its_oldest_and_counts_it() {
        let mut o = Outbox::default();
        for i in 0..CAPACITY as u64 {
            assert!(mail(&mut o, i).is_none());
        }
        assert_eq!(mail(&mut o, 5_000).map(|p| p.made_ms), Some(0));
        assert_eq!(o.len(), CAPACITY);
        assert_eq!((o.take_dropped("email"), o.take_dropped("email")), (1, 0));
    }
}
