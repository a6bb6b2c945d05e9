//! NaN and ±Inf counting in floating tensors (SPEC §4 `values.nan-inf`).
//!
//! Elements are read as little-endian bit patterns; a value is special when its exponent bits are all
//! ones: NaN when the mantissa is non-zero, Inf when it is zero. The loops are branch-free over fixed
//! blocks so the compiler vectorises them.

use crate::dtype::Dtype;
use crate::report::{Finding, Severity};
use crate::tensor::TensorInfo;
use serde_json::json;

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
        Dtype::F16 | Dtype::BF16 => Some(2),
        Dtype::F32 => Some(4),
        Dtype::F64 => Some(8),
        _ => None,
    }
}

macro_rules! counter {
    ($name:ident, $t:ty, $n:expr) => {
        /// Counts elements whose magnitude bits exceed (NaN) or equal (Inf) `inf`.
        #[inline(always)]
        fn $name(bytes: &[u8], inf: $t) -> Counts {
            // Per-block counters as wide as the elements keep the loop in one lane width.
            const BLOCK: usize = if $n == 2 { 1 << 15 } else { 1 << 16 };
            let abs = <$t>::MAX >> 1;
            let mut c = Counts::default();
            for block in bytes.chunks(BLOCK * $n) {
                let (mut nan, mut infs): ($t, $t) = (0, 0);
                for e in block.chunks_exact($n) {
                    let x = <$t>::from_le_bytes(e.try_into().unwrap()) & abs;
                    nan += (x > inf) as $t;
                    infs += (x == inf) as $t;
                }
                c.nan += nan as u64;
                c.inf += infs as u64;
            }
            c
        }
    };
}

counter!(count_u16, u16, 2);
counter!(count_u32, u32, 4);
counter!(count_u64, u64, 8);

#[inline(always)]
fn count_any(dtype: Dtype, bytes: &[u8]) -> Counts {
    match dtype {
        Dtype::F16 => count_u16(bytes, 0x7c00),
        Dtype::BF16 => count_u16(bytes, 0x7f80),
        Dtype::F32 => count_u32(bytes, 0x7f80_0000),
        Dtype::F64 => count_u64(bytes, 0x7ff0_0000_0000_0000),
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
}
