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
    /// The open file (the data pass and the fixes read from it); `None` for a remote object whose
    /// header was read by ranged reads (`open_table_at`).
    pub file: Option<File>,
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
    /// Scalars next to the state dict of a pickle checkpoint (`epoch`, `global_step`, ...), as text
    /// (`pickle::tensors::scalar_extras`); empty for other formats.
    pub pickle_extras: Vec<(String, String)>,
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

/// For each tensor that is a buffer (`position_ids`, ...), the component it sits under and the length of
/// that component's key prefix: the longest prefix of a component's tensors its name starts with
/// (`extract` takes such buffers with their component). `None` for other tensors and loose buffers.
pub fn buffer_owners(tensors: &[TensorInfo], roles: &[Role]) -> Vec<Option<(&'static str, usize)>> {
    let mut prefixes: Vec<(&str, &'static str)> = tensors
        .iter()
        .zip(roles)
        .filter_map(|(t, r)| match r {
            Role::Component { name, prefix_len } if *prefix_len > 0 => {
                Some((&t.name[..*prefix_len], *name))
            }
            _ => None,
        })
        .collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    tensors
        .iter()
        .zip(roles)
        .map(|(t, r)| {
            if *r != Role::Buffer {
                return None;
            }
            prefixes
                .iter()
                .filter(|(p, _)| t.name.starts_with(p))
                .max_by_key(|(p, _)| p.len())
                .map(|(p, c)| (*c, p.len()))
        })
        .collect()
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

/// Random access to the bytes of a file: a local file, or a remote object read by ranged GETs.
pub trait ReadAt: Sync {
    /// Exactly `len` bytes from offset `off` (an error if fewer exist).
    fn read_at(&self, off: u64, len: u64) -> std::io::Result<Vec<u8>>;

    /// The file's bytes to be fetched piecewise (a zip archive's directory and pickles, by ranged
    /// reads), when this source fetches that way, holding already `head` (the file's first bytes,
    /// read before); `None` when the file must be read whole instead.
    fn pieces(&self, _head: &[u8]) -> Option<Box<dyn crate::pickle::zip::Pieces + '_>> {
        None
    }
}

impl ReadAt for File {
    fn read_at(&self, off: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        self.read_exact_at(&mut buf, off)?;
        Ok(buf)
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
    let mut extras = Vec::new();
    let (tensors, findings, metadata, header_len) = match format {
        Format::Unknown | Format::Diffusers | Format::StateDict | Format::Json => {
            return Err(OpenError::NotAModel(format))
        }
        Format::Safetensors => {
            let (h, f) = read_safetensors(&head, size, |buf| file.read_exact_at(buf, 8))
                .map_err(OpenError::Header)?;
            (h.tensors, f, h.metadata, h.header_len)
        }
        Format::Npy | Format::Npz => {
            let stem = stem(path);
            let n = read_container(
                &file,
                size,
                |p| npy::fetch_scanned(p, format),
                |b| npy::scan(b, format, &stem),
            )?;
            let n = n.map_err(|e| OpenError::Npy(format, e))?;
            (n.tensors, n.findings, BTreeMap::new(), 0)
        }
        Format::TorchZip | Format::TorchLegacy | Format::TorchTar | Format::Pickle => {
            let fetch = |p: &mut dyn pickle::zip::Pieces| match format {
                Format::TorchZip => pickle::fetch_zip_scanned(p),
                Format::TorchLegacy => pickle::fetch_legacy_scanned(p),
                Format::TorchTar => pickle::fetch_tar_scanned(p),
                // A bare pickle is read whole: it is all pickle.
                _ => Ok(false),
            };
            let p = read_container(&file, size, fetch, |b| pickle::scan(b, format))?;
            let p = p.map_err(|e| OpenError::Pickle(format, e))?;
            extras = p.extras;
            (p.tensors, p.findings, BTreeMap::new(), 0)
        }
    };
    let mut t = judge(&file, size, format, header_len, tensors, findings, metadata);
    t.mtime = crate::walk::mtime_of(&meta);
    t.file = Some(file);
    t.pickle_extras = extras;
    Ok(t)
}

/// Reads a container format's structure (a PyTorch zip, legacy or tar checkpoint, an `.npy` or
/// `.npz`) and gives `scan` its bytes: piecewise where `fetch` can name what `scan` reads (the end
/// records, directory, headers and pickles, never the tensors' bytes), by positioned reads into an
/// anonymous map of the file's length (pages cost memory only where written), else through a map of
/// the whole file. Reading those few bytes of each record through a map of the file would map the
/// page-cache folio around each (resident memory) and read ahead around each (page cache that the
/// data pass keeps as if cached before it), so a multi-GB checkpoint would count as resident in full.
fn read_container<T>(
    file: &File,
    size: u64,
    fetch: impl FnOnce(&mut dyn pickle::zip::Pieces) -> std::io::Result<bool>,
    scan: impl FnOnce(&[u8]) -> T,
) -> Result<T, OpenError> {
    if let Ok(map) = memmap2::MmapOptions::new().len(size as usize).map_anon() {
        let mut pieces = FilePieces { file, map };
        if fetch(&mut pieces)? {
            return Ok(scan(&pieces.map));
        }
    }
    let map = GuardedMap::new(file, size)?;
    let out = scan(&map);
    if map.faulted() {
        return Err(changed_while_read().into());
    }
    Ok(out)
}

/// A local file's bytes fetched piecewise (see [`read_container`]).
struct FilePieces<'a> {
    file: &'a File,
    map: memmap2::MmapMut,
}

impl pickle::zip::Pieces for FilePieces<'_> {
    fn bytes(&self) -> &[u8] {
        &self.map
    }

    fn fetch(&mut self, ranges: &[(u64, u64)]) -> std::io::Result<()> {
        for &(off, len) in ranges {
            let end = off.saturating_add(len).min(self.map.len() as u64);
            if off < end {
                self.file
                    .read_exact_at(&mut self.map[off as usize..end as usize], off)?;
            }
        }
        Ok(())
    }

    fn walks(&self) -> bool {
        true
    }
}

/// [`open_table`] over ranged reads of a file that is not mapped (an object in a store), given its
/// first bytes `head` (at least [`HEAD_LEN`], or the whole file). Safetensors are read this way (their
/// header is all a header-level scan needs), and PyTorch zip and legacy (pre-1.6) files when `src`
/// fetches [`ReadAt::pieces`] (a zip's directory, local headers and pickles; a legacy file's pickles and
/// storage element counts; never the storage records' bytes): `Ok(None)` for any other model format,
/// a zip without a usable directory, or a legacy file whose counts disagree with its pickle, whose
/// container the caller must read whole.
pub fn open_table_at(
    src: &dyn ReadAt,
    head: &[u8],
    size: u64,
    name: &str,
) -> Result<Option<Table>, OpenError> {
    let named_st = name.ends_with(".safetensors") || name.ends_with(".sft");
    // Sniffed from the bytes a local open sees, so both judge a file alike.
    let format = sniff(&head[..head.len().min(HEAD_LEN)], named_st);
    match format {
        Format::Unknown | Format::Diffusers => Err(OpenError::NotAModel(format)),
        Format::Safetensors => {
            let (h, f) = read_safetensors(head, size, |buf| {
                // The first read usually holds the whole header; fetch only what it lacks.
                let have = head.len().saturating_sub(8).min(buf.len());
                buf[..have].copy_from_slice(&head[8..8 + have]);
                if have < buf.len() {
                    let rest = src.read_at(8 + have as u64, (buf.len() - have) as u64)?;
                    buf[have..].copy_from_slice(&rest);
                }
                Ok(())
            })
            .map_err(OpenError::Header)?;
            Ok(Some(judge(
                src,
                size,
                format,
                h.header_len,
                h.tensors,
                f,
                h.metadata,
            )))
        }
        Format::TorchZip | Format::TorchLegacy => {
            let Some(mut pieces) = src.pieces(head) else {
                return Ok(None);
            };
            let fetched = match format {
                Format::TorchZip => pickle::fetch_zip_scanned(&mut *pieces)?,
                _ => pickle::fetch_legacy_scanned(&mut *pieces)?,
            };
            if !fetched {
                return Ok(None);
            }
            let p =
                pickle::scan(pieces.bytes(), format).map_err(|e| OpenError::Pickle(format, e))?;
            drop(pieces);
            Ok(Some(judge(
                src,
                size,
                format,
                0,
                p.tensors,
                p.findings,
                BTreeMap::new(),
            )))
        }
        _ => Ok(None),
    }
}

/// Classifies a tensor table and runs the header-level checks (which may read small tensors from `src`).
fn judge(
    src: &dyn ReadAt,
    size: u64,
    format: Format,
    header_len: u64,
    tensors: Vec<TensorInfo>,
    mut findings: Vec<Finding>,
    metadata: BTreeMap<String, Value>,
) -> Table {
    let class = classify(&tensors);
    let read_at = |off: u64, len: u64| src.read_at(off, len);
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
    Table {
        mtime: 0.0,
        file: None,
        size,
        format,
        header_len,
        tensors,
        class,
        metadata,
        findings,
        wasted: outcome.wasted,
        pickle_extras: Vec::new(),
    }
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

/// Parses a safetensors header of a file of `size` bytes whose first bytes are `head`; `fill` reads
/// the header (the bytes from offset 8) into the buffer it is given.
fn read_safetensors(
    head: &[u8],
    size: u64,
    fill: impl FnOnce(&mut [u8]) -> std::io::Result<()>,
) -> Result<(safetensors::Header, Vec<Finding>), HeaderError> {
    let n = safetensors::header_len(head, size)? as usize;
    // One header buffer per thread, reused: fresh multi-MB allocations cost a page fault per 4 KiB.
    thread_local!(static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) });
    BUF.with_borrow_mut(|buf| {
        buf.resize(n, 0);
        let read = fill(&mut buf[..n]);
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

    #[test]
    fn a_buffer_belongs_to_the_component_with_the_longest_prefix_of_its_name() {
        let t = |name: &str| TensorInfo {
            name: name.into(),
            dtype: crate::dtype::Dtype::F32,
            shape: vec![1],
            start: 0,
            len: 4,
            strides: None,
        };
        let tensors = [
            t("te.a.w"),
            t("te.a.emb.position_ids"),
            t("te.w"),
            t("loose.position_ids"),
            t("vae.w"),
        ];
        let comp = |name, prefix_len| Role::Component { name, prefix_len };
        let roles = [
            comp("clip_g", 5),
            Role::Buffer,
            comp("clip_l", 3),
            Role::Buffer,
            comp("vae", 4),
        ];
        assert_eq!(
            buffer_owners(&tensors, &roles),
            vec![None, Some(("clip_g", 5)), None, None, None]
        );
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

    /// Bytes in memory that count the ranged reads made of them.
    struct Counted(Vec<u8>, std::sync::Mutex<Vec<(u64, u64)>>);

    impl ReadAt for Counted {
        fn read_at(&self, off: u64, len: u64) -> std::io::Result<Vec<u8>> {
            self.1.lock().unwrap().push((off, len));
            Ok(self.0[off as usize..(off + len) as usize].to_vec())
        }
    }

    #[test]
    fn ranged_open_reads_only_the_header_it_lacks_and_judges_as_a_local_open() {
        let header = r#"{"x":{"dtype":"U8","shape":[16],"data_offsets":[0,16]}}"#;
        for (pad, first) in [(0usize, 4096u64), (100_000, 64 << 10)] {
            let f = file_with(header, pad, 16);
            let bytes = std::fs::read(f.path()).unwrap();
            let head_len = first.min(bytes.len() as u64) as usize;
            let src = Counted(bytes.clone(), Default::default());
            let t = open_table_at(
                &src,
                &bytes[..head_len],
                bytes.len() as u64,
                "m.safetensors",
            )
            .unwrap()
            .unwrap();
            let local = open_table(f.path()).unwrap();
            assert_eq!(t.header_len, local.header_len);
            assert_eq!(checks(&t), checks(&local));
            let reads = src.1.lock().unwrap().clone();
            let total = 8 + local.header_len;
            if total <= head_len as u64 {
                assert_eq!(reads, vec![], "the first read held the whole header");
            } else {
                assert_eq!(reads, vec![(head_len as u64, total - head_len as u64)]);
            }
        }
        // Pickle-based containers need the whole bytes: not opened by ranged reads.
        let zip = crate::pickle::zip::tests::build(&[(
            "a/data.pkl",
            "a/data.pkl",
            b"\x80\x02}q\x00.",
            0,
        )]);
        let src = Counted(zip.clone(), Default::default());
        assert!(open_table_at(&src, &zip, zip.len() as u64, "m.ckpt")
            .unwrap()
            .is_none());
    }
}
