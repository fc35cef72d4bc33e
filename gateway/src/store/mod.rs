//! Storing: the durable buffer every accepted reading is committed to before its
//! acknowledgement, the quarantine of refused frames and lines, and the filesystem seam
//! under both (real, and a power-cut model for tests).

pub mod buffer;
pub mod fs;
pub mod group;
pub mod quarantine;
