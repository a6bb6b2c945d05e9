//! `dtype.float64` and `dtype.mixed`.

use super::{Context, Outcome};
use crate::classify::Role;
use crate::dtype::Dtype;
use crate::report::{Finding, Severity};
use serde_json::json;
use std::collections::BTreeMap;

/// Flags F64 tensors and components that mix float dtypes.
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
    per.retain(|_, h| h.len() > 1);
    if !per.is_empty() {
        out.findings.push(Finding::new(
            "dtype.mixed",
            Severity::Info,
            format!(
                "mixed float dtypes in {}",
                per.keys().copied().collect::<Vec<_>>().join(", ")
            ),
            json!({"components": per}),
        ));
    }
}
