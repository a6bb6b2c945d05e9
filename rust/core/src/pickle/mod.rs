//! Legacy PyTorch pickle checkpoints, read without executing them (SPEC §2, §4).
//!
//! [`zip`] finds the pickles of a PyTorch zip checkpoint, [`reader`] walks each pickle's opcodes
//! ([`opcodes`]) without importing or calling anything, [`imports`] judges every import, and
//! [`tensors`] turns the reconstructed state dict into a tensor table with absolute file offsets.

pub mod imports;
pub mod opcodes;
pub mod reader;
pub mod tensors;
pub mod zip;

use crate::report::{Finding, Severity};
use crate::sniff::{Format, SNIFF_LEN};
use crate::tensor::TensorInfo;
use imports::Verdict;
use reader::{Limits, Obj, Run, StorageRef};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

/// What reading a pickle-based file yields.
#[derive(Default)]
pub struct PickleScan {
    pub tensors: Vec<TensorInfo>,
    pub findings: Vec<Finding>,
}

/// Most bytes an inflated zip entry may take (zip bombs).
const MAX_INFLATED: usize = 128 << 20;
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
    let r = reader::run(head, 0, Limits::default());
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
    /// A zip archive with no pickle in it: not a model file at all.
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
                f.write_str("zip archive holds no pickle: not a PyTorch checkpoint")
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
        Format::Pickle => {
            scan_raw(bytes, &mut c);
            Vec::new()
        }
        Format::Safetensors | Format::Unknown => return Err(PickleError::NotPickleBased(format)),
    };
    Ok(PickleScan {
        tensors,
        findings: c.finish(format),
    })
}

/// One distinct import seen, with where it first appeared.
struct Seen {
    verdict: Verdict,
    position: usize,
    offset: Option<u64>,
    opcode: &'static str,
    unresolved: Option<String>,
    count: u64,
}

/// Gathers imports and problems across the pickles of one file.
#[derive(Default)]
struct Collector {
    imports: BTreeMap<(String, String, String), Seen>,
    invalid: Vec<serde_json::Value>,
    limited: Vec<serde_json::Value>,
    findings: Vec<Finding>,
}

impl Collector {
    /// Records the imports of one run; `base` is the file offset of the pickle buffer's byte 0.
    fn record(&mut self, entry: Option<&str>, base: Option<u64>, run: &Run) {
        for imp in &run.imports {
            let verdict = match &imp.unresolved {
                Some(_) => Verdict::Dangerous(
                    "an import the pickle computes at load time cannot be checked",
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
                .and_modify(|s| s.count += 1)
                .or_insert(Seen {
                    verdict,
                    position: imp.pos,
                    offset: base.map(|b| b + imp.pos as u64),
                    opcode: imp.opcode,
                    unresolved: imp.unresolved.clone(),
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
            });
            match s.verdict {
                Verdict::Dangerous(why) => {
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
                _ => self.findings.push(Finding::new(
                    "pickle.unknown-import",
                    Severity::Warning,
                    format!("pickle imports {module}.{name}, which a checkpoint does not need"),
                    details,
                )),
            }
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

/// Runs one pickle at `pos` of `data` and records its imports (and its error, when `report_error`).
fn run_one<'a>(
    data: &'a [u8],
    pos: usize,
    entry: Option<&str>,
    base: Option<u64>,
    c: &mut Collector,
    report_error: bool,
) -> Run<'a> {
    let run = reader::run(data, pos, Limits::default());
    c.record(entry, base, &run);
    if report_error {
        if let Some((p, why)) = &run.error {
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

/// Every pickle concatenated in a raw stream (Python reads the first; scanners must see them all).
fn scan_stream<'a>(
    data: &'a [u8],
    entry: Option<&str>,
    base: Option<u64>,
    c: &mut Collector,
) -> Option<Run<'a>> {
    let mut first = None;
    let mut pos = 0;
    while pos < data.len() {
        let leading = first.is_none();
        let run = run_one(data, pos, entry, base, c, leading);
        let (complete, end, ops) = (run.complete, run.end, run.ops);
        if leading {
            first = Some(run);
        }
        // Bytes after the last pickle that are no pickle at all end the stream quietly.
        if !complete || end <= pos || ops == 0 {
            break;
        }
        pos = end;
    }
    first
}

fn scan_raw(data: &[u8], c: &mut Collector) {
    scan_stream(data, None, Some(0), c);
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
    let mut out = Vec::new();
    for (name, t) in tensors::named_tensors(run) {
        match locate(&t.storage).and_then(|(start, len)| tensors::place(&name, t, start, len)) {
            Ok(info) => out.push(info),
            Err(why) => c.invalid(entry, None, format!("tensor {name}: {why}")),
        }
    }
    out
}

fn scan_legacy(data: &[u8], c: &mut Collector) -> Vec<TensorInfo> {
    let mut runs = Vec::new();
    let mut pos = 0;
    for _ in 0..LEGACY_PICKLES {
        let run = run_one(data, pos, None, Some(0), c, true);
        let ok = run.complete && run.error.is_none();
        pos = run.end;
        runs.push(run);
        if !ok {
            return Vec::new();
        }
    }
    // Storage data follows the key list: for each key, an 8-byte element count, then the elements.
    let (main, keys) = (&runs[3], &runs[4]);
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
        _ => {
            c.invalid(
                None,
                Some(keys.end),
                "storage key list is not a list".into(),
            );
            return Vec::new();
        }
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
    place_all(
        main,
        |s| {
            placed
                .get(&s.key)
                .copied()
                .ok_or_else(|| format!("storage {} not in the file", s.key))
        },
        c,
        None,
    )
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
        if !named && Some(i) != main_idx && is_storage_record(&e.name) {
            continue;
        }
        let body = match zip::contents(data, e, MAX_INFLATED) {
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
        let Some(run) = scan_stream(&body, Some(&e.name), base, c) else {
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

    #[test]
    fn storage_records() {
        assert!(is_storage_record("archive/data/0"));
        assert!(is_storage_record("x/data/123"));
        assert!(!is_storage_record("archive/data.pkl"));
        assert!(!is_storage_record("archive/data/0.pkl"));
    }
}
