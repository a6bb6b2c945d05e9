//! The safetensors header: parsing and every structural rule of the reference reader (contract §4, §10).

use crate::dtype::Dtype;
use crate::report::{Finding, Severity};
use crate::tensor::TensorInfo;
use rustc_hash::FxHashMap;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// Largest header the reference reader accepts (decimal bytes).
pub const MAX_HEADER: u64 = 100_000_000;

/// A parsed, validated header.
#[derive(Debug, Default)]
pub struct Header {
    /// Length of the JSON header (the u64 at offset 0).
    pub header_len: u64,
    pub tensors: Vec<TensorInfo>,
    /// `__metadata__`, values as found (non-string values are a finding).
    pub metadata: BTreeMap<String, Value>,
}

/// Why a header cannot be read: the reason and the byte position in the file it points at.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderError {
    pub reason: String,
    pub position: u64,
}

impl HeaderError {
    fn new(reason: impl Into<String>, position: u64) -> Self {
        HeaderError {
            reason: reason.into(),
            position,
        }
    }

    /// The `header.invalid` finding for this error.
    pub fn finding(&self) -> Finding {
        Finding::new(
            "header.invalid",
            Severity::Error,
            format!(
                "safetensors header cannot be read: {} (at byte {})",
                self.reason, self.position
            ),
            json!({"reason": self.reason, "position": self.position}),
        )
    }
}

#[derive(Deserialize, PartialEq)]
#[serde(expecting = "a tensor entry {dtype, shape, data_offsets}")]
pub(crate) struct RawTensor<'a> {
    /// Borrowed from the header when it has no escapes (it never does in practice).
    #[serde(borrow)]
    pub(crate) dtype: Cow<'a, str>,
    pub(crate) shape: Vec<u64>,
    pub(crate) data_offsets: Offsets,
}

/// `data_offsets` without a heap allocation: the first two numbers and how many there were.
#[derive(PartialEq, Clone, Copy)]
pub(crate) struct Offsets {
    pub(crate) first: [u64; 2],
    pub(crate) count: usize,
}

impl Offsets {
    fn len(&self) -> usize {
        self.count
    }
}

impl<'de> Deserialize<'de> for Offsets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Offsets;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of two offsets")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Offsets, A::Error> {
                let mut o = Offsets {
                    first: [0; 2],
                    count: 0,
                };
                while let Some(v) = seq.next_element::<u64>()? {
                    if o.count < 2 {
                        o.first[o.count] = v;
                    }
                    o.count += 1;
                }
                Ok(o)
            }
        }
        d.deserialize_seq(V)
    }
}

/// `__metadata__` entries in file order, repeats included (the reference checks every value).
pub(crate) struct MetaPairs(pub(crate) Vec<(String, Value)>);

impl<'de> Deserialize<'de> for MetaPairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetaPairs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetaPairs, A::Error> {
                let mut v = Vec::new();
                while let Some(kv) = map.next_entry::<String, Value>()? {
                    v.push(kv);
                }
                Ok(MetaPairs(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// Header entries in file order; a repeated tensor name keeps the last entry, as the reference does.
pub(crate) struct RawHeader<'a> {
    pub(crate) metadata: Option<MetaPairs>,
    pub(crate) tensors: Vec<(String, RawTensor<'a>)>,
    /// Names listed more than once with different entries.
    pub(crate) conflicting: Vec<String>,
    /// First entry the reference rejects while parsing (even one a later repeat replaces):
    /// (name, reason, which occurrence of the name).
    pub(crate) problem: Option<(String, String, usize)>,
}

/// What the reference's typed parse rejects in one entry: an unknown dtype or not two offsets.
pub(crate) fn entry_problem(name: &str, t: &RawTensor) -> Option<String> {
    if Dtype::parse(&t.dtype).is_none() {
        return Some(format!("unknown dtype `{}` for tensor `{name}`", t.dtype));
    }
    if t.data_offsets.len() != 2 {
        return Some(format!(
            "tensor `{name}`: data_offsets has {} numbers, expected 2 (begin, end)",
            t.data_offsets.len()
        ));
    }
    None
}

impl<'de> Deserialize<'de> for RawHeader<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeader<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader<'de>, A::Error> {
                let mut metadata = None;
                let mut seen_meta = false;
                let mut entries: Vec<(String, RawTensor)> = Vec::new();
                let mut problem: Option<(usize, String)> = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "__metadata__" {
                        if seen_meta {
                            return Err(de::Error::custom("duplicate field `__metadata__`"));
                        }
                        seen_meta = true;
                        metadata = map.next_value::<Option<MetaPairs>>()?;
                    } else {
                        let t: RawTensor = map
                            .next_value()
                            .map_err(|e| de::Error::custom(format!("tensor `{key}`: {e}")))?;
                        if problem.is_none() {
                            problem = entry_problem(&key, &t).map(|r| (entries.len(), r));
                        }
                        entries.push((key, t));
                    }
                }
                Ok(RawHeader::assemble(metadata, entries, problem))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> RawHeader<'a> {
    /// The header from its entries in file order and the first entry the reference rejects
    /// (its index and reason).
    pub(crate) fn assemble(
        metadata: Option<MetaPairs>,
        entries: Vec<(String, RawTensor<'a>)>,
        problem: Option<(usize, String)>,
    ) -> Self {
        let problem = problem.map(|(i, reason)| {
            let name = &entries[i].0;
            let occurrence = entries[..i].iter().filter(|(k, _)| k == name).count();
            (name.clone(), reason, occurrence)
        });
        let (tensors, conflicting) = dedupe_last_wins(entries);
        RawHeader {
            metadata,
            tensors,
            conflicting,
            problem,
        }
    }
}

/// Keeps one entry per name at its first position with the last value (the reference's map
/// semantics); returns the names repeated with different entries.
#[allow(clippy::type_complexity)]
fn dedupe_last_wins(entries: Vec<(String, RawTensor)>) -> (Vec<(String, RawTensor)>, Vec<String>) {
    let mut first: FxHashMap<&str, usize> = FxHashMap::default();
    first.reserve(entries.len());
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    for (i, (k, _)) in entries.iter().enumerate() {
        if let Some(&j) = first.get(k.as_str()) {
            repeats.push((j, i));
        } else {
            first.insert(k, i);
        }
    }
    drop(first);
    if repeats.is_empty() {
        return (entries, Vec::new());
    }
    let mut conflicting: Vec<String> = Vec::new();
    let mut slots: Vec<Option<(String, RawTensor)>> = entries.into_iter().map(Some).collect();
    for (j, i) in repeats {
        let later = slots[i].take().expect("each repeat is taken once");
        let kept = slots[j].as_mut().expect("first occurrences stay");
        if kept.1 != later.1 && !conflicting.contains(&later.0) {
            conflicting.push(later.0.clone());
        }
        kept.1 = later.1;
    }
    (slots.into_iter().flatten().collect(), conflicting)
}

/// Byte offset in `text` of serde_json's 1-based line / column.
fn offset_of(text: &str, line: usize, column: usize) -> u64 {
    let mut off = 0usize;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return (off + column.saturating_sub(1)) as u64;
        }
        off += l.len();
    }
    off as u64
}

/// Byte position in the file of the key `"name"` in the header JSON, or the header start when not found.
fn position_of(text: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    let quoted = &key[..key.len() - 1];
    8 + text.find(&key).or_else(|| text.find(quoted)).unwrap_or(0) as u64
}

/// Byte position in the file of the `n`-th (0-based) occurrence of the key `"name":`.
fn nth_position_of(text: &str, name: &str, n: usize) -> u64 {
    let key = format!("\"{name}\":");
    match text.match_indices(&key).nth(n) {
        Some((i, _)) => 8 + i as u64,
        None => position_of(text, name),
    }
}

/// Byte position in the file of the last occurrence of the key `"name"` (a repeated entry).
fn last_position_of(text: &str, name: &str) -> u64 {
    let key = format!("\"{name}\"");
    8 + text.rfind(&key).unwrap_or(0) as u64
}

/// Reads the header length prefix; checks it against the file length.
pub fn header_len(prefix: &[u8], file_len: u64) -> Result<u64, HeaderError> {
    if prefix.len() < 8 || file_len < 8 {
        return Err(HeaderError::new(
            format!("file is {file_len} bytes, too small for the 8-byte length prefix"),
            0,
        ));
    }
    let n = u64::from_le_bytes(prefix[..8].try_into().unwrap());
    if n > MAX_HEADER {
        return Err(HeaderError::new(
            format!("header length {n} is over the 100,000,000-byte limit"),
            0,
        ));
    }
    if 8 + n > file_len {
        return Err(HeaderError::new(
            format!("header length {n} points past the end of the file ({file_len} bytes)"),
            0,
        ));
    }
    Ok(n)
}

/// The nesting depth (objects and arrays) at which the reference `safetensors` rejects a header:
/// serde_json's recursion limit of 128, which it applies even inside fields it ignores (the top-level
/// object counts as one level, so 127 levels parse and 128 do not).
const MAX_DEPTH: usize = 128;

/// The offset of the first `[` or `{` that opens level [`MAX_DEPTH`], outside strings, if any.
fn too_deep(json: &[u8]) -> Option<usize> {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for (i, &b) in json.iter().enumerate() {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth >= MAX_DEPTH {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The header's entries by serde_json, with the reference's nesting limit checked first.
fn parse_general(text: &str) -> Result<RawHeader<'_>, HeaderError> {
    if let Some(at) = too_deep(text.as_bytes()) {
        return Err(HeaderError::new(
            format!("invalid JSON: nested deeper than {} levels", MAX_DEPTH - 1),
            8 + at as u64,
        ));
    }
    serde_json::from_str(text).map_err(|e| {
        HeaderError::new(
            format!("invalid JSON: {e}"),
            8 + offset_of(text, e.line(), e.column()),
        )
    })
}

/// Parses and validates the JSON header bytes (the `n` bytes after the prefix).
///
/// Returns the header and the structural findings that leave it usable
/// (`file.truncated`, `file.unaccounted-bytes`), or the reason it cannot be read.
pub fn parse_header(
    json_bytes: &[u8],
    file_len: u64,
) -> Result<(Header, Vec<Finding>), HeaderError> {
    let n = json_bytes.len() as u64;
    let text = std::str::from_utf8(json_bytes)
        .map_err(|e| HeaderError::new("invalid UTF-8 in header", 8 + e.valid_up_to() as u64))?;
    // The plain shape every writer produces is read directly; anything else (and every error) goes
    // through serde_json, whose behaviour (and messages) the reference shares.
    let raw = match crate::header_fast::parse(text) {
        Some(raw) => raw,
        None => parse_general(text)?,
    };

    if let Some((name, reason, occurrence)) = raw.problem {
        return Err(HeaderError::new(
            reason,
            nth_position_of(text, &name, occurrence),
        ));
    }
    let mut metadata = BTreeMap::new();
    let mut seen: std::collections::HashMap<&str, usize> = Default::default();
    for (k, v) in raw.metadata.iter().flat_map(|m| &m.0) {
        let occurrence = seen.entry(k).or_default();
        if !v.is_string() {
            return Err(HeaderError::new(
                format!(
                    "__metadata__ value for `{k}` is {}, not a string",
                    json_kind(v)
                ),
                nth_position_of(text, k, *occurrence),
            ));
        }
        *occurrence += 1;
        metadata.insert(k.clone(), v.clone());
    }

    let data_start = 8 + n;
    let mut tensors = Vec::with_capacity(raw.tensors.len());
    for (name, t) in raw.tensors {
        let at = || position_of(text, &name);
        let dtype = Dtype::parse(&t.dtype).ok_or_else(|| {
            HeaderError::new(
                format!("unknown dtype `{}` for tensor `{name}`", t.dtype),
                at(),
            )
        })?;
        let (begin, end) = match t.data_offsets {
            Offsets {
                first: [b, e],
                count: 2,
            } => (b, e),
            _ => {
                return Err(HeaderError::new(
                    format!(
                        "tensor `{name}`: data_offsets has {} numbers, expected 2 (begin, end)",
                        t.data_offsets.len()
                    ),
                    at(),
                ))
            }
        };
        if end < begin {
            return Err(HeaderError::new(
                format!("tensor `{name}` ends ({end}) before it begins ({begin})"),
                at(),
            ));
        }
        let bits = t
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|e| e.checked_mul(dtype.bits()))
            .ok_or_else(|| HeaderError::new(format!("shape of tensor `{name}` overflows"), at()))?;
        if bits % 8 != 0 {
            return Err(HeaderError::new(
                format!("tensor `{name}` does not fill whole bytes"),
                at(),
            ));
        }
        if end - begin != bits / 8 {
            return Err(HeaderError::new(
                format!(
                    "tensor `{name}`: shape {:?} × {} needs {} bytes but data_offsets span {}",
                    t.shape,
                    dtype,
                    bits / 8,
                    end - begin
                ),
                at(),
            ));
        }
        tensors.push(TensorInfo {
            name,
            dtype,
            shape: t.shape,
            start: data_start + begin,
            len: end - begin,
            strides: None,
        });
    }

    let findings = match layout_findings(&mut tensors, data_start, file_len, text) {
        Ok(f) if f.is_empty() || raw.conflicting.is_empty() => f,
        other => {
            // The reference keeps the last entry of a repeated name; here that left the data
            // region untiled, so the repeated name is the defect to report.
            if let Some(name) = raw.conflicting.first() {
                let why = match &other {
                    Err(e) => e.reason.clone(),
                    Ok(f) => f[0].message.clone(),
                };
                return Err(HeaderError::new(
                    format!(
                        "tensor `{name}` is listed twice with different entries; the reference keeps the last one, and then: {why}"
                    ),
                    last_position_of(text, name),
                ));
            }
            other?
        }
    };
    Ok((
        Header {
            header_len: n,
            tensors,
            metadata,
        },
        findings,
    ))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks that tensors tile the data region: overlaps are fatal, gaps / trailing / missing bytes are findings.
fn layout_findings(
    tensors: &mut [TensorInfo],
    data_start: u64,
    file_len: u64,
    text: &str,
) -> Result<Vec<Finding>, HeaderError> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| (tensors[i].start, tensors[i].end()));
    let mut gaps: Vec<(u64, u64)> = vec![];
    let mut cursor = data_start;
    for &i in &order {
        let t = &tensors[i];
        if t.start < cursor {
            return Err(HeaderError::new(
                format!(
                    "tensor `{}` overlaps the tensor before it (starts at data offset {})",
                    t.name,
                    t.start - data_start
                ),
                position_of(text, &t.name),
            ));
        }
        if t.start > cursor {
            gaps.push((cursor, t.start));
        }
        cursor = t.end();
    }
    let data_end = cursor;
    let mut findings = vec![];
    if data_end > file_len {
        findings.push(Finding::new(
            "file.truncated",
            Severity::Error,
            format!(
                "file is truncated: the header needs {data_end} bytes but the file has {file_len} ({} missing)",
                data_end - file_len
            ),
            json!({"expected": data_end, "actual": file_len, "missing": data_end - file_len}),
        ));
    } else if data_end < file_len {
        gaps.push((data_end, file_len));
    }
    if !gaps.is_empty() {
        let total: u64 = gaps.iter().map(|(a, b)| b - a).sum();
        findings.push(Finding::new(
            "file.unaccounted-bytes",
            Severity::Error,
            format!(
                "{total} bytes belong to no tensor ({} range(s)); the reference safetensors loader refuses this file",
                gaps.len()
            ),
            json!({"bytes": total, "ranges": gaps.iter().take(50).map(|(a, b)| [a, b]).collect::<Vec<_>>()}),
        ));
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data_len: usize) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend(std::iter::repeat_n(0u8, data_len));
        v
    }

    fn parse(bytes: &[u8]) -> Result<(Header, Vec<Finding>), HeaderError> {
        let n = header_len(bytes, bytes.len() as u64)?;
        parse_header(&bytes[8..8 + n as usize], bytes.len() as u64)
    }

    #[test]
    fn accepts_valid_and_lenient_forms() {
        let h = r#" {"__metadata__":{"a":"b"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}} "#;
        let (hd, f) = parse(&file(h, 8)).unwrap();
        assert!(f.is_empty());
        assert_eq!(hd.tensors.len(), 1);
        assert_eq!(hd.tensors[0].start, 8 + h.len() as u64);
        assert_eq!(hd.metadata["a"], "b");
        let (hd, _) = parse(&file(r#"{"__metadata__":null}"#, 0)).unwrap();
        assert!(hd.tensors.is_empty());
    }

    #[test]
    fn duplicate_metadata_rejected() {
        let e = parse(&file(r#"{"__metadata__":{},"__metadata__":{}}"#, 0)).unwrap_err();
        assert!(e.reason.contains("duplicate field"), "{e:?}");
    }

    #[test]
    fn gap_and_trailing_are_unaccounted() {
        let h = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}"#;
        let (_, f) = parse(&file(h, 9)).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].check, "file.unaccounted-bytes");
        assert_eq!(f[0].details["bytes"], 5);
    }

    #[test]
    fn repeated_name_last_wins_or_is_named() {
        // Same entry twice, or a last entry that tiles the data: the reference opens it.
        let ok = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}"#;
        let (h, f) = parse(&file(ok, 8)).unwrap();
        assert!(f.is_empty());
        assert_eq!(h.tensors.len(), 1);
        assert_eq!(h.tensors[0].len, 8);
        // A last entry that leaves a hole: the repeated name is the reason given.
        let bad = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]},"a":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}}"#;
        let e = parse(&file(bad, 12)).unwrap_err();
        assert!(e.reason.contains("`a` is listed twice"), "{e:?}");
        assert_eq!(e.position, 8 + bad.rfind("\"a\"").unwrap() as u64);
    }

    #[test]
    fn offsets_must_be_a_pair() {
        let h = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2,2]}}"#;
        let e = parse(&file(h, 2)).unwrap_err();
        assert!(e.reason.contains("has 3 numbers"), "{e:?}");
        assert_eq!(e.position, 8 + 1);
    }

    #[test]
    fn a_replaced_entry_is_still_parsed_as_the_reference_does() {
        let h = r#"{"a":{"dtype":"F","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let e = parse(&file(h, 8)).unwrap_err();
        assert!(e.reason.contains("unknown dtype `F`"), "{e:?}");
        assert_eq!(e.position, 9);
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}"#;
        let e = parse(&file(h, 8)).unwrap_err();
        assert!(e.reason.contains("has 1 numbers"), "{e:?}");
        assert_eq!(e.position, 8 + h.rfind("\"a\"").unwrap() as u64);
    }

    #[test]
    fn every_metadata_value_must_be_a_string_even_a_replaced_one() {
        let h = r#"{"__metadata__":{"a":1,"a":"x"}}"#;
        let e = parse(&file(h, 0)).unwrap_err();
        assert!(e.reason.contains("`a` is a number"), "{e:?}");
        assert_eq!(e.position, 8 + h.find("\"a\"").unwrap() as u64);
        let (hd, _) = parse(&file(r#"{"__metadata__":{"a":"1","a":"x"}}"#, 0)).unwrap();
        assert_eq!(hd.metadata["a"], "x");
    }

    #[test]
    fn nesting_is_limited_as_the_reference_limits_it() {
        let with_extra = |depth: usize| {
            let nest = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            format!(r#"{{"a":{{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":{nest}}}}}"#)
        };
        // Top-level object + tensor entry + 125 arrays = 127 levels: accepted; one more is not.
        assert!(parse(&file(&with_extra(125), 1)).is_ok());
        let h = with_extra(126);
        let e = parse(&file(&h, 1)).unwrap_err();
        assert!(e.reason.contains("nested deeper than 127"), "{e:?}");
        assert_eq!(e.position, 8 + h.find("[[").unwrap() as u64 + 125);
        // Brackets inside strings are text, not nesting.
        let deep_text = format!(r#"{{"__metadata__":{{"k":"{}"}}}}"#, "[".repeat(500));
        assert!(parse(&file(&deep_text, 0)).is_ok());
    }

    /// A small deterministic generator (xorshift64*), so failures replay from the printed seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Property: on any bytes (valid headers, mutated ones, random ones) the parser returns without
    /// panicking; an accepted header has a tensor past the end exactly when it says `file.truncated`;
    /// errors point inside the file.
    /// FASTSCAN_FUZZ_ITERS sets the number of cases (CI runs the default briefly).
    #[test]
    fn header_parser_property_over_generated_inputs() {
        let iters: usize = std::env::var("FASTSCAN_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000);
        const PIECES: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "\\",
            "\"a\"",
            "\"__metadata__\"",
            "\"dtype\"",
            "\"F16\"",
            "\"shape\"",
            "\"data_offsets\"",
            "0",
            "1",
            "-1",
            "18446744073709551616",
            "1e3",
            "null",
            "true",
            " ",
            "\u{0}",
            "\u{ff}",
        ];
        let seed = 0x5eed_u64;
        let mut rng = Rng(seed);
        for case in 0..iters {
            let n = 1 + rng.below(6);
            let mut h = String::from("{");
            for i in 0..n {
                let (s, e) = (rng.below(64) as u64, rng.below(64) as u64);
                let dims: Vec<String> = (0..rng.below(3))
                    .map(|_| rng.below(9).to_string())
                    .collect();
                let dtype = ["F16", "F32", "U8", "BF16", "I64", "BOOL", "F8_E4M3"][rng.below(7)];
                if i > 0 {
                    h.push(',');
                }
                h.push_str(&format!(
                    r#""t{}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{s},{e}]}}"#,
                    rng.below(4),
                    dims.join(",")
                ));
            }
            h.push('}');
            let mut bytes = h.into_bytes();
            for _ in 0..rng.below(4) {
                let at = rng.below(bytes.len() + 1);
                match rng.below(3) {
                    0 => bytes
                        .splice(at..at, PIECES[rng.below(PIECES.len())].bytes())
                        .for_each(drop),
                    1 if at < bytes.len() => drop(bytes.remove(at)),
                    _ if at < bytes.len() => bytes[at] = rng.next() as u8,
                    _ => {}
                }
            }
            let data = rng.below(80);
            let mut f = (bytes.len() as u64).to_le_bytes().to_vec();
            f.extend_from_slice(&bytes);
            f.extend(std::iter::repeat_n(0u8, data));
            let size = f.len() as u64;
            match parse(&f) {
                Ok((hd, findings)) => {
                    let past_end = hd.tensors.iter().any(|t| t.end() > size);
                    let flagged = findings.iter().any(|f| f.check == "file.truncated");
                    assert_eq!(past_end, flagged, "case {case} (seed {seed}): {findings:?}");
                }
                Err(e) => assert!(e.position <= size, "case {case} (seed {seed}): {e:?}"),
            }
        }
    }
}
