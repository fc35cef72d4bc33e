//! What VictoriaMetrics discarded after answering 204: its own counters of rows it
//! dropped (outside the retention, beyond the series limits), read from its `/metrics`.
//! A 2xx from InfluxDB means every point was written (it answers 400 for a partial
//! write); VictoriaMetrics answers 204 and then drops such rows, so the sink compares
//! these counters before and after its writes (`sink/confirm.rs`).

/// Counters of rows VictoriaMetrics dropped after accepting them, summed and by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discards {
    /// `(cause, rows)`: `small_timestamp`, `big_timestamp`, `hourly_series_limit`, …
    pub by_cause: Vec<(String, u64)>,
}

/// Counter names of dropped rows, other than `vm_rows_ignored_total{reason=…}`.
const DROPPED: [(&str, &str); 2] = [
    (
        "vm_hourly_series_limit_rows_dropped_total",
        "hourly_series_limit",
    ),
    (
        "vm_daily_series_limit_rows_dropped_total",
        "daily_series_limit",
    ),
];

impl Discards {
    /// Reads the counters out of a `/metrics` text.
    pub fn parse(metrics: &str) -> Self {
        let mut by_cause = Vec::new();
        for line in metrics.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let cause = if let Some(rest) = name.strip_prefix("vm_rows_ignored_total{reason=\"") {
                rest.split('"').next().map(str::to_string)
            } else {
                DROPPED
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, c)| (*c).to_string())
            };
            if let Some(cause) = cause {
                by_cause.push((cause, value as u64));
            }
        }
        Self { by_cause }
    }

    /// Rows dropped in all.
    pub fn total(&self) -> u64 {
        self.by_cause.iter().map(|(_, n)| n).sum()
    }

    /// What rose since `before`, by cause (`small_timestamp 3, hourly_series_limit 1`).
    pub fn since(&self, before: &Discards) -> String {
        let rose: Vec<String> = self
            .by_cause
            .iter()
            .filter_map(|(cause, n)| {
                let was = before
                    .by_cause
                    .iter()
                    .find(|(c, _)| c == cause)
                    .map_or(0, |(_, n)| *n);
                (*n > was).then(|| format!("{cause} {}", n - was))
            })
            .collect();
        rose.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counters_of_dropped_rows_are_read_and_compared() {
        let before = Discards::parse(
            "vm_rows_added_to_storage_total 3\n\
             vm_rows_ignored_total{reason=\"big_timestamp\"} 1\n\
             vm_rows_ignored_total{reason=\"small_timestamp\"} 2\n\
             vm_hourly_series_limit_rows_dropped_total 0\n\
             vm_daily_series_limit_rows_dropped_total 0\n\
             vm_rows_invalid_total{type=\"influx\"} 9\n",
        );
        assert_eq!(before.total(), 3);
        let after = Discards::parse(
            "vm_rows_ignored_total{reason=\"big_timestamp\"} 1\n\
             vm_rows_ignored_total{reason=\"small_timestamp\"} 5\n\
             vm_hourly_series_limit_rows_dropped_total 4\n\
             vm_daily_series_limit_rows_dropped_total 0\n",
        );
        assert_eq!(after.total() - before.total(), 7);
        assert_eq!(
            after.since(&before),
            "small_timestamp 3, hourly_series_limit 4"
        );
        assert_eq!(Discards::parse("garbage\n\nvm_x 1").total(), 0);
    }
}
