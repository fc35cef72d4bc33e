//! Per-tenant delivery state, pure (time passed in): which tenants flow with the main
//! cursor and which are behind it, from where, and when to try them again.
//!
//! The sink reads the buffer once, in order (the *head*). A tenant whose write fails is
//! put *behind*: its records stay in the buffer from its first unstored one (`from`), the
//! head skips its records, and it is retried on its own backoff by a second cursor that
//! reads only its records from `from` up to the head. When that cursor reaches the head
//! the tenant flows again. The buffer may drop segments before the smallest of the head
//! and every `from` ([`Lanes::watermark`]). The state persists (`sink.state`), so after a
//! restart nothing stored is written or counted again (but the batch in flight at a
//! crash).

use crate::store::buffer::Position;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A tenant behind the head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Behind {
    /// Its first record not yet stored.
    pub from: Position,
    /// Failed attempts in a row.
    pub attempt: u32,
    /// Unix ms of the next attempt.
    pub next_try_ms: u64,
    /// The last error, while it keeps failing.
    pub error: Option<String>,
    /// Unix ms of the first failure.
    pub since_ms: u64,
}

/// The sink's persisted progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lanes {
    /// Where the main cursor reads next (everything before it is stored or behind).
    pub head: Option<Position>,
    /// Tenants behind the head.
    pub behind: BTreeMap<String, Behind>,
}

impl Lanes {
    /// True when `tenant`'s records are skipped by the head.
    pub fn is_behind(&self, tenant: &str) -> bool {
        self.behind.contains_key(tenant)
    }

    /// A write of `tenant`'s records starting at `from` failed; retry after `wait`.
    pub fn failed(
        &mut self,
        tenant: &str,
        from: Position,
        error: String,
        wait: Duration,
        now_ms: u64,
    ) {
        let next = now_ms + wait.as_millis() as u64;
        match self.behind.get_mut(tenant) {
            Some(b) => {
                b.from = b.from.min(from);
                b.attempt = b.attempt.saturating_add(1);
                b.next_try_ms = next;
                b.error = Some(error);
            }
            None => {
                self.behind.insert(
                    tenant.to_string(),
                    Behind {
                        from,
                        attempt: 1,
                        next_try_ms: next,
                        error: Some(error),
                        since_ms: now_ms,
                    },
                );
            }
        }
    }

    /// A behind tenant stored everything before `upto` (its next unstored record, or the
    /// head). Returns true if it flows again.
    pub fn caught_up_to(&mut self, tenant: &str, upto: Position) -> bool {
        let head = self.head;
        let Some(b) = self.behind.get_mut(tenant) else {
            return true;
        };
        b.from = b.from.max(upto);
        b.attempt = 0;
        b.error = None;
        if head.is_some_and(|h| b.from >= h) {
            self.behind.remove(tenant);
            return true;
        }
        false
    }

    /// Behind tenants whose next attempt is due, oldest position first.
    pub fn due(&self, now_ms: u64) -> Vec<String> {
        let mut due: Vec<_> = self
            .behind
            .iter()
            .filter(|(_, b)| b.next_try_ms <= now_ms)
            .map(|(t, b)| (b.from, t.clone()))
            .collect();
        due.sort();
        due.into_iter().map(|(_, t)| t).collect()
    }

    /// Milliseconds until the next attempt of a behind tenant, if any.
    pub fn next_attempt_in(&self, now_ms: u64) -> Option<u64> {
        self.behind
            .values()
            .map(|b| b.next_try_ms.saturating_sub(now_ms))
            .min()
    }

    /// True when the positions differ from `other`'s (what must be persisted; attempts
    /// and errors are not worth an fsync).
    pub fn moved_from(&self, other: &Self) -> bool {
        let positions = |l: &Self| {
            (
                l.head,
                l.behind
                    .iter()
                    .map(|(t, b)| (t.clone(), b.from))
                    .collect::<Vec<_>>(),
            )
        };
        positions(self) != positions(other)
    }

    /// Everything before this may leave the buffer.
    pub fn watermark(&self) -> Option<Position> {
        let lowest_behind = self.behind.values().map(|b| b.from).min();
        match (self.head, lowest_behind) {
            (Some(h), Some(b)) => Some(h.min(b)),
            (h, None) => h,
            (None, b) => b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Position {
        Position { segment: 1, offset }
    }

    #[test]
    fn a_failing_tenant_falls_behind_holds_the_watermark_and_rejoins() {
        let mut l = Lanes {
            head: Some(at(100)),
            ..Lanes::default()
        };
        l.failed(
            "lyon",
            at(40),
            "HTTP 404".into(),
            Duration::from_secs(1),
            1_000,
        );
        l.head = Some(at(500));
        assert!(l.is_behind("lyon") && !l.is_behind("nice"));
        assert_eq!(l.watermark(), Some(at(40)));
        assert!(l.due(1_500).is_empty());
        assert_eq!(l.next_attempt_in(1_500), Some(500));
        assert_eq!(l.due(2_000), vec!["lyon".to_string()]);
        l.failed(
            "lyon",
            at(40),
            "HTTP 404".into(),
            Duration::from_secs(2),
            2_000,
        );
        assert_eq!(l.behind["lyon"].attempt, 2);
        assert_eq!(l.behind["lyon"].since_ms, 1_000, "since the first failure");
        assert!(!l.caught_up_to("lyon", at(300)), "part of the way");
        assert_eq!(l.watermark(), Some(at(300)));
        assert!(l.caught_up_to("lyon", at(500)), "at the head");
        assert_eq!(l.watermark(), Some(at(500)));
        assert!(l.behind.is_empty());
    }
}
