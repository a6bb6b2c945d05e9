//! `clip.position-ids`: a CLIP text encoder's `position_ids` must be int64 `0..n-1`.

use super::{Context, Outcome};
use crate::classify::Role;
use crate::dtype::Dtype;
use crate::report::{Finding, Severity};
use crate::tensor::TensorInfo;
use serde_json::{json, Value};

/// Largest `position_ids` tensor whose values are read (bytes); CLIP's is 77 × 8.
const MAX_READ: u64 = 1 << 16;

/// Decodes little-endian tensor bytes to f64 (exact for every integer a position id can be).
pub fn decode(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f64>> {
    fn each<const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        b.chunks_exact(N)
            .map(|c| f(c.try_into().unwrap()))
            .collect()
    }
    Some(match dtype {
        Dtype::I64 => each(bytes, |c| i64::from_le_bytes(c) as f64),
        Dtype::U64 => each(bytes, |c| u64::from_le_bytes(c) as f64),
        Dtype::I32 => each(bytes, |c| i32::from_le_bytes(c) as f64),
        Dtype::U32 => each(bytes, |c| u32::from_le_bytes(c) as f64),
        Dtype::I16 => each(bytes, |c| i16::from_le_bytes(c) as f64),
        Dtype::U16 => each(bytes, |c| u16::from_le_bytes(c) as f64),
        Dtype::I8 => each(bytes, |c: [u8; 1]| c[0] as i8 as f64),
        Dtype::U8 => each(bytes, |c: [u8; 1]| c[0] as f64),
        Dtype::F64 => each(bytes, f64::from_le_bytes),
        Dtype::F32 => each(bytes, |c| f32::from_le_bytes(c) as f64),
        Dtype::BF16 => each(bytes, |c| {
            f32::from_bits((u16::from_le_bytes(c) as u32) << 16) as f64
        }),
        Dtype::F16 => each(bytes, |c| f16_to_f64(u16::from_le_bytes(c))),
        _ => return None,
    })
}

/// IEEE half precision to f64.
fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// One position whose stored value is not its index.
#[derive(Debug, Clone, PartialEq)]
pub struct Off {
    pub index: u64,
    pub value: f64,
    /// What a loader reads after casting to int64 (truncation); `None` for NaN / ±Inf.
    pub as_int64: Option<i64>,
}

/// What the values of a `position_ids` tensor say.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Analysis {
    /// Every index whose value is not exactly its index.
    pub offset: Vec<Off>,
    /// Every index whose value, truncated to int64, is not its index (positions the model misreads).
    pub broken: Vec<Off>,
    /// Largest |value - index| (∞ when a value is NaN or ±Inf).
    pub max_deviation: f64,
}

/// Compares values with their index; `row` is the last dimension (a `[1, 77]` tensor repeats per row).
pub fn analyze(values: &[f64], row: u64) -> Analysis {
    let row = row.max(1);
    let mut a = Analysis::default();
    for (i, &v) in values.iter().enumerate() {
        let index = i as u64 % row;
        let want = index as f64;
        if v == want {
            continue;
        }
        let as_int64 = v.is_finite().then(|| v.trunc() as i64);
        let off = Off {
            index,
            value: v,
            as_int64,
        };
        let dev = if v.is_finite() {
            (v - want).abs()
        } else {
            f64::INFINITY
        };
        a.max_deviation = a.max_deviation.max(dev);
        if as_int64 != Some(index as i64) {
            a.broken.push(off.clone());
        }
        a.offset.push(off);
    }
    a
}

/// Short list of positions for a message: `75, 76` or `0, 1, 2, … (77 in all)`.
fn positions(offs: &[Off]) -> String {
    let shown: Vec<String> = offs.iter().take(8).map(|o| o.index.to_string()).collect();
    if offs.len() > 8 {
        format!("{}, … ({} in all)", shown.join(", "), offs.len())
    } else {
        shown.join(", ")
    }
}

fn off_json(o: &Off) -> Value {
    json!({"index": o.index, "value": o.value, "as_int64": o.as_int64})
}

/// The component a `position_ids` tensor serves: the role of a tensor sharing its prefix.
fn encoder_of<'a>(ctx: &'a Context, t: &TensorInfo) -> &'a str {
    let prefix = t.name.trim_end_matches("embeddings.position_ids");
    ctx.with_roles()
        .find_map(|(o, r)| match r {
            Role::Component { name, .. } if o.name.starts_with(prefix) => Some(*name),
            _ => None,
        })
        .unwrap_or("text encoder")
}

/// True for the `position_ids` buffer of a CLIP text encoder (the tensor `fix --clip` rewrites).
pub fn is_text_position_ids(name: &str) -> bool {
    !name.contains("vision_model.")
        && (name == "embeddings.position_ids" || name.ends_with(".embeddings.position_ids"))
}

/// Flags every CLIP `position_ids` that is not int64 or not `0..n-1`.
pub fn check(ctx: &Context, out: &mut Outcome) {
    for t in ctx.tensors {
        if is_text_position_ids(&t.name) {
            if let Some(f) = finding(ctx, t) {
                out.findings.push(f);
            }
        }
    }
}

fn finding(ctx: &Context, t: &TensorInfo) -> Option<Finding> {
    let encoder = encoder_of(ctx, t);
    let row = t.shape.last().copied().unwrap_or(1);
    let values = if t.strides.is_none() && t.len <= MAX_READ {
        (ctx.read_at)(t.start, t.len)
            .ok()
            .and_then(|b| decode(t.dtype, &b))
    } else {
        None
    };
    let analysis = values.as_ref().map(|v| analyze(v, row));
    let is_i64 = t.dtype == Dtype::I64;
    if is_i64 && analysis.as_ref().is_some_and(|a| a.offset.is_empty()) {
        return None;
    }
    if is_i64 && analysis.is_none() {
        return None; // int64 but unreadable here (strided pickle storage): nothing to say
    }
    let stored = if is_i64 {
        String::new()
    } else {
        format!(", stored as {} instead of int64", t.dtype)
    };
    let message = match &analysis {
        Some(a) if !a.broken.is_empty() => format!(
            "{encoder} position_ids are corrupt{stored}: the model misreads token position(s) {} \
             (read as {}; max deviation {}); prompts lose or shift tokens there. \
             `fastscan fix --clip` restores 0..{}",
            positions(&a.broken),
            a.broken
                .iter()
                .take(8)
                .map(|o| o.as_int64.map_or("invalid".into(), |v| v.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
            a.max_deviation,
            row.saturating_sub(1)
        ),
        Some(a) if !a.offset.is_empty() => format!(
            "{encoder} position_ids drift from their index at position(s) {}{stored} (max deviation {}); \
             they still truncate to the right positions, so no token is misread yet, but rounding loaders \
             and further merges break them. `fastscan fix --clip` restores 0..{}",
            positions(&a.offset),
            a.max_deviation,
            row.saturating_sub(1)
        ),
        Some(_) => format!(
            "{encoder} position_ids are stored as {} instead of int64; all {} values are exact, so no \
             token position is misread, but loaders expect int64 indices. `fastscan fix --clip` stores \
             them as int64",
            t.dtype,
            t.elements()
        ),
        None => format!(
            "{encoder} position_ids are stored as {} instead of int64; their values were not read, \
             `fastscan fix --clip` restores 0..{} as int64",
            t.dtype,
            row.saturating_sub(1)
        ),
    };
    let (offset, broken, max_dev) = match &analysis {
        Some(a) => (
            Value::from(a.offset.iter().map(off_json).collect::<Vec<_>>()),
            Value::from(a.broken.iter().map(off_json).collect::<Vec<_>>()),
            if a.max_deviation.is_finite() {
                json!(a.max_deviation)
            } else {
                json!("inf")
            },
        ),
        None => (Value::Null, Value::Null, Value::Null),
    };
    Some(Finding::new(
        "clip.position-ids",
        Severity::Error,
        message,
        json!({
            "tensor": t.name,
            "encoder": encoder,
            "dtype": t.dtype.name(),
            "shape": t.shape,
            "int64": is_i64,
            "offset": offset,
            "broken": broken,
            "max_deviation": max_dev,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arange(n: usize) -> Vec<f64> {
        (0..n).map(|i| i as f64).collect()
    }

    #[test]
    fn exact_values_are_clean() {
        let a = analyze(&arange(77), 77);
        assert!(a.offset.is_empty() && a.broken.is_empty());
        assert_eq!(a.max_deviation, 0.0);
    }

    #[test]
    fn drift_below_the_next_integer_breaks_by_truncation() {
        let mut v = arange(77);
        v[76] = 75.9975; // a classic merged-checkpoint value
        v[10] = 10.0001; // drifts up: truncates to 10, still right
        let a = analyze(&v, 77);
        assert_eq!(a.offset.len(), 2);
        assert_eq!(
            a.broken,
            vec![Off {
                index: 76,
                value: 75.9975,
                as_int64: Some(75)
            }]
        );
        assert!((a.max_deviation - 0.0025).abs() < 1e-9);
    }

    #[test]
    fn rows_repeat_and_non_finite_is_broken() {
        let mut v = arange(4);
        v.extend(arange(4));
        v[5] = f64::NAN;
        let a = analyze(&v, 4);
        assert_eq!(a.broken.len(), 1);
        assert_eq!(a.broken[0].index, 1);
        assert_eq!(a.broken[0].as_int64, None);
        assert!(a.max_deviation.is_infinite());
    }

    #[test]
    fn decodes_every_position_dtype() {
        let want = [0.0, 1.0, 76.0];
        let le = |f: &dyn Fn(f64) -> Vec<u8>| want.iter().flat_map(|&x| f(x)).collect::<Vec<u8>>();
        assert_eq!(
            decode(Dtype::I64, &le(&|x| (x as i64).to_le_bytes().to_vec())).unwrap(),
            want
        );
        assert_eq!(
            decode(Dtype::I32, &le(&|x| (x as i32).to_le_bytes().to_vec())).unwrap(),
            want
        );
        assert_eq!(
            decode(Dtype::F32, &le(&|x| (x as f32).to_le_bytes().to_vec())).unwrap(),
            want
        );
        assert_eq!(
            decode(Dtype::F64, &le(&|x| x.to_le_bytes().to_vec())).unwrap(),
            want
        );
        // F16: 0 = 0x0000, 1 = 0x3c00, 76 = 0x54c0; BF16: 76 = 0x4298.
        assert_eq!(
            decode(Dtype::F16, &[0, 0, 0x00, 0x3c, 0xc0, 0x54]).unwrap(),
            want
        );
        assert_eq!(
            decode(Dtype::BF16, &[0, 0, 0x80, 0x3f, 0x98, 0x42]).unwrap(),
            want
        );
        assert!(decode(Dtype::F8_E4M3, &[0]).is_none());
        assert_eq!(f16_to_f64(0x7c00), f64::INFINITY);
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24));
    }
}
