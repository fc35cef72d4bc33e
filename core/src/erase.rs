//! What `erase --tenant T [--device D] [--before TIME]` removes, decided without I/O: which
//! readings (lines of line protocol, docs/SCHEMA.md) and which quarantined frames it
//! covers. The shells that rewrite the buffer, the quarantine and the line-protocol files,
//! and the database deletes, all ask this one [`Scope`].

/// The readings an erasure covers: a tenant's, or one of its devices', optionally only
/// those measured before a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Tenant id.
    pub tenant: String,
    /// Device id; `None`: every device of the tenant.
    pub device: Option<String>,
    /// Unix seconds: only readings measured before it; `None`: all of them.
    pub before_s: Option<u32>,
}

impl Scope {
    /// Whether a reading of `tenant`/`device` whose timestamp is `time_ms` (the reading's
    /// second × 1000 + the frame counter's milliseconds, SCHEMA.md) is covered.
    pub fn covers(&self, tenant: &str, device: &str, time_ms: u64) -> bool {
        tenant == self.tenant
            && self.device.as_deref().is_none_or(|d| d == device)
            && self.before_s.is_none_or(|b| time_ms < u64::from(b) * 1000)
    }

    /// Whether a line of `tenant`'s line protocol is covered: its `device` tag and its
    /// millisecond timestamp. A line without a readable timestamp counts as covered unless
    /// the scope has a time bound (the gateway writes none such).
    pub fn covers_line(&self, tenant: &str, line: &str) -> bool {
        let device = device_tag(line).unwrap_or_default();
        match timestamp_ms(line) {
            Some(ms) => self.covers(tenant, device, ms),
            None => self.before_s.is_none() && self.covers(tenant, device, 0),
        }
    }

    /// The lines of `tenant`'s `lines` (each ending in `\n`) this scope does not cover,
    /// and how many it removed.
    pub fn keep_lines(&self, tenant: &str, lines: &str) -> (String, usize) {
        let mut kept = String::with_capacity(lines.len());
        let mut removed = 0;
        for line in lines.lines().filter(|l| !l.is_empty()) {
            if self.covers_line(tenant, line) {
                removed += 1;
            } else {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        (kept, removed)
    }

    /// Whether a quarantined MQTT frame (`vigie/v1/<tenant>/<device>/…`, received at
    /// `received_ms`) is covered. A rejected frame's readings are not trusted (it may be
    /// forged, or sealed with a key the gateway does not hold), so the time bound applies
    /// to when it arrived: a frame received before the time holds nothing measured after.
    pub fn covers_frame(&self, topic: &str, received_ms: u64) -> bool {
        let mut levels = topic.split('/').skip(2);
        let (tenant, device) = (levels.next(), levels.next());
        tenant == Some(self.tenant.as_str())
            && self.device.as_deref().is_none_or(|d| Some(d) == device)
            && self
                .before_s
                .is_none_or(|b| received_ms < u64::from(b) * 1000)
    }
}

/// The value of the `device` tag of a line (ids need no escaping, SPEC §7).
fn device_tag(line: &str) -> Option<&str> {
    let key = series_key(line);
    let mut tags = split_unescaped(key, ',').skip(1);
    tags.find_map(|t| t.strip_prefix("device="))
}

/// Measurement and tags: the line up to its first unescaped space.
fn series_key(line: &str) -> &str {
    split_unescaped(line, ' ').next().unwrap_or(line)
}

/// The timestamp: the last space-separated token (field strings may hold spaces, the
/// timestamp never does).
fn timestamp_ms(line: &str) -> Option<u64> {
    line.rsplit(' ').next()?.parse().ok()
}

/// Splits `s` at each `sep` that no backslash escapes.
fn split_unescaped(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let text = rest?;
        let mut escaped = false;
        for (i, c) in text.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                c if c == sep && !escaped => {
                    rest = Some(&text[i + c.len_utf8()..]);
                    return Some(&text[..i]);
                }
                _ => escaped = false,
            }
        }
        rest = None;
        Some(text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(device: Option<&str>, before_s: Option<u32>) -> Scope {
        Scope {
            tenant: "lyon".into(),
            device: device.map(String::from),
            before_s,
        }
    }

    const A: &str =
        "air_quality,device=aq-1,site=Place\\ Bellecour\\,\\ 2e,tenant=lyon pm25=12.3 10007\n";
    const B: &str = "device_status,device=aq-2,tenant=lyon firmwareVersion=\"1 2\" 20001\n";
    const C: &str = "air_quality,device=aq-1,tenant=lyon pm25=1 30000\n";

    #[test]
    fn lines_by_device_and_time() {
        let lines = format!("{A}{B}{C}");
        // The whole tenant.
        assert_eq!(
            scope(None, None).keep_lines("lyon", &lines),
            (String::new(), 3)
        );
        // Another tenant's records are not touched.
        assert_eq!(
            scope(None, None).keep_lines("paris", &lines),
            (lines.clone(), 0)
        );
        // One device: escaped spaces and commas in other tags do not confuse it.
        assert_eq!(
            scope(Some("aq-1"), None).keep_lines("lyon", &lines),
            (B.to_string(), 2)
        );
        // Before 30 s: the reading of second 10 goes, the one of second 30 stays; a
        // timestamp with counter milliseconds (10007) belongs to its second.
        assert_eq!(
            scope(Some("aq-1"), Some(30)).keep_lines("lyon", &lines),
            (format!("{B}{C}"), 1)
        );
        assert_eq!(
            scope(None, Some(20)).keep_lines("lyon", &lines),
            (format!("{B}{C}"), 1)
        );
        assert_eq!(
            scope(None, Some(21)).keep_lines("lyon", &lines),
            (C.to_string(), 2)
        );
    }

    #[test]
    fn lines_without_a_timestamp_only_go_with_the_whole_device() {
        let line = "air_quality,device=aq-1,tenant=lyon pm25=1\n";
        assert_eq!(scope(Some("aq-1"), None).keep_lines("lyon", line).1, 1);
        assert_eq!(scope(Some("aq-1"), Some(5)).keep_lines("lyon", line).1, 0);
    }

    #[test]
    fn quarantined_frames_by_topic_and_arrival() {
        let s = scope(Some("aq-1"), Some(100));
        assert!(s.covers_frame("vigie/v1/lyon/aq-1/up", 99_999));
        assert!(!s.covers_frame("vigie/v1/lyon/aq-1/up", 100_000));
        assert!(!s.covers_frame("vigie/v1/lyon/aq-2/up", 0));
        assert!(!s.covers_frame("vigie/v1/paris/aq-1/up", 0));
        // A malformed topic of the tenant still goes with a tenant-wide erasure.
        assert!(scope(None, None).covers_frame("vigie/v1/lyon/Bad Id/up/extra", 0));
        assert!(!scope(None, None).covers_frame("other", 0));
    }

    #[test]
    fn splitting_honours_escapes() {
        let parts: Vec<_> = split_unescaped("a\\,b,c\\\\,d", ',').collect();
        assert_eq!(parts, ["a\\,b", "c\\\\", "d"]);
        assert_eq!(device_tag(A), Some("aq-1"));
        assert_eq!(timestamp_ms(B.trim_end()), Some(20001));
    }
}
