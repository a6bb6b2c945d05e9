//! `vae.missing`, `text-encoder.missing`, `component.incomplete`: what a model of its arch should carry.

use super::{Context, Outcome};
use crate::classify::{Role, LISTED_MISSING};
use crate::kind::{Arch, Kind};
use crate::report::{Finding, Severity};
use serde_json::json;

/// Flags a component present without some of its reference keys (the arch was kept by score).
fn incomplete(ctx: &Context, out: &mut Outcome) {
    for inc in &ctx.class.incomplete {
        let n = inc.missing.len();
        let shown: Vec<&str> = inc
            .missing
            .iter()
            .take(LISTED_MISSING)
            .map(String::as_str)
            .collect();
        let more = if n > shown.len() {
            format!(", … ({n} in all)")
        } else {
            String::new()
        };
        out.findings.push(Finding::new(
            "component.incomplete",
            Severity::Warning,
            format!(
                "{} of this {} {} lacks {n} of the {} reference keys fastscan checks ({}{more});                  loaders may refuse it or run those layers with missing weights",
                inc.component,
                ctx.class.arch,
                ctx.class.kind,
                inc.of,
                shown.join(", "),
            ),
            json!({
                "component": inc.component,
                "missing": shown,
                "missing_count": n,
                "of": inc.of,
                "score": ((inc.of - n as u64) as f64 / inc.of.max(1) as f64 * 10_000.0).round() / 10_000.0,
            }),
        ));
    }
}

/// Flags a checkpoint that lacks its VAE or one of its text encoders, and incomplete components.
pub fn check(ctx: &Context, out: &mut Outcome) {
    incomplete(ctx, out);
    if ctx.class.kind != Kind::Checkpoint || ctx.class.arch == Arch::Unknown {
        return;
    }
    let has = |c: &str| {
        ctx.class
            .roles
            .iter()
            .any(|r| matches!(r, Role::Component { name, .. } if *name == c))
    };
    if !has("vae") {
        out.findings.push(Finding::new(
            "vae.missing",
            Severity::Info,
            format!(
                "{} checkpoint has no VAE: it needs an external one",
                ctx.class.arch
            ),
            json!({"arch": ctx.class.arch}),
        ));
    }
    let missing: Vec<&str> = ctx
        .class
        .expected_text_encoders
        .iter()
        .copied()
        .filter(|c| !has(c))
        .collect();
    if !missing.is_empty() {
        out.findings.push(Finding::new(
            "text-encoder.missing",
            Severity::Info,
            format!(
                "{} checkpoint has no {} text encoder: it needs an external one",
                ctx.class.arch,
                missing.join(", ")
            ),
            json!({"arch": ctx.class.arch, "missing": missing}),
        ));
    }
}
