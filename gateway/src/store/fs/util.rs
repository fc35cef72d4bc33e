//! Small filesystem helpers with the durability rules every writer here follows.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content:
/// temp file, fsync, rename, fsync of the directory. A failed write removes its temp file
/// (on a full disk it would hold space).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write(path, bytes, mode, None)
}

/// [`write_atomic`] for a file another service reads through its group (the registry,
/// the broker's files): the new file gets the owner, group and mode of the one it
/// replaces, or, when there is none, mode `mode` and the group `group` if this system has
/// it. Set before the rename, so the file is never readable by the wrong group.
pub fn replace_for_group(path: &Path, bytes: &[u8], mode: u32, group: &str) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (owner, mode) = match fs::metadata(path) {
        Ok(m) => (Some((Some(m.uid()), Some(m.gid()))), m.mode() & 0o7777),
        Err(_) => (group_id(group).map(|gid| (None, Some(gid))), mode),
    };
    write(path, bytes, mode, owner)
}

/// The id of group `name` in `/etc/group`.
fn group_id(name: &str) -> Option<u32> {
    let text = fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

type Owner = (Option<u32>, Option<u32>);

fn write(path: &Path, bytes: &[u8], mode: u32, owner: Option<Owner>) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    // A name of its own per write, so two processes replacing one file never share a
    // temporary file.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            // Exactly `mode`, whatever the umask.
            f.set_permissions(fs::Permissions::from_mode(mode))?;
            f.write_all(bytes)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::fchown(&f, uid, gid)?;
            }
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Makes a directory entry change (create, rename, delete) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Free and total bytes of the filesystem holding `dir` (`statvfs(3)`; free as an
/// unprivileged writer sees it).
#[allow(unsafe_code)]
pub fn disk_space(dir: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `s` a buffer statvfs fills on success.
    if unsafe { libc::statvfs(path.as_ptr(), s.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `s`.
    let s = unsafe { s.assume_init() };
    let unit = s.f_frsize;
    Ok((s.f_bavail * unit, s.f_blocks * unit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_file_for_a_group_gets_it_and_keeps_the_group_it_had() {
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group"), None);
        let dir = tempfile::tempdir().unwrap();
        let gid = |p: &Path| fs::metadata(p).unwrap().gid();
        let mine = {
            let p = dir.path().join("probe");
            fs::write(&p, b"").unwrap();
            gid(&p)
        };
        // A new file: the named group if the system has it (the tests run as root).
        let new = dir.path().join("new");
        replace_for_group(&new, b"a", 0o640, "root").unwrap();
        assert_eq!(gid(&new), 0);
        assert_eq!(
            fs::metadata(&new).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let unknown = dir.path().join("unknown");
        replace_for_group(&unknown, b"a", 0o640, "no-such-group").unwrap();
        assert_eq!(gid(&unknown), mine);
        // A replaced file keeps the group it was given.
        std::os::unix::fs::chown(&new, None, Some(1)).unwrap();
        replace_for_group(&new, b"b", 0o640, "root").unwrap();
        assert_eq!((gid(&new), fs::read(&new).unwrap()), (1, b"b".to_vec()));
    }
}
