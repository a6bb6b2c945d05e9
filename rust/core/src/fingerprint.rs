//! Lineage fingerprints, version 1: a fixed, layout-determined sample of every weight tensor (docs/fingerprint.md).
//!
//! Each floating tensor of a weight component contributes `k = min(n, max(64, ceil(n / 16384)))`
//! of its `n` elements (C order). Which ones depends only on the tensor's canonical name and `n`:
//! one element drawn from each of `k` equal strata by SplitMix64 seeded with BLAKE3 of the name.
//! Values are decoded to `f32` (exact for F16, BF16 and F32), so the fingerprint does not depend on
//! dtype, format or key order, and sampling is linear: the fingerprint of `a·A + b·B` is
//! `a·fp(A) + b·fp(B)` up to the rounding of the stored merge.

use crate::classify::{Classification, Role};
use crate::dtype::Dtype;
use crate::tensor::TensorInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The contract name written into every fingerprint.
pub const VERSION: &str = "fastscan.fingerprint/1";
/// One sampled element per this many elements of a large tensor.
pub const RATE: u64 = 16384;
/// Elements sampled at least from every tensor (all of them when it has fewer).
pub const MIN_SAMPLES: u64 = 64;

/// One sampled tensor of a component: its canonical name, element count and merge block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Entry {
    pub name: String,
    pub n: u64,
    pub block: String,
}

/// A component's fingerprint: tensors sorted by canonical name, their samples concatenated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ComponentPrint {
    pub tensors: Vec<Entry>,
    /// Little-endian `f32` samples of every tensor in `tensors` order, base64 (RFC 4648, padded).
    pub samples: String,
}

/// A file's fingerprint: component name -> component fingerprint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Fingerprint {
    pub version: String,
    pub components: BTreeMap<String, ComponentPrint>,
}

/// How many elements of an `n`-element tensor are sampled.
pub fn sample_count(n: u64) -> u64 {
    n.min(MIN_SAMPLES.max(n.div_ceil(RATE)))
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sampled element indices (C order, increasing) of a tensor named `name` with `n` elements.
pub fn sample_indices(name: &str, n: u64) -> Vec<u64> {
    let k = sample_count(n);
    if k == n {
        return (0..n).collect();
    }
    let h = blake3::hash(name.as_bytes());
    let mut state = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or_default());
    (0..k)
        .map(|j| {
            let lo = (j as u128 * n as u128 / k as u128) as u64;
            let hi = ((j + 1) as u128 * n as u128 / k as u128) as u64;
            lo + splitmix64(&mut state) % (hi - lo)
        })
        .collect()
}

/// The merge block of a tensor (`IN00`.., `M00`, `OUT00`.., `BASE`), as merge-block-weight tools name them.
pub fn block_of(component: &str, canonical: &str) -> String {
    if component != "unet" {
        return "BASE".into();
    }
    let numbered = |prefix: &str, tag: &str| {
        let rest = canonical.strip_prefix(prefix)?;
        let n: u32 = rest.split('.').next()?.parse().ok()?;
        Some(format!("{tag}{n:02}"))
    };
    if canonical.starts_with("middle_block.") {
        return "M00".into();
    }
    numbered("input_blocks.", "IN")
        .or_else(|| numbered("output_blocks.", "OUT"))
        .unwrap_or_else(|| "BASE".into())
}

/// One element's value as `f32`; `None` for dtypes fingerprints do not sample.
pub fn decode(dtype: Dtype, b: &[u8]) -> Option<f32> {
    Some(match dtype {
        Dtype::F16 => f16_to_f32(u16::from_le_bytes([b[0], b[1]])),
        Dtype::BF16 => f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16),
        Dtype::F32 => f32::from_le_bytes(b[..4].try_into().ok()?),
        Dtype::F64 => f64::from_le_bytes(b[..8].try_into().ok()?) as f32,
        _ => return None,
    })
}

/// IEEE half to single precision (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = (h >> 10) & 0x1f;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if man == 0 => sign,
        0 => {
            // subnormal: value = man * 2^-24
            let v = man as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        0x1f => sign | 0x7f80_0000 | (man << 13),
        e => sign | ((e as u32 + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// Element offset of C-order element `idx` in a tensor of `shape` stored with element `strides`.
pub fn strided_offset(shape: &[u64], strides: &[u64], idx: u64) -> u64 {
    let (mut rest, mut off) = (idx, 0);
    for (d, st) in shape.iter().zip(strides).rev() {
        off += (rest % d) * st;
        rest /= d;
    }
    off
}

/// Element size of the dtypes fingerprints sample.
fn element_size(dtype: Dtype) -> Option<u64> {
    crate::values::element_size(dtype).map(|s| s as u64)
}

/// Collects one tensor's samples as its bytes stream by.
struct Sampler {
    indices: Vec<u64>,
    values: Vec<f32>,
}

/// The samplers of one file's tensors, filled during the data pass.
pub struct Plan {
    /// Per tensor: (component, canonical name) when it is sampled.
    members: Vec<Option<(&'static str, String)>>,
    samplers: Vec<Option<Sampler>>,
}

impl Plan {
    /// Picks the sampled elements of every floating tensor of a weight component.
    pub fn new(tensors: &[TensorInfo], class: &Classification) -> Plan {
        let mut members = Vec::with_capacity(tensors.len());
        let mut samplers = Vec::with_capacity(tensors.len());
        for (t, role) in tensors.iter().zip(&class.roles) {
            match role {
                Role::Component { name, prefix_len } if element_size(t.dtype).is_some() => {
                    let canonical = t.name.get(*prefix_len..).unwrap_or(&t.name).to_string();
                    let indices = sample_indices(&canonical, t.elements());
                    samplers.push(Some(Sampler {
                        values: Vec::with_capacity(indices.len()),
                        indices,
                    }));
                    members.push(Some((*name, canonical)));
                }
                _ => {
                    samplers.push(None);
                    members.push(None);
                }
            }
        }
        Plan { members, samplers }
    }

    /// True when tensor `i` is sampled (the pass must read it).
    pub fn wants(&self, i: usize) -> bool {
        self.samplers[i].is_some()
    }

    /// Takes the samples of contiguous tensor `i` that end inside `chunk` (chunks come in order).
    pub fn contiguous(&mut self, i: usize, t: &TensorInfo, chunk: &crate::datapass::Chunk) {
        let (Some(s), Some(es)) = (self.samplers[i].as_mut(), element_size(t.dtype)) else {
            return;
        };
        while let Some(&idx) = s.indices.get(s.values.len()) {
            let at = t.start + idx * es;
            match chunk.get(at, es).and_then(|b| decode(t.dtype, b)) {
                Some(v) => s.values.push(v),
                None => break,
            }
        }
    }

    /// Takes every sample of a non-contiguous tensor `i` (element strides `strides`, all bytes present).
    pub fn strided(&mut self, i: usize, data: &[u8], t: &TensorInfo, strides: &[u64]) {
        self.take(i, data, t, |idx| strided_offset(&t.shape, strides, idx));
    }

    /// Takes the pending samples of tensor `i` (C-order element `idx` stored `offset(idx)` elements
    /// in) from `data`, which holds the whole tensor.
    fn take(&mut self, i: usize, data: &[u8], t: &TensorInfo, offset: impl Fn(u64) -> u64) {
        let (Some(s), Some(es)) = (self.samplers[i].as_mut(), element_size(t.dtype)) else {
            return;
        };
        while let Some(&idx) = s.indices.get(s.values.len()) {
            let at = (t.start + offset(idx) * es) as usize;
            match data
                .get(at..at + es as usize)
                .and_then(|b| decode(t.dtype, b))
            {
                Some(v) => s.values.push(v),
                None => break,
            }
        }
    }

    /// The fingerprint of every component whose sampled tensors were all read in full.
    pub fn finish(self, tensors: &[TensorInfo]) -> Fingerprint {
        let mut by_comp: BTreeMap<&'static str, Vec<(String, usize)>> = BTreeMap::new();
        let mut incomplete: Vec<&'static str> = Vec::new();
        for (i, m) in self.members.into_iter().enumerate() {
            let (Some((comp, canonical)), Some(s)) = (m, self.samplers[i].as_ref()) else {
                continue;
            };
            if s.values.len() != s.indices.len() {
                incomplete.push(comp);
            }
            by_comp.entry(comp).or_default().push((canonical, i));
        }
        let mut components = BTreeMap::new();
        for (comp, mut list) in by_comp {
            if incomplete.contains(&comp) {
                continue;
            }
            list.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let mut bytes = Vec::new();
            let mut entries = Vec::with_capacity(list.len());
            for (name, i) in list {
                let s = self.samplers[i].as_ref().expect("sampled");
                for v in &s.values {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                entries.push(Entry {
                    block: block_of(comp, &name),
                    n: tensors[i].elements(),
                    name,
                });
            }
            components.insert(
                comp.to_string(),
                ComponentPrint {
                    tensors: entries,
                    samples: base64_encode(&bytes),
                },
            );
        }
        Fingerprint {
            version: VERSION.into(),
            components,
        }
    }
}

/// A decoded component fingerprint: per tensor (name, block, samples).
pub struct Decoded {
    pub tensors: Vec<(String, u64, String, Vec<f64>)>,
}

impl ComponentPrint {
    /// Decodes the samples; `Err` when they do not match the tensor list.
    pub fn decode(&self) -> Result<Decoded, String> {
        let bytes = base64_decode(&self.samples).ok_or("fingerprint samples are not base64")?;
        let vals: Vec<f64> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect();
        let mut at = 0usize;
        let mut tensors = Vec::with_capacity(self.tensors.len());
        for e in &self.tensors {
            let k = sample_count(e.n) as usize;
            let part = vals
                .get(at..at + k)
                .ok_or("fingerprint holds fewer samples than its tensors need")?;
            tensors.push((e.name.clone(), e.n, e.block.clone(), part.to_vec()));
            at += k;
        }
        if at != vals.len() {
            return Err("fingerprint holds more samples than its tensors need".into());
        }
        Ok(Decoded { tensors })
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard padded base64 (RFC 4648 §4).
pub fn base64_encode(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= c.len() {
                out.push(B64[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard padded base64; `None` on any other input.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| B64.iter().position(|&x| x == c).map(|p| p as u32);
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for q in s.chunks(4) {
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = n << 6 | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_as_merge_tools_name_them() {
        assert_eq!(block_of("unet", "input_blocks.0.0.weight"), "IN00");
        assert_eq!(block_of("unet", "input_blocks.11.1.proj.bias"), "IN11");
        assert_eq!(block_of("unet", "middle_block.1.norm.weight"), "M00");
        assert_eq!(block_of("unet", "output_blocks.8.0.skip.weight"), "OUT08");
        assert_eq!(block_of("unet", "time_embed.0.weight"), "BASE");
        assert_eq!(block_of("unet", "out.2.weight"), "BASE");
        assert_eq!(block_of("vae", "input_blocks.0.weight"), "BASE");
    }

    #[test]
    fn sample_counts_and_strata() {
        assert_eq!(sample_count(10), 10);
        assert_eq!(sample_count(64), 64);
        assert_eq!(sample_count(65), 64);
        assert_eq!(sample_count(16384 * 100), 100);
        assert_eq!(sample_count(16384 * 100 + 1), 101);
        let n = 1_000_003;
        let idx = sample_indices("x.weight", n);
        assert_eq!(idx.len(), 64);
        for (j, &i) in idx.iter().enumerate() {
            assert!(i >= j as u64 * n / 64 && i < (j as u64 + 1) * n / 64);
        }
        assert_ne!(idx, sample_indices("y.weight", n));
        assert_eq!(sample_indices("s", 5), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn f16_decoding_is_exact() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    }

    #[test]
    fn base64_round_trip() {
        for n in 0..10 {
            let b: Vec<u8> = (0..n).map(|i| (i * 37 + 5) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&b)).unwrap(), b);
        }
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
        assert_eq!(base64_encode(b"fooba"), "Zm9vYmE=");
        assert!(base64_decode("Zm9").is_none());
        assert!(base64_decode("Zm9*").is_none());
    }
}
