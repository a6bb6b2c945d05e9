//! NumPy `.npy` and `.npz` files: plain arrays become tensors, object arrays' pickles are scanned.
//!
//! An `.npy` is a magic string, a Python-literal header (`descr`, `fortran_order`, `shape`) and the raw
//! elements; an object array (`descr` `|O`) stores a pickle instead, which `np.load(allow_pickle=True)`
//! runs. An `.npz` is a zip of `.npy` members (stored by `np.savez`, deflated by `savez_compressed`).

use crate::dtype::Dtype;
use crate::pickle::{self, zip};
use crate::report::{Finding, Severity};
use crate::sniff::Format;
use crate::tensor::TensorInfo;
use serde_json::{json, Value};

/// The magic every `.npy` starts with.
pub const MAGIC: &[u8] = b"\x93NUMPY";
/// Largest header accepted (numpy itself refuses headers over 10,000 bytes without `max_header_size`).
const MAX_HEADER: usize = 1 << 20;
/// Most bytes an `.npz` member is inflated to, to read its header and pickle.
const MAX_INFLATED: usize = 128 << 20;
/// Most members of an `.npz` read.
const MAX_MEMBERS: usize = 100_000;

/// What reading an `.npy` / `.npz` gave.
#[derive(Default)]
pub struct NpyScan {
    pub tensors: Vec<TensorInfo>,
    pub findings: Vec<Finding>,
}

/// The parsed header of one array.
#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran: bool,
    shape: Vec<u64>,
    /// Offset of the first element (or of the pickle) after the magic.
    data_at: usize,
}

fn header(b: &[u8]) -> Result<Header, String> {
    if !b.starts_with(MAGIC) || b.len() < 10 {
        return Err("not an .npy array (no \\x93NUMPY magic)".into());
    }
    let major = b[6];
    let (len, at) = match major {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => {
            let l = b.get(8..12).ok_or("header length cut off at byte 8")?;
            (u32::from_le_bytes(l.try_into().unwrap()) as usize, 12)
        }
        v => return Err(format!("unknown .npy version {v} at byte 6")),
    };
    if len > MAX_HEADER {
        return Err(format!("header of {len} bytes at byte {at} is too large"));
    }
    let text = b
        .get(at..at + len)
        .ok_or_else(|| format!("header of {len} bytes at byte {at} runs past the end"))?;
    let text = String::from_utf8_lossy(text);
    let value_of = |key: &str| -> Option<&str> {
        let k = text.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = text[k..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = value_of("descr")
        .and_then(|r| {
            let q = r.chars().next().filter(|c| *c == '\'' || *c == '"')?;
            let end = r[1..].find(q)? + 1;
            Some(r[1..end].to_string())
        })
        .ok_or_else(|| format!("header at byte {at} has no simple 'descr'"))?;
    let fortran = value_of("fortran_order").is_some_and(|r| r.starts_with("True"));
    let shape_text = value_of("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| format!("header at byte {at} has no 'shape'"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<u64>()
                .map_err(|_| format!("shape {shape_text:?} at byte {at} is not a list of sizes"))
        })
        .collect::<Result<Vec<u64>, String>>()?;
    Ok(Header {
        descr,
        fortran,
        shape,
        data_at: at + len,
    })
}

/// The dtype of a little-endian (or byte-order-free) numpy type string.
pub(crate) fn dtype_of(descr: &str) -> Option<Dtype> {
    Some(match descr {
        "<f2" => Dtype::F16,
        "<f4" => Dtype::F32,
        "<f8" => Dtype::F64,
        "<i8" => Dtype::I64,
        "<i4" => Dtype::I32,
        "<i2" => Dtype::I16,
        "|i1" => Dtype::I8,
        "|u1" => Dtype::U8,
        "<u2" => Dtype::U16,
        "<u4" => Dtype::U32,
        "<u8" => Dtype::U64,
        "|b1" => Dtype::BOOL,
        "<c8" => Dtype::C64,
        _ => return None,
    })
}

/// Element strides of a Fortran-order (column-major) array; None when C order holds them as well.
pub(crate) fn fortran_strides(shape: &[u64], fortran: bool) -> Option<Vec<u64>> {
    if !fortran || shape.iter().filter(|&&d| d != 1).count() <= 1 {
        return None;
    }
    let mut acc = 1u64;
    Some(
        shape
            .iter()
            .map(|&d| {
                let s = acc;
                acc = acc.saturating_mul(d);
                s
            })
            .collect(),
    )
}

fn is_object(descr: &str) -> bool {
    matches!(descr, "|O" | "O" | "<O" | ">O")
}

/// Reads one array whose `.npy` bytes are `b`; `base` is their file offset when they lie in the file as is.
fn array(name: &str, b: &[u8], base: Option<u64>, out: &mut NpyScan) {
    let h = match header(b) {
        Ok(h) => h,
        Err(why) => {
            out.findings.push(Finding::new(
                "npy.invalid",
                Severity::Error,
                format!("array {name}: {why}"),
                json!({"array": name, "reason": why}),
            ));
            return;
        }
    };
    if is_object(&h.descr) {
        object_array(name, &b[h.data_at.min(b.len())..], base, h.data_at, out);
        return;
    }
    let Some(dtype) = dtype_of(&h.descr) else {
        out.findings.push(Finding::new(
            "npy.unsupported-dtype",
            Severity::Info,
            format!(
                "array {name}: element type {:?} is not one fastscan reads; its values are not checked",
                h.descr
            ),
            json!({"array": name, "descr": h.descr}),
        ));
        return;
    };
    let Some(base) = base else {
        return; // a compressed member: no file offset (counted by the caller)
    };
    let numel: u64 = h.shape.iter().product();
    let len = numel.saturating_mul(dtype.bits() / 8);
    let have = (b.len() - h.data_at.min(b.len())) as u64;
    if len > have {
        out.findings.push(Finding::new(
            "file.truncated",
            Severity::Error,
            format!(
                "array {name}: needs {len} bytes from byte {} but has {have}",
                base + h.data_at as u64
            ),
            json!({"array": name, "offset": base + h.data_at as u64, "expected": len, "actual": have}),
        ));
        return;
    }
    let strides = fortran_strides(&h.shape, h.fortran);
    out.tensors.push(TensorInfo {
        name: name.to_string(),
        dtype,
        shape: h.shape,
        start: base + h.data_at as u64,
        len,
        strides,
    });
}

/// Scans an object array's pickle with the checkpoint pickle reader; import findings keep their verdicts.
fn object_array(name: &str, pickle_bytes: &[u8], base: Option<u64>, at: usize, out: &mut NpyScan) {
    out.findings.push(Finding::new(
        "npy.object-array",
        Severity::Info,
        format!(
            "array {name} holds Python objects as a pickle: numpy loads it only with allow_pickle=True, \
             which runs that pickle"
        ),
        json!({"array": name, "offset": base.map(|b| b + at as u64)}),
    ));
    let Ok(scan) = pickle::scan(pickle_bytes, Format::Pickle) else {
        return;
    };
    let shift = base.map(|b| b + at as u64);
    for mut f in scan.findings {
        if f.check == "format.legacy-pickle" {
            continue; // said better by npy.object-array
        }
        if let Value::Object(m) = &mut f.details {
            let offset = m.get("offset").and_then(Value::as_u64);
            m.insert(
                "offset".into(),
                json!(offset.zip(shift).map(|(o, s)| o + s)),
            );
            m.insert("array".into(), json!(name));
        }
        f.message = format!("array {name}: {}", f.message);
        out.findings.push(f);
    }
}

/// Scans an `.npy` file (`Format::Npy`) or an `.npz` archive (`Format::Npz`).
pub fn scan(bytes: &[u8], format: Format, stem: &str) -> Result<NpyScan, String> {
    let mut out = NpyScan::default();
    match format {
        Format::Npy => array(stem, bytes, Some(0), &mut out),
        Format::Npz => {
            let archive = zip::read(bytes)?;
            let mut compressed = vec![];
            for e in archive.entries.iter().take(MAX_MEMBERS) {
                let name = e.name.strip_suffix(".npy").unwrap_or(&e.name);
                let body = match zip::contents(bytes, e, MAX_INFLATED) {
                    Ok((b, _)) => b,
                    Err(why) => {
                        out.findings.push(Finding::new(
                            "npy.invalid",
                            Severity::Error,
                            why.clone(),
                            json!({"array": name, "reason": why}),
                        ));
                        continue;
                    }
                };
                let stored = e.method == 0;
                if !stored {
                    compressed.push(name.to_string());
                }
                array(name, &body, stored.then_some(e.data_start), &mut out);
            }
            if !compressed.is_empty() {
                out.findings.push(Finding::new(
                    "npz.compressed",
                    Severity::Info,
                    format!(
                        "{} array(s) are compressed (np.savez_compressed): their pickles were scanned, \
                         their values are not listed or checked",
                        compressed.len()
                    ),
                    json!({"arrays": compressed}),
                ));
            }
        }
        other => return Err(format!("{} is not a numpy format", other.name())),
    }
    Ok(out)
}

/// First bytes of an array fetched piecewise: its magic, its header length and usually its header.
const HEAD_READ: u64 = 4 << 10;
/// Most compressed bytes of an `.npz`'s deflated members fetched piecewise (they are inflated to read
/// their headers); past them the archive is read through a map, where inflating stops early.
const MAX_DEFLATED_FETCH: u64 = 64 << 20;

/// Fetches through `p` every byte [`scan`] reads, and not the arrays' elements: an `.npy`'s header
/// (its pickle too, for an object array); an `.npz`'s zip structure, each stored member's header
/// (likewise) and each deflated member whole. `Ok(false)` when the file must be read whole (an `.npz`
/// without a usable directory that `p` cannot walk, or with many deflated bytes).
pub fn fetch_scanned(p: &mut dyn zip::Pieces, format: Format) -> std::io::Result<bool> {
    match format {
        Format::Npy => {
            let len = p.bytes().len() as u64;
            fetch_array(p, 0, len)?;
            Ok(true)
        }
        Format::Npz => {
            let Some(archive) = zip::fetch_archive(p)? else {
                return Ok(false);
            };
            let entries = &archive.entries[..archive.entries.len().min(MAX_MEMBERS)];
            let deflated: u64 = entries
                .iter()
                .filter(|e| e.method == 8)
                .map(|e| e.compressed_size)
                .sum();
            if deflated > MAX_DEFLATED_FETCH {
                return Ok(false);
            }
            for e in entries {
                match e.method {
                    0 => fetch_array(p, e.data_start, e.compressed_size)?,
                    8 => zip::fetch_at(p, e.data_start, e.compressed_size)?,
                    _ => {}
                }
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Fetches the header of the array whose `.npy` bytes are the `len` at `at` (all of them when it is
/// an object array: its pickle is read).
fn fetch_array(p: &mut dyn zip::Pieces, at: u64, len: u64) -> std::io::Result<()> {
    let size = p.bytes().len() as u64;
    let len = len.min(size.saturating_sub(at));
    zip::fetch_at(p, at, len.min(HEAD_READ))?;
    let span = at as usize..(at + len) as usize;
    let b = &p.bytes()[span.clone()];
    let header_end = match b.get(6) {
        Some(1) if b.len() >= 10 => 10 + u16::from_le_bytes([b[8], b[9]]) as u64,
        Some(2 | 3) if b.len() >= 12 => {
            12 + u32::from_le_bytes(b[8..12].try_into().unwrap()) as u64
        }
        _ => 0,
    };
    if header_end > HEAD_READ {
        let end = header_end.min(MAX_HEADER as u64 + 12).min(len);
        zip::fetch_at(p, at + HEAD_READ, end.saturating_sub(HEAD_READ))?;
    }
    if header(&p.bytes()[span]).is_ok_and(|h| is_object(&h.descr)) {
        zip::fetch_at(p, at, len)?;
    }
    Ok(())
}

/// True when a zip's first member (its local header at byte 0) is an `.npy`: an `.npz` archive.
pub fn zip_is_npz(head: &[u8]) -> bool {
    if !head.starts_with(b"PK\x03\x04") || head.len() < 30 {
        return false;
    }
    let n = u16::from_le_bytes([head[26], head[27]]) as usize;
    head.get(30..30 + n)
        .is_some_and(|name| name.ends_with(b".npy"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, fortran: bool, data: &[u8]) -> Vec<u8> {
        let mut h = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn plain_array_is_a_tensor() {
        let b = npy("<f4", "(2, 3)", false, &[0u8; 24]);
        let s = scan(&b, Format::Npy, "x").unwrap();
        assert_eq!(s.tensors.len(), 1);
        let t = &s.tensors[0];
        let data_at = (b.len() - 24) as u64;
        assert_eq!(data_at % 64, 0);
        assert_eq!(
            (t.dtype, t.shape.clone(), t.start, t.len),
            (Dtype::F32, vec![2, 3], data_at, 24)
        );
        assert_eq!(t.strides, None);
        assert!(s.findings.is_empty());
        let f = scan(&npy("<f2", "(2, 3)", true, &[0u8; 12]), Format::Npy, "x").unwrap();
        assert_eq!(f.tensors[0].strides, Some(vec![1, 2]));
        let scalar = scan(&npy("<i8", "()", false, &[0u8; 8]), Format::Npy, "x").unwrap();
        assert_eq!(scalar.tensors[0].shape, Vec::<u64>::new());
    }

    #[test]
    fn object_array_pickle_is_scanned() {
        // pickle protocol 2 of a list holding an os.system reference.
        let pkl = b"\x80\x02]q\x00cos\nsystem\nq\x01a.";
        let evil = npy("|O", "(1,)", false, pkl);
        let s = scan(&evil, Format::Npy, "x").unwrap();
        assert!(s.tensors.is_empty());
        let crit: Vec<_> = s
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Critical)
            .collect();
        assert_eq!(crit.len(), 1, "{:?}", s.findings);
        // The import's offset is absolute in the file: after the header, 5 bytes into the pickle.
        assert_eq!(
            crit[0].details["offset"],
            (evil.len() - pkl.len() + 5) as u64
        );
        let benign = npy(
            "|O",
            "(2,)",
            false,
            b"\x80\x02]q\x00(X\x01\x00\x00\x00aK\x01e.",
        );
        let s = scan(&benign, Format::Npy, "x").unwrap();
        let checks: Vec<_> = s.findings.iter().map(|f| f.check).collect();
        assert_eq!(checks, ["npy.object-array"]);
    }

    #[test]
    fn arrays_fetched_piecewise_scan_as_the_whole_and_their_elements_are_never_fetched() {
        use crate::pickle::zip::tests::{build, Fetched};
        let outcome = |s: Result<NpyScan, String>| match s {
            Ok(s) => format!(
                "{:?} {}",
                s.tensors
                    .iter()
                    .map(|t| (&t.name, t.dtype, &t.shape, t.start, t.len))
                    .collect::<Vec<_>>(),
                serde_json::to_string(&s.findings).unwrap()
            ),
            Err(e) => e,
        };
        let big = npy("<f4", "(100000,)", false, &vec![7u8; 400_000]);
        let evil = npy("|O", "(1,)", false, b"\x80\x02]q\x00cos\nsystem\nq\x01a.");
        let npz = build(&[
            ("big.npy", "big.npy", &big, 0),
            ("evil.npy", "evil.npy", &evil, 0),
        ]);
        let dir = crate::pickle::zip::read(&npz).unwrap().entries[1].data_end() as usize;
        let cases = [
            (big.clone(), Format::Npy),
            (evil.clone(), Format::Npy),
            (npz.clone(), Format::Npz),
            (npz[..dir].to_vec(), Format::Npz), // no central directory: walked
        ];
        for (b, format) in &cases {
            for cut in [b.len(), b.len() / 2, 200, 100, 9, 0] {
                let b = &b[..cut.min(b.len())];
                let mut p = Fetched::new(b, true);
                if !fetch_scanned(&mut p, *format).unwrap() {
                    // No zip archive left to find: read whole, it fails there as well.
                    assert!(*format == Format::Npz && zip::read(b).is_err());
                    continue;
                }
                assert_eq!(
                    outcome(scan(&p.image, *format, "x")),
                    outcome(scan(b, *format, "x"))
                );
                if *format == Format::Npy && b.len() > 400_000 {
                    let got: u64 = p.got.iter().map(|r| r.1).sum();
                    assert!(got < 20_000, "{got} bytes fetched of {}", b.len());
                }
            }
        }
        assert!(scan(&npz, Format::Npz, "x")
            .unwrap()
            .findings
            .iter()
            .any(|f| f.severity == Severity::Critical));
    }

    #[test]
    fn damaged_headers_are_findings() {
        for b in [
            b"\x93NUMPY\x01\x00\xff\xff{".to_vec(),
            b"\x93NUMPY\x09\x00\x10\x00{'descr': '<f4'}".to_vec(),
            npy("<f4", "(2, x)", false, &[]),
            npy("<f4", "(1000,)", false, &[0; 8]),
        ] {
            let s = scan(&b, Format::Npy, "x").unwrap();
            assert!(s.tensors.is_empty());
            assert!(
                s.findings.iter().any(|f| f.severity == Severity::Error),
                "{:?}",
                s.findings
            );
        }
    }
}
