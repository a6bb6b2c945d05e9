//! fastscan-core: find what is wrong with Stable Diffusion model files.
//!
//! Formats are recognised by their bytes ([`sniff`]), parsed into a tensor table ([`safetensors`],
//! [`pickle`]), classified by component ([`classify`]), checked ([`checks`]) and hashed in one pass
//! over the data ([`datapass`]). [`scan::scan_file`] runs all of it on one file; [`scan_files`] on many.

pub mod cache;
pub mod cast;
pub mod checks;
pub mod classify;
pub mod component_hash;
pub mod datapass;
pub mod dtype;
pub mod hashes;
pub mod pickle;
pub mod report;
pub mod safetensors;
pub mod scan;
pub mod sniff;
mod standalone;
pub mod table;
pub mod tensor;
pub mod values;
pub mod walk;
pub mod writer;

use rayon::prelude::*;
use std::path::PathBuf;

pub use datapass::HashMode;
pub use report::FileReport;
pub use scan::{scan_file, ScanOptions};
pub use table::{open_table, OpenError, Table};

/// Scans files in parallel (through `cache` when given), calling `on_done` with each report as JSON
/// as it finishes (in completion order).
pub fn scan_files<F>(
    paths: &[PathBuf],
    opts: &ScanOptions,
    cache: Option<&cache::Cache>,
    on_done: F,
) where
    F: Fn(serde_json::Value) + Sync,
{
    paths
        .par_iter()
        .with_max_len(1)
        .for_each(|p| on_done(cache::scan_cached(p, opts, cache)));
}
