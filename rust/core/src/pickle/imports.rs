//! Which imports a pickle may make, judged by allow-list as `torch.load(weights_only=True)` does: the
//! policy (allow-list, deny prefixes, CPython's `_compat_pickle` tables) is data in `policy.json`.

use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// How an import is judged (before knowing whether the pickle calls it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// On the allow-list: needed by ordinary checkpoints, runs no code of the file's choosing.
    Allowed,
    /// Under a deny prefix: known to run code, touch files or the network (the reason says what).
    Dangerous(String),
    /// Not on the allow-list: critical once the pickle calls or builds it, a warning otherwise.
    Unknown,
}

#[derive(Deserialize)]
struct Names {
    names: HashMap<String, String>,
}

#[derive(Deserialize)]
struct Prefixes {
    prefixes: HashMap<String, String>,
}

#[derive(Deserialize)]
struct Walk {
    names: HashSet<String>,
}

#[derive(Deserialize)]
struct Compat {
    name: Vec<(String, String, String, String)>,
    import: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct PolicyFile {
    allow: Names,
    deny: Prefixes,
    attribute_walk: Walk,
    compat: Compat,
}

/// The policy, parsed once.
struct Policy {
    allow: HashMap<String, String>,
    deny: HashMap<String, String>,
    walk: HashSet<String>,
    compat_names: HashMap<(String, String), (String, String)>,
    compat_modules: HashMap<String, String>,
}

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| {
        let f: PolicyFile =
            serde_json::from_str(include_str!("policy.json")).expect("policy.json is valid");
        Policy {
            allow: f.allow.names,
            deny: f.deny.prefixes,
            walk: f.attribute_walk.names,
            compat_names: f
                .compat
                .name
                .into_iter()
                .map(|(a, b, c, d)| ((a, b), (c, d)))
                .collect(),
            compat_modules: f.compat.import.into_iter().collect(),
        }
    })
}

/// `(module, name)` as CPython's unpickler looks it up: below protocol 3 (with `fix_imports`, the
/// default of `pickle.load` and `torch.load`) `_compat_pickle.NAME_MAPPING` renames the pair, else
/// `IMPORT_MAPPING` renames the module.
pub fn resolve(module: &str, name: &str, proto: u8) -> (String, String) {
    if proto < 3 {
        let p = policy();
        if let Some((m, n)) = p.compat_names.get(&(module.to_string(), name.to_string())) {
            return (m.clone(), n.clone());
        }
        if let Some(m) = p.compat_modules.get(module) {
            return (m.clone(), name.to_string());
        }
    }
    (module.to_string(), name.to_string())
}

fn is_dunder(s: &str) -> bool {
    s.len() > 4 && s.starts_with("__") && s.ends_with("__")
}

/// Judges the import of `module`.`name` (already resolved with [`resolve`]). The object CPython gets is
/// `module` imported, then every `.`-separated part of `name` looked up in turn (protocol 4), so the
/// full dotted path is what is judged: exactly, for the allow-list; by every dotted prefix, for the
/// deny prefixes (`torch` + `hub.download_url_to_file` is `torch.hub.download_url_to_file`).
pub fn classify(module: &str, name: &str) -> Verdict {
    let p = policy();
    let full = format!("{module}.{name}");
    if p.allow.contains_key(&full) {
        return Verdict::Allowed;
    }
    let mut prefix = String::new();
    for part in full.split('.') {
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(part);
        if let Some(why) = p.deny.get(&prefix) {
            return Verdict::Dangerous(why.clone());
        }
    }
    // An attribute walk (a dotted qualname): dunders and well-known code-running names anywhere in it.
    let mut parts = name.split('.');
    parts.next();
    for part in parts {
        if is_dunder(part) {
            return Verdict::Dangerous("attribute walk through a dunder attribute".into());
        }
        if p.walk.contains(part) {
            return Verdict::Dangerous("attribute walk to code-running objects".into());
        }
    }
    if name
        .split('.')
        .next()
        .is_some_and(|first| is_dunder(first) && !matches!(first, "__main__" | "__builtin__"))
    {
        return Verdict::Dangerous("dunder attribute of a module".into());
    }
    Verdict::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(m: &str, n: &str, proto: u8) -> Verdict {
        let (m, n) = resolve(m, n, proto);
        classify(&m, &n)
    }

    fn danger(m: &str, n: &str) -> bool {
        matches!(judge(m, n, 2), Verdict::Dangerous(_))
    }

    #[test]
    fn checkpoint_imports_are_allowed() {
        for (m, n) in [
            ("collections", "OrderedDict"),
            ("torch._utils", "_rebuild_tensor_v2"),
            ("torch._utils", "_rebuild_parameter"),
            ("torch", "_utils._rebuild_tensor_v2"),
            ("torch", "HalfStorage"),
            ("torch", "BFloat16Storage"),
            ("torch.cuda", "FloatStorage"),
            ("torch", "float16"),
            ("torch", "Size"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
            ("__builtin__", "set"),
            ("builtins", "dict"),
            (
                "pytorch_lightning.callbacks.model_checkpoint",
                "ModelCheckpoint",
            ),
        ] {
            assert_eq!(judge(m, n, 2), Verdict::Allowed, "{m}.{n}");
        }
    }

    #[test]
    fn code_running_imports_are_dangerous() {
        for (m, n) in [
            ("os", "system"),
            ("posix", "system"),
            ("nt", "system"),
            ("os.path", "join"),
            ("subprocess", "Popen"),
            ("commands", "getoutput"),
            ("builtins", "eval"),
            ("__builtin__", "exec"),
            ("__builtin__", "getattr"),
            ("builtins", "__import__"),
            ("runpy", "_run_code"),
            ("socket", "create_connection"),
            ("operator", "attrgetter"),
            ("functools", "partial"),
            ("types", "CodeType"),
            ("torch._inductor.codecache", "compile_file"),
            ("torch.serialization", "load"),
            ("httplib", "HTTPSConnection"),
            ("requests.api", "get"),
            ("aiohttp.client", "ClientSession"),
            ("bdb", "Bdb.run"),
            ("pickle", "loads"),
            ("_pickle", "loads"),
            ("webbrowser", "open"),
            ("venv", "create"),
            ("pip", "main"),
            ("pydoc", "pipepager"),
            ("sys", "exit"),
            ("collections", "_sys.modules"),
            ("torch", "_utils.__globals__"),
            // The dotted evasions: every prefix of module + qualname is judged.
            ("torch", "hub.download_url_to_file"),
            ("torch", "_inductor.codecache.compile_file"),
            ("torch", "storage._load_from_bytes"),
            ("numpy.testing", "_private.utils.runstring"),
            ("torch.utils.data", "datapipes.utils.decoder.basichandlers"),
            // Callables the issue lists.
            ("torch.fx.graph_module", "reduce_graph_module"),
            ("torch.fx.graph_module", "_forward_from_src"),
            ("torch.serialization", "_legacy_load"),
            ("torch.utils.cpp_extension", "load_inline"),
            ("dataclasses", "_create_fn"),
            ("typing", "ForwardRef._evaluate"),
            ("pathlib", "Path.write_text"),
            ("codecs", "open"),
            ("numpy", "load"),
            ("numpy.lib.npyio", "load"),
            ("numpy.lib.format", "read_array"),
            // Python 2 names through _compat_pickle.
            ("SimpleXMLRPCServer", "SimpleXMLRPCServer"),
            ("__builtin__", "eval"),
            ("exceptions", "__import__"),
        ] {
            assert!(danger(m, n), "{m}.{n}");
        }
    }

    #[test]
    fn compat_mapping_only_below_protocol_3() {
        assert_eq!(
            resolve("__builtin__", "eval", 2),
            ("builtins".into(), "eval".into())
        );
        assert_eq!(
            resolve("SimpleXMLRPCServer", "X", 0),
            ("xmlrpc.server".into(), "X".into())
        );
        // NAME_MAPPING renames the pair, not only the module.
        assert_eq!(
            resolve("__builtin__", "xrange", 2),
            ("builtins".into(), "range".into())
        );
        assert_eq!(
            resolve("__builtin__", "eval", 4),
            ("__builtin__".into(), "eval".into())
        );
    }

    #[test]
    fn others_are_unknown() {
        for (m, n) in [
            ("collections", "defaultdict"),
            ("__main__", "MyModel"),
            ("torch._utils", "_rebuild_tensor_v2.extra"),
            ("torch._utils", "_rebuild_xla_tensor"),
            ("argparse", "Namespace"),
            (
                "lightning.pytorch.callbacks.model_checkpoint",
                "ModelCheckpoint",
            ),
            ("ossify", "thing"),
        ] {
            assert_eq!(judge(m, n, 2), Verdict::Unknown, "{m}.{n}");
        }
    }
}
