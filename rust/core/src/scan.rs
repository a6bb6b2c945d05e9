//! Scanning one file end to end: sniff, parse, classify, check, hash.

use crate::classify::{classify, Classification, Role};
use crate::datapass::{self, HashMode};
use crate::mapguard::GuardedMap;
use crate::report::{ComponentReport, ErrorKind, FileError, FileReport};
use crate::sniff::{sniff, Format, HEAD_LEN};
use crate::tensor::TensorInfo;
use crate::{checks, npy, pickle, safetensors};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How to scan.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    pub hash: HashMode,
    pub sha256: bool,
    /// Set by another thread to abandon the scan: a report made after it is set is partial, and is
    /// neither cached nor meant to be shown.
    pub stop: Option<Arc<AtomicBool>>,
    /// Also sample the lineage fingerprint in the data pass (needs `hash` other than `None`).
    pub fingerprint: bool,
}

impl ScanOptions {
    /// True once the scan was asked to stop.
    pub fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            hash: HashMode::Full,
            sha256: false,
            stop: None,
            fingerprint: false,
        }
    }
}

/// Longest metadata value kept in a report, in characters.
const METADATA_VALUE_MAX: usize = 1024;

/// Scans one file; never panics on bad input, problems become findings or `error`.
pub fn scan_file(path: &Path, opts: &ScanOptions) -> FileReport {
    if path.is_dir() && crate::diffusers::detect(path).is_some() {
        return crate::diffusers::scan_diffusers(path, opts);
    }
    let (shown, path_b64) = crate::report::path_fields(path);
    let mut r = FileReport {
        path: shown,
        path_b64,
        format: "unknown",
        kind: "unknown",
        arch: "unknown",
        ..Default::default()
    };
    if let Err(e) = scan_into(path, opts, &mut r) {
        r.error = Some(FileError {
            kind: ErrorKind::Io,
            message: format!("{}: {e}", r.path),
        });
    }
    r
}

/// A file's tensor table with each tensor's role, as fixes need it.
pub struct TensorTable {
    pub format: &'static str,
    pub header_len: u64,
    pub tensors: Vec<TensorInfo>,
    pub class: Classification,
    pub metadata: BTreeMap<String, Value>,
}

/// Reads and classifies a file's tensors (no checks, no hashing); `Err` says why it cannot be read.
pub fn read_table(path: &Path) -> Result<TensorTable, String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let file = File::open(path).map_err(err)?;
    let size = file.metadata().map_err(err)?.len();
    let mut head = Vec::with_capacity(HEAD_LEN);
    (&file)
        .take(HEAD_LEN as u64)
        .read_to_end(&mut head)
        .map_err(err)?;
    let named_st = path
        .extension()
        .is_some_and(|e| e == "safetensors" || e == "sft");
    let format = sniff(&head, named_st);
    let (header_len, tensors, metadata) = match format {
        Format::Unknown => {
            return Err(format!(
                "{}: not a model file fastscan reads",
                path.display()
            ))
        }
        Format::Safetensors => {
            let (h, _) = read_safetensors(&file, &head, size)
                .map_err(|e| format!("{}: {}", path.display(), e.reason))?;
            (h.header_len, h.tensors, h.metadata)
        }
        Format::Npy | Format::Npz => {
            let map = GuardedMap::new(&file, size).map_err(err)?;
            let n = npy::scan(&map, format, &stem(path));
            if map.faulted() {
                return Err(err(changed_while_read()));
            }
            let n = n.map_err(|e| format!("{}: {e}", path.display()))?;
            (0, n.tensors, BTreeMap::new())
        }
        _ => {
            let map = GuardedMap::new(&file, size).map_err(err)?;
            let p = pickle::scan(&map, format);
            if map.faulted() {
                return Err(err(changed_while_read()));
            }
            let p = p.map_err(|e| format!("{}: {e}", path.display()))?;
            (0, p.tensors, BTreeMap::new())
        }
    };
    let class = classify(&tensors);
    Ok(TensorTable {
        format: format.name(),
        header_len,
        tensors,
        class,
        metadata,
    })
}

fn scan_into(path: &Path, opts: &ScanOptions, r: &mut FileReport) -> std::io::Result<()> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    r.size = meta.len();
    r.mtime = crate::walk::mtime_of(&meta);
    let mut head = Vec::with_capacity(HEAD_LEN);
    (&file).take(HEAD_LEN as u64).read_to_end(&mut head)?;
    let named_st = path
        .extension()
        .is_some_and(|e| e == "safetensors" || e == "sft");
    let format = sniff(&head, named_st);
    r.format = format.name();

    let mut metadata = BTreeMap::new();
    let tensors: Vec<TensorInfo> = match format {
        Format::Unknown => return Ok(()),
        Format::Safetensors => match read_safetensors(&file, &head, r.size) {
            Ok((h, findings)) => {
                r.findings.extend(findings);
                metadata = h.metadata;
                h.tensors
            }
            Err(e) => {
                r.findings.push(e.finding());
                return Ok(());
            }
        },
        Format::Npy | Format::Npz => {
            let map = GuardedMap::new(&file, r.size)?;
            let scanned = npy::scan(&map, format, &stem(path));
            if map.faulted() {
                return Err(changed_while_read());
            }
            match scanned {
                Ok(n) => {
                    r.findings.extend(n.findings);
                    n.tensors
                }
                Err(reason) => {
                    r.error = Some(FileError {
                        kind: ErrorKind::Format,
                        message: format!("{}: {reason}", r.path),
                    });
                    return Ok(());
                }
            }
        }
        Format::TorchZip | Format::TorchLegacy | Format::TorchTar | Format::Pickle => {
            let map = GuardedMap::new(&file, r.size)?;
            let scanned = pickle::scan(&map, format);
            if map.faulted() {
                return Err(changed_while_read());
            }
            match scanned {
                Ok(p) => {
                    r.findings.extend(p.findings);
                    p.tensors
                }
                // Any other zip (a password-protected archive, a dataset) is not a model file.
                Err(reason) if reason.starts_with(pickle::NO_PICKLE) => {
                    r.format = Format::Unknown.name();
                    return Ok(());
                }
                Err(reason) => {
                    r.error = Some(FileError {
                        kind: ErrorKind::Format,
                        message: format!("{}: {reason}", r.path),
                    });
                    return Ok(());
                }
            }
        }
    };

    let class = classify(&tensors);
    r.kind = class.kind;
    // Bare pickles and object arrays list no tensors at all: "empty" would claim what is not known.
    if tensors.is_empty()
        && !matches!(
            format,
            Format::Safetensors | Format::TorchZip | Format::TorchLegacy | Format::TorchTar
        )
    {
        r.kind = "unknown";
    }
    r.arch = class.arch;
    r.identification = class.identification.clone();
    r.tensors = tensors.len() as u64;
    summarize(&tensors, &class, r);
    r.provenance = crate::provenance::parse(&metadata);
    r.metadata = metadata
        .iter()
        .map(|(k, v)| (k.clone(), truncate_value(v)))
        .collect();

    let read_at = |off: u64, len: u64| -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, off)?;
        Ok(buf)
    };
    let ctx = checks::Context {
        size: r.size,
        format: r.format,
        tensors: &tensors,
        class: &class,
        metadata: &metadata,
        read_at: &read_at,
    };
    let outcome = checks::run(&ctx);
    r.findings.extend(outcome.findings);
    r.wasted_bytes = outcome.wasted;

    if opts.hash != HashMode::None && r.size > 0 {
        let map = GuardedMap::new(&file, r.size)?;
        let src = datapass::Source {
            bytes: datapass::Bytes::Mapped {
                map: &map,
                file: &file,
            },
            tensors: &tensors,
            class: &class,
            safetensors_metadata: (format == Format::Safetensors).then_some(&metadata),
            stop: opts.stop.as_deref(),
        };
        let dp = datapass::run_with(&src, opts.hash, opts.sha256, opts.fingerprint);
        r.hashes = dp.hashes;
        r.fingerprint = dp.fingerprint;
        for (c, h) in dp.components {
            if let Some(cr) = r.components.get_mut(&c) {
                cr.blake3 = Some(h);
            }
        }
        r.findings.extend(dp.findings);
    }
    r.findings
        .sort_by(|a, b| b.severity.cmp(&a.severity).then(a.check.cmp(b.check)));
    Ok(())
}

/// A file's name without its extension (an `.npy` array's name).
fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The error of a file that shrank while its container was being parsed (the parse saw zeros).
fn changed_while_read() -> std::io::Error {
    std::io::Error::other("the file shrank while it was being read")
}

fn read_safetensors(
    file: &File,
    head: &[u8],
    size: u64,
) -> Result<(safetensors::Header, Vec<crate::report::Finding>), safetensors::HeaderError> {
    let n = safetensors::header_len(head, size)? as usize;
    // One header buffer per thread, reused: fresh multi-MB allocations cost a page fault per 4 KiB.
    thread_local!(static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) });
    BUF.with_borrow_mut(|buf| {
        buf.resize(n, 0);
        let read = file.read_exact_at(&mut buf[..n], 8);
        let parsed = read
            .map_err(|e| safetensors::HeaderError {
                reason: format!("cannot read header: {e}"),
                position: 8,
            })
            .and_then(|_| safetensors::parse_header(&buf[..n], size));
        if buf.capacity() > 16 << 20 {
            *buf = Vec::new(); // do not keep a rare huge header's buffer alive
        }
        parsed
    })
}

fn truncate_value(v: &Value) -> Value {
    match v {
        Value::String(s) if s.chars().count() > METADATA_VALUE_MAX => {
            let cut: String = s.chars().take(METADATA_VALUE_MAX).collect();
            Value::String(format!("{cut}… ({} chars)", s.chars().count()))
        }
        other => other.clone(),
    }
}

/// Fills the dtype histogram and per-component totals.
fn summarize(tensors: &[TensorInfo], class: &Classification, r: &mut FileReport) {
    // Accumulate under static keys, allocating each map key once rather than once per tensor.
    type Histogram = BTreeMap<&'static str, u64>;
    let mut dtypes: Histogram = BTreeMap::new();
    let mut comps: BTreeMap<&'static str, (u64, u64, Histogram)> = BTreeMap::new();
    for (t, role) in tensors.iter().zip(&class.roles) {
        *dtypes.entry(t.dtype.name()).or_default() += t.len;
        let comp = match role {
            Role::Component { name, .. } => *name,
            Role::Ema => "ema",
            Role::Buffer => "buffers",
            Role::Junk => "junk",
        };
        let c = comps.entry(comp).or_default();
        c.0 += 1;
        c.1 += t.len;
        *c.2.entry(t.dtype.name()).or_default() += t.len;
    }
    let owned = |h: Histogram| h.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    r.dtypes = owned(dtypes);
    r.components = comps
        .into_iter()
        .map(|(name, (tensors, bytes, dt))| {
            let c = ComponentReport {
                tensors,
                bytes,
                dtypes: owned(dt),
                blake3: None,
            };
            (name.to_string(), c)
        })
        .collect();
}
