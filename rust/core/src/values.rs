//! Value checks of floating tensors: NaN/±Inf counts (`values.nan-inf`) and constant tensors (`values.constant`).
//!
//! Elements are read as little-endian bit patterns; a value is special when its exponent bits are all
//! ones: NaN when the mantissa is non-zero, Inf when it is zero (IEEE types and `F8_E5M2`); `F8_E4M3`
//! has no Inf and one NaN pattern per sign (all magnitude bits set). The loops are branch-free over fixed
//! blocks so the compiler vectorises them.

use crate::classify::Role;
use crate::dtype::Dtype;
use crate::report::{Finding, Severity};
use crate::tensor::TensorInfo;
use serde_json::json;
use std::collections::BTreeMap;

/// How many tensors a finding lists by name.
const LISTED: usize = 50;
/// NaN and Inf counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub nan: u64,
    pub inf: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.nan += o.nan;
        self.inf += o.inf;
    }
}

/// Bytes per element of the dtypes this check reads, `None` for the others.
pub fn element_size(dtype: Dtype) -> Option<usize> {
    match dtype {
        Dtype::F8_E4M3 | Dtype::F8_E5M2 => Some(1),
        Dtype::F16 | Dtype::BF16 => Some(2),
        Dtype::F32 => Some(4),
        Dtype::F64 => Some(8),
        _ => None,
    }
}

macro_rules! counter {
    ($name:ident, $t:ty, $n:expr) => {
        /// Counts elements whose magnitude bits exceed `nan_above` (NaN) or equal `inf` (Inf).
        #[inline(always)]
        fn $name(bytes: &[u8], nan_above: $t, inf: $t) -> Counts {
            // Per-block counters as wide as the elements keep the loop in one lane width.
            const BLOCK: usize = match $n {
                1 => 255,
                2 => 1 << 15,
                _ => 1 << 16,
            };
            let abs = <$t>::MAX >> 1;
            // The smallest magnitude that is NaN or Inf.
            let special = inf.min(nan_above.saturating_add(1));
            let mut c = Counts::default();
            for block in bytes.chunks(BLOCK * $n) {
                // Nearly every block holds neither: its largest magnitude, one max per element,
                // says so at less than half the work of counting.
                let mut top: $t = 0;
                for e in block.chunks_exact($n) {
                    top = top.max(<$t>::from_le_bytes(e.try_into().unwrap()) & abs);
                }
                if top < special {
                    continue;
                }
                let (mut nan, mut infs): ($t, $t) = (0, 0);
                for e in block.chunks_exact($n) {
                    let x = <$t>::from_le_bytes(e.try_into().unwrap()) & abs;
                    nan += (x > nan_above) as $t;
                    infs += (x == inf) as $t;
                }
                c.nan += nan as u64;
                c.inf += infs as u64;
            }
            c
        }
    };
}

counter!(count_u8, u8, 1);
counter!(count_u16, u16, 2);
counter!(count_u32, u32, 4);
counter!(count_u64, u64, 8);

#[inline(always)]
fn count_any(dtype: Dtype, bytes: &[u8]) -> Counts {
    match dtype {
        // E4M3: NaN is S.1111.111 only and there is no Inf (0xff never equals a magnitude).
        Dtype::F8_E4M3 => count_u8(bytes, 0x7e, 0xff),
        Dtype::F8_E5M2 => count_u8(bytes, 0x7c, 0x7c),
        Dtype::F16 => count_u16(bytes, 0x7c00, 0x7c00),
        Dtype::BF16 => count_u16(bytes, 0x7f80, 0x7f80),
        Dtype::F32 => count_u32(bytes, 0x7f80_0000, 0x7f80_0000),
        Dtype::F64 => count_u64(bytes, 0x7ff0_0000_0000_0000, 0x7ff0_0000_0000_0000),
        _ => Counts::default(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn count_avx2(dtype: Dtype, bytes: &[u8]) -> Counts {
    count_any(dtype, bytes)
}

/// Counts NaN and Inf among the whole elements of `bytes` (little-endian `dtype`); zero for other dtypes.
pub fn count(dtype: Dtype, bytes: &[u8]) -> Counts {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the only requirement of `count_avx2`.
        return unsafe { count_avx2(dtype, bytes) };
    }
    count_any(dtype, bytes)
}

/// Whether the elements seen so far of a tensor are all one value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Same {
    /// No element seen.
    #[default]
    Empty,
    /// Every element has these bits (±0 counted as +0).
    Value(u64),
    /// At least two different values.
    Varied,
}

impl Same {
    /// The state after also seeing the elements `o` describes (order does not matter).
    pub fn merge(self, o: Same) -> Same {
        match (self, o) {
            (Same::Empty, x) | (x, Same::Empty) => x,
            (Same::Value(a), Same::Value(b)) if a == b => Same::Value(a),
            _ => Same::Varied,
        }
    }
}

macro_rules! sameness {
    ($name:ident, $t:ty, $n:expr) => {
        /// Whether every element of `bytes` has the same value (±0 equal), stopping at the first block that varies.
        #[inline(always)]
        fn $name(bytes: &[u8]) -> Same {
            const BLOCK: usize = 4096;
            let abs = <$t>::MAX >> 1;
            let norm = |x: $t| if x & abs == 0 { 0 } else { x };
            let Some(first) = bytes.chunks_exact($n).next() else {
                return Same::Empty;
            };
            let first = norm(<$t>::from_le_bytes(first.try_into().unwrap()));
            // Varied weights nearly always differ at the ends: no need to read the rest.
            if let Some(last) = bytes.chunks_exact($n).next_back() {
                if norm(<$t>::from_le_bytes(last.try_into().unwrap())) != first {
                    return Same::Varied;
                }
            }
            for block in bytes.chunks(BLOCK * $n) {
                let mut diff: $t = 0;
                for e in block.chunks_exact($n) {
                    diff |= norm(<$t>::from_le_bytes(e.try_into().unwrap())) ^ first;
                }
                if diff != 0 {
                    return Same::Varied;
                }
            }
            Same::Value(first as u64)
        }
    };
}

sameness!(same_u8, u8, 1);
sameness!(same_u16, u16, 2);
sameness!(same_u32, u32, 4);
sameness!(same_u64, u64, 8);

/// Whether the whole elements of `bytes` (little-endian `dtype`) are all one value; `Empty` for other dtypes.
pub fn sameness(dtype: Dtype, bytes: &[u8]) -> Same {
    match element_size(dtype) {
        Some(1) => same_u8(bytes),
        Some(2) => same_u16(bytes),
        Some(4) => same_u32(bytes),
        Some(8) => same_u64(bytes),
        _ => Same::Empty,
    }
}

/// Fewest elements a tensor needs for `values.constant` to name it on its own.
pub const CONSTANT_MIN_ELEMENTS: u64 = 1024;

/// The merge block (supermerger's grouping) a UNet key belongs to: `input_blocks.4`, `middle_block`, ...
pub fn merge_block(canonical: &str) -> Option<&str> {
    const NUMBERED: [&str; 7] = [
        "input_blocks.",
        "output_blocks.",
        "down_blocks.",
        "up_blocks.",
        "joint_blocks.",
        "double_blocks.",
        "single_blocks.",
    ];
    for p in NUMBERED {
        if let Some(rest) = canonical.strip_prefix(p) {
            let n = rest.split('.').next().unwrap_or("");
            return Some(&canonical[..p.len() + n.len()]);
        }
    }
    ["middle_block.", "mid_block."]
        .iter()
        .find(|p| canonical.starts_with(*p))
        .map(|p| &p[..p.len() - 1])
}

/// The float value of an element's bits.
fn value_of(dtype: Dtype, bits: u64) -> f64 {
    let n = element_size(dtype).unwrap_or(8);
    crate::checks::decode(dtype, &bits.to_le_bytes()[..n])
        .and_then(|v| v.first().copied())
        .unwrap_or(f64::NAN)
}

/// A JSON value for a float (`nan`, `inf` as strings).
fn json_value(v: f64) -> serde_json::Value {
    if v.is_finite() {
        json!(v)
    } else {
        json!(v.to_string().to_lowercase())
    }
}

/// The `values.constant` finding: whole UNet merge blocks whose every element is one value, and other
/// tensors of at least CONSTANT_MIN_ELEMENTS elements that hold one value (buffers are not looked at).
pub fn constant_finding(tensors: &[TensorInfo], roles: &[Role], same: &[Same]) -> Option<Finding> {
    // block -> (tensors, elements, one value for all?)
    let mut blocks: BTreeMap<(&str, &str), (u64, u64, Option<f64>)> = BTreeMap::new();
    for ((t, r), s) in tensors.iter().zip(roles).zip(same) {
        let Role::Component { name, prefix_len } = r else {
            continue;
        };
        let Some(block) = merge_block(t.name.get(*prefix_len..).unwrap_or("")) else {
            continue;
        };
        let v = match s {
            Same::Value(bits) => Some(value_of(t.dtype, *bits)),
            _ => None,
        };
        let e = blocks.entry((name, block)).or_insert((0, 0, v));
        e.0 += 1;
        e.1 += t.elements();
        if e.2.map(f64::to_bits) != v.map(f64::to_bits) {
            e.2 = None;
        }
    }
    blocks.retain(|_, b| b.2.is_some());
    let in_block = |t: &TensorInfo, r: &Role| match r {
        Role::Component { name, prefix_len } => {
            merge_block(t.name.get(*prefix_len..).unwrap_or(""))
                .is_some_and(|b| blocks.contains_key(&(*name, b)))
        }
        _ => false,
    };
    let lone: Vec<(&TensorInfo, f64)> = tensors
        .iter()
        .zip(roles)
        .zip(same)
        .filter_map(|((t, r), s)| match s {
            Same::Value(bits)
                if *r != Role::Buffer
                    && t.elements() >= CONSTANT_MIN_ELEMENTS
                    && !in_block(t, r) =>
            {
                Some((t, value_of(t.dtype, *bits)))
            }
            _ => None,
        })
        .collect();
    if blocks.is_empty() && lone.is_empty() {
        return None;
    }
    let block_list: Vec<_> = blocks
        .iter()
        .take(LISTED)
        .map(|((c, b), (n, e, v))| {
            json!({"component": c, "block": b, "tensors": n, "elements": e, "value": json_value(v.unwrap_or(f64::NAN))})
        })
        .collect();
    let tensor_list: Vec<_> = lone
        .iter()
        .take(LISTED)
        .map(|(t, v)| json!({"name": t.name, "dtype": t.dtype.name(), "elements": t.elements(), "value": json_value(*v)}))
        .collect();
    let mut parts = vec![];
    if !blocks.is_empty() {
        let names: Vec<String> = blocks
            .iter()
            .take(6)
            .map(|((c, b), (_, _, v))| format!("{c} {b} = {}", v.unwrap_or(f64::NAN)))
            .collect();
        let more = if blocks.len() > 6 { ", …" } else { "" };
        parts.push(format!(
            "{} whole merge block(s) hold a single value ({}{more})",
            blocks.len(),
            names.join(", ")
        ));
    }
    if !lone.is_empty() {
        let names: Vec<String> = lone
            .iter()
            .take(3)
            .map(|(t, v)| format!("{} = {v}", t.name))
            .collect();
        let more = if lone.len() > 3 { ", …" } else { "" };
        parts.push(format!(
            "{} tensor(s) of at least {} elements hold a single value ({}{more})",
            lone.len(),
            crate::checks::grouped(CONSTANT_MIN_ELEMENTS),
            names.join(", ")
        ));
    }
    Some(Finding::new(
        "values.constant",
        Severity::Warning,
        format!(
            "{}: weights that carry nothing (a zeroed block from a broken merge, an all-zero LoRA \
             up-matrix that does nothing)",
            parts.join("; ")
        ),
        json!({
            "blocks": block_list,
            "block_count": blocks.len(),
            "tensors": tensor_list,
            "count": lone.len(),
            "min_elements": CONSTANT_MIN_ELEMENTS,
        }),
    ))
}

/// The `values.nan-inf` finding for per-tensor counts (index-aligned with `tensors`), if any is non-zero.
pub fn finding(tensors: &[TensorInfo], counts: &[Counts]) -> Option<Finding> {
    let bad: Vec<(&TensorInfo, &Counts)> = tensors
        .iter()
        .zip(counts)
        .filter(|(_, c)| c.nan + c.inf > 0)
        .collect();
    if bad.is_empty() {
        return None;
    }
    let mut total = Counts::default();
    for (_, c) in &bad {
        total += **c;
    }
    let listed: Vec<_> = bad
        .iter()
        .take(LISTED)
        .map(|(t, c)| json!({"name": t.name, "dtype": t.dtype.name(), "nan": c.nan, "inf": c.inf}))
        .collect();
    Some(Finding::new(
        "values.nan-inf",
        Severity::Error,
        format!(
            "{} tensor(s) hold NaN or Inf values ({} NaN, {} Inf)",
            bad.len(),
            total.nan,
            total.inf
        ),
        json!({"tensors": listed, "count": bad.len(), "nan": total.nan, "inf": total.inf}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn counts_each_float_kind() {
        let v = [
            1.0f32,
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            -0.0,
            f32::MAX,
            -f32::NAN,
        ];
        assert_eq!(count(Dtype::F32, &f32s(&v)), Counts { nan: 2, inf: 2 });
        let d: Vec<u8> = [f64::NAN, 2.0, f64::NEG_INFINITY, f64::MIN_POSITIVE]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(count(Dtype::F64, &d), Counts { nan: 1, inf: 1 });
        // F16: 0x7c00 inf, 0xfc00 -inf, 0x7e00 nan, 0x7bff max finite
        let h: Vec<u8> = [0x7c00u16, 0xfc00, 0x7e00, 0x7bff, 0x0001]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(count(Dtype::F16, &h), Counts { nan: 1, inf: 2 });
        // BF16 is the top half of an F32
        let b: Vec<u8> = [f32::NAN, f32::INFINITY, 3.5, -f32::INFINITY]
            .iter()
            .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
            .collect();
        assert_eq!(count(Dtype::BF16, &b), Counts { nan: 1, inf: 2 });
        // F16 bits that are NaN in BF16 terms are finite F16 values, and the reverse
        assert_eq!(
            count(Dtype::F16, &0x7f80u16.to_le_bytes()),
            Counts { nan: 1, inf: 0 }
        );
        assert_eq!(
            count(Dtype::BF16, &0x7c00u16.to_le_bytes()),
            Counts::default()
        );
    }

    #[test]
    fn blocks_without_specials_are_skipped_and_counts_stay_exact() {
        // several blocks of each width, all at the largest finite magnitude but for a few specials
        // (NaN or Inf, either sign) in some of them: the whole buffer counts as its elements one by one
        let cases: [(Dtype, usize, u64, &[u64]); 6] = [
            (Dtype::F16, 2, 0xfbff, &[0x7c00, 0xfe01, 0x7c01]),
            (Dtype::BF16, 2, 0x7f7f, &[0x7f80, 0xffc0]),
            (Dtype::F32, 4, 0xff7f_ffff, &[0x7f80_0000, 0xff80_0001]),
            (
                Dtype::F64,
                8,
                0x7fef_ffff_ffff_ffff,
                &[0xfff0_0000_0000_0000, 0x7ff8_0000_0000_0000],
            ),
            (Dtype::F8_E4M3, 1, 0xfe, &[0x7f, 0xff]),
            (Dtype::F8_E5M2, 1, 0x7b, &[0x7c, 0xfd, 0x7f]),
        ];
        for (dtype, width, finite, specials) in cases {
            let n = 600_000 / width;
            let mut elems = vec![finite; n];
            for (k, &sp) in specials.iter().enumerate() {
                elems[(k * 104_729 + 17) % n] = sp;
            }
            let bytes: Vec<u8> = elems
                .iter()
                .flat_map(|e| e.to_le_bytes()[..width].to_vec())
                .collect();
            let mut one_by_one = Counts::default();
            for e in bytes.chunks(width) {
                one_by_one += count(dtype, e);
            }
            assert_eq!(
                one_by_one.nan + one_by_one.inf,
                specials.len() as u64,
                "{dtype:?}"
            );
            assert_eq!(count(dtype, &bytes), one_by_one, "{dtype:?}");
        }
    }

    #[test]
    fn integers_and_clean_data_count_nothing() {
        let nan_bits = f32s(&[f32::NAN; 8]);
        assert_eq!(count(Dtype::I32, &nan_bits), Counts::default());
        assert_eq!(count(Dtype::U8, &nan_bits), Counts::default());
        let clean = f32s(&(0..200_000).map(|i| i as f32 * 0.5).collect::<Vec<_>>());
        assert_eq!(count(Dtype::F32, &clean), Counts::default());
    }

    #[test]
    fn long_runs_and_both_code_paths_agree() {
        // more specials than one block's counters could hold if blocks were too long
        let nan16 = 0x7e00u16.to_le_bytes().repeat(200_001);
        assert_eq!(
            count(Dtype::F16, &nan16),
            Counts {
                nan: 200_001,
                inf: 0
            }
        );
        let inf64 = f64::INFINITY.to_le_bytes().repeat(70_000);
        assert_eq!(
            count(Dtype::F64, &inf64),
            Counts {
                nan: 0,
                inf: 70_000
            }
        );
        let mut x = 12345u32;
        let noise: Vec<u8> = (0..1_000_003)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for d in [Dtype::F16, Dtype::BF16, Dtype::F32, Dtype::F64] {
            let c = count(d, &noise);
            assert_eq!(c, count_any(d, &noise));
            assert!(c.nan > 0, "{d}: random bits include NaN patterns");
        }
    }

    #[test]
    fn a_lone_special_in_clean_blocks_is_counted() {
        // one NaN or Inf (either sign) at the start, middle or end of a long clean run, checked
        // against a per-element reference written from the IEEE rules
        fn reference(bits: &[u64], exp: u64, man: u64) -> Counts {
            let mut c = Counts::default();
            for &b in bits {
                let (e, m) = (b & exp, b & man);
                if e == exp && m != 0 {
                    c.nan += 1;
                } else if e == exp {
                    c.inf += 1;
                }
            }
            c
        }
        let n = 70_001usize;
        let kinds: [(Dtype, usize, u64, u64, u64); 4] = [
            (Dtype::F16, 2, 0x7c00, 0x03ff, 0x3c00),
            (Dtype::BF16, 2, 0x7f80, 0x007f, 0x3f80),
            (Dtype::F32, 4, 0x7f80_0000, 0x007f_ffff, 0x3f80_0000),
            (Dtype::F64, 8, 0x7ff0 << 48, (1 << 52) - 1, 0x3ff0 << 48),
        ];
        for (dtype, es, exp, man, one) in kinds {
            let sign = 1u64 << (8 * es - 1);
            for at in [0, n / 2, n - 1] {
                for special in [exp | 1, exp, exp | man, sign | exp, sign | exp | 3] {
                    let mut bits = vec![one; n];
                    bits[at] = special;
                    let bytes: Vec<u8> = bits
                        .iter()
                        .flat_map(|b| b.to_le_bytes()[..es].to_vec())
                        .collect();
                    assert_eq!(
                        count(dtype, &bytes),
                        reference(&bits, exp, man),
                        "{dtype} {special:#x} at {at}"
                    );
                }
            }
        }
    }

    #[test]
    fn finding_lists_only_bad_tensors() {
        let t = |name: &str| TensorInfo {
            name: name.into(),
            dtype: Dtype::F32,
            shape: vec![1],
            start: 0,
            len: 4,
            strides: None,
        };
        let tensors = [t("a"), t("b")];
        assert!(finding(&tensors, &[Counts::default(); 2]).is_none());
        let f = finding(&tensors, &[Counts::default(), Counts { nan: 3, inf: 1 }]).unwrap();
        assert_eq!(f.check, "values.nan-inf");
        assert_eq!(f.details["count"], 1);
        assert_eq!(f.details["tensors"][0]["name"], "b");
        assert_eq!(f.details["nan"], 3);
    }

    #[test]
    fn fp8_nan_rules() {
        // E4M3: 0x7f / 0xff NaN, 0x7e = 448 and 0x78 finite (no Inf); E5M2: 0x7c Inf, 0x7d NaN, 0x7b finite
        let e4 = [0x7fu8, 0xff, 0x7e, 0x78, 0x00];
        assert_eq!(count(Dtype::F8_E4M3, &e4), Counts { nan: 2, inf: 0 });
        let e5 = [0x7cu8, 0xfc, 0x7d, 0x7b, 0xff];
        assert_eq!(count(Dtype::F8_E5M2, &e5), Counts { nan: 2, inf: 2 });
        // more NaN than a u8 block counter holds
        assert_eq!(
            count(Dtype::F8_E4M3, &[0x7f; 1000]),
            Counts { nan: 1000, inf: 0 }
        );
        assert_eq!(element_size(Dtype::F8_E5M2), Some(1));
    }

    #[test]
    fn sameness_of_elements() {
        let zeros = f32s(&[0.0, -0.0, 0.0]);
        assert_eq!(sameness(Dtype::F32, &zeros), Same::Value(0));
        let ones = f32s(&[1.0; 5000]);
        assert_eq!(
            sameness(Dtype::F32, &ones),
            Same::Value(1.0f32.to_bits() as u64)
        );
        let mut v = vec![2.0f32; 10_000];
        v[9_999] = 2.5;
        assert_eq!(sameness(Dtype::F32, &f32s(&v)), Same::Varied);
        assert_eq!(sameness(Dtype::I64, &[0; 16]), Same::Empty);
        assert_eq!(sameness(Dtype::F16, &[]), Same::Empty);
        let a = Same::Value(7);
        assert_eq!(a.merge(Same::Empty), a);
        assert_eq!(Same::Empty.merge(a), a);
        assert_eq!(a.merge(Same::Value(8)), Same::Varied);
        assert_eq!(Same::Varied.merge(a), Same::Varied);
    }

    #[test]
    fn merge_blocks() {
        assert_eq!(
            merge_block("input_blocks.4.1.proj_in.weight"),
            Some("input_blocks.4")
        );
        assert_eq!(
            merge_block("output_blocks.11.0.skip_connection.bias"),
            Some("output_blocks.11")
        );
        assert_eq!(
            merge_block("middle_block.1.norm.weight"),
            Some("middle_block")
        );
        assert_eq!(
            merge_block("mid_block.resnets.0.conv1.weight"),
            Some("mid_block")
        );
        assert_eq!(merge_block("time_embed.0.weight"), None);
    }

    fn t(name: &str, n: u64) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dtype: Dtype::F32,
            shape: vec![n],
            start: 0,
            len: n * 4,
            strides: None,
        }
    }

    fn unet() -> Role {
        Role::Component {
            name: "unet",
            prefix_len: 22,
        }
    }

    #[test]
    fn constant_blocks_and_tensors() {
        let p = "model.diffusion_model.";
        let tensors = [
            t(&format!("{p}input_blocks.4.0.a"), 10),
            t(&format!("{p}input_blocks.4.1.b"), 2000),
            t(&format!("{p}input_blocks.5.0.a"), 10),
            t(&format!("{p}input_blocks.5.1.b"), 2000),
            t("lora_up.weight", 5120),
            t("small", 100),
            t("betas", 5000),
        ];
        let roles = [
            unet(),
            unet(),
            unet(),
            unet(),
            Role::Junk,
            Role::Junk,
            Role::Buffer,
        ];
        let zero = Same::Value(0);
        let one = Same::Value(1.0f32.to_bits() as u64);
        // block 4 all zero; block 5 has one varied tensor, its other tensor is too small alone
        let same = [zero, zero, zero, Same::Varied, zero, zero, zero];
        let f = constant_finding(&tensors, &roles, &same).unwrap();
        assert_eq!(f.check, "values.constant");
        assert_eq!(f.details["block_count"], 1);
        assert_eq!(f.details["blocks"][0]["block"], "input_blocks.4");
        assert_eq!(f.details["blocks"][0]["elements"], 2010);
        assert_eq!(f.details["count"], 1);
        assert_eq!(f.details["tensors"][0]["name"], "lora_up.weight");
        // a block of two different constants is not one constant block; the big tensor is listed alone
        let same2 = [
            zero,
            one,
            Same::Varied,
            Same::Varied,
            Same::Varied,
            zero,
            zero,
        ];
        let f2 = constant_finding(&tensors, &roles, &same2).unwrap();
        assert_eq!(f2.details["block_count"], 0);
        assert_eq!(
            f2.details["tensors"][0]["name"],
            format!("{p}input_blocks.4.1.b")
        );
        assert_eq!(f2.details["tensors"][0]["value"], 1.0);
        // nothing constant: silent
        assert!(constant_finding(&tensors, &roles, &[Same::Varied; 7]).is_none());
    }
}
