//! Atomic file replacement and checked opening of files to read.
//!
//! Design notes.
//! * Every save writes a temporary file of its own, so concurrent saves to
//!   one path (threads of one process, or processes) never write into the
//!   same file: each produces a complete file and the last rename wins.
//! * On Linux the temporary file is an unnamed `O_TMPFILE` inode in the
//!   target's directory: a save killed while writing leaves nothing behind.
//!   Once written and fsynced it is given a unique name with `linkat` and
//!   renamed over the target (`linkat` cannot replace an existing name), so
//!   only a kill between those two calls leaves a named file.
//! * Elsewhere, or where the file system has no `O_TMPFILE`, the temporary
//!   file is created with `O_EXCL` under a unique name.
//! * Temporary names are `.NAME.tmp-<pid>-<host>-<thread>-<counter>-<random>`.
//!   Before each save, temporaries of the same target left by a process of
//!   this host that is no longer alive are removed: they are provably stale
//!   (a live process, including this one, may still be writing its own).

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

fn io_err(path: &Path, e: &std::io::Error) -> Error {
    crate::error::io(path, e)
}

fn kind_err(path: &Path, kind: std::io::ErrorKind, message: &str) -> Error {
    Error::Io {
        path: path.display().to_string(),
        kind,
        message: message.to_string(),
    }
}

/// Open `path` to read: a regular file, with its length. A directory fails
/// with kind `IsADirectory`, anything else that is not a regular file (a
/// FIFO, a device) with `InvalidInput`, never with a format error. FIFOs are
/// opened without blocking.
pub fn open(path: &Path) -> Result<(File, u64)> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open(path).map_err(|e| io_err(path, &e))?;
    let meta = file.metadata().map_err(|e| io_err(path, &e))?;
    if meta.is_dir() {
        return Err(kind_err(
            path,
            std::io::ErrorKind::IsADirectory,
            "is a directory, not a file",
        ));
    }
    if !meta.is_file() {
        return Err(kind_err(
            path,
            std::io::ErrorKind::InvalidInput,
            "is not a regular file",
        ));
    }
    Ok((file, meta.len()))
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A short hash of this host's name (temporaries of other hosts on a shared
/// file system are never judged stale).
fn host_tag() -> String {
    let mut name = [0u8; 256];
    #[cfg(unix)]
    // SAFETY: `name` is a writable buffer of the length passed; gethostname
    // writes at most that many bytes.
    let ok = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) } == 0;
    #[cfg(not(unix))]
    let ok = false;
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let h = if ok { crc32fast::hash(&name[..end]) } else { 0 };
    format!("{h:08x}")
}

fn unique_suffix() -> String {
    use std::hash::{BuildHasher, Hash, Hasher};
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let thread =
        std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id()) as u32;
    // RandomState is seeded randomly per process and advances per instance.
    let mut r = std::collections::hash_map::RandomState::new().build_hasher();
    n.hash(&mut r);
    std::time::SystemTime::now().hash(&mut r);
    format!(
        "{}-{}-{thread:08x}-{n}-{:016x}",
        std::process::id(),
        host_tag(),
        r.finish()
    )
}

fn temp_prefix(name: &std::ffi::OsStr) -> String {
    format!(".{}.tmp-", name.to_string_lossy())
}

/// True when `pid` names no live process (kill(pid, 0) says ESRCH).
fn is_dead(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(p) = libc::pid_t::try_from(pid) else {
            return false;
        };
        if p <= 0 {
            return false;
        }
        // SAFETY: signal 0 sends nothing; it only checks that `p` exists
        // (`p > 0`, so it names one process, never a group).
        let r = unsafe { libc::kill(p, 0) };
        r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

/// Remove temporaries of `name` in `dir` whose writer (a process of this
/// host) is dead. Returns how many were removed. Errors are ignored: this is
/// housekeeping, never a reason to fail a save.
pub fn remove_stale_temporaries(dir: &Path, name: &std::ffi::OsStr) -> usize {
    let prefix = temp_prefix(name);
    let host = host_tag();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(rest) = file_name.to_str().and_then(|s| s.strip_prefix(&prefix)) else {
            continue;
        };
        let mut parts = rest.split('-');
        let (Some(pid), Some(h)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if h == host && pid != std::process::id() && is_dead(pid) {
            // Re-check it is a plain file, not something a user named so.
            if e.file_type().is_ok_and(|t| t.is_file()) && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Replace `path` with the bytes `write` produces, atomically: a crash or an
/// error at any point leaves the previous file whole and no temporary file
/// behind (see the design notes). Returns the file size.
pub fn save(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<u64> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        kind_err(
            path,
            std::io::ErrorKind::InvalidInput,
            "not a file path (it ends in '..' or '/')",
        )
    })?;
    remove_stale_temporaries(&dir, name);
    let tmp = dir.join(format!("{}{}", temp_prefix(name), unique_suffix()));
    let result = (|| -> std::io::Result<u64> {
        let size = match unnamed_temporary(&dir) {
            Some(file) => {
                let file = write_and_sync(file, write)?;
                let size = file.metadata()?.len();
                link_unnamed(&file, &tmp)?;
                size
            }
            None => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&tmp)?;
                let file = write_and_sync(file, write)?;
                file.metadata()?.len()
            }
        };
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(size)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path, &e)
    })
}

fn write_and_sync(
    file: File,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> std::io::Result<File> {
    let mut w = BufWriter::with_capacity(1 << 20, file);
    write(&mut w)?;
    w.flush()?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(file)
}

/// An unnamed file in `dir` (`O_TMPFILE`), or `None` where there is none.
#[cfg(target_os = "linux")]
fn unnamed_temporary(dir: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if !proc_fd_links() {
        return None;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .mode(0o666)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn unnamed_temporary(_dir: &Path) -> Option<File> {
    None
}

/// `/proc/self/fd` is there to give an unnamed file a name with `linkat`
/// (without it, `AT_EMPTY_PATH` needs a capability).
#[cfg(target_os = "linux")]
fn proc_fd_links() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

/// Give the unnamed `file` the name `tmp`.
#[cfg(target_os = "linux")]
fn link_unnamed(file: &File, tmp: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(std::io::Error::other)?;
    let to = std::ffi::CString::new(tmp.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: both paths are NUL-terminated C strings that outlive the call;
    // AT_FDCWD and AT_SYMLINK_FOLLOW are valid arguments of linkat.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn link_unnamed(_file: &File, _tmp: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other("no unnamed temporary files here"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("embcore-io-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn listing(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn concurrent_saves_leave_one_whole_file() {
        let d = dir("concurrent");
        let p = d.join("f.bin");
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..20 {
                        save(p, |w| w.write_all(&vec![t; 100_000])).unwrap();
                    }
                });
            }
        });
        let b = std::fs::read(&p).unwrap();
        assert_eq!(b.len(), 100_000);
        assert!(b.iter().all(|&x| x == b[0]));
        assert_eq!(listing(&d), ["f.bin"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn failed_saves_keep_the_old_file_and_leave_nothing() {
        let d = dir("failed");
        let p = d.join("f.bin");
        save(&p, |w| w.write_all(b"old")).unwrap();
        assert!(save(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        })
        .is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(listing(&d), ["f.bin"]);
        let e = save(&d, |w| w.write_all(b"x")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        assert_eq!(listing(&d), ["f.bin"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let d = dir("stale");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let host = host_tag();
        let stale = d.join(format!(".f.bin.tmp-{dead}-{host}-0-0-0"));
        let live = d.join(format!(".f.bin.tmp-{}-{host}-0-0-0", std::process::id()));
        let foreign = d.join(format!(".f.bin.tmp-{dead}-nothost-0-0-0"));
        let other = d.join(format!(".g.bin.tmp-{dead}-{host}-0-0-0"));
        for f in [&stale, &live, &foreign, &other] {
            std::fs::write(f, b"x").unwrap();
        }
        save(&d.join("f.bin"), |w| w.write_all(b"new")).unwrap();
        assert!(!stale.exists());
        assert!(live.exists() && foreign.exists() && other.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn open_rejects_what_is_not_a_regular_file() {
        let d = dir("open");
        let Err(Error::Io { kind, .. }) = open(&d) else {
            panic!("a directory opened")
        };
        assert_eq!(kind, std::io::ErrorKind::IsADirectory);
        let Err(Error::Io { kind, .. }) = open(&d.join("missing")) else {
            panic!("a missing file opened")
        };
        assert_eq!(kind, std::io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
