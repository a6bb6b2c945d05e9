//! `junk.ema` and `junk.unknown-keys`: bytes that no loader of the detected arch uses.

use super::{Context, Outcome};
use crate::classify::Role;
use crate::report::{Finding, Severity};
use serde_json::json;

/// What a stray key looks like.
fn looks_like(name: &str) -> &'static str {
    if name.starts_with("lora_")
        || name.contains(".lora_")
        || name.contains("lora_up")
        || name.contains("lora_down")
    {
        "lora"
    } else if name.starts_with("optimizer")
        || name.contains("exp_avg")
        || name.starts_with("state.")
        || name.contains("momentum")
    {
        "optimizer"
    } else if [
        "model.diffusion_model.",
        "first_stage_model.",
        "cond_stage_model.",
        "conditioner.",
        "text_encoders.",
        "vae.",
    ]
    .iter()
    .any(|p| name.starts_with(p))
    {
        "foreign-prefix"
    } else {
        "other"
    }
}

/// Flags EMA weights and keys that belong to no component of the detected arch.
pub fn check(ctx: &Context, out: &mut Outcome) {
    if ctx.class.kind != "checkpoint" {
        return;
    }
    let ema: Vec<_> = ctx
        .with_roles()
        .filter(|(_, r)| **r == Role::Ema)
        .map(|(t, _)| t)
        .collect();
    if !ema.is_empty() {
        let bytes: u64 = ema.iter().map(|t| t.len).sum();
        out.wasted.insert("ema".into(), bytes);
        out.findings.push(Finding::new(
            "junk.ema",
            Severity::Warning,
            format!("{} EMA tensor(s), {bytes} bytes: not used for inference, `fastscan fix --prune ema` drops them", ema.len()),
            json!({"tensors": ema.len(), "bytes": bytes}),
        ));
    }
    let junk: Vec<_> = ctx
        .with_roles()
        .filter(|(_, r)| **r == Role::Junk)
        .map(|(t, _)| t)
        .collect();
    if !junk.is_empty() {
        let bytes: u64 = junk.iter().map(|t| t.len).sum();
        let mut groups: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for t in &junk {
            let g = groups.entry(looks_like(&t.name)).or_default();
            g.0 += 1;
            g.1 += t.len;
        }
        out.wasted.insert("junk".into(), bytes);
        out.findings.push(Finding::new(
            "junk.unknown-keys",
            Severity::Warning,
            format!(
                "{} key(s), {bytes} bytes, belong to no component of a {} checkpoint ({})",
                junk.len(),
                ctx.class.arch,
                groups.iter().map(|(k, (n, _))| format!("{k}: {n}")).collect::<Vec<_>>().join(", ")
            ),
            json!({
                "count": junk.len(),
                "bytes": bytes,
                "groups": groups.iter().map(|(k, (n, b))| (k.to_string(), json!({"count": n, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
                "keys": junk.iter().take(50).map(|t| t.name.as_str()).collect::<Vec<_>>(),
            }),
        ));
    }
}
