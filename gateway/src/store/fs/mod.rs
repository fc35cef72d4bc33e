//! The filesystem seam under every durable store (buffer, quarantine, file sink).
//!
//! The stores call this trait instead of `std::fs`, so that tests can put them on
//! `model::ModelFs` (test builds only), which injects a short write, `ENOSPC`, `EIO` or a failed fsync at
//! any operation and simulates a power cut that keeps only what was fsynced (file data
//! after `sync_data`, directory entries after `sync_dir`). A process `kill -9` keeps the
//! page cache and proves nothing about fsync; the model does.
//!
//! [`RealFs`] is `std::fs` with positional reads; it adds nothing.

#[cfg(test)]
pub mod model;
mod util;

pub use util::{disk_space, replace_for_group, write_atomic};

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Read only; the file must exist.
    Read,
    /// Writes append at the end; created (empty) when missing.
    Append,
    /// Created, or emptied when it exists; writes append.
    Truncate,
}

/// An open file. Writes always go to the end of the file.
pub trait FsFile: Send + fmt::Debug {
    /// Appends all of `buf` (a failure may leave part of it written).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Cuts (or extends with zeros) the file to `len`.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes the data and the length durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Current length.
    fn size(&self) -> io::Result<u64>;
}

/// Directory and file operations the stores use.
pub trait Fs: Send + Sync + fmt::Debug {
    /// Opens `path`.
    fn open(&self, path: &Path, how: Open) -> io::Result<Box<dyn FsFile>>;
    /// The whole content of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file (replacing `to`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes entry changes in `dir` (create, rename, remove) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// Shared handle to a filesystem.
pub type SharedFs = Arc<dyn Fs>;

/// The real filesystem.
pub fn real() -> SharedFs {
    Arc::new(RealFs)
}

/// `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl FsFile for RealFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl Fs for RealFs {
    fn open(&self, path: &Path, how: Open) -> io::Result<Box<dyn FsFile>> {
        let mut o = OpenOptions::new();
        match how {
            Open::Read => o.read(true),
            // O_APPEND, so that writes after a `set_len` go to the new end.
            Open::Append | Open::Truncate => o.read(true).append(true).create(true).mode(0o600),
        };
        let file = o.open(path)?;
        if how == Open::Truncate {
            // O_TRUNC cannot go with O_APPEND.
            file.set_len(0)?;
        }
        Ok(Box::new(RealFile(file)))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        util::sync_dir(dir)
    }
}

/// True for errors that say the disk has no room (`ENOSPC`, `EDQUOT`): the condition
/// clears when space is freed, and readiness names it.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
