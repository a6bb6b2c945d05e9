//! `dtype.float64` and `dtype.mixed` (within a component, or across the components of one file).

use super::{Context, Outcome};
use crate::classify::Role;
use crate::dtype::Dtype;
use crate::report::{Finding, Severity};
use serde_json::json;
use std::collections::BTreeMap;

/// Flags F64 tensors, components that mix float dtypes and files whose components differ in dtype.
pub fn check(ctx: &Context, out: &mut Outcome) {
    let f64s: Vec<_> = ctx
        .tensors
        .iter()
        .filter(|t| t.dtype == Dtype::F64)
        .collect();
    if !f64s.is_empty() {
        let bytes: u64 = f64s.iter().map(|t| t.len).sum();
        let saved = bytes / 2;
        out.wasted.insert("float64".into(), saved);
        out.findings.push(Finding::new(
            "dtype.float64",
            Severity::Warning,
            format!(
                "{} tensor(s) stored as float64 ({bytes} bytes); float32 would save {saved} bytes",
                f64s.len()
            ),
            json!({
                "tensors": f64s.len(),
                "bytes": bytes,
                "bytes_saved_at_f32": saved,
                "names": f64s.iter().take(50).map(|t| t.name.as_str()).collect::<Vec<_>>(),
            }),
        ));
    }

    let mut per: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for (t, r) in ctx.with_roles() {
        if let Role::Component { name, .. } = r {
            if t.dtype.is_float() {
                *per.entry(name)
                    .or_default()
                    .entry(t.dtype.name())
                    .or_default() += t.len;
            }
        }
    }
    // The dtype holding most float bytes of each weight component.
    let main: BTreeMap<&str, &str> = per
        .iter()
        .filter_map(|(c, h)| h.iter().max_by_key(|(_, b)| **b).map(|(d, _)| (*c, *d)))
        .collect();
    let mut across: Vec<&str> = main.values().copied().collect();
    across.sort_unstable();
    across.dedup();
    let all: std::collections::BTreeSet<&str> =
        per.values().flat_map(|h| h.keys().copied()).collect();
    // bf16 next to fp16 in one file: the two 16-bit formats of a merge of bf16 and fp16 parents, which
    // converters that assume one dtype per file mishandle.
    let half_pair = all.contains("F16") && all.contains("BF16");
    per.retain(|_, h| h.len() > 1);
    if per.is_empty() && across.len() < 2 {
        return;
    }
    let mut parts = vec![];
    if !per.is_empty() {
        parts.push(format!(
            "mixed float dtypes in {}",
            per.keys().copied().collect::<Vec<_>>().join(", ")
        ));
    }
    if across.len() > 1 {
        parts.push(format!(
            "components stored in different float dtypes ({})",
            main.iter()
                .map(|(c, d)| format!("{c} {d}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let (severity, tail) = if half_pair {
        (
            Severity::Warning,
            "; F16 and BF16 together (a merge of fp16 and bf16 parents) break converters that \
             expect one dtype, and BF16 values beyond F16's range overflow on a cast to F16",
        )
    } else {
        (Severity::Info, "")
    };
    out.findings.push(Finding::new(
        "dtype.mixed",
        severity,
        format!("{}{tail}", parts.join("; ")),
        json!({"components": per, "across": main, "f16_and_bf16": half_pair}),
    ));
}
