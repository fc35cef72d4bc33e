//! What the commands print and parse besides their own words: aligned tables and UTC
//! times.

/// `rows` as columns as wide as their widest cell (ids go up to 32 characters, site names
/// further): the last column unpadded.
pub fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < N {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A UTC time that does not parse or fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimeError {
    /// Not a date or an RFC 3339 time.
    #[error("{0}: expected 2026-01-01 or 2026-01-01T12:00:00Z")]
    Format(humantime::TimestampError),
    /// Before the Unix epoch.
    #[error("before 1970")]
    BeforeEpoch,
    /// Past what a frame's time holds.
    #[error("after 2106")]
    AfterU32,
}

/// A UTC time for `--from`, `--to`, `--before`: `2026-01-01` (midnight) or
/// `2026-01-01T12:00:00Z`.
pub fn parse_utc(text: &str) -> Result<u32, TimeError> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    let t = humantime::parse_rfc3339(&full).map_err(TimeError::Format)?;
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| TimeError::BeforeEpoch)?
        .as_secs();
    u32::try_from(secs).map_err(|_| TimeError::AfterU32)
}

/// A value of a core enum, checked by clap against its names (so help, man pages and
/// completions list them) and parsed by the core.
pub fn choice<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names).try_map(|s| s.parse::<T>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_hold_long_names() {
        let row = |a: &str, b: &str, c: &str| [a.to_string(), b.to_string(), c.to_string()];
        let t = table(&[
            row("TENANT", "DEVICE", "SITE"),
            row("villefranche-sur-saone", "bin-0001", "Place des Arts"),
            row("lyon", "aq-1", ""),
        ]);
        let starts: Vec<Option<usize>> = t
            .lines()
            .zip(["DEVICE", "bin-0001", "aq-1"])
            .map(|(l, d)| l.find(d))
            .collect();
        assert_eq!(starts, [Some(24); 3], "{t}");
        assert!(t.lines().all(|l| !l.ends_with(' ')), "{t}");
    }
}
