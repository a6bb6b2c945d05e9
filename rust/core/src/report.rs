//! Plain-data results of a scan: what crosses to Python and into the JSON report.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// How serious a finding is (SPEC §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

/// One problem found in a file.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub severity: Severity,
    pub message: String,
    pub details: Value,
}

impl Finding {
    /// Builds a finding from its parts.
    pub fn new(
        check: &'static str,
        severity: Severity,
        message: impl Into<String>,
        details: Value,
    ) -> Self {
        Finding {
            check,
            severity,
            message: message.into(),
            details,
        }
    }
}

/// How well a file matched the rule it was identified by (SPEC §3, docs/report-schema.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Identification {
    /// Share of the rule's keys present with the rule's shape, 0..1.
    pub score: f64,
    /// Keys of the rule present with its shape, and keys in the rule.
    pub matched: u64,
    pub of: u64,
    /// Keys of the rule absent or of another shape (first few), and how many in all.
    pub missing: Vec<String>,
    pub missing_count: u64,
    /// Tensors the identification placed in no component of the arch.
    pub extra: u64,
    /// `score >= threshold`: destructive fixes (prune, extract, bake-vae) run only then, or with --force.
    pub confident: bool,
    pub threshold: f64,
}

/// Per-component totals of a file.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ComponentReport {
    pub tensors: u64,
    pub bytes: u64,
    /// dtype name -> bytes
    pub dtypes: BTreeMap<String, u64>,
    /// Canonical component hash v1 (SPEC §5), when hashes were asked for.
    pub blake3: Option<String>,
}

/// Whole-file hashes (SPEC §5); absent ones are null.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Hashes {
    pub blake3: Option<String>,
    pub sha256: Option<String>,
    pub autov1: Option<String>,
    pub autov2: Option<String>,
    pub addnet: Option<String>,
}

/// Why a file could not be read at all.
#[derive(Clone, Debug, Serialize)]
pub struct FileError {
    pub kind: &'static str,
    pub message: String,
}

/// Everything fastscan knows about one file.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FileReport {
    pub path: String,
    pub size: u64,
    pub mtime: f64,
    pub format: crate::sniff::Format,
    pub kind: &'static str,
    pub arch: &'static str,
    pub tensors: u64,
    /// dtype name -> bytes
    pub dtypes: BTreeMap<String, u64>,
    pub components: BTreeMap<String, ComponentReport>,
    pub hashes: Hashes,
    pub metadata: BTreeMap<String, Value>,
    pub findings: Vec<Finding>,
    /// Bytes pruning would save, by cause (`ema`, `junk`, `float64`).
    pub wasted_bytes: BTreeMap<String, u64>,
    /// How sure the kind/arch is (null for kinds identified by their own markers: LoRA, embedding, ...).
    pub identification: Option<Identification>,
    pub error: Option<FileError>,
}
