//! Plain-data results of a scan: what crosses to Python and into the JSON report.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// How serious a finding is (contract §4).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

/// One problem found in a file.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Finding {
    /// The check's name (`header.truncated`, ...): a closed list, so a name read back is interned.
    #[serde(deserialize_with = "interned")]
    pub check: Name,
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

/// A name from a closed list, kept for the life of the process (spelled as an alias so that serde's
/// derive does not take it for a string borrowed from the input).
pub type Name = &'static str;

/// A name read back from a report (a check's, a part's role), interned: the names are a closed list.
pub(crate) fn interned<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let s = std::borrow::Cow::<str>::deserialize(d)?;
    Ok(crate::classify::leak(&s))
}

/// How well a file matched the rule it was identified by (contract §3, docs/report-schema.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct ComponentReport {
    pub tensors: u64,
    pub bytes: u64,
    /// dtype name -> bytes
    pub dtypes: BTreeMap<String, u64>,
    /// Canonical component hash v1 (contract §5), when hashes were asked for.
    pub blake3: Option<String>,
}

/// Whole-file hashes (contract §5); absent ones are null.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Hashes {
    pub blake3: Option<String>,
    pub sha256: Option<String>,
    pub autov1: Option<String>,
    pub autov2: Option<String>,
    pub addnet: Option<String>,
}

/// What kind of failure kept a file from being read at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// It cannot be opened or read (permissions, a dangling link, it changed while read).
    Io,
    /// A symbolic link loop met with `--follow-links`.
    Loop,
    /// A container too damaged to parse.
    Format,
    /// `--cluster`: every Dask worker that scanned the file was lost before it finished (written by
    /// the Python cluster driver, never by the core itself).
    Worker,
}

impl ErrorKind {
    /// The report's name for this kind (`io`, `loop`, `format`, `worker`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::Loop => "loop",
            ErrorKind::Format => "format",
            ErrorKind::Worker => "worker",
        }
    }
}

/// Why a file could not be read at all.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct FileError {
    pub kind: ErrorKind,
    pub message: String,
}

/// The report's `path` (UTF-8, bytes that are not shown as U+FFFD) and, only when the path is not
/// valid UTF-8, its exact bytes in standard base64 (`path_b64`), so every report leads back to its file.
pub fn path_fields(path: &std::path::Path) -> (String, Option<String>) {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(base64(bytes)),
        ),
    }
}

/// Standard base64 (RFC 4648, with padding).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            let ch = if i <= c.len() {
                ABC[(n >> shift & 63) as usize] as char
            } else {
                '='
            };
            out.push(ch);
        }
    }
    out
}

/// The bytes of standard base64 text (as [`path_fields`] writes `path_b64`); None when it is not that.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let t = text.as_bytes();
    if !t.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(t.len() / 4 * 3);
    for (i, q) in t.chunks(4).enumerate() {
        let last = i + 1 == t.len() / 4;
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = n << 6 | val(c)?;
        }
        n <<= 6 * pad as u32;
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}

/// Everything fastscan knows about one file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct FileReport {
    pub path: String,
    /// The path's bytes in base64 when they are not UTF-8 (see [`path_fields`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")] // absent, never null
    pub path_b64: Option<String>,
    pub size: u64,
    pub mtime: f64,
    pub format: crate::sniff::Format,
    pub kind: crate::kind::Kind,
    pub arch: crate::kind::Arch,
    pub tensors: u64,
    /// dtype name -> bytes
    pub dtypes: BTreeMap<String, u64>,
    pub components: BTreeMap<String, ComponentReport>,
    pub hashes: Hashes,
    pub metadata: BTreeMap<String, Value>,
    /// What the metadata says about how the model was made (null when it says nothing).
    pub provenance: Option<crate::provenance::Provenance>,
    pub findings: Vec<Finding>,
    /// Bytes pruning would save, by cause (`ema`, `junk`, `float64`).
    pub wasted_bytes: BTreeMap<String, u64>,
    pub error: Option<FileError>,
    /// The files of a diffusers folder (absent for a single file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<crate::diffusers::Part>,
    /// How sure the kind/arch is (null for kinds identified by their own markers: LoRA, embedding, ...).
    pub identification: Option<Identification>,
    /// Lineage fingerprint (docs/fingerprint.md), only when the scan was asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "crate::fingerprint::Fingerprint")] // absent, never null
    pub fingerprint: Option<crate::fingerprint::Fingerprint>,
}

/// Totals over the file objects of a report (its `summary`, docs/report-schema.md): counted by the
/// core as each report is handed out, so the API, `--json` and `--jsonl` sum the same way.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub files: u64,
    pub bytes: u64,
    /// Files that could not be read at all.
    pub errors: u64,
    pub by_kind: BTreeMap<String, u64>,
    pub by_arch: BTreeMap<String, u64>,
    /// Check name -> findings of it.
    pub by_check: BTreeMap<String, u64>,
    /// Severity -> findings of it (every severity present, 0 when none).
    pub findings: BTreeMap<Severity, u64>,
    /// Cause -> bytes pruning would save (the sum of the files' `wasted_bytes`).
    pub wasted_bytes: BTreeMap<String, u64>,
    /// Symbolic links below a root the walk did not follow (set by the scan, not by `add`).
    pub skipped_links: u64,
}

impl Default for Summary {
    fn default() -> Self {
        Summary {
            files: 0,
            bytes: 0,
            errors: 0,
            by_kind: BTreeMap::new(),
            by_arch: BTreeMap::new(),
            by_check: BTreeMap::new(),
            findings: [
                Severity::Info,
                Severity::Warning,
                Severity::Error,
                Severity::Critical,
            ]
            .into_iter()
            .map(|s| (s, 0))
            .collect(),
            wasted_bytes: BTreeMap::new(),
            skipped_links: 0,
        }
    }
}

impl Summary {
    /// Counts one more file.
    pub fn add(&mut self, f: &FileReport) {
        fn bump(m: &mut BTreeMap<String, u64>, k: &str, n: u64) {
            match m.get_mut(k) {
                Some(v) => *v += n,
                None => {
                    m.insert(k.to_string(), n);
                }
            }
        }
        self.files += 1;
        self.bytes += f.size;
        self.errors += f.error.is_some() as u64;
        bump(&mut self.by_kind, f.kind.name(), 1);
        bump(&mut self.by_arch, f.arch.name(), 1);
        for x in &f.findings {
            *self.findings.entry(x.severity).or_insert(0) += 1;
            bump(&mut self.by_check, x.check, 1);
        }
        for (cause, n) in &f.wasted_bytes {
            bump(&mut self.wasted_bytes, cause, *n);
        }
    }
}

/// The JSON Schema (draft 2020-12) of a file object, generated from [`FileReport`] and the types it
/// holds; committed as docs/report.schema.json (a test fails when the two differ).
pub fn file_schema() -> String {
    // The serialize contract: a field is required when it is always written (null or not).
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<FileReport>();
    let mut s = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regenerates the schema and compares it with the committed file; `FASTSCAN_BLESS=1` rewrites it.
    #[test]
    fn committed_schema_is_generated_from_the_types() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/report.schema.json");
        let want = file_schema();
        if std::env::var_os("FASTSCAN_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let got = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            got == want,
            "docs/report.schema.json differs from the Rust types: run FASTSCAN_BLESS=1 cargo test -p fastscan-core committed_schema"
        );
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (raw, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), want);
        }
    }

    #[test]
    fn base64_decodes_what_it_encodes() {
        for raw in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"/m/a\xffb\x00\xfe",
        ] {
            assert_eq!(base64_decode(&base64(raw)).as_deref(), Some(raw));
        }
        for bad in ["Zg=", "Z===", "Zg==Zm8=", "Zm9v!A=="] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn summary_counts_every_severity_and_sums_by_key() {
        let mut s = Summary::default();
        let mut f = FileReport {
            size: 10,
            ..Default::default()
        };
        f.findings
            .push(Finding::new("junk.ema", Severity::Warning, "", Value::Null));
        f.findings
            .push(Finding::new("junk.ema", Severity::Warning, "", Value::Null));
        f.wasted_bytes.insert("ema".into(), 4);
        s.add(&f);
        f.error = Some(FileError {
            kind: ErrorKind::Io,
            message: String::new(),
        });
        s.add(&f);
        assert_eq!((s.files, s.bytes, s.errors), (2, 20, 1));
        assert_eq!(s.by_check["junk.ema"], 4);
        assert_eq!(s.wasted_bytes["ema"], 8);
        assert_eq!(s.by_kind["unknown"], 2);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["findings"],
            serde_json::json!({"info": 0, "warning": 4, "error": 0, "critical": 0})
        );
    }

    #[test]
    fn only_non_utf8_paths_carry_their_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/m/a\xffb"));
        assert_eq!(
            path_fields(p),
            ("/m/a\u{fffd}b".to_string(), Some("L20vYf9i".to_string()))
        );
        assert_eq!(
            path_fields(std::path::Path::new("/m/é")),
            ("/m/é".to_string(), None)
        );
    }
}
