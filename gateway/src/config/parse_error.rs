//! Where a configuration or registry text is wrong, said without ever quoting it: a line
//! may hold a password, a token or a device key.

/// Where a config text is wrong and why: line, column, the key on that line and the
/// parser's reason, never the text of the line or a value (it may hold a password, a
/// token or a device key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}{}: {reason}", key.as_ref().map(|k| format!(" (`{k}`)")).unwrap_or_default())]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The key the line sets, when it reads as `key = …`.
    pub key: Option<String>,
    /// The parser's reason, values left out.
    pub reason: String,
}

impl ParseError {
    /// The error at byte range `span` of `text`, for `message` (the parser's own, which
    /// for `toml` and `toml_edit` never holds the line but for serde may quote a value:
    /// anything quoted is left out).
    pub fn at(text: &str, span: Option<std::ops::Range<usize>>, message: &str) -> Self {
        let start = span.map_or(0, |s| s.start.min(text.len()));
        let start = (0..=start)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        let before = &text[..start];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let key = text[line_start..]
            .split_once('=')
            .map(|(k, _)| k.trim())
            .filter(|k| looks_like_a_name(k))
            .map(String::from);
        Self {
            key,
            line: before.matches('\n').count() + 1,
            column: before.chars().count()
                - before
                    .rfind('\n')
                    .map_or(0, |i| before[..=i].chars().count())
                + 1,
            reason: never_from(text, &without_quoted(&unknown_name_out(message.trim()))),
        }
    }
}

/// serde's `unknown field `NAME`, expected …` (and `unknown variant`) with NAME left out
/// unless it reads as one of ours; NAME may itself hold backticks, so it runs to the last
/// "`, " of the message.
fn unknown_name_out(message: &str) -> String {
    for head in ["unknown field `", "unknown variant `"] {
        if let Some(rest) = message.strip_prefix(head)
            && let Some(end) = rest.rfind("`, ").or_else(|| rest.rfind('`'))
        {
            let name = &rest[..end];
            let shown = if looks_like_a_name(name) { name } else { "…" };
            return format!("{head}{shown}{}", &rest[end..]);
        }
    }
    message.to_string()
}

/// `reason` with every run of 16 or more letters and digits that `text` holds replaced by
/// `…`: the last guard, whatever a parser's message quotes (a key is 32 hex digits).
fn never_from(text: &str, reason: &str) -> String {
    let mut out = reason.to_string();
    for run in reason
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|r| r.len() >= 16 && text.contains(*r))
    {
        out = out.replace(run, "…");
    }
    out
}

/// `message` with the values serde quotes replaced by `…`: a string in double quotes
/// (`invalid type: string "…", expected u32`), a number, character or boolean in
/// backticks (`integer `…``). Field names in backticks stay (`unknown field `pasword``)
/// when they read as one of ours ([`looks_like_a_name`]): an unknown "field" may be a key
/// or a password pasted on a line of its own (found by `fuzz-gateway`).
fn without_quoted(message: &str) -> String {
    const VALUES: [&str; 4] = ["integer ", "floating point ", "character ", "boolean "];
    let mut out = String::with_capacity(message.len());
    // The quote that opened, whether it holds a value, and what it holds so far.
    let mut open: Option<(char, bool, String)> = None;
    for c in message.chars() {
        match &mut open {
            Some((q, value, held)) if c == *q => {
                if !*value && looks_like_a_name(held) {
                    out.push_str(held);
                } else {
                    out.push('…');
                }
                out.push(c);
                open = None;
            }
            Some((_, _, held)) => held.push(c),
            None => {
                if c == '"' || c == '`' {
                    let value = c == '"' || VALUES.iter().any(|v| out.ends_with(v));
                    open = Some((c, value, String::new()));
                }
                out.push(c);
            }
        }
    }
    if open.is_some() {
        out.push('…');
    }
    out
}

/// A configuration or registry field name as this schema spells them (`max_age`,
/// `broker_access`): lowercase, at most 40 characters, no run of 16 letters or digits.
/// Anything else in a key's place is not shown: it may be a secret.
fn looks_like_a_name(s: &str) -> bool {
    s.len() <= 40
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c))
        && s.split(|c: char| !c.is_ascii_alphanumeric())
            .all(|run| run.len() < 16)
}

#[cfg(test)]
#[test]
fn serde_values_are_left_out_field_names_kept() {
    assert_eq!(
        without_quoted("invalid type: string \"s3cret\", expected u32"),
        "invalid type: string \"…\", expected u32"
    );
    assert_eq!(
        without_quoted("invalid type: integer `1234`, expected a string"),
        "invalid type: integer `…`, expected a string"
    );
    assert_eq!(
        without_quoted("unknown field `pasword`, expected one of `password`"),
        "unknown field `pasword`, expected one of `password`"
    );
    assert_eq!(without_quoted("unterminated \"abc"), "unterminated \"…");
    // A key or password where a field name goes is not one of ours: left out.
    assert_eq!(
        without_quoted("unknown field `00112233445566778899aabbccddeeff`, expected `device`"),
        "unknown field `…`, expected `device`"
    );
    assert_eq!(
        without_quoted("unknown field `1JJJJJJJJJJJJJJJJJJ`"),
        "unknown field `…`"
    );
    let e = ParseError::at(
        "00112233445566778899aabbccddeeff = 1\n",
        Some(0..1),
        "unknown",
    );
    assert_eq!(e.key, None);
    let e = ParseError::at(
        "k`p,act77777777777777z2ed\n",
        Some(0..1),
        "unknown field `k`p,act77777777777777z2ed`, expected `device`",
    );
    assert_eq!(e.reason, "unknown field `…`, expected `device`");
    let e = ParseError::at("max_age = \"x\"\n", Some(0..1), "bad");
    assert_eq!(e.key.as_deref(), Some("max_age"));
}
