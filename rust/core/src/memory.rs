//! Tensors held in memory (a loaded torch state dict): the same table, checks and data pass as a file, without one.
//!
//! The tensors are laid end to end at positional offsets (0, then each tensor's size after the
//! previous one), as the data region of a safetensors file without header would hold them; offsets
//! in findings are these positions. Every tensor's bytes are read where they are, never copied.

use crate::checks;
use crate::classify::{classify, Classification};
use crate::datapass;
use crate::dtype::Dtype;
use crate::report::{FileReport, Finding};
use crate::sniff::Format;
use crate::tensor::TensorInfo;
use serde_json::Value;
use std::collections::BTreeMap;

/// One tensor held in memory: name, dtype, shape and its C-contiguous bytes.
pub struct MemTensor<'a> {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    pub bytes: &'a [u8],
}

/// The tensors judged as a file's would be: table, classification, header-level findings and waste.
pub struct MemTable {
    pub tensors: Vec<TensorInfo>,
    pub class: Classification,
    pub findings: Vec<Finding>,
    pub wasted: BTreeMap<String, u64>,
    /// Bytes of all tensors.
    pub size: u64,
}

/// Builds the table of `tensors` and runs classification and every header-level check; `Err` names
/// the first tensor whose bytes are not its dtype and shape's size, or a repeated name.
pub fn open(tensors: &[MemTensor]) -> Result<MemTable, String> {
    let mut infos = Vec::with_capacity(tensors.len());
    let mut seen = std::collections::HashSet::new();
    let mut pos = 0u64;
    for t in tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(format!("tensor {} appears twice", t.name));
        }
        let elements: u64 = t.shape.iter().product();
        let want = elements
            .checked_mul(t.dtype.bits())
            .map(|b| b.div_ceil(8))
            .ok_or_else(|| format!("tensor {}: shape {:?} is too large", t.name, t.shape))?;
        if want != t.bytes.len() as u64 {
            return Err(format!(
                "tensor {}: {} bytes given, {} {:?} needs {want}",
                t.name,
                t.bytes.len(),
                t.dtype.name(),
                t.shape
            ));
        }
        infos.push(TensorInfo {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            start: pos,
            len: want,
            strides: None,
        });
        pos += want;
    }
    let class = classify(&infos);
    let read_at = |off: u64, len: u64| -> std::io::Result<Vec<u8>> {
        let i = infos.partition_point(|t| t.start <= off).saturating_sub(1);
        let t = infos
            .get(i)
            .filter(|t| off >= t.start && off + len <= t.end())
            .ok_or_else(|| std::io::Error::other("read outside one tensor"))?;
        let from = (off - t.start) as usize;
        Ok(tensors[i].bytes[from..from + len as usize].to_vec())
    };
    let metadata = BTreeMap::new();
    let ctx = checks::Context {
        size: pos,
        format: Format::StateDict,
        header_len: 0,
        tensors: &infos,
        class: &class,
        metadata: &metadata,
        read_at: &read_at,
    };
    let outcome = checks::run(&ctx);
    Ok(MemTable {
        tensors: infos,
        class,
        findings: outcome.findings,
        wasted: outcome.wasted,
        size: pos,
    })
}

/// The report of tensors held in memory: kind, arch, every check, component hashes and value checks
/// (with `data`); whole-file hashes and the file's path, size and time do not apply and stay empty.
pub fn scan(tensors: &[MemTensor], data: bool) -> Result<FileReport, String> {
    let t = open(tensors)?;
    let mut r = FileReport {
        format: Format::StateDict,
        size: t.size,
        ..Default::default()
    };
    let metadata: BTreeMap<String, Value> = BTreeMap::new();
    crate::scan::header_fields(
        &mut r, &t.tensors, &t.class, &metadata, t.findings, t.wasted,
    );
    if data {
        let pieces: Vec<&[u8]> = tensors.iter().map(|m| m.bytes).collect();
        let dp = datapass::run_pieces(&t.tensors, &pieces, &t.class);
        crate::scan::data_fields(&mut r, dp);
    }
    r.findings
        .sort_by(|a, b| b.severity.cmp(&a.severity).then(a.check.cmp(b.check)));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_scan_equals_the_file_scan() {
        // A small VAE-less table is enough: same component hashes and value findings as on disk.
        let a: Vec<u8> = (0..64u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let nan = f32::NAN.to_le_bytes().repeat(4);
        let mem = [
            MemTensor {
                name: "first_stage_model.decoder.conv_in.weight".into(),
                dtype: Dtype::parse("F32").unwrap(),
                shape: vec![8, 8],
                bytes: &a,
            },
            MemTensor {
                name: "x.bad".into(),
                dtype: Dtype::parse("F32").unwrap(),
                shape: vec![4],
                bytes: &nan,
            },
        ];
        let r = scan(&mem, true).unwrap();
        // the same tensors written as a safetensors file
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let header = r#"{"first_stage_model.decoder.conv_in.weight":{"dtype":"F32","shape":[8,8],"data_offsets":[0,256]},"x.bad":{"dtype":"F32","shape":[4],"data_offsets":[256,272]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&a);
        bytes.extend_from_slice(&nan);
        std::fs::write(&p, bytes).unwrap();
        let f = crate::scan_file(&p, &crate::ScanOptions::default());
        assert_eq!((r.kind, r.arch), (f.kind, f.arch));
        let checks = |r: &FileReport| r.findings.iter().map(|x| x.check).collect::<Vec<_>>();
        assert_eq!(checks(&r), checks(&f));
        assert!(checks(&r).contains(&"values.nan-inf"), "{:?}", checks(&r));
        let hashes = |r: &FileReport| {
            r.components
                .iter()
                .map(|(k, c)| (k.clone(), c.blake3.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(hashes(&r), hashes(&f));
        assert!(r.hashes.blake3.is_none());
        let short = [MemTensor {
            name: "t".into(),
            dtype: Dtype::parse("F16").unwrap(),
            shape: vec![3],
            bytes: &a[..4],
        }];
        assert!(open(&short).err().unwrap().contains("needs 6"));
    }
}
