//! The one pass over a file's bytes that feeds every hasher and value check (SPEC §5).

use crate::classify::Classification;
use crate::report::{Finding, Hashes};
use crate::tensor::TensorInfo;
use std::collections::BTreeMap;

/// Which hashes the pass computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashMode {
    /// No data pass at all: header-level checks only.
    None,
    /// Component hashes and value checks, no whole-file hashes.
    Components,
    /// Whole-file hashes as well.
    Full,
}

/// What the data pass produced.
#[derive(Default)]
pub struct DataPass {
    pub hashes: Hashes,
    /// component name -> canonical component hash v1
    pub components: BTreeMap<String, String>,
    pub findings: Vec<Finding>,
}

/// Reads the mapped file once and feeds hashers and value checks.
pub fn run(
    data: &[u8],
    _tensors: &[TensorInfo],
    _class: &Classification,
    mode: HashMode,
    _sha256: bool,
) -> DataPass {
    let mut out = DataPass::default();
    if mode == HashMode::Full {
        let mut h = blake3::Hasher::new();
        h.update_rayon(data);
        out.hashes.blake3 = Some(h.finalize().to_hex().to_string());
    }
    out
}
