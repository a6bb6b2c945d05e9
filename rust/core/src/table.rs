//! `open_table`: the one front half of every use of a file (scan, fixes): format, header, tensors, roles, checks.

use crate::checks;
use crate::classify::{classify, Classification, Role};
use crate::mapguard::GuardedMap;
use crate::npy;
use crate::pickle::{self, PickleError};
use crate::report::Finding;
use crate::safetensors::{self, HeaderError};
use crate::sniff::{sniff, Format, HEAD_LEN};
use crate::tensor::TensorInfo;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Which `fix --prune` group a tensor falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PruneGroup {
    /// EMA weights and the EMA bookkeeping buffers (`fix --prune ema`).
    Ema,
    /// Keys of no component of the detected arch (`fix --prune junk`).
    Junk,
}

/// A file opened and judged: everything the scan and the fixes know about it before reading its data.
pub struct Table {
    /// The open file (the data pass and the fixes read from it).
    pub file: File,
    pub size: u64,
    pub mtime: f64,
    pub format: Format,
    /// Length of the JSON header of a safetensors file (0 for other formats).
    pub header_len: u64,
    pub tensors: Vec<TensorInfo>,
    pub class: Classification,
    /// `__metadata__` of a safetensors file, values as found.
    pub metadata: BTreeMap<String, Value>,
    /// Structural findings (`file.*`, `pickle.*`) and those of every header-level check.
    pub findings: Vec<Finding>,
    /// Bytes pruning would save, by cause.
    pub wasted: BTreeMap<String, u64>,
}

impl Table {
    /// Bytes of the file that belong to no tensor (gaps and trailing bytes of a safetensors file).
    pub fn unaccounted_bytes(&self) -> u64 {
        self.findings
            .iter()
            .find(|f| f.check == "file.unaccounted-bytes")
            .and_then(|f| f.details["bytes"].as_u64())
            .unwrap_or(0)
    }

    /// The `fix --prune` group of tensor `i`, if any.
    pub fn prune_group(&self, i: usize) -> Option<PruneGroup> {
        prune_group(&self.tensors[i], &self.class.roles[i])
    }
}

/// The `fix --prune` group of a tensor with role `role`, if any.
pub fn prune_group(t: &TensorInfo, role: &Role) -> Option<PruneGroup> {
    match role {
        Role::Ema => Some(PruneGroup::Ema),
        Role::Buffer if crate::classify::is_ema(&t.name) => Some(PruneGroup::Ema),
        Role::Junk => Some(PruneGroup::Junk),
        _ => None,
    }
}

/// Why a file cannot be opened as a model.
#[derive(Debug)]
pub enum OpenError {
    /// The file cannot be read (or is not a regular file).
    Io(std::io::Error),
    /// The bytes are no format fastscan reads (`format` says what they looked like).
    NotAModel(Format),
    /// A safetensors header the reference reader refuses.
    Header(HeaderError),
    /// A pickle-based file that cannot be read.
    Pickle(Format, PickleError),
    /// A `.npy`/`.npz` file that cannot be read (the reason).
    Npy(Format, String),
}

impl OpenError {
    /// The format the bytes were recognised as.
    pub fn format(&self) -> Format {
        match self {
            OpenError::Io(_) => Format::Unknown,
            OpenError::NotAModel(f) | OpenError::Pickle(f, _) | OpenError::Npy(f, _) => *f,
            OpenError::Header(_) => Format::Safetensors,
        }
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Io(e) => write!(f, "{e}"),
            OpenError::NotAModel(_) => f.write_str("not a model file fastscan reads"),
            OpenError::Header(e) => write!(
                f,
                "safetensors header cannot be read: {} (at byte {})",
                e.reason, e.position
            ),
            OpenError::Pickle(_, e) => write!(f, "{e}"),
            OpenError::Npy(_, e) => f.write_str(e),
        }
    }
}

impl From<std::io::Error> for OpenError {
    fn from(e: std::io::Error) -> Self {
        OpenError::Io(e)
    }
}

/// Opens `path`, recognises its format, reads its tensor table, classifies it and runs the header-level checks.
pub fn open_table(path: &Path) -> Result<Table, OpenError> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file").into());
    }
    let size = meta.len();
    let mut head = Vec::with_capacity(HEAD_LEN);
    (&file).take(HEAD_LEN as u64).read_to_end(&mut head)?;
    let named_st = path
        .extension()
        .is_some_and(|e| e == "safetensors" || e == "sft");
    let format = sniff(&head, named_st);
    let (tensors, mut findings, metadata, header_len) = match format {
        Format::Unknown | Format::Diffusers | Format::StateDict => {
            return Err(OpenError::NotAModel(format))
        }
        Format::Safetensors => {
            let (h, f) = read_safetensors(&file, &head, size).map_err(OpenError::Header)?;
            (h.tensors, f, h.metadata, h.header_len)
        }
        Format::Npy | Format::Npz => {
            let map = GuardedMap::new(&file, size)?;
            let n = npy::scan(&map, format, &stem(path));
            if map.faulted() {
                return Err(changed_while_read().into());
            }
            let n = n.map_err(|e| OpenError::Npy(format, e))?;
            (n.tensors, n.findings, BTreeMap::new(), 0)
        }
        Format::TorchZip | Format::TorchLegacy | Format::TorchTar | Format::Pickle => {
            let map = GuardedMap::new(&file, size)?;
            let p = pickle::scan(&map, format);
            if map.faulted() {
                return Err(changed_while_read().into());
            }
            let p = p.map_err(|e| OpenError::Pickle(format, e))?;
            (p.tensors, p.findings, BTreeMap::new(), 0)
        }
    };
    let class = classify(&tensors);
    let read_at = |off: u64, len: u64| -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, off)?;
        Ok(buf)
    };
    let ctx = checks::Context {
        size,
        format,
        header_len,
        tensors: &tensors,
        class: &class,
        metadata: &metadata,
        read_at: &read_at,
    };
    let outcome = checks::run(&ctx);
    findings.extend(outcome.findings);
    Ok(Table {
        mtime: crate::walk::mtime_of(&meta),
        file,
        size,
        format,
        header_len,
        tensors,
        class,
        metadata,
        findings,
        wasted: outcome.wasted,
    })
}

/// A file's name without its extension (an `.npy` array's name).
fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The error of a file that shrank while its container was being parsed (the parse saw zeros).
pub fn changed_while_read() -> std::io::Error {
    std::io::Error::other("the file shrank while it was being read")
}

fn read_safetensors(
    file: &File,
    head: &[u8],
    size: u64,
) -> Result<(safetensors::Header, Vec<Finding>), HeaderError> {
    let n = safetensors::header_len(head, size)? as usize;
    // One header buffer per thread, reused: fresh multi-MB allocations cost a page fault per 4 KiB.
    thread_local!(static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) });
    BUF.with_borrow_mut(|buf| {
        buf.resize(n, 0);
        let read = file.read_exact_at(&mut buf[..n], 8);
        let parsed = read
            .map_err(|e| HeaderError {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A safetensors file: `header` padded with spaces to `pad_to` bytes, then `data_len` zero bytes.
    fn file_with(header: &str, pad_to: usize, data_len: u64) -> tempfile::NamedTempFile {
        let mut h = header.to_string();
        while h.len() < pad_to {
            h.push(' ');
        }
        let mut f = tempfile::Builder::new()
            .suffix(".safetensors")
            .tempfile()
            .unwrap();
        f.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
        f.write_all(h.as_bytes()).unwrap();
        f.as_file().set_len(8 + h.len() as u64 + data_len).unwrap();
        f
    }

    fn checks(t: &Table) -> Vec<&str> {
        t.findings.iter().map(|f| f.check).collect()
    }

    #[test]
    fn a_gap_in_the_data_region_is_unaccounted_bytes_not_header_padding() {
        let gap = 2u64 << 20;
        let header = format!(
            r#"{{"x":{{"dtype":"U8","shape":[16],"data_offsets":[{gap},{}]}}}}"#,
            gap + 16
        );
        let f = file_with(&header, 72, gap + 16);
        let t = open_table(f.path()).unwrap();
        assert_eq!(t.header_len, 72);
        assert_eq!(checks(&t), vec!["file.unaccounted-bytes"]);
        assert_eq!(t.unaccounted_bytes(), gap);
    }

    #[test]
    fn a_padded_header_is_size_unusual_and_not_unaccounted() {
        let header = r#"{"x":{"dtype":"U8","shape":[16],"data_offsets":[0,16]}}"#;
        let pad = (2 << 20) + 64;
        let f = file_with(header, pad, 16);
        let t = open_table(f.path()).unwrap();
        assert_eq!(checks(&t), vec!["size.unusual"]);
        let h = &t.findings[0].details["header"];
        assert_eq!(h["length"], pad as u64);
        assert_eq!(h["needed"], header.len() as u64);
        assert_eq!(t.unaccounted_bytes(), 0);
    }

    #[test]
    fn open_errors_are_typed() {
        let f = file_with(
            r#"{"x":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}}"#,
            0,
            1,
        );
        assert!(matches!(open_table(f.path()), Err(OpenError::Header(_))));
        let mut z = tempfile::NamedTempFile::new().unwrap();
        z.write_all(&crate::pickle::zip::tests::build(&[(
            "notes/readme.txt",
            "notes/readme.txt",
            b"hello",
            0,
        )]))
        .unwrap();
        let e = open_table(z.path()).err();
        assert!(
            matches!(
                e,
                Some(OpenError::Pickle(Format::TorchZip, PickleError::NoPickle))
            ),
            "{e:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(open_table(dir.path()), Err(OpenError::Io(_))));
    }
}
