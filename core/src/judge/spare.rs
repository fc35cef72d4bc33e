//! Line buffers of durable frames, kept for the next frames' lines.

/// The line buffers of accepted frames, once their batch is durable, for the frames of
/// the next batches: a frame's lines were an allocation and a free per frame, in glibc's
/// slow path as a batch frees them all at once (with them the allocator's share of a
/// drain's instructions fell from 5.1 % to 2.4 %, docs/PERFORMANCE.md, "Eighth pass").
/// Bounded: at most [`Self::KEPT`] buffers of at most [`Self::ROOM`] bytes each.
#[derive(Debug, Default)]
pub struct SpareLines(Vec<String>);

impl SpareLines {
    /// Buffers kept at most (a batch's frames).
    pub const KEPT: usize = 4096;
    /// Largest buffer kept (a frame of four readings); larger ones are freed.
    pub const ROOM: usize = 1024;

    /// An empty buffer, kept or new.
    pub fn take(&mut self) -> String {
        self.0.pop().unwrap_or_default()
    }

    /// Keeps `lines` emptied, if there is room for it.
    pub fn keep(&mut self, mut lines: String) {
        if self.0.len() < Self::KEPT && lines.capacity() <= Self::ROOM {
            lines.clear();
            self.0.push(lines);
        }
    }

    /// How many buffers are kept.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when none is kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
