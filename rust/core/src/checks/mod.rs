//! The checks of contract §4 that run on a file's tensor table (header-level; the data pass adds its own).

use crate::classify::{Classification, Role};
use crate::report::Finding;
use crate::tensor::TensorInfo;
use serde_json::Value;
use std::collections::BTreeMap;

mod clip;
pub use clip::decode;
mod components;
mod dtypes;
mod junk;
mod size;

pub use clip::is_text_position_ids;

/// Reads `len` bytes at absolute `offset` of the file being checked.
pub type ReadAt<'a> = &'a dyn Fn(u64, u64) -> std::io::Result<Vec<u8>>;

/// Everything a check may look at.
pub struct Context<'a> {
    pub size: u64,
    pub format: crate::sniff::Format,
    /// Length of a safetensors file's JSON header (0 for other formats).
    pub header_len: u64,
    pub tensors: &'a [TensorInfo],
    pub class: &'a Classification,
    pub metadata: &'a BTreeMap<String, Value>,
    /// Reads tensor bytes (small tensors only, such as `position_ids`).
    pub read_at: ReadAt<'a>,
}

impl Context<'_> {
    /// Tensors with their roles.
    pub fn with_roles(&self) -> impl Iterator<Item = (&TensorInfo, &Role)> {
        self.tensors.iter().zip(self.class.roles.iter())
    }
}

/// What the checks found, and the bytes pruning would save by cause.
#[derive(Default)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    pub wasted: BTreeMap<String, u64>,
}

/// Runs every header-level check on one file.
pub fn run(ctx: &Context) -> Outcome {
    let mut out = Outcome::default();
    clip::check(ctx, &mut out);
    components::check(ctx, &mut out);
    dtypes::check(ctx, &mut out);
    junk::check(ctx, &mut out);
    size::check(ctx, &mut out);
    out
}

/// Bytes for a message in SI units, as the CLI's tables print them: `1.5 GB`, `12.0 MB`, `512 bytes`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// An integer with thousands separators: `859,520,964`.
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let groups: Vec<&str> = s
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    groups.join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn grouped_digits() {
        assert_eq!(super::grouped(0), "0");
        assert_eq!(super::grouped(999), "999");
        assert_eq!(super::grouped(859520964), "859,520,964");
    }

    #[test]
    fn human_bytes() {
        assert_eq!(super::human(512), "512 bytes");
        assert_eq!(super::human(1500), "1.5 kB");
        assert_eq!(super::human(3 << 30), "3.2 GB");
        assert_eq!(super::human(2_130_000_000), "2.1 GB");
    }
}
