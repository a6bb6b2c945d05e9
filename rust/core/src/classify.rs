//! What a file is (kind, arch) and which component each tensor belongs to (SPEC §3).

use crate::tensor::TensorInfo;
use rustc_hash::FxHashMap as HashMap;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The role of one tensor within its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Part of a model component (`unet`, `vae`, `clip_l`, ...); canonical name = key minus `prefix_len` bytes.
    Component {
        name: &'static str,
        prefix_len: usize,
    },
    /// EMA copy of the weights.
    Ema,
    /// Schedule buffers, `position_ids`, EMA bookkeeping.
    Buffer,
    /// Belongs to no component of the detected architecture.
    Junk,
}

/// Result of classifying a tensor table.
#[derive(Clone, Debug)]
pub struct Classification {
    pub kind: &'static str,
    pub arch: &'static str,
    /// One role per tensor, index-aligned with the table.
    pub roles: Vec<Role>,
    /// Text encoders a complete checkpoint of this arch carries.
    pub expected_text_encoders: Vec<&'static str>,
}

impl Classification {
    /// A classification whose tensor roles `role` gives (and no expected text encoders).
    pub(crate) fn by_role(
        tensors: &[TensorInfo],
        kind: &'static str,
        arch: &'static str,
        role: impl Fn(&TensorInfo) -> Role,
    ) -> Classification {
        Classification {
            kind,
            arch,
            roles: tensors.iter().map(role).collect(),
            expected_text_encoders: vec![],
        }
    }
}

#[derive(Deserialize)]
struct Condition {
    key: String,
    shape: Option<Vec<i64>>,
}

#[derive(Deserialize)]
struct ArchRule {
    arch: String,
    #[serde(rename = "match")]
    conditions: Vec<Condition>,
    #[serde(default)]
    components: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    text_encoders: Vec<String>,
}

#[derive(Deserialize)]
struct Buffers {
    exact: Vec<String>,
    suffix: Vec<String>,
}

#[derive(Deserialize)]
struct Rules {
    unet_prefixes: Vec<String>,
    buffers: Buffers,
    ema_prefixes: Vec<String>,
    archs: Vec<ArchRule>,
    /// arch -> component -> element count of a clean model (plus a `_doc` string).
    reference_elements: BTreeMap<String, serde_json::Value>,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        serde_json::from_str(include_str!("rules.json")).expect("rules.json is valid")
    })
}

/// Element count of each component of a clean model of `arch` (from the real layouts), if known.
pub fn reference_elements(arch: &str) -> Option<BTreeMap<&'static str, u64>> {
    let m = rules().reference_elements.get(arch)?.as_object()?;
    Some(
        m.iter()
            .filter_map(|(c, n)| Some((leak(c), n.as_u64()?)))
            .collect(),
    )
}

/// Every key prefix any arch keeps a component under (`first_stage_model.`, `conditioner.embedders.1.model.`, ...).
pub fn known_prefixes() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = rules()
        .archs
        .iter()
        .flat_map(|r| r.components.values().flatten())
        .chain(&rules().unet_prefixes)
        .map(|p| leak(p))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Interns a rule string for the life of the process (rules are loaded once).
fn leak(s: &str) -> &'static str {
    static POOL: OnceLock<std::sync::Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let mut pool = POOL.get_or_init(Default::default).lock().unwrap();
    if let Some(v) = pool.get(s) {
        return v;
    }
    let v: &'static str = Box::leak(s.to_owned().into_boxed_str());
    pool.insert(s.to_owned(), v);
    v
}

fn is_buffer(name: &str) -> bool {
    static EXACT: OnceLock<rustc_hash::FxHashSet<&'static str>> = OnceLock::new();
    let b = &rules().buffers;
    let exact = EXACT.get_or_init(|| b.exact.iter().map(|s| s.as_str()).collect());
    exact.contains(name) || b.suffix.iter().any(|s| name.ends_with(s.as_str()))
}

pub(crate) fn is_ema(name: &str) -> bool {
    rules()
        .ema_prefixes
        .iter()
        .any(|p| name.starts_with(p.as_str()))
}

fn shape_matches(want: &Option<Vec<i64>>, got: &[u64]) -> bool {
    match want {
        None => true,
        Some(w) => {
            w.len() == got.len() && w.iter().zip(got).all(|(w, g)| *w < 0 || *w as u64 == *g)
        }
    }
}

/// Finds the first arch rule whose conditions all hold with `prefix` prepended to each key.
fn match_arch(index: &HashMap<&str, &TensorInfo>, prefix: &str) -> Option<&'static ArchRule> {
    let mut key = String::new();
    rules().archs.iter().find(|rule| {
        rule.conditions.iter().all(|c| {
            key.clear();
            key.push_str(prefix);
            key.push_str(&c.key);
            index
                .get(key.as_str())
                .is_some_and(|t| shape_matches(&c.shape, &t.shape))
        })
    })
}

/// Classifies a tensor table by key names and shapes.
pub fn classify(tensors: &[TensorInfo]) -> Classification {
    let index: HashMap<&str, &TensorInfo> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    // 1. A full checkpoint: a diffusion model under its LDM prefix.
    for prefix in &rules().unet_prefixes {
        if let Some(rule) = match_arch(&index, prefix) {
            return checkpoint(tensors, rule);
        }
    }
    if tensors
        .iter()
        .any(|t| t.name.starts_with("model.diffusion_model."))
    {
        return checkpoint_unknown(tensors);
    }
    // 2. A diffusion model alone (LDM or diffusers names).
    if let Some(rule) = match_arch(&index, "") {
        return whole(tensors, "unet", leak(&rule.arch), "unet");
    }
    // 3. The EMA half of a training checkpoint saved alone: a UNet under EMA names.
    if let Some(c) = ema_only(tensors) {
        return c;
    }
    crate::standalone::classify_standalone(tensors, &index)
}

/// Prefix of EMA UNet keys: `model_ema.diffusion_model` + the UNet key with every `.` removed.
const EMA_UNET: &str = "model_ema.diffusion_model";

/// Arch of a UNet stored under EMA names (dots removed), by the same rules as a plain UNet.
fn ema_arch(tensors: &[TensorInfo]) -> Option<&'static ArchRule> {
    let index: HashMap<&str, &TensorInfo> = tensors
        .iter()
        .filter_map(|t| t.name.strip_prefix(EMA_UNET).map(|k| (k, t)))
        .collect();
    if index.is_empty() {
        return None;
    }
    rules().archs.iter().find(|rule| {
        rule.conditions.iter().all(|c| {
            let key: String = c.key.chars().filter(|&ch| ch != '.').collect();
            index
                .get(key.as_str())
                .is_some_and(|t| shape_matches(&c.shape, &t.shape))
        })
    })
}

/// A file holding only EMA weights (and buffers): what a training checkpoint adds, kind `unet`.
fn ema_only(tensors: &[TensorInfo]) -> Option<Classification> {
    if !tensors
        .iter()
        .all(|t| is_ema(&t.name) || is_buffer(&t.name))
    {
        return None;
    }
    let rule = ema_arch(tensors)?;
    Some(Classification::by_role(
        tensors,
        "unet",
        leak(&rule.arch),
        |t| {
            if is_buffer(&t.name) {
                Role::Buffer
            } else {
                Role::Ema
            }
        },
    ))
}

/// Every non-buffer tensor of the file belongs to one component.
pub(crate) fn whole(
    tensors: &[TensorInfo],
    kind: &'static str,
    arch: &'static str,
    comp: &'static str,
) -> Classification {
    Classification::by_role(tensors, kind, arch, |t| {
        if is_buffer(&t.name) {
            Role::Buffer
        } else {
            Role::Component {
                name: comp,
                prefix_len: 0,
            }
        }
    })
}

fn checkpoint(tensors: &[TensorInfo], rule: &ArchRule) -> Classification {
    let comps: Vec<(&'static str, &str)> = rule
        .components
        .iter()
        .flat_map(|(c, ps)| ps.iter().map(move |p| (leak(c), p.as_str())))
        .collect();
    Classification {
        expected_text_encoders: rule.text_encoders.iter().map(|s| leak(s)).collect(),
        ..Classification::by_role(tensors, "checkpoint", leak(&rule.arch), |t| {
            role_in_checkpoint(&t.name, &comps)
        })
    }
}

fn checkpoint_unknown(tensors: &[TensorInfo]) -> Classification {
    // Unknown diffusion model: accept any component prefix any arch knows.
    let mut comps: Vec<(&'static str, &str)> = vec![];
    for rule in &rules().archs {
        for (c, ps) in &rule.components {
            for p in ps {
                if !comps.iter().any(|(_, q)| *q == p.as_str()) {
                    comps.push((leak(c), p.as_str()));
                }
            }
        }
    }
    Classification::by_role(tensors, "checkpoint", "unknown", |t| {
        role_in_checkpoint(&t.name, &comps)
    })
}

fn role_in_checkpoint(name: &str, comps: &[(&'static str, &str)]) -> Role {
    if is_buffer(name) {
        return Role::Buffer;
    }
    if is_ema(name) {
        return Role::Ema;
    }
    for (c, p) in comps {
        if name.starts_with(p) {
            return Role::Component {
                name: c,
                prefix_len: p.len(),
            };
        }
    }
    Role::Junk
}
