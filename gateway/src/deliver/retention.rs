//! What each commune's database keeps, checked against `validation.max_age` (SPEC §13.3).
//!
//! A database that answers 2xx for a reading and then discards it breaks the
//! acknowledgement's promise: Debian's VictoriaMetrics keeps one month by default and
//! answers 204 while it drops older samples; an InfluxDB retention policy refuses them
//! line by line. So the gateway asks each database what it keeps, and judges readings by
//! an age bound every database keeps: `validation.max_age`, lowered when a database keeps
//! less (by [`MARGIN`], for readings that wait in the buffer while a database is away),
//! and says so in one line at start and in `check-config --connect`; `tenants add` refuses
//! a retention shorter than `max_age`.
//!
//! - InfluxDB 1.x: the default retention policy of the commune's database
//!   (`SHOW RETENTION POLICIES`; `0s` is for ever); a database not made yet is not
//!   judged (the sink holds that commune until it exists).
//! - VictoriaMetrics: its `-retentionPeriod`, from its own `/metrics`
//!   (`flag{name="retentionPeriod",value="1"}`: a number alone is months), one for every
//!   commune.
//! - InfluxDB 2.x/3.x buckets: not asked (said once at start).

use crate::config::{DatabaseConfig, DatabaseKind};
use crate::deliver::tenants::{Influx, TenantsError};
use std::time::Duration;

/// How long readings wait in the buffer at most before the database the bound allows
/// for: the age bound is set this much under the shortest retention.
pub const MARGIN: Duration = Duration::from_secs(86_400);
const DAY: u64 = 86_400;

/// What a database keeps: `None` for ever.
pub type Keeps = Option<Duration>;

/// InfluxDB's duration text (`720h0m0s`, `1h30m`, `0s` for ever); `None` if unreadable.
pub fn parse_influx(text: &str) -> Option<Keeps> {
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().ok()?;
        number.clear();
        total += n * match c {
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            'd' => DAY,
            'w' => 7 * DAY,
            _ => return None,
        };
    }
    if !number.is_empty() {
        return None;
    }
    Some((total > 0).then(|| Duration::from_secs(total)))
}

/// VictoriaMetrics' `-retentionPeriod` (`1`: months, `30d`, `2w`, `100y`, `12h`); a
/// month counts 30 days (the short side of VictoriaMetrics' own count).
pub fn parse_victoria(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "m"),
    };
    let n: u64 = number.parse().ok()?;
    let seconds = match unit {
        "h" => 3_600,
        "d" => DAY,
        "w" => 7 * DAY,
        "y" => 365 * DAY,
        "m" => 30 * DAY,
        _ => return None,
    };
    Some(Duration::from_secs(n * seconds))
}

/// The `retentionPeriod` flag's value in VictoriaMetrics' `/metrics` text.
pub fn victoria_flag(metrics: &str) -> Option<&str> {
    metrics
        .lines()
        .find(|l| l.starts_with("flag{") && l.contains("name=\"retentionPeriod\""))
        .and_then(|l| l.split("value=\"").nth(1))
        .and_then(|v| v.split('"').next())
}

/// A database that keeps less than the configured age bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Short {
    /// The database (`vigie_lyon`, or `VictoriaMetrics (every commune)`).
    pub database: String,
    /// What it keeps.
    pub keeps: Duration,
}

/// The age bound to judge by: `max_age`, or less so that every database in `keeps`
/// holds a reading [`MARGIN`] longer than the bound; at least an hour. With the
/// databases that keep less than `max_age`.
pub fn bound(max_age: Duration, keeps: &[(String, Keeps)]) -> (Duration, Vec<Short>) {
    let short: Vec<Short> = keeps
        .iter()
        .filter_map(|(database, k)| {
            k.filter(|k| *k < max_age + MARGIN).map(|keeps| Short {
                database: database.clone(),
                keeps,
            })
        })
        .collect();
    let bound = short
        .iter()
        .map(|s| {
            s.keeps
                .saturating_sub(MARGIN)
                .max(Duration::from_secs(3_600))
        })
        .fold(max_age, Duration::min);
    (bound, short)
}

/// In words, for log lines and `check-config`: `30 days`, `12 hours`.
pub fn words(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(DAY) {
        format!("{} days", s / DAY)
    } else {
        format!("{} hours", s / 3_600)
    }
}

/// Asks the databases what they keep: each of `tenants`' (InfluxDB 1.x), or the one
/// store (VictoriaMetrics). Empty for InfluxDB 2.x/3.x.
pub async fn ask(
    cfg: &DatabaseConfig,
    tenants: &[&str],
) -> Result<Vec<(String, Keeps)>, TenantsError> {
    if cfg.kind == DatabaseKind::Victoriametrics {
        let client = crate::deliver::client_builder(cfg)?
            .build()
            .map_err(crate::deliver::SetupError::from)?;
        let url = format!("{}/metrics", cfg.url.trim_end_matches('/'));
        let unreachable = |e: reqwest::Error| TenantsError::Unreachable {
            url: cfg.url_shown(),
            error: e.without_url().to_string(),
        };
        let text = crate::deliver::authorize(client.get(&url), cfg)
            .send()
            .await
            .map_err(unreachable)?
            .text()
            .await
            .map_err(unreachable)?;
        let keeps = victoria_flag(&text)
            .and_then(parse_victoria)
            .ok_or_else(|| TenantsError::Refused {
                query: "GET /metrics".into(),
                answer: "no retentionPeriod flag in VictoriaMetrics' metrics".into(),
            })?;
        return Ok(vec![(
            "VictoriaMetrics (every commune)".into(),
            Some(keeps),
        )]);
    }
    let influx = match Influx::new(Some(cfg)) {
        Ok(i) => i,
        Err(TenantsError::Unsupported(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for tenant in tenants {
        let state = influx.state(tenant).await?;
        if let Some(text) = state.retention.filter(|_| state.exists) {
            let keeps = parse_influx(&text).ok_or_else(|| TenantsError::Refused {
                query: "SHOW RETENTION POLICIES".into(),
                answer: format!("unreadable duration {text:?}"),
            })?;
            out.push((state.name, keeps));
        }
    }
    Ok(out)
}

/// At start and at each registry reload: the age bound to judge by, asked of the
/// databases of `config` for `tenants` (ten seconds at most), and said in one line. The configured bound when they
/// cannot be asked (said too: the sink holds a commune whose database does not answer).
pub async fn check(config: &crate::config::Config, tenants: &[&str]) -> Duration {
    let max_age = config.validation.max_age;
    let Some(db) = &config.database else {
        return max_age;
    };
    if db.kind == DatabaseKind::Influxdb && db.api == crate::config::DatabaseApi::V2 {
        tracing::info!(
            "bucket retention not checked (InfluxDB 2.x/3.x): keep every bucket at least validation.max_age"
        );
        return max_age;
    }
    match tokio::time::timeout(Duration::from_secs(10), ask(db, tenants)).await {
        Ok(Ok(keeps)) => {
            let (bound, short) = bound(max_age, &keeps);
            if short.is_empty() {
                tracing::info!(databases = keeps.len(), max_age = %words(max_age), "every database keeps validation.max_age");
            } else {
                tracing::warn!("{}", warning(max_age, bound, &short));
            }
            bound
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, max_age = %words(max_age), "retention not checked; validation.max_age in force");
            max_age
        }
        Err(_) => {
            tracing::warn!(max_age = %words(max_age), "retention not checked (no answer in 10 s); validation.max_age in force");
            max_age
        }
    }
}

/// The line that says a database keeps less than `max_age`, and what the gateway does.
pub fn warning(max_age: Duration, bound: Duration, short: &[Short]) -> String {
    let which: Vec<String> = short
        .iter()
        .map(|s| format!("{} keeps {}", s.database, words(s.keeps)))
        .collect();
    format!(
        "{}, less than validation.max_age ({}) and a day's margin: readings older than {} are \
         refused (stale_timestamp, kept in the quarantine) instead of acknowledged and then \
         discarded; raise the retention (VictoriaMetrics: -retentionPeriod, docs/OPERATIONS.md) \
         or lower validation.max_age",
        which.join(", "),
        words(max_age),
        words(bound),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(DAY);

    #[test]
    fn durations_as_the_databases_write_them() {
        assert_eq!(parse_influx("720h0m0s"), Some(Some(30 * D)));
        assert_eq!(
            parse_influx("1h30m"),
            Some(Some(Duration::from_secs(5_400)))
        );
        assert_eq!(parse_influx("0s"), Some(None));
        assert_eq!(parse_influx("INF"), None);
        assert_eq!(parse_influx("12"), None);
        assert_eq!(parse_victoria("1"), Some(30 * D));
        assert_eq!(parse_victoria("100y"), Some(36_500 * D));
        assert_eq!(parse_victoria("2w"), Some(14 * D));
        assert_eq!(parse_victoria("12h"), Some(D / 2));
        assert_eq!(parse_victoria("3x"), None);
        let metrics =
            "vm_rows 3\nflag{name=\"retentionPeriod\", value=\"1\", is_set=\"false\"} 1\n";
        assert_eq!(victoria_flag(metrics), Some("1"));
        assert_eq!(victoria_flag("vm_rows 3\n"), None);
    }

    #[test]
    fn the_bound_is_kept_by_every_database_with_a_day_to_spare() {
        let max_age = 90 * D;
        let keeps = |k: &[(&str, Keeps)]| -> Vec<(String, Keeps)> {
            k.iter().map(|(n, k)| (n.to_string(), *k)).collect()
        };
        // For ever, and long enough: the configured bound.
        let (b, short) = bound(max_age, &keeps(&[("a", None), ("b", Some(365 * D))]));
        assert_eq!((b, short.len()), (max_age, 0));
        // One commune keeps 30 days: 29 for everyone, and it is named.
        let (b, short) = bound(max_age, &keeps(&[("a", None), ("b", Some(30 * D))]));
        assert_eq!(b, 29 * D);
        assert_eq!(
            short,
            [Short {
                database: "b".into(),
                keeps: 30 * D
            }]
        );
        // Exactly max_age leaves no margin: lowered by a day too.
        assert_eq!(bound(max_age, &keeps(&[("a", Some(max_age))])).0, 89 * D);
        // An hour at least.
        assert_eq!(
            bound(max_age, &keeps(&[("a", Some(Duration::from_secs(3_600)))])).0,
            Duration::from_secs(3_600)
        );
        let line = warning(max_age, 29 * D, &short);
        assert!(
            line.contains("b keeps 30 days") && line.contains("older than 29 days"),
            "{line}"
        );
    }
}
