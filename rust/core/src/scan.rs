//! Scanning one file end to end: open (sniff, parse, classify, check), then hash.

use crate::classify::{Classification, Role};
use crate::datapass::{self, HashMode};
use crate::kind::Kind;
use crate::pickle::PickleError;
use crate::report::{ComponentReport, ErrorKind, FileError, FileReport};
use crate::sniff::Format;
use crate::source::{ChunkSource, FileSource};
use crate::table::{open_table, OpenError, Table};
use crate::tensor::TensorInfo;
use serde_json::Value;
use std::collections::BTreeMap;
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
    /// The endpoint of an S3-compatible service for `s3://` roots (else `AWS_ENDPOINT_URL`, else AWS).
    pub endpoint_url: Option<String>,
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
            endpoint_url: None,
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
        format: Format::Unknown,
        ..Default::default()
    };
    let table = match open_table(path) {
        Ok(t) => t,
        Err(e) => {
            opening_failed(path, e, &mut r);
            return r;
        }
    };
    if let Err(e) = scan_table(table, opts, &mut r, None) {
        r.error = Some(FileError {
            kind: ErrorKind::Io,
            message: format!("{}: {e}", r.path),
        });
    }
    r
}

/// Fills the report of a file `open_table` refused: a finding, an error, or just "not a model".
fn opening_failed(path: &Path, e: OpenError, r: &mut FileReport) {
    if let Some(meta) = std::fs::metadata(path).ok().filter(|m| m.is_file()) {
        r.size = meta.len();
        r.mtime = crate::walk::mtime_of(&meta);
    }
    opening_failed_report(e, r);
}

/// The report part of [`opening_failed`] (size and mtime already filled in; `r.path` names the file).
pub(crate) fn opening_failed_report(e: OpenError, r: &mut FileReport) {
    r.format = e.format();
    match e {
        OpenError::Io(e) => {
            r.error = Some(FileError {
                kind: ErrorKind::Io,
                message: format!("{}: {e}", r.path),
            })
        }
        OpenError::NotAModel(_) => {}
        OpenError::Header(h) => r.findings.push(h.finding()),
        // Any other zip (a password-protected archive, a dataset) is not a model file.
        OpenError::Pickle(_, PickleError::NoPickle) => r.format = Format::Unknown,
        OpenError::Pickle(_, reason) => {
            r.error = Some(FileError {
                kind: ErrorKind::Format,
                message: format!("{}: {reason}", r.path),
            })
        }
        OpenError::Npy(_, reason) => {
            r.error = Some(FileError {
                kind: ErrorKind::Format,
                message: format!("{}: {reason}", r.path),
            })
        }
    }
}

/// Fills `r` from an opened table and runs the data pass (when asked) over the table's file, or over
/// `remote` for a table opened by ranged reads.
pub(crate) fn scan_table(
    t: Table,
    opts: &ScanOptions,
    r: &mut FileReport,
    remote: Option<&mut dyn ChunkSource>,
) -> std::io::Result<()> {
    r.size = t.size;
    r.mtime = t.mtime;
    r.format = t.format;
    header_fields(r, &t.tensors, &t.class, &t.metadata, t.findings, t.wasted);
    if opts.hash != HashMode::None && r.size > 0 {
        let mut local;
        let bytes: &mut dyn ChunkSource = match (t.file.as_ref(), remote) {
            (Some(file), _) => {
                local = FileSource::new(file, r.size);
                &mut local
            }
            (None, Some(src)) => src,
            (None, None) => {
                return Err(std::io::Error::other("no bytes to read for the data pass"))
            }
        };
        let mut src = datapass::Source {
            bytes,
            tensors: &t.tensors,
            class: &t.class,
            safetensors_metadata: (t.format == Format::Safetensors).then_some(&t.metadata),
            stop: opts.stop.as_deref(),
        };
        let dp = datapass::run_with(&mut src, opts.hash, opts.sha256, opts.fingerprint);
        if let Some(e) = dp.io_error {
            return Err(e);
        }
        data_fields(r, dp);
    }
    r.findings
        .sort_by(|a, b| b.severity.cmp(&a.severity).then(a.check.cmp(b.check)));
    Ok(())
}

/// Fills what the tensor table says: kind, arch, totals, metadata, the header-level findings.
pub(crate) fn header_fields(
    r: &mut FileReport,
    tensors: &[TensorInfo],
    class: &Classification,
    metadata: &BTreeMap<String, Value>,
    findings: Vec<crate::report::Finding>,
    wasted: BTreeMap<String, u64>,
) {
    r.kind = class.kind;
    // Bare pickles and object arrays list no tensors at all: "empty" would claim what is not known.
    if tensors.is_empty()
        && !matches!(
            r.format,
            Format::Safetensors
                | Format::TorchZip
                | Format::TorchLegacy
                | Format::TorchTar
                | Format::StateDict
        )
    {
        r.kind = Kind::Unknown;
    }
    r.arch = class.arch;
    r.identification = class.identification.clone();
    r.tensors = tensors.len() as u64;
    summarize(tensors, class, r);
    r.provenance = crate::provenance::parse(metadata);
    r.metadata = metadata
        .iter()
        .map(|(k, v)| (k.clone(), truncate_value(v)))
        .collect();
    r.findings = findings;
    r.wasted_bytes = wasted;
}

/// Fills what the data pass found: hashes, fingerprint, component hashes, value findings.
pub(crate) fn data_fields(r: &mut FileReport, dp: datapass::DataPass) {
    r.hashes = dp.hashes;
    r.fingerprint = dp.fingerprint;
    for (c, h) in dp.components {
        if let Some(cr) = r.components.get_mut(&c) {
            cr.blake3 = Some(h);
        }
    }
    r.findings.extend(dp.findings);
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
