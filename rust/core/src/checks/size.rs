//! `size.unusual`: components of another size than a clean model of the arch, or a bloated header.

use super::{grouped, human, Context, Outcome};
use crate::classify::{reference_elements, Role};
use crate::kind::Kind;
use crate::report::{Finding, Severity};
use crate::sniff::Format;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;

/// Header bytes beyond what its JSON needs that count as bloat.
pub const PADDING_LIMIT: u64 = 1 << 20;

/// One component whose element count differs from the clean model's.
#[derive(Debug, PartialEq)]
pub struct Mismatch {
    pub component: &'static str,
    pub expected_elements: u64,
    pub actual_elements: u64,
    pub actual_bytes: u64,
    /// Bytes a clean component would take at the dtypes this one uses.
    pub expected_bytes: u64,
}

/// Compares per-component (elements, bytes) with the reference element counts.
pub fn compare(
    actual: &BTreeMap<&'static str, (u64, u64)>,
    reference: &BTreeMap<&'static str, u64>,
) -> Vec<Mismatch> {
    actual
        .iter()
        .filter_map(|(&c, &(elements, bytes))| {
            let want = *reference.get(c)?;
            (elements != want).then(|| Mismatch {
                component: c,
                expected_elements: want,
                actual_elements: elements,
                actual_bytes: bytes,
                expected_bytes: if elements == 0 {
                    0
                } else {
                    (want as u128 * bytes as u128 / elements as u128) as u64
                },
            })
        })
        .collect()
}

struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn json_len(v: &impl serde::Serialize) -> u64 {
    let mut c = Counter(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Bytes the compact JSON of this header needs (what the reference writer emits, before padding).
pub fn minimal_header_len(ctx: &Context, data_start: u64) -> u64 {
    let mut n = 2; // {}
    let mut entries = 0u64;
    if !ctx.metadata.is_empty() {
        n += json_len(&"__metadata__") + 1 + json_len(ctx.metadata);
        entries += 1;
    }
    for t in ctx.tensors {
        // "name":{"dtype":"F16","shape":[a,b],"data_offsets":[x,y]}
        let b = t.start.saturating_sub(data_start);
        let shape: u64 = t.shape.iter().map(|&d| digits(d)).sum::<u64>()
            + (t.shape.len() as u64).saturating_sub(1);
        n += json_len(&t.name)
            + 1
            + r#"{"dtype":"","shape":[],"data_offsets":[,]}"#.len() as u64
            + t.dtype.name().len() as u64
            + shape
            + digits(b)
            + digits(b + t.len);
        entries += 1;
    }
    n + entries.saturating_sub(1) // commas
}

/// Decimal digits of `n`.
fn digits(n: u64) -> u64 {
    n.checked_ilog10().map_or(1, |d| d as u64 + 1)
}

fn signed(a: u64, b: u64) -> i128 {
    a as i128 - b as i128
}

/// Flags components whose size differs from a clean model of the arch, and header bloat.
pub fn check(ctx: &Context, out: &mut Outcome) {
    let mut reasons: Vec<String> = vec![];
    let mut details = serde_json::Map::new();
    let mut expected_size = ctx.size as i128;

    let whole_model = matches!(
        ctx.class.kind,
        Kind::Checkpoint | Kind::Unet | Kind::Vae | Kind::TextEncoder
    );
    if let Some(reference) = reference_elements(ctx.class.arch).filter(|_| whole_model) {
        let mut actual: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
        for (t, r) in ctx.with_roles() {
            if let Role::Component { name, .. } = r {
                let e = actual.entry(name).or_default();
                e.0 += t.elements();
                e.1 += t.len;
            }
        }
        let mismatches = compare(&actual, &reference);
        let mut comps = serde_json::Map::new();
        for m in &mismatches {
            let diff = signed(m.actual_elements, m.expected_elements);
            reasons.push(format!(
                "its {} has {} elements where a clean {} {} has {} ({} {}, {} at its dtypes: {})",
                m.component,
                grouped(m.actual_elements),
                ctx.class.arch,
                m.component,
                grouped(m.expected_elements),
                grouped(diff.unsigned_abs() as u64),
                if diff < 0 { "fewer" } else { "more" },
                human(m.actual_bytes.abs_diff(m.expected_bytes)),
                if diff < 0 {
                    "pruned, partial or a smaller variant"
                } else {
                    "extra tensors or a larger variant"
                }
            ));
            expected_size -= signed(m.actual_bytes, m.expected_bytes);
            comps.insert(
                m.component.to_string(),
                json!({
                    "expected_elements": m.expected_elements,
                    "actual_elements": m.actual_elements,
                    "difference_elements": diff as i64,
                    "expected_bytes": m.expected_bytes,
                    "actual_bytes": m.actual_bytes,
                    "difference_bytes": signed(m.actual_bytes, m.expected_bytes) as i64,
                }),
            );
        }
        if !comps.is_empty() {
            details.insert("components".into(), Value::Object(comps));
        }
    }

    // Padding is what the header holds beyond its JSON (gaps in the data region are
    // `file.unaccounted-bytes`, not padding); short headers need no counting.
    if ctx.format == Format::Safetensors && ctx.header_len > PADDING_LIMIT {
        let header_len = ctx.header_len;
        let needed = minimal_header_len(ctx, 8 + header_len);
        let padding = header_len.saturating_sub(needed);
        if padding > PADDING_LIMIT {
            reasons.push(format!(
                "its header is {} but its JSON needs {} ({} of padding)",
                human(header_len),
                human(needed),
                human(padding)
            ));
            expected_size -= padding as i128;
            details.insert(
                "header".into(),
                json!({"length": header_len, "needed": needed, "padding": padding}),
            );
        }
    }

    if reasons.is_empty() {
        return;
    }
    let expected = expected_size.max(0) as u64;
    let difference = signed(ctx.size, expected);
    details.insert("expected".into(), json!(expected));
    details.insert("actual".into(), json!(ctx.size));
    details.insert("difference".into(), json!(difference as i64));
    out.findings.push(Finding::new(
        "size.unusual",
        Severity::Info,
        format!(
            "file is {} ({} bytes) where a clean {} {} would be {}: {}",
            human(ctx.size),
            grouped(ctx.size),
            ctx.class.arch,
            ctx.class.kind,
            human(expected),
            reasons.join("; ")
        ),
        Value::Object(details),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_counts() {
        assert_eq!(
            [0, 9, 10, 99, 100, u64::MAX].map(digits),
            [1, 1, 2, 2, 3, 20]
        );
    }

    #[test]
    fn compare_reports_only_differing_components() {
        let reference: BTreeMap<&'static str, u64> = [("unet", 100), ("vae", 10)].into();
        let actual: BTreeMap<&'static str, (u64, u64)> =
            [("unet", (100, 200)), ("vae", (8, 16)), ("lora", (5, 10))].into();
        let m = compare(&actual, &reference);
        assert_eq!(
            m,
            vec![Mismatch {
                component: "vae",
                expected_elements: 10,
                actual_elements: 8,
                actual_bytes: 16,
                expected_bytes: 20,
            }]
        );
        assert!(compare(&[("unet", (100, 400))].into(), &reference).is_empty());
    }
}
