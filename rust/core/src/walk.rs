//! Finding the files to scan under one or more roots.

use crate::report::{ErrorKind, FileError, FileReport};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

/// A regular file found by the walk.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: PathBuf,
    pub size: u64,
    pub mtime: f64,
}

/// A path the walk could not read.
#[derive(Clone, Debug)]
pub struct WalkError {
    pub path: PathBuf,
    pub kind: ErrorKind,
    /// What went wrong, without the path (the report puts the path in front).
    pub message: String,
}

impl WalkError {
    /// The report of the unreadable path (its `error` names the path).
    pub fn report(&self) -> FileReport {
        let (shown, path_b64) = crate::report::path_fields(&self.path);
        let message = if shown.is_empty() {
            self.message.clone()
        } else {
            format!("{shown}: {}", self.message)
        };
        FileReport {
            path: shown,
            path_b64,
            format: crate::sniff::Format::Unknown,
            error: Some(FileError {
                kind: self.kind,
                message,
            }),
            ..Default::default()
        }
    }
}

/// What the walk meets: a regular file to scan, a path it could not read, or a symbolic link below a
/// root that it did not follow (walks without `follow_links`; counted, never opened).
#[derive(Clone, Debug)]
pub enum Found {
    File(Entry),
    Error(WalkError),
    SkippedLink(PathBuf),
}

/// Seconds since the epoch of a file's modification time.
pub fn mtime_of(meta: &std::fs::Metadata) -> f64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Walks `roots` in parallel and returns every regular file (sorted by path) and every unreadable entry.
///
/// FIFOs, sockets and devices are never opened; symlinks are followed only with `follow_links`,
/// and then loops are reported, not followed.
pub fn walk(roots: &[PathBuf], follow_links: bool, threads: usize) -> (Vec<Entry>, Vec<WalkError>) {
    let (files, errors, _) = walk_counting(roots, follow_links, threads);
    (files, errors)
}

/// [`walk`], also counting the symlinks inside directories it did not follow (as the streaming scan
/// counts them for `summary.skipped_links`).
pub fn walk_counting(
    roots: &[PathBuf],
    follow_links: bool,
    threads: usize,
) -> (Vec<Entry>, Vec<WalkError>, u64) {
    let files = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let skipped = std::sync::atomic::AtomicU64::new(0);
    walk_stream(roots, follow_links, threads, &|found| {
        match found {
            Found::File(e) => files.lock().unwrap().push(e),
            Found::Error(e) => errors.lock().unwrap().push(e),
            Found::SkippedLink(_) => {
                skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        true
    });
    let mut files = files.into_inner().unwrap();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut errors = errors.into_inner().unwrap();
    errors.sort_by(|a, b| a.path.cmp(&b.path));
    (files, errors, skipped.into_inner())
}

/// Walks `roots` in parallel, handing each file and unreadable path to `emit` as it is found (each
/// path once); stops as soon as `emit` returns false. Paths stay bytes (`OsString`) throughout.
pub fn walk_stream(
    roots: &[PathBuf],
    follow_links: bool,
    threads: usize,
    emit: &(dyn Fn(Found) -> bool + Sync),
) {
    let mut existing = vec![];
    for r in roots {
        match std::fs::symlink_metadata(r) {
            Ok(_) => existing.push(r.clone()),
            Err(e) => {
                let err = WalkError {
                    path: r.clone(),
                    kind: ErrorKind::Io,
                    message: e.to_string(),
                };
                if !emit(Found::Error(err)) {
                    return;
                }
            }
        }
    }
    // Several roots may name the same file (a folder and a file inside it): report it once. One root
    // never yields a path twice, so a single root keeps no set.
    let seen: Option<Mutex<HashSet<PathBuf>>> = (existing.len() > 1).then(Default::default);
    let first_time = |p: &PathBuf| {
        seen.as_ref()
            .is_none_or(|s| s.lock().unwrap().insert(p.clone()))
    };
    let Some((first, rest)) = existing.split_first() else {
        return;
    };
    let mut b = ignore::WalkBuilder::new(first);
    for r in rest {
        b.add(r);
    }
    b.standard_filters(false)
        .hidden(false)
        .follow_links(follow_links)
        .threads(threads);
    b.build_parallel().run(|| {
        let first_time = &first_time;
        Box::new(move |res| {
            let found = match res {
                Ok(ent) => {
                    let Some(ft) = ent.file_type() else {
                        return ignore::WalkState::Continue;
                    };
                    // A diffusers folder is one model: reported once, its files not walked.
                    if ft.is_dir() || (ent.depth() == 0 && ent.path().is_dir()) {
                        let Some(f) = crate::diffusers::detect(ent.path()) else {
                            return ignore::WalkState::Continue;
                        };
                        let path = ent.into_path();
                        if !first_time(&path) {
                            return ignore::WalkState::Skip;
                        }
                        let found = Found::File(Entry {
                            path,
                            size: f.size,
                            mtime: f.mtime,
                        });
                        return if emit(found) {
                            ignore::WalkState::Skip
                        } else {
                            ignore::WalkState::Quit
                        };
                    }
                    // A root is a path the user named explicitly: follow it when it is a link (the
                    // walker may describe a root by its target, so ask the filesystem).
                    let meta = if ent.depth() == 0 || (follow_links && ft.is_symlink()) {
                        std::fs::metadata(ent.path())
                    } else if ft.is_file() {
                        ent.metadata()
                            .map_err(|e| std::io::Error::other(e.to_string()))
                    } else if ft.is_symlink() {
                        let path = ent.into_path();
                        if !first_time(&path) || emit(Found::SkippedLink(path)) {
                            return ignore::WalkState::Continue;
                        }
                        return ignore::WalkState::Quit;
                    } else {
                        return ignore::WalkState::Continue;
                    };
                    match meta {
                        Ok(m) if m.is_file() => Found::File(Entry {
                            path: ent.into_path(),
                            size: m.len(),
                            mtime: mtime_of(&m),
                        }),
                        Ok(_) => return ignore::WalkState::Continue,
                        Err(e) => Found::Error(WalkError {
                            path: ent.into_path(),
                            kind: ErrorKind::Io,
                            message: e.to_string(),
                        }),
                    }
                }
                Err(e) => Found::Error(WalkError {
                    path: error_path(&e).unwrap_or_default(),
                    kind: if is_loop(&e) {
                        ErrorKind::Loop
                    } else {
                        ErrorKind::Io
                    },
                    message: cause(&e),
                }),
            };
            let path = match &found {
                Found::File(e) => &e.path,
                Found::Error(e) => &e.path,
                Found::SkippedLink(p) => p,
            };
            if !first_time(path) {
                return ignore::WalkState::Continue;
            }
            if emit(found) {
                ignore::WalkState::Continue
            } else {
                ignore::WalkState::Quit
            }
        })
    });
}

fn is_loop(e: &ignore::Error) -> bool {
    match e {
        ignore::Error::Loop { .. } => true,
        ignore::Error::WithPath { err, .. }
        | ignore::Error::WithDepth { err, .. }
        | ignore::Error::WithLineNumber { err, .. } => is_loop(err),
        _ => false,
    }
}

/// What the walker's error says without the path it wraps it in (the report names the path once).
fn cause(e: &ignore::Error) -> String {
    match e {
        ignore::Error::WithPath { err, .. }
        | ignore::Error::WithDepth { err, .. }
        | ignore::Error::WithLineNumber { err, .. } => cause(err),
        other => other.to_string(),
    }
}

fn error_path(e: &ignore::Error) -> Option<PathBuf> {
    match e {
        ignore::Error::WithPath { path, .. } => Some(path.clone()),
        ignore::Error::WithDepth { err, .. } => error_path(err),
        ignore::Error::Loop { child, .. } => Some(child.clone()),
        ignore::Error::WithLineNumber { err, .. } => error_path(err),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_fifo_and_survives_symlink_loop() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.safetensors"), b"x").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::os::unix::fs::symlink(root, root.join("sub/loop")).unwrap();
        let fifo = std::ffi::CString::new(root.join("fifo").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        for follow in [false, true] {
            let (files, errors) = walk(&[root.to_path_buf()], follow, 2);
            assert_eq!(files.len(), 1, "follow={follow}: {files:?}");
            if follow {
                assert!(
                    errors.iter().any(|e| e.kind == ErrorKind::Loop),
                    "{errors:?}"
                );
            }
        }
    }

    #[test]
    fn a_root_link_to_a_file_is_scanned_and_a_dangling_link_is_io_not_loop() {
        // The temporary folder's own name says "loop": the kind must not come from any text.
        let dir = tempfile::Builder::new().prefix("loop").tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("model.safetensors"), b"xyz").unwrap();
        std::os::unix::fs::symlink(
            root.join("model.safetensors"),
            root.join("link.safetensors"),
        )
        .unwrap();
        let (files, errors) = walk(&[root.join("link.safetensors")], false, 1);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(files.len(), 1);
        assert_eq!(
            (files[0].path.clone(), files[0].size),
            (root.join("link.safetensors"), 3)
        );

        let lib = root.join("lib");
        std::fs::create_dir(&lib).unwrap();
        std::os::unix::fs::symlink(root.join("gone"), lib.join("dangling.safetensors")).unwrap();
        let (files, errors) = walk(std::slice::from_ref(&lib), true, 1);
        assert!(files.is_empty());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].kind, ErrorKind::Io);
        assert_eq!(errors[0].path, lib.join("dangling.safetensors"));
    }
}
