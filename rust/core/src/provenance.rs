//! How a model was made, as its `__metadata__` tells it: merge recipes, parents, base model, training tool.
//!
//! Read keys: `sd_merge_recipe` + `sd_merge_models` (the web UI's merger and extensions such as
//! supermerger; JSON strings), `mecha_recipe` (sd-mecha's serialized recipe), `modelspec.*`
//! (Stability's ModelSpec) and kohya sd-scripts' `ss_*` training keys. Nothing here is trusted for a
//! decision: it is what the file says about itself.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Longest text value kept in a provenance field, in characters.
const TEXT_MAX: usize = 256;
/// Most parents listed (a recipe of recipes can name many).
const MAX_PARENTS: usize = 32;
/// Most multipliers kept from one recipe.
const MAX_MULTIPLIERS: usize = 32;

/// What the metadata says about how the model was made.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Provenance {
    /// Tools that wrote what follows (`webui`, `sd-webui-supermerger`, `sd-mecha`, `kohya-ss/sd-scripts`, `modelspec`).
    pub tools: Vec<String>,
    /// The merge that produced the file, when a merge recipe is present.
    pub merge: Option<Merge>,
    /// The models it was made from (merge inputs, or the model a LoRA/fine-tune was trained on).
    pub parents: Vec<Parent>,
    /// The base model it belongs to (`ss_base_model_version`, `modelspec.architecture`).
    pub base_model: Option<String>,
    /// How it was trained, when a trainer recorded it.
    pub training: Option<Training>,
    /// The `__metadata__` keys this was read from.
    pub keys: Vec<String>,
}

/// One merge step as recorded by the merger.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Merge {
    /// `interp_method` (web UI), `mode` (supermerger) or the merge methods of an sd-mecha recipe.
    pub method: Option<String>,
    /// Supermerger's `calcmode` (how each key is combined).
    pub calcmode: Option<String>,
    /// Multipliers by name (`multiplier`, `base_alpha`, `weights_alpha`, an sd-mecha `alpha`, ...).
    pub multipliers: BTreeMap<String, Value>,
}

/// A model this one was made from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Parent {
    /// Its role: `primary`/`secondary`/`tertiary` (web UI), `model_a`/`model_b`/`model_c`, `model` (sd-mecha), `trained_on`.
    pub role: String,
    pub name: Option<String>,
    /// Full SHA-256 as the merger recorded it (lowercase hex).
    pub sha256: Option<String>,
    /// The web UI's legacy 8-hex hash, or kohya's `ss_sd_model_hash`.
    pub legacy_hash: Option<String>,
    /// True when the parent was itself a merge (its own recipe is nested in `sd_merge_models`).
    pub merged: bool,
}

/// Training facts kohya's sd-scripts record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Training {
    pub network_module: Option<String>,
    pub network_dim: Option<String>,
    pub network_alpha: Option<String>,
    pub epochs: Option<String>,
    pub steps: Option<String>,
    pub resolution: Option<String>,
    pub output_name: Option<String>,
}

fn text(v: &Value) -> Option<String> {
    let s = match v {
        Value::Null => return None,
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    };
    if s.is_empty() || s == "None" || s == "null" {
        return None;
    }
    Some(if s.chars().count() > TEXT_MAX {
        let cut: String = s.chars().take(TEXT_MAX).collect();
        format!("{cut}…")
    } else {
        s
    })
}

/// A metadata value as JSON: a string holding JSON is parsed, anything else taken as is.
fn json_of(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) => serde_json::from_str(s).ok(),
        Value::Null => None,
        other => Some(other.clone()),
    }
}

/// Parses the provenance out of a file's `__metadata__`; `None` when none of the keys is present.
pub fn parse(meta: &BTreeMap<String, Value>) -> Option<Provenance> {
    let mut p = Provenance::default();
    if let Some(v) = meta.get("sd_merge_recipe") {
        p.keys.push("sd_merge_recipe".into());
        merge_recipe(v, meta.get("sd_merge_models"), &mut p);
    }
    if meta.contains_key("sd_merge_models") {
        p.keys.push("sd_merge_models".into());
        if p.merge.is_none() {
            merge_models(meta.get("sd_merge_models"), &mut p);
        }
    }
    if let Some(v) = meta.get("mecha_recipe") {
        p.keys.push("mecha_recipe".into());
        if let Some(s) = v.as_str() {
            mecha_recipe(s, &mut p);
        }
    }
    modelspec(meta, &mut p);
    kohya(meta, &mut p);
    if p.keys.is_empty() {
        return None;
    }
    p.parents.truncate(MAX_PARENTS);
    p.tools.dedup();
    Some(p)
}

fn add_tool(p: &mut Provenance, t: &str) {
    if !p.tools.iter().any(|x| x == t) {
        p.tools.push(t.to_string());
    }
}

/// `sd_merge_recipe`: `type` "webui" (primary/secondary/tertiary hashes, `interp_method`, `multiplier`)
/// or "sd-webui-supermerger" (`model_a`..`model_c`, `mode`, `calcmode`, `base_alpha`, `weights_alpha`, ...).
fn merge_recipe(v: &Value, models: Option<&Value>, p: &mut Provenance) {
    let Some(Value::Object(r)) = json_of(v) else {
        add_tool(p, "unknown merger");
        p.merge = Some(Merge::default());
        return;
    };
    let get = |k: &str| r.get(k).and_then(text);
    let kind = get("type").unwrap_or_else(|| "unknown merger".into());
    add_tool(p, &kind);
    let mut m = Merge {
        method: get("interp_method").or_else(|| get("mode")),
        calcmode: get("calcmode"),
        multipliers: BTreeMap::new(),
    };
    for k in [
        "multiplier",
        "base_alpha",
        "base_beta",
        "weights_alpha",
        "weights_beta",
    ] {
        if let Some(x) = r.get(k).filter(|x| !x.is_null()) {
            m.multipliers.insert(k.to_string(), clip_value(x));
        }
    }
    p.merge = Some(m);
    let roles = [
        ("primary_model_hash", "primary"),
        ("secondary_model_hash", "secondary"),
        ("tertiary_model_hash", "tertiary"),
        ("model_a", "model_a"),
        ("model_b", "model_b"),
        ("model_c", "model_c"),
    ];
    let names = models.and_then(json_of);
    for (key, role) in roles {
        let Some(hash) = get(key) else { continue };
        let mut parent = Parent {
            role: role.to_string(),
            ..Default::default()
        };
        set_hash(&mut parent, &hash);
        if let Some(Value::Object(info)) = names.as_ref().and_then(|n| n.get(hash.as_str())) {
            fill_from_model_info(&mut parent, info);
        } else if parent.sha256.is_none() {
            // Supermerger falls back to the model's name when it has no hash for it.
            parent.name = Some(hash);
            parent.legacy_hash = None;
        }
        p.parents.push(parent);
    }
}

/// `sd_merge_models` alone: `{sha256: {name, legacy_hash, sd_merge_recipe}}`.
fn merge_models(v: Option<&Value>, p: &mut Provenance) {
    let Some(Value::Object(models)) = v.and_then(json_of) else {
        return;
    };
    for (hash, info) in models.iter().take(MAX_PARENTS) {
        let mut parent = Parent {
            role: "parent".into(),
            ..Default::default()
        };
        set_hash(&mut parent, hash);
        if let Value::Object(info) = info {
            fill_from_model_info(&mut parent, info);
        }
        p.parents.push(parent);
    }
}

fn fill_from_model_info(parent: &mut Parent, info: &serde_json::Map<String, Value>) {
    parent.name = info.get("name").and_then(text);
    if let Some(h) = info.get("legacy_hash").and_then(text) {
        parent.legacy_hash = Some(h.to_ascii_lowercase());
    }
    parent.merged = info.get("sd_merge_recipe").is_some_and(|r| !r.is_null());
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A recorded hash: 64 hex is a SHA-256, 8-12 hex a short/legacy hash.
fn set_hash(parent: &mut Parent, hash: &str) {
    let h = hash.trim().trim_start_matches("0x").to_ascii_lowercase();
    if h.len() == 64 && is_hex(&h) {
        parent.sha256 = Some(h);
    } else if (8..=12).contains(&h.len()) && is_hex(&h) {
        parent.legacy_hash = Some(h);
    }
}

fn clip_value(v: &Value) -> Value {
    match v {
        Value::String(_) => text(v).map(Value::String).unwrap_or(Value::Null),
        Value::Array(a) if a.len() > 64 => Value::String(format!("[{} values]", a.len())),
        other => other.clone(),
    }
}

/// sd-mecha's serialized recipe: one statement per line, `model "<path>" ...` for inputs and
/// `merge "<method>" &0 &1 alpha=0.5 ...` for steps; parameters given inline are multipliers.
fn mecha_recipe(s: &str, p: &mut Provenance) {
    add_tool(p, "sd-mecha");
    let mut methods: Vec<String> = vec![];
    let mut multipliers = BTreeMap::new();
    for line in s.lines() {
        let line = line.trim();
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        match cmd {
            "model" => {
                if let Some(name) = first_quoted(rest) {
                    p.parents.push(Parent {
                        role: "model".into(),
                        name: text(&Value::String(name)),
                        ..Default::default()
                    });
                }
            }
            "merge" => {
                if let Some(m) = first_quoted(rest) {
                    if !methods.contains(&m) {
                        methods.push(m);
                    }
                }
                for tok in rest.split_whitespace() {
                    if let Some((k, v)) = tok.split_once('=') {
                        if v.starts_with('&') || multipliers.len() >= MAX_MULTIPLIERS {
                            continue;
                        }
                        let value = v
                            .parse::<f64>()
                            .ok()
                            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                            .unwrap_or_else(|| Value::String(v.trim_matches('"').to_string()));
                        multipliers.entry(k.to_string()).or_insert(value);
                    }
                }
            }
            _ => {}
        }
    }
    let method = (!methods.is_empty()).then(|| methods.join(", "));
    match &mut p.merge {
        Some(m) => {
            m.method = m.method.take().or(method);
            for (k, v) in multipliers {
                m.multipliers.entry(k).or_insert(v);
            }
        }
        None => {
            p.merge = Some(Merge {
                method,
                calcmode: None,
                multipliers,
            })
        }
    }
}

fn first_quoted(s: &str) -> Option<String> {
    let start = s.find('"')? + 1;
    let end = s[start..].find('"')? + start;
    Some(s[start..end].to_string())
}

/// `modelspec.*`: the architecture names the base model; `title`/`implementation` go to tools.
fn modelspec(meta: &BTreeMap<String, Value>, p: &mut Provenance) {
    let keys: Vec<&String> = meta
        .keys()
        .filter(|k| k.starts_with("modelspec."))
        .collect();
    if keys.is_empty() {
        return;
    }
    add_tool(p, "modelspec");
    p.keys.extend(keys.iter().map(|k| k.to_string()));
    if let Some(a) = meta.get("modelspec.architecture").and_then(text) {
        p.base_model = Some(a);
    }
}

/// kohya sd-scripts: `ss_sd_model_name`/`ss_sd_model_hash` (trained on), `ss_base_model_version`,
/// `ss_network_*`, epochs and steps.
fn kohya(meta: &BTreeMap<String, Value>, p: &mut Provenance) {
    const KEYS: [&str; 12] = [
        "ss_sd_model_name",
        "ss_sd_model_hash",
        "ss_new_sd_model_hash",
        "ss_base_model_version",
        "ss_network_module",
        "ss_network_dim",
        "ss_network_alpha",
        "ss_num_epochs",
        "ss_epoch",
        "ss_steps",
        "ss_resolution",
        "ss_output_name",
    ];
    let present: Vec<&str> = KEYS.into_iter().filter(|k| meta.contains_key(*k)).collect();
    if present.is_empty() {
        return;
    }
    add_tool(p, "kohya-ss/sd-scripts");
    p.keys.extend(present.iter().map(|k| k.to_string()));
    let get = |k: &str| meta.get(k).and_then(text);
    if let Some(b) = get("ss_base_model_version") {
        p.base_model = Some(b);
    }
    let name = get("ss_sd_model_name");
    let sha = get("ss_new_sd_model_hash");
    let legacy = get("ss_sd_model_hash");
    if name.is_some() || sha.is_some() || legacy.is_some() {
        let mut parent = Parent {
            role: "trained_on".into(),
            name,
            ..Default::default()
        };
        if let Some(h) = legacy {
            set_hash(&mut parent, &h);
        }
        if let Some(h) = sha {
            set_hash(&mut parent, &h);
        }
        p.parents.push(parent);
    }
    p.training = Some(Training {
        network_module: get("ss_network_module"),
        network_dim: get("ss_network_dim"),
        network_alpha: get("ss_network_alpha"),
        epochs: get("ss_num_epochs").or_else(|| get("ss_epoch")),
        steps: get("ss_steps"),
        resolution: get("ss_resolution"),
        output_name: get("ss_output_name"),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect()
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn webui_merge_recipe_with_parent_names() {
        let recipe = json!({"type": "webui", "primary_model_hash": A, "secondary_model_hash": B,
            "tertiary_model_hash": null, "interp_method": "Weighted sum", "multiplier": 0.3,
            "save_as_half": true})
        .to_string();
        let models = json!({A: {"name": "a.safetensors", "legacy_hash": "ABCD1234", "sd_merge_recipe": null},
            B: {"name": "b.ckpt", "legacy_hash": "0000ffff", "sd_merge_recipe": {"type": "webui"}}})
        .to_string();
        let p = parse(&meta(&[
            ("sd_merge_recipe", &recipe),
            ("sd_merge_models", &models),
        ]))
        .unwrap();
        assert_eq!(p.tools, ["webui"]);
        let m = p.merge.unwrap();
        assert_eq!(m.method.as_deref(), Some("Weighted sum"));
        assert_eq!(m.multipliers["multiplier"], json!(0.3));
        assert_eq!(p.parents.len(), 2);
        assert_eq!(
            (p.parents[0].role.as_str(), p.parents[0].name.as_deref()),
            ("primary", Some("a.safetensors"))
        );
        assert_eq!(p.parents[0].sha256.as_deref(), Some(A));
        assert_eq!(p.parents[0].legacy_hash.as_deref(), Some("abcd1234"));
        assert!(!p.parents[0].merged);
        assert!(p.parents[1].merged);
        assert_eq!(p.keys, ["sd_merge_recipe", "sd_merge_models"]);
    }

    #[test]
    fn supermerger_recipe() {
        let recipe = json!({"type": "sd-webui-supermerger", "weights_alpha": "0,1,1,1,1,1,1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0",
            "model_a": A, "model_b": "someModel_v2", "model_c": null, "base_alpha": 0.5, "base_beta": 0.25,
            "mode": "Add difference", "mbw": true, "calcmode": "cosineA"})
        .to_string();
        let p = parse(&meta(&[("sd_merge_recipe", &recipe)])).unwrap();
        let m = p.merge.unwrap();
        assert_eq!(
            (m.method.as_deref(), m.calcmode.as_deref()),
            (Some("Add difference"), Some("cosineA"))
        );
        assert_eq!(m.multipliers["base_beta"], json!(0.25));
        assert!(m.multipliers.contains_key("weights_alpha"));
        assert!(!m.multipliers.contains_key("weights_beta"));
        let roles: Vec<_> = p.parents.iter().map(|x| x.role.as_str()).collect();
        assert_eq!(roles, ["model_a", "model_b"]);
        assert_eq!(p.parents[1].name.as_deref(), Some("someModel_v2"));
        assert_eq!(p.parents[1].sha256, None);
    }

    #[test]
    fn mecha_recipe_models_and_methods() {
        let recipe = "version 0.1.0\nmodel \"base.safetensors\" \"sd1-ldm\"\nmodel \"style.safetensors\" \"sd1-ldm\"\nmerge \"weighted_sum\" &0 &1 alpha=0.4\n";
        let p = parse(&meta(&[("mecha_recipe", recipe)])).unwrap();
        assert_eq!(p.tools, ["sd-mecha"]);
        let names: Vec<_> = p.parents.iter().map(|x| x.name.clone().unwrap()).collect();
        assert_eq!(names, ["base.safetensors", "style.safetensors"]);
        let m = p.merge.unwrap();
        assert_eq!(m.method.as_deref(), Some("weighted_sum"));
        assert_eq!(m.multipliers["alpha"], json!(0.4));
    }

    #[test]
    fn kohya_and_modelspec() {
        let p = parse(&meta(&[
            ("ss_sd_model_name", "sd_xl_base_1.0.safetensors"),
            ("ss_new_sd_model_hash", &A.to_uppercase()),
            ("ss_base_model_version", "sdxl_base_v1-0"),
            ("ss_network_module", "networks.lora"),
            ("ss_network_dim", "32"),
            ("ss_num_epochs", "10"),
            ("modelspec.architecture", "stable-diffusion-xl-v1-base/lora"),
            ("modelspec.title", "x"),
        ]))
        .unwrap();
        assert_eq!(p.tools, ["modelspec", "kohya-ss/sd-scripts"]);
        // kohya's own base-model key is read last and wins over modelspec's architecture.
        assert_eq!(p.base_model.as_deref(), Some("sdxl_base_v1-0"));
        assert_eq!(p.parents[0].role, "trained_on");
        assert_eq!(p.parents[0].sha256.as_deref(), Some(A));
        let t = p.training.unwrap();
        assert_eq!(
            (
                t.network_module.as_deref(),
                t.network_dim.as_deref(),
                t.epochs.as_deref()
            ),
            (Some("networks.lora"), Some("32"), Some("10"))
        );
    }

    #[test]
    fn silent_without_provenance_keys() {
        assert_eq!(
            parse(&meta(&[("format", "pt"), ("unet:0:rank", "4")])),
            None
        );
        assert_eq!(parse(&BTreeMap::new()), None);
    }

    #[test]
    fn garbage_recipe_is_still_a_merge() {
        let p = parse(&meta(&[("sd_merge_recipe", "{not json")])).unwrap();
        assert!(p.merge.is_some());
        assert!(p.parents.is_empty());
    }
}
