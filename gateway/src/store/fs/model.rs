//! A model filesystem for property tests: it keeps, per file, the bytes a program sees and
//! the bytes that would survive a power cut, and per directory the entries it sees and the
//! entries that would survive.
//!
//! - `sync_data` makes a file's data and length durable; `sync_dir` makes a directory's
//!   entries (create, rename, remove) durable. Nothing else is durable.
//! - A failed fsync behaves like Linux: the data written since the last good fsync is
//!   marked clean without reaching the disk, so a later good fsync does not save it.
//! - Faults are planned by operation number (every mutating call counts one): `ENOSPC`,
//!   `EIO`, a short write (half the bytes, then `EIO`) or a failed fsync. A capacity gives
//!   real `ENOSPC` (the part that fits is written).
//! - `crash_at(n)`: from operation `n` on, the machine is dead (every call fails and
//!   changes nothing) until [`ModelFs::power_cut`] throws away everything not durable.

use super::{Fs, FsFile, Open};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A planned fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `ENOSPC` (a write puts half its bytes first).
    NoSpace,
    /// `EIO`, no effect.
    Io,
    /// Half the bytes of a write, then `EIO`.
    ShortWrite,
    /// An fsync that fails and loses what it should have saved.
    FailedSync,
}

#[derive(Debug, Default, Clone)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Byte ranges written since the last fsync (saved by the next good one).
    dirty: Vec<(usize, usize)>,
}

#[derive(Debug, Default, Clone)]
struct Dir {
    live: BTreeMap<String, usize>,
    durable: BTreeMap<String, usize>,
}

#[derive(Debug, Default)]
struct State {
    inodes: Vec<Inode>,
    dirs: BTreeMap<PathBuf, Dir>,
    ops: u64,
    faults: BTreeMap<u64, Fault>,
    crash_at: Option<u64>,
    dead: bool,
    capacity: Option<u64>,
}

fn err(kind: io::ErrorKind, what: &str) -> io::Error {
    io::Error::new(kind, what.to_string())
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| err(io::ErrorKind::InvalidInput, "bad path"))?;
    Ok((dir, name.to_string()))
}

impl State {
    /// Counts a mutating operation: `Err` if the machine is dead, `Some(fault)` if one is
    /// planned here.
    fn step(&mut self) -> io::Result<Option<Fault>> {
        self.check_alive()?;
        let n = self.ops;
        self.ops += 1;
        if self.crash_at.is_some_and(|c| n >= c) {
            self.dead = true;
            return Err(err(io::ErrorKind::Other, "power lost"));
        }
        Ok(self.faults.remove(&n))
    }

    fn check_alive(&self) -> io::Result<()> {
        if self.dead {
            return Err(err(io::ErrorKind::Other, "power lost"));
        }
        Ok(())
    }

    fn used(&self) -> u64 {
        let live: std::collections::BTreeSet<usize> = self
            .dirs
            .values()
            .flat_map(|d| d.live.values().copied())
            .collect();
        live.iter().map(|&i| self.inodes[i].data.len() as u64).sum()
    }

    fn lookup(&self, path: &Path) -> io::Result<usize> {
        let (dir, name) = split(path)?;
        self.dirs
            .get(&dir)
            .and_then(|d| d.live.get(&name).copied())
            .ok_or_else(|| err(io::ErrorKind::NotFound, "no such file"))
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dirs
            .get_mut(dir)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "no such directory"))
    }

    /// Appends `buf` to inode `ino`, as much as fits; the error says why it stopped.
    fn append(&mut self, ino: usize, buf: &[u8], fault: Option<Fault>) -> io::Result<()> {
        let room = self
            .capacity
            .map_or(usize::MAX, |c| c.saturating_sub(self.used()) as usize);
        let (n, error) = match fault {
            Some(Fault::NoSpace) => (buf.len() / 2, Some(io::ErrorKind::StorageFull)),
            Some(Fault::ShortWrite) => (buf.len() / 2, Some(io::ErrorKind::Other)),
            Some(Fault::Io | Fault::FailedSync) => (0, Some(io::ErrorKind::Other)),
            None if buf.len() > room => (room, Some(io::ErrorKind::StorageFull)),
            None => (buf.len(), None),
        };
        let n = n.min(room);
        let inode = &mut self.inodes[ino];
        let start = inode.data.len();
        inode.data.extend_from_slice(&buf[..n]);
        if n > 0 {
            inode.dirty.push((start, start + n));
        }
        match error {
            Some(kind) => Err(err(kind, "injected write failure")),
            None => Ok(()),
        }
    }
}

/// The model filesystem. Clones share the same state.
#[derive(Debug, Clone, Default)]
pub struct ModelFs(Arc<Mutex<State>>);

impl ModelFs {
    /// An empty filesystem with the root directory.
    pub fn new() -> Self {
        let fs = Self::default();
        fs.state().dirs.insert(PathBuf::new(), Dir::default());
        fs
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Plans `fault` at mutating operation number `op` (counting from 0).
    pub fn fail_at(&self, op: u64, fault: Fault) {
        self.state().faults.insert(op, fault);
    }

    /// The machine dies at mutating operation number `op`.
    pub fn crash_at(&self, op: u64) {
        self.state().crash_at = Some(op);
    }

    /// Drops the faults and the power cut planned and not yet reached.
    pub fn clear_plan(&self) {
        let mut s = self.state();
        s.faults.clear();
        s.crash_at = None;
    }

    /// Mutating operations so far.
    pub fn ops(&self) -> u64 {
        self.state().ops
    }

    /// True once the planned crash has happened.
    pub fn is_dead(&self) -> bool {
        self.state().dead
    }

    /// Limits the bytes all files may hold (`None`: unlimited).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state().capacity = bytes;
    }

    /// Power cut: only durable data and durable directory entries remain; the machine
    /// runs again with no fault planned.
    pub fn power_cut(&self) {
        let mut s = self.state();
        for inode in &mut s.inodes {
            inode.data = inode.durable.clone();
            inode.dirty.clear();
        }
        for dir in s.dirs.values_mut() {
            dir.live = dir.durable.clone();
        }
        s.dead = false;
        s.crash_at = None;
        s.faults.clear();
    }
}

#[derive(Debug)]
struct ModelFile {
    fs: ModelFs,
    ino: usize,
}

impl FsFile for ModelFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut s = self.fs.state();
        let fault = s.step()?;
        s.append(self.ino, buf, fault)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let s = self.fs.state();
        s.check_alive()?;
        let data = &s.inodes[self.ino].data;
        let start = offset as usize;
        let src = data
            .get(start..start + buf.len())
            .ok_or_else(|| err(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut s = self.fs.state();
        if s.step()?.is_some() {
            return Err(err(io::ErrorKind::Other, "injected set_len failure"));
        }
        let inode = &mut s.inodes[self.ino];
        let len = len as usize;
        let old = inode.data.len();
        inode.data.resize(len, 0);
        if len > old {
            inode.dirty.push((old, len));
        }
        // The new length is saved by the next fsync (kept as an empty dirty range).
        inode.dirty.push((len, len));
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = self.fs.state();
        let fault = s.step()?;
        let inode = &mut s.inodes[self.ino];
        if fault.is_some() {
            // Like Linux after a failed writeback: pages marked clean, data not on disk.
            inode.dirty.clear();
            return Err(err(io::ErrorKind::Other, "injected fsync failure"));
        }
        let len = inode.data.len();
        inode.durable.resize(len, 0);
        for (from, to) in std::mem::take(&mut inode.dirty) {
            let to = to.min(len);
            if from < to {
                inode.durable[from..to].copy_from_slice(&inode.data[from..to]);
            }
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        let s = self.fs.state();
        s.check_alive()?;
        Ok(s.inodes[self.ino].data.len() as u64)
    }
}

impl Fs for ModelFs {
    fn open(&self, path: &Path, how: Open) -> io::Result<Box<dyn FsFile>> {
        let mut s = self.state();
        let ino = if how == Open::Read {
            s.check_alive()?;
            s.lookup(path)?
        } else {
            if s.step()?.is_some() {
                return Err(err(io::ErrorKind::Other, "injected open failure"));
            }
            match s.lookup(path) {
                Ok(ino) => {
                    if how == Open::Truncate {
                        let inode = &mut s.inodes[ino];
                        inode.data.clear();
                        inode.dirty.push((0, 0));
                    }
                    ino
                }
                Err(_) => {
                    let (dir, name) = split(path)?;
                    let ino = s.inodes.len();
                    s.dir_mut(&dir)?.live.insert(name, ino);
                    s.inodes.push(Inode::default());
                    ino
                }
            }
        };
        Ok(Box::new(ModelFile {
            fs: self.clone(),
            ino,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.state();
        s.check_alive()?;
        Ok(s.inodes[s.lookup(path)?].data.clone())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state();
        s.check_alive()?;
        let d = s
            .dirs
            .get(dir)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "no such directory"))?;
        Ok(d.live.keys().cloned().collect())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        if s.step()?.is_some() {
            return Err(err(io::ErrorKind::Other, "injected remove failure"));
        }
        let (dir, name) = split(path)?;
        s.dir_mut(&dir)?
            .live
            .remove(&name)
            .map(drop)
            .ok_or_else(|| err(io::ErrorKind::NotFound, "no such file"))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state();
        if s.step()?.is_some() {
            return Err(err(io::ErrorKind::Other, "injected rename failure"));
        }
        let ino = s.lookup(from)?;
        let ((fdir, fname), (tdir, tname)) = (split(from)?, split(to)?);
        s.dir_mut(&fdir)?.live.remove(&fname);
        s.dir_mut(&tdir)?.live.insert(tname, ino);
        Ok(())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.check_alive()?;
        // Directories are durable at once: the stores' directories exist before they run.
        for d in dir.ancestors() {
            s.dirs.entry(d.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        if s.step()?.is_some() {
            return Err(err(
                io::ErrorKind::Other,
                "injected directory fsync failure",
            ));
        }
        let d = s.dir_mut(dir)?;
        d.durable = d.live.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_synced_data_and_entries_survive_a_power_cut() {
        let fs = ModelFs::new();
        let dir = Path::new("d");
        fs.create_dir_all(dir).unwrap();
        let mut a = fs.open(&dir.join("a"), Open::Append).unwrap();
        a.write_all(b"hello").unwrap();
        a.sync_data().unwrap();
        a.write_all(b" world").unwrap();
        fs.power_cut();
        assert!(fs.read(&dir.join("a")).is_err(), "entry never synced");

        let mut a = fs.open(&dir.join("a"), Open::Append).unwrap();
        a.write_all(b"hello").unwrap();
        a.sync_data().unwrap();
        fs.sync_dir(dir).unwrap();
        a.write_all(b" world").unwrap();
        fs.power_cut();
        assert_eq!(fs.read(&dir.join("a")).unwrap(), b"hello");
    }

    #[test]
    fn a_failed_fsync_loses_the_data_even_after_a_later_good_one() {
        let fs = ModelFs::new();
        fs.create_dir_all(Path::new("d")).unwrap();
        let mut a = fs.open(Path::new("d/a"), Open::Append).unwrap();
        fs.sync_dir(Path::new("d")).unwrap();
        a.write_all(b"abc").unwrap();
        fs.fail_at(fs.ops(), Fault::FailedSync);
        assert!(a.sync_data().is_err());
        a.sync_data().unwrap();
        fs.power_cut();
        assert_eq!(fs.read(Path::new("d/a")).unwrap(), vec![0, 0, 0]);
    }

    #[test]
    fn capacity_gives_a_partial_write_and_no_space() {
        let fs = ModelFs::new();
        fs.create_dir_all(Path::new("d")).unwrap();
        fs.set_capacity(Some(4));
        let mut a = fs.open(Path::new("d/a"), Open::Append).unwrap();
        let e = a.write_all(b"abcdef").unwrap_err();
        assert!(super::super::is_no_space(&e));
        assert_eq!(a.size().unwrap(), 4);
        a.set_len(1).unwrap();
        a.write_all(b"xyz").unwrap();
    }
}
