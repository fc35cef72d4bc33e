//! What a database answer means, and how long to wait before trying again.
//!
//! Classified by exact status, not by class: InfluxDB 2.0.x once answered 500 to partial
//! writes, and 1.x answers 400 for a whole batch that holds one bad line.

use std::time::Duration;

/// What to do with a batch after the database answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stored.
    Done,
    /// Some line is bad (400, 422) or the body too large (413): split the batch to isolate
    /// it, quarantine the bad line, store the rest.
    Split,
    /// Wrong URL, credentials or database name (401, 403, 404): keep the data, alert, retry
    /// slowly until an operator fixes the configuration.
    Config,
    /// Overload or outage (429, 5xx, timeouts, connection errors): retry with backoff,
    /// honouring `Retry-After` when given.
    Retry {
        /// Server-requested delay.
        after: Option<Duration>,
    },
}

/// Classifies an HTTP answer.
pub fn classify(status: u16, retry_after: Option<&str>) -> Action {
    match status {
        200..=299 => Action::Done,
        400 | 413 | 422 => Action::Split,
        401 | 403 | 404 => Action::Config,
        _ => Action::Retry {
            after: retry_after.and_then(parse_retry_after),
        },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by InfluxDB; ignored).
fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

/// Exponential backoff with "full jitter": a delay in `[base/2, base]` where
/// `base = min(max, min_delay · 2^attempt)`; `unit` is a random number in `[0, 1)`.
pub fn backoff(attempt: u32, min_delay: Duration, max_delay: Duration, unit: f64) -> Duration {
    let base = min_delay
        .saturating_mul(1u32 << attempt.min(20))
        .min(max_delay);
    base.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// Whether a database's answer `detail` says it dropped every one of `lines` lines for
/// its retention (InfluxDB 1.x: `partial write: points beyond retention policy
/// dropped=N`, N the whole batch).
pub fn all_beyond_retention(detail: &str, lines: usize) -> bool {
    detail
        .split("points beyond retention policy dropped=")
        .nth(1)
        .and_then(|rest| {
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            n.parse::<usize>().ok()
        })
        .is_some_and(|n| n == lines)
}

#[cfg(test)]
#[test]
fn a_batch_dropped_whole_for_retention_is_told_from_a_partial_one() {
    let answer = |n: usize| {
        format!(
            "HTTP 400: {{\"error\":\"partial write: points beyond retention policy dropped={n}\"}}"
        )
    };
    assert!(all_beyond_retention(&answer(40), 40));
    assert!(!all_beyond_retention(&answer(2), 40));
    assert!(!all_beyond_retention("HTTP 400: unable to parse", 40));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(classify(204, None), Action::Done);
        assert_eq!(classify(400, None), Action::Split);
        assert_eq!(classify(422, None), Action::Split);
        assert_eq!(classify(413, None), Action::Split);
        for s in [401, 403, 404] {
            assert_eq!(classify(s, None), Action::Config);
        }
        assert_eq!(
            classify(503, Some("7")),
            Action::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            classify(429, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Action::Retry { after: None }
        );
        assert_eq!(classify(500, None), Action::Retry { after: None });
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(10));
        assert_eq!(backoff(0, min, max, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(0, min, max, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(3, min, max, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(30, min, max, 1.0), max);
        assert!(backoff(30, min, max, 0.3) < max);
    }
}
