//! Legacy PyTorch pickle checkpoints, read without executing them (contract §2, §4).
//!
//! [`zip`] finds the pickles of a PyTorch zip checkpoint, [`reader`] walks each pickle's opcodes
//! ([`opcodes`]) without importing or calling anything, [`imports`] judges every import, and
//! [`tensors`] turns the reconstructed state dict into a tensor table with absolute file offsets.

pub mod imports;
pub mod opcodes;
pub mod reader;
pub mod tar;
pub mod tensors;
pub mod zip;

use crate::report::{Finding, Severity};
use crate::sniff::{Format, SNIFF_LEN};
use crate::tensor::TensorInfo;
use imports::Verdict;
use reader::{Limits, Obj, Run, StorageRef, TensorRef};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

/// What reading a pickle-based file yields.
#[derive(Default)]
pub struct PickleScan {
    pub tensors: Vec<TensorInfo>,
    pub findings: Vec<Finding>,
    /// Scalars next to the state dict in the main pickle's root dict ([`tensors::scalar_extras`]).
    pub extras: Vec<(String, String)>,
}

/// Most bytes of a deflated zip entry held in memory (zip bombs): past them, tensors are not listed and
/// imports are checked by streaming the rest through the inflater.
const MAX_INFLATED: usize = 128 << 20;
/// Most inflated bytes streamed for imports: past them the rest is reported unchecked (critical).
const MAX_STREAMED: u64 = 16 << 30;
/// Pickles a legacy (pre-1.6) PyTorch file holds: magic, protocol, sys info, data, storage keys.
const LEGACY_PICKLES: usize = 5;
/// Reasons listed in one `pickle.invalid` finding.
const MAX_REASONS: usize = 20;

/// True when `head` plausibly starts a protocol 0/1 pickle (text opcodes, no PROTO header).
pub fn looks_like_protocol0(head: &[u8]) -> bool {
    const STARTERS: &[u8] = b"(c]})NIJKLMFGSTUVXl";
    if !matches!(head.first(), Some(b) if STARTERS.contains(b)) {
        return false;
    }
    let strict = Limits {
        resync: false,
        ..Limits::default()
    };
    let r = reader::run(head, 0, strict);
    let names_ok = r.imports.iter().all(|i| {
        !i.module.is_empty()
            && !i.name.is_empty()
            && format!("{}{}", i.module, i.name)
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    });
    if !names_ok {
        return false;
    }
    // A GLOBAL / INST with identifier operands as the very first opcode is strong evidence by itself.
    let strong = r.imports.first().is_some_and(|i| i.pos == 0);
    match &r.error {
        None => r.complete,
        // Cut off by the end of the bytes seen: plausible after a few clean opcodes (or a first import).
        Some(_) => {
            let cut = r.end >= head.len() && r.truncated;
            cut && ((r.ops >= 2 && strong) || (r.ops >= 3 && head.len() >= SNIFF_LEN))
        }
    }
}

/// Why a pickle-based file cannot be read at all.
#[derive(Debug, Clone, PartialEq)]
pub enum PickleError {
    /// A zip or tar archive with no pickle in it: not a model file at all.
    NoPickle,
    /// The zip container cannot be read (the reason).
    Container(String),
    /// Not a pickle-based format.
    NotPickleBased(Format),
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PickleError::NoPickle => {
                f.write_str("archive holds no pickle: not a PyTorch checkpoint")
            }
            PickleError::Container(why) => f.write_str(why),
            PickleError::NotPickleBased(format) => {
                write!(f, "{} is not a pickle-based format", format.name())
            }
        }
    }
}

/// Scans a pickle-based file's bytes; `Err` is a reason the file cannot be read at all.
pub fn scan(bytes: &[u8], format: Format) -> Result<PickleScan, PickleError> {
    let mut c = Collector::default();
    let tensors = match format {
        Format::TorchZip => scan_zip(bytes, &mut c)?,
        Format::TorchLegacy => scan_legacy(bytes, &mut c),
        Format::TorchTar => scan_tar(bytes, &mut c)?,
        Format::Pickle => scan_raw(bytes, &mut c),
        Format::Safetensors
        | Format::Npy
        | Format::Npz
        | Format::Json
        | Format::Diffusers
        | Format::StateDict
        | Format::Unknown => return Err(PickleError::NotPickleBased(format)),
    };
    let extras = std::mem::take(&mut c.extras);
    Ok(PickleScan {
        tensors,
        findings: c.finish(format),
        extras,
    })
}

/// Every import of every pickle in a raw pickle stream, in order, unjudged, with how each is used and its
/// offset in `data` (for tools and the differential tests against `pickletools`).
pub fn imports_of(data: &[u8]) -> Vec<reader::Import> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let run = reader::run(data, pos, Limits::default());
        let (complete, end, ops) = (run.complete, run.end, run.ops);
        out.extend(run.imports);
        if !complete || end <= pos || ops == 0 {
            break;
        }
        pos = end;
    }
    out
}

/// One distinct import seen, with where it first appeared and how the pickle uses it.
struct Seen {
    verdict: Verdict,
    position: usize,
    offset: Option<u64>,
    opcode: &'static str,
    unresolved: Option<String>,
    used: Option<&'static str>,
    written: Option<String>,
    count: u64,
}

/// Gathers imports and problems across the pickles of one file.
#[derive(Default)]
struct Collector {
    imports: BTreeMap<(String, String, String), Seen>,
    invalid: Vec<serde_json::Value>,
    limited: Vec<serde_json::Value>,
    findings: Vec<Finding>,
    /// Scalars of the main pickle's root dict (the first pickle whose tensors are placed).
    extras: Vec<(String, String)>,
}

impl Collector {
    /// Records imports found in `entry`; `base` is the file offset of the pickle buffer's byte 0.
    fn record(&mut self, entry: Option<&str>, base: Option<u64>, imports: &[reader::Import]) {
        for imp in imports {
            let verdict = match &imp.unresolved {
                Some(_) => Verdict::Dangerous(
                    "an import the pickle computes at load time cannot be checked".into(),
                ),
                None => imports::classify(&imp.module, &imp.name),
            };
            if verdict == Verdict::Allowed {
                continue;
            }
            let key = (
                entry.unwrap_or("").to_string(),
                imp.module.clone(),
                imp.name.clone(),
            );
            self.imports
                .entry(key)
                .and_modify(|s| {
                    s.count += 1;
                    s.used = s.used.or(imp.used);
                })
                .or_insert(Seen {
                    verdict,
                    position: imp.pos,
                    offset: base.map(|b| b + imp.pos as u64),
                    opcode: imp.opcode,
                    unresolved: imp.unresolved.clone(),
                    used: imp.used,
                    written: imp.written.clone(),
                    count: 1,
                });
        }
    }

    fn invalid(&mut self, entry: Option<&str>, position: Option<usize>, reason: String) {
        if self.invalid.len() < MAX_REASONS {
            self.invalid
                .push(json!({"entry": entry, "position": position, "reason": reason}));
        }
    }

    fn finish(mut self, format: Format) -> Vec<Finding> {
        for ((entry, module, name), s) in std::mem::take(&mut self.imports) {
            let entry = (!entry.is_empty()).then_some(entry);
            let mut details = json!({
                "module": module,
                "name": name,
                "entry": entry,
                "position": s.position,
                "offset": s.offset,
                "opcode": s.opcode,
                "count": s.count,
                "used": s.used,
            });
            if let Some(w) = &s.written {
                details["written"] = json!(w);
            }
            let why = match (&s.verdict, s.used) {
                (Verdict::Dangerous(why), _) => why.clone(),
                (_, Some(how)) => format!("not on the allow-list, and used by the pickle ({how})"),
                _ => {
                    self.findings.push(Finding::new(
                        "pickle.unknown-import",
                        Severity::Warning,
                        format!(
                            "pickle imports {module}.{name}, which is not on the allow-list (never called)"
                        ),
                        details,
                    ));
                    continue;
                }
            };
            details["reason"] = json!(why);
            if let Some(u) = &s.unresolved {
                details["unresolved"] = json!(u);
            }
            let message = match &s.unresolved {
                Some(u) => format!(
                    "pickle {} at byte {}: {u} ({module} {name}); it cannot be checked, so it counts as dangerous",
                    s.opcode, s.position
                ),
                None => format!("pickle imports {module}.{name}: {why}; loading this file can run code"),
            };
            self.findings.push(Finding::new(
                "pickle.dangerous-import",
                Severity::Critical,
                message,
                details,
            ));
        }
        if !self.invalid.is_empty() {
            let first = self.invalid[0]["reason"].as_str().unwrap_or("").to_string();
            self.findings.push(Finding::new(
                "pickle.invalid",
                Severity::Error,
                format!("the pickle cannot be read completely: {first}"),
                json!({"problems": self.invalid}),
            ));
        }
        if !self.limited.is_empty() {
            let first = self.limited[0]["reason"].as_str().unwrap_or("").to_string();
            self.findings.push(Finding::new(
                "pickle.too-large",
                Severity::Warning,
                format!(
                    "the pickle is too large to follow every value ({first}): all imports were checked, \
                     tensors after that point are not listed"
                ),
                json!({"limits": self.limited}),
            ));
        }
        self.findings.push(Finding::new(
            "format.legacy-pickle",
            Severity::Info,
            "pickle-based checkpoint: loading it with pickle can run code; safetensors is the safe format \
             (`fastscan convert` makes one)",
            json!({"format": format.name()}),
        ));
        self.findings
    }
}

/// Runs one pickle at `pos` of `data` and records its imports (and its error, when `report_error`;
/// never the cut-off end of a buffer that holds only the start of the data, when `cut`).
fn run_one<'a>(
    data: &'a [u8],
    pos: usize,
    entry: Option<&str>,
    base: Option<u64>,
    c: &mut Collector,
    report_error: bool,
    cut: bool,
) -> Run<'a> {
    let run = reader::run(data, pos, Limits::default());
    c.record(entry, base, &run.imports);
    if let Some((p, why)) = &run.error {
        let cut_off = cut && !run.complete && *p == run.stopped_at;
        if report_error && !cut_off {
            c.invalid(entry, Some(*p), why.clone());
        }
    }
    if let Some(why) = &run.limited {
        if c.limited.len() < MAX_REASONS {
            c.limited.push(json!({"entry": entry, "reason": why}));
        }
    }
    run
}

/// What [`scan_stream`] read: the first pickle, and where (and in which protocol) reading stopped.
struct Streamed<'a> {
    first: Option<Run<'a>>,
    resume: usize,
    proto: u8,
}

/// Every pickle concatenated in a raw stream (Python reads the first; scanners must see them all).
/// `cut` says `data` is only the start of the stream.
fn scan_stream<'a>(
    data: &'a [u8],
    entry: Option<&str>,
    base: Option<u64>,
    c: &mut Collector,
    cut: bool,
) -> Streamed<'a> {
    let mut first = None;
    let mut pos = 0;
    let mut proto = 0;
    while pos < data.len() {
        let leading = first.is_none();
        let run = run_one(data, pos, entry, base, c, leading, cut);
        let (complete, end, ops) = (run.complete, run.end, run.ops);
        proto = run.proto;
        let stopped = run.stopped_at;
        if leading {
            first = Some(run);
        }
        // Bytes after the last pickle that are no pickle at all end the stream quietly.
        if !complete || end <= pos || ops == 0 {
            pos = stopped;
            break;
        }
        pos = end;
    }
    Streamed {
        first,
        resume: pos.min(data.len()),
        proto,
    }
}

/// A bare pickle lists no torch tensors (their storages are not in it), only numpy arrays stored as is.
fn scan_raw(data: &[u8], c: &mut Collector) -> Vec<TensorInfo> {
    match scan_stream(data, None, Some(0), c, false).first {
        Some(run) => place_arrays(&run, Some(0), c),
        None => Vec::new(),
    }
}

/// Element size in bytes of a storage class, including classes without a safetensors dtype.
fn storage_elem_size(s: &StorageRef) -> Option<u64> {
    if let Some(d) = s.dtype {
        return Some(d.bits() / 8);
    }
    match s.class.rsplit('.').next()? {
        "ComplexDoubleStorage" => Some(16),
        "QInt8Storage" | "QUInt8Storage" | "QUInt4x2Storage" | "QUInt2x4Storage" => Some(1),
        "QInt32Storage" => Some(4),
        _ => None,
    }
}

/// Places every named tensor given a storage locator (key -> absolute start, byte length).
fn place_all(
    run: &Run,
    locate: impl Fn(&StorageRef) -> Result<(u64, u64), String>,
    c: &mut Collector,
    entry: Option<&str>,
) -> Vec<TensorInfo> {
    if c.extras.is_empty() {
        c.extras = tensors::scalar_extras(run);
    }
    let mut out = Vec::new();
    for (name, t) in tensors::named_tensors(run) {
        match locate(&t.storage).and_then(|(start, len)| tensors::place(&name, t, start, len)) {
            Ok(info) => out.push(info),
            Err(why) => c.invalid(entry, None, format!("tensor {name}: {why}")),
        }
    }
    out
}

/// Numpy arrays of the main pickle as tensors, when their raw bytes lie in the file (`base`: the file
/// offset of the pickle buffer's byte 0); the others are named in one `pickle.numpy-array` finding.
fn place_arrays(run: &Run, base: Option<u64>, c: &mut Collector) -> Vec<TensorInfo> {
    let mut out = Vec::new();
    let mut unlisted = Vec::new();
    for (name, a) in tensors::named_arrays(run) {
        // An object array holds Python objects (their imports are judged like any other), no elements.
        let kind = a
            .descr
            .as_deref()
            .map(|d| d.trim_start_matches(['<', '>', '|', '=']));
        if kind.is_some_and(|k| k.starts_with('O')) {
            continue;
        }
        let placed = base
            .ok_or_else(|| format!("{name}: the pickle is compressed in the zip"))
            .and_then(|b| tensors::place_array(&name, a, b));
        match placed {
            Ok(t) => out.push(t),
            Err(why) if unlisted.len() < MAX_REASONS => {
                unlisted.push(json!({"name": name, "reason": why}))
            }
            Err(_) => {}
        }
    }
    if let Some(first) = unlisted.first() {
        let first = first["reason"].as_str().unwrap_or("").to_string();
        c.findings.push(Finding::new(
            "pickle.numpy-array",
            Severity::Info,
            format!("numpy arrays in the pickle are not listed as tensors ({first})"),
            json!({"arrays": unlisted}),
        ));
    }
    out
}

/// A legacy file's storages as its main pickle describes them (by key), and the keys of the storage
/// records that follow the pickles, in file order; `None` when the key list is not a list.
fn legacy_storages(main: &Run, keys: &Run) -> Option<(HashMap<String, StorageRef>, Vec<String>)> {
    let mut storages: HashMap<String, StorageRef> = HashMap::new();
    for o in &main.objs {
        match o {
            Obj::Storage(s) => {
                storages
                    .entry(s.key.clone())
                    .or_insert_with(|| (**s).clone());
            }
            Obj::Tensor(t) => {
                storages
                    .entry(t.storage.key.clone())
                    .or_insert_with(|| t.storage.clone());
            }
            _ => {}
        }
    }
    let key_list: Vec<String> = match keys.root.map(|r| keys.get(r)) {
        Some(Obj::List(items)) | Some(Obj::Tuple(items)) => items
            .iter()
            .filter_map(|&i| match keys.get(i) {
                Obj::Str(s) => Some(s.to_string()),
                Obj::Int(v) => Some(v.to_string()),
                _ => None,
            })
            .collect(),
        _ => return None,
    };
    Some((storages, key_list))
}

/// First read of a legacy file fetched piecewise; grown fourfold until its pickles end.
const LEGACY_FIRST_READ: usize = 64 << 10;

/// Fetches through `p` what [`scan`] reads of a legacy (pre-1.6) file and nothing else: its five
/// pickles (a prefix read grown until they end) and each storage record's 8-byte element count, at
/// the offsets the main pickle's element counts give (one batch). `Ok(false)` when the counts read
/// differ from the pickle's (the walk would go elsewhere): the file must be read whole.
pub fn fetch_legacy_scanned(p: &mut dyn zip::Pieces) -> std::io::Result<bool> {
    let size = p.bytes().len();
    let (mut have, mut want) = (0usize, LEGACY_FIRST_READ.min(size));
    let (runs, pos) = loop {
        p.fetch(&[(have as u64, (want - have) as u64)])?;
        have = want;
        let data = &p.bytes()[..have];
        let (mut runs, mut pos, mut cut) = (Vec::new(), 0, false);
        for _ in 0..LEGACY_PICKLES {
            let run = reader::run(data, pos, Limits::default());
            if !run.complete || run.error.is_some() {
                cut = run.truncated;
                break;
            }
            pos = run.end;
            runs.push(run);
        }
        if runs.len() == LEGACY_PICKLES {
            break (runs, pos);
        }
        if !cut || have == size {
            return Ok(true); // a problem within what was fetched: the scan finds it there too
        }
        want = have.saturating_mul(4).min(size);
    };
    let Some((storages, key_list)) = legacy_storages(&runs[3], &runs[4]) else {
        return Ok(true);
    };
    let mut counts: Vec<(u64, u64, u64)> = Vec::new(); // (offset, element count the pickle gives)
    let mut at = pos as u64;
    for key in &key_list {
        let Some((s, elem)) = storages
            .get(key)
            .and_then(|s| Some((s, storage_elem_size(s)?)))
        else {
            break;
        };
        if at.saturating_add(8) > size as u64 {
            break;
        }
        counts.push((at, 8, s.numel));
        at = s
            .numel
            .checked_mul(elem)
            .and_then(|b| at.checked_add(8)?.checked_add(b))
            .unwrap_or(u64::MAX);
    }
    drop(runs);
    let ranges: Vec<(u64, u64)> = counts.iter().map(|&(a, n, _)| (a, n)).collect();
    p.fetch(&ranges)?;
    let bytes = p.bytes();
    Ok(counts.iter().all(|&(a, _, numel)| {
        let a = a as usize;
        bytes[a..a + 8] == numel.to_le_bytes()
    }))
}

fn scan_legacy(data: &[u8], c: &mut Collector) -> Vec<TensorInfo> {
    let mut runs = Vec::new();
    let mut pos = 0;
    for _ in 0..LEGACY_PICKLES {
        let run = run_one(data, pos, None, Some(0), c, true, false);
        let ok = run.complete && run.error.is_none();
        pos = run.end;
        runs.push(run);
        if !ok {
            return Vec::new();
        }
    }
    // Storage data follows the key list: for each key, an 8-byte element count, then the elements.
    let (main, keys) = (&runs[3], &runs[4]);
    let Some((storages, key_list)) = legacy_storages(main, keys) else {
        c.invalid(
            None,
            Some(keys.end),
            "storage key list is not a list".into(),
        );
        return Vec::new();
    };
    let mut placed: HashMap<String, (u64, u64)> = HashMap::new();
    let mut at = pos as u64;
    for key in key_list {
        let Some(elem) = storages.get(&key).and_then(storage_elem_size) else {
            c.invalid(
                None,
                Some(at as usize),
                format!("storage {key}: unknown element type"),
            );
            break;
        };
        let numel = usize::try_from(at)
            .ok()
            .and_then(|p| data.get(p..p.checked_add(8)?))
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()));
        let Some(bytes) = numel.and_then(|n| n.checked_mul(elem)) else {
            c.invalid(
                None,
                Some(at as usize),
                format!("storage {key}: file ends before its size"),
            );
            break;
        };
        let start = at + 8;
        let end = start.saturating_add(bytes);
        if end > data.len() as u64 {
            c.invalid(
                None,
                Some(at as usize),
                format!(
                    "storage {key}: needs bytes up to {end} but the file has {}",
                    data.len()
                ),
            );
            break;
        }
        placed.insert(key, (start, bytes));
        at = end;
    }
    let mut out = place_all(
        main,
        |s| {
            placed
                .get(&s.key)
                .copied()
                .ok_or_else(|| format!("storage {} not in the file", s.key))
        },
        c,
        None,
    );
    out.extend(place_arrays(main, Some(0), c));
    out
}

/// Checks the imports in the part of deflated entry `e` past what was inflated in memory, from inflated
/// offset `from` on.
fn stream_rest(data: &[u8], e: &zip::Entry, from: usize, proto: u8, c: &mut Collector) {
    use std::io::Read;
    let entry = Some(e.name.as_str());
    if c.limited.len() < MAX_REASONS {
        c.limited.push(json!({"entry": entry, "reason": format!(
            "more than {MAX_INFLATED} bytes once inflated: the rest was streamed for imports"
        )}));
    }
    let mut inflated = zip::inflater(data, e);
    let skipped = std::io::copy(&mut (&mut inflated).take(from as u64), &mut std::io::sink());
    if !matches!(skipped, Ok(n) if n == from as u64) {
        c.invalid(entry, Some(from), "cannot inflate the entry again".into());
        return;
    }
    let mut capped = (&mut inflated).take(MAX_STREAMED);
    let s = reader::run_stream(&mut capped, from, proto, Limits::default());
    c.record(entry, None, &s.imports);
    if let Some((p, why)) = s.error {
        c.invalid(entry, Some(p), why);
    }
    if (s.end - from) as u64 >= MAX_STREAMED && inflated.read(&mut [0u8; 1]).is_ok_and(|n| n == 1) {
        c.findings.push(Finding::new(
            "pickle.unchecked",
            Severity::Critical,
            format!(
                "{}: more than {MAX_STREAMED} bytes once inflated; the rest is not checked for imports",
                e.name
            ),
            json!({"entry": entry, "position": s.end}),
        ));
    }
}

/// Most storages / tensors one legacy tar member may declare.
const MAX_TAR_RECORDS: i64 = 10_000_000;

/// A member's bytes, clamped to the file.
fn member<'a>(data: &'a [u8], m: &tar::Member) -> &'a [u8] {
    let start = (m.data_start as usize).min(data.len());
    let end = (m.data_start.saturating_add(m.size)).min(data.len() as u64) as usize;
    &data[start..end.max(start)]
}

/// A legacy record key: torch keys its objects by int or str.
fn key_of(run: &Run, id: reader::Id) -> Option<String> {
    match run.get(id) {
        Obj::Str(s) => Some(s.to_string()),
        Obj::Int(v) => Some(v.to_string()),
        _ => None,
    }
}

/// The items of a run's root tuple or list.
fn root_items<'r>(run: &'r Run) -> Option<&'r [reader::Id]> {
    match run.root.map(|r| run.get(r)) {
        Some(Obj::Tuple(v)) | Some(Obj::List(v)) => Some(v),
        _ => None,
    }
}

fn root_int(run: &Run) -> Option<i64> {
    match run.root.map(|r| run.get(r)) {
        Some(Obj::Int(v)) => Some(*v),
        _ => None,
    }
}

/// Reads a tar member that interleaves pickles and raw records (`storages`, `tensors`); `record`
/// reads the raw bytes after each record's pickle at the given offset and returns the offset after
/// them. Every pickle in the member is checked; if the layout cannot be followed, the rest of the
/// member is reported unchecked (critical): torch would go on unpickling it.
fn tar_records(
    data: &[u8],
    m: &tar::Member,
    c: &mut Collector,
    mut record: impl FnMut(&Run, &[u8], usize) -> Result<usize, String>,
) {
    let body = member(data, m);
    let entry = Some(m.name.as_str());
    let base = Some(m.data_start);
    let mut pos = 0;
    let fail = |c: &mut Collector, at: usize, why: String| {
        c.invalid(entry, Some(at), why);
        if at < body.len() {
            c.findings.push(Finding::new(
                "pickle.unchecked",
                Severity::Critical,
                format!(
                    "tar member {}: its layout cannot be followed past byte {at}; the rest (which torch                      unpickles) is not checked",
                    m.name
                ),
                json!({"entry": entry, "position": at, "offset": m.data_start + at as u64}),
            ));
        }
    };
    let count = run_one(body, pos, entry, base, c, true, false);
    let n = match (count.complete, root_int(&count)) {
        (true, Some(n)) if (0..=MAX_TAR_RECORDS).contains(&n) => n,
        _ => return fail(c, count.end, "record count is not a small int".into()),
    };
    pos = count.end;
    for _ in 0..n {
        let run = run_one(body, pos, entry, base, c, true, false);
        if !run.complete {
            return fail(c, run.end, "record pickle is incomplete".into());
        }
        match record(&run, body, run.end) {
            Ok(next) => pos = next,
            Err(why) => return fail(c, run.end, why),
        }
    }
    if m.name == "storages" {
        // Then one more pickle: the storage views.
        let views = run_one(body, pos, entry, base, c, true, false);
        if !views.complete {
            return fail(c, views.end, "storage views pickle is incomplete".into());
        }
        record(&views, body, usize::MAX).ok();
        pos = views.end;
    }
    if pos < body.len() {
        // Bytes torch never reads; still checked for imports.
        scan_stream(&body[pos..], entry, base.map(|b| b + pos as u64), c, false);
    }
}

/// One record of a tar `storages` member: its pickled (key, location, class) `run`, then at `at` of
/// the member's `body` the int64 element count and the elements. The key, the storage and the
/// offset in the member after its elements.
fn storage_record(
    run: &Run,
    body: &[u8],
    at: usize,
) -> Result<(String, StorageRef, usize), String> {
    let items = root_items(run).ok_or("storage record is not a tuple")?;
    let key = items
        .first()
        .and_then(|&i| key_of(run, i))
        .ok_or("storage key is not a str or int")?;
    let class = match items.get(2).map(|&i| run.get(i)) {
        Some(Obj::Global(g)) => format!("{}.{}", run.imports[*g].module, run.imports[*g].name),
        _ => return Err("storage type is not a class".into()),
    };
    let short = class.rsplit('.').next().unwrap_or("");
    let numel = le_u64(body, at).ok_or("storage size is cut off")?;
    let s = StorageRef {
        dtype: reader::dtype_of_storage(short),
        class: class.clone(),
        key: key.clone(),
        numel,
        view_offset: 0,
    };
    let elem =
        storage_elem_size(&s).ok_or(format!("storage {key}: unknown element type {class}"))?;
    let bytes = numel.checked_mul(elem).ok_or("storage size overflows")?;
    let next = (at as u64 + 8)
        .checked_add(bytes)
        .filter(|&e| e <= body.len() as u64)
        .ok_or(format!("storage {key}: data runs past the member"))?;
    Ok((key, s, next as usize))
}

/// True when a member's bytes start as a pickle (protocol 2+ magic, or protocol 0/1 opcodes).
fn looks_pickled(body: &[u8]) -> bool {
    let head = &body[..body.len().min(SNIFF_LEN)];
    (head.len() >= 2 && head[0] == 0x80 && head[1] <= 5) || looks_like_protocol0(head)
}

/// First read of a pickle in a tar member fetched piecewise; grown fourfold until the pickle ends.
const TAR_FIRST_READ: u64 = 4 << 10;

/// Fetches through `p` the pickle at `pos` of tar member `m` and the `extra` bytes after it (a
/// prefix of the member from `pos`, grown until the pickle ends), then gives `f` its run and the
/// member's bytes.
fn fetch_pickle<R>(
    p: &mut dyn zip::Pieces,
    m: &tar::Member,
    pos: usize,
    extra: usize,
    f: impl FnOnce(&Run, &[u8]) -> R,
) -> std::io::Result<R> {
    let len = member(p.bytes(), m).len();
    let mut want = TAR_FIRST_READ as usize;
    loop {
        let hi = pos.saturating_add(want).min(len);
        zip::fetch_at(p, m.data_start + pos as u64, hi.saturating_sub(pos) as u64)?;
        let body = member(p.bytes(), m);
        let run = reader::run(&body[..hi], pos, Limits::default());
        // How far the bytes must reach: past the pickle's end (cut off by `hi`: further).
        let needs = if run.complete {
            run.end.saturating_add(extra)
        } else if run.truncated {
            hi + 1
        } else {
            0
        };
        if needs <= hi || hi >= len {
            return Ok(f(&run, body));
        }
        want = want.saturating_mul(4).max(needs - pos);
    }
}

/// Fetches through `p` what [`tar_records`] reads of a tar `storages` member: each record's pickle
/// and element count (never the elements), the views pickle and whatever follows it in the member.
fn fetch_storages(p: &mut dyn zip::Pieces, m: &tar::Member) -> std::io::Result<()> {
    let count = fetch_pickle(p, m, 0, 0, |run, _| {
        root_int(run)
            .filter(|n| run.complete && (0..=MAX_TAR_RECORDS).contains(n))
            .map(|n| (n, run.end))
    })?;
    let Some((n, mut pos)) = count else {
        return Ok(());
    };
    for _ in 0..n {
        let next = fetch_pickle(p, m, pos, 8, |run, body| {
            run.complete
                .then(|| storage_record(run, body, run.end).ok())
                .flatten()
        })?;
        match next {
            Some((_, _, next)) => pos = next,
            None => return Ok(()),
        }
    }
    let views = fetch_pickle(p, m, pos, 0, |run, _| run.complete.then_some(run.end))?;
    if let Some(end) = views {
        zip::fetch_at(
            p,
            m.data_start + end as u64,
            m.size.saturating_sub(end as u64),
        )?;
    }
    Ok(())
}

/// Fetches through `p` every byte [`scan`] reads of a pre-1.0 tar checkpoint, member by member: the
/// tar headers, the `tensors` and `pickle` members whole, the `storages` member's pickles and element
/// counts (never the storages' bytes), and any other member's first bytes (whole when they start a
/// pickle). `Ok(false)` when `p` does not [`zip::Pieces::walks`]: the archive must be read whole.
pub fn fetch_tar_scanned(p: &mut dyn zip::Pieces) -> std::io::Result<bool> {
    if !p.walks() {
        return Ok(false);
    }
    let (members, _) = tar::fetch_members(p)?;
    const TORCH: [&str; 3] = ["storages", "tensors", "pickle"];
    for m in &members {
        if TORCH.contains(&m.name.as_str()) {
            continue;
        }
        zip::fetch_at(p, m.data_start, m.size.min(SNIFF_LEN as u64))?;
        if looks_pickled(member(p.bytes(), m)) {
            zip::fetch_at(p, m.data_start, m.size)?;
        }
    }
    for name in ["tensors", "pickle"] {
        if let Some(m) = tar::find(&members, name) {
            zip::fetch_at(p, m.data_start, m.size)?;
        }
    }
    if let Some(m) = tar::find(&members, "storages") {
        fetch_storages(p, m)?;
    }
    Ok(true)
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn scan_tar(data: &[u8], c: &mut Collector) -> Result<Vec<TensorInfo>, PickleError> {
    let (members, problems) = tar::members(data);
    for p in problems {
        c.invalid(None, None, p);
    }
    let named = |n: &str| tar::find(&members, n);
    if named("storages").is_none() && named("tensors").is_none() && named("pickle").is_none() {
        // torch.load fails on such a tar before unpickling anything; pickles in it are still checked.
        let mut any = false;
        for m in &members {
            let body = member(data, m);
            if looks_pickled(body) {
                any = true;
                scan_stream(body, Some(&m.name), Some(m.data_start), c, false);
            }
        }
        if !any {
            return Err(PickleError::NoPickle);
        }
        return Ok(Vec::new());
    }
    // storages: count, then per storage (key, location, storage class) + int64 element count + data,
    // then a list of views (view key, root key, offset, numel).
    let mut storages: HashMap<String, (StorageRef, u64)> = HashMap::new();
    let mut views: Vec<(String, String, u64)> = Vec::new();
    if let Some(m) = named("storages") {
        tar_records(data, m, c, |run, body, at| {
            if at == usize::MAX {
                for &v in root_items(run).unwrap_or(&[]) {
                    if let Obj::Tuple(t) | Obj::List(t) = run.get(v) {
                        if let (Some(target), Some(root), Some(Obj::Int(off))) = (
                            t.first().and_then(|&i| key_of(run, i)),
                            t.get(1).and_then(|&i| key_of(run, i)),
                            t.get(2).map(|&i| run.get(i)),
                        ) {
                            views.push((target, root, (*off).max(0) as u64));
                        }
                    }
                }
                return Ok(at);
            }
            let (key, s, next) = storage_record(run, body, at)?;
            storages.insert(key, (s, m.data_start + at as u64 + 8));
            Ok(next)
        });
    }
    // tensors: count, then per tensor (key, storage key, class) + ndim (int32, 4 bytes padding),
    // sizes and strides (int64 each), storage offset (int64).
    let mut tensors: HashMap<String, TensorRef> = HashMap::new();
    if let Some(m) = named("tensors") {
        tar_records(data, m, c, |run, body, at| {
            let items = root_items(run).ok_or("tensor record is not a tuple")?;
            let key = items
                .first()
                .and_then(|&i| key_of(run, i))
                .ok_or("tensor key")?;
            let skey = items
                .get(1)
                .and_then(|&i| key_of(run, i))
                .ok_or("storage key")?;
            let ndim = body
                .get(at..at + 4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
                .filter(|&n| (0..=64).contains(&n))
                .ok_or("tensor rank is cut off or out of range")? as usize;
            let mut p = at + 8;
            let mut ints = Vec::with_capacity(2 * ndim + 1);
            for _ in 0..2 * ndim + 1 {
                ints.push(le_u64(body, p).ok_or("tensor layout is cut off")?);
                p += 8;
            }
            let storage = match storages.get(&skey) {
                Some((s, _)) => s.clone(),
                None => match views.iter().find(|v| v.0 == skey) {
                    Some((_, root, off)) => {
                        let mut s = storages.get(root).map(|x| x.0.clone()).ok_or("view root")?;
                        s.view_offset = *off;
                        s
                    }
                    None => {
                        return Ok(p); // torch would fail; nothing to list
                    }
                },
            };
            tensors.insert(
                key,
                TensorRef {
                    dtype: storage.dtype,
                    storage,
                    offset: ints[2 * ndim],
                    shape: ints[..ndim].to_vec(),
                    stride: ints[ndim..2 * ndim].to_vec(),
                },
            );
            Ok(p)
        });
    }
    let mut out = Vec::new();
    if let Some(m) = named("pickle") {
        let body = member(data, m);
        let streamed = scan_stream(body, Some(&m.name), Some(m.data_start), c, false);
        if let Some(mut run) = streamed.first.filter(|r| r.root.is_some()) {
            for o in run.objs.iter_mut() {
                if let Obj::PersKey(k) = o {
                    if let Some(t) = tensors.get(k.as_str()) {
                        *o = Obj::Tensor(Box::new(t.clone()));
                    }
                }
            }
            out = place_all(
                &run,
                |s| {
                    let (st, start) = storages
                        .get(&s.key)
                        .ok_or_else(|| format!("storage {} not in the file", s.key))?;
                    let bytes = storage_elem_size(st).unwrap_or(1) * st.numel;
                    Ok((*start, bytes))
                },
                c,
                Some(&m.name),
            );
        }
    }
    // Any other member that is a pickle (torch reads only these three; scanners check all).
    for m in &members {
        if matches!(m.name.as_str(), "storages" | "tensors" | "pickle") {
            continue;
        }
        let body = member(data, m);
        if looks_pickled(body) {
            scan_stream(body, Some(&m.name), Some(m.data_start), c, false);
        }
    }
    Ok(out)
}

fn is_pickle_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with(".pkl") || n.ends_with(".pickle")
}

/// `prefix/data/123` (a torch storage record: raw tensor bytes, never unpickled by torch).
fn is_storage_record(name: &str) -> bool {
    let mut parts = name.rsplitn(3, '/');
    let (Some(file), Some(dir)) = (parts.next(), parts.next()) else {
        return false;
    };
    dir == "data" && !file.is_empty() && file.bytes().all(|b| b.is_ascii_digit())
}

/// A storage record not named as a pickle: its bytes are placed as tensors, never read by [`scan`].
fn never_read(e: &zip::Entry) -> bool {
    !(is_pickle_name(&e.name) || is_pickle_name(&e.local_name)) && is_storage_record(&e.name)
}

/// Fetches through `p` every byte [`scan`] reads of a PyTorch zip archive: its structure and the data
/// of every entry but the storage records (the tensors' bytes, placed by offset and never read).
/// `Ok(false)` when the archive must be read whole (see [`zip::fetch_archive`]).
pub fn fetch_zip_scanned(p: &mut dyn zip::Pieces) -> std::io::Result<bool> {
    let Some(archive) = zip::fetch_archive(p)? else {
        return Ok(false);
    };
    let len = p.bytes().len() as u64;
    let data: Vec<(u64, u64)> = archive
        .entries
        .iter()
        .filter(|e| !never_read(e))
        .map(|e| {
            let start = e.data_start.min(len);
            (start, e.data_end().min(len) - start)
        })
        .filter(|&(_, n)| n > 0)
        .collect();
    p.fetch(&data)?;
    Ok(true)
}

fn scan_zip(data: &[u8], c: &mut Collector) -> Result<Vec<TensorInfo>, PickleError> {
    let archive = zip::read(data).map_err(PickleError::Container)?;
    if let Some(needs) = archive.needs {
        c.findings.push(Finding::new(
            "file.truncated",
            Severity::Error,
            format!(
                "the zip directory says the file needs {needs} bytes; it has {}",
                data.len()
            ),
            json!({"expected": needs, "actual": data.len(), "problems": archive.problems}),
        ));
    } else {
        for p in &archive.problems {
            c.invalid(None, None, p.clone());
        }
    }
    if archive.recovered {
        c.invalid(
            None,
            None,
            "zip has no readable central directory (PyTorch cannot load it)".into(),
        );
    }
    // PyTorch looks records up under the first entry's top directory.
    let prefix = archive
        .entries
        .first()
        .and_then(|e| e.name.split_once('/'))
        .map(|(p, _)| p.to_string());
    let main_name = prefix.as_ref().map(|p| format!("{p}/data.pkl"));
    let main_idx = main_name.as_ref().and_then(|m| {
        let exact = archive.entries.iter().position(|e| &e.name == m);
        exact.or_else(|| {
            archive
                .entries
                .iter()
                .position(|e| e.name.eq_ignore_ascii_case(m))
        })
    });

    let mut scanned = 0;
    let mut tensors = Vec::new();
    for (i, e) in archive.entries.iter().enumerate() {
        let named = is_pickle_name(&e.name) || is_pickle_name(&e.local_name);
        if Some(i) != main_idx && never_read(e) {
            continue;
        }
        let (body, cut) = match zip::contents(data, e, MAX_INFLATED) {
            Ok(b) => b,
            Err(why) => {
                if named || Some(i) == main_idx {
                    c.invalid(Some(&e.name), None, why);
                }
                continue;
            }
        };
        let head = &body[..body.len().min(SNIFF_LEN)];
        let magic = head.len() >= 2 && head[0] == 0x80 && head[1] <= 5;
        if !(named || Some(i) == main_idx || magic || looks_like_protocol0(head)) {
            continue;
        }
        scanned += 1;
        let base = (e.method == 0).then_some(e.data_start);
        let streamed = scan_stream(&body, Some(&e.name), base, c, cut);
        if cut {
            stream_rest(data, e, streamed.resume, streamed.proto, c);
        }
        let Some(run) = streamed.first else {
            continue;
        };
        if Some(i) != main_idx || run.root.is_none() {
            continue;
        }
        let prefix = prefix.as_deref().unwrap_or("");
        // First entry of each name wins, exact names before case-insensitive ones (miniz's lookup).
        let mut by_name: HashMap<&str, &zip::Entry> = HashMap::new();
        let mut by_lower: HashMap<String, &zip::Entry> = HashMap::new();
        for r in &archive.entries {
            by_name.entry(r.name.as_str()).or_insert(r);
            by_lower.entry(r.name.to_ascii_lowercase()).or_insert(r);
        }
        let locate = |s: &StorageRef| -> Result<(u64, u64), String> {
            let want = format!("{prefix}/data/{}", s.key);
            let rec = by_name
                .get(want.as_str())
                .or_else(|| by_lower.get(&want.to_ascii_lowercase()))
                .ok_or_else(|| format!("storage record {want} is missing"))?;
            if rec.method != 0 {
                return Err(format!(
                    "storage record {want} is compressed; its bytes have no file offset"
                ));
            }
            let avail =
                rec.data_end().min(data.len() as u64) - rec.data_start.min(data.len() as u64);
            Ok((rec.data_start, rec.compressed_size.min(avail)))
        };
        tensors = place_all(&run, locate, c, Some(&e.name));
        tensors.extend(place_arrays(&run, base, c));
    }
    if scanned == 0 {
        return Err(PickleError::NoPickle);
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol0_sniffing() {
        assert!(looks_like_protocol0(b"(lp0\nVa\np1\na."));
        assert!(looks_like_protocol0(b"cos\nsystem\n(S'ls'\ntR."));
        assert!(!looks_like_protocol0(b"cmod\n\xf8\n"));
        assert!(!looks_like_protocol0(b"little"));
        assert!(!looks_like_protocol0(b"3\n"));
        assert!(!looks_like_protocol0(b"Hello, world\n"));
        assert!(!looks_like_protocol0(b"(some text in parentheses)"));
        assert!(!looks_like_protocol0(b""));
        let mut long = b"(lp0\n".to_vec();
        while long.len() < SNIFF_LEN {
            long.extend_from_slice(b"I1\naI2\na");
        }
        assert!(looks_like_protocol0(&long[..SNIFF_LEN]));
        assert!(!looks_like_protocol0(&long[..20]));
        // Truncated inside its third opcode, but it opens with an import: a (broken) pickle.
        assert!(looks_like_protocol0(b"cbuiltins\nexec\n(X>\nf = open"));
    }

    /// data.pkl of `{'epoch': 1, 'state_dict': {'w': HalfTensor[2, 3]}}` as torch.save writes it
    /// (made by tests/torchzip.py, protocol 2).
    const CKPT_PKL: &[u8] = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x05\x00\x00\x00epochq\x02K\x01X\x0a\x00\x00\x00state_dictq\x03h\x00)Rq\x04X\x01\x00\x00\x00wq\x05ctorch._utils\n_rebuild_tensor_v2\nq\x06((X\x07\x00\x00\x00storageq\x07ctorch\nHalfStorage\nq\x08X\x01\x00\x00\x000q\x09X\x03\x00\x00\x00cpuq\x0aK\x06tq\x0bQK\x00K\x02K\x03\x86q\x0cK\x03K\x01\x86q\x0d\x89h\x00)Rq\x0etq\x0fRq\x10su.";

    fn ckpt_zip() -> Vec<u8> {
        zip::tests::build(&[
            ("archive/data.pkl", "archive/data.pkl", CKPT_PKL, 0),
            ("archive/data/0", "archive/data/0", b"ABCDEFGHIJKL", 0),
            ("archive/version", "archive/version", b"3\n", 0),
        ])
    }

    #[test]
    fn torch_zip_tensor_table() {
        let z = ckpt_zip();
        let s = scan(&z, Format::TorchZip).unwrap();
        assert_eq!(s.tensors.len(), 1);
        let t = &s.tensors[0];
        assert_eq!(
            (t.name.as_str(), t.dtype, t.shape.clone()),
            ("w", crate::dtype::Dtype::F16, vec![2, 3])
        );
        assert_eq!(&z[t.start as usize..t.end() as usize], b"ABCDEFGHIJKL");
        let checks: Vec<_> = s.findings.iter().map(|f| f.check).collect();
        assert_eq!(checks, ["format.legacy-pickle"]);
    }

    use zip::tests::Fetched;

    #[test]
    fn a_zip_fetched_piecewise_scans_as_the_whole_and_its_tensors_are_never_fetched() {
        let tensor = vec![b'Z'; 300_000];
        let z = zip::tests::build(&[
            ("archive/data.pkl", "archive/data.pkl", CKPT_PKL, 0),
            ("archive/data/0", "archive/data/0", &tensor, 0),
            ("archive/version", "archive/version", b"3\n", 0),
        ]);
        let mut p = Fetched::new(&z, false);
        assert!(fetch_zip_scanned(&mut p).unwrap());
        let (piecewise, whole) = (
            scan(&p.image, Format::TorchZip).unwrap(),
            scan(&z, Format::TorchZip).unwrap(),
        );
        let table = |s: &PickleScan| -> Vec<(String, u64, u64)> {
            s.tensors
                .iter()
                .map(|t| (t.name.clone(), t.start, t.end()))
                .collect()
        };
        assert_eq!(table(&piecewise), table(&whole));
        assert_eq!(piecewise.tensors.len(), 1);
        let checks = |s: &PickleScan| -> Vec<&str> { s.findings.iter().map(|f| f.check).collect() };
        assert_eq!(checks(&piecewise), checks(&whole));
        // Of the tensor's bytes before the archive's tail (which holds the end record), only the few a
        // local header's read runs on into (256 bytes of slack each, for a longer extra field) are fetched.
        let t = &whole.tensors[0];
        let never = t.start..z.len() as u64 - zip::TAIL_LEN;
        assert!(never.end > never.start + 200_000);
        let inside: u64 = p
            .got
            .iter()
            .map(|&(off, len)| {
                (off + len)
                    .min(never.end)
                    .saturating_sub(off.max(never.start))
            })
            .sum();
        assert!(
            inside <= 3 * 256,
            "{inside} bytes of the tensor fetched: {:?}",
            p.got
        );
        // Without its end record the local headers would be walked through the whole archive.
        let cut = &z[..z.len() - 22];
        let mut p = Fetched::new(cut, false);
        assert!(!fetch_zip_scanned(&mut p).unwrap());
    }

    #[test]
    fn missing_storage_is_reported_not_fatal() {
        let z = zip::tests::build(&[("archive/data.pkl", "archive/data.pkl", CKPT_PKL, 0)]);
        let s = scan(&z, Format::TorchZip).unwrap();
        assert!(s.tensors.is_empty());
        assert!(s.findings.iter().any(|f| f.check == "pickle.invalid"));
    }

    /// Truncated and garbled inputs in every format: findings or errors, never a panic.
    #[test]
    fn never_panics_on_damaged_input() {
        let z = ckpt_zip();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let inputs = [z.clone(), CKPT_PKL.to_vec()];
        for base in &inputs {
            for cut in 0..base.len() {
                for f in [Format::TorchZip, Format::TorchLegacy, Format::Pickle] {
                    let _ = scan(&base[..cut], f);
                }
            }
            for _ in 0..3000 {
                let mut b = base.clone();
                for _ in 0..(rnd() % 6 + 1) {
                    let i = (rnd() as usize) % b.len();
                    b[i] = rnd() as u8;
                }
                for f in [Format::TorchZip, Format::TorchLegacy, Format::Pickle] {
                    let _ = scan(&b, f);
                }
                let _ = looks_like_protocol0(&b[..b.len().min(SNIFF_LEN)]);
            }
        }
    }

    /// A pre-1.0 tar checkpoint of `{'w': FloatTensor[2, 3]}` as torch's `legacy_load` reads it.
    fn tar_ckpt(pickle: &[u8]) -> Vec<u8> {
        let mut storages = b"\x80\x02K\x01.".to_vec();
        storages.extend_from_slice(
            b"\x80\x02(X\x01\x00\x00\x000X\x03\x00\x00\x00cpuctorch\nFloatStorage\nt.",
        );
        storages.extend_from_slice(&6u64.to_le_bytes());
        storages.extend_from_slice(b"ABCDEFGHIJKLMNOPQRSTUVWX");
        storages.extend_from_slice(b"\x80\x02].");
        let mut tensors = b"\x80\x02K\x01.".to_vec();
        tensors.extend_from_slice(b"\x80\x02(K\x01X\x01\x00\x00\x000ctorch\nFloatTensor\nt.");
        tensors.extend_from_slice(&2i32.to_le_bytes());
        tensors.extend_from_slice(&[0; 4]);
        for v in [2u64, 3, 3, 1, 0] {
            tensors.extend_from_slice(&v.to_le_bytes());
        }
        tar::tests::build(&[
            ("storages", &storages),
            ("tensors", &tensors),
            ("pickle", pickle),
        ])
    }

    #[test]
    fn torch_tar_tensors_and_imports() {
        let t = tar_ckpt(b"\x80\x02ccollections\nOrderedDict\n)RX\x01\x00\x00\x00wK\x01Qs.");
        assert_eq!(crate::sniff::sniff(&t[..512], false), Format::TorchTar);
        let s = scan(&t, Format::TorchTar).unwrap();
        let checks: Vec<_> = s.findings.iter().map(|f| f.check).collect();
        assert_eq!(checks, ["format.legacy-pickle"]);
        assert_eq!(s.tensors.len(), 1);
        let w = &s.tensors[0];
        assert_eq!((w.name.as_str(), w.shape.clone()), ("w", vec![2, 3]));
        assert_eq!(
            &t[w.start as usize..w.end() as usize],
            b"ABCDEFGHIJKLMNOPQRSTUVWX"
        );
        let bad = tar_ckpt(b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R.");
        let s = scan(&bad, Format::TorchTar).unwrap();
        assert!(s
            .findings
            .iter()
            .any(|f| f.check == "pickle.dangerous-import" && f.details["entry"] == "pickle"));
        // A storage whose class has no element size: the member's rest is reported unchecked.
        let odd = tar_ckpt(b"\x80\x02}.");
        let i = odd.windows(12).position(|w| w == b"FloatStorage").unwrap();
        let mut odd = odd;
        odd[i..i + 5].copy_from_slice(b"Xloat");
        let s = scan(&odd, Format::TorchTar).unwrap();
        assert!(s.findings.iter().any(|f| f.check == "pickle.unchecked"));
    }

    /// The tensors and findings of a scan, comparable.
    fn outcome(s: &Result<PickleScan, PickleError>) -> String {
        match s {
            Ok(s) => format!(
                "{:?} {}",
                s.tensors
                    .iter()
                    .map(|t| (&t.name, t.dtype, &t.shape, t.start, t.len, &t.strides))
                    .collect::<Vec<_>>(),
                serde_json::to_string(&s.findings).unwrap()
            ),
            Err(e) => format!("{e:?}"),
        }
    }

    /// Scans `b` fetched piecewise by `fetch` (when it can be) and whole: the same outcome. Returns
    /// the ranges fetched, or `None` when `fetch` asked for the whole file.
    fn same_piecewise(
        b: &[u8],
        format: Format,
        fetch: fn(&mut dyn zip::Pieces) -> std::io::Result<bool>,
    ) -> Option<Vec<(u64, u64)>> {
        let mut p = Fetched::new(b, true);
        if !fetch(&mut p).unwrap() {
            return None;
        }
        assert_eq!(
            outcome(&scan(&p.image, format)),
            outcome(&scan(b, format)),
            "{format:?} of {} bytes",
            b.len()
        );
        Some(p.got)
    }

    /// Bytes of `range` among the ranges fetched.
    fn fetched_within(got: &[(u64, u64)], range: std::ops::Range<u64>) -> u64 {
        got.iter()
            .map(|&(off, len)| {
                (off + len)
                    .min(range.end)
                    .saturating_sub(off.max(range.start))
            })
            .sum()
    }

    /// A tar checkpoint whose one storage holds `numel` F32 elements (`{'w': FloatTensor[2, 3]}` on it).
    fn big_tar_ckpt(numel: u64, pickle: &[u8]) -> Vec<u8> {
        let t = tar_ckpt(pickle);
        let (members, _) = tar::members(&t);
        let st = tar::find(&members, "storages").unwrap();
        let body = member(&t, st);
        let at = body
            .windows(8)
            .position(|w| w == 6u64.to_le_bytes())
            .unwrap();
        let mut storages = body[..at].to_vec();
        storages.extend_from_slice(&numel.to_le_bytes());
        storages.extend((0..numel * 4).map(|i| (i % 251) as u8 + 1));
        storages.extend_from_slice(&body[at + 8 + 24..]);
        let rest: Vec<(String, Vec<u8>)> = members
            .iter()
            .filter(|m| m.name != "storages")
            .map(|m| (m.name.clone(), member(&t, m).to_vec()))
            .collect();
        let mut all: Vec<(&str, &[u8])> = vec![("storages", &storages)];
        all.extend(rest.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
        tar::tests::build(&all)
    }

    #[test]
    fn a_tar_checkpoint_fetched_piecewise_scans_as_the_whole_and_its_storages_are_never_fetched() {
        let clean = b"\x80\x02ccollections\nOrderedDict\n)RX\x01\x00\x00\x00wK\x01Qs.";
        let t = big_tar_ckpt(100_000, clean);
        let got = same_piecewise(&t, Format::TorchTar, fetch_tar_scanned).unwrap();
        let w = &scan(&t, Format::TorchTar).unwrap().tensors[0];
        // The storage's 400 kB: only the first reads at the member's start and at its record's
        // pickle (the same bytes twice) run into them.
        let inside = fetched_within(&got, w.start..w.start + 400_000);
        assert!(
            inside <= 2 * TAR_FIRST_READ,
            "{inside} bytes of the storage fetched"
        );
        // A source that does not walk reads the archive whole.
        assert!(!fetch_tar_scanned(&mut Fetched::new(&t, false)).unwrap());
    }

    #[test]
    fn damaged_archives_fetched_piecewise_scan_as_the_whole() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let z = ckpt_zip();
        let dir = zip::read(&z).unwrap().entries.last().unwrap().data_end() as usize;
        let fetch_zip: fn(&mut dyn zip::Pieces) -> std::io::Result<bool> = fetch_zip_scanned;
        let fetch_tar: fn(&mut dyn zip::Pieces) -> std::io::Result<bool> = fetch_tar_scanned;
        let bad = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R.";
        let inputs = [
            (z[..dir].to_vec(), Format::TorchZip, fetch_zip), // no central directory
            (z.clone(), Format::TorchZip, fetch_zip),
            (tar_ckpt(bad), Format::TorchTar, fetch_tar),
            (big_tar_ckpt(3000, bad), Format::TorchTar, fetch_tar),
        ];
        let mut walked = 0;
        for (b, format, fetch) in &inputs {
            for cut in 0..=b.len() {
                walked += same_piecewise(&b[..cut], *format, *fetch).is_some() as usize;
            }
            for _ in 0..1500 {
                let mut m = b.clone();
                for _ in 0..(rnd() % 4 + 1) {
                    let i = (rnd() as usize) % m.len();
                    m[i] = rnd() as u8;
                }
                walked += same_piecewise(&m, *format, *fetch).is_some() as usize;
            }
        }
        assert!(walked > 5000, "{walked}");
        // Without a directory, the walk fetches each local header and never a storage's bytes.
        let tensor = vec![b'Z'; 300_000];
        let z = zip::tests::build(&[
            ("archive/data.pkl", "archive/data.pkl", CKPT_PKL, 0),
            ("archive/data/0", "archive/data/0", &tensor, 0),
            ("archive/version", "archive/version", b"3\n", 0),
        ]);
        let dir = zip::read(&z).unwrap().entries.last().unwrap().data_end() as usize;
        let got = same_piecewise(&z[..dir], Format::TorchZip, fetch_zip).unwrap();
        let t = &scan(&z[..dir], Format::TorchZip).unwrap().tensors[0];
        let inside = fetched_within(&got, t.start..t.end());
        assert!(inside <= 2 * 286, "{inside} bytes of the tensor fetched");
        // Sizes in data descriptors: found only by searching the data, so the archive is read whole.
        let described = zip::tests::build(&[("a/data.pkl", "a/data.pkl", CKPT_PKL, 8)]);
        let mut described = described[..30 + 10 + CKPT_PKL.len()].to_vec();
        described[18..26].fill(0);
        assert!(!fetch_zip_scanned(&mut Fetched::new(&described, true)).unwrap());
    }

    /// Generated opcode streams (every opcode, odd operands) through every reader and format, bare and
    /// wrapped in a stored zip, a deflated zip and a tar: no panic, no hang. `FASTSCAN_FUZZ_CASES` sets
    /// the number of cases (docs/pickle-policy.md).
    #[test]
    fn fuzz_generated_pickles() {
        let cases: usize = std::env::var("FASTSCAN_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        const PIECES: &[&[u8]] = &[
            b"(",
            b".",
            b"0",
            b"1",
            b"2",
            b"N",
            b"I0x1f\n",
            b"I01\n",
            b"I 1_0\x0b\n",
            b"L12L\n",
            b"F1.5\n",
            b"J\x01\x00\x00\x00",
            b"K\x07",
            b"M\x01\x02",
            b"S'a\\x41'\n",
            b"Vos\n",
            b"X\x02\x00\x00\x00os",
            b"U\x06system",
            b"\x8c\x04eval",
            b"\x8c\x08builtins",
            b"C\x02ab",
            b"B\x01\x00\x00\x00z",
            b"\x8e\x02\x00\x00\x00\x00\x00\x00\x00zz",
            b"a",
            b"b",
            b"cos\nsystem\n",
            b"ccollections\nOrderedDict\n",
            b"d",
            b"}",
            b"e",
            b"g0\n",
            b"h\x00",
            b"j\x01\x00\x00\x00",
            b"i__main__\nX\n",
            b"l",
            b"]",
            b"o",
            b"p0\n",
            b"q\x01",
            b"r\x02\x00\x00\x00",
            b"s",
            b"t",
            b")",
            b"u",
            b"\x80\x02",
            b"\x80\x04",
            b"\x81",
            b"\x82\x01",
            b"\x85",
            b"\x86",
            b"\x87",
            b"\x88",
            b"\x89",
            b"\x8a\x01\xff",
            b"\x8f",
            b"\x90",
            b"\x91",
            b"\x92",
            b"\x93",
            b"\x94",
            b"\x95\x10\x00\x00\x00\x00\x00\x00\x00",
            b"\x97",
            b"\x98",
            b"R",
            b"Q",
            b"P1\n",
            b"\xff",
            b"g0x1\n",
            b"p-1\n",
        ];
        for _ in 0..cases {
            let mut p = Vec::new();
            for _ in 0..(rnd() % 60 + 1) {
                p.extend_from_slice(PIECES[(rnd() as usize) % PIECES.len()]);
            }
            if rnd() % 2 == 0 {
                p.push(b'.');
            }
            for f in [Format::Pickle, Format::TorchLegacy] {
                let _ = scan(&p, f);
            }
            let _ = reader::run_stream(&mut &p[..], 0, 2, Limits::default());
            let _ = imports_of(&p);
            let stored = zip::tests::build(&[("a/data.pkl", "a/data.pkl", &p, 0)]);
            let _ = scan(&stored, Format::TorchZip);
            let _ = scan(
                &tar::tests::build(&[("pickle", &p), ("storages", &p)]),
                Format::TorchTar,
            );
            // The same entry deflated: rewrite method and sizes in place around compressed data.
            let packed = miniz_oxide::deflate::compress_to_vec(&p, 6);
            let mut e = zip::Entry {
                name: "a/data.pkl".into(),
                local_name: "a/data.pkl".into(),
                method: 8,
                flags: 0,
                compressed_size: packed.len() as u64,
                size: p.len() as u64,
                header_offset: 0,
                data_start: 0,
            };
            let _ = zip::contents(&packed, &e, 16);
            e.compressed_size = (packed.len() / 2) as u64;
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut zip::inflater(&packed, &e), &mut sink);
        }
    }

    #[test]
    fn storage_records() {
        assert!(is_storage_record("archive/data/0"));
        assert!(is_storage_record("x/data/123"));
        assert!(!is_storage_record("archive/data.pkl"));
        assert!(!is_storage_record("archive/data/0.pkl"));
    }
}
