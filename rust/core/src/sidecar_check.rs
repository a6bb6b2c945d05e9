//! The sidecar check: hashes other tools published for a model must match its bytes (`hash.mismatch`), and a sidecar needs its model (`sidecar.stale`).
//!
//! It runs after the scan (and after the scan cache), on every report: sidecars change without the
//! model changing, so their verdict is never cached with the model's report. Only hashes the scan
//! computed are compared: BLAKE3 always (with `--hash full`), SHA-256 / AutoV2 / addnet with
//! `--sha256`, AutoV1 for files of 2 MiB or more.

use crate::interop::{self, Format, Published};
use crate::report::{FileReport, Finding, Severity};
use serde_json::{json, Value};
use std::path::Path;

/// The report of a path that is another tool's hash file (`kind: "sidecar"`), or `None` for any other
/// path. A `.civitai.info` / `.cm-info.json` with no model beside it is `sidecar.stale`; one that
/// cannot be read as its format is `sidecar.unreadable`.
pub fn sidecar_report(path: &Path) -> Option<FileReport> {
    let named = interop::sidecar_of(path);
    let is_cache = named.is_none()
        && path.file_name().is_some_and(|n| n == interop::A1111_CACHE)
        && interop::read_json(path).is_ok_and(|d| interop::is_a1111_cache(&d));
    if named.is_none() && !is_cache {
        return None;
    }
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    let (shown, path_b64) = crate::report::path_fields(path);
    let mut r = FileReport {
        path: shown.clone(),
        path_b64,
        size: meta.len(),
        mtime: crate::walk::mtime_of(&meta),
        kind: crate::kind::Kind::Sidecar,
        ..Default::default()
    };
    if let Some((format, stem)) = named {
        let doc = interop::read_json(path);
        if let Err(why) = &doc {
            r.findings.push(Finding::new(
                "sidecar.unreadable",
                Severity::Warning,
                format!(
                    "{shown}: a {} file that cannot be read: {why}",
                    format.name()
                ),
                json!({"format": format.name(), "reason": why}),
            ));
        }
        if interop::model_of(path, &stem).is_none() {
            r.findings.push(Finding::new(
                "sidecar.stale",
                Severity::Warning,
                format!(
                    "{shown}: a {} file for {}, which is not beside it (moved, renamed or deleted)",
                    format.name(),
                    stem.to_string_lossy()
                ),
                json!({"format": format.name(), "model_stem": stem.to_string_lossy()}),
            ));
        }
    }
    Some(r)
}

/// The first hash both sides have that differs: (name, published, computed); `None` when every hash
/// they share agrees. `shared` counts the hashes compared.
fn disagreement<'a>(
    published: &'a Published,
    computed: &'a Value,
    shared: &mut usize,
) -> Option<(&'static str, &'a str, &'a str)> {
    let mut first = None;
    for (name, want) in published {
        let Some(got) = computed[*name].as_str() else {
            continue;
        };
        *shared += 1;
        if !want.eq_ignore_ascii_case(got) && first.is_none() {
            first = Some((*name, want.as_str(), got));
        }
    }
    first
}

fn mismatch(
    source: &Path,
    format: Format,
    name: &str,
    published: &str,
    computed: &str,
    title: Option<&str>,
) -> Finding {
    let src = source.to_string_lossy();
    let entry = title.map(|t| format!(" entry {t}")).unwrap_or_default();
    Finding::new(
        "hash.mismatch",
        Severity::Error,
        format!(
            "{src}{entry} publishes {name} {published}, but the file's bytes hash to {computed}: a corrupted or swapped file"
        ),
        json!({
            "source": src, "format": format.name(), "title": title, "hash": name,
            "published": published, "computed": computed,
        }),
    )
}

/// `hash.mismatch` findings of the model at `path` whose report is `r`, from its sidecars and the
/// web UI caches near it.
pub fn model_findings(path: &Path, r: &FileReport) -> Vec<Finding> {
    let mut out = vec![];
    if r.error.is_some() || r.hashes.blake3.is_none() || path.is_dir() {
        return out;
    }
    let computed = &serde_json::to_value(&r.hashes).unwrap_or_default();
    for format in [Format::CivitaiInfo, Format::CmInfo] {
        let Some(side) = interop::sidecar_path(path, format).filter(|p| p.is_file()) else {
            continue;
        };
        let Ok(doc) = interop::read_json(&side) else {
            continue; // reported on the sidecar itself
        };
        let entries = interop::published(format, &doc);
        let mut first = None;
        let mut agreed = false;
        for e in &entries {
            let mut shared = 0;
            match disagreement(e, computed, &mut shared) {
                None if shared > 0 => agreed = true,
                Some(d) if first.is_none() => first = Some(d),
                _ => {}
            }
        }
        // A .civitai.info lists every file of a model version: the model need only be one of them.
        if let (false, Some((name, want, got))) = (agreed, first) {
            out.push(mismatch(&side, format, name, want, got, None));
        }
    }
    for (cache, doc) in interop::a1111_caches_near(path) {
        for e in interop::a1111_entries(&doc, path, r.kind, r.mtime) {
            if let Some(got) = computed[e.hash].as_str() {
                if !e.value.eq_ignore_ascii_case(got) {
                    out.push(mismatch(
                        &cache,
                        Format::A1111,
                        e.hash,
                        &e.value,
                        got,
                        Some(&e.title),
                    ));
                }
            }
        }
    }
    out
}

/// Adds the sidecar findings of the model at `path` to its report `r` (kept in report order:
/// severity, then check name).
pub fn apply(path: &Path, r: &mut FileReport) {
    let found = model_findings(path, r);
    if found.is_empty() {
        return;
    }
    r.findings.extend(found);
    r.findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.check.cmp(b.check))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(blake3: &str, sha256: Option<&str>) -> FileReport {
        FileReport {
            kind: crate::kind::Kind::Checkpoint,
            mtime: 10.0,
            hashes: crate::report::Hashes {
                blake3: Some(blake3.into()),
                sha256: sha256.map(Into::into),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn civitai_info_mismatch_only_on_compared_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.safetensors");
        std::fs::write(&model, b"x").unwrap();
        let info = dir.path().join("m.civitai.info");
        std::fs::write(
            &info,
            r#"{"files": [{"hashes": {"SHA256": "AAAA", "BLAKE3": "BBBB"}}, {"hashes": {"SHA256": "CCCC"}}]}"#,
        )
        .unwrap();
        // the second file of the version is this one: no finding
        assert!(model_findings(&model, &report("ffff", Some("cccc"))).is_empty());
        // BLAKE3 is compared even without --sha256
        let f = model_findings(&model, &report("ffff", None));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].check, "hash.mismatch");
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[0].details["hash"], "blake3");
        assert_eq!(f[0].details["published"], "bbbb");
        // nothing shared to compare: silence
        std::fs::write(&info, r#"{"files": [{"hashes": {"SHA256": "AAAA"}}]}"#).unwrap();
        assert!(model_findings(&model, &report("ffff", None)).is_empty());
        let mut r = report("ffff", Some("abcd"));
        r.findings = vec![Finding::new("junk.ema", Severity::Warning, "", Value::Null)];
        apply(&model, &mut r);
        assert_eq!(r.findings[0].check, "hash.mismatch");
        assert_eq!(r.findings[1].check, "junk.ema");
    }

    #[test]
    fn stale_and_unreadable_sidecars() {
        let dir = tempfile::tempdir().unwrap();
        let cm = dir.path().join("gone.cm-info.json");
        std::fs::write(&cm, b"{not json").unwrap();
        let r = sidecar_report(&cm).unwrap();
        assert_eq!(r.kind, crate::kind::Kind::Sidecar);
        let checks: Vec<_> = r.findings.iter().map(|f| f.check).collect();
        assert_eq!(checks, vec!["sidecar.unreadable", "sidecar.stale"]);
        std::fs::write(dir.path().join("gone.ckpt"), b"x").unwrap();
        std::fs::write(&cm, b"{}").unwrap();
        assert!(sidecar_report(&cm).unwrap().findings.is_empty());
        // a cache.json that is not the web UI's is an ordinary file
        let other = dir.path().join("cache.json");
        std::fs::write(&other, br#"{"a": 1}"#).unwrap();
        assert!(sidecar_report(&other).is_none());
        std::fs::write(&other, br#"{"hashes": {}}"#).unwrap();
        assert_eq!(
            sidecar_report(&other).unwrap().kind,
            crate::kind::Kind::Sidecar
        );
    }

    #[test]
    fn web_ui_cache_above_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("models/Stable-diffusion");
        std::fs::create_dir_all(&sd).unwrap();
        let model = sd.join("a.safetensors");
        std::fs::write(&model, b"x").unwrap();
        std::fs::write(
            dir.path().join("cache.json"),
            r#"{"hashes": {"checkpoint/a.safetensors": {"mtime": 20.0, "sha256": "0123"}}}"#,
        )
        .unwrap();
        let f = model_findings(&model, &report("ff", Some("4567")));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].details["format"], "a1111");
        assert_eq!(f[0].details["title"], "checkpoint/a.safetensors");
        assert!(model_findings(&model, &report("ff", Some("0123"))).is_empty());
        // not computed: not compared
        assert!(model_findings(&model, &report("ff", None)).is_empty());
    }
}
