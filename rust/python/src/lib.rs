//! `fastscan._core`: the Python face of fastscan-core. Plain data in, plain dicts out.

use fastscan_core::{
    list_objects, listing_failed, scan_stream, scan_url, Cache, FileReport, HashMode, OpenError,
    Progress, ScanOptions, Summary,
};
use pyo3::exceptions::{PyOSError, PyStopIteration, PyValueError};
use pyo3::prelude::*;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn options_with(hash: &str, sha256: bool, fingerprint: bool) -> PyResult<ScanOptions> {
    let hash = match hash {
        "none" => HashMode::None,
        "components" => HashMode::Components,
        "full" => HashMode::Full,
        other => {
            return Err(PyValueError::new_err(format!(
                "hash must be none, components or full, not {other:?}"
            )))
        }
    };
    Ok(ScanOptions {
        hash,
        sha256,
        stop: None,
        fingerprint,
        endpoint_url: None,
    })
}

/// How typed values become Python objects: dicts whose keys are in sorted order (as the maps of
/// `serde_json::Value` hold them), so a report reaches Python, and its JSON text is written, with the key
/// order it always had.
struct Sorted;

impl pythonize::PythonizeTypes for Sorted {
    type Map = SortedDict;
    type NamedMap = pythonize::PythonizeUnnamedMappingAdapter<SortedDict>;
    type List = pyo3::types::PyList;
}

/// A dict built from its items sorted by key (byte order, as `BTreeMap<String, _>` sorts).
struct SortedDict;

type Items<'py> = Vec<(String, Bound<'py, PyAny>, Bound<'py, PyAny>)>;

impl pythonize::PythonizeMappingType for SortedDict {
    type Builder<'py> = (Python<'py>, Items<'py>);

    fn builder<'py>(py: Python<'py>, len: Option<usize>) -> PyResult<Self::Builder<'py>> {
        Ok((py, Vec::with_capacity(len.unwrap_or(0))))
    }

    fn push_item<'py>(
        builder: &mut Self::Builder<'py>,
        key: Bound<'py, PyAny>,
        value: Bound<'py, PyAny>,
    ) -> PyResult<()> {
        builder.1.push((key.str()?.to_string(), key, value));
        Ok(())
    }

    fn finish<'py>(builder: Self::Builder<'py>) -> PyResult<Bound<'py, pyo3::types::PyMapping>> {
        use pyo3::types::{PyDict, PyDictMethods};
        let (py, mut items) = builder;
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let d = PyDict::new(py);
        for (_, k, v) in items {
            d.set_item(k, v)?;
        }
        Ok(d.into_mapping())
    }
}

/// A typed value (a report, a table, a fix's outcome) as Python objects, converted once at the border.
fn to_py<'py, T: serde::Serialize + ?Sized>(py: Python<'py>, v: &T) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize_custom::<Sorted, _>(py, v).map_err(|e| convert_error(py, e))
}

/// A conversion's failure as Python sees it: a `ValueError` naming what did not convert, except an
/// exception that is not an error of the data (Ctrl-C's `KeyboardInterrupt`, or `SystemExit`, raised
/// by a signal handler that ran while the conversion called into Python), which goes on as itself.
fn convert_error(py: Python<'_>, e: pythonize::PythonizeError) -> PyErr {
    let message = e.to_string();
    let err = PyErr::from(e);
    match err.is_instance_of::<pyo3::exceptions::PyException>(py) {
        true => PyValueError::new_err(message),
        false => err,
    }
}

/// Walks roots; returns ([(path, size, mtime)], [(path, kind, message)]), paths as `str` the way
/// `os.fsdecode` gives them (bytes that are not UTF-8 as surrogate escapes, so they open again).
#[pyfunction]
#[pyo3(signature = (roots, follow_links=false, jobs=0))]
#[allow(clippy::type_complexity)]
fn walk(
    py: Python<'_>,
    roots: Vec<PathBuf>,
    follow_links: bool,
    jobs: usize,
) -> (
    Vec<(OsString, u64, f64)>,
    Vec<(OsString, &'static str, String)>,
) {
    let (files, errors) = py.detach(|| fastscan_core::walk(&roots, follow_links, jobs));
    (
        files
            .into_iter()
            .map(|e| (e.path.into_os_string(), e.size, e.mtime))
            .collect(),
        errors
            .into_iter()
            .map(|e| (e.path.into_os_string(), e.kind.name(), e.message))
            .collect(),
    )
}

/// Scans one file (or diffusers folder) with the core's threads and returns its report as a dict, the
/// same report a multi-file scan makes of it (`fingerprint`: lineage fingerprints, as `Scanner`).
///
/// `path` may be an object's URL (`endpoint_url` as for `Scanner`): with `etag` (its listing's), every
/// read is pinned to that version.
#[pyfunction]
#[pyo3(signature = (path, hash="full", sha256=false, fingerprint=false, endpoint_url=None, etag=None))]
fn scan_file<'py>(
    py: Python<'py>,
    path: PathBuf,
    hash: &str,
    sha256: bool,
    fingerprint: bool,
    endpoint_url: Option<String>,
    etag: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let opts = options_with(hash, sha256, fingerprint)?;
    let r = py.detach(
        || match path.to_str().filter(|u| fastscan_core::is_url(u)) {
            Some(url) => scan_url(url, endpoint_url.as_deref(), etag.as_deref(), &opts),
            None => fastscan_core::scan_cached(&path, &opts, None),
        },
    );
    to_py(py, &r)
}

/// Writes the hashes of scan `reports` in another tool's format (`a1111`: merged into the web UI's
/// cache.json at `webui_cache`; `civitai-info`, `cm-info`: a sidecar beside each model), atomically;
/// existing files are replaced only with `force`. Returns [{model, path, status, message}];
/// ValueError for an unknown format, OSError when the web UI's cache cannot be read or written.
#[pyfunction]
#[pyo3(signature = (format, reports, force=false, webui_cache=None))]
fn export<'py>(
    py: Python<'py>,
    format: &str,
    reports: &Bound<'py, PyAny>,
    force: bool,
    webui_cache: Option<PathBuf>,
) -> PyResult<Bound<'py, PyAny>> {
    use fastscan_core::{export_a1111, export_sidecars, ExportFormat as Format};
    let f = Format::parse(format).ok_or_else(|| {
        PyValueError::new_err(format!(
            "format must be a1111, civitai-info or cm-info, not {format:?}"
        ))
    })?;
    let reports = from_py(reports)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let outcomes = match (f, webui_cache) {
        (Format::A1111, Some(cache)) => py
            .detach(|| export_a1111(&cache, &reports, force))
            .map_err(PyOSError::new_err)?,
        (Format::A1111, None) => {
            return Err(PyValueError::new_err(
                "the a1111 format needs the web UI's cache.json (webui_cache)",
            ))
        }
        (f, _) => py.detach(|| export_sidecars(f, &reports, force, now)),
    };
    pythonize::pythonize(py, &outcomes).map_err(|e| convert_error(py, e))
}

/// What a scan of `roots` covers, walked and listed as `Scanner` walks and lists them: ([(path or URL,
/// size, ETag or None)] of each file, diffusers folder or object to scan, [report] of each unreadable
/// path or unlistable root as the scan gives it, the number of symlinks inside directories not followed).
#[pyfunction]
#[pyo3(signature = (roots, follow_links=false, jobs=0, endpoint_url=None))]
#[allow(clippy::type_complexity)]
fn scan_plan<'py>(
    py: Python<'py>,
    roots: Vec<PathBuf>,
    follow_links: bool,
    jobs: usize,
    endpoint_url: Option<String>,
) -> PyResult<(
    Vec<(OsString, u64, Option<String>)>,
    Vec<Bound<'py, PyAny>>,
    u64,
)> {
    let (urls, paths): (Vec<PathBuf>, Vec<PathBuf>) = roots
        .into_iter()
        .partition(|r| r.to_str().is_some_and(fastscan_core::is_url));
    let (objects, unlisted, (files, errors, skipped)) = py.detach(|| {
        let mut objects = Vec::new();
        let mut unlisted = Vec::new();
        for url in urls.iter().filter_map(|u| u.to_str()) {
            let listed = list_objects(url, endpoint_url.as_deref(), &mut |o| {
                objects.push((OsString::from(o.url), o.size, o.etag));
                true
            });
            if let Err(message) = listed {
                unlisted.push(listing_failed(url, message));
            }
        }
        let walked = fastscan_core::walk_counting(&paths, follow_links, jobs);
        (objects, unlisted, walked)
    });
    let failed = unlisted
        .iter()
        .map(|r| to_py(py, r))
        .chain(errors.iter().map(|e| to_py(py, &e.report())))
        .collect::<PyResult<_>>()?;
    let files = objects
        .into_iter()
        .chain(
            files
                .into_iter()
                .map(|e| (e.path.into_os_string(), e.size, None)),
        )
        .collect();
    Ok((files, failed, skipped))
}

/// The one place core errors become Python exceptions: OSError for I/O, ValueError for a file that is
/// not a (readable) model; the message names the file.
fn open_error(path: &std::path::Path, e: OpenError) -> PyErr {
    let msg = format!("{}: {e}", path.display());
    match e {
        OpenError::Io(_) => PyOSError::new_err(msg),
        OpenError::NotAModel(_)
        | OpenError::Header(_)
        | OpenError::Pickle(..)
        | OpenError::Npy(..) => PyValueError::new_err(msg),
    }
}

/// Opens a file as the core judges it: {format, kind, arch, size, header_len, unaccounted_bytes, metadata,
/// findings, convert_metadata (the [key, value] pairs `convert` writes: the checkpoint's pickle extras, its
/// name, and its hashes left empty for `write_fix(source_hashes=True)` to fill), tensors: [{name, dtype,
/// shape, start, len, span, strides, role, component, canonical, position_ids, prune}]} (a buffer has
/// the component and canonical name of the component it sits under, if any); raises ValueError/OSError naming the file when it cannot be read.
#[pyfunction]
fn read_tensors<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyAny>> {
    let t = py
        .detach(|| fastscan_core::open_table(&path))
        .map_err(|e| open_error(&path, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let convert = fastscan_core::convert_metadata(&t.pickle_extras, &name);
    let view = TableView {
        format: t.format,
        size: t.size,
        header_len: t.header_len,
        unaccounted_bytes: t.unaccounted_bytes(),
        metadata: &t.metadata,
        findings: &t.findings,
        convert_metadata: Some(&convert),
        ..TableView::of(&t.tensors, &t.class)
    };
    to_py(py, &view)
}

/// What `read_tensors` and `read_memory` hand to Python: the table's facts as the core decided them.
#[derive(serde::Serialize)]
struct TableView<'a> {
    format: fastscan_core::Format,
    kind: fastscan_core::Kind,
    arch: fastscan_core::Arch,
    size: u64,
    header_len: u64,
    unaccounted_bytes: u64,
    metadata: &'a std::collections::BTreeMap<String, serde_json::Value>,
    findings: &'a [fastscan_core::Finding],
    /// The [key, value] pairs `convert` writes (files only): the checkpoint's pickle extras, its name,
    /// and its hashes left empty for `write_fix(source_hashes=True)` to fill.
    #[serde(skip_serializing_if = "Option::is_none")]
    convert_metadata: Option<&'a [(String, String)]>,
    identification: &'a Option<fastscan_core::Identification>,
    tensors: Vec<TensorRow<'a>>,
}

/// One tensor of a `TableView`, with the role and component the core gave it.
#[derive(serde::Serialize)]
struct TensorRow<'a> {
    name: &'a str,
    dtype: fastscan_core::Dtype,
    shape: &'a [u64],
    start: u64,
    len: u64,
    span: u64,
    strides: &'a Option<Vec<u64>>,
    /// `component`, `ema`, `buffer` or `junk`.
    role: &'static str,
    component: Option<&'static str>,
    canonical: Option<&'a str>,
    position_ids: bool,
    prune: Option<fastscan_core::PruneGroup>,
}

impl<'a> TableView<'a> {
    /// The classification and the rows of a table; the caller fills in the rest.
    fn of(
        tensors: &'a [fastscan_core::TensorInfo],
        class: &'a fastscan_core::Classification,
    ) -> Self {
        use fastscan_core::Role;
        static EMPTY: std::sync::OnceLock<std::collections::BTreeMap<String, serde_json::Value>> =
            std::sync::OnceLock::new();
        let owners = fastscan_core::buffer_owners(tensors, &class.roles);
        let tensors = tensors
            .iter()
            .zip(&class.roles)
            .zip(owners)
            .map(|((x, role), owner)| {
                let (kind, component, canonical) = match role {
                    Role::Component { name, prefix_len } => {
                        ("component", Some(*name), Some(&x.name[*prefix_len..]))
                    }
                    Role::Ema => ("ema", None, None),
                    // a buffer under a component's prefix goes with it (extract takes it)
                    Role::Buffer => match owner {
                        Some((name, len)) => ("buffer", Some(name), Some(&x.name[len..])),
                        None => ("buffer", None, None),
                    },
                    Role::Junk => ("junk", None, None),
                };
                let (begin, end) = fastscan_core::span(x);
                TensorRow {
                    name: &x.name,
                    dtype: x.dtype,
                    shape: &x.shape,
                    start: x.start,
                    len: x.len,
                    span: end - begin,
                    strides: &x.strides,
                    role: kind,
                    component,
                    canonical,
                    position_ids: fastscan_core::is_text_position_ids(&x.name),
                    prune: fastscan_core::prune_group(x, role),
                }
            })
            .collect();
        TableView {
            format: fastscan_core::Format::Unknown,
            kind: class.kind,
            arch: class.arch,
            size: 0,
            header_len: 0,
            unaccounted_bytes: 0,
            metadata: EMPTY.get_or_init(Default::default),
            findings: &[],
            convert_metadata: None,
            identification: &class.identification,
            tensors,
        }
    }
}

/// A tensor held in memory, as `fastscan.torch` passes it: (name, dtype, shape, address, nbytes).
type RawTensor = (String, String, Vec<u64>, usize, usize);

/// The core's view of tensors held in memory (their bytes are read where they are).
fn mem_tensors(raw: &[RawTensor]) -> PyResult<Vec<fastscan_core::MemTensor<'_>>> {
    use fastscan_core::Dtype;
    raw.iter()
        .map(|(name, dtype, shape, addr, nbytes)| {
            let dtype = Dtype::parse(dtype).ok_or_else(|| {
                PyValueError::new_err(format!("tensor {name}: unknown dtype {dtype}"))
            })?;
            let bytes: &[u8] = if *nbytes == 0 || *addr == 0 {
                &[]
            } else {
                // SAFETY: `fastscan.torch` passes `data_ptr()` and `numel() * element_size()` of
                // contiguous CPU tensors it holds references to until this call returns; the memory
                // is only read, and torch does not free or move a referenced tensor's storage.
                unsafe { std::slice::from_raw_parts(*addr as *const u8, *nbytes) }
            };
            Ok(fastscan_core::MemTensor {
                name: name.clone(),
                dtype,
                shape: shape.clone(),
                bytes,
            })
        })
        .collect()
}

/// The report of tensors held in memory (fastscan.torch.scan_state_dict): the checks, and with `data`
/// the component hashes and value checks. Internal: every address must stay valid during the call.
#[pyfunction]
#[pyo3(signature = (tensors, data=true))]
fn scan_memory<'py>(
    py: Python<'py>,
    tensors: Vec<RawTensor>,
    data: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let mem = mem_tensors(&tensors)?;
    let r = py
        .detach(|| fastscan_core::scan_memory(&mem, data))
        .map_err(PyValueError::new_err)?;
    to_py(py, &r)
}

/// `read_tensors` of tensors held in memory (what fix planning reads). Internal, as `scan_memory`.
#[pyfunction]
fn read_memory<'py>(py: Python<'py>, tensors: Vec<RawTensor>) -> PyResult<Bound<'py, PyAny>> {
    let mem = mem_tensors(&tensors)?;
    let t = py
        .detach(|| fastscan_core::open_memory(&mem))
        .map_err(PyValueError::new_err)?;
    let view = TableView {
        format: fastscan_core::Format::StateDict,
        size: t.size,
        findings: &t.findings,
        ..TableView::of(&t.tensors, &t.class)
    };
    to_py(py, &view)
}

/// Serializes a safetensors header as the reference writer lays it out: (padded JSON bytes,
/// [(begin, end)] of each tensor in the data region, in input order). ValueError on an unknown dtype,
/// a repeated name or a size that is not whole bytes.
#[pyfunction]
#[pyo3(signature = (tensors, metadata=None))]
#[allow(clippy::type_complexity)]
fn safetensors_header<'py>(
    py: Python<'py>,
    tensors: Vec<(String, String, Vec<u64>)>,
    metadata: Option<Vec<(String, String)>>,
) -> PyResult<(Bound<'py, pyo3::types::PyBytes>, Vec<(u64, u64)>)> {
    use fastscan_core::Dtype;
    use fastscan_core::{serialize_header, OutTensor};
    let tensors = tensors
        .into_iter()
        .map(|(name, dtype, shape)| {
            let dtype = Dtype::parse(&dtype).ok_or_else(|| {
                PyValueError::new_err(format!("tensor {name}: unknown dtype {dtype}"))
            })?;
            Ok(OutTensor { name, dtype, shape })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let s = serialize_header(&tensors, metadata.as_deref())
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((pyo3::types::PyBytes::new(py, &s.json), s.offsets))
}

/// Converts raw float tensor bytes from dtype `src` to `dst` (F64/F32/F16/BF16 to F32/F16/BF16),
/// rounding to nearest even; ValueError for any other pair or partial elements.
#[pyfunction]
fn cast<'py>(
    py: Python<'py>,
    raw: &[u8],
    src: &str,
    dst: &str,
) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
    use fastscan_core::Dtype;
    let (Some(from), Some(to)) = (Dtype::parse(src), Dtype::parse(dst)) else {
        return Err(PyValueError::new_err(format!("cannot cast {src} to {dst}")));
    };
    let bytes = raw;
    let mut out = Vec::new();
    let ok = py.detach(|| fastscan_core::cast(bytes, from, to, &mut out));
    if !ok {
        return Err(PyValueError::new_err(format!(
            "cannot cast {} bytes of {src} to {dst}",
            bytes.len()
        )));
    }
    Ok(pyo3::types::PyBytes::new(py, &out))
}

/// Every import in a raw pickle stream (all its pickles), never loading it: [{module, name, opcode, pos,
/// used, unresolved, written}] in stream order; `module`/`name` as CPython resolves them.
#[pyfunction]
fn pickle_imports<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let imports = py.detach(|| fastscan_core::pickle_imports(data));
    to_py(py, &imports)
}

/// True when `root` is an object-store URL (s3://, gs://, az://, https://...) rather than a local path
/// (any path: one whose bytes are not UTF-8 is never a URL).
#[pyfunction]
fn is_url(root: PathBuf) -> bool {
    root.to_str().is_some_and(fastscan_core::is_url)
}

/// Copies the object `url` into the folder `dir` under its own name; returns the file's path (the
/// input of a fix read from object storage). OSError naming the URL and the problem.
#[pyfunction]
#[pyo3(signature = (url, dir, endpoint_url=None))]
fn download(
    py: Python<'_>,
    url: &str,
    dir: PathBuf,
    endpoint_url: Option<String>,
) -> PyResult<PathBuf> {
    py.detach(|| fastscan_core::download_object(url, endpoint_url.as_deref(), &dir))
        .map_err(PyOSError::new_err)
}

/// What a scan of `roots` would read, reading nothing: ([(path or URL, size, bytes read at least)],
/// [(root, message)] of roots that cannot be walked or listed).
#[pyfunction]
#[pyo3(signature = (roots, hash="full", follow_links=false, endpoint_url=None))]
#[allow(clippy::type_complexity)]
fn plan(
    py: Python<'_>,
    roots: Vec<PathBuf>,
    hash: &str,
    follow_links: bool,
    endpoint_url: Option<String>,
) -> PyResult<(Vec<(String, u64, u64)>, Vec<(String, String)>)> {
    let opts = ScanOptions {
        endpoint_url,
        ..options_with(hash, false, false)?
    };
    Ok(py.detach(|| fastscan_core::plan(&roots, follow_links, &opts)))
}

/// Reports queued between the scanning threads and the Python reader: a slow reader slows the scan
/// down instead of growing memory.
const REPORT_QUEUE: usize = 64;
/// How often a reader waiting for a report lets Python run its signal handlers.
const SIGNAL_POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// How long a reader woken by a report leaves the scanning threads to finish more before it takes
/// what has come: reports are then handed over in batches, and a library of small files no longer
/// costs two thread wake-ups (and, on a machine with few cores, a preempted scanning thread) per file.
const LINGER: std::time::Duration = std::time::Duration::from_micros(500);

/// A finished report on its way to the Python reader, with its file object's JSON text when the
/// scanner was asked for text (serialized on the scanning thread, in parallel).
struct Sent {
    report: FileReport,
    text: Option<String>,
}

/// What duplicate grouping reads of a hashed file (fastscan.dedupe): path, size, mtime, error,
/// the findings' severities, the whole-file BLAKE3 and each component's hash and size.
#[derive(serde::Serialize)]
struct DedupeRecord<'a> {
    path: &'a str,
    size: u64,
    mtime: f64,
    error: Option<&'a fastscan_core::FileError>,
    findings: Vec<SeverityOf>,
    hashes: Blake3Of<'a>,
    components: std::collections::BTreeMap<&'a str, ComponentOf<'a>>,
}

#[derive(serde::Serialize)]
struct SeverityOf {
    severity: fastscan_core::Severity,
}

#[derive(serde::Serialize)]
struct Blake3Of<'a> {
    blake3: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct ComponentOf<'a> {
    blake3: Option<&'a str>,
    bytes: u64,
}

impl<'a> DedupeRecord<'a> {
    fn of(r: &'a FileReport) -> Self {
        DedupeRecord {
            path: &r.path,
            size: r.size,
            mtime: r.mtime,
            error: r.error.as_ref(),
            findings: r
                .findings
                .iter()
                .map(|f| SeverityOf {
                    severity: f.severity,
                })
                .collect(),
            hashes: Blake3Of {
                blake3: r.hashes.blake3.as_deref(),
            },
            components: r
                .components
                .iter()
                .map(|(k, c)| {
                    let c = ComponentOf {
                        blake3: c.blake3.as_deref(),
                        bytes: c.bytes,
                    };
                    (k.as_str(), c)
                })
                .collect(),
        }
    }
}

/// Walks roots and scans what it finds, in parallel in the background; iterate to receive each
/// report (a dict) as it finishes. `close()` (or dropping the scanner) stops every thread.
///
/// With `cache` (a database path), unchanged files are served from it without being opened. With
/// `text`, each item is instead `(path, size, json, record)`: the file's exact path (as `os.fsdecode`
/// gives it), its size, its file object as compact JSON text written by the core, and, when the scan hashes,
/// what duplicate grouping reads of it (else None). `summary` totals the reports handed out so far.
#[pyclass]
struct Scanner {
    rx: Mutex<Option<Receiver<Sent>>>,
    /// Reports taken from `rx` and not yet handed out (a batch: see [`LINGER`]).
    ready: Mutex<VecDeque<Sent>>,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    thread: Mutex<Option<JoinHandle<()>>>,
    summary: Mutex<Summary>,
    hashed: bool,
    /// Set when the cache database was unreadable and was rebuilt.
    #[pyo3(get)]
    cache_warning: Option<String>,
}

impl Scanner {
    fn halt(&self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver fails the next send of every scanning thread.
        self.rx.lock().unwrap().take();
        self.ready.lock().unwrap().clear();
    }

    /// A report received, as iterating yields it: a dict, or (path, size, json, record) as text.
    fn hand_out<'py>(&self, py: Python<'py>, sent: Sent) -> PyResult<Bound<'py, PyAny>> {
        let Sent { report, text } = sent;
        self.summary.lock().unwrap().add(&report);
        let Some(text) = text else {
            return to_py(py, &report);
        };
        let path = exact_path(&report).into_pyobject(py)?.into_any();
        let record = match self.hashed {
            true => to_py(py, &DedupeRecord::of(&report))?,
            false => py.None().into_bound(py),
        };
        let item = (path, report.size, text, record);
        Ok(item.into_pyobject(py)?.into_any())
    }
}

impl Drop for Scanner {
    fn drop(&mut self) {
        self.halt();
    }
}

#[pymethods]
impl Scanner {
    #[new]
    #[pyo3(signature = (roots, hash="full", sha256=false, jobs=0, cache=None, follow_links=false, fingerprint=false, endpoint_url=None, text=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        roots: Vec<PathBuf>,
        hash: &str,
        sha256: bool,
        jobs: usize,
        cache: Option<PathBuf>,
        follow_links: bool,
        fingerprint: bool,
        endpoint_url: Option<String>,
        text: bool,
    ) -> PyResult<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let opts = ScanOptions {
            stop: Some(stop.clone()),
            endpoint_url,
            ..options_with(hash, sha256, fingerprint)?
        };
        let cache = cache
            .map(|p| Cache::open(&p))
            .transpose()
            .map_err(PyOSError::new_err)?;
        let cache_warning = cache.as_ref().and_then(|c| c.warning.clone());
        let (tx, rx) = sync_channel(REPORT_QUEUE);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(jobs)
            .build()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let progress = Arc::new(Progress::default());
        let p = progress.clone();
        let hashed = opts.hash != HashMode::None;
        let thread = std::thread::spawn(move || {
            pool.install(|| {
                scan_stream(
                    &roots,
                    follow_links,
                    jobs,
                    &opts,
                    cache.as_ref(),
                    &p,
                    |report| {
                        let text = text
                            .then(|| serde_json::to_string(&report).expect("a report serializes"));
                        tx.send(Sent { report, text }).is_ok()
                    },
                )
            });
        });
        Ok(Scanner {
            rx: Mutex::new(Some(rx)),
            ready: Mutex::new(VecDeque::new()),
            stop,
            progress,
            thread: Mutex::new(Some(thread)),
            summary: Mutex::new(Summary::default()),
            hashed,
            cache_warning,
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next report; waits for it in short slices so that Ctrl-C and SIGTERM handlers run.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        loop {
            if let Some(sent) = self.ready.lock().unwrap().pop_front() {
                return self.hand_out(py, sent);
            }
            let got = py.detach(|| {
                let rx = self.rx.lock().unwrap();
                let rx = rx.as_ref().ok_or(RecvTimeoutError::Disconnected)?;
                let first = rx.recv_timeout(SIGNAL_POLL)?;
                std::thread::sleep(LINGER);
                let mut ready = self.ready.lock().unwrap();
                ready.push_back(first);
                ready.extend(rx.try_iter());
                Ok(())
            });
            match got {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => py.check_signals()?,
                Err(RecvTimeoutError::Disconnected) => return Err(PyStopIteration::new_err(())),
            }
        }
    }

    /// Stops the scan and waits until every walking and scanning thread has finished (a file being
    /// hashed is abandoned between two chunks). Further iteration ends at once.
    fn close(&self, py: Python<'_>) {
        self.halt();
        let t = self.thread.lock().unwrap().take();
        if let Some(t) = t {
            let _ = py.detach(|| t.join());
        }
    }

    /// (files_found, bytes_found, walk_done, files_scanned): the totals grow as the walk finds files
    /// and are final once walk_done is true.
    #[getter]
    fn progress(&self) -> (u64, u64, bool, u64) {
        let p = &self.progress;
        (
            p.files_found.load(Ordering::Relaxed),
            p.bytes_found.load(Ordering::Relaxed),
            p.walk_done.load(Ordering::Acquire),
            p.files_scanned.load(Ordering::Relaxed),
        )
    }

    /// The summary (report schema) of the reports handed out so far, with the links skipped so far.
    #[getter]
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut s = self.summary.lock().unwrap().clone();
        s.skipped_links = self.progress.skipped_links.load(Ordering::Relaxed);
        to_py(py, &s)
    }

    /// Symbolic links below a root the walk did not follow (0 with `follow_links`).
    #[getter]
    fn skipped_links(&self) -> u64 {
        self.progress.skipped_links.load(Ordering::Relaxed)
    }

    /// True while a walking or scanning thread is still at work.
    #[getter]
    fn running(&self) -> bool {
        self.thread
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }
}

/// A report's exact path: its `path_b64` bytes when the path is not UTF-8, else `path`.
fn exact_path(r: &FileReport) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    match r.path_b64.as_deref().and_then(fastscan_core::base64_decode) {
        Some(bytes) => OsString::from_vec(bytes),
        None => OsString::from(&r.path),
    }
}

/// Totals of file objects (dicts of `fastscan.report/1`) as the core sums them: the `summary` of a
/// report whose files did not come from a `Scanner` (a cluster's workers, a report built by hand).
#[pyclass]
#[derive(Default)]
struct Totals {
    inner: Mutex<Summary>,
}

#[pymethods]
impl Totals {
    #[new]
    fn new() -> Self {
        Totals::default()
    }

    /// Counts one more file object.
    fn add(&self, report: &Bound<'_, PyAny>) -> PyResult<()> {
        let r: FileReport =
            pythonize::depythonize(report).map_err(|e| convert_error(report.py(), e))?;
        self.inner.lock().unwrap().add(&r);
        Ok(())
    }

    /// The summary object (skipped_links 0: a walk sets it).
    #[getter]
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &*self.inner.lock().unwrap())
    }
}

/// A temporary output file in the folder of `out` (see fastscan_core::atomic): unnamed where the
/// filesystem allows, so a killed process leaves nothing. Write to `fd`, read back through `path`,
/// then `commit(out, overwrite)` or `discard()`.
#[pyclass]
struct TempOutput {
    inner: Mutex<Option<fastscan_core::TempOutput>>,
    /// The open descriptor to write to (owned by this object: do not close it).
    #[pyo3(get)]
    fd: i32,
    /// A path that reads the file back until it is committed.
    #[pyo3(get)]
    path: OsString,
}

#[pymethods]
impl TempOutput {
    #[new]
    #[pyo3(signature = (out, mode=None))]
    fn new(out: PathBuf, mode: Option<u32>) -> PyResult<Self> {
        use std::os::fd::AsRawFd;
        let t = fastscan_core::TempOutput::create(&out, mode)?;
        Ok(TempOutput {
            fd: t.file().as_raw_fd(),
            path: t.path().into_os_string(),
            inner: Mutex::new(Some(t)),
        })
    }

    /// Names the file `out` and syncs the folder; FileExistsError when `out` exists and not
    /// `overwrite` (the file is then discarded).
    #[pyo3(signature = (out, overwrite=false))]
    fn commit(&self, py: Python<'_>, out: PathBuf, overwrite: bool) -> PyResult<()> {
        let t = self.inner.lock().unwrap().take();
        let t = t.ok_or_else(|| {
            PyValueError::new_err("temporary output already committed or discarded")
        })?;
        py.detach(|| t.commit(&out, overwrite))?;
        Ok(())
    }

    /// Closes and removes the file (nothing when already committed or discarded).
    fn discard(&self) {
        if let Some(t) = self.inner.lock().unwrap().take() {
            t.discard();
        }
    }
}

/// One planned tensor as Python hands it: (name, dtype, shape, op, source) where source is
/// (source index, name, dtype, shape, start, len, strides) or None for `arange`.
type PyPlanTensor = (
    String,
    String,
    Vec<u64>,
    String,
    Option<(usize, String, String, Vec<u64>, u64, u64, Option<Vec<u64>>)>,
);

fn dtype_of(s: &str) -> PyResult<fastscan_core::Dtype> {
    fastscan_core::Dtype::parse(s)
        .ok_or_else(|| PyValueError::new_err(format!("unknown dtype {s}")))
}

fn fix_plan(
    tensors: Vec<PyPlanTensor>,
    metadata: Vec<(String, String)>,
    sources: Vec<PathBuf>,
    gone: Vec<String>,
    kind: Option<String>,
    source_hashes: bool,
) -> PyResult<fastscan_core::FixPlan> {
    let kind = kind
        .map(|k| {
            fastscan_core::Kind::parse(&k)
                .ok_or_else(|| PyValueError::new_err(format!("unknown kind {k:?}")))
        })
        .transpose()?;
    use fastscan_core::OutTensor;
    use fastscan_core::TensorInfo;
    use fastscan_core::{FixPlan as Plan, Op, PlanTensor};
    let tensors = tensors
        .into_iter()
        .map(|(name, dtype, shape, op, src)| {
            let op = match op.as_str() {
                "copy" => Op::Copy,
                "cast" => Op::Cast,
                "arange" => Op::Arange,
                _ => return Err(PyValueError::new_err(format!("{name}: unknown op {op}"))),
            };
            let input = match src {
                None => None,
                Some((i, n, d, sh, start, len, strides)) => Some((
                    i,
                    TensorInfo {
                        name: n,
                        dtype: dtype_of(&d)?,
                        shape: sh,
                        start,
                        len,
                        strides,
                    },
                )),
            };
            Ok(PlanTensor {
                out: OutTensor {
                    name,
                    dtype: dtype_of(&dtype)?,
                    shape,
                },
                op,
                input,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok(Plan {
        tensors,
        metadata,
        sources,
        gone,
        kind,
        source_hashes,
    })
}

/// Passes the executor's progress to a Python callable `(stage, done, total)`; keeps the first
/// exception it raises (or a pending signal's, such as Ctrl-C) to raise once the fix has stopped.
struct PyObserver {
    callback: Option<Py<PyAny>>,
    error: Option<PyErr>,
}

impl fastscan_core::Observer for PyObserver {
    fn progress(
        &mut self,
        stage: fastscan_core::Stage,
        done: u64,
        total: u64,
    ) -> Result<(), fastscan_core::FixError> {
        let stage = match stage {
            fastscan_core::Stage::Write => "write",
            fastscan_core::Stage::Verify => "verify",
            fastscan_core::Stage::Upload => "upload",
        };
        let r = Python::attach(|py| -> PyResult<()> {
            py.check_signals()?;
            if let Some(cb) = &self.callback {
                cb.call1(py, (stage, done, total))?;
            }
            Ok(())
        });
        r.map_err(|e| {
            self.error = Some(e);
            fastscan_core::FixError::Stopped
        })
    }
}

/// Bytes of the file `write_fix` would write for this plan (ValueError when it cannot be written).
#[pyfunction]
#[pyo3(signature = (tensors, metadata, *, source_hashes=false))]
fn fix_output_size(
    tensors: Vec<PyPlanTensor>,
    metadata: Vec<(String, String)>,
    source_hashes: bool,
) -> PyResult<u64> {
    let plan = fix_plan(tensors, metadata, vec![], vec![], None, source_hashes)?;
    fastscan_core::fix_output_size(&plan).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Writes a planned safetensors file through a fsynced, verified temporary file (see
/// fastscan_core::fix): returns {size, metadata, source_findings}. With `source_hashes` the first
/// source's whole-file blake3 and sha256 fill the metadata keys `fastscan.source_blake3`/`_sha256`,
/// taken while the source is read for the write. FileExistsError when `out` exists (or appears)
/// and not `overwrite`; OSError on a read/write failure; ValueError for a bad plan, a changed
/// input or a failed verification; an exception raised by `progress(stage, done, total)` (or
/// Ctrl-C) stops the fix and is raised again. Nothing is left behind on any error. An object-store
/// `out` (`endpoint_url` as for `Scanner`) is a new object: written and verified locally, uploaded,
/// read back (see fastscan_core::fix_to_object); it is never replaced (ValueError).
#[pyfunction]
#[pyo3(signature = (tensors, metadata, sources, out, *, gone=vec![], kind=None, overwrite=false, mode=None, progress=None, endpoint_url=None, source_hashes=false))]
#[allow(clippy::too_many_arguments)]
fn write_fix<'py>(
    py: Python<'py>,
    tensors: Vec<PyPlanTensor>,
    metadata: Vec<(String, String)>,
    sources: Vec<PathBuf>,
    out: PathBuf,
    gone: Vec<String>,
    kind: Option<String>,
    overwrite: bool,
    mode: Option<u32>,
    progress: Option<Py<PyAny>>,
    endpoint_url: Option<String>,
    source_hashes: bool,
) -> PyResult<Bound<'py, PyAny>> {
    use fastscan_core::FixError;
    let plan = fix_plan(tensors, metadata, sources, gone, kind, source_hashes)?;
    let mut obs = PyObserver {
        callback: progress,
        error: None,
    };
    let r = py.detach(|| match out.to_str().filter(|u| fastscan_core::is_url(u)) {
        Some(url) => fastscan_core::fix_to_object(&plan, url, endpoint_url.as_deref(), &mut obs),
        None => fastscan_core::execute_fix(&plan, &out, overwrite, mode, &mut obs),
    });
    match r {
        Ok(w) => to_py(py, &w),
        Err(FixError::Stopped) => Err(obs
            .error
            .take()
            .unwrap_or_else(|| PyValueError::new_err("stopped"))),
        Err(e @ FixError::Exists(_)) => {
            Err(pyo3::exceptions::PyFileExistsError::new_err(e.to_string()))
        }
        Err(e @ FixError::Io(..)) => Err(PyOSError::new_err(e.to_string())),
        Err(e) => Err(PyValueError::new_err(e.to_string())),
    }
}

/// Copies `src` into `folder` under its own name through a fsynced temporary file, verified by BLAKE3,
/// keeping its permission bits and times (see fastscan_core::backup); returns the copy's path.
/// ValueError naming the file and the problem when no backup was made (the source is untouched).
#[pyfunction]
#[pyo3(signature = (src, folder, *, overwrite=false))]
fn backup_file(
    py: Python<'_>,
    src: PathBuf,
    folder: PathBuf,
    overwrite: bool,
) -> PyResult<OsString> {
    py.detach(|| fastscan_core::backup_file(&src, &folder, overwrite))
        .map(|(dest, _)| dest.into_os_string())
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Removes the temporary files left in `folder` by fastscan processes that are gone; returns them.
#[pyfunction]
fn sweep_temp(folder: PathBuf) -> Vec<OsString> {
    fastscan_core::sweep_temp(&folder)
        .into_iter()
        .map(PathBuf::into_os_string)
        .collect()
}

fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Vec<serde_json::Value>> {
    pythonize::depythonize(obj).map_err(|e| convert_error(obj.py(), e))
}

/// JSON as Python objects (the maps of a `Value` are already in key order).
fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, v).map_err(|e| convert_error(py, e))
}

/// `fastscan.similar/1` from scan reports carrying fingerprints (every pair, per component and block).
#[pyfunction]
fn similar<'py>(py: Python<'py>, reports: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    use fastscan_core::{similarity_document as document, Sampled};
    let reports = from_py(reports)?;
    let doc = py.detach(|| -> Result<serde_json::Value, String> {
        let mut models = Vec::new();
        let mut sampled = Vec::new();
        for r in &reports {
            let path = r["path"].as_str().unwrap_or_default().to_string();
            let fp = serde_json::from_value(r["fingerprint"].clone())
                .map_err(|_| format!("{path}: no fingerprint (not a model file with weights)"))?;
            sampled.push(Sampled::new(&fp).map_err(|e| format!("{path}: {e}"))?);
            models.push((path, r["arch"].as_str().unwrap_or("unknown").to_string()));
        }
        let mut pairs = Vec::new();
        for i in 0..sampled.len() {
            for j in i + 1..sampled.len() {
                pairs.push((i, j, sampled[i].stats(&sampled[j])));
            }
        }
        Ok(document("fingerprint", &models, &pairs))
    });
    json_to_py(py, &doc.map_err(PyValueError::new_err)?)
}

/// `fastscan.similar/1` computed from every weight of the files (each file read once).
#[pyfunction]
fn similar_exact<'py>(
    py: Python<'py>,
    paths: Vec<PathBuf>,
    archs: Vec<String>,
) -> PyResult<Bound<'py, PyAny>> {
    use fastscan_core::{exact_similarity as exact, similarity_document as document};
    let doc = py.detach(|| -> Result<serde_json::Value, String> {
        let refs: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
        let pairs = exact(&refs)?;
        let models: Vec<(String, String)> = paths
            .iter()
            .zip(archs)
            .map(|(p, a)| (p.to_string_lossy().into_owned(), a))
            .collect();
        Ok(document("exact", &models, &pairs))
    });
    json_to_py(py, &doc.map_err(PyValueError::new_err)?)
}

/// `fastscan.lineage/1` from scan reports carrying fingerprints; `exhaustive` skips the sketch
/// screen and compares every pair (quadratic: for checking the screen); `screen` is how many
/// nearest models the screen keeps per model.
#[pyfunction]
#[pyo3(signature = (reports, exhaustive = false, screen = fastscan_core::LINEAGE_SCREEN))]
fn lineage<'py>(
    py: Python<'py>,
    reports: &Bound<'py, PyAny>,
    exhaustive: bool,
    screen: usize,
) -> PyResult<Bound<'py, PyAny>> {
    use fastscan_core::{lineage_with, LineageOptions as Options};
    let reports = from_py(reports)?;
    let opts = Options {
        screen: (!exhaustive).then_some(screen),
    };
    let doc = py
        .detach(|| lineage_with(&reports, opts))
        .map_err(PyValueError::new_err)?;
    json_to_py(py, &doc)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    let lineage_kinds: Vec<String> = fastscan_core::LINEAGE_KINDS
        .iter()
        .map(|k| k.to_string())
        .collect();
    m.add("LINEAGE_KINDS", lineage_kinds)?;
    m.add_function(wrap_pyfunction!(plan, m)?)?;
    m.add_function(wrap_pyfunction!(is_url, m)?)?;
    m.add_function(wrap_pyfunction!(download, m)?)?;
    m.add_function(wrap_pyfunction!(walk, m)?)?;
    m.add_function(wrap_pyfunction!(scan_file, m)?)?;
    m.add_function(wrap_pyfunction!(export, m)?)?;
    m.add_function(wrap_pyfunction!(scan_memory, m)?)?;
    m.add_function(wrap_pyfunction!(read_memory, m)?)?;
    m.add_function(wrap_pyfunction!(scan_plan, m)?)?;
    m.add_function(wrap_pyfunction!(read_tensors, m)?)?;
    m.add_function(wrap_pyfunction!(similar, m)?)?;
    m.add_function(wrap_pyfunction!(similar_exact, m)?)?;
    m.add_function(wrap_pyfunction!(lineage, m)?)?;
    m.add("LINEAGE_FAMILY_MIN", fastscan_core::LINEAGE_FAMILY_MIN)?;
    m.add_function(wrap_pyfunction!(safetensors_header, m)?)?;
    m.add_function(wrap_pyfunction!(cast, m)?)?;
    use fastscan_core::Dtype;
    let bits: std::collections::BTreeMap<&str, u64> =
        Dtype::ALL.iter().map(|d| (d.name(), d.bits())).collect();
    m.add("DTYPE_BITS", bits)?;
    let order: Vec<&str> = Dtype::ALL.iter().map(|d| d.name()).collect();
    m.add("WRITER_ORDER", order)?;
    let floats: Vec<&str> = Dtype::ALL
        .iter()
        .filter(|d| d.is_float())
        .map(|d| d.name())
        .collect();
    m.add("FLOAT_DTYPES", floats)?;
    let cast_from: Vec<&str> = fastscan_core::CAST_FROM.iter().map(|d| d.name()).collect();
    m.add("CAST_FROM", cast_from)?;
    m.add("DATA_HASH_KEYS", fastscan_core::DATA_HASH_KEYS.to_vec())?;
    m.add_function(wrap_pyfunction!(pickle_imports, m)?)?;
    m.add_class::<Scanner>()?;
    m.add_class::<Totals>()?;
    m.add_class::<TempOutput>()?;
    m.add_function(wrap_pyfunction!(sweep_temp, m)?)?;
    m.add("TMP_SUFFIX", fastscan_core::TMP_SUFFIX)?;
    m.add_function(wrap_pyfunction!(backup_file, m)?)?;
    m.add_function(wrap_pyfunction!(write_fix, m)?)?;
    m.add_function(wrap_pyfunction!(fix_output_size, m)?)?;
    Ok(())
}
