//! Verified backup copies: a file copied whole (holes kept) through the atomic protocol, checked by BLAKE3.
//!
//! [`backup`] copies a file into a folder under its own name before `fix --in-place` replaces it: the
//! source is read once, each chunk hashed while it is written to an unnamed temporary file in the
//! folder ([`crate::atomic`]); the copy is re-read and hashed while its fsync waits for the disk, and
//! gets its name only when both hashes agree, the fsync succeeded and the source did not change
//! meanwhile. It keeps the source's permission bits and access and modification times. On any
//! failure nothing is left in the folder.

use crate::atomic::{self, TempOutput};
use crate::fix::{feed_zeros, pieces, CHUNK};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Why no backup was made (the source is untouched in every case).
#[derive(Debug)]
pub enum BackupError {
    /// The backup folder does not exist.
    NoFolder(PathBuf),
    /// A file of that name is already in the folder and overwriting is off.
    Exists(PathBuf),
    /// The backup would replace the source itself.
    SameFile(PathBuf),
    /// The folder's filesystem has too little free space.
    Space {
        folder: PathBuf,
        need: u64,
        free: u64,
    },
    /// Reading the source or writing the copy failed.
    Io(PathBuf, io::Error),
    /// The copy read back does not hold the source's bytes.
    Mismatch { copy: PathBuf, source: PathBuf },
    /// The source changed while it was being copied.
    Changed(PathBuf),
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupError::NoFolder(d) => write!(f, "{}: backup folder does not exist", d.display()),
            BackupError::Exists(p) => write!(
                f,
                "{}: a backup already exists there (use --force to overwrite)",
                p.display()
            ),
            BackupError::SameFile(p) => write!(
                f,
                "{}: the backup would be the input itself; pick another --backup folder",
                p.display()
            ),
            BackupError::Space { folder, need, free } => write!(
                f,
                "{}: needs {need} bytes free for the backup, has {free}",
                folder.display()
            ),
            BackupError::Io(p, e) => write!(
                f,
                "{}: {e} while making the backup; the input was not touched",
                p.display()
            ),
            BackupError::Mismatch { copy, source } => write!(
                f,
                "{}: backup copy does not match {}; the input was not touched",
                copy.display(),
                source.display()
            ),
            BackupError::Changed(p) => write!(
                f,
                "{}: changed while it was being backed up; no backup was made",
                p.display()
            ),
        }
    }
}

/// Size, modification time and inode: what says a file was not rewritten.
fn stamp(m: &std::fs::Metadata) -> (u64, i64, i64, u64) {
    (m.len(), m.mtime(), m.mtime_nsec(), m.ino())
}

/// Copies `src` into `folder` under its own name (see the module doc); returns the copy's path and the
/// BLAKE3 of its bytes. An existing file of that name is replaced only with `overwrite`.
pub fn backup(
    src: &Path,
    folder: &Path,
    overwrite: bool,
) -> Result<(PathBuf, blake3::Hash), BackupError> {
    if !folder.is_dir() {
        return Err(BackupError::NoFolder(folder.to_path_buf()));
    }
    let dest = folder.join(src.file_name().unwrap_or_default());
    let input = File::open(src).map_err(|e| BackupError::Io(src.to_path_buf(), e))?;
    let meta = input
        .metadata()
        .map_err(|e| BackupError::Io(src.to_path_buf(), e))?;
    if let Ok(there) = std::fs::metadata(&dest) {
        if !overwrite {
            return Err(BackupError::Exists(dest));
        }
        if (there.dev(), there.ino()) == (meta.dev(), meta.ino()) {
            return Err(BackupError::SameFile(dest));
        }
    }
    let size = meta.len();
    if let Some(free) = atomic::free_space(folder).filter(|&free| free < size) {
        return Err(BackupError::Space {
            folder: folder.to_path_buf(),
            need: size,
            free,
        });
    }
    atomic::sweep(folder);
    let io_err = |e: io::Error| BackupError::Io(dest.clone(), e);
    let tmp = TempOutput::create(&dest, Some(meta.mode() & 0o7777)).map_err(io_err)?;
    let written = match hash_copy(&input, Some(tmp.file()), size) {
        Ok(h) => h,
        Err(e) => {
            tmp.discard();
            return Err(io_err(e));
        }
    };
    #[cfg(test)]
    tests::AFTER_WRITE.with_borrow(|hook| {
        if let Some(hook) = hook {
            hook(tmp.file());
        }
    });
    // The fsync waits for the disk while the copy is re-read from the page cache and hashed.
    let (synced, reread) = std::thread::scope(|s| {
        let sync = s.spawn(|| tmp.file().sync_all());
        let reread = hash_copy(tmp.file(), None, size);
        let synced = sync
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("fsync failed")));
        (synced, reread)
    });
    let checked = synced.and(reread).map_err(io_err).and_then(|h| {
        if h != written {
            return Err(BackupError::Mismatch {
                copy: dest.clone(),
                source: src.to_path_buf(),
            });
        }
        let now = std::fs::metadata(src).map(|m| stamp(&m)).ok();
        if now != Some(stamp(&meta)) {
            return Err(BackupError::Changed(src.to_path_buf()));
        }
        // the times last: reading the copy back may have moved its access time
        keep_times(tmp.file(), &meta)
            .and_then(|()| tmp.file().sync_all())
            .map_err(io_err)
    });
    if let Err(e) = checked {
        tmp.discard();
        return Err(e);
    }
    tmp.commit(&dest, overwrite).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            BackupError::Exists(dest.clone())
        } else {
            io_err(e)
        }
    })?;
    Ok((dest, written))
}

/// BLAKE3 of the `size` bytes of `from` (holes hashed as the zeros they read as), read once; with `to`,
/// each chunk is also written there at its offset while it is hashed, holes kept as holes.
fn hash_copy(from: &File, to: Option<&File>, size: u64) -> io::Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    let mut buf = Vec::with_capacity(CHUNK);
    pieces(from, 0, size, 0, &mut |hole, a, b| {
        if hole {
            feed_zeros(
                &mut |z| {
                    h.update(z);
                },
                b - a,
            );
            return Ok(());
        }
        let mut pos = a;
        while pos < b {
            let n = (CHUNK as u64).min(b - pos);
            buf.resize(n as usize, 0);
            from.read_exact_at(&mut buf, pos)?;
            let write = || to.map_or(Ok(()), |f| f.write_all_at(&buf, pos));
            let (w, _) = rayon::join(write, || h.update_rayon(&buf));
            w?;
            pos += n;
        }
        Ok(())
    })?;
    if let Some(f) = to {
        f.set_len(size)?;
    }
    Ok(h.finalize())
}

/// Gives `file` the access and modification times of `meta`.
fn keep_times(file: &File, meta: &std::fs::Metadata) -> io::Result<()> {
    let times = [
        libc::timespec {
            tv_sec: meta.atime() as libc::time_t,
            tv_nsec: meta.atime_nsec() as _,
        },
        libc::timespec {
            tv_sec: meta.mtime() as libc::time_t,
            tv_nsec: meta.mtime_nsec() as _,
        },
    ];
    // SAFETY: futimens reads the two timespecs of the array we own, on an open descriptor.
    if unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The sorted names of a directory's entries (also the fix tests' look at what a fix left behind).
    pub(crate) fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// 20 MiB: more than two chunks, a 4 MiB hole in the middle, data at the end.
    fn sparse_source(dir: &Path) -> (PathBuf, Vec<u8>) {
        let p = dir.join("model.safetensors");
        let mut want = vec![0u8; 20 << 20];
        for (i, b) in want.iter_mut().enumerate() {
            if !(8 << 20..12 << 20).contains(&i) {
                *b = (i % 251) as u8 ^ (i >> 16) as u8;
            }
        }
        let f = File::create(&p).unwrap();
        f.write_all_at(&want[..8 << 20], 0).unwrap();
        f.write_all_at(&want[12 << 20..], 12 << 20).unwrap();
        drop(f);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_times(
                std::fs::FileTimes::new()
                    .set_accessed(old)
                    .set_modified(old),
            )
            .unwrap();
        (p, want)
    }

    /// A temporary folder holding the sparse source and an empty backup folder `bak` beside it.
    fn source_and_folder() -> (tempfile::TempDir, PathBuf, Vec<u8>, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (src, want) = sparse_source(dir.path());
        let folder = dir.path().join("bak");
        std::fs::create_dir(&folder).unwrap();
        (dir, src, want, folder)
    }

    #[test]
    fn a_backup_holds_the_same_bytes_mode_and_times_and_its_hash_is_theirs() {
        let (_dir, src, want, folder) = source_and_folder();
        let (dest, h) = backup(&src, &folder, false).unwrap();
        assert_eq!(dest, folder.join("model.safetensors"));
        // times first: reading the copy moves its access time
        let (a, b) = (
            std::fs::metadata(&src).unwrap(),
            std::fs::metadata(&dest).unwrap(),
        );
        assert_eq!(b.permissions().mode() & 0o777, 0o640);
        assert_eq!((b.mtime(), b.mtime_nsec()), (a.mtime(), a.mtime_nsec()));
        assert_eq!(b.atime(), 1_000_000_000);
        assert!(std::fs::read(&dest).unwrap() == want);
        assert_eq!(h, blake3::hash(&want));
        assert_eq!(names(&folder), vec!["model.safetensors"]);
    }

    #[test]
    fn an_existing_backup_is_kept_unless_overwriting_and_never_the_source_itself() {
        let (dir, src, want, folder) = source_and_folder();
        std::fs::write(folder.join("model.safetensors"), b"older").unwrap();
        let e = backup(&src, &folder, false).unwrap_err();
        assert!(matches!(e, BackupError::Exists(_)), "{e}");
        assert!(e.to_string().contains("a backup already exists"), "{e}");
        assert_eq!(
            std::fs::read(folder.join("model.safetensors")).unwrap(),
            b"older"
        );
        backup(&src, &folder, true).unwrap();
        assert!(std::fs::read(folder.join("model.safetensors")).unwrap() == want);
        let e = backup(&src, dir.path(), true).unwrap_err();
        assert!(matches!(e, BackupError::SameFile(_)), "{e}");
        let e = backup(&src, &dir.path().join("nope"), false).unwrap_err();
        assert!(
            e.to_string().contains("backup folder does not exist"),
            "{e}"
        );
        assert!(std::fs::read(&src).unwrap() == want);
        assert_eq!(names(&folder), vec!["model.safetensors"]);
    }

    /// What a test does to the copy between its writing and its reading back.
    type Hook = Box<dyn Fn(&File)>;

    thread_local! {
        /// Runs on the copy between its writing and its reading back (a disk or another writer
        /// changing it meanwhile).
        pub(super) static AFTER_WRITE: std::cell::RefCell<Option<Hook>> =
            const { std::cell::RefCell::new(None) };
    }

    #[test]
    fn a_copy_that_reads_back_other_bytes_is_not_kept() {
        let (_dir, src, want, folder) = source_and_folder();
        // one byte of the copy changes after it was written (inside the data, and inside the hole)
        for at in [5u64 << 20, 9 << 20] {
            AFTER_WRITE.set(Some(Box::new(move |f: &File| {
                f.write_all_at(&[0xA5], at).unwrap();
            })));
            let r = backup(&src, &folder, false);
            AFTER_WRITE.set(None);
            let e = r.unwrap_err();
            assert!(matches!(e, BackupError::Mismatch { .. }), "{e}");
            assert!(names(&folder).is_empty(), "{:?}", names(&folder));
        }
        assert!(std::fs::read(&src).unwrap() == want);
        // and with nothing changing it, the same backup is kept
        backup(&src, &folder, false).unwrap();
        assert_eq!(names(&folder), vec!["model.safetensors"]);
    }

    #[test]
    fn the_copy_of_a_changing_source_is_not_kept() {
        let (_dir, src, _, folder) = source_and_folder();
        // another process keeps rewriting the source's times while the copy runs
        let stop = std::sync::atomic::AtomicBool::new(false);
        let r = std::thread::scope(|s| {
            s.spawn(|| {
                let mut t = 2_000_000_000u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    t += 1;
                    let when =
                        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t);
                    let f = File::options().write(true).open(&src).unwrap();
                    f.set_modified(when).unwrap();
                }
            });
            // give the writer a head start, so the source's stamp changes during the copy
            std::thread::sleep(std::time::Duration::from_millis(20));
            let r = backup(&src, &folder, false);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            r
        });
        let e = r.unwrap_err();
        assert!(matches!(e, BackupError::Changed(_)), "{e}");
        assert!(names(&folder).is_empty(), "{:?}", names(&folder));
    }
}
