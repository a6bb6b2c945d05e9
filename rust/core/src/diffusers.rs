//! A diffusers folder (`model_index.json` + `unet/`, `vae/`, `text_encoder/`...) as one report entry.
//!
//! [`detect`] is the walk's hook: a directory it recognises is reported once, by [`scan_diffusers`],
//! and the walk does not descend into it. Each weight file inside is scanned as usual; the folder's
//! report sums them, names components by subfolder, and lists every part (with sharded weights'
//! `*.index.json`).

use crate::classify::classify;
use crate::kind::{Arch, Kind};
use crate::report::{ComponentReport, FileError, FileReport, Finding, Severity};
use crate::scan::{scan_file, ScanOptions};
use crate::sniff::Format;
use crate::table::open_table;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The index file every diffusers pipeline folder holds.
pub const MODEL_INDEX: &str = "model_index.json";
/// Largest `model_index.json` / `*.index.json` read (they are a few KB; a shard index of a huge model ~100 KB).
const MAX_JSON: u64 = 16 << 20;
/// Extensions of weight files diffusers and transformers write.
const WEIGHT_EXTS: [&str; 4] = ["safetensors", "bin", "ckpt", "pt"];

/// One file of a diffusers folder, as listed in the folder's report.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Part {
    /// Path relative to the folder (`unet/diffusion_pytorch_model.safetensors`).
    pub path: String,
    /// The subfolder (pipeline component) it belongs to.
    pub component: String,
    /// `weights` or `index` (a sharded checkpoint's `*.index.json`).
    #[serde(deserialize_with = "crate::report::interned")]
    pub role: crate::report::Name,
    pub size: u64,
    pub format: Format,
    pub kind: Kind,
    pub arch: Arch,
    pub tensors: u64,
}

/// What `detect` found: the folder's components (subfolder -> weight files, index files).
#[derive(Clone, Debug, Default)]
pub struct Folder {
    pub class_name: Option<String>,
    pub components: BTreeMap<String, ComponentFiles>,
    /// Total bytes and newest mtime of every weight and index file (what the walk reports).
    pub size: u64,
    pub mtime: f64,
}

/// The files of one subfolder.
#[derive(Clone, Debug, Default)]
pub struct ComponentFiles {
    pub weights: Vec<PathBuf>,
    pub indexes: Vec<PathBuf>,
}

fn read_json(path: &Path) -> Option<Value> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_JSON {
        return None;
    }
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// A diffusers pipeline folder: `dir/model_index.json` is a JSON object with a `_class_name` or
/// `_diffusers_version`; `None` for any other directory.
pub fn detect(dir: &Path) -> Option<Folder> {
    let index = read_json(&dir.join(MODEL_INDEX))?;
    let obj = index.as_object()?;
    if !obj.contains_key("_class_name") && !obj.contains_key("_diffusers_version") {
        return None;
    }
    let mut f = Folder {
        class_name: obj
            .get("_class_name")
            .and_then(Value::as_str)
            .map(String::from),
        ..Default::default()
    };
    let add = |p: &Path, f: &mut Folder| {
        if let Ok(m) = std::fs::metadata(p) {
            f.size += m.len();
            f.mtime = f.mtime.max(crate::walk::mtime_of(&m));
        }
    };
    add(&dir.join(MODEL_INDEX), &mut f);
    // Components are the entries `name: [library, class]` (the library null when the pipeline has none).
    for (name, v) in obj {
        let is_component = !name.starts_with('_')
            && v.as_array()
                .is_some_and(|a| a.len() == 2 && a.iter().all(|x| !x.is_null()));
        let sub = dir.join(name);
        if !is_component || !sub.is_dir() {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&sub) else {
            continue;
        };
        let mut files = ComponentFiles::default();
        let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        names.sort();
        for p in names {
            let Some(file_name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !p.is_file() {
                continue;
            }
            if file_name.ends_with(".index.json") {
                files.indexes.push(p.clone());
                add(&p, &mut f);
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| WEIGHT_EXTS.contains(&e))
            {
                files.weights.push(p.clone());
                add(&p, &mut f);
            }
        }
        if !files.weights.is_empty() || !files.indexes.is_empty() {
            f.components.insert(name.clone(), files);
        }
    }
    Some(f)
}

fn rel(dir: &Path, p: &Path) -> String {
    p.strip_prefix(dir)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// Scans a diffusers folder as one model; `dir` must be what [`detect`] accepted.
pub fn scan_diffusers(dir: &Path, opts: &ScanOptions) -> FileReport {
    let mut r = FileReport {
        path: dir.to_string_lossy().into_owned(),
        format: Format::Diffusers,
        ..Default::default()
    };
    let Some(folder) = detect(dir) else {
        r.format = Format::Unknown;
        r.error = Some(FileError {
            kind: crate::report::ErrorKind::Format,
            message: format!(
                "{}: not a diffusers folder (no readable {MODEL_INDEX})",
                r.path
            ),
        });
        return r;
    };
    r.size = folder.size;
    r.mtime = folder.mtime;
    if let Some(c) = &folder.class_name {
        r.metadata
            .insert("_class_name".into(), Value::String(c.clone()));
    }
    let mut archs: BTreeMap<String, Arch> = BTreeMap::new();
    for (comp, files) in &folder.components {
        let mut total = ComponentReport::default();
        let mut comp_hash: Option<String> = None;
        let mut shards_seen: Vec<String> = vec![];
        for idx in &files.indexes {
            r.parts.push(Part {
                path: rel(dir, idx),
                component: comp.clone(),
                role: "index",
                size: std::fs::metadata(idx).map(|m| m.len()).unwrap_or(0),
                format: Format::Json,
                kind: Kind::Index,
                arch: Arch::Unknown,
                tensors: 0,
            });
            check_index(dir, idx, &files.weights, &mut r.findings);
        }
        let variants = preferred(&files.weights);
        for w in &files.weights {
            let sub = scan_file(w, opts);
            let part_path = rel(dir, w);
            r.parts.push(Part {
                path: part_path.clone(),
                component: comp.clone(),
                role: "weights",
                size: sub.size,
                format: sub.format,
                kind: sub.kind,
                arch: sub.arch,
                tensors: sub.tensors,
            });
            let sharded = files.weights.len() > 1 && is_shard(w);
            for mut f in sub.findings {
                // One shard holds part of a model: whole-model checks judge the folder, not the shard.
                if sharded && WHOLE_MODEL_CHECKS.contains(&f.check) {
                    continue;
                }
                f.message = format!("{part_path}: {}", f.message);
                if let Value::Object(m) = &mut f.details {
                    m.insert("file".into(), Value::String(part_path.clone()));
                }
                r.findings.push(f);
            }
            if let Some(e) = sub.error {
                r.findings.push(Finding::new(
                    "diffusers.unreadable-part",
                    Severity::Error,
                    e.message,
                    json!({"file": part_path, "kind": e.kind}),
                ));
            }
            // Totals count one variant of each component (fp16 and fp32 copies are alternatives).
            if !variants.contains(w) {
                continue;
            }
            shards_seen.push(part_path);
            r.tensors += sub.tensors;
            for (d, n) in &sub.dtypes {
                *r.dtypes.entry(d.clone()).or_default() += n;
                *total.dtypes.entry(d.clone()).or_default() += n;
            }
            total.tensors += sub.tensors;
            total.bytes += sub.dtypes.values().sum::<u64>();
            let weights: Vec<&ComponentReport> = sub
                .components
                .iter()
                .filter(|(k, _)| k.as_str() != "buffers")
                .map(|(_, v)| v)
                .collect();
            if variants.len() == 1 && weights.len() == 1 {
                comp_hash = weights[0].blake3.clone();
            }
            if sub.arch != Arch::Unknown {
                archs.insert(comp.clone(), sub.arch);
            }
            for (k, v) in sub.wasted_bytes {
                *r.wasted_bytes.entry(k).or_default() += v;
            }
        }
        // A sharded component is identified from all its shards together.
        if variants.len() > 1 && !archs.contains_key(comp) {
            let mut all = vec![];
            for w in &variants {
                if let Ok(t) = open_table(w) {
                    all.extend(t.tensors);
                }
            }
            let c = classify(&all);
            if c.arch != Arch::Unknown {
                archs.insert(comp.clone(), c.arch);
            }
        }
        total.blake3 = comp_hash;
        r.components.insert(comp.clone(), total);
    }
    r.arch = ["unet", "transformer", "prior", "decoder"]
        .iter()
        .find_map(|c| archs.get(*c).copied())
        .or_else(|| pipeline_arch(folder.class_name.as_deref()))
        .unwrap_or(Arch::Unknown);
    let denoiser = ["unet", "transformer"]
        .iter()
        .any(|c| r.components.contains_key(*c));
    r.kind = if denoiser {
        Kind::Checkpoint
    } else {
        Kind::Unknown
    };
    if folder.components.is_empty() {
        r.findings.push(Finding::new(
            "diffusers.no-weights",
            Severity::Error,
            format!(
                "{}: {MODEL_INDEX} names components but no subfolder holds weights",
                r.path
            ),
            json!({"class_name": folder.class_name}),
        ));
    }
    r.findings
        .sort_by(|a, b| b.severity.cmp(&a.severity).then(a.check.cmp(b.check)));
    r
}

/// Checks that judge a whole model, meaningless on one shard of it.
const WHOLE_MODEL_CHECKS: [&str; 5] = [
    "size.unusual",
    "vae.missing",
    "text-encoder.missing",
    "component.incomplete",
    "junk.unknown-keys",
];

/// `name-00001-of-00002.ext`: one shard of a sharded checkpoint.
fn is_shard(p: &Path) -> bool {
    p.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.rfind("-of-").map(|i| &s[i + 4..]))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Arch of a pipeline class when no weight file tells it (rules.json `diffusers_pipelines`).
fn pipeline_arch(class: Option<&str>) -> Option<Arch> {
    use std::sync::OnceLock;
    static MAP: OnceLock<BTreeMap<String, Arch>> = OnceLock::new();
    let map = MAP.get_or_init(|| {
        let v: Value = serde_json::from_str(include_str!("rules.json")).unwrap_or_default();
        v["diffusers_pipelines"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !k.starts_with('_'))
                    .filter_map(|(k, v)| Some((k.clone(), serde_json::from_value(v.clone()).ok()?)))
                    .collect()
            })
            .unwrap_or_default()
    });
    map.get(class?).copied()
}

/// The weight files whose tensors count: the shards of one variant, the plain (full-precision)
/// safetensors first, then a `.fp16`-style variant, then pickles.
fn preferred(weights: &[PathBuf]) -> Vec<PathBuf> {
    let name = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    // `diffusion_pytorch_model.fp16.safetensors` -> variant "fp16"; shards `...-00001-of-00002.safetensors`.
    let key = |p: &PathBuf| {
        let n = name(p);
        let ext = p
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = n.trim_end_matches(&format!(".{ext}")).to_string();
        let stem = match stem.rfind("-of-").and_then(|i| stem[..i].rfind('-')) {
            Some(j) => stem[..j].to_string(),
            None => stem,
        };
        let variant = stem.split_once('.').map(|(_, v)| v.to_string());
        (ext != "safetensors", variant.is_some(), variant)
    };
    let best = weights.iter().map(key).min();
    weights
        .iter()
        .filter(|p| Some(key(p)) == best)
        .cloned()
        .collect()
}

/// A sharded checkpoint's index: every shard its `weight_map` names must be in the folder.
fn check_index(dir: &Path, idx: &Path, weights: &[PathBuf], findings: &mut Vec<Finding>) {
    let rel_idx = rel(dir, idx);
    let Some(map) = read_json(idx)
        .and_then(|v| v.get("weight_map").cloned())
        .and_then(|m| m.as_object().cloned())
    else {
        findings.push(Finding::new(
            "diffusers.bad-index",
            Severity::Error,
            format!("{rel_idx}: not a readable shard index (no `weight_map` object)"),
            json!({"file": rel_idx}),
        ));
        return;
    };
    let parent = idx.parent().unwrap_or(dir);
    let mut missing: Vec<String> = map
        .values()
        .filter_map(Value::as_str)
        .filter(|s| !weights.iter().any(|w| w == &parent.join(s)))
        .map(String::from)
        .collect();
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        findings.push(Finding::new(
            "diffusers.missing-shard",
            Severity::Error,
            format!(
                "{rel_idx} names {} shard(s) that are not in the folder: {}",
                missing.len(),
                missing.join(", ")
            ),
            json!({"file": rel_idx, "missing": missing, "keys": map.len()}),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(names: &[&str]) -> Vec<PathBuf> {
        names
            .iter()
            .map(|n| PathBuf::from("unet").join(n))
            .collect()
    }

    #[test]
    fn one_variant_counts_plain_safetensors_first() {
        let w = paths(&[
            "diffusion_pytorch_model.bin",
            "diffusion_pytorch_model.fp16.safetensors",
            "diffusion_pytorch_model.safetensors",
        ]);
        assert_eq!(
            preferred(&w),
            paths(&["diffusion_pytorch_model.safetensors"])
        );
        let w = paths(&[
            "diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
            "diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
            "diffusion_pytorch_model.bin",
        ]);
        assert_eq!(preferred(&w), w[..2].to_vec());
        assert!(is_shard(&w[0]) && !is_shard(&w[2]));
        assert!(!is_shard(Path::new("model-of-x.safetensors")));
    }

    #[test]
    fn detect_needs_a_pipeline_index() {
        let dir = tempfile::tempdir().unwrap();
        assert!(detect(dir.path()).is_none());
        std::fs::write(
            dir.path().join(MODEL_INDEX),
            b"{\"unet\": [\"diffusers\", \"X\"]}",
        )
        .unwrap();
        assert!(
            detect(dir.path()).is_none(),
            "no _class_name / _diffusers_version"
        );
        std::fs::write(
            dir.path().join(MODEL_INDEX),
            b"{\"_class_name\": \"StableDiffusionPipeline\", \"unet\": [\"diffusers\", \"X\"], \"safety_checker\": [null, null]}",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("unet")).unwrap();
        std::fs::write(
            dir.path().join("unet/diffusion_pytorch_model.safetensors"),
            b"x",
        )
        .unwrap();
        std::fs::write(dir.path().join("unet/config.json"), b"{}").unwrap();
        let f = detect(dir.path()).unwrap();
        assert_eq!(f.components.keys().collect::<Vec<_>>(), ["unet"]);
        assert_eq!(f.components["unet"].weights.len(), 1);
    }
}
