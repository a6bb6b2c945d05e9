//! What a file is (kind, arch) and which component each tensor belongs to (contract §3).

use crate::kind::{Arch, Kind};
use crate::report::Identification;
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
    pub kind: Kind,
    pub arch: Arch,
    /// One role per tensor, index-aligned with the table.
    pub roles: Vec<Role>,
    /// Text encoders a complete checkpoint of this arch carries.
    pub expected_text_encoders: Vec<&'static str>,
    /// How well the file matched its rule (`None` for kinds identified by their own markers).
    pub identification: Option<Identification>,
    /// Components present but missing part of their reference signature.
    pub incomplete: Vec<Incomplete>,
}

/// A component of the file that lacks keys of its reference signature (`component.incomplete`).
#[derive(Clone, Debug, PartialEq)]
pub struct Incomplete {
    pub component: &'static str,
    pub missing: Vec<String>,
    pub of: u64,
}

/// Score at or above which an identification is confident: destructive fixes run only then (or --force).
pub const CONFIDENT_SCORE: f64 = 0.9;
/// Score below which no arch is claimed at all.
pub const ARCH_FLOOR: f64 = 0.5;
/// Missing keys an identification lists by name.
pub const LISTED_MISSING: usize = 20;

impl Classification {
    /// A classification whose tensor roles `role` gives (and no expected text encoders).
    pub(crate) fn by_role(
        tensors: &[TensorInfo],
        kind: Kind,
        arch: Arch,
        role: impl Fn(&TensorInfo) -> Role,
    ) -> Classification {
        Classification {
            kind,
            arch,
            roles: tensors.iter().map(role).collect(),
            expected_text_encoders: vec![],
            identification: None,
            incomplete: vec![],
        }
    }
}

/// A key that must be present, with a shape (-1 for any size).
#[derive(Deserialize)]
pub(crate) struct Condition {
    pub key: String,
    pub shape: Option<Vec<i64>>,
}

#[derive(Deserialize)]
struct ArchRule {
    arch: Arch,
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
    /// arch -> component -> element count of a clean model.
    reference_elements: ReferenceElements,
}

/// `reference_elements`: arch -> component -> element count (and a `_doc` string).
#[derive(Deserialize)]
struct ReferenceElements {
    #[serde(rename = "_doc")]
    _doc: String,
    #[serde(flatten)]
    archs: BTreeMap<Arch, BTreeMap<String, u64>>,
}

/// One component's signature: `[canonical key, shape]` pairs.
type Signature = Vec<(String, Vec<i64>)>;

/// `signatures.json`: per arch and component, its signature (scripts/signatures.py).
#[derive(Deserialize)]
struct Signatures {
    aliases: BTreeMap<String, Vec<(String, String)>>,
    archs: BTreeMap<String, BTreeMap<String, Signature>>,
}

fn signatures() -> &'static Signatures {
    static SIGS: OnceLock<Signatures> = OnceLock::new();
    SIGS.get_or_init(|| {
        serde_json::from_str(include_str!("signatures.json")).expect("signatures.json is valid")
    })
}

/// Each arch rule's scored keys: its match conditions, then its unet signature keys not already there.
fn scored_keys() -> &'static Vec<Vec<Condition>> {
    static KEYS: OnceLock<Vec<Vec<Condition>>> = OnceLock::new();
    KEYS.get_or_init(|| {
        rules()
            .archs
            .iter()
            .map(|rule| {
                let mut v: Vec<Condition> = rule
                    .conditions
                    .iter()
                    .map(|c| Condition {
                        key: c.key.clone(),
                        shape: c.shape.clone(),
                    })
                    .collect();
                // The unet signature scores a rule of a checkpoint arch (diffusers rules have none).
                if !rule.components.is_empty() {
                    let sig = signatures()
                        .archs
                        .get(rule.arch.name())
                        .and_then(|c| c.get("unet"));
                    for (k, shape) in sig.into_iter().flatten() {
                        if !v.iter().any(|c| c.key == *k) {
                            v.push(Condition {
                                key: k.clone(),
                                shape: Some(shape.clone()),
                            });
                        }
                    }
                }
                v
            })
            .collect()
    })
}

/// How many of `keys` are present (under `prefix`, or an alias of `comp`) with their shape, and which are not.
fn score_keys<'a>(
    index: &HashMap<&str, &TensorInfo>,
    prefix: &str,
    comp: &str,
    keys: impl Iterator<Item = (&'a str, Option<&'a Vec<i64>>)>,
) -> (u64, u64, Vec<String>) {
    let aliases = signatures().aliases.get(comp);
    let mut key = String::new();
    let mut found = |k: &str, want: Option<&Vec<i64>>| {
        key.clear();
        key.push_str(prefix);
        key.push_str(k);
        index
            .get(key.as_str())
            .is_some_and(|t| shape_matches(want, &t.shape))
    };
    let (mut matched, mut of, mut missing) = (0, 0, vec![]);
    for (k, shape) in keys {
        of += 1;
        let hit = found(k, shape)
            || aliases.into_iter().flatten().any(|(from, to)| {
                k.strip_prefix(from.as_str())
                    .is_some_and(|rest| found(&format!("{to}{rest}"), shape))
            });
        if hit {
            matched += 1;
        } else {
            missing.push(k.to_string());
        }
    }
    (matched, of, missing)
}

/// An identification from a score: `missing` listed up to LISTED_MISSING.
fn identification(matched: u64, of: u64, mut missing: Vec<String>, extra: u64) -> Identification {
    let score = if of == 0 {
        0.0
    } else {
        matched as f64 / of as f64
    };
    let missing_count = missing.len() as u64;
    missing.truncate(LISTED_MISSING);
    Identification {
        score: (score * 10_000.0).round() / 10_000.0,
        matched,
        of,
        missing,
        missing_count,
        extra,
        confident: score >= CONFIDENT_SCORE,
        threshold: CONFIDENT_SCORE,
    }
}

/// The best score any arch's signature of component `comp` gets on a file holding that component alone
/// (bare names), with what that signature misses; `None` when no arch has a signature for `comp`.
pub(crate) fn score_component(
    index: &HashMap<&str, &TensorInfo>,
    comp: &str,
) -> Option<(u64, u64, Vec<String>)> {
    signatures()
        .archs
        .values()
        .filter_map(|comps| comps.get(comp))
        .map(|sig| {
            score_keys(
                index,
                "",
                comp,
                sig.iter().map(|(k, s)| (k.as_str(), Some(s))),
            )
        })
        .max_by(|a, b| {
            (a.0 as f64 / a.1.max(1) as f64).total_cmp(&(b.0 as f64 / b.1.max(1) as f64))
        })
}

/// A standalone file holding one component: `whole`, scored against that component's signatures.
pub(crate) fn whole_scored(
    tensors: &[TensorInfo],
    index: &HashMap<&str, &TensorInfo>,
    kind: Kind,
    arch: Arch,
    comp: &'static str,
) -> Classification {
    let mut c = whole(tensors, kind, arch, comp);
    if let Some((matched, of, missing)) = score_component(index, comp) {
        let id = identification(matched, of, missing.clone(), 0);
        if !missing.is_empty() && id.score >= ARCH_FLOOR {
            c.incomplete.push(Incomplete {
                component: comp,
                missing,
                of,
            });
        }
        c.identification = Some(id);
    }
    c
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        serde_json::from_str(include_str!("rules.json")).expect("rules.json is valid")
    })
}

/// Element count of each component of a clean model of `arch` (from the real layouts), if known.
pub fn reference_elements(arch: Arch) -> Option<BTreeMap<&'static str, u64>> {
    let m = rules().reference_elements.archs.get(&arch)?;
    Some(m.iter().map(|(c, n)| (leak(c), *n)).collect())
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
pub(crate) fn leak(s: &str) -> &'static str {
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

pub(crate) fn shape_matches(want: Option<&Vec<i64>>, got: &[u64]) -> bool {
    match want {
        None => true,
        Some(w) => {
            w.len() == got.len() && w.iter().zip(got).all(|(w, g)| *w < 0 || *w as u64 == *g)
        }
    }
}

/// How well the best arch rule matched.
struct ArchMatch {
    rule: &'static ArchRule,
    matched: u64,
    of: u64,
    missing: Vec<String>,
}

impl ArchMatch {
    fn score(&self) -> f64 {
        self.matched as f64 / self.of.max(1) as f64
    }
}

/// Scores every arch rule with `prefix` prepended to each key; the best one (the first on a tie).
fn best_arch(index: &HashMap<&str, &TensorInfo>, prefix: &str) -> Option<ArchMatch> {
    let mut best: Option<ArchMatch> = None;
    for (rule, keys) in rules().archs.iter().zip(scored_keys()) {
        let (matched, of, missing) = score_keys(
            index,
            prefix,
            "unet",
            keys.iter().map(|c| (c.key.as_str(), c.shape.as_ref())),
        );
        let m = ArchMatch {
            rule,
            matched,
            of,
            missing,
        };
        if best.as_ref().is_none_or(|b| m.score() > b.score()) {
            best = Some(m);
        }
    }
    best
}

/// The best arch rule if it scores at least ARCH_FLOOR.
fn match_arch(index: &HashMap<&str, &TensorInfo>, prefix: &str) -> Option<ArchMatch> {
    best_arch(index, prefix).filter(|m| m.score() >= ARCH_FLOOR)
}

/// Classifies a tensor table by key names and shapes.
pub fn classify(tensors: &[TensorInfo]) -> Classification {
    let index: HashMap<&str, &TensorInfo> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    // 1. A full checkpoint: a diffusion model under its LDM prefix.
    for prefix in &rules().unet_prefixes {
        if !tensors.iter().any(|t| t.name.starts_with(prefix.as_str())) {
            continue; // no diffusion model under this prefix: nothing to score
        }
        if let Some(m) = match_arch(&index, prefix) {
            return checkpoint(tensors, &index, prefix, m);
        }
    }
    if tensors
        .iter()
        .any(|t| t.name.starts_with("model.diffusion_model."))
    {
        let mut c = checkpoint_unknown(tensors);
        if let Some(m) = best_arch(&index, "model.diffusion_model.") {
            c.identification = Some(identification(m.matched, m.of, m.missing, junk(&c)));
        }
        return c;
    }
    // 2. A diffusion model alone (LDM or diffusers names).
    if let Some(m) = match_arch(&index, "") {
        let mut c = whole(tensors, Kind::Unet, m.rule.arch, "unet");
        unet_incomplete(&mut c, &m);
        c.identification = Some(identification(m.matched, m.of, m.missing, 0));
        return c;
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
                .is_some_and(|t| shape_matches(c.shape.as_ref(), &t.shape))
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
        Kind::Unet,
        rule.arch,
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
    kind: Kind,
    arch: Arch,
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

/// Tensors placed in no component (`Role::Junk`).
fn junk(c: &Classification) -> u64 {
    c.roles.iter().filter(|r| **r == Role::Junk).count() as u64
}

/// Notes the unet as incomplete when the arch matched with keys missing.
fn unet_incomplete(c: &mut Classification, m: &ArchMatch) {
    if !m.missing.is_empty() {
        c.incomplete.push(Incomplete {
            component: "unet",
            missing: m.missing.clone(),
            of: m.of,
        });
    }
}

fn checkpoint(
    tensors: &[TensorInfo],
    index: &HashMap<&str, &TensorInfo>,
    unet_prefix: &str,
    m: ArchMatch,
) -> Classification {
    let rule = m.rule;
    let comps: Vec<(&'static str, &str)> = rule
        .components
        .iter()
        .flat_map(|(c, ps)| ps.iter().map(move |p| (leak(c), p.as_str())))
        .collect();
    let mut c = Classification {
        expected_text_encoders: rule.text_encoders.iter().map(|s| leak(s)).collect(),
        ..Classification::by_role(tensors, Kind::Checkpoint, rule.arch, |t| {
            role_in_checkpoint(&t.name, &comps)
        })
    };
    unet_incomplete(&mut c, &m);
    // Every other component present is checked against its signature under the prefix it uses.
    let sigs = signatures().archs.get(rule.arch.name());
    for (comp, sig) in sigs.into_iter().flatten() {
        let Some(prefixes) = rule.components.get(comp) else {
            continue;
        };
        if comp == "unet" {
            continue;
        }
        let used = prefixes.iter().find(|p| {
            p.as_str() != unet_prefix && tensors.iter().any(|t| t.name.starts_with(p.as_str()))
        });
        let Some(prefix) = used else {
            continue; // absent: vae.missing / text-encoder.missing say so
        };
        let (_, of, missing) = score_keys(
            index,
            prefix,
            comp,
            sig.iter().map(|(k, s)| (k.as_str(), Some(s))),
        );
        if !missing.is_empty() {
            c.incomplete.push(Incomplete {
                component: leak(comp),
                missing,
                of,
            });
        }
    }
    c.identification = Some(identification(m.matched, m.of, m.missing, junk(&c)));
    c
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
    Classification::by_role(tensors, Kind::Checkpoint, Arch::Unknown, |t| {
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
