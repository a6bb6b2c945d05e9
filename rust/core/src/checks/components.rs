//! `vae.missing`, `text-encoder.missing`: components a checkpoint of its arch should carry.

use super::{Context, Outcome};
use crate::classify::Role;
use crate::report::{Finding, Severity};
use serde_json::json;

/// Flags a checkpoint that lacks its VAE or one of its text encoders.
pub fn check(ctx: &Context, out: &mut Outcome) {
    if ctx.class.kind != "checkpoint" || ctx.class.arch == "unknown" {
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
