//! `clip.position-ids`: a CLIP text encoder's `position_ids`, judged by what each loader reads from them.

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
        Dtype::F8_E4M3 => each(bytes, |c: [u8; 1]| f8_e4m3_to_f64(c[0])),
        Dtype::F8_E5M2 => each(bytes, |c: [u8; 1]| f8_e5m2_to_f64(c[0])),
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

/// IEEE fp8 with a 4-bit exponent (`F8_E4M3`, the "fn" variant: NaN at S.1111.111, no Inf) to f64.
fn f8_e4m3_to_f64(b: u8) -> f64 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b >> 3) & 0xf) as i32;
    let frac = (b & 0x7) as f64;
    sign * match (exp, b & 0x7f) {
        (_, 0x7f) => f64::NAN,
        (0, _) => frac / 8.0 * 2f64.powi(-6),
        (e, _) => (1.0 + frac / 8.0) * 2f64.powi(e - 7),
    }
}

/// IEEE fp8 with a 5-bit exponent (`F8_E5M2`: the top byte of an F16, with Inf and NaN) to f64.
fn f8_e5m2_to_f64(b: u8) -> f64 {
    f16_to_f64((b as u16) << 8)
}

/// The value `v` becomes when stored as IEEE half precision (round to nearest even).
pub fn through_f16(v: f64) -> f64 {
    if !v.is_finite() || v == 0.0 {
        return v;
    }
    let a = v.abs();
    let quantum = if a < 2f64.powi(-14) {
        2f64.powi(-24)
    } else {
        2f64.powi(a.log2().floor() as i32 - 10)
    };
    let r = (a / quantum).round_ties_even() * quantum;
    let r = if r > 65504.0 { f64::INFINITY } else { r };
    r.copysign(v)
}

/// One position whose stored value is not its index.
#[derive(Debug, Clone, PartialEq)]
pub struct Off {
    pub index: u64,
    pub value: f64,
    /// What a loader reads after casting to int64 (truncation); `None` for NaN / ±Inf.
    pub as_int64: Option<i64>,
    /// What a loader that rounds to the nearest integer reads (ties to even, as torch.round); `None` for NaN / ±Inf.
    pub rounded: Option<i64>,
}

impl Off {
    /// value - index (NaN for non-finite values).
    fn signed_offset(&self) -> f64 {
        self.value - self.index as f64
    }
    fn truncation_ok(&self) -> bool {
        self.as_int64 == Some(self.index as i64)
    }
    fn rounding_ok(&self) -> bool {
        self.rounded == Some(self.index as i64)
    }
    /// True when storing the value as fp16 gives back exactly the index (the drift is rounded away).
    fn fp16_hides(&self) -> bool {
        through_f16(self.value) == self.index as f64
    }
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

impl Analysis {
    /// Indices where truncation and rounding give different verdicts.
    pub fn disagree(&self) -> Vec<u64> {
        self.offset
            .iter()
            .filter(|o| o.truncation_ok() != o.rounding_ok())
            .map(|o| o.index)
            .collect()
    }
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
        let off = Off {
            index,
            value: v,
            as_int64: v.is_finite().then(|| v.trunc() as i64),
            rounded: v.is_finite().then(|| v.round_ties_even() as i64),
        };
        let dev = if v.is_finite() {
            (v - want).abs()
        } else {
            f64::INFINITY
        };
        a.max_deviation = a.max_deviation.max(dev);
        if !off.truncation_ok() {
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

/// A JSON number, or the string `nan` / `inf` / `-inf` JSON cannot hold.
fn number(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else if v.is_nan() {
        json!("nan")
    } else {
        json!(if v > 0.0 { "inf" } else { "-inf" })
    }
}

fn off_json(o: &Off) -> Value {
    json!({
        "index": o.index,
        "value": number(o.value),
        "signed_offset": number(o.signed_offset()),
        "as_int64": o.as_int64,
        "rounded": o.rounded,
        "truncation_ok": o.truncation_ok(),
        "rounding_ok": o.rounding_ok(),
        "fp16_hides": o.fp16_hides(),
    })
}

/// Loaders that use the stored ids (they cast to int64, truncating) and those that ignore them.
const USE_STORED: [&str; 2] = ["A1111 web UI", "transformers < 4.31"];
const IGNORE_STORED: [&str; 2] = ["ComfyUI", "transformers >= 4.31"];

/// Who reads a wrong token: `misread_by` (loaders using the stored ids, when truncation breaks a position),
/// `read_correctly_by`, and `ignored_by` (loaders that rebuild the ids and never read them).
fn affects(broken: bool) -> Value {
    let (misread, fine): (&[&str], &[&str]) = if broken {
        (&USE_STORED, &[])
    } else {
        (&[], &USE_STORED)
    };
    json!({"misread_by": misread, "read_correctly_by": fine, "ignored_by": IGNORE_STORED})
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

/// Flags every CLIP text encoder `position_ids` that is not int64 `0..n-1`, by its effect on loaders.
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
    let mut unread = None;
    let values = if t.strides.is_none() && t.len <= MAX_READ {
        (ctx.read_at)(t.start, t.len)
            .map_err(|e| unread = Some(e))
            .ok()
            .and_then(|b| decode(t.dtype, &b))
    } else {
        None
    };
    let analysis = values.as_ref().map(|v| analyze(v, row));
    let is_i64 = t.dtype == Dtype::I64;
    // int64 stored strided (a pickle's view) is not read: nothing to say. A read that failed (a
    // header-only scan of an object out of reads) is said below, never passed as exact.
    if is_i64 && analysis.is_none() && unread.is_none() {
        return None;
    }
    if is_i64 && analysis.as_ref().is_some_and(|a| a.offset.is_empty()) {
        return None; // exact int64: nothing to say
    }
    let stored = if is_i64 {
        String::new()
    } else {
        format!(", stored as {}", t.dtype)
    };
    let last = row.saturating_sub(1);
    let ignored = IGNORE_STORED.join(" and ");
    let using = USE_STORED.join(" and ");
    let (severity, message) = match &analysis {
        Some(a) if !a.broken.is_empty() => (
            Severity::Error,
            format!(
                "{encoder} position_ids are corrupt{stored}: loaders that use the stored ids ({using}) \
                 misread token position(s) {} (read as {}; max deviation {}), so prompts lose or shift \
                 tokens there; {ignored} ignore the stored ids. `fastscan fix --clip` restores 0..{last}",
                positions(&a.broken),
                a.broken
                    .iter()
                    .take(8)
                    .map(|o| o.as_int64.map_or("invalid".into(), |v| v.to_string()))
                    .collect::<Vec<_>>()
                    .join(", "),
                a.max_deviation,
            ),
        ),
        Some(a) if !a.offset.is_empty() => {
            let disagree = a.disagree();
            let rounding = if disagree.is_empty() {
                String::new()
            } else {
                format!(
                    "; a loader that rounds instead would misread position(s) {}",
                    disagree
                        .iter()
                        .take(8)
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            (
                Severity::Warning,
                format!(
                    "{encoder} position_ids drift from their index at position(s) {}{stored} (max \
                     deviation {}); every value still truncates to its index, so no loader reads a \
                     wrong token today{rounding}, but further merges can push them over. `fastscan fix \
                     --clip` restores 0..{last}",
                    positions(&a.offset),
                    a.max_deviation,
                ),
            )
        }
        Some(_) => (
            Severity::Info,
            format!(
                "{encoder} position_ids are stored as {} instead of int64, with all {} values exact: \
                 no loader reads a wrong token (common in SDXL fine-tunes). `fastscan fix --clip` \
                 stores them as int64",
                t.dtype,
                t.elements()
            ),
        ),
        None if is_i64 => (
            Severity::Info,
            format!(
                "{encoder} position_ids (int64) were not verified: {}",
                unread.as_ref().map_or(String::new(), |e| e.to_string()),
            ),
        ),
        None => (
            Severity::Warning,
            format!(
                "{encoder} position_ids are stored as {} instead of int64 and their values could not \
                 be read to verify them{}; `fastscan fix --clip` restores 0..{last} as int64",
                t.dtype,
                unread.as_ref().map_or(String::new(), |e| format!(" ({e})")),
            ),
        ),
    };
    let (offset, broken, max_dev, disagree) = match &analysis {
        Some(a) => (
            Value::from(a.offset.iter().map(off_json).collect::<Vec<_>>()),
            Value::from(a.broken.iter().map(off_json).collect::<Vec<_>>()),
            number(a.max_deviation),
            json!(a.disagree()),
        ),
        None => (Value::Null, Value::Null, Value::Null, Value::Null),
    };
    let is_broken = analysis.as_ref().is_some_and(|a| !a.broken.is_empty());
    let mut data = json!({
            "tensor": t.name,
            "encoder": encoder,
            "dtype": t.dtype.name(),
            "shape": t.shape,
            "int64": is_i64,
            "offset": offset,
            "broken": broken,
            "rounding_disagrees": disagree,
            "max_deviation": max_dev,
            "affects": affects(is_broken),
    });
    if unread.is_some() {
        data["read"] = Value::Bool(false);
    }
    Some(Finding::new("clip.position-ids", severity, message, data))
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
                as_int64: Some(75),
                rounded: Some(76),
            }]
        );
        // 75.9975 truncates wrong but rounds right: the two verdicts disagree there only
        assert_eq!(a.disagree(), vec![76]);
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
        // F8_E4M3: 0x00 = 0, 0x38 = 1, 0x7e = 448 (max), 0x7f NaN; F8_E5M2: 0x3c = 1, 0x7c = Inf
        let e4 = decode(Dtype::F8_E4M3, &[0x00, 0x38, 0x7e, 0xb8]).unwrap();
        assert_eq!(e4, vec![0.0, 1.0, 448.0, -1.0]);
        assert!(decode(Dtype::F8_E4M3, &[0x7f]).unwrap()[0].is_nan());
        assert_eq!(
            decode(Dtype::F8_E5M2, &[0x3c, 0x7c, 0x01]).unwrap(),
            vec![1.0, f64::INFINITY, 2f64.powi(-16)]
        );
        assert!(decode(Dtype::C64, &[0; 8]).is_none());
        assert_eq!(f16_to_f64(0x7c00), f64::INFINITY);
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24));
    }

    #[test]
    fn fp16_rounding_hides_small_drift() {
        // near 76 fp16 holds multiples of 1/16: 75.9975 rounds to 76, 75.9 stays off
        assert_eq!(through_f16(75.9975), 76.0);
        assert_eq!(through_f16(75.9), 75.875);
        assert_eq!(through_f16(1.0001), 1.0);
        assert_eq!(through_f16(70000.0), f64::INFINITY);
        let mut v = arange(77);
        v[76] = 75.9975;
        v[40] = 39.9;
        let a = analyze(&v, 77);
        let hides: Vec<bool> = a.offset.iter().map(|o| o.fp16_hides()).collect();
        assert_eq!(hides, vec![false, true]);
    }

    #[test]
    fn rounding_and_truncation_disagree_on_upward_drift() {
        let mut v = arange(77);
        v[10] = 10.6; // truncates to 10 (fine), rounds to 11 (wrong)
        let a = analyze(&v, 77);
        assert!(a.broken.is_empty());
        assert_eq!(a.disagree(), vec![10]);
        // a swapped pair is broken by both verdicts
        let mut w = arange(77);
        w.swap(3, 4);
        let b = analyze(&w, 77);
        assert_eq!(
            b.broken.iter().map(|o| o.index).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert!(b.disagree().is_empty());
    }
}
