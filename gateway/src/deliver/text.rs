//! Line protocol on its way to a database: the records' lines as the buffer holds them,
//! shared with the request body that carries them.
//!
//! Bytes, not `str`: the ingest worker wrote them from text and a CRC guards each record,
//! so checking them for UTF-8 again on every read was 2.3 % of a drain's instructions
//! (docs/PERFORMANCE.md). A line that is not UTF-8 anyway (a corruption the CRC missed)
//! goes to the database like any other line: kept if it keeps it, else refused into the
//! database quarantine byte for byte. Before, the whole record went to the quarantine.
//! Shared, not copied: a request body made of the lines is a second reference to them
//! ([`Text::body`]), where a copy of each batch was 1 % of the instructions.

use bytes::Bytes;
use std::sync::Arc;

/// Newline-terminated lines of line protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(Arc<Vec<u8>>);

impl Text {
    /// Empty, with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        Vec::with_capacity(bytes).into()
    }

    /// Appends lines (each ending in `\n`).
    pub fn push(&mut self, lines: &[u8]) {
        Arc::make_mut(&mut self.0).extend_from_slice(lines);
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No lines.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A request body of these lines, without copying them.
    pub fn body(&self) -> Bytes {
        Bytes::from_owner(self.clone())
    }

    /// The lines without their `\n` (line protocol has no `\r`): what `str::lines` yields.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        let text = self
            .as_bytes()
            .strip_suffix(b"\n")
            .unwrap_or(self.as_bytes());
        text.split(|b| *b == b'\n')
            .filter(move |_| !self.is_empty())
    }

    /// As text for a log line or a test: a byte that is not UTF-8 shows as `�`.
    pub fn lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl From<Vec<u8>> for Text {
    fn from(bytes: Vec<u8>) -> Self {
        Self(Arc::new(bytes))
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        text.into_bytes().into()
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        text.as_bytes().to_vec().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_as_str_lines_does() {
        for text in ["", "a\n", "a\nb\n", "a\n\nb\n", "a\nb", "\n"] {
            let t = Text::from(text);
            let ours: Vec<&[u8]> = t.lines().collect();
            let std: Vec<&[u8]> = text.lines().map(str::as_bytes).collect();
            assert_eq!(ours, std, "{text:?}");
        }
    }

    #[test]
    fn a_body_shares_the_lines_and_pushing_after_it_copies_them_once() {
        let mut t = Text::from("a 1\n");
        let body = t.body();
        assert_eq!(&body[..], b"a 1\n");
        t.push(b"b 2\n");
        assert_eq!(&body[..], b"a 1\n", "the body keeps what it was given");
        assert_eq!(t.as_bytes(), b"a 1\nb 2\n");
    }
}
