//! Which imports a pickle may make: the allow-list a PyTorch checkpoint needs, the imports known to run
//! code (notes §2: picklescan, modelscan, fickling, torch weights_only, A1111 safe.py), and the rest.

/// How an import is judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Needed by ordinary checkpoints, runs no code of the file's choosing.
    Allowed,
    /// Known to run code, touch files or the network (the reason says what it gives an attacker).
    Dangerous(&'static str),
    /// Neither allowed nor known to be dangerous.
    Unknown,
}

/// Python 2 module names the Python 3 unpickler maps to their new homes (protocols 0-2, `_compat_pickle`).
const PY2_MODULES: &[(&str, &str)] = &[
    ("__builtin__", "builtins"),
    ("exceptions", "builtins"),
    ("copy_reg", "copyreg"),
    ("cPickle", "pickle"),
    ("commands", "subprocess"),
    ("httplib", "http.client"),
    ("urllib2", "urllib.request"),
    ("urlparse", "urllib.parse"),
    ("SocketServer", "socketserver"),
    ("BaseHTTPServer", "http.server"),
    ("SimpleHTTPServer", "http.server"),
    ("CGIHTTPServer", "http.server"),
    ("xmlrpclib", "xmlrpc.client"),
    ("thread", "_thread"),
    ("dummy_thread", "_dummy_thread"),
    ("cStringIO", "io"),
    ("StringIO", "io"),
    ("UserDict", "collections"),
    ("UserList", "collections"),
    ("UserString", "collections"),
    ("cookielib", "http.cookiejar"),
    ("Queue", "queue"),
    ("repr", "reprlib"),
];

/// Modules whose every name is dangerous (submodules included).
const DANGEROUS_MODULES: &[(&str, &str)] = &[
    ("os", "operating-system access (os.system, file writes)"),
    ("posix", "operating-system access (posix.system)"),
    ("nt", "operating-system access (nt.system)"),
    ("subprocess", "runs programs"),
    ("_posixsubprocess", "runs programs"),
    ("_winapi", "runs programs"),
    ("pty", "runs programs in a terminal"),
    ("sys", "interpreter internals (sys.modules, exit)"),
    ("runpy", "runs Python code"),
    ("code", "runs Python code"),
    ("codeop", "compiles Python code"),
    ("marshal", "loads code objects"),
    ("types", "builds code and function objects"),
    ("importlib", "imports arbitrary modules"),
    ("imp", "imports arbitrary modules"),
    ("_imp", "imports arbitrary modules"),
    ("zipimport", "imports arbitrary modules"),
    ("pkgutil", "imports arbitrary modules"),
    ("site", "interpreter start-up hooks"),
    ("operator", "attribute and item access on arbitrary objects"),
    (
        "_operator",
        "attribute and item access on arbitrary objects",
    ),
    ("functools", "builds calls (functools.partial)"),
    ("ctypes", "calls native code"),
    ("_ctypes", "calls native code"),
    ("shutil", "copies, moves and deletes files"),
    ("tempfile", "creates files"),
    ("webbrowser", "opens URLs and runs a browser"),
    ("pickle", "nested unrestricted unpickling"),
    ("_pickle", "nested unrestricted unpickling"),
    ("dill", "nested unrestricted unpickling"),
    (
        "cloudpickle",
        "nested unrestricted unpickling, code objects",
    ),
    ("joblib", "nested unrestricted unpickling"),
    ("shelve", "nested unrestricted unpickling"),
    ("pdb", "debugger: runs Python code"),
    ("bdb", "debugger: runs Python code"),
    ("trace", "runs Python code"),
    ("profile", "runs Python code"),
    ("cProfile", "runs Python code"),
    ("timeit", "runs Python code"),
    ("doctest", "runs Python code"),
    ("unittest", "runs Python code"),
    ("pydoc", "runs programs (pager)"),
    ("idlelib", "runs Python code"),
    ("lib2to3", "runs Python code"),
    ("inspect", "introspection of live objects"),
    ("gc", "access to every live object"),
    ("socket", "network access"),
    ("_socket", "network access"),
    ("socketserver", "network server"),
    ("ssl", "network access"),
    ("asyncio", "network access and subprocesses"),
    ("aiohttp", "network access"),
    ("http", "network access"),
    ("httplib", "network access"),
    ("urllib", "network access"),
    ("urllib2", "network access"),
    ("urllib3", "network access"),
    ("requests", "network access"),
    ("httpx", "network access"),
    ("ftplib", "network access"),
    ("smtplib", "network access"),
    ("poplib", "network access"),
    ("imaplib", "network access and subprocesses"),
    ("nntplib", "network access"),
    ("telnetlib", "network access"),
    ("xmlrpc", "network access"),
    ("multiprocessing", "runs processes"),
    ("threading", "runs threads"),
    ("_thread", "runs threads"),
    ("signal", "signal handlers"),
    ("atexit", "exit hooks"),
    ("select", "raw I/O"),
    ("mmap", "raw memory and file access"),
    ("fcntl", "raw file access"),
    ("logging", "file handlers and socket listeners"),
    ("syslog", "system log access"),
    ("glob", "file-system access"),
    ("platform", "runs programs"),
    ("linecache", "reads files"),
    ("compileall", "compiles Python code"),
    ("py_compile", "compiles Python code"),
    ("tarfile", "file-system writes"),
    ("zipfile", "file-system writes"),
    ("sqlite3", "database files"),
    ("distutils", "file-system writes and builds"),
    ("setuptools", "runs builds"),
    ("pip", "installs packages"),
    ("ensurepip", "installs packages"),
    ("venv", "creates environments and runs programs"),
    ("pexpect", "runs programs"),
    ("pipes", "runs programs"),
    ("uuid", "runs programs"),
    ("test", "test-suite helpers that run code"),
    ("_osx_support", "runs programs"),
    ("_aix_support", "runs programs"),
    ("_pyrepl", "runs programs"),
    ("numpy.f2py", "compiles and runs code"),
    ("numpy.distutils", "runs builds"),
    ("numpy.testing._private.utils", "runs Python code"),
    ("torch._inductor", "compiles and runs code"),
    ("torch._dynamo", "runs guard code"),
    ("torch.hub", "downloads and runs code"),
    ("torch.jit", "runs TorchScript code"),
    (
        "torch.utils.cpp_extension",
        "compiles and loads native code",
    ),
    ("torch.utils.bottleneck", "runs Python code"),
    ("torch.utils.collect_env", "runs programs"),
    ("torch.utils._config_module", "loads pickled config"),
    (
        "torch.utils.data.datapipes.utils.decoder",
        "nested unrestricted unpickling",
    ),
    (
        "torch.fx.experimental.symbolic_shapes",
        "evaluates expressions",
    ),
];

/// Single names that are dangerous in otherwise harmless modules.
const DANGEROUS_NAMES: &[(&str, &str, &str)] = &[
    ("builtins", "eval", "runs Python code"),
    ("builtins", "exec", "runs Python code"),
    ("builtins", "execfile", "runs Python code"),
    ("builtins", "compile", "compiles Python code"),
    (
        "builtins",
        "getattr",
        "attribute access on arbitrary objects",
    ),
    (
        "builtins",
        "setattr",
        "attribute writes on arbitrary objects",
    ),
    (
        "builtins",
        "delattr",
        "attribute deletion on arbitrary objects",
    ),
    ("builtins", "open", "file access"),
    ("builtins", "file", "file access"),
    ("builtins", "__import__", "imports arbitrary modules"),
    ("builtins", "apply", "calls arbitrary functions"),
    ("builtins", "breakpoint", "starts a debugger"),
    ("builtins", "input", "reads the terminal"),
    ("builtins", "globals", "interpreter internals"),
    ("builtins", "locals", "interpreter internals"),
    ("builtins", "vars", "interpreter internals"),
    ("builtins", "reload", "re-imports modules"),
    ("builtins", "exit", "ends the process"),
    ("builtins", "quit", "ends the process"),
    ("builtins", "help", "runs a pager"),
    ("io", "open", "file access"),
    ("io", "FileIO", "file access"),
    ("_io", "open", "file access"),
    ("_io", "FileIO", "file access"),
    ("torch", "load", "nested unrestricted torch.load"),
    (
        "torch.serialization",
        "load",
        "nested unrestricted torch.load",
    ),
    (
        "torch.storage",
        "_load_from_bytes",
        "nested unrestricted torch.load",
    ),
    ("torch", "compile", "compiles and runs code"),
    ("numpy", "load", "nested unpickling"),
];

/// Single names a PyTorch / Stable Diffusion checkpoint legitimately imports (torch weights_only list,
/// A1111 safe.py, numpy reconstruction, Lightning's ModelCheckpoint).
const ALLOWED_NAMES: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("collections", "Counter"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.nn.parameter", "Parameter"),
    ("torch.nn.modules.container", "ParameterDict"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("torch", "Tensor"),
    ("torch", "device"),
    ("_codecs", "encode"),
    ("builtins", "set"),
    ("builtins", "bytearray"),
    ("builtins", "complex"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    (
        "pytorch_lightning.callbacks.model_checkpoint",
        "ModelCheckpoint",
    ),
];

/// torch dtypes, layouts and quantization schemes (torch weights_only allows them all).
const TORCH_CONSTANTS: &[&str] = &[
    "float32",
    "float",
    "float64",
    "double",
    "float16",
    "half",
    "bfloat16",
    "complex32",
    "complex64",
    "cfloat",
    "complex128",
    "cdouble",
    "uint8",
    "int8",
    "int16",
    "short",
    "int32",
    "int",
    "int64",
    "long",
    "bool",
    "uint16",
    "uint32",
    "uint64",
    "uint1",
    "uint2",
    "uint3",
    "uint4",
    "uint5",
    "uint6",
    "uint7",
    "int1",
    "int2",
    "int3",
    "int4",
    "int5",
    "int6",
    "int7",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "quint8",
    "qint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "bits8",
    "bits16",
    "strided",
    "sparse_coo",
    "sparse_csr",
    "sparse_csc",
    "sparse_bsr",
    "sparse_bsc",
    "_mkldnn",
    "per_tensor_affine",
    "per_channel_affine",
    "per_tensor_symmetric",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
];

/// Element types that have a `torch.<Name>Storage` / `torch.<Name>Tensor` class.
const TORCH_TYPE_PREFIXES: &[&str] = &[
    "Float",
    "Double",
    "Half",
    "BFloat16",
    "Long",
    "Int",
    "Short",
    "Char",
    "Byte",
    "Bool",
    "ComplexFloat",
    "ComplexDouble",
    "QUInt8",
    "QInt8",
    "QInt32",
    "QUInt4x2",
    "QUInt2x4",
    "Float8_e4m3fn",
    "Float8_e5m2",
    "Float8_e4m3fnuz",
    "Float8_e5m2fnuz",
    "Float8_e8m0fnu",
    "UInt16",
    "UInt32",
    "UInt64",
    "Untyped",
    "Typed",
];

/// Builtin functions whose appearance anywhere in a dotted name means an attribute walk to code execution.
const DANGEROUS_ATTRS: &[&str] = &[
    "eval",
    "exec",
    "compile",
    "system",
    "popen",
    "spawn",
    "getattr",
    "setattr",
    "open",
    "__import__",
    "import_module",
    "load",
    "loads",
    "run",
    "call",
    "check_output",
    "Popen",
    "modules",
];

/// The module name the Python 3 unpickler actually imports for `module`.
pub fn normalize_module(module: &str) -> &str {
    PY2_MODULES
        .iter()
        .find(|(old, _)| *old == module)
        .map_or(module, |(_, new)| new)
}

fn in_module(module: &str, root: &str) -> bool {
    module == root
        || (module.len() > root.len()
            && module.starts_with(root)
            && module.as_bytes()[root.len()] == b'.')
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn allowed(module: &str, name: &str) -> bool {
    if !is_identifier(name) {
        return false;
    }
    if ALLOWED_NAMES.contains(&(module, name)) {
        return true;
    }
    match module {
        "torch._utils" => name.starts_with("_rebuild_"),
        "torch" | "torch.cuda" => {
            let typed = name
                .strip_suffix("Storage")
                .or_else(|| name.strip_suffix("Tensor"))
                .is_some_and(|p| TORCH_TYPE_PREFIXES.contains(&p));
            typed || (module == "torch" && TORCH_CONSTANTS.contains(&name))
        }
        _ => false,
    }
}

/// Judges one import `module`.`name` as a pickle would resolve it.
pub fn classify(module: &str, name: &str) -> Verdict {
    let m = normalize_module(module);
    if allowed(m, name) {
        return Verdict::Allowed;
    }
    // An attribute walk (protocol 4 dotted names): dunders and well-known code-running names anywhere.
    if name.contains('.') {
        for part in name.split('.') {
            if part.len() > 4
                && part.starts_with("__")
                && part.ends_with("__")
                && part != "__import__"
            {
                return Verdict::Dangerous("attribute walk through a dunder attribute");
            }
            let bare = part.trim_start_matches('_');
            if DANGEROUS_ATTRS.contains(&part)
                || DANGEROUS_MODULES.iter().any(|(root, _)| *root == bare)
            {
                return Verdict::Dangerous("attribute walk to code-running objects");
            }
        }
    }
    for candidate in [m, module] {
        if let Some((_, why)) = DANGEROUS_MODULES
            .iter()
            .find(|(root, _)| in_module(candidate, root))
        {
            return Verdict::Dangerous(why);
        }
        let first = name.split('.').next().unwrap_or(name);
        if let Some((_, _, why)) = DANGEROUS_NAMES
            .iter()
            .find(|(dm, dn, _)| *dm == candidate && (*dn == name || *dn == first))
        {
            return Verdict::Dangerous(why);
        }
    }
    Verdict::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn danger(m: &str, n: &str) -> bool {
        matches!(classify(m, n), Verdict::Dangerous(_))
    }

    #[test]
    fn checkpoint_imports_are_allowed() {
        for (m, n) in [
            ("collections", "OrderedDict"),
            ("torch._utils", "_rebuild_tensor_v2"),
            ("torch._utils", "_rebuild_parameter"),
            ("torch", "HalfStorage"),
            ("torch", "BFloat16Storage"),
            ("torch.cuda", "FloatStorage"),
            ("torch", "float16"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
            ("__builtin__", "set"),
            (
                "pytorch_lightning.callbacks.model_checkpoint",
                "ModelCheckpoint",
            ),
        ] {
            assert_eq!(classify(m, n), Verdict::Allowed, "{m}.{n}");
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
        ] {
            assert!(danger(m, n), "{m}.{n}");
        }
    }

    #[test]
    fn others_are_unknown() {
        for (m, n) in [
            ("builtins", "dict"),
            ("collections", "defaultdict"),
            ("__main__", "MyModel"),
            ("torch._utils", "_rebuild_tensor_v2.extra"),
            (
                "lightning.pytorch.callbacks.model_checkpoint",
                "ModelCheckpoint",
            ),
            ("ossify", "thing"),
        ] {
            assert_eq!(classify(m, n), Verdict::Unknown, "{m}.{n}");
        }
    }
}
