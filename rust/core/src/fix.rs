//! The fix executor: a planned safetensors file written in one streamed pass, fsynced, verified, renamed.
//!
//! A [`Plan`] lists the output tensors in any order, each copied, cast or rewritten (`position_ids`
//! as int64 `0..n-1`) from a tensor of one of its source files. [`execute`] writes it through an
//! unnamed temporary file in the output's folder ([`crate::atomic`]): header, then the data in the
//! reference writer's order, read ahead on a thread, written in large `pwrite`s with early writeback,
//! holes of a sparse input kept as holes. Each tensor's CRC-64 is taken while writing; then
//! the file is parsed again, must hold exactly the planned table, metadata and bytes (re-read and
//! checked, from the page cache while the fsync waits for the disk), must no longer show the checks the
//! fix removes and no new ones; the sources must be unchanged. Only when the fsync and all of this
//! succeeded does it get its name. Any failure leaves nothing behind. The reader also counts NaN/Inf
//! and constant values in what it reads of the first source ([`Written::source_findings`]), so a fix
//! reads its input once. A plan that records its first source's whole-file hashes
//! ([`Plan::source_hashes`], what `convert` does) reads that source once from start to end, hashing it
//! and sending each copied tensor's bytes to the writer as the read passes them; the hashes are filled
//! into the header (fixed-width placeholders until then) before the fsync.

use crate::atomic::TempOutput;
use crate::cast::{can_cast, cast};
use crate::datapass::is_c_contiguous;
use crate::dtype::Dtype;
use crate::report::{Finding, Severity};
use crate::table::Table;
use crate::tensor::TensorInfo;
use crate::values::{self, Counts, Same};
use crate::writer::{serialize_header, OutTensor, Serialized};
use rustc_hash::{FxHashMap, FxHashSet};
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

/// Bytes read, cast and written at a time; peak memory is a few of these.
pub const CHUNK: usize = 8 << 20;
/// Smaller runs of zeros in a sparse input are read as data.
const MIN_HOLE: u64 = 64 << 10;
/// Output bytes between two starts of the kernel's writeback.
const WRITEBACK_STEP: u64 = 64 << 20;
/// Read buffers in flight between the reader thread and the writer.
const IN_FLIGHT: usize = 3;
/// The metadata key of sd-scripts' hash of the data region (recomputed when present).
pub const SSHS_MODEL_HASH: &str = "sshs_model_hash";
/// The metadata key of sd-scripts' legacy (AutoV1-style) hash (recomputed when present).
pub const SSHS_LEGACY_HASH: &str = "sshs_legacy_hash";

/// The metadata key of the first source's whole-file BLAKE3 (filled in with [`Plan::source_hashes`]).
pub const SOURCE_BLAKE3: &str = "fastscan.source_blake3";
/// The metadata key of the first source's whole-file SHA-256 (filled in with [`Plan::source_hashes`]).
pub const SOURCE_SHA256: &str = "fastscan.source_sha256";
/// sd-scripts' hashes of the data, recomputed from the bytes written whenever the plan's metadata has them.
pub const DATA_HASH_KEYS: [&str; 2] = [SSHS_MODEL_HASH, SSHS_LEGACY_HASH];

/// Prefix of the metadata keys fastscan writes; a pickle extra of that name is moved under [`CKPT_PREFIX`].
const OWN_PREFIX: &str = "fastscan.";
/// Where `convert` puts a pickle extra whose name is a key it writes itself (`format`, `fastscan.*`,
/// `sshs_*`).
pub const CKPT_PREFIX: &str = "fastscan.ckpt.";

/// The `__metadata__` entries `convert` writes for a checkpoint's scalar pickle extras (`epoch`,
/// `global_step`, ...; docs/fixes.md): each under its own name, as the checkpoint's dict names it,
/// except names `convert` writes itself (`format`, `fastscan.*`, `sshs_*`), which go under
/// `fastscan.ckpt.<name>`.
pub fn extras_metadata(extras: &[(String, String)]) -> Vec<(String, String)> {
    extras
        .iter()
        .map(|(k, v)| {
            let own = k == "format"
                || k.starts_with(OWN_PREFIX)
                || k == SSHS_MODEL_HASH
                || k == SSHS_LEGACY_HASH;
            let key = if own {
                format!("{CKPT_PREFIX}{k}")
            } else {
                k.clone()
            };
            (key, v.clone())
        })
        .collect()
}

/// The `__metadata__` `convert` writes for a pickle checkpoint named `source_name`: its scalar extras
/// ([`extras_metadata`]), `format: pt`, `fastscan.source`, and the source's hashes
/// ([`SOURCE_BLAKE3`], [`SOURCE_SHA256`], empty until a plan with [`Plan::source_hashes`] fills them).
pub fn convert_metadata(extras: &[(String, String)], source_name: &str) -> Vec<(String, String)> {
    let mut meta = extras_metadata(extras);
    for (k, v) in [
        ("format", "pt"),
        ("fastscan.source", source_name),
        (SOURCE_BLAKE3, ""),
        (SOURCE_SHA256, ""),
    ] {
        meta.push((k.to_string(), v.to_string()));
    }
    meta
}

/// What a planned tensor's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// The source tensor's bytes as they are (C-contiguous).
    Copy,
    /// The source tensor's elements cast to the output dtype (see [`crate::cast`]).
    Cast,
    /// int64 `0..n-1` along the last dimension (a `position_ids` reset); reads nothing.
    Arange,
}

/// One output tensor: its name, dtype and shape, and where its bytes come from.
#[derive(Clone, Debug)]
pub struct PlanTensor {
    pub out: OutTensor,
    pub op: Op,
    /// Index into [`Plan::sources`] and the source tensor (`None` for [`Op::Arange`]).
    pub input: Option<(usize, TensorInfo)>,
}

/// A whole output file and what the verification must see in it.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub tensors: Vec<PlanTensor>,
    /// `__metadata__` in the order to write it. `sshs_model_hash`/`sshs_legacy_hash` values are
    /// replaced by the hashes of the data written.
    pub metadata: Vec<(String, String)>,
    /// Input files; the first is the one whose checks the output is compared with.
    pub sources: Vec<PathBuf>,
    /// Checks that must no longer fire on the output.
    pub gone: Vec<String>,
    /// The kind the output must be identified as, when the fix decides it.
    pub kind: Option<crate::kind::Kind>,
    /// Fill [`SOURCE_BLAKE3`] and [`SOURCE_SHA256`] (both must be in `metadata`) with the first source's
    /// whole-file hashes, taken while reading it for the write.
    pub source_hashes: bool,
}

/// Where a running fix is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Writing the data region.
    Write,
    /// Reading the output back to verify it.
    Verify,
    /// Sending the verified output to object storage ([`crate::remote::execute_fix`]).
    Upload,
}

/// Told what the executor does; can stop it.
pub trait Observer {
    /// `done` of `total` bytes of `stage`; an error stops the fix (nothing is left).
    fn progress(&mut self, _stage: Stage, _done: u64, _total: u64) -> Result<(), FixError> {
        Ok(())
    }
    /// The written temporary file, before it is verified while its fsync runs (tests corrupt it here).
    fn written(&mut self, _file: &File) -> io::Result<()> {
        Ok(())
    }
}

/// An observer that observes nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// Why a fix wrote nothing.
#[derive(Debug)]
pub enum FixError {
    /// The plan cannot be written (bad dtype pair, duplicate name, a source too short...).
    Plan(String),
    /// The output folder is missing, or the output exists and may not be replaced.
    Target(String),
    /// The output already exists (possibly appeared while writing) and overwriting is off.
    Exists(PathBuf),
    /// Reading or writing failed.
    Io(String, io::Error),
    /// A source file changed while the fix ran.
    Changed(PathBuf),
    /// The written file is not what was planned.
    Verify(String),
    /// The observer stopped the fix.
    Stopped,
}

impl fmt::Display for FixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FixError::Plan(m) | FixError::Target(m) => f.write_str(m),
            FixError::Exists(p) => write!(
                f,
                "{}: already exists (use --force to overwrite)",
                p.display()
            ),
            FixError::Io(what, e) => write!(f, "{what}: {e}; no output was left"),
            FixError::Changed(p) => write!(
                f,
                "{}: the file changed while it was being fixed; nothing was written",
                p.display()
            ),
            FixError::Verify(m) => write!(
                f,
                "verification of the output failed, nothing was written: {m}"
            ),
            FixError::Stopped => f.write_str("stopped; nothing was written"),
        }
    }
}

/// What a finished fix wrote.
#[derive(Debug, serde::Serialize)]
pub struct Written {
    /// Bytes of the output file.
    pub size: u64,
    /// The metadata written (hashes filled in).
    pub metadata: Vec<(String, String)>,
    /// `values.nan-inf` and `values.constant` of the first source, over the tensors the fix read from
    /// it (counted on their stored bytes as they were read: no second pass over the input).
    pub source_findings: Vec<Finding>,
}

/// Size, modification time and inode: what says a file was not rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp(u64, i64, i64, u64);

fn stamp(m: &std::fs::Metadata) -> Stamp {
    Stamp(m.len(), m.mtime(), m.mtime_nsec(), m.ino())
}

/// One source file, open.
struct Source {
    path: PathBuf,
    file: File,
    stamp: Stamp,
}

/// A piece of one output tensor's bytes: `t` is its index in the data order, `off` where the piece
/// starts in its output bytes.
enum Piece {
    /// `buf[range]` (a read buffer may be shared by the pieces of several tensors).
    Data {
        t: usize,
        off: u64,
        buf: Arc<Vec<u8>>,
        range: Range<usize>,
    },
    /// That many zero bytes, stored as a hole.
    Hole { t: usize, off: u64, n: u64 },
    /// Tensor `t` is complete.
    End(usize),
}

impl Piece {
    /// A piece holding the whole of `buf`.
    fn whole(t: usize, off: u64, buf: Vec<u8>) -> Piece {
        let range = 0..buf.len();
        Piece::Data {
            t,
            off,
            buf: Arc::new(buf),
            range,
        }
    }
}

/// lseek `SEEK_DATA`/`SEEK_HOLE` clamped to `end`; where holes are unknown, everything is data.
fn seek(file: &File, pos: u64, whence: libc::c_int, end: u64) -> u64 {
    // SAFETY: lseek on an open descriptor has no memory effects; errors are returned as -1.
    let r = unsafe { libc::lseek(file.as_raw_fd(), pos as libc::off_t, whence) };
    if r >= 0 {
        return (r as u64).clamp(pos, end);
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ENXIO) => end, // no data after pos
        _ if whence == libc::SEEK_DATA => pos,
        _ => end,
    }
}

/// Splits bytes `pos..end` of `file` into holes (aligned to 8 bytes from `base`, at least
/// [`MIN_HOLE`]) and runs of data, calling `each(is_hole, from, to)`.
pub(crate) fn pieces(
    file: &File,
    mut pos: u64,
    end: u64,
    base: u64,
    each: &mut dyn FnMut(bool, u64, u64) -> io::Result<()>,
) -> io::Result<()> {
    let down = |x: u64| base + (x - base) / 8 * 8;
    let up = |x: u64| base + (x - base).div_ceil(8) * 8;
    while pos < end {
        let d = seek(file, pos, libc::SEEK_DATA, end);
        let hole_end = if d < end { down(d) } else { end };
        if hole_end > pos && hole_end - pos >= MIN_HOLE {
            each(true, pos, hole_end)?;
            pos = hole_end;
            continue;
        }
        let (mut stop, mut q) = (end, d.max(pos));
        while q < end {
            let h = seek(file, q, libc::SEEK_HOLE, end);
            if h >= end {
                break;
            }
            let nd = seek(file, h, libc::SEEK_DATA, end);
            let (hs, he) = (up(h), if nd < end { down(nd) } else { end });
            if he > hs && he - hs >= MIN_HOLE {
                stop = hs;
                break;
            }
            if nd <= q {
                break;
            }
            q = nd;
        }
        each(false, pos, stop)?;
        pos = stop;
    }
    Ok(())
}

/// Calls `each` with a tensor's bytes as stored (`Some(bytes)`) or holes (`None`, with their
/// length), at most [`CHUNK`] at a time. `take` gives the buffers to read into.
fn stored_bytes(
    src: &Source,
    t: &TensorInfo,
    take: &mut dyn FnMut() -> Vec<u8>,
    each: &mut dyn FnMut(Result<Vec<u8>, u64>) -> io::Result<()>,
) -> io::Result<()> {
    let read = |buf: &mut Vec<u8>, from: u64, n: u64| -> io::Result<()> {
        buf.resize(n as usize, 0);
        src.file.read_exact_at(buf, from).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::other(format!(
                    "{}: file ended inside tensor {} (truncated while fixing?)",
                    src.path.display(),
                    t.name
                ))
            } else {
                e
            }
        })
    };
    if let Some(strides) = t
        .strides
        .as_deref()
        .filter(|s| !is_c_contiguous(&t.shape, s))
    {
        let (a, b) = crate::datapass::span(t);
        let mut raw = vec![];
        read(&mut raw, a, b - a)?;
        let whole = gather(&raw, t, strides);
        for c in whole.chunks(CHUNK) {
            let mut buf = take();
            buf.clear();
            buf.extend_from_slice(c);
            each(Ok(buf))?;
        }
        return Ok(());
    }
    let (start, len) = (t.start, t.len);
    let mut off = 0;
    while off < len {
        let n = (CHUNK as u64).min(len - off);
        pieces(
            &src.file,
            start + off,
            start + off + n,
            start,
            &mut |hole, a, b| {
                if hole {
                    return each(Err(b - a));
                }
                let mut buf = take();
                read(&mut buf, a, b - a)?;
                each(Ok(buf))
            },
        )?;
        // drop-behind: these pages of the input are not needed again
        crate::source::fadvise_dontneed(src.file.as_raw_fd(), start + off, n);
        off += n;
    }
    Ok(())
}

/// The elements of a strided tensor in C order; `raw` holds its span (from `t.start`).
fn gather(raw: &[u8], t: &TensorInfo, strides: &[u64]) -> Vec<u8> {
    let es = (t.dtype.bits() / 8) as usize;
    let mut out = Vec::with_capacity(t.len as usize);
    if t.elements() == 0 || strides.len() != t.shape.len() {
        return out;
    }
    let nd = t.shape.len();
    let mut idx = vec![0u64; nd];
    loop {
        let base: u64 = idx.iter().zip(strides).map(|(i, s)| i * s).sum();
        if nd == 0 {
            out.extend_from_slice(&raw[..es]);
            return out;
        }
        for k in 0..t.shape[nd - 1] {
            let at = ((base + k * strides[nd - 1]) as usize) * es;
            out.extend_from_slice(&raw[at..at + es]);
        }
        let mut d = nd - 1;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < t.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// int64 `0..n-1` along the last dimension of `shape`, repeated over the others.
fn arange(shape: &[u64]) -> Vec<u8> {
    let n = shape.last().copied().unwrap_or(1);
    let rows: u64 = shape.iter().rev().skip(1).product();
    (0..rows)
        .flat_map(|_| (0..n as i64).flat_map(|i| i.to_le_bytes()))
        .collect()
}

static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

/// Calls `h` with `n` zero bytes, in pieces.
pub(crate) fn feed_zeros(h: &mut impl FnMut(&[u8]), mut n: u64) {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64);
        h(&ZEROS[..k as usize]);
        n -= k;
    }
}

/// The check of one tensor's bytes that the verification compares: CRC-64/NVME, an error-detecting
/// code computed with carry-less multiplication many times faster than a cryptographic hash (it guards
/// against bytes lost or changed between the write and the re-read, not against an adversary). A tensor
/// that is all holes costs one check per size (cached).
#[derive(Default)]
struct TensorHash {
    h: Option<crc_fast::Digest>,
    zeros: u64,
}

/// The checks of runs of zeros, by length (sparse inputs have many).
type ZeroChecks = FxHashMap<u64, u64>;

fn crc() -> crc_fast::Digest {
    crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme)
}

impl TensorHash {
    fn data(&mut self, d: &[u8]) {
        let zeros = self.zeros;
        let h = self.h.get_or_insert_with(|| {
            let mut h = crc();
            feed_zeros(&mut |z| h.update(z), zeros);
            h
        });
        h.update(d);
    }

    fn hole(&mut self, n: u64) {
        match &mut self.h {
            None => self.zeros += n,
            Some(h) => feed_zeros(&mut |z| h.update(z), n),
        }
    }

    fn finish(self, cache: &mut ZeroChecks) -> u64 {
        match self.h {
            Some(h) => h.finalize(),
            None => *cache.entry(self.zeros).or_insert_with(|| {
                let mut h = crc();
                feed_zeros(&mut |z| h.update(z), self.zeros);
                h.finalize()
            }),
        }
    }
}

/// The output file as it is written: small pieces gathered into one large `pwrite`.
struct Out<'a> {
    file: &'a File,
    /// File offset where `stage` begins.
    pos: u64,
    stage: Vec<u8>,
    /// The range written since the kernel's writeback was last started, and its bytes.
    dirty: Option<(u64, u64)>,
    unsynced: u64,
}

impl Out<'_> {
    /// Moves to file offset `at` (where the next piece goes); pieces written in order stay gathered.
    fn at(&mut self, at: u64) -> io::Result<()> {
        if at != self.pos + self.stage.len() as u64 {
            self.flush()?;
            self.pos = at;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.stage.is_empty() {
            self.file.write_all_at(&self.stage, self.pos)?;
            self.wrote(self.stage.len() as u64);
            self.stage.clear();
        }
        Ok(())
    }

    fn direct(&mut self, d: &[u8]) -> io::Result<()> {
        self.file.write_all_at(d, self.pos)?;
        self.wrote(d.len() as u64);
        Ok(())
    }

    fn put(&mut self, d: &[u8]) -> io::Result<()> {
        if self.stage.len() + d.len() > CHUNK {
            self.flush()?;
        }
        self.stage.extend_from_slice(d);
        Ok(())
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        self.flush()?;
        self.pos += n;
        Ok(())
    }

    /// Notes `n` bytes written at `pos` and moves past them.
    fn wrote(&mut self, n: u64) {
        let (a, b) = (self.pos, self.pos + n);
        self.dirty = Some(self.dirty.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
        self.unsynced += n;
        self.pos = b;
        self.writeback();
    }

    /// Starts the kernel's writeback of each finished step, so the final fsync has little to wait for.
    fn writeback(&mut self) {
        let Some((a, b)) = self.dirty.filter(|_| self.unsynced >= WRITEBACK_STEP) else {
            return;
        };
        // SAFETY: sync_file_range only starts writeback of an open descriptor's range.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                a as libc::off64_t,
                (b - a) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.dirty = None;
        self.unsynced = 0;
    }
}

/// Hashes of the data region a fix recomputes in the metadata.
struct RegionHashes {
    sha256: Option<Sha256>,
    /// Offsets of the legacy hash's 64 KiB in the data region, and the bytes seen there.
    legacy: Option<(u64, u64, Vec<u8>)>,
    pos: u64,
}

impl RegionHashes {
    fn feed(&mut self, d: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(d);
        }
        let end = self.pos + d.len() as u64;
        if let Some((a, b, got)) = &mut self.legacy {
            let (x, y) = ((*a).max(self.pos), (*b).min(end));
            if x < y {
                got.extend_from_slice(&d[(x - self.pos) as usize..(y - self.pos) as usize]);
            }
        }
        self.pos = end;
    }

    fn zeros(&mut self, n: u64) {
        if self.sha256.is_none() && self.legacy.is_none() {
            self.pos += n;
            return;
        }
        feed_zeros(&mut |z| self.feed(z), n);
    }
}

const AUTOV1_AT: u64 = 0x10_0000;
const AUTOV1_LEN: u64 = 0x1_0000;

/// The plan's metadata with the values the executor computes replaced by placeholders of their final
/// length.
fn with_placeholders(plan: &Plan) -> Vec<(String, String)> {
    plan.metadata
        .iter()
        .map(|(k, v)| match k.as_str() {
            SSHS_MODEL_HASH => (k.clone(), "0".repeat(64)),
            SSHS_LEGACY_HASH => (k.clone(), "0".repeat(8)),
            SOURCE_BLAKE3 | SOURCE_SHA256 if plan.source_hashes => (k.clone(), "0".repeat(64)),
            _ => (k.clone(), v.clone()),
        })
        .collect()
}

fn has(meta: &[(String, String)], key: &str) -> bool {
    meta.iter().any(|(k, _)| k == key)
}

/// Checks the plan and opens its sources.
fn open_sources(plan: &Plan) -> Result<Vec<Source>, FixError> {
    let mut out = vec![];
    for p in &plan.sources {
        let file = File::open(p).map_err(|e| FixError::Plan(format!("{}: {e}", p.display())))?;
        let meta = file
            .metadata()
            .map_err(|e| FixError::Plan(format!("{}: {e}", p.display())))?;
        out.push(Source {
            path: p.clone(),
            file,
            stamp: stamp(&meta),
        });
    }
    for t in &plan.tensors {
        let name = &t.out.name;
        match (&t.op, &t.input) {
            (Op::Arange, _) if t.out.dtype != Dtype::I64 => {
                return Err(FixError::Plan(format!(
                    "{name}: position_ids are written as I64"
                )))
            }
            (Op::Arange, _) => {}
            (_, None) => return Err(FixError::Plan(format!("{name}: no source tensor"))),
            (op, Some((s, x))) => {
                let src = out
                    .get(*s)
                    .ok_or_else(|| FixError::Plan(format!("{name}: no source {s}")))?;
                let (_, end) = crate::datapass::span(x);
                if end > src.stamp.0 {
                    return Err(FixError::Plan(format!(
                        "{}: truncated: tensor {} needs bytes up to {end}, the file has {}",
                        src.path.display(),
                        x.name,
                        src.stamp.0
                    )));
                }
                let fits = match op {
                    Op::Copy => x.dtype == t.out.dtype && x.shape == t.out.shape,
                    _ => can_cast(x.dtype, t.out.dtype) && x.shape == t.out.shape,
                };
                if !fits {
                    return Err(FixError::Plan(format!(
                        "{name}: cannot {} {} {:?} to {} {:?}",
                        if *op == Op::Copy { "copy" } else { "cast" },
                        x.dtype,
                        x.shape,
                        t.out.dtype,
                        t.out.shape
                    )));
                }
            }
        }
    }
    if plan.source_hashes {
        if out.is_empty() {
            return Err(FixError::Plan(
                "source hashes of a plan with no source".into(),
            ));
        }
        if let Some(k) = [SOURCE_BLAKE3, SOURCE_SHA256]
            .into_iter()
            .find(|k| !has(&plan.metadata, k))
        {
            return Err(FixError::Plan(format!(
                "source hashes: no metadata key {k}"
            )));
        }
        // sd-scripts' hashes need the data in output order, the source's hashes the file in its order.
        if has(&plan.metadata, SSHS_MODEL_HASH) || has(&plan.metadata, SSHS_LEGACY_HASH) {
            return Err(FixError::Plan(
                "source hashes and sd-scripts' sshs_* hashes cannot be recorded by one fix".into(),
            ));
        }
    }
    Ok(out)
}

/// Names of the warning-or-worse checks of a file's header-level scan.
fn serious_checks(t: &Table) -> FxHashSet<String> {
    t.findings
        .iter()
        .filter(|f| f.severity >= Severity::Warning)
        .map(|f| f.check.to_string())
        .collect()
}

/// The value findings of `table` (the first source) from what the reader counted in the tensors it read
/// from it (`read[i]` for `order[i]`); tensors it did not read count as unseen.
fn value_findings(table: &Table, order: &[&PlanTensor], read: &[(Counts, Same)]) -> Vec<Finding> {
    let at: FxHashMap<&str, usize> = table
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut counts = vec![Counts::default(); table.tensors.len()];
    let mut same = vec![Same::default(); table.tensors.len()];
    for (t, (c, s)) in order.iter().zip(read) {
        if let Some((0, x)) = &t.input {
            if let Some(&i) = at.get(x.name.as_str()) {
                counts[i] = *c;
                same[i] = *s;
            }
        }
    }
    let mut out: Vec<Finding> = values::finding(&table.tensors, &counts)
        .into_iter()
        .collect();
    out.extend(values::constant_finding(
        &table.tensors,
        &table.class.roles,
        &same,
    ));
    out
}

fn check_target(out: &Path, overwrite: bool, need: u64) -> Result<(), FixError> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(FixError::Target(format!(
            "{}: no such folder for the output",
            dir.display()
        )));
    }
    if out.is_dir() {
        return Err(FixError::Target(format!("{}: is a folder", out.display())));
    }
    if out.exists() && !overwrite {
        return Err(FixError::Exists(out.to_path_buf()));
    }
    if let Some(free) = crate::atomic::free_space(&dir).filter(|&free| free < need) {
        return Err(FixError::Target(format!(
            "{}: needs {need} bytes free for the output, has {free}",
            dir.display()
        )));
    }
    Ok(())
}

/// The output's header for `meta`, or why it cannot be written.
fn header(plan: &Plan, meta: &[(String, String)]) -> Result<Serialized, FixError> {
    let outs: Vec<OutTensor> = plan.tensors.iter().map(|t| t.out.clone()).collect();
    serialize_header(&outs, Some(meta).filter(|m| !m.is_empty()))
        .map_err(|e| FixError::Plan(format!("cannot write the output: {e}")))
}

/// Bytes of the output file `plan` makes.
pub fn output_size(plan: &Plan) -> Result<u64, FixError> {
    let h = header(plan, &with_placeholders(plan))?;
    Ok(8 + h.json.len() as u64 + h.data_len())
}

/// Writes `plan` to `out` through a verified temporary file (permissions `mode`, default 0o666 less
/// the umask); never replaces an existing `out` unless `overwrite`. On any error nothing is left.
pub fn execute(
    plan: &Plan,
    out: &Path,
    overwrite: bool,
    mode: Option<u32>,
    observer: &mut dyn Observer,
) -> Result<Written, FixError> {
    let sources = open_sources(plan)?;
    let placeholders = with_placeholders(plan);
    let head = header(plan, &placeholders)?;
    let data_len = head.data_len();
    let size = 8 + head.json.len() as u64 + data_len;
    check_target(out, overwrite, size)?;
    // The first source's table: its checks (the output may add none) and its tensors (the value
    // checks of what the reader reads from it).
    let first = sources
        .first()
        .and_then(|s| crate::table::open_table(&s.path).ok());
    let before = first.as_ref().map(serious_checks).unwrap_or_default();
    let io_err = |e: io::Error| FixError::Io(format!("{}", out.display()), e);
    // The check of n zero bytes, by n: shared by the writer and the verifier (sparse inputs have many).
    let mut zero_cache = ZeroChecks::default();
    let tmp = TempOutput::create(out, mode).map_err(io_err)?;
    let file = tmp.file();
    let order: Vec<&PlanTensor> = head.order.iter().map(|&i| &plan.tensors[i]).collect();

    // sd-scripts' hashes: of the data region, and of 64 KiB at 1 MiB of the file it would write
    // with only the `ss_*` metadata.
    let legacy_head = if has(&plan.metadata, SSHS_LEGACY_HASH) {
        let ss: Vec<(String, String)> = plan
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("ss_"))
            .cloned()
            .collect();
        let h = header(plan, &ss)?;
        let mut bytes = (h.json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&h.json);
        Some(bytes)
    } else {
        None
    };
    let mut region = RegionHashes {
        sha256: has(&plan.metadata, SSHS_MODEL_HASH).then(Sha256::new),
        legacy: legacy_head.as_ref().map(|h| {
            let hl = h.len() as u64;
            (
                AUTOV1_AT.saturating_sub(hl),
                (AUTOV1_AT + AUTOV1_LEN).saturating_sub(hl),
                vec![],
            )
        }),
        pos: 0,
    };

    // Where each tensor of the data order starts in the file.
    let data_at = 8 + head.json.len() as u64;
    let starts: Vec<u64> = head
        .order
        .iter()
        .map(|&i| data_at + head.offsets[i].0)
        .collect();
    let mut run = || -> Result<(Vec<u64>, Read), FixError> {
        file.write_all_at(&(head.json.len() as u64).to_le_bytes(), 0)
            .map_err(io_err)?;
        file.write_all_at(&head.json, 8).map_err(io_err)?;
        let mut o = Out {
            file,
            pos: data_at,
            stage: Vec::with_capacity(CHUNK),
            dirty: None,
            unsynced: 0,
        };
        let mut hashes: Vec<Option<u64>> = vec![None; order.len()];
        let (free_tx, free_rx) = sync_channel::<Vec<u8>>(IN_FLIGHT + 2);
        for _ in 0..=IN_FLIGHT {
            let _ = free_tx.send(Vec::with_capacity(CHUNK));
        }
        let (tx, rx) = sync_channel::<io::Result<Piece>>(IN_FLIGHT);
        std::thread::scope(|s| -> Result<Read, FixError> {
            let reader = {
                let order = &order;
                let sources = &sources;
                let in_file_order = plan.source_hashes;
                s.spawn(move || produce(order, sources, in_file_order, free_rx, tx))
            };
            // The tensors being written (several at once when read in the source's order).
            let mut open: FxHashMap<usize, TensorHash> = FxHashMap::default();
            let mut done = 0u64;
            let mut last = 0u64;
            let result = (|| -> Result<(), FixError> {
                for piece in rx.iter() {
                    match piece.map_err(io_err)? {
                        Piece::Data { t, off, buf, range } => {
                            let d = &buf[range];
                            let n = d.len() as u64;
                            o.at(starts[t] + off).map_err(io_err)?;
                            let th = open.entry(t).or_default();
                            if d.len() >= CHUNK / 2 {
                                o.flush().map_err(io_err)?;
                                let (w, ()) = rayon::join(
                                    || o.direct(d),
                                    || {
                                        th.data(d);
                                        region.feed(d);
                                    },
                                );
                                w.map_err(io_err)?;
                            } else {
                                th.data(d);
                                region.feed(d);
                                o.put(d).map_err(io_err)?;
                            }
                            if let Ok(b) = Arc::try_unwrap(buf) {
                                let _ = free_tx.try_send(b);
                            }
                            done += n;
                        }
                        Piece::Hole { t, off, n } => {
                            o.at(starts[t] + off).map_err(io_err)?;
                            open.entry(t).or_default().hole(n);
                            region.zeros(n);
                            o.skip(n).map_err(io_err)?;
                            done += n;
                        }
                        Piece::End(t) => {
                            let th = open.remove(&t).unwrap_or_default();
                            hashes[t] = Some(th.finish(&mut zero_cache));
                        }
                    }
                    if done - last >= CHUNK as u64 || done == data_len {
                        observer.progress(Stage::Write, done, data_len)?;
                        last = done;
                    }
                }
                o.flush().map_err(io_err)?;
                Ok(())
            })();
            drop(rx); // stops the reader if we stopped early
            drop(free_tx);
            let read = reader.join().unwrap_or_default();
            result?;
            if hashes.iter().any(Option::is_none) || read.values.len() != order.len() {
                return Err(FixError::Verify("the reader stopped early".into()));
            }
            observer.progress(Stage::Write, data_len, data_len)?;
            Ok(read)
        })
        .map(|read| (hashes.into_iter().flatten().collect(), read))
    };
    let (hashes, read) = match run() {
        Ok(h) => h,
        Err(e) => {
            tmp.discard();
            return Err(e);
        }
    };

    // The hashes the metadata carries, now that the data is known.
    let mut metadata = plan.metadata.clone();
    for (k, v) in metadata.iter_mut() {
        if k == SSHS_MODEL_HASH {
            if let Some(h) = region.sha256.take() {
                *v = format!("{:x}", h.finalize());
            }
        } else if k == SSHS_LEGACY_HASH {
            if let (Some(lh), Some((_, _, got))) = (&legacy_head, &region.legacy) {
                let mut h = Sha256::new();
                let hl = lh.len() as u64;
                if hl > AUTOV1_AT {
                    h.update(&lh[AUTOV1_AT as usize..(AUTOV1_AT + AUTOV1_LEN).min(hl) as usize]);
                }
                h.update(got);
                *v = format!("{:x}", h.finalize())[..8].to_string();
            }
        } else if let (Some(h), true) = (&read.source_hashes, plan.source_hashes) {
            match k.as_str() {
                SOURCE_BLAKE3 => *v = h.blake3.clone().unwrap_or_default(),
                SOURCE_SHA256 => *v = h.sha256.clone().unwrap_or_default(),
                _ => {}
            }
        }
    }
    let mut finish = || -> Result<(), FixError> {
        if metadata != placeholders {
            let real = header(plan, &metadata)?;
            if real.json.len() != head.json.len() {
                return Err(FixError::Verify("the header changed length".into()));
            }
            file.write_all_at(&real.json, 8).map_err(io_err)?;
        }
        file.set_len(size).map_err(io_err)?;
        observer.written(file).map_err(io_err)?;
        let want = Expected {
            order: &order,
            hashes: &hashes,
            metadata: &metadata,
            size,
            before: &before,
        };
        // The fsync waits for the disk, the verification reads the page cache: both run at once, and
        // the file is named only when both succeeded.
        let (synced, verified) = std::thread::scope(|s| {
            let sync = s.spawn(|| file.sync_all());
            let verified = verify(plan, &tmp, &want, &mut zero_cache, observer);
            let synced = sync
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("fsync failed")));
            (synced, verified)
        });
        synced.map_err(io_err)?;
        verified?;
        for s in &sources {
            let now = std::fs::metadata(&s.path).map(|m| stamp(&m)).ok();
            if now != Some(s.stamp) {
                return Err(FixError::Changed(s.path.clone()));
            }
        }
        Ok(())
    };
    if let Err(e) = finish() {
        tmp.discard();
        return Err(e);
    }
    tmp.commit(out, overwrite).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            FixError::Exists(out.to_path_buf())
        } else {
            io_err(e)
        }
    })?;
    let source_findings = first
        .map(|t| value_findings(&t, &order, &read.values))
        .unwrap_or_default();
    Ok(Written {
        size,
        metadata,
        source_findings,
    })
}

/// NaN/Inf counts and sameness of one tensor's stored bytes, as the reader saw them.
type ValuesRead = (Counts, Same);

/// Stored bytes at least this long are cast and counted on several threads.
const PAR_BYTES: usize = 1 << 20;

/// `d` (whole elements of `from`) cast to `to` into `out`, the two halves on two threads when large;
/// `spare` is a reused buffer for the second half.
fn cast_chunk(d: &[u8], from: Dtype, to: Dtype, out: &mut Vec<u8>, spare: &mut Vec<u8>) {
    out.clear();
    let es = (from.bits() / 8) as usize;
    if d.len() < PAR_BYTES {
        cast(d, from, to, out);
        return;
    }
    let (a, b) = d.split_at(d.len() / es / 2 * es);
    spare.clear();
    rayon::join(|| cast(a, from, to, out), || cast(b, from, to, spare));
    out.extend_from_slice(spare);
}

/// NaN/Inf counts and sameness of `d` (whole elements of `dtype`), split over threads when large.
fn count_chunk(d: &[u8], dtype: Dtype) -> (Counts, Same) {
    let one = |b: &[u8]| (values::count(dtype, b), values::sameness(dtype, b));
    let es = values::element_size(dtype).unwrap_or(1);
    if d.len() < PAR_BYTES {
        return one(d);
    }
    let (a, b) = d.split_at(d.len() / es / 2 * es);
    let ((mut c, s), (c2, s2)) = rayon::join(|| one(a), || one(b));
    c += c2;
    (c, s.merge(s2))
}

/// What the reader saw: for each tensor of the data order read from the first source, the NaN/Inf counts
/// and sameness of its stored bytes (empty when the reader stopped: the error went to the writer), and
/// the first source's whole-file hashes when it read that file in its own order.
#[derive(Default)]
struct Read {
    values: Vec<ValuesRead>,
    source_hashes: Option<crate::report::Hashes>,
}

/// Reads (and casts) each tensor's bytes, sending them to the writer: in data order, or with
/// `in_file_order` the first source from start to end, hashed whole, with the copies of its contiguous
/// tensors sent as the read passes them, then the other tensors in data order.
fn produce(
    order: &[&PlanTensor],
    sources: &[Source],
    in_file_order: bool,
    free: Receiver<Vec<u8>>,
    tx: SyncSender<io::Result<Piece>>,
) -> Read {
    // The buffer a cast read from (or a read no tensor used), kept for the next read; then those the
    // writer hands back.
    let mine: std::cell::Cell<Option<Vec<u8>>> = std::cell::Cell::new(None);
    let take = || {
        mine.take()
            .unwrap_or_else(|| free.recv().unwrap_or_default())
    };
    let mut spare = Vec::with_capacity(CHUNK);
    let mut read = Read {
        values: vec![ValuesRead::default(); order.len()],
        source_hashes: None,
    };
    let res = (|| -> io::Result<()> {
        let mut rest: Vec<usize> = (0..order.len()).collect();
        if let (true, Some(first)) = (in_file_order, sources.first()) {
            let (seq, others): (Vec<usize>, Vec<usize>) = rest
                .into_iter()
                .partition(|&t| read_in_file_order(order[t]));
            // Tensors read again later keep their pages in the cache.
            let keep = others
                .iter()
                .any(|&t| matches!(order[t].input, Some((0, _))));
            let mut hashers = crate::hashes::FileHashers::new(first.stamp.0, true, None);
            let sent =
                send_in_file_order(order, &seq, first, &mut hashers, !keep, &take, &mine, &tx)?;
            for (t, v) in sent {
                read.values[t] = v;
            }
            read.source_hashes = Some(hashers.finish());
            rest = others;
        }
        for t in rest {
            read.values[t] = send_tensor(t, order[t], sources, &take, &mine, &mut spare, &tx)?;
        }
        Ok(())
    })();
    if let Err(e) = res {
        let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
        return Read::default();
    }
    read
}

fn stopped() -> io::Error {
    io::Error::other("stopped")
}

/// True for a copy of a contiguous tensor of the first source (sent as a file-order read passes it).
fn read_in_file_order(p: &PlanTensor) -> bool {
    match &p.input {
        Some((0, x)) if p.op == Op::Copy => x
            .strides
            .as_deref()
            .is_none_or(|s| is_c_contiguous(&x.shape, s)),
        _ => false,
    }
}

/// Sends tensor `t` (index in the data order) read on its own: its stored bytes, cast if planned,
/// holes kept; returns the values read when it comes from the first source.
fn send_tensor(
    t: usize,
    p: &PlanTensor,
    sources: &[Source],
    take: &dyn Fn() -> Vec<u8>,
    mine: &std::cell::Cell<Option<Vec<u8>>>,
    spare: &mut Vec<u8>,
    tx: &SyncSender<io::Result<Piece>>,
) -> io::Result<ValuesRead> {
    let mut acc = (Counts::default(), Same::Empty);
    match (&p.op, &p.input) {
        (Op::Arange, _) => {
            tx.send(Ok(Piece::whole(t, 0, arange(&p.out.shape))))
                .map_err(|_| stopped())?;
        }
        (op, Some((s, x))) => {
            let checked = *s == 0 && values::element_size(x.dtype).is_some();
            let ratio = (p.out.dtype.bits(), x.dtype.bits());
            let mut off = 0u64;
            let mut send = |piece: Result<Vec<u8>, u64>| -> io::Result<()> {
                let piece = match piece {
                    Err(n) => {
                        if checked && n > 0 {
                            acc.1 = acc.1.merge(Same::Value(0));
                        }
                        let n = n * ratio.0 / ratio.1;
                        off += n;
                        Piece::Hole { t, off: off - n, n }
                    }
                    Ok(d) => {
                        let mut c = None;
                        let count = || checked.then(|| count_chunk(&d, x.dtype));
                        let counted = if *op == Op::Cast {
                            let mut into = take();
                            let (k, ()) = rayon::join(count, || {
                                cast_chunk(&d, x.dtype, p.out.dtype, &mut into, spare)
                            });
                            c = Some(into);
                            k
                        } else {
                            count()
                        };
                        if let Some((n, same)) = counted {
                            acc.0 += n;
                            acc.1 = acc.1.merge(same);
                        }
                        let out = match c {
                            Some(c) => {
                                mine.set(Some(d));
                                c
                            }
                            None => d,
                        };
                        off += out.len() as u64;
                        Piece::whole(t, off - out.len() as u64, out)
                    }
                };
                tx.send(Ok(piece)).map_err(|_| stopped())
            };
            stored_bytes(&sources[*s], x, &mut || take(), &mut send)?;
        }
        (_, None) => return Err(io::Error::other("a tensor without a source")),
    }
    tx.send(Ok(Piece::End(t))).map_err(|_| stopped())?;
    Ok(acc)
}

/// NaN/Inf counts and sameness of a tensor's bytes fed in pieces of any length (a partial element is
/// carried to the next piece).
struct ValueCounter {
    dtype: Dtype,
    es: usize,
    carry: Vec<u8>,
    acc: ValuesRead,
}

impl ValueCounter {
    /// A counter for `dtype`, `None` when the value checks do not read it.
    fn new(dtype: Dtype) -> Option<ValueCounter> {
        let es = values::element_size(dtype)?;
        Some(ValueCounter {
            dtype,
            es,
            carry: Vec::with_capacity(es),
            acc: (Counts::default(), Same::Empty),
        })
    }

    fn add(&mut self, d: &[u8]) {
        let (n, same) = count_chunk(d, self.dtype);
        self.acc.0 += n;
        self.acc.1 = self.acc.1.merge(same);
    }

    fn feed(&mut self, mut d: &[u8]) {
        if !self.carry.is_empty() {
            let k = (self.es - self.carry.len()).min(d.len());
            self.carry.extend_from_slice(&d[..k]);
            d = &d[k..];
            if self.carry.len() < self.es {
                return;
            }
            let e = std::mem::take(&mut self.carry);
            self.add(&e);
        }
        let whole = d.len() / self.es * self.es;
        if whole > 0 {
            self.add(&d[..whole]);
        }
        self.carry.extend_from_slice(&d[whole..]);
    }
}

/// A tensor a file-order read is inside of.
struct Passing {
    t: usize,
    start: u64,
    end: u64,
    counter: Option<ValueCounter>,
}

/// Reads `src` (the first source) once from start to end, in [`CHUNK`]s fed to `hashers`, and sends
/// the bytes of the tensors `seq` (indices into `order`, [`read_in_file_order`]) as the read passes
/// them, one read buffer shared by the pieces of every tensor it holds; with `drop_behind` the pages
/// read leave the cache. Returns the values read of each tensor of `seq`.
#[allow(clippy::too_many_arguments)]
fn send_in_file_order(
    order: &[&PlanTensor],
    seq: &[usize],
    src: &Source,
    hashers: &mut crate::hashes::FileHashers,
    drop_behind: bool,
    take: &dyn Fn() -> Vec<u8>,
    mine: &std::cell::Cell<Option<Vec<u8>>>,
    tx: &SyncSender<io::Result<Piece>>,
) -> io::Result<Vec<(usize, ValuesRead)>> {
    let input = |t: usize| match &order[t].input {
        Some((_, x)) => (x.start, x.end(), x.dtype),
        None => (0, 0, Dtype::U8),
    };
    let mut by_start: Vec<usize> = seq.to_vec();
    by_start.sort_by_key(|&t| input(t).0);
    let mut seen = Vec::with_capacity(seq.len());
    // Empty tensors have no bytes to wait for.
    for &t in by_start.iter().filter(|&&t| input(t).0 == input(t).1) {
        tx.send(Ok(Piece::End(t))).map_err(|_| stopped())?;
        let counted = ValueCounter::new(input(t).2).map(|c| c.acc);
        seen.push((t, counted.unwrap_or_default()));
    }
    by_start.retain(|&t| input(t).0 < input(t).1);
    let size = src.stamp.0;
    let (mut pos, mut next) = (0u64, 0usize);
    let mut passing: Vec<Passing> = vec![];
    while pos < size {
        let n = (CHUNK as u64).min(size - pos);
        let end = pos + n;
        let mut buf = take();
        buf.resize(n as usize, 0);
        src.file.read_exact_at(&mut buf, pos).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::other(format!(
                    "{}: file ended before byte {end} (truncated while fixing?)",
                    src.path.display()
                ))
            } else {
                e
            }
        })?;
        while let Some(&t) = by_start.get(next).filter(|&&t| input(t).0 < end) {
            let (start, stop, dtype) = input(t);
            passing.push(Passing {
                t,
                start,
                end: stop,
                counter: ValueCounter::new(dtype),
            });
            next += 1;
        }
        // (tensor, offset in it, bytes of `buf`, last piece)
        let pieces: Vec<(usize, u64, Range<usize>, bool)> = passing
            .iter()
            .map(|p| {
                let (a, b) = (p.start.max(pos), p.end.min(end));
                (
                    p.t,
                    a - p.start,
                    (a - pos) as usize..(b - pos) as usize,
                    p.end <= end,
                )
            })
            .collect();
        rayon::join(
            || hashers.feed(&buf),
            || {
                for (p, (_, _, r, _)) in passing.iter_mut().zip(&pieces) {
                    if let Some(c) = &mut p.counter {
                        c.feed(&buf[r.clone()]);
                    }
                }
            },
        );
        passing.retain_mut(|p| {
            if p.end > end {
                return true;
            }
            seen.push((p.t, p.counter.take().map(|c| c.acc).unwrap_or_default()));
            false
        });
        if drop_behind {
            crate::source::fadvise_dontneed(src.file.as_raw_fd(), pos, n);
        }
        if pieces.is_empty() {
            mine.set(Some(buf));
        } else {
            let count = pieces.len();
            let mut shared = Some(Arc::new(buf));
            for (k, (t, off, range, last)) in pieces.into_iter().enumerate() {
                // the last piece takes the buffer, so the writer can hand it back when done
                let buf = if k + 1 == count {
                    shared.take()
                } else {
                    shared.clone()
                };
                let buf = buf.ok_or_else(stopped)?;
                tx.send(Ok(Piece::Data { t, off, buf, range }))
                    .map_err(|_| stopped())?;
                if last {
                    tx.send(Ok(Piece::End(t))).map_err(|_| stopped())?;
                }
            }
        }
        pos = end;
    }
    Ok(seen)
}

/// What the written file must hold.
struct Expected<'a> {
    /// The planned tensors in data order, and the CRC-64 of each as written.
    order: &'a [&'a PlanTensor],
    hashes: &'a [u64],
    metadata: &'a [(String, String)],
    size: u64,
    /// The first source's warning-or-worse checks.
    before: &'a FxHashSet<String>,
}

/// Checks the fsynced temporary file against the plan (see the module doc).
fn verify(
    plan: &Plan,
    tmp: &TempOutput,
    want: &Expected,
    zero_cache: &mut ZeroChecks,
    observer: &mut dyn Observer,
) -> Result<(), FixError> {
    let Expected {
        order,
        hashes,
        metadata,
        size,
        before,
    } = *want;
    let bad = |m: String| FixError::Verify(m);
    let t = crate::table::open_table(&tmp.path()).map_err(|e| bad(format!("re-scan: {e}")))?;
    if t.format != crate::sniff::Format::Safetensors {
        return Err(bad(format!("output reads as {:?}", t.format)));
    }
    if t.size != size {
        return Err(bad(format!("output has {} bytes, planned {size}", t.size)));
    }
    if t.tensors.len() != order.len() {
        return Err(bad(format!(
            "output has {} tensors, planned {}",
            t.tensors.len(),
            order.len()
        )));
    }
    for (got, want) in t.tensors.iter().zip(order) {
        let w = &want.out;
        if got.name != w.name || got.dtype != w.dtype || got.shape != w.shape {
            return Err(bad(format!(
                "tensor table differs from the plan at {}",
                w.name
            )));
        }
    }
    if t.unaccounted_bytes() != 0 {
        return Err(bad(format!("{} unaccounted bytes", t.unaccounted_bytes())));
    }
    let got_meta: Vec<(String, String)> = t
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let mut want_meta = metadata.to_vec();
    want_meta.sort();
    if got_meta != want_meta {
        return Err(bad("metadata differs from the plan".into()));
    }
    if let Some(k) = plan.kind {
        if t.class.kind != k {
            return Err(bad(format!(
                "output is a {} file, expected {k}",
                t.class.kind
            )));
        }
    }
    let after: FxHashSet<String> = t
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::Warning)
        .map(|f| f.check.to_string())
        .collect();
    let mut still: Vec<&String> = plan.gone.iter().filter(|g| after.contains(*g)).collect();
    still.sort();
    if !still.is_empty() {
        let names: Vec<&str> = still.iter().map(|s| s.as_str()).collect();
        return Err(bad(format!(
            "the re-scan still reports {}",
            names.join(", ")
        )));
    }
    let mut new: Vec<&str> = after
        .iter()
        .filter(|a| !before.contains(*a))
        .map(|s| s.as_str())
        .collect();
    new.sort();
    if !new.is_empty() {
        return Err(bad(format!(
            "the re-scan reports new problems: {}",
            new.join(", ")
        )));
    }
    // Re-read every tensor's bytes and compare with what was hashed while writing.
    let src = Source {
        path: tmp.path(),
        file: t
            .file
            .ok_or_else(|| bad("re-scan: the output has no file to re-read".into()))?,
        stamp: Stamp(size, 0, 0, 0),
    };
    let total: u64 = t.tensors.iter().map(|x| x.len).sum();
    let (mut done, mut last) = (0u64, 0u64);
    let spare = std::cell::Cell::new(Vec::with_capacity(CHUNK));
    for ((x, want), p) in t.tensors.iter().zip(hashes).zip(order) {
        let mut th = TensorHash::default();
        let mut arange_ok = true;
        let mut at = 0usize;
        let expect = (p.op == Op::Arange).then(|| arange(&p.out.shape));
        stored_bytes(&src, x, &mut || spare.take(), &mut |piece| {
            match piece {
                Ok(d) => {
                    th.data(&d);
                    if let Some(e) = &expect {
                        arange_ok &= e.get(at..at + d.len()) == Some(&d[..]);
                    }
                    at += d.len();
                    done += d.len() as u64;
                    spare.set(d);
                }
                Err(n) => {
                    th.hole(n);
                    arange_ok &= expect.is_none() || n == 0;
                    at += n as usize;
                    done += n;
                }
            }
            Ok(())
        })
        .map_err(|e| bad(format!("re-read: {e}")))?;
        if th.finish(zero_cache) != *want {
            return Err(bad(format!(
                "tensor {} does not hold the bytes written",
                x.name
            )));
        }
        if !arange_ok {
            let n = p.out.shape.last().copied().unwrap_or(1);
            return Err(bad(format!("{} is not 0..{}", x.name, n.saturating_sub(1))));
        }
        if done - last >= CHUNK as u64 {
            observer.progress(Stage::Verify, done, total)?;
            last = done;
        }
    }
    observer.progress(Stage::Verify, total, total)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::tests::names;
    use crate::table::open_table;

    /// A safetensors file of F32 tensors `(name, values)` written by the reference `safetensors` crate.
    fn reference_file(
        dir: &Path,
        name: &str,
        tensors: &[(&str, Vec<f32>)],
        meta: Option<Vec<(String, String)>>,
    ) -> PathBuf {
        use safetensors::tensor::{serialize_to_file, TensorView};
        let bytes: Vec<(String, Vec<u8>, usize)> = tensors
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    v.len(),
                )
            })
            .collect();
        let views: Vec<(String, TensorView)> = bytes
            .iter()
            .map(|(n, b, len)| {
                (
                    n.clone(),
                    TensorView::new(safetensors::Dtype::F32, vec![*len], b).unwrap(),
                )
            })
            .collect();
        let p = dir.join(name);
        let meta = meta.map(|m| m.into_iter().collect());
        serialize_to_file(views, meta, &p).unwrap();
        p
    }

    /// A plan copying every tensor of `path`, or casting it to `cast_to`.
    fn plan_of(path: &Path, cast_to: Option<Dtype>) -> Plan {
        let t = open_table(path).unwrap();
        let meta = t
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        Plan {
            tensors: t
                .tensors
                .iter()
                .map(|x| PlanTensor {
                    out: OutTensor {
                        name: x.name.clone(),
                        dtype: cast_to.unwrap_or(x.dtype),
                        shape: x.shape.clone(),
                    },
                    op: if cast_to.is_some() {
                        Op::Cast
                    } else {
                        Op::Copy
                    },
                    input: Some((0, x.clone())),
                })
                .collect(),
            metadata: meta,
            sources: vec![path.to_path_buf()],
            ..Plan::default()
        }
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as f32 / 1e6)
            .collect()
    }

    #[test]
    fn a_copy_is_the_reference_writers_file_and_a_cast_is_each_value_cast() {
        let dir = tempfile::tempdir().unwrap();
        let big = values(3 << 20, 7); // 12 MiB: more than one chunk
        let src = reference_file(
            dir.path(),
            "a.safetensors",
            &[("b", big.clone()), ("a", values(5, 1))],
            None,
        );
        let out = dir.path().join("o.safetensors");
        execute(&plan_of(&src, None), &out, false, None, &mut Quiet).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());

        let out16 = dir.path().join("h.safetensors");
        execute(
            &plan_of(&src, Some(Dtype::F16)),
            &out16,
            false,
            None,
            &mut Quiet,
        )
        .unwrap();
        let bytes = std::fs::read(&out16).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let b = st.tensor("b").unwrap();
        assert_eq!(b.dtype(), safetensors::Dtype::F16);
        let got: Vec<u16> = b
            .data()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let want: Vec<u16> = big
            .iter()
            .map(|v| half::f16::from_f32(*v).to_bits())
            .collect();
        assert!(got == want);
    }

    #[test]
    fn the_reader_reports_nan_in_the_tensors_it_read_and_not_in_those_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = values(4096, 5);
        bad[7] = f32::NAN;
        bad[9] = f32::INFINITY;
        let src = reference_file(
            dir.path(),
            "a.safetensors",
            &[("bad", bad), ("good", values(4096, 6))],
            None,
        );
        let out = dir.path().join("o.safetensors");
        for cast_to in [None, Some(Dtype::F16)] {
            let w = execute(&plan_of(&src, cast_to), &out, true, None, &mut Quiet).unwrap();
            let f = &w.source_findings;
            assert_eq!(f.len(), 1, "{f:?}");
            assert_eq!(f[0].check, "values.nan-inf");
            assert_eq!(
                (f[0].details["nan"].as_u64(), f[0].details["inf"].as_u64()),
                (Some(1), Some(1)),
                "{f:?}"
            );
        }
        let mut keep_good = plan_of(&src, None);
        keep_good.tensors.retain(|t| t.out.name == "good");
        let w = execute(&keep_good, &out, true, None, &mut Quiet).unwrap();
        assert!(w.source_findings.is_empty(), "{:?}", w.source_findings);
    }

    #[test]
    fn sshs_hashes_are_recomputed_from_the_data_written() {
        let dir = tempfile::tempdir().unwrap();
        let meta = vec![
            ("sshs_model_hash".to_string(), "stale".to_string()),
            ("sshs_legacy_hash".to_string(), "stale".to_string()),
            ("ss_network_dim".to_string(), "4".to_string()),
        ];
        let src = reference_file(
            dir.path(),
            "a.safetensors",
            &[("w", values(1 << 20, 3))],
            Some(meta),
        );
        let out = dir.path().join("o.safetensors");
        let mut plan = plan_of(&src, Some(Dtype::F16));
        plan.metadata.push(("fastscan.fix".into(), "[]".into()));
        let w = execute(&plan, &out, false, None, &mut Quiet).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        // the addnet hash: sha256 of everything after the header
        let model = format!("{:x}", Sha256::digest(&bytes[8 + n..]));
        // the legacy hash: sha256 of 64 KiB at 1 MiB of the same file with only ss_* metadata,
        // as the reference crate writes it
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let only_ss: std::collections::HashMap<String, String> =
            [("ss_network_dim".to_string(), "4".to_string())].into();
        let ss_file = safetensors::tensor::serialize(st.tensors(), Some(only_ss)).unwrap();
        let legacy = format!("{:x}", Sha256::digest(&ss_file[0x100000..0x110000]))[..8].to_string();
        let meta: std::collections::BTreeMap<_, _> = w.metadata.into_iter().collect();
        assert_eq!(meta["sshs_model_hash"], model);
        assert_eq!(meta["sshs_legacy_hash"], legacy);
        let t = open_table(&out).unwrap();
        assert_eq!(t.metadata["sshs_model_hash"], model.as_str());
        assert_eq!(t.metadata["fastscan.fix"], "[]");
    }

    #[test]
    fn source_hashes_are_the_whole_files_taken_in_one_read_in_the_files_order() {
        let dir = tempfile::tempdir().unwrap();
        // A file laid out a, b, c where the writer's order is b, c, a: "a" 2 bytes of U8, so that "b"
        // (F32) starts 2 bytes past an element boundary and the 8 MiB read boundary cuts one of its
        // elements in two: that element is the NaN the reader must count once.
        let n_b: u64 = 3 << 20;
        let n_c: u64 = 5;
        let json = format!(
            r#"{{"a":{{"dtype":"U8","shape":[2],"data_offsets":[0,2]}},"b":{{"dtype":"F32","shape":[{n_b}],"data_offsets":[2,{}]}},"c":{{"dtype":"F16","shape":[{n_c}],"data_offsets":[{},{}]}}}}"#,
            2 + 4 * n_b,
            2 + 4 * n_b,
            2 + 4 * n_b + 2 * n_c
        );
        let mut json = json.into_bytes();
        json.resize(json.len().next_multiple_of(8), b' ');
        let base = 8 + json.len() as u64;
        let mut file = (json.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&json);
        file.extend_from_slice(&[7, 9]);
        let nan_at = ((CHUNK as u64 - base - 2) / 4) as usize;
        let mut b = values(n_b as usize, 11);
        b[nan_at] = f32::NAN;
        file.extend(b.iter().flat_map(|x| x.to_le_bytes()));
        file.extend(
            (0..n_c as u16).flat_map(|i| half::f16::from_f32(i as f32).to_bits().to_le_bytes()),
        );
        let straddles = base + 2 + 4 * nan_at as u64;
        assert!(straddles < CHUNK as u64 && straddles + 4 > CHUNK as u64);
        let src = dir.path().join("s.safetensors");
        std::fs::write(&src, &file).unwrap();
        let t = open_table(&src).unwrap();
        let x = |name: &str| t.tensors.iter().find(|x| x.name == name).unwrap().clone();
        let copy = |out: &str, from: &str| PlanTensor {
            out: OutTensor {
                name: out.into(),
                dtype: x(from).dtype,
                shape: x(from).shape.clone(),
            },
            op: Op::Copy,
            input: Some((0, x(from))),
        };
        let mut half_b = copy("b_half", "b");
        half_b.out.dtype = Dtype::F16;
        half_b.op = Op::Cast;
        let plan = Plan {
            // "b2" reads the bytes of "b" again (a shared storage); "b_half" is read on its own
            tensors: vec![
                copy("a", "a"),
                copy("b", "b"),
                copy("b2", "b"),
                copy("c", "c"),
                half_b,
            ],
            metadata: vec![
                ("format".into(), "pt".into()),
                (SOURCE_BLAKE3.into(), String::new()),
                (SOURCE_SHA256.into(), String::new()),
            ],
            sources: vec![src.clone()],
            source_hashes: true,
            ..Plan::default()
        };
        let out = dir.path().join("o.safetensors");
        let w = execute(&plan, &out, false, None, &mut Quiet).unwrap();
        let meta: std::collections::BTreeMap<_, _> = w.metadata.into_iter().collect();
        assert_eq!(meta[SOURCE_BLAKE3], blake3::hash(&file).to_hex().as_str());
        assert_eq!(meta[SOURCE_SHA256], format!("{:x}", Sha256::digest(&file)));
        let bytes = std::fs::read(&out).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let region = |a: u64, b: u64| &file[(base + a) as usize..(base + b) as usize];
        assert_eq!(st.tensor("a").unwrap().data(), region(0, 2));
        assert!(st.tensor("b").unwrap().data() == region(2, 2 + 4 * n_b));
        assert!(st.tensor("b2").unwrap().data() == region(2, 2 + 4 * n_b));
        assert_eq!(
            st.tensor("c").unwrap().data(),
            region(2 + 4 * n_b, 2 + 4 * n_b + 2 * n_c)
        );
        let halves: Vec<u8> = b
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        assert!(st.tensor("b_half").unwrap().data() == &halves[..]);
        assert_eq!(
            open_table(&out).unwrap().metadata[SOURCE_SHA256],
            meta[SOURCE_SHA256].as_str()
        );
        let f = &w.source_findings;
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].check, "values.nan-inf");
        assert_eq!(f[0].details["nan"].as_u64(), Some(1), "{f:?}");
        // the sizes of a plan's output count the hashes' final width
        assert_eq!(output_size(&plan).unwrap(), bytes.len() as u64);
        // without their keys, or with sd-scripts' hashes beside them, such a plan is refused
        let mut no_key = plan.clone();
        no_key.metadata.pop();
        let e = execute(
            &no_key,
            &dir.path().join("x.safetensors"),
            false,
            None,
            &mut Quiet,
        );
        assert!(matches!(e, Err(FixError::Plan(_))));
        let mut both = plan.clone();
        both.metadata.push((SSHS_MODEL_HASH.into(), String::new()));
        let e = execute(
            &both,
            &dir.path().join("x.safetensors"),
            false,
            None,
            &mut Quiet,
        );
        assert!(matches!(e, Err(FixError::Plan(_))));
    }

    #[test]
    fn convert_metadata_is_the_extras_then_the_source_and_its_hash_keys() {
        let extras = vec![
            ("epoch".to_string(), "3".to_string()),
            ("format".to_string(), "x".to_string()),
        ];
        let m = convert_metadata(&extras, "model.ckpt");
        let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "epoch",
                "fastscan.ckpt.format",
                "format",
                "fastscan.source",
                SOURCE_BLAKE3,
                SOURCE_SHA256
            ]
        );
        assert_eq!(m[2].1, "pt");
        assert_eq!(m[3].1, "model.ckpt");
    }

    struct Corrupt(PathBuf, u8);
    impl Observer for Corrupt {
        fn written(&mut self, file: &File) -> io::Result<()> {
            match self.1 {
                0 => {
                    // flip one bit of the last byte (inside the data region)
                    let end = file.metadata()?.len() - 1;
                    let mut b = [0u8];
                    file.read_exact_at(&mut b, end)?;
                    file.write_all_at(&[b[0] ^ 1], end)
                }
                1 => {
                    // someone rewrites the input meanwhile
                    let f = File::options().write(true).open(&self.0)?;
                    f.set_modified(std::time::SystemTime::UNIX_EPOCH)
                }
                _ => std::fs::write(&self.0, b"someone else's file"),
            }
        }
    }

    #[test]
    fn verification_catches_a_changed_byte_a_changed_input_and_an_output_that_appeared() {
        let dir = tempfile::tempdir().unwrap();
        let src = reference_file(
            dir.path(),
            "a.safetensors",
            &[("a", values(100, 1)), ("z", values(300, 2))],
            None,
        );
        let before = std::fs::read(&src).unwrap();
        let out = dir.path().join("o.safetensors");
        let plan = plan_of(&src, None);
        let e = execute(&plan, &out, false, None, &mut Corrupt(src.clone(), 0)).unwrap_err();
        assert!(
            e.to_string()
                .contains("tensor z does not hold the bytes written"),
            "{e}"
        );
        assert_eq!(names(dir.path()), vec!["a.safetensors"]);
        let e = execute(&plan, &out, false, None, &mut Corrupt(src.clone(), 1)).unwrap_err();
        assert!(matches!(e, FixError::Changed(_)), "{e}");
        assert_eq!(std::fs::read(&src).unwrap(), before);
        let src = reference_file(dir.path(), "b.safetensors", &[("a", values(100, 1))], None);
        let plan = plan_of(&src, None);
        let e = execute(&plan, &out, false, None, &mut Corrupt(out.clone(), 2)).unwrap_err();
        assert!(matches!(e, FixError::Exists(_)), "{e}");
        assert_eq!(std::fs::read(&out).unwrap(), b"someone else's file");
        assert_eq!(
            names(dir.path()),
            vec!["a.safetensors", "b.safetensors", "o.safetensors"]
        );
    }

    struct StopAt(u64);
    impl Observer for StopAt {
        fn progress(&mut self, stage: Stage, done: u64, total: u64) -> Result<(), FixError> {
            assert!(done <= total);
            if stage == Stage::Write && done >= self.0 {
                return Err(FixError::Stopped);
            }
            Ok(())
        }
    }

    #[test]
    fn a_stopped_fix_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = reference_file(
            dir.path(),
            "a.safetensors",
            &[("a", values(5 << 20, 1))],
            None,
        );
        let out = dir.path().join("o.safetensors");
        let e = execute(&plan_of(&src, None), &out, false, None, &mut StopAt(1)).unwrap_err();
        assert!(matches!(e, FixError::Stopped));
        assert_eq!(names(dir.path()), vec!["a.safetensors"]);
    }

    #[test]
    fn holes_stay_holes_and_strided_tensors_are_gathered() {
        let dir = tempfile::tempdir().unwrap();
        // a sparse file: one 4 MiB F32 tensor of zeros stored as a hole, then a 3x2 tensor
        let p = dir.path().join("s.safetensors");
        let small: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let outs = [
            OutTensor {
                name: "h".into(),
                dtype: Dtype::F32,
                shape: vec![1 << 20],
            },
            OutTensor {
                name: "m".into(),
                dtype: Dtype::F32,
                shape: vec![3, 2],
            },
        ];
        let head = serialize_header(&outs, None).unwrap();
        let base = 8 + head.json.len() as u64;
        let f = File::create(&p).unwrap();
        f.write_all_at(&(head.json.len() as u64).to_le_bytes(), 0)
            .unwrap();
        f.write_all_at(&head.json, 8).unwrap();
        f.write_all_at(&small, base + head.offsets[1].0).unwrap();
        f.set_len(base + head.data_len()).unwrap();
        drop(f);
        let t = open_table(&p).unwrap();
        let mut m = t.tensors.iter().find(|x| x.name == "m").unwrap().clone();
        m.shape = vec![2, 3];
        m.strides = Some(vec![1, 2]); // the transpose of a [3, 2] row-major tensor
        let h = t.tensors.iter().find(|x| x.name == "h").unwrap().clone();
        let plan = Plan {
            tensors: vec![
                PlanTensor {
                    out: OutTensor {
                        name: "h".into(),
                        dtype: Dtype::F16,
                        shape: h.shape.clone(),
                    },
                    op: Op::Cast,
                    input: Some((0, h)),
                },
                PlanTensor {
                    out: OutTensor {
                        name: "mt".into(),
                        dtype: Dtype::F32,
                        shape: vec![2, 3],
                    },
                    op: Op::Copy,
                    input: Some((0, m)),
                },
                PlanTensor {
                    out: OutTensor {
                        name: "pos".into(),
                        dtype: Dtype::I64,
                        shape: vec![1, 4],
                    },
                    op: Op::Arange,
                    input: None,
                },
            ],
            sources: vec![p.clone()],
            ..Plan::default()
        };
        let out = dir.path().join("o.safetensors");
        execute(&plan, &out, false, None, &mut Quiet).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mt: Vec<f32> = st
            .tensor("mt")
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(mt, vec![0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);
        let pos: Vec<i64> = st
            .tensor("pos")
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(pos, vec![0, 1, 2, 3]);
        assert!(st.tensor("h").unwrap().data().iter().all(|&b| b == 0));
        // the 2 MiB of F16 zeros were not written out as data blocks
        let blocks = std::fs::metadata(&out).unwrap().blocks() * 512;
        let sparse_src = std::fs::metadata(&p).unwrap().blocks() * 512;
        if sparse_src < 1 << 20 {
            assert!(blocks < 1 << 20, "output takes {blocks} bytes on disk");
        }
    }

    /// A file with one F64 tensor `d` (the reference crate writes it).
    fn f64_file(dir: &Path) -> PathBuf {
        use safetensors::tensor::{serialize_to_file, TensorView};
        let b: Vec<u8> = [1.5f64, 2.5].iter().flat_map(|x| x.to_le_bytes()).collect();
        let v = TensorView::new(safetensors::Dtype::F64, vec![2], &b).unwrap();
        let p = dir.join("d.safetensors");
        serialize_to_file(vec![("d".to_string(), v)], None, &p).unwrap();
        p
    }

    #[test]
    fn the_recheck_refuses_a_problem_kept_or_added() {
        let dir = tempfile::tempdir().unwrap();
        let clean = reference_file(dir.path(), "a.safetensors", &[("a", values(4, 1))], None);
        let d = f64_file(dir.path());
        let out = dir.path().join("o.safetensors");
        // dtype.float64 must be gone, but the F64 tensor is copied as it is
        let mut keep = plan_of(&d, None);
        keep.gone = vec!["dtype.float64".into()];
        let e = execute(&keep, &out, false, None, &mut Quiet).unwrap_err();
        assert!(e.to_string().contains("still reports dtype.float64"), "{e}");
        // a clean file gains an F64 tensor from a second source: a new problem
        let mut add = plan_of(&clean, None);
        let mut more = plan_of(&d, None);
        more.tensors[0].input.as_mut().unwrap().0 = 1;
        add.tensors.extend(more.tensors);
        add.sources.push(d.clone());
        let e = execute(&add, &out, false, None, &mut Quiet).unwrap_err();
        assert!(e.to_string().contains("new problems: dtype.float64"), "{e}");
        // the same two with a cast of the F64 tensor down: both pass
        add.tensors[1].op = Op::Cast;
        add.tensors[1].out.dtype = Dtype::F32;
        add.gone = vec!["dtype.float64".into()];
        execute(&add, &out, false, None, &mut Quiet).unwrap();
        assert_eq!(
            names(dir.path()),
            vec!["a.safetensors", "d.safetensors", "o.safetensors"]
        );
    }

    #[test]
    fn bad_plans_and_targets_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let src = reference_file(dir.path(), "a.safetensors", &[("a", values(4, 1))], None);
        let mut plan = plan_of(&src, None);
        plan.tensors[0].out.dtype = Dtype::I8;
        let out = dir.path().join("o.safetensors");
        assert!(matches!(
            execute(&plan, &out, false, None, &mut Quiet),
            Err(FixError::Plan(_))
        ));
        let plan = plan_of(&src, None);
        let e = execute(
            &plan,
            &dir.path().join("nope/o.safetensors"),
            false,
            None,
            &mut Quiet,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no such folder"), "{e}");
        assert!(matches!(
            execute(&plan, &src, false, None, &mut Quiet),
            Err(FixError::Exists(_))
        ));
        assert_eq!(names(dir.path()), vec!["a.safetensors"]);
    }
}
