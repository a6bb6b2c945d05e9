//! Hash files of other tools (the web UI's cache.json, `.civitai.info`, `.cm-info.json`): found, read and written.
//!
//! Each format is documented with its source in docs/hash-interop.md. Reading gives the hashes a file
//! publishes under fastscan's names (`sha256`, `blake3`, `autov1`, `autov2`, `addnet`, lowercase hex);
//! writing ([`export`]) renders a scan's hashes in the tool's own layout, atomically, never replacing
//! a file the user made unless told to.

use crate::atomic::TempOutput;
use crate::kind::Kind;
use crate::sniff::Format as SniffedFormat;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// A hash file format of another tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The web UI's (AUTOMATIC1111) `cache.json`: `hashes` / `hashes-addnet` sections.
    A1111,
    /// `<stem>.civitai.info` of the Civitai Helper extensions: Civitai's model-version JSON.
    CivitaiInfo,
    /// `<stem>.cm-info.json` of StabilityMatrix (`ConnectedModelInfo`).
    CmInfo,
}

/// The file name of the web UI's hash cache.
pub const A1111_CACHE: &str = "cache.json";

impl Format {
    /// The format named `s` (`a1111`, `civitai-info`, `cm-info`).
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "a1111" => Some(Format::A1111),
            "civitai-info" => Some(Format::CivitaiInfo),
            "cm-info" => Some(Format::CmInfo),
            _ => None,
        }
    }

    /// The report's name for the format.
    pub fn name(self) -> &'static str {
        match self {
            Format::A1111 => "a1111",
            Format::CivitaiInfo => "civitai-info",
            Format::CmInfo => "cm-info",
        }
    }

    /// The suffix replacing a model's extension in its sidecar's name (none for the web UI's cache).
    fn suffix(self) -> Option<&'static str> {
        match self {
            Format::A1111 => None,
            Format::CivitaiInfo => Some(".civitai.info"),
            Format::CmInfo => Some(".cm-info.json"),
        }
    }
}

#[derive(Deserialize)]
struct Rules {
    model_extensions: Vec<String>,
    a1111_cache_levels: usize,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        #[derive(Deserialize)]
        struct File {
            sidecars: Rules,
        }
        let f: File =
            serde_json::from_str(include_str!("rules.json")).expect("rules.json is valid");
        f.sidecars
    })
}

/// The sidecar `path` is by its name: its format and the stem of the model it belongs to.
pub fn sidecar_of(path: &Path) -> Option<(Format, OsString)> {
    let name = path.file_name()?.as_bytes();
    [Format::CivitaiInfo, Format::CmInfo]
        .into_iter()
        .find_map(|f| {
            let stem = name.strip_suffix(f.suffix()?.as_bytes())?;
            (!stem.is_empty()).then(|| (f, OsString::from_vec(stem.to_vec())))
        })
}

/// The sidecar of `model` in format `f`: the model's name with its last extension replaced.
pub fn sidecar_path(model: &Path, f: Format) -> Option<PathBuf> {
    let mut name = model.file_stem()?.to_os_string();
    name.push(f.suffix()?);
    Some(model.with_file_name(name))
}

/// The model beside a sidecar whose stem is `stem` (`STEM.EXT` for a model extension), if any.
pub fn model_of(sidecar: &Path, stem: &OsStr) -> Option<PathBuf> {
    rules().model_extensions.iter().find_map(|ext| {
        let mut name = stem.to_os_string();
        name.push(ext);
        let p = sidecar.with_file_name(name);
        p.is_file().then_some(p)
    })
}

/// Hashes as fastscan names them (`sha256`, `blake3`, ...) -> lowercase hex.
pub type Published = BTreeMap<&'static str, String>;

/// Civitai's hash names and fastscan's (AutoV3 and CRC32 are not computed by fastscan).
const CIVITAI_NAMES: [(&str, &str); 4] = [
    ("SHA256", "sha256"),
    ("BLAKE3", "blake3"),
    ("AutoV2", "autov2"),
    ("AutoV1", "autov1"),
];

fn civitai_hashes(h: &Value) -> Published {
    CIVITAI_NAMES
        .iter()
        .filter_map(|(theirs, ours)| {
            let v = h.get(*theirs)?.as_str()?.trim();
            (!v.is_empty()).then(|| (*ours, v.to_ascii_lowercase()))
        })
        .collect()
}

/// The hashes a sidecar publishes: one map per file it describes (a `.civitai.info` lists every file
/// of a model version; a `.cm-info.json` one).
pub fn published(f: Format, doc: &Value) -> Vec<Published> {
    match f {
        Format::CivitaiInfo => doc["files"]
            .as_array()
            .map(|files| {
                files
                    .iter()
                    .map(|x| civitai_hashes(&x["hashes"]))
                    .filter(|h| !h.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        Format::CmInfo => {
            let h = civitai_hashes(&doc["Hashes"]);
            if h.is_empty() {
                vec![]
            } else {
                vec![h]
            }
        }
        Format::A1111 => vec![],
    }
}

/// Reads and parses a small JSON file; `Err` says why it cannot be used.
pub fn read_json(path: &Path) -> Result<Value, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
}

/// True when `doc` looks like the web UI's cache (a `hashes` or `hashes-addnet` object).
pub fn is_a1111_cache(doc: &Value) -> bool {
    A1111_SECTIONS
        .iter()
        .any(|(s, _)| doc.get(*s).is_some_and(Value::is_object))
}

/// The web UI's hash sections and the fastscan hash each holds.
const A1111_SECTIONS: [(&str, &str); 2] = [("hashes", "sha256"), ("hashes-addnet", "addnet")];

/// Where the web UI keeps a file's hash: (section, title, fastscan hash), for the kinds it hashes.
///
/// Checkpoints are titled `checkpoint/<path below the Stable-diffusion folder>` (the file name when
/// the file is not below one); LoRAs `lora/<stem>`, a safetensors LoRA in `hashes-addnet` (addnet hash).
pub fn a1111_title(
    model: &Path,
    kind: Kind,
    format: SniffedFormat,
) -> Option<(&'static str, String, &'static str)> {
    match kind {
        Kind::Checkpoint => {
            let comps: Vec<&OsStr> = model.iter().collect();
            let below = comps
                .iter()
                .rposition(|c| *c == "Stable-diffusion")
                .filter(|&i| i + 1 < comps.len())
                .map(|i| comps[i + 1..].iter().collect::<PathBuf>())
                .unwrap_or_else(|| PathBuf::from(model.file_name().unwrap_or_default()));
            Some((
                "hashes",
                format!("checkpoint/{}", below.to_str()?),
                "sha256",
            ))
        }
        Kind::Lora => {
            let stem = model.file_stem()?.to_str()?;
            if format == SniffedFormat::Safetensors {
                Some(("hashes-addnet", format!("lora/{stem}"), "addnet"))
            } else {
                Some(("hashes", format!("lora/{stem}"), "sha256"))
            }
        }
        _ => None,
    }
}

/// One published hash of a model in the web UI's cache: which entry and what it says.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheEntry {
    pub section: &'static str,
    pub title: String,
    pub hash: &'static str,
    pub value: String,
}

/// The entries of a web UI cache `doc` that name `model` and that the web UI would use for it (entry
/// mtime not older than the file's `mtime`: older entries it recomputes, so they publish nothing).
pub fn a1111_entries(doc: &Value, model: &Path, kind: Kind, mtime: f64) -> Vec<CacheEntry> {
    let shown = model.to_string_lossy().replace('\\', "/");
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = vec![];
    for (section, hash) in A1111_SECTIONS {
        let Some(entries) = doc.get(section).and_then(Value::as_object) else {
            continue;
        };
        for (title, e) in entries {
            let names_it = match title.split_once('/') {
                Some(("checkpoint", name)) if !name.is_empty() => {
                    let name = name.replace('\\', "/");
                    shown == name || shown.ends_with(&format!("/{name}"))
                }
                Some(("lora", name)) => kind == Kind::Lora && name == stem,
                _ => false,
            };
            let current = e["mtime"].as_f64().is_some_and(|m| m + 1e-3 >= mtime);
            if let (true, true, Some(v)) = (names_it, current, e["sha256"].as_str()) {
                out.push(CacheEntry {
                    section,
                    title: title.clone(),
                    hash,
                    value: v.trim().to_ascii_lowercase(),
                });
            }
        }
    }
    out
}

/// Web UI caches near `model` (its folder and a few above), parsed once per version of the file.
pub fn a1111_caches_near(model: &Path) -> Vec<(PathBuf, Arc<Value>)> {
    type Parsed = HashMap<PathBuf, ((u64, i64), Option<Arc<Value>>)>;
    static SEEN: OnceLock<Mutex<Parsed>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    let mut out = vec![];
    let mut dir = model.parent();
    for _ in 0..rules().a1111_cache_levels {
        let Some(d) = dir else { break };
        let p = if d.as_os_str().is_empty() {
            PathBuf::from(A1111_CACHE)
        } else {
            d.join(A1111_CACHE)
        };
        if let Ok(stamp) = crate::cache::Stamp::of(&p) {
            let key = (stamp.size, stamp.mtime_ns);
            let hit = seen
                .lock()
                .ok()
                .and_then(|m| m.get(&p).filter(|(k, _)| *k == key).map(|(_, v)| v.clone()));
            let doc = match hit {
                Some(v) => v,
                None => {
                    let v = read_json(&p).ok().filter(is_a1111_cache).map(Arc::new);
                    if let Ok(mut m) = seen.lock() {
                        m.insert(p.clone(), (key, v.clone()));
                    }
                    v
                }
            };
            if let Some(doc) = doc {
                out.push((p, doc));
            }
        }
        dir = d.parent();
    }
    out
}

/// What an export ([`export_sidecars`], [`export_a1111`]) did for one model (or for the cache file as a whole).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    /// The model the line is about.
    pub model: String,
    /// The file written (or left alone).
    pub path: String,
    /// `written`, `replaced`, `added`, `updated`, `unchanged`, `kept` (exists, or disagrees: needs
    /// --force), `skipped` (a model this format cannot describe), `failed`.
    pub status: &'static str,
    pub message: String,
}

/// The report fields export reads.
struct Model<'a> {
    path: PathBuf,
    shown: &'a str,
    kind: Kind,
    format: SniffedFormat,
    size: u64,
    mtime: f64,
    hashes: &'a Value,
}

/// The models of `reports` export can describe, and an outcome for each report it cannot.
fn models<'a>(reports: &'a [Value], out: &mut Vec<Outcome>) -> Vec<Model<'a>> {
    let mut ms = vec![];
    for r in reports {
        let shown = r["path"].as_str().unwrap_or_default();
        let kind = Kind::deserialize(&r["kind"]).unwrap_or_default();
        let skip = |why: &str| Outcome {
            model: shown.to_string(),
            path: String::new(),
            status: "skipped",
            message: format!("{shown}: {why}"),
        };
        if r.get("path_b64").is_some_and(|b| !b.is_null()) {
            out.push(skip(
                "the path is not UTF-8; the other tools' files name models in UTF-8",
            ));
        } else if !r["error"].is_null() {
            out.push(skip("could not be read"));
        } else if r["parts"].as_array().is_some_and(|p| !p.is_empty()) {
            out.push(skip(
                "a diffusers folder: these formats describe single files",
            ));
        } else if kind == Kind::Sidecar || r["hashes"]["blake3"].is_null() {
            // another tool's hash file, or no model (previews, notes): nothing to describe
        } else {
            ms.push(Model {
                path: PathBuf::from(shown),
                shown,
                kind,
                format: SniffedFormat::deserialize(&r["format"]).unwrap_or_default(),
                size: r["size"].as_u64().unwrap_or(0),
                mtime: r["mtime"].as_f64().unwrap_or(0.0),
                hashes: &r["hashes"],
            });
        }
    }
    ms
}

fn upper(h: &Value, name: &str) -> Value {
    h[name]
        .as_str()
        .map(|s| Value::String(s.to_ascii_uppercase()))
        .unwrap_or(Value::Null)
}

/// The `.civitai.info` of a model: Civitai's model-version layout holding only what the file's bytes
/// say (one `files` entry with its hashes, uppercase as Civitai writes them); nothing is fetched.
fn civitai_info(m: &Model) -> Value {
    let h = m.hashes;
    let mut hashes = Map::new();
    for (theirs, ours) in CIVITAI_NAMES {
        let v = upper(h, ours);
        if !v.is_null() {
            hashes.insert(theirs.to_string(), v);
        }
    }
    json!({
        "files": [{
            "name": m.path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
            "sizeKB": m.size as f64 / 1024.0,
            "type": "Model",
            "primary": true,
            "hashes": hashes,
        }],
        "fastscan": {
            "version": env!("CARGO_PKG_VERSION"),
            "note": "hashes of the local file only; no Civitai data was fetched",
        },
    })
}

/// StabilityMatrix's model type (`CivitModelType`) of a fastscan kind.
fn cm_model_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Checkpoint | Kind::Unet => "Checkpoint",
        Kind::Lora => "LORA",
        Kind::Embedding => "TextualInversion",
        Kind::Controlnet => "Controlnet",
        _ => "Unknown",
    }
}

/// The `.cm-info.json` of a model: StabilityMatrix's `ConnectedModelInfo` with the file's hashes.
fn cm_info(m: &Model, now: f64) -> Value {
    let stem = m
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut hashes = Map::new();
    for (theirs, ours) in [("SHA256", "sha256"), ("BLAKE3", "blake3")] {
        let v = upper(m.hashes, ours);
        if !v.is_null() {
            hashes.insert(theirs.to_string(), v);
        }
    }
    json!({
        "ModelName": stem,
        "ModelDescription": "",
        "Nsfw": false,
        "Tags": [],
        "ModelType": cm_model_type(m.kind),
        "VersionName": "",
        "ImportedAt": iso8601_utc(now),
        "Hashes": hashes,
    })
}

/// `YYYY-MM-DDTHH:MM:SS+00:00` of seconds since the epoch (proleptic Gregorian, UTC).
pub fn iso8601_utc(secs: f64) -> String {
    let s = secs.floor() as i64;
    let (days, rem) = (s.div_euclid(86_400), s.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Writes `bytes` to `out` through a temporary file (fsynced, then named); an existing `out` is
/// replaced only with `overwrite`. `mode`: the permissions to give it (`None`: the umask's).
pub fn write_atomic(
    out: &Path,
    bytes: &[u8],
    overwrite: bool,
    mode: Option<u32>,
) -> std::io::Result<()> {
    let t = TempOutput::create(out, mode)?;
    let mut f = t.file();
    f.write_all(bytes)?;
    f.sync_all()?;
    t.commit(out, overwrite)
}

fn pretty(v: &Value, indent: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(indent);
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(v, &mut ser).expect("a JSON value serializes");
    buf.push(b'\n');
    buf
}

/// Writes the sidecars of `reports` in format `f` (not the web UI's cache: [`export_a1111`]).
pub fn export_sidecars(f: Format, reports: &[Value], force: bool, now: f64) -> Vec<Outcome> {
    let mut out = vec![];
    for m in models(reports, &mut out) {
        let Some(path) = sidecar_path(&m.path, f) else {
            continue;
        };
        let doc = match f {
            Format::CivitaiInfo => civitai_info(&m),
            Format::CmInfo => cm_info(&m, now),
            Format::A1111 => continue,
        };
        let shown_out = path.to_string_lossy().into_owned();
        let existed = path.exists();
        let (status, message) = if existed && !force {
            ("kept", format!("{shown_out} exists; --force replaces it"))
        } else {
            match write_atomic(&path, &pretty(&doc, b"  "), force, None) {
                Ok(()) if existed => ("replaced", format!("replaced {shown_out}")),
                Ok(()) => ("written", format!("wrote {shown_out}")),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    ("kept", format!("{shown_out} exists; --force replaces it"))
                }
                Err(e) => ("failed", format!("{shown_out}: {e}")),
            }
        };
        out.push(Outcome {
            model: m.shown.to_string(),
            path: shown_out,
            status,
            message,
        });
    }
    out
}

/// Holds an exclusive `flock` on `<cache>.lock`, the lock the web UI takes around its cache.json.
struct CacheLock {
    _held: std::fs::File,
}

impl CacheLock {
    fn take(cache: &Path) -> std::io::Result<CacheLock> {
        use std::os::fd::AsRawFd;
        let mut name = cache.as_os_str().to_os_string();
        name.push(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(PathBuf::from(name))?;
        // SAFETY: flock on a descriptor we own; it blocks until the lock is ours or fails with -1.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(CacheLock { _held: f })
    }
}

/// Merges the hashes of `reports` into the web UI's `cache` (created when absent): entries the
/// web UI would recompute anyway (older than the file) are replaced; an entry still current for the
/// file that says another hash is kept unless `force`. Every other entry of the file is left as is.
/// `Err` when the cache cannot be read or written (it is then untouched).
pub fn export_a1111(cache: &Path, reports: &[Value], force: bool) -> Result<Vec<Outcome>, String> {
    let shown_cache = cache.to_string_lossy().into_owned();
    let _lock = CacheLock::take(cache).map_err(|e| format!("{shown_cache}.lock: {e}"))?;
    let (mut doc, mode) = match std::fs::metadata(cache) {
        Ok(meta) => {
            use std::os::unix::fs::PermissionsExt;
            let doc = read_json(cache).map_err(|e| format!("{shown_cache}: {e}"))?;
            if !doc.is_object() {
                return Err(format!(
                    "{shown_cache}: not the web UI's cache (not a JSON object)"
                ));
            }
            (doc, Some(meta.permissions().mode() & 0o7777))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (json!({}), None),
        Err(e) => return Err(format!("{shown_cache}: {e}")),
    };
    let mut out = vec![];
    let mut changed = false;
    for m in models(reports, &mut out) {
        let outcome = |status, message: String| Outcome {
            model: m.shown.to_string(),
            path: shown_cache.clone(),
            status,
            message,
        };
        let Some((section, title, hash)) = a1111_title(&m.path, m.kind, m.format) else {
            out.push(outcome(
                "skipped",
                format!("{}: the web UI keeps no hash for {} files", m.shown, m.kind),
            ));
            continue;
        };
        let Some(value) = m.hashes[hash].as_str() else {
            out.push(outcome("skipped", format!("{}: no {hash} hash", m.shown)));
            continue;
        };
        let sec = doc
            .as_object_mut()
            .expect("checked above")
            .entry(section)
            .or_insert_with(|| json!({}));
        let Some(sec) = sec.as_object_mut() else {
            return Err(format!("{shown_cache}: section {section} is not an object"));
        };
        let entry = json!({"mtime": m.mtime, "sha256": value});
        let (status, message) = match sec.get(&title) {
            Some(old)
                if old["sha256"].as_str() == Some(value)
                    && old["mtime"].as_f64() == Some(m.mtime) =>
            {
                ("unchanged", format!("{section} {title}: already {value}"))
            }
            Some(old)
                if !force
                    && old["mtime"].as_f64().is_some_and(|t| t + 1e-3 >= m.mtime)
                    && old["sha256"]
                        .as_str()
                        .is_some_and(|s| !s.eq_ignore_ascii_case(value)) =>
            {
                let was = old["sha256"].as_str().unwrap_or_default();
                ("kept", format!(
                    "{section} {title}: the cache says {was}, the file's bytes {value}; --force replaces it"
                ))
            }
            Some(_) => {
                sec.insert(title.clone(), entry);
                changed = true;
                ("updated", format!("{section} {title}: {value}"))
            }
            None => {
                sec.insert(title.clone(), entry);
                changed = true;
                ("added", format!("{section} {title}: {value}"))
            }
        };
        out.push(outcome(status, message));
    }
    if changed {
        write_atomic(cache, &pretty(&doc, b"    "), true, mode)
            .map_err(|e| format!("{shown_cache}: {e}"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_names() {
        let m = Path::new("/m/sub/model.v2.safetensors");
        let ci = sidecar_path(m, Format::CivitaiInfo).unwrap();
        assert_eq!(ci, Path::new("/m/sub/model.v2.civitai.info"));
        assert_eq!(
            sidecar_path(m, Format::CmInfo).unwrap(),
            Path::new("/m/sub/model.v2.cm-info.json")
        );
        assert_eq!(
            sidecar_of(&ci),
            Some((Format::CivitaiInfo, OsString::from("model.v2")))
        );
        assert_eq!(sidecar_of(Path::new("/m/.civitai.info")), None);
        assert_eq!(sidecar_of(m), None);
    }

    #[test]
    fn titles_as_the_web_ui_keys_them() {
        let p = Path::new("/w/models/Stable-diffusion/sd15/a.safetensors");
        assert_eq!(
            a1111_title(p, Kind::Checkpoint, SniffedFormat::Safetensors),
            Some(("hashes", "checkpoint/sd15/a.safetensors".into(), "sha256"))
        );
        assert_eq!(
            a1111_title(
                Path::new("/x/b.ckpt"),
                Kind::Checkpoint,
                SniffedFormat::TorchZip
            )
            .unwrap()
            .1,
            "checkpoint/b.ckpt"
        );
        assert_eq!(
            a1111_title(
                Path::new("/w/models/Lora/c.safetensors"),
                Kind::Lora,
                SniffedFormat::Safetensors
            ),
            Some(("hashes-addnet", "lora/c".into(), "addnet"))
        );
        assert_eq!(a1111_title(p, Kind::Vae, SniffedFormat::Safetensors), None);
    }

    #[test]
    fn cache_entries_named_and_current() {
        let doc = json!({
            "hashes": {
                "checkpoint/sd15/a.safetensors": {"mtime": 100.0, "sha256": "AB"},
                "checkpoint/a.safetensors": {"mtime": 50.0, "sha256": "cd"},
                "checkpoint/other.safetensors": {"mtime": 100.0, "sha256": "ef"},
            },
            "hashes-addnet": {"lora/a": {"mtime": 100.0, "sha256": "12"}},
        });
        let p = Path::new("/w/models/Stable-diffusion/sd15/a.safetensors");
        let e = a1111_entries(&doc, p, Kind::Checkpoint, 99.0);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].value, "ab");
        assert_eq!(e[0].hash, "sha256");
        let e = a1111_entries(&doc, p, Kind::Lora, 99.0);
        assert!(e.iter().any(|x| x.hash == "addnet" && x.value == "12"));
        assert!(a1111_entries(&doc, p, Kind::Checkpoint, 101.0).is_empty());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(iso8601_utc(0.0), "1970-01-01T00:00:00+00:00");
        // 2000-02-29 12:34:56 UTC (a leap day of a century leap year)
        assert_eq!(iso8601_utc(951_827_696.5), "2000-02-29T12:34:56+00:00");
        assert_eq!(iso8601_utc(-1.0), "1969-12-31T23:59:59+00:00");
    }

    #[test]
    fn published_hashes_of_each_sidecar() {
        let info = json!({"files": [
            {"hashes": {"SHA256": "AA", "AutoV2": "BB", "CRC32": "x"}},
            {"hashes": {}},
            {"name": "no hashes"},
        ]});
        let p = published(Format::CivitaiInfo, &info);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0]["sha256"], "aa");
        assert_eq!(p[0]["autov2"], "bb");
        assert_eq!(p[0].len(), 2);
        let cm = json!({"Hashes": {"BLAKE3": "Cc", "SHA256": null}});
        assert_eq!(published(Format::CmInfo, &cm)[0]["blake3"], "cc");
        assert!(published(Format::CmInfo, &json!({})).is_empty());
    }
}
