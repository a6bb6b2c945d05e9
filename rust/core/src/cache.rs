//! The incremental cache: a report per (device, inode, size, mtime, options), in SQLite.

use crate::report::FileReport;
use crate::scan::{scan_file, ScanOptions};
use rusqlite::{params, Connection, OptionalExtension};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Bumped whenever the report a scan produces changes, so old entries are never served.
const REPORT_VERSION: &str = concat!("fastscan.report/1 core ", env!("CARGO_PKG_VERSION"), " r3");

/// An open cache database; safe to share between threads and with other processes (WAL).
pub struct Cache {
    conn: Mutex<Connection>,
    /// Set when the database was unreadable and had to be rebuilt.
    pub warning: Option<String>,
}

/// The identity of a file's content as `stat` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

impl Stamp {
    /// Stats `path` (following links).
    pub fn of(path: &Path) -> std::io::Result<Stamp> {
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        })
    }
}

fn init(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS reports (
            dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
            options TEXT NOT NULL, report TEXT NOT NULL,
            PRIMARY KEY (dev, ino, options));
         CREATE TABLE IF NOT EXISTS remote_reports (
            url TEXT NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL,
            options TEXT NOT NULL, report TEXT NOT NULL,
            PRIMARY KEY (url, options));
         PRAGMA quick_check;",
    )
}

impl Cache {
    /// Opens (or creates) the database at `path`; a corrupt one is moved aside and rebuilt, with a warning.
    pub fn open(path: &Path) -> Result<Cache, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cache directory {}: {e}", dir.display()))?;
        }
        let first = Connection::open(path).and_then(|c| init(&c).map(|_| c));
        let (conn, warning) = match first {
            Ok(c) => (c, None),
            Err(e) => {
                let aside = PathBuf::from(format!("{}.corrupt", path.display()));
                let _ = std::fs::rename(path, &aside);
                for ext in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
                }
                let c = Connection::open(path)
                    .and_then(|c| init(&c).map(|_| c))
                    .map_err(|e2| format!("cache {}: {e2}", path.display()))?;
                let w = format!(
                    "cache {} was unreadable ({e}); moved it to {} and started a new one",
                    path.display(),
                    aside.display()
                );
                (c, Some(w))
            }
        };
        Ok(Cache {
            conn: Mutex::new(conn),
            warning,
        })
    }

    /// The cached report for this stamp and options, if any (one that no longer reads as a report,
    /// written by an older version, is a miss).
    pub fn get(&self, stamp: Stamp, options: &str) -> Option<FileReport> {
        let conn = self.conn.lock().ok()?;
        let text: Option<String> = conn
            .query_row(
                "SELECT report FROM reports WHERE dev=?1 AND ino=?2 AND options=?3 AND size=?4 AND mtime_ns=?5",
                params![stamp.dev as i64, stamp.ino as i64, options, stamp.size as i64, stamp.mtime_ns],
                |r| r.get(0),
            )
            .optional()
            .ok()
            .flatten();
        text.and_then(|t| serde_json::from_str(&t).ok())
    }

    /// Stores a report (errors are ignored: the cache only ever saves time).
    pub fn put(&self, stamp: Stamp, options: &str, report: &FileReport) {
        if let (Ok(conn), Ok(text)) = (self.conn.lock(), serde_json::to_string(report)) {
            let _ = conn.execute(
                "INSERT OR REPLACE INTO reports (dev, ino, size, mtime_ns, options, report) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![stamp.dev as i64, stamp.ino as i64, stamp.size as i64, stamp.mtime_ns, options, text],
            );
        }
    }
}

impl Cache {
    /// The cached report of a remote object, if its (URL, size, ETag) are those cached.
    pub fn get_remote(
        &self,
        url: &str,
        size: u64,
        etag: &str,
        options: &str,
    ) -> Option<FileReport> {
        let conn = self.conn.lock().ok()?;
        let text: Option<String> = conn
            .query_row(
                "SELECT report FROM remote_reports WHERE url=?1 AND options=?2 AND size=?3 AND etag=?4",
                params![url, options, size as i64, etag],
                |r| r.get(0),
            )
            .optional()
            .ok()
            .flatten();
        text.and_then(|t| serde_json::from_str(&t).ok())
    }

    /// Stores the report of a remote object (errors are ignored: the cache only ever saves time).
    pub fn put_remote(&self, url: &str, size: u64, etag: &str, options: &str, report: &FileReport) {
        if let (Ok(conn), Ok(text)) = (self.conn.lock(), serde_json::to_string(report)) {
            let _ = conn.execute(
                "INSERT OR REPLACE INTO remote_reports (url, size, etag, options, report) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![url, size as i64, etag, options, text],
            );
        }
    }
}

/// Scans a remote object unless the cache holds a report for its (URL, size, ETag): a rescan of an
/// unchanged bucket is one listing. Objects without an ETag, and reports with an error or a
/// `file.changed` finding, are not cached.
pub fn scan_remote_cached(
    obj: &crate::remote::Object,
    opts: &ScanOptions,
    cache: Option<&Cache>,
) -> FileReport {
    let (Some(cache), Some(etag)) = (cache, obj.etag.as_deref()) else {
        return crate::remote::scan_object(obj, opts);
    };
    // As for local files: the cached scan samples the fingerprint, the report shows it when asked.
    let as_asked = |r: FileReport| as_asked(r, opts);
    let sampled = cached_options(opts);
    // The endpoint is part of the identity: two services may hold buckets of the same name.
    let url = format!("{} @{}", obj.url, obj.endpoint);
    let key = options_key(&sampled);
    if let Some(r) = cache.get_remote(&url, obj.size, etag, &key) {
        return as_asked(r);
    }
    let report = crate::remote::scan_object(obj, &sampled);
    let changed = report.findings.iter().any(|f| f.check == "file.changed");
    if report.error.is_none() && !changed && !opts.stopped() {
        cache.put_remote(&url, obj.size, etag, &key, &report);
    }
    as_asked(report)
}

/// `r` as the scan asked for it: the fingerprint a cached scan samples is shown only when asked.
fn as_asked(mut r: FileReport, opts: &ScanOptions) -> FileReport {
    if !opts.fingerprint {
        r.fingerprint = None;
    }
    r
}

/// What a cached scan computes for `opts`: a hashing scan also samples the lineage fingerprint (a
/// small share of the pass's work) and keeps it in the cache, so a later `lineage` of the same files
/// reads no data. The report returned carries it only when asked ([`scan_cached`]).
fn cached_options(opts: &ScanOptions) -> ScanOptions {
    ScanOptions {
        fingerprint: opts.fingerprint || opts.hash != crate::HashMode::None,
        ..opts.clone()
    }
}

/// The cache key part that depends on what the scan computes.
pub fn options_key(opts: &ScanOptions) -> String {
    let opts = &cached_options(opts);
    format!(
        "{REPORT_VERSION} hash={:?} sha256={}{}",
        opts.hash,
        opts.sha256,
        if opts.fingerprint {
            format!(" {}", crate::fingerprint::VERSION)
        } else {
            String::new()
        }
    )
}

/// Scans `path` unless the cache holds a report for its current stamp; returns the report.
///
/// Reports of files that changed during the scan, or that failed with an I/O error, are not cached.
///
/// Other tools' hash files are reported as sidecars, and the sidecar check runs on every model
/// report after the cache (sidecars change without the model changing): see the `sidecar_check` module.
pub fn scan_cached(path: &Path, opts: &ScanOptions, cache: Option<&Cache>) -> FileReport {
    if let Some(r) = crate::sidecar_check::sidecar_report(path) {
        return r;
    }
    let mut r = scan_stored(path, opts, cache);
    crate::sidecar_check::apply(path, &mut r);
    r
}

/// [`scan_cached`] without the sidecars: the part of the report the cache keeps.
fn scan_stored(path: &Path, opts: &ScanOptions, cache: Option<&Cache>) -> FileReport {
    // A folder's stamp does not change when the files inside it do: folders are never cached.
    let Some(cache) = cache.filter(|_| !path.is_dir()) else {
        return scan_file(path, opts);
    };
    let Ok(before) = Stamp::of(path) else {
        return scan_file(path, opts);
    };
    let asked = opts;
    let sampled = cached_options(opts);
    let opts = &sampled;
    let key = options_key(opts);
    if let Some(mut r) = cache.get(before, &key) {
        // The same inode may be reached under another name (renamed, hard-linked).
        (r.path, r.path_b64) = crate::report::path_fields(path);
        return as_asked(r, asked);
    }
    let report = scan_file(path, opts);
    // A stopped scan's report is partial: never served again.
    if report.error.is_none()
        && !opts.stopped()
        && Stamp::of(path).is_ok_and(|after| after == before)
    {
        cache.put(before, &key, &report);
    }
    as_asked(report, asked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_after_miss_and_invalidated_by_change() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.sqlite3");
        let f = dir.path().join("x.bin");
        std::fs::write(&f, b"hello").unwrap();
        let cache = Cache::open(&db).unwrap();
        let opts = ScanOptions::default();
        let s = Stamp::of(&f).unwrap();
        assert!(cache.get(s, &options_key(&opts)).is_none());
        let v = serde_json::to_value(scan_cached(&f, &opts, Some(&cache))).unwrap();
        let stored = cache.get(s, &options_key(&opts)).unwrap();
        assert_eq!(serde_json::to_value(stored).unwrap(), v);
        std::fs::write(&f, b"hello world").unwrap();
        assert!(cache
            .get(Stamp::of(&f).unwrap(), &options_key(&opts))
            .is_none());
    }

    #[test]
    fn a_cached_hashing_scan_keeps_the_fingerprint_and_shows_it_when_asked() {
        use crate::classify::Role;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c.sqlite3")).unwrap();
        // a VAE file (the tensors of the docs/fingerprint.md vector), every weight F32
        let names = [
            ("decoder.big", 20000),
            ("decoder.conv_in.weight", 3),
            ("encoder.conv_in.weight", 200),
        ];
        let mut header = String::from("{");
        let mut at = 0;
        for (i, (n, k)) in names.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            header += &format!(
                r#"{sep}"{n}":{{"dtype":"F32","shape":[{k}],"data_offsets":[{at},{}]}}"#,
                at + 4 * k
            );
            at += 4 * k;
        }
        header.push('}');
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend((0..at / 4).flat_map(|i| (i as f32 / 8.0).to_le_bytes()));
        let f = dir.path().join("vae.safetensors");
        std::fs::write(&f, &bytes).unwrap();
        let table = crate::open_table(&f).unwrap();
        assert!(
            matches!(table.class.roles[0], Role::Component { name: "vae", .. }),
            "fixture is not a VAE: {}",
            table.class.kind
        );
        let plain = ScanOptions::default();
        let first = scan_cached(&f, &plain, Some(&cache));
        assert!(first.fingerprint.is_none(), "shown only when asked");
        let asked = ScanOptions {
            fingerprint: true,
            ..plain.clone()
        };
        let key = options_key(&asked);
        let stored = cache.get(Stamp::of(&f).unwrap(), &key).unwrap();
        assert!(!stored.fingerprint.as_ref().unwrap().components.is_empty());
        let again = scan_cached(&f, &asked, Some(&cache));
        assert_eq!(again.fingerprint, stored.fingerprint);
        let none = ScanOptions {
            hash: crate::HashMode::None,
            ..plain
        };
        assert!(scan_cached(&f, &none, Some(&cache)).fingerprint.is_none());
    }

    #[test]
    fn corrupt_database_is_rebuilt_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.sqlite3");
        std::fs::write(&db, vec![0x5a; 8192]).unwrap();
        let cache = Cache::open(&db).unwrap();
        assert!(cache.warning.as_deref().unwrap().contains("unreadable"));
        let s = Stamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: 4,
        };
        let r = FileReport {
            path: "a".into(),
            ..Default::default()
        };
        cache.put(s, "k", &r);
        assert_eq!(cache.get(s, "k").unwrap().path, "a");
    }
}
