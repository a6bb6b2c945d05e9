//! Finding the files to scan under one or more roots.

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

/// What kind of problem stopped the walk at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WalkErrorKind {
    /// A symlink that leads back to one of its own ancestors.
    Loop,
    /// Anything the filesystem refused (permissions, a dangling link, a missing root).
    Io,
}

impl WalkErrorKind {
    /// The report's name for this kind (`loop`, `io`).
    pub fn name(self) -> &'static str {
        match self {
            WalkErrorKind::Loop => "loop",
            WalkErrorKind::Io => "io",
        }
    }
}

/// A path the walk could not read.
#[derive(Clone, Debug)]
pub struct WalkError {
    pub path: PathBuf,
    pub kind: WalkErrorKind,
    pub message: String,
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
    let files = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let mut missing = vec![];
    let mut existing = vec![];
    for r in roots {
        match std::fs::symlink_metadata(r) {
            Ok(_) => existing.push(r.clone()),
            Err(e) => missing.push(WalkError {
                path: r.clone(),
                kind: WalkErrorKind::Io,
                message: e.to_string(),
            }),
        }
    }
    if let Some((first, rest)) = existing.split_first() {
        let mut b = ignore::WalkBuilder::new(first);
        for r in rest {
            b.add(r);
        }
        b.standard_filters(false)
            .hidden(false)
            .follow_links(follow_links)
            .threads(threads);
        b.build_parallel().run(|| {
            let files = &files;
            let errors = &errors;
            Box::new(move |res| {
                match res {
                    Ok(ent) => {
                        let is_root_link = ent.depth() == 0 && ent.path_is_symlink();
                        let Some(ft) = ent.file_type() else {
                            return ignore::WalkState::Continue;
                        };
                        // The root itself may be a symlink the user named explicitly: follow it.
                        let meta = if is_root_link || (follow_links && ft.is_symlink()) {
                            std::fs::metadata(ent.path())
                        } else if ft.is_file() {
                            ent.metadata()
                                .map_err(|e| std::io::Error::other(e.to_string()))
                        } else {
                            return ignore::WalkState::Continue;
                        };
                        match meta {
                            Ok(m) if m.is_file() => files.lock().unwrap().push(Entry {
                                path: ent.into_path(),
                                size: m.len(),
                                mtime: mtime_of(&m),
                            }),
                            Ok(_) => {}
                            Err(e) => errors.lock().unwrap().push(WalkError {
                                path: ent.into_path(),
                                kind: WalkErrorKind::Io,
                                message: e.to_string(),
                            }),
                        }
                    }
                    Err(e) => {
                        let path = error_path(&e).unwrap_or_default();
                        errors.lock().unwrap().push(WalkError {
                            path,
                            kind: if is_loop(&e) {
                                WalkErrorKind::Loop
                            } else {
                                WalkErrorKind::Io
                            },
                            message: e.to_string(),
                        });
                    }
                }
                ignore::WalkState::Continue
            })
        });
    }
    let mut files = files.into_inner().unwrap();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    let mut errors = errors.into_inner().unwrap();
    errors.extend(missing);
    errors.sort_by(|a, b| a.path.cmp(&b.path));
    (files, errors)
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
                    errors.iter().any(|e| e.kind == WalkErrorKind::Loop),
                    "{errors:?}"
                );
            }
        }
    }
}
