//! Output files written whole or not at all: an unnamed temporary file, linked in once complete.
//!
//! [`TempOutput::create`] opens an unnamed file (`O_TMPFILE`) in the output's folder, so a process
//! killed while writing (even by SIGKILL) leaves nothing visible. Where the filesystem cannot make
//! unnamed files it falls back to a hidden `.NAME.PID.N.fastscan-tmp` file; [`sweep`] removes those
//! whose maker is gone. [`TempOutput::commit`] gives the finished file its name without ever
//! replacing an existing one unless told to.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The suffix of named temporary files (the fallback).
pub const TMP_SUFFIX: &str = ".fastscan-tmp";

/// A temporary output file in the folder of the output it will become.
pub struct TempOutput {
    file: File,
    /// The fallback's name; `None` for an unnamed (`O_TMPFILE`) file.
    named: Option<PathBuf>,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("path contains a NUL byte"))
}

fn folder_of(out: &Path) -> PathBuf {
    match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl TempOutput {
    /// Creates the temporary file for `out`, with permissions `mode` (`None`: 0o666 less the umask).
    pub fn create(out: &Path, mode: Option<u32>) -> io::Result<TempOutput> {
        let dir = folder_of(out);
        let perm = mode.unwrap_or(0o666);
        let c = cstr(&dir)?;
        // SAFETY: `c` is a valid NUL-terminated path; open returns a new descriptor or -1.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
                perm,
            )
        };
        let t = if fd >= 0 {
            // SAFETY: `fd` was just opened and is owned by nobody else.
            let file = unsafe { File::from_raw_fd(fd) };
            TempOutput { file, named: None }
        } else {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL) => {}
                _ => return Err(err),
            }
            Self::create_named(&dir, out, perm)?
        };
        if let Some(m) = mode {
            use std::os::unix::fs::PermissionsExt;
            t.file.set_permissions(std::fs::Permissions::from_mode(m))?;
        }
        Ok(t)
    }

    fn create_named(dir: &Path, out: &Path, perm: u32) -> io::Result<TempOutput> {
        static N: AtomicU64 = AtomicU64::new(0);
        let base = out.file_name().unwrap_or_default();
        loop {
            let mut name = OsString::from(".");
            name.push(base);
            name.push(format!(
                ".{}.{}{TMP_SUFFIX}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let p = dir.join(name);
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(perm)
                .open(&p)
            {
                Ok(file) => {
                    return Ok(TempOutput {
                        file,
                        named: Some(p),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The open file, to write to.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// A path that opens this file again while it is not committed (to read it back and verify it).
    pub fn path(&self) -> PathBuf {
        match &self.named {
            Some(p) => p.clone(),
            None => PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd())),
        }
    }

    /// True when the file has no name (a killed process leaves nothing behind).
    pub fn is_unnamed(&self) -> bool {
        self.named.is_none()
    }

    /// Names the finished file `out` (fsync it before) and syncs the folder. Without `overwrite` an
    /// existing `out` (even one that appeared while writing) is never replaced: `AlreadyExists`.
    pub fn commit(mut self, out: &Path, overwrite: bool) -> io::Result<()> {
        let dir = folder_of(out);
        match self.named.take() {
            None => {
                let target = if overwrite {
                    // Link under a fresh hidden name first, then rename over `out` (rename
                    // replaces). The name is reserved by creating it; dropping frees it again.
                    let reserved = Self::create_named(&dir, out, 0o600)?;
                    reserved.named.clone().unwrap_or_default()
                } else {
                    out.to_path_buf()
                };
                let from = CString::new(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
                    .map_err(io::Error::other)?;
                let to = cstr(&target)?;
                // SAFETY: both are valid NUL-terminated paths; linkat following the /proc magic link
                // gives the unnamed file a name (the documented O_TMPFILE pattern, no privilege needed).
                let rc = unsafe {
                    libc::linkat(
                        libc::AT_FDCWD,
                        from.as_ptr(),
                        libc::AT_FDCWD,
                        to.as_ptr(),
                        libc::AT_SYMLINK_FOLLOW,
                    )
                };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                if overwrite {
                    if let Err(e) = std::fs::rename(&target, out) {
                        let _ = std::fs::remove_file(&target);
                        return Err(e);
                    }
                }
            }
            Some(tmp) => {
                let done = if overwrite {
                    std::fs::rename(&tmp, out)
                } else {
                    // link fails atomically when `out` exists; some filesystems have no hard links.
                    match std::fs::hard_link(&tmp, out) {
                        Ok(()) => std::fs::remove_file(&tmp),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
                        Err(_) if out.exists() => Err(io::ErrorKind::AlreadyExists.into()),
                        Err(_) => std::fs::rename(&tmp, out),
                    }
                };
                if let Err(e) = done {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            }
        }
        File::open(&dir)?.sync_all()
    }

    /// Abandons the file: closes it and removes its name, if it has one.
    pub fn discard(mut self) {
        if let Some(p) = self.named.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if let Some(p) = self.named.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Bytes free to an unprivileged writer on the filesystem of `dir` (`None` when it cannot be told).
pub fn free_space(dir: &Path) -> Option<u64> {
    let c = cstr(dir).ok()?;
    // SAFETY: statvfs fills the zeroed struct we own from a valid NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Seconds since the epoch at which process `pid` started, if it is running.
fn started(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime, clock ticks after boot) counts from after the `(comm)` field, which may
    // itself hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let btime: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(btime + ticks / hz)
}

/// Removes, from `dir`, the named temporary files whose maker is gone (no process with the pid in
/// the name, or one started after the file was last written: the pid was reused). Returns them.
pub fn sweep(dir: &Path) -> Vec<PathBuf> {
    let mut removed = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name().into_vec();
        let Some(stem) = name
            .strip_prefix(b".")
            .and_then(|n| n.strip_suffix(TMP_SUFFIX.as_bytes()))
        else {
            continue;
        };
        // .NAME.PID.N: the pid is the second field from the end.
        let mut fields = stem.rsplit(|&b| b == b'.');
        let pid = fields
            .nth(1)
            .and_then(|f| std::str::from_utf8(f).ok())
            .and_then(|f| f.parse::<u32>().ok());
        let (Some(pid), Ok(meta)) = (pid, e.metadata()) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let written = crate::walk::mtime_of(&meta);
        let gone = match started(pid) {
            None => true,
            Some(start) => start > written + 1.0,
        };
        if gone && std::fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn unnamed_until_committed_and_never_clobbers() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.bin");
        let t = TempOutput::create(&out, Some(0o640)).unwrap();
        t.file().write_all(b"hello").unwrap();
        assert_eq!(std::fs::read(t.path()).unwrap(), b"hello");
        if t.is_unnamed() {
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
        std::fs::write(&out, b"someone else").unwrap();
        let e = t.commit(&out, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&out).unwrap(), b"someone else");

        let t = TempOutput::create(&out, Some(0o640)).unwrap();
        t.file().write_all(b"mine").unwrap();
        t.commit(&out, true).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"mine");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("o.bin")]);
    }

    #[test]
    fn sweep_removes_leftovers_of_dead_makers_only() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir
            .path()
            .join(format!(".a.bin.{}.0{TMP_SUFFIX}", std::process::id()));
        // pid_max is at most 2^22: this pid runs nothing.
        let dead = dir.path().join(format!(".a.bin.{}.0{TMP_SUFFIX}", 1 << 23));
        let other = dir.path().join("a.bin.7.0.fastscan-tmp"); // not hidden: not ours
        for p in [&mine, &dead, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        assert_eq!(sweep(dir.path()), vec![dead.clone()]);
        assert!(mine.exists() && other.exists() && !dead.exists());
    }
}
