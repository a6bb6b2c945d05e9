//! The other files of a model folder (upscalers, T2I adapters, VAE-approx) by the `file_kinds` rules of rules.json.

use crate::classify::{leak, shape_matches, whole, Classification, Condition};
use crate::kind::{Arch, Kind};
use crate::tensor::TensorInfo;
use rustc_hash::FxHashMap as HashMap;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

#[derive(Deserialize)]
struct ArchFrom {
    key: String,
    axis: usize,
}

#[derive(Deserialize)]
struct KindRule {
    kind: Kind,
    component: String,
    #[serde(default)]
    strip_prefixes: Vec<String>,
    #[serde(rename = "match")]
    conditions: Vec<Condition>,
    arch_from: Option<ArchFrom>,
    #[serde(default)]
    arch_by_size: BTreeMap<String, Arch>,
}

#[derive(Deserialize)]
struct FileKinds {
    rules: Vec<KindRule>,
}

fn rules() -> &'static [KindRule] {
    static RULES: OnceLock<Vec<KindRule>> = OnceLock::new();
    RULES.get_or_init(|| {
        #[derive(Deserialize)]
        struct File {
            file_kinds: FileKinds,
        }
        let f: File =
            serde_json::from_str(include_str!("rules.json")).expect("rules.json is valid");
        f.file_kinds.rules
    })
}

/// The first `file_kinds` rule that holds on the file's keys, as a classification.
pub fn classify(
    tensors: &[TensorInfo],
    index: &HashMap<&str, &TensorInfo>,
) -> Option<Classification> {
    for rule in rules() {
        let prefix = rule
            .strip_prefixes
            .iter()
            .find(|p| tensors.iter().any(|t| t.name.starts_with(p.as_str())))
            .map(String::as_str)
            .unwrap_or("");
        let mut key = String::new();
        let mut get = |k: &str| {
            key.clear();
            key.push_str(prefix);
            key.push_str(k);
            index.get(key.as_str()).copied()
        };
        let holds = rule
            .conditions
            .iter()
            .all(|c| get(&c.key).is_some_and(|t| shape_matches(c.shape.as_ref(), &t.shape)));
        if !holds {
            continue;
        }
        let arch = rule
            .arch_from
            .as_ref()
            .and_then(|a| get(&a.key).and_then(|t| t.shape.get(a.axis).copied()))
            .and_then(|n| rule.arch_by_size.get(&n.to_string()).copied())
            .unwrap_or(Arch::Unknown);
        return Some(whole(tensors, rule.kind, arch, leak(&rule.component)));
    }
    None
}
