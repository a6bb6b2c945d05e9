//! Legacy PyTorch pickle checkpoints, read without executing them (SPEC §2, §4). Filled by the pickle issue.

use crate::report::Finding;
use crate::sniff::Format;
use crate::tensor::TensorInfo;

/// What reading a pickle-based file yields.
#[derive(Default)]
pub struct PickleScan {
    pub tensors: Vec<TensorInfo>,
    pub findings: Vec<Finding>,
}

/// True when `head` plausibly starts a protocol 0/1 pickle.
pub fn looks_like_protocol0(_head: &[u8]) -> bool {
    false
}

/// Scans a pickle-based file's bytes; `Err` is a reason the file cannot be read at all.
pub fn scan(_bytes: &[u8], _format: Format) -> Result<PickleScan, String> {
    Ok(PickleScan::default())
}
