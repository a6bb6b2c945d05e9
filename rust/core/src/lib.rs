//! fastscan-core: find what is wrong with Stable Diffusion model files.
//!
//! Formats are recognised by their bytes ([`Format`]), parsed into a tensor table ([`open_table`]),
//! classified by component ([`classify`]: [`Kind`], [`Arch`], a [`Role`] per tensor), checked, and
//! hashed in one pass over the data ([`data_pass`]). [`scan_file`] runs all of it on one file and
//! returns its [`FileReport`]; [`scan_stream`] does it for what a walk of the roots finds, as it finds
//! it. Fixes are planned as a [`FixPlan`] and written by [`execute_fix`].
//!
//! Every module is private: what the binding, the benches and other users need is re-exported here
//! (the report and every type it holds, from which docs/report.schema.json is generated, included).

mod atomic;
mod backup;
mod cache;
mod cast;
mod checks;
mod classify;
mod component_hash;
mod datapass;
mod diffusers;
mod dtype;
mod file_kinds;
mod fingerprint;
mod fix;
mod hashes;
mod header_fast;
mod interop;
mod kind;
mod lineage;
mod mapguard;
mod memory;
mod npy;
mod pickle;
mod provenance;
mod remote;
mod report;
mod safetensors;
mod scan;
mod sidecar_check;
mod similarity;
mod sniff;
mod source;
mod standalone;
mod table;
mod tensor;
mod values;
mod walk;
mod writer;

use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

// The report and every type it holds (docs/report.schema.json is generated from them).
pub use diffusers::Part;
pub use fingerprint::{ComponentPrint, Entry as FingerprintEntry, Fingerprint};
pub use kind::{Arch, Kind};
pub use provenance::{Merge, Parent, Provenance, Training};
pub use report::{
    base64_decode, file_schema, path_fields, ComponentReport, ErrorKind, FileError, FileReport,
    Finding, Hashes, Identification, Severity, Summary,
};
pub use sniff::Format;

// Reading and judging one file: its tensor table, classification and the roles of its tensors.
pub use checks::is_text_position_ids;
pub use classify::{classify, Classification, Role};
pub use datapass::span;
pub use dtype::Dtype;
pub use safetensors::{parse_header, Header};
pub use table::{buffer_owners, open_table, prune_group, OpenError, PruneGroup, Table};
pub use tensor::TensorInfo;

// Scanning: one file, a walk of roots, object storage, tensors in memory, the cache.
pub use cache::{scan_cached, Cache};
pub use datapass::{run as data_pass, DataPass, HashMode, Source};
pub use mapguard::GuardedMap;
pub use memory::{open as open_memory, scan as scan_memory, MemTable, MemTensor};
pub use pickle::imports_of as pickle_imports;
pub use pickle::reader::Import;
pub use remote::{
    download as download_object, execute_fix as fix_to_object, is_url, list as list_objects,
    listing_failed, scan_url, Object,
};
pub use scan::{scan_file, ScanOptions};
pub use source::{ChunkSource, FileSource, MemorySource};
pub use walk::{walk, walk_counting, Entry, WalkError};

// Fixes: the plan, the executor, the writer, casts and the temporary-file protocol.
pub use atomic::{sweep as sweep_temp, TempOutput, TMP_SUFFIX};
pub use backup::{backup as backup_file, BackupError};
pub use cast::{cast, CAST_FROM};
pub use fix::{
    convert_metadata, execute as execute_fix, extras_metadata, output_size as fix_output_size,
    FixError, Observer, Op, Plan as FixPlan, PlanTensor, Quiet, Stage, Written, DATA_HASH_KEYS,
    SOURCE_BLAKE3, SOURCE_SHA256,
};
pub use writer::{serialize_header, OutTensor, Serialized, WriteError};

// Other tools' hash files, similarity and lineage.
pub use interop::{export_a1111, export_sidecars, Format as ExportFormat, Outcome};
pub use lineage::{
    lineage, lineage_with, Options as LineageOptions, FAMILY_MIN as LINEAGE_FAMILY_MIN,
    KINDS as LINEAGE_KINDS, SCREEN as LINEAGE_SCREEN,
};
pub use similarity::{document as similarity_document, exact as exact_similarity, Sampled};

/// Where a streaming scan stands; readable from any thread while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files and unreadable paths the walk has found so far.
    pub files_found: AtomicU64,
    /// Bytes of the files found so far.
    pub bytes_found: AtomicU64,
    /// The walk has finished: the two totals above are final.
    pub walk_done: AtomicBool,
    /// Files whose scan has finished (served from the cache or not).
    pub files_scanned: AtomicU64,
    /// Symbolic links below a root the walk did not follow (walks without `follow_links`).
    pub skipped_links: AtomicU64,
}

/// Files walked but not yet taken by a scanning thread: bounds memory whatever the library's size (a
/// path each, a few MB). Once the queue is full, the walk sleeps and every file taken wakes it for one
/// more; so the longer the queue, the more of a library is walked before that ping-pong starts (a
/// header-only scan of 10,000 files: 1,024 -> 16,384 took its time from 2.0 to 1.8 s, its system time
/// from 0.61 to 0.38 s).
const WALK_AHEAD: usize = 16384;

/// A file found by the walk or an object found by a listing, waiting for a scanning thread.
enum Job {
    Local(PathBuf),
    Remote(remote::Object),
}

/// Walks `roots` (local paths, and object-store URLs: see [`list_objects`]) and scans each file as the walk finds it, in parallel on the current rayon pool,
/// calling `emit` with each report as it finishes (unreadable paths included, as reports
/// whose `error` says why). Stops early, walk and scanning threads alike, as soon as `emit` returns
/// false or `opts.stop` is set; reports made after that are dropped. Returns when every thread is done.
pub fn scan_stream<F>(
    roots: &[PathBuf],
    follow_links: bool,
    walk_threads: usize,
    opts: &ScanOptions,
    cache: Option<&cache::Cache>,
    progress: &Progress,
    emit: F,
) where
    F: Fn(FileReport) -> bool + Sync,
{
    let halt = AtomicBool::new(false);
    let halted = || halt.load(Ordering::Relaxed) || opts.stopped();
    let send = |v: FileReport| {
        let ok = !halted() && emit(v);
        if !ok {
            halt.store(true, Ordering::Relaxed);
        }
        ok
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(WALK_AHEAD);
    let (urls, paths): (Vec<PathBuf>, Vec<PathBuf>) = roots
        .iter()
        .cloned()
        .partition(|r| r.to_str().is_some_and(remote::is_url));
    std::thread::scope(|s| {
        s.spawn(|| {
            for url in urls.iter().filter_map(|u| u.to_str()) {
                let listed = remote::list(url, opts.endpoint_url.as_deref(), &mut |o| {
                    if halted() {
                        return false;
                    }
                    progress.files_found.fetch_add(1, Ordering::Relaxed);
                    progress.bytes_found.fetch_add(o.size, Ordering::Relaxed);
                    tx.send(Job::Remote(o)).is_ok()
                });
                if let Err(message) = listed {
                    progress.files_found.fetch_add(1, Ordering::Relaxed);
                    progress.files_scanned.fetch_add(1, Ordering::Relaxed);
                    let r = remote::listing_failed(url, message);
                    send(r);
                }
            }
            let roots = &paths[..];
            walk::walk_stream(roots, follow_links, walk_threads, &|found| {
                if halted() {
                    return false;
                }
                if let walk::Found::SkippedLink(_) = found {
                    progress.skipped_links.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                progress.files_found.fetch_add(1, Ordering::Relaxed);
                match found {
                    walk::Found::File(e) => {
                        progress.bytes_found.fetch_add(e.size, Ordering::Relaxed);
                        tx.send(Job::Local(e.path)).is_ok()
                    }
                    walk::Found::Error(e) => {
                        progress.files_scanned.fetch_add(1, Ordering::Relaxed);
                        send(e.report())
                    }
                    walk::Found::SkippedLink(_) => true,
                }
            });
            progress.walk_done.store(true, Ordering::Release);
            drop(tx);
        });
        let _ = rx.into_iter().par_bridge().try_for_each(|job| {
            if halted() {
                return Err(());
            }
            let v = match job {
                Job::Local(path) => cache::scan_cached(&path, opts, cache),
                Job::Remote(o) => cache::scan_remote_cached(&o, opts, cache),
            };
            progress.files_scanned.fetch_add(1, Ordering::Relaxed);
            if send(v) {
                Ok(())
            } else {
                Err(())
            }
        });
        // Dropping the receiver (above, when try_for_each returns) fails the walk's next send.
    });
}

/// What a scan of `roots` would read, without reading any file or object: (path or URL, size, bytes
/// the scan reads at least) of each, then (path, message naming it) of each path that cannot be walked
/// or listed.
#[allow(clippy::type_complexity)]
pub fn plan(
    roots: &[PathBuf],
    follow_links: bool,
    opts: &ScanOptions,
) -> (Vec<(String, u64, u64)>, Vec<(String, String)>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut paths = Vec::new();
    for r in roots {
        match r.to_str().filter(|u| remote::is_url(u)) {
            Some(url) => {
                let listed = remote::list(url, opts.endpoint_url.as_deref(), &mut |o| {
                    let read = remote::bytes_to_read(&o.url, o.size, opts);
                    out.push((o.url, o.size, read));
                    true
                });
                if let Err(e) = listed {
                    errors.push((url.to_string(), e));
                }
            }
            None => paths.push(r.clone()),
        }
    }
    let (files, errs) = walk::walk(&paths, follow_links, 0);
    for f in files {
        let shown = report::path_fields(&f.path).0;
        let read = remote::bytes_to_read(&shown, f.size, opts);
        out.push((shown, f.size, read));
    }
    // As the scan reports them: the message names the path.
    errors.extend(errs.iter().map(|e| {
        let r = e.report();
        (r.path, r.error.map(|x| x.message).unwrap_or_default())
    }));
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn links_below_a_root_are_counted_when_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib");
        std::fs::create_dir(&lib).unwrap();
        std::fs::write(lib.join("a.bin"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("store")).unwrap();
        std::fs::write(dir.path().join("store/b.bin"), b"yy").unwrap();
        std::os::unix::fs::symlink(dir.path().join("store/b.bin"), lib.join("b.bin")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("store"), lib.join("store")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), lib.join("dangling")).unwrap();
        let opts = ScanOptions::default();
        for (follow, files, skipped) in [(false, 1, 3), (true, 3, 0)] {
            let progress = Progress::default();
            let n = AtomicUsize::new(0);
            scan_stream(
                std::slice::from_ref(&lib),
                follow,
                2,
                &opts,
                None,
                &progress,
                |v| {
                    if v.error.is_none() {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    true
                },
            );
            // followed: a.bin, the link b.bin and store/b.bin; the dangling link is an error report
            assert_eq!(n.load(Ordering::Relaxed), files, "follow={follow}");
            assert_eq!(
                progress.skipped_links.load(Ordering::Relaxed),
                skipped,
                "follow={follow}"
            );
        }
    }

    #[test]
    fn stream_reports_every_file_once_and_stops_when_told() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..300 {
            std::fs::write(dir.path().join(format!("f{i}.bin")), b"x").unwrap();
        }
        let roots = [dir.path().to_path_buf(), dir.path().join("f7.bin")];
        let opts = ScanOptions::default();
        let progress = Progress::default();
        let seen = std::sync::Mutex::new(std::collections::HashSet::new());
        scan_stream(&roots, false, 2, &opts, None, &progress, |v| {
            assert!(seen.lock().unwrap().insert(v.path));
            true
        });
        assert_eq!(seen.lock().unwrap().len(), 300);
        assert_eq!(progress.skipped_links.load(Ordering::Relaxed), 0);
        assert_eq!(progress.files_found.load(Ordering::Relaxed), 300);
        assert_eq!(progress.bytes_found.load(Ordering::Relaxed), 300);
        assert!(progress.walk_done.load(Ordering::Relaxed));

        let got = AtomicUsize::new(0);
        let progress = Progress::default();
        scan_stream(&roots[..1], false, 2, &opts, None, &progress, |_| {
            got.fetch_add(1, Ordering::Relaxed);
            false
        });
        assert_eq!(
            got.load(Ordering::Relaxed),
            1,
            "nothing is emitted after a refusal"
        );
        let scanned = progress.files_scanned.load(Ordering::Relaxed);
        assert!(
            scanned < 300,
            "the scan went on after it was stopped: {scanned} files"
        );
    }
}
