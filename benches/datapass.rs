//! Data-pass throughput (GB/s) on a multi-GB file of a real layout filled with random bytes.
//!
//! The file is written to the temp dir from `shared/data/layouts/$FASTSCAN_BENCH_LAYOUT.json`
//! (default `sd15`, 2.1 GB; `sdxl` gives 6.9 GB) and deleted afterwards. The page cache is warm
//! after the first iteration. Run: `cargo bench -p fastscan-core --bench datapass`.

use criterion::{Criterion, Throughput};
use fastscan_core::{
    classify, data_pass, scan_file, FileSource, GuardedMap, HashMode, ScanOptions, Source,
};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

#[path = "layout.rs"]
mod layout;

/// Writes the layout as a safetensors file with random data; returns its path.
fn write_fixture(layout: &str) -> PathBuf {
    let (header, data_len) = layout::header_from_layout(layout);
    let path = std::env::temp_dir().join(format!(
        "fastscan-bench-{}-{layout}.safetensors",
        std::process::id()
    ));
    let mut w = BufWriter::with_capacity(8 << 20, File::create(&path).unwrap());
    w.write_all(&header).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 8 << 20];
    let mut left = data_len;
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        w.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    w.into_inner().unwrap().sync_all().unwrap();
    path
}

fn main() {
    let layout = std::env::var("FASTSCAN_BENCH_LAYOUT").unwrap_or_else(|_| "sd15".into());
    let path = write_fixture(&layout);
    let file = File::open(&path).unwrap();
    let size = file.metadata().unwrap().len();
    let map = GuardedMap::new(&file, size).unwrap();
    let table = fastscan_core::open_table(&path).unwrap();
    let class = classify(&table.tensors);
    let mut fs = FileSource::new(&file, size);
    let mut src = Source {
        bytes: &mut fs,
        tensors: &table.tensors,
        class: &class,
        safetensors_metadata: Some(&table.metadata),
        stop: None,
    };

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    let mut g = c.benchmark_group(format!("datapass-{layout}"));
    g.throughput(Throughput::Bytes(size));
    g.bench_function("blake3-only (update_rayon over the map)", |b| {
        b.iter(|| {
            let mut h = blake3::Hasher::new();
            h.update_rayon(&map);
            h.finalize()
        })
    });
    g.bench_function("pass components (component hashes + NaN/Inf)", |b| {
        b.iter(|| data_pass(&mut src, HashMode::Components, false))
    });
    g.bench_function(
        "pass full (file blake3/autov1 + components + NaN/Inf)",
        |b| b.iter(|| data_pass(&mut src, HashMode::Full, false)),
    );
    g.bench_function("pass full --sha256", |b| {
        b.iter(|| data_pass(&mut src, HashMode::Full, true))
    });
    g.bench_function("scan_file full", |b| {
        b.iter(|| scan_file(&path, &ScanOptions::default()))
    });
    g.finish();
    c.final_summary();
    drop(map);
    let _ = std::fs::remove_file(&path);
}
