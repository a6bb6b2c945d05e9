//! The tensor table every format parser produces.

use crate::dtype::Dtype;
use serde::Serialize;

/// One tensor: its name, type, shape and where its bytes lie in the file.
#[derive(Clone, Debug, Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Absolute byte offset of the first element in the file.
    pub start: u64,
    /// Bytes the tensor's elements occupy (elements × dtype size).
    pub len: u64,
    /// Element strides when not C-contiguous (pickle checkpoints only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strides: Option<Vec<u64>>,
}

impl TensorInfo {
    /// Number of elements (product of the shape; 1 for a scalar).
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Absolute end offset (exclusive) of a contiguous tensor's bytes.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}
