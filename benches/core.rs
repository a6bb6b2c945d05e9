//! Header parsing and classification, against the reference `safetensors` crate on the same bytes.
//!
//! Headers are built from the real layouts in ../shared/data/layouts (sd15: 1131 tensors, sdxl: 2515).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fastscan_core::{classify, parse_header};

#[path = "layout.rs"]
mod layout;

/// A complete (data-zeroed) safetensors file in memory from a layout.
fn file_from_layout(name: &str) -> Vec<u8> {
    let (mut out, data_len) = layout::header_from_layout(name);
    out.resize(out.len() + data_len as usize, 0);
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
            |b, f| b.iter(|| parse_header(&f[8..8 + n], f.len() as u64).unwrap()),
        );
        g.bench_with_input(
            BenchmarkId::new("safetensors crate read_metadata", name),
            &file,
            |b, f| b.iter(|| safetensors::SafeTensors::read_metadata(f).unwrap()),
        );
        let (h, _) = parse_header(&file[8..8 + n], file.len() as u64).unwrap();
        g.bench_with_input(
            BenchmarkId::new("fastscan classify", name),
            &h.tensors,
            |b, t| b.iter(|| classify(t)),
        );
    }
    g.finish();
}

criterion_group!(benches, headers);
criterion_main!(benches);
