//! Header parsing and classification, against the reference `safetensors` crate on the same bytes.
//!
//! Headers are built from the real layouts in ../shared/data/layouts (sd15: 1131 tensors, sdxl: 2515).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fastscan_core::{classify, safetensors as st};
use std::path::PathBuf;

/// Builds a complete (data-zeroed) safetensors file in memory from a layout JSON.
fn file_from_layout(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../../shared/data/layouts/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let layout: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut header = serde_json::Map::new();
    let mut pos = 0u64;
    for (k, t) in layout["tensors"].as_object().unwrap() {
        let dtype = t["dtype"].as_str().unwrap();
        let bits = fastscan_core::dtype::Dtype::parse(dtype).unwrap().bits();
        let n: u64 = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .product();
        let len = n * bits / 8;
        header.insert(
            k.clone(),
            serde_json::json!({"dtype": dtype, "shape": t["shape"], "data_offsets": [pos, pos + len]}),
        );
        pos += len;
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.resize(out.len() + pos as usize, 0);
    out
}

fn headers(c: &mut Criterion) {
    let mut g = c.benchmark_group("header");
    for name in ["sd15", "sdxl"] {
        let file = file_from_layout(name);
        let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_with_input(
            BenchmarkId::new("fastscan parse+validate", name),
            &file,
            |b, f| b.iter(|| st::parse_header(&f[8..8 + n], f.len() as u64).unwrap()),
        );
        g.bench_with_input(
            BenchmarkId::new("safetensors crate read_metadata", name),
            &file,
            |b, f| b.iter(|| safetensors::SafeTensors::read_metadata(f).unwrap()),
        );
        let (h, _) = st::parse_header(&file[8..8 + n], file.len() as u64).unwrap();
        g.bench_with_input(
            BenchmarkId::new("fastscan classify", name),
            &h.tensors,
            |b, t| b.iter(|| classify::classify(t)),
        );
    }
    g.finish();
}

criterion_group!(benches, headers);
criterion_main!(benches);
