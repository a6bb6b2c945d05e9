//! Safetensors headers built from the real layouts in ../shared/data/layouts, shared by the benches.

use fastscan_core::Dtype;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// Dtype order the reference writer lays data out in (larger alignment first, then name).
const WRITER_RANK: [&str; 22] = [
    "BOOL",
    "F4",
    "F6_E2M3",
    "F6_E3M2",
    "U8",
    "I8",
    "F8_E5M2",
    "F8_E4M3",
    "F8_E8M0",
    "I16",
    "U16",
    "F16",
    "BF16",
    "I32",
    "U32",
    "F32",
    "C64",
    "F64",
    "I64",
    "U64",
    "F8_E4M3FNUZ",
    "F8_E5M2FNUZ",
];

/// The layouts directory: $FASTSCAN_LAYOUTS, else ../shared/data/layouts beside the project.
fn layouts_dir() -> PathBuf {
    if let Ok(d) = std::env::var("FASTSCAN_LAYOUTS") {
        return d.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/layouts")
}

/// The named layout's length prefix and space-padded JSON header, as the reference writer makes
/// them, and the length of the data region that follows.
pub fn header_from_layout(name: &str) -> (Vec<u8>, u64) {
    let path = layouts_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let layout: Value = serde_json::from_str(&text).unwrap();
    let tensors = layout["tensors"].as_object().unwrap();
    let dtype = |n: &str| tensors[n]["dtype"].as_str().unwrap().to_owned();
    let rank = |d: &str| WRITER_RANK.iter().position(|x| *x == d).unwrap_or(0);
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort_by_key(|n| (std::cmp::Reverse(rank(&dtype(n))), *n));
    let mut header = Map::new();
    let mut pos = 0u64;
    for n in names {
        let t = &tensors[n];
        let d = dtype(n);
        let elements: u64 = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .product();
        let len = elements * Dtype::parse(&d).unwrap().bits() / 8;
        header.insert(
            n.clone(),
            json!({"dtype": d, "shape": t["shape"], "data_offsets": [pos, pos + len]}),
        );
        pos += len;
    }
    let mut json = serde_json::to_vec(&Value::Object(header)).unwrap();
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    (out, pos)
}
