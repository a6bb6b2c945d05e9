//! Data-pass throughput (GB/s) on a multi-GB file of a real layout filled with random bytes.
//!
//! The file is written to the temp dir from `shared/data/layouts/$FASTSCAN_BENCH_LAYOUT.json`
//! (default `sd15`, 2.1 GB; `sdxl` gives 6.9 GB) and deleted afterwards. The page cache is warm
//! after the first iteration. Run: `cargo bench -p fastscan-core --bench datapass`.

use criterion::{Criterion, Throughput};
use fastscan_core::classify::classify;
use fastscan_core::datapass::{self, Bytes, HashMode, Source};
use fastscan_core::{scan_file, ScanOptions};
use serde_json::{json, Map, Value};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Dtype order the reference writer sorts by (larger alignment first, then name).
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

fn layouts_dir() -> PathBuf {
    if let Ok(d) = std::env::var("FASTSCAN_LAYOUTS") {
        return d.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/layouts")
}

fn bits(dtype: &str) -> u64 {
    match dtype {
        "F64" | "I64" | "U64" | "C64" => 64,
        "F32" | "I32" | "U32" => 32,
        "F16" | "BF16" | "I16" | "U16" => 16,
        _ => 8,
    }
}

/// Writes the layout as a safetensors file with random data; returns its path.
fn write_fixture(layout: &str) -> PathBuf {
    let text = std::fs::read_to_string(layouts_dir().join(format!("{layout}.json")))
        .expect("real layouts in ../shared/data/layouts (or set FASTSCAN_LAYOUTS)");
    let lay: Value = serde_json::from_str(&text).unwrap();
    let tensors = lay["tensors"].as_object().unwrap();
    let rank = |d: &str| WRITER_RANK.iter().position(|x| *x == d).unwrap_or(0);
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort_by_key(|n| {
        (
            std::cmp::Reverse(rank(tensors[*n]["dtype"].as_str().unwrap())),
            *n,
        )
    });
    let mut header = Map::new();
    let mut pos = 0u64;
    for n in &names {
        let t = &tensors[*n];
        let dtype = t["dtype"].as_str().unwrap();
        let shape: Vec<u64> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let len = shape.iter().product::<u64>() * bits(dtype) / 8;
        header.insert(
            (*n).clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + len]}),
        );
        pos += len;
    }
    let mut raw = serde_json::to_vec(&Value::Object(header)).unwrap();
    raw.resize(raw.len().div_ceil(8) * 8, b' ');
    let path = std::env::temp_dir().join(format!(
        "fastscan-bench-{}-{layout}.safetensors",
        std::process::id()
    ));
    let mut w = BufWriter::with_capacity(8 << 20, File::create(&path).unwrap());
    w.write_all(&(raw.len() as u64).to_le_bytes()).unwrap();
    w.write_all(&raw).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 8 << 20];
    let mut left = pos;
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
    // SAFETY: a read-only map of a file this process wrote and nobody else touches.
    let map = unsafe { memmap2::Mmap::map(&file).unwrap() };
    let table = fastscan_core::scan::read_table(&path).unwrap();
    let class = classify(&table.tensors);
    let src = Source {
        bytes: Bytes::Mapped {
            map: &map,
            file: &file,
        },
        tensors: &table.tensors,
        class: &class,
        safetensors_metadata: Some(&table.metadata),
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
        b.iter(|| datapass::run(&src, HashMode::Components, false))
    });
    g.bench_function(
        "pass full (file blake3/autov1 + components + NaN/Inf)",
        |b| b.iter(|| datapass::run(&src, HashMode::Full, false)),
    );
    g.bench_function("pass full --sha256", |b| {
        b.iter(|| datapass::run(&src, HashMode::Full, true))
    });
    g.bench_function("scan_file full", |b| {
        b.iter(|| scan_file(&path, &ScanOptions::default()))
    });
    g.finish();
    c.final_summary();
    drop(map);
    let _ = std::fs::remove_file(&path);
}
