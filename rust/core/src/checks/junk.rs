//! `junk.ema` and `junk.unknown-keys`: bytes that no loader of the detected arch uses.

use super::{human, Context, Outcome};
use crate::classify::{known_prefixes, Role};
use crate::kind::Kind;
use crate::report::{Finding, Severity};
use crate::tensor::TensorInfo;
use serde_json::json;
use std::collections::BTreeMap;

/// Keys listed per group and overall.
const KEYS_SHOWN: usize = 50;

/// What a stray key looks like: `lora` (LoRA leftovers), `optimizer` (training state), `copy` (a
/// component's weights under a prefix this arch does not use), `other`.
pub fn looks_like(name: &str, prefixes: &[&str]) -> &'static str {
    let lower = name.to_ascii_lowercase();
    let is = |p: &str| lower.contains(p);
    if lower.starts_with("lora_")
        || [
            ".lora_",
            "lora_up",
            "lora_down",
            ".lora.",
            ".hada_",
            ".lokr_",
            "lora_a.",
            "lora_b.",
        ]
        .iter()
        .any(|p| is(p))
    {
        "lora"
    } else if lower.starts_with("optimizer")
        || lower.starts_with("state.")
        || lower.starts_with("param_groups")
        || [
            "exp_avg",
            "momentum_buffer",
            "optimizer_states",
            "max_exp_avg_sq",
        ]
        .iter()
        .any(|p| is(p))
    {
        "optimizer"
    } else if prefixes
        .iter()
        .any(|p| name.starts_with(p) || name.contains(&format!(".{p}")))
    {
        "copy"
    } else {
        "other"
    }
}

/// Junk tensors grouped by what they look like: group -> (count, bytes, first keys).
pub fn group<'a>(
    junk: &[&'a TensorInfo],
    prefixes: &[&str],
) -> BTreeMap<&'static str, (u64, u64, Vec<&'a str>)> {
    let mut groups: BTreeMap<&'static str, (u64, u64, Vec<&str>)> = BTreeMap::new();
    for t in junk {
        let g = groups.entry(looks_like(&t.name, prefixes)).or_default();
        g.0 += 1;
        g.1 += t.len;
        if g.2.len() < KEYS_SHOWN {
            g.2.push(&t.name);
        }
    }
    groups
}

fn label(group: &str) -> &'static str {
    match group {
        "lora" => "LoRA leftovers",
        "optimizer" => "optimizer state",
        "copy" => "copies under a foreign prefix",
        _ => "other",
    }
}

/// Flags EMA weights and keys that belong to no component of the detected arch.
pub fn check(ctx: &Context, out: &mut Outcome) {
    if ctx.class.kind != Kind::Checkpoint {
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
            format!(
                "{} EMA tensor(s), {}: not used for inference, `fastscan fix --prune ema` drops them",
                ema.len(),
                human(bytes)
            ),
            json!({
                "tensors": ema.len(),
                "bytes": bytes,
                "keys": ema.iter().take(KEYS_SHOWN).map(|t| t.name.as_str()).collect::<Vec<_>>(),
            }),
        ));
    }
    let junk: Vec<_> = ctx
        .with_roles()
        .filter(|(_, r)| **r == Role::Junk)
        .map(|(t, _)| t)
        .collect();
    if junk.is_empty() {
        return;
    }
    let prefixes = known_prefixes();
    let groups = group(&junk, &prefixes);
    let bytes: u64 = junk.iter().map(|t| t.len).sum();
    out.wasted.insert("junk".into(), bytes);
    let summary = groups
        .iter()
        .map(|(g, (n, b, _))| format!("{n} {} ({})", label(g), human(*b)))
        .collect::<Vec<_>>()
        .join(", ");
    let looks: Vec<&str> = groups.keys().copied().collect();
    out.findings.push(Finding::new(
        "junk.unknown-keys",
        Severity::Warning,
        format!(
            "{} key(s), {}, belong to no component of this {} checkpoint: {summary}; `fastscan fix --prune junk` drops them",
            junk.len(),
            human(bytes),
            ctx.class.arch,
        ),
        json!({
            "count": junk.len(),
            "bytes": bytes,
            "looks_like": looks,
            "groups": groups
                .iter()
                .map(|(g, (n, b, keys))| (g.to_string(), json!({"count": n, "bytes": b, "keys": keys})))
                .collect::<serde_json::Map<_, _>>(),
            "keys": junk.iter().take(KEYS_SHOWN).map(|t| t.name.as_str()).collect::<Vec<_>>(),
        }),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::Dtype;

    fn t(name: &str, len: u64) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dtype: Dtype::F16,
            shape: vec![len / 2],
            start: 0,
            len,
            strides: None,
        }
    }

    #[test]
    fn groups_by_look() {
        let p = ["first_stage_model.", "conditioner.embedders.1.model."];
        assert_eq!(
            looks_like(
                "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
                &p
            ),
            "lora"
        );
        assert_eq!(
            looks_like("model.diffusion_model.x.lora_up.weight", &p),
            "lora"
        );
        assert_eq!(looks_like("optimizer.state.3.exp_avg", &p), "optimizer");
        assert_eq!(looks_like("state.12.exp_avg_sq", &p), "optimizer");
        assert_eq!(
            looks_like("conditioner.embedders.1.model.ln_final.weight", &p),
            "copy"
        );
        assert_eq!(
            looks_like("module.first_stage_model.encoder.conv_in.weight", &p),
            "copy"
        );
        assert_eq!(looks_like("global_step", &p), "other");
    }

    #[test]
    fn group_counts_bytes_and_caps_keys() {
        let names: Vec<String> = (0..60).map(|i| format!("lora_te_x{i}.alpha")).collect();
        let mut ts: Vec<TensorInfo> = names.iter().map(|n| t(n, 2)).collect();
        ts.push(t("state.0.exp_avg", 10));
        let refs: Vec<&TensorInfo> = ts.iter().collect();
        let g = group(&refs, &[]);
        assert_eq!(g["lora"].0, 60);
        assert_eq!(g["lora"].1, 120);
        assert_eq!(g["lora"].2.len(), KEYS_SHOWN);
        assert_eq!(g["optimizer"], (1, 10, vec!["state.0.exp_avg"]));
        assert!(!g.contains_key("other"));
    }
}
