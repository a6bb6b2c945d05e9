//! Objects in S3 (and compatibles), GCS, Azure and on plain HTTPS, scanned in place through `object_store`.
//!
//! A root URL is listed (paginated by the store) into [`Object`]s: URL, size, ETag. The header of a
//! safetensors object costs at most two ranged GETs (the first [`FIRST_READ`] bytes, then the rest of
//! the header if it is longer); its data pass reads one streamed GET through the data pass's chunk
//! source ([`Stream`]), resumed at the offset reached after a transient error. A PyTorch zip (`.ckpt`)
//! is read the same way: its end record, central directory, local headers and pickles by ranged GETs
//! into a sparse image ([`Sparse`]), never its tensors' bytes, then the same streamed data pass; a
//! legacy (pre-1.6) `.pt` likewise (its pickles and each storage's element count). Other pickle-based
//! containers (tar, raw pickles, zips without a usable directory) are streamed once to a temporary
//! file and scanned as a local file. A fix's output may be a new object ([`execute_fix`]). Every
//! read after the listing carries `If-Match: <ETag>`, so an object overwritten during the scan is a
//! `file.changed` finding, never a mix of two versions. Credentials come from the standard
//! environment and are never written anywhere.

use crate::report::{ErrorKind, FileError, FileReport, Finding, Severity};
use crate::scan::ScanOptions;
use crate::sniff::Format;
use crate::source::ChunkSource;
use crate::table::{open_table_at, OpenError, ReadAt};
use futures::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt,
    RetryConfig,
};
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Bytes of the first ranged read of an object: the length prefix and, almost always, the whole header.
pub const FIRST_READ: u64 = 64 << 10;
/// Attempts of one streamed read after a transient error (each resumes at the offset reached).
const STREAM_RETRIES: u32 = 5;
/// Wait before the first retry of a streamed read; doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// URL schemes read through the object store rather than the filesystem.
const SCHEMES: [&str; 8] = [
    "s3://", "s3a://", "gs://", "az://", "abfs://", "abfss://", "https://", "http://",
];

/// True when `root` names an object store location rather than a local path.
pub fn is_url(root: &str) -> bool {
    SCHEMES.iter().any(|s| root.starts_with(s))
}

/// The one small runtime driving every object-store request (created on first use).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // The TLS stack needs one crypto provider per process: ring (another caller may have set one).
        let _ = rustls::crypto::ring::default_provider().install_default();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fastscan-io")
            .enable_all()
            .build()
            .expect("cannot start the object-store runtime")
    })
}

/// An object found by a listing (or a single-object URL).
#[derive(Clone, Debug)]
pub struct Object {
    /// The URL reports name it by.
    pub url: String,
    pub size: u64,
    /// The ETag (or version) reads are pinned to.
    pub etag: Option<String>,
    /// Seconds since the epoch.
    pub mtime: f64,
    /// The endpoint the object was listed from ("" for the service's own): part of its identity.
    pub endpoint: String,
    store: Arc<dyn ObjectStore>,
    location: ObjPath,
}

/// A store and where in it a root URL points.
struct Root {
    store: Arc<dyn ObjectStore>,
    /// `scheme://bucket` (or `https://host`): object URLs are this, `/`, their location.
    base: String,
    location: ObjPath,
    /// The URL ended in `/` (or named a whole bucket): list it, never take it as one object.
    is_prefix: bool,
    endpoint: String,
}

fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 4,
        retry_timeout: Duration::from_secs(60),
    }
}

fn client() -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(120))
}

/// Whether some standard source of AWS credentials is configured (never which, never its value).
fn aws_credentials_present() -> bool {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    (set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY"))
        || std::env::var("AWS_SKIP_SIGNATURE").is_ok_and(|v| v == "true" || v == "1")
        || set("AWS_WEB_IDENTITY_TOKEN_FILE")
        || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
}

/// Stores are built once per (base, endpoint) and shared by every object under them.
fn store_for(
    url: &url::Url,
    base: &str,
    endpoint: Option<&str>,
) -> Result<Arc<dyn ObjectStore>, String> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    runtime(); // installs the TLS crypto provider the store's HTTP client needs
    let key = format!("{base} {}", endpoint.unwrap_or(""));
    let mut stores = STORES.get_or_init(Default::default).lock().unwrap();
    if let Some(s) = stores.get(&key) {
        return Ok(s.clone());
    }
    let endpoint = endpoint.map(str::to_string).or_else(|| {
        std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|e| !e.is_empty())
    });
    let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match url.scheme() {
        "s3" | "s3a" => {
            if !aws_credentials_present() {
                return Err(format!(
                    "{base}: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                     (or AWS_SKIP_SIGNATURE=true for a public bucket)"
                ));
            }
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_url(base)
                .with_retry(retry())
                .with_client_options(client());
            if let Some(e) = &endpoint {
                // An explicit http:// endpoint (a local S3-compatible server) is allowed plain HTTP.
                b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
            }
            b.build().map(|s| Arc::new(s) as _)
        }
        "gs" => object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_url(base)
            .with_retry(retry())
            .with_client_options(client())
            .build()
            .map(|s| Arc::new(s) as _),
        "az" | "abfs" | "abfss" => object_store::azure::MicrosoftAzureBuilder::from_env()
            .with_url(base)
            .with_retry(retry())
            .with_client_options(client().with_allow_http(base.starts_with("http://")))
            .build()
            .map(|s| Arc::new(s) as _),
        _ => object_store::http::HttpBuilder::new()
            .with_url(base)
            .with_retry(retry())
            .with_client_options(client().with_allow_http(url.scheme() == "http"))
            .build()
            .map(|s| Arc::new(s) as _),
    };
    let store = built.map_err(|e| format!("{base}: {}", describe(&e)))?;
    stores.insert(key, store.clone());
    Ok(store)
}

fn root(url_text: &str, endpoint: Option<&str>) -> Result<Root, String> {
    let url = url::Url::parse(url_text).map_err(|e| format!("{url_text}: not a valid URL: {e}"))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{url_text}: the URL names no bucket or host"))?;
    let base = match url.port() {
        Some(p) => format!("{}://{host}:{p}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    };
    let raw = url.path().trim_start_matches('/');
    let location = ObjPath::from_url_path(raw.trim_end_matches('/'))
        .map_err(|e| format!("{url_text}: not a valid object path: {e}"))?;
    let store = store_for(&url, &base, endpoint)?;
    let endpoint = match url.scheme() {
        "s3" | "s3a" => endpoint
            .map(str::to_string)
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .unwrap_or_default(),
        _ => String::new(),
    };
    Ok(Root {
        store,
        endpoint,
        base,
        is_prefix: raw.is_empty() || raw.ends_with('/'),
        location,
    })
}

/// A store error as a person reads it: the problem, never a credential.
fn describe(e: &object_store::Error) -> String {
    match e {
        object_store::Error::NotFound { .. } => "no such object or bucket".into(),
        object_store::Error::Precondition { .. } => "the object changed during the scan".into(),
        object_store::Error::Unauthenticated { .. } => {
            "the store refused the credentials (check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
                .into()
        }
        object_store::Error::PermissionDenied { .. } => "permission denied by the store".into(),
        other => {
            // The chain of sources says what failed (connection refused, DNS, HTTP status).
            let mut msg = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                let t = s.to_string();
                if !msg.contains(&t) {
                    msg.push_str(": ");
                    msg.push_str(&t);
                }
                src = s.source();
            }
            msg
        }
    }
}

fn object(root: &Root, meta: ObjectMeta) -> Object {
    Object {
        url: format!("{}/{}", root.base, meta.location),
        size: meta.size,
        etag: meta.e_tag.or(meta.version),
        mtime: meta.last_modified.timestamp_micros() as f64 / 1e6,
        endpoint: root.endpoint.clone(),
        store: root.store.clone(),
        location: meta.location,
    }
}

/// Lists the objects under `url` (or the one object it names), calling `found` with each as the
/// listing pages arrive; stops when `found` returns false. An error names the URL and the problem.
pub fn list(
    url: &str,
    endpoint: Option<&str>,
    found: &mut dyn FnMut(Object) -> bool,
) -> Result<(), String> {
    let root = root(url, endpoint)?;
    let http = root.base.starts_with("http");
    runtime().block_on(async {
        if !root.is_prefix {
            match root.store.head(&root.location).await {
                Ok(meta) => {
                    found(object(&root, meta));
                    return Ok(());
                }
                Err(object_store::Error::NotFound { .. }) if !http => {}
                Err(e) => return Err(format!("{url}: {}", describe(&e))),
            }
        }
        if http {
            return Err(format!(
                "{url}: an http(s) URL names one file; listing is not supported"
            ));
        }
        let prefix = (!root.location.as_ref().is_empty()).then_some(&root.location);
        let mut stream = root.store.list(prefix);
        let mut any = false;
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| format!("{url}: {}", describe(&e)))?;
            any = true;
            if !found(object(&root, meta)) {
                break;
            }
        }
        if !any && !root.is_prefix {
            return Err(format!("{url}: no such object or prefix"));
        }
        Ok(())
    })
}

/// The report of a root URL that cannot be listed (or an object that cannot be found): the error.
pub fn listing_failed(url: &str, message: String) -> FileReport {
    FileReport {
        path: url.to_string(),
        error: Some(FileError {
            kind: ErrorKind::Io,
            message,
        }),
        ..Default::default()
    }
}

/// Scans the one object `url` names (a task of a clustered scan: the client listed it). With `etag`,
/// the ETag the client's listing gave, every read is pinned to it: an object overwritten since that
/// listing is `file.changed`, as in a scan on one machine.
pub fn scan_url(
    url: &str,
    endpoint: Option<&str>,
    etag: Option<&str>,
    opts: &ScanOptions,
) -> FileReport {
    let mut found = None;
    let listed = list(url, endpoint, &mut |o| {
        found = (o.url == url).then_some(o);
        false
    });
    match (listed, found) {
        (Ok(()), Some(mut obj)) => {
            if let Some(e) = etag {
                obj.etag = Some(e.to_string());
            }
            scan_object(&obj, opts)
        }
        (Ok(()), None) => listing_failed(url, format!("{url}: no such object")),
        (Err(message), _) => listing_failed(url, message),
    }
}

/// Why a read of an object failed.
#[derive(Debug)]
enum ReadError {
    /// The object's ETag no longer matches the listing's: it was overwritten.
    Changed,
    Other(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Changed => f.write_str("the object changed during the scan"),
            ReadError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ReadError {}

fn read_error(e: object_store::Error) -> ReadError {
    match e {
        object_store::Error::Precondition { .. } => ReadError::Changed,
        e => ReadError::Other(describe(&e)),
    }
}

impl Object {
    fn options(&self, range: std::ops::Range<u64>) -> GetOptions {
        GetOptions {
            range: Some(GetRange::Bounded(range)),
            if_match: self.etag.clone(),
            ..Default::default()
        }
    }

    /// The object's name in the store (its key's last part decides nothing but `.safetensors` naming).
    fn name(&self) -> &str {
        self.location.filename().unwrap_or("")
    }
}

/// Gap between two wanted ranges of an object under which one ranged GET reads both (and the gap).
const MERGE_GAP: u64 = 4 << 10;
/// Longest single ranged GET of a piecewise fetch (longer ranges are split: bounded memory).
const PIECE_MAX: u64 = 8 << 20;
/// Ranged GETs of one piecewise fetch in flight at once.
const PIECES_IN_FLIGHT: usize = 8;

/// An object's bytes fetched piecewise by ranged GETs: an anonymous map of the object's length whose
/// pages cost memory only once written (the fetched ranges), zeros elsewhere; every read pinned to
/// the listed ETag.
struct Sparse<'a> {
    obj: &'a Object,
    map: memmap2::MmapMut,
    /// Ranges fetched, sorted and disjoint.
    done: Vec<(u64, u64)>,
}

impl Sparse<'_> {
    /// The parts of `start..end` not fetched yet.
    fn missing(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = start;
        for &(a, b) in &self.done {
            if b <= at {
                continue;
            }
            if a >= end {
                break;
            }
            if a > at {
                out.push((at, a));
            }
            at = at.max(b);
        }
        if at < end {
            out.push((at, end));
        }
        out
    }
}

impl crate::pickle::zip::Pieces for Sparse<'_> {
    fn bytes(&self) -> &[u8] {
        &self.map
    }

    fn fetch(&mut self, ranges: &[(u64, u64)]) -> std::io::Result<()> {
        let size = self.obj.size;
        let mut want: Vec<(u64, u64)> = ranges
            .iter()
            .map(|&(off, len)| (off.min(size), off.saturating_add(len).min(size)))
            .flat_map(|(a, b)| self.missing(a, b))
            .collect();
        want.sort_unstable();
        let mut gets: Vec<(u64, u64)> = Vec::new();
        for (a, b) in want {
            match gets.last_mut() {
                Some(last) if a <= last.1 + MERGE_GAP && b - last.0 <= PIECE_MAX => {
                    last.1 = last.1.max(b)
                }
                _ => {
                    let mut a = a;
                    while b - a > PIECE_MAX {
                        gets.push((a, a + PIECE_MAX));
                        a += PIECE_MAX;
                    }
                    gets.push((a, b));
                }
            }
        }
        let obj = self.obj;
        let map = &mut self.map;
        runtime().block_on(async {
            let mut bodies = futures::stream::iter(gets.iter().map(|&(a, b)| async move {
                let r = obj
                    .store
                    .get_opts(&obj.location, obj.options(a..b))
                    .await
                    .map_err(read_error)?;
                let bytes = r.bytes().await.map_err(read_error)?;
                if bytes.len() as u64 != b - a {
                    return Err(ReadError::Other(format!(
                        "asked for {} bytes at {a}, the store sent {}",
                        b - a,
                        bytes.len()
                    )));
                }
                Ok((a, bytes))
            }))
            .buffer_unordered(PIECES_IN_FLIGHT);
            while let Some(got) = bodies.next().await {
                let (a, bytes) = got.map_err(std::io::Error::other)?;
                map[a as usize..a as usize + bytes.len()].copy_from_slice(&bytes);
            }
            Ok::<(), std::io::Error>(())
        })?;
        self.done.extend(gets);
        self.done.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.done.len());
        for &(a, b) in &self.done {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.done = merged;
        Ok(())
    }
}

impl ReadAt for Object {
    fn pieces(&self, head: &[u8]) -> Option<Box<dyn crate::pickle::zip::Pieces + '_>> {
        let mut map = memmap2::MmapOptions::new()
            .len(usize::try_from(self.size).ok()?)
            .no_reserve_swap()
            .map_anon()
            .ok()?;
        let head = &head[..head.len().min(map.len())];
        map[..head.len()].copy_from_slice(head);
        Some(Box::new(Sparse {
            obj: self,
            map,
            done: if head.is_empty() {
                Vec::new()
            } else {
                vec![(0, head.len() as u64)]
            },
        }))
    }

    fn read_at(&self, off: u64, len: u64) -> std::io::Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let got = runtime().block_on(async {
            let r = self
                .store
                .get_opts(&self.location, self.options(off..off + len))
                .await
                .map_err(read_error)?;
            r.bytes().await.map_err(read_error)
        });
        match got {
            Ok(b) if b.len() as u64 == len => Ok(b.to_vec()),
            Ok(b) => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("asked for {len} bytes at {off}, the store sent {}", b.len()),
            )),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Ranged reads a header-only scan makes of a safetensors object, the first included.
const HEADER_ONLY_READS: u32 = 2;
/// Bytes past the end of a safetensors header the read fetching the header's rest also fetches: the
/// `safetensors` writer stores 8-byte dtypes first, so a CLIP text encoder's int64 `position_ids`
/// (616 bytes, read by the drift check) usually lie there and cost no read of their own.
const PAST_HEADER: u64 = 16 << 10;

/// An object as a header-only scan reads it: at most [`HEADER_ONLY_READS`] ranged reads and no more
/// bytes than its header plus [`FIRST_READ`]. The first read is the head; a read adjoining the bytes
/// held (a header's rest) is stretched [`PAST_HEADER`] further; any other read takes the last read
/// left, and once none is left a read fails, naming the budget (the check asking then says its values
/// were not read). A zip's directory and pickles are fetched piecewise as for any scan.
struct HeaderReads<'a> {
    obj: &'a Object,
    /// The header's end when the head is that of a safetensors file (else the head's length).
    header_end: u64,
    state: std::sync::Mutex<HeaderState>,
}

struct HeaderState {
    /// The object's bytes from offset 0, as far as read.
    front: Vec<u8>,
    reads: u32,
    bytes: u64,
}

impl<'a> HeaderReads<'a> {
    fn new(obj: &'a Object, head: &[u8]) -> HeaderReads<'a> {
        let held = head.len() as u64;
        // Where the addnet hash starts is where the header ends.
        let header_end = crate::hashes::addnet_start(head, obj.size)
            .unwrap_or(held)
            .max(held);
        HeaderReads {
            obj,
            header_end,
            state: std::sync::Mutex::new(HeaderState {
                front: head.to_vec(),
                reads: 1,
                bytes: held,
            }),
        }
    }

    /// The bytes a header-only scan may read in all: the header, and [`FIRST_READ`] more.
    fn budget(&self) -> u64 {
        self.header_end.saturating_add(FIRST_READ)
    }
}

impl ReadAt for HeaderReads<'_> {
    fn read_at(&self, off: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let held = s.front.len() as u64;
        let end = off.saturating_add(len);
        if end <= held {
            return Ok(s.front[off as usize..end as usize].to_vec());
        }
        let spent = || {
            std::io::Error::other(format!(
                "not read: a header-only scan of an object makes at most {HEADER_ONLY_READS} \
                 ranged reads (its header and at most {} KiB more)",
                FIRST_READ >> 10
            ))
        };
        if s.reads >= HEADER_ONLY_READS {
            return Err(spent());
        }
        if off <= held {
            // The header's rest (or bytes just past the head): take the stretch past it as well.
            let to = end
                .max(self.header_end.saturating_add(PAST_HEADER))
                .min(self.budget().saturating_sub(s.bytes) + held)
                .min(self.obj.size);
            if to < end {
                return Err(spent());
            }
            let more = self.obj.read_at(held, to - held)?;
            s.reads += 1;
            s.bytes += more.len() as u64;
            s.front.extend_from_slice(&more);
            return Ok(s.front[off as usize..end as usize].to_vec());
        }
        if s.bytes + len > self.budget() {
            return Err(spent());
        }
        let got = self.obj.read_at(off, len)?;
        s.reads += 1;
        s.bytes += len;
        Ok(got)
    }

    fn pieces(&self, head: &[u8]) -> Option<Box<dyn crate::pickle::zip::Pieces + '_>> {
        self.obj.pieces(head)
    }
}

/// True when an I/O error from [`Object::read_at`] says the object changed.
fn is_changed(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<ReadError>())
        .is_some_and(|r| matches!(r, ReadError::Changed))
}

/// Bytes a scan of a file named `name` of `size` bytes reads, at least: all of it for a data pass (and,
/// remotely, for containers other than safetensors and PyTorch zips), else the first read of a
/// safetensors object (a header longer than it costs one more read), or the tail holding a zip's end
/// record (its directory, local headers and pickles cost more reads).
pub fn bytes_to_read(name: &str, size: u64, opts: &ScanOptions) -> u64 {
    let st = name.ends_with(".safetensors") || name.ends_with(".sft");
    let zip = [".ckpt", ".pt", ".pth"].iter().any(|e| name.ends_with(e));
    match opts.hash {
        crate::HashMode::None if st => size.min(FIRST_READ),
        crate::HashMode::None if zip => size.min(crate::pickle::zip::TAIL_LEN),
        _ => size,
    }
}

/// Scans one object: never panics on bad input; problems become findings or `error`.
pub fn scan_object(obj: &Object, opts: &ScanOptions) -> FileReport {
    let mut r = FileReport {
        path: obj.url.clone(),
        size: obj.size,
        mtime: obj.mtime,
        format: Format::Unknown,
        ..Default::default()
    };
    match by_ranges(obj, opts, &mut r) {
        Ok(true) => return r,
        Ok(false) => {} // a container that must be read whole
        Err(e) => {
            // What was filled in before the failure is not kept: the report is the failure.
            r = FileReport {
                path: obj.url.clone(),
                size: obj.size,
                mtime: obj.mtime,
                ..Default::default()
            };
            fail(obj, &e, &mut r);
            return r;
        }
    }
    match spool_and_scan(obj, opts) {
        Ok(mut local) => {
            local.path = obj.url.clone();
            local.path_b64 = None;
            local.mtime = obj.mtime;
            r = local;
        }
        Err(e) => fail(obj, &e, &mut r),
    }
    r
}

fn fail(obj: &Object, e: &std::io::Error, r: &mut FileReport) {
    if is_changed(e) {
        r.findings.push(changed(obj));
    } else {
        r.error = Some(FileError {
            kind: ErrorKind::Io,
            message: format!("{}: {e}", obj.url),
        });
    }
}

/// The finding of an object overwritten between its listing and a read of it.
fn changed(obj: &Object) -> Finding {
    Finding::new(
        "file.changed",
        Severity::Error,
        "the object was overwritten while it was being scanned (its ETag changed): scan it again"
            .to_string(),
        json!({"etag": obj.etag, "during_scan": true}),
    )
}

/// The scan of a safetensors or PyTorch zip object: its header (or directory and pickles) by ranged
/// reads, then (when asked) the data pass over one streamed GET ([`Stream`]); `Ok(false)` when the
/// format needs the whole object in a file.
fn by_ranges(obj: &Object, opts: &ScanOptions, r: &mut FileReport) -> std::io::Result<bool> {
    let head = obj.read_at(0, obj.size.min(FIRST_READ))?;
    let header_only;
    let src: &dyn ReadAt = if opts.hash == crate::HashMode::None {
        header_only = HeaderReads::new(obj, &head);
        &header_only
    } else {
        obj
    };
    match open_table_at(src, &head, obj.size, obj.name()) {
        Ok(Some(mut t)) => {
            t.mtime = obj.mtime;
            let mut stream = Stream::new(obj, opts);
            crate::scan::scan_table(t, opts, r, Some(&mut stream))?;
            Ok(true)
        }
        Ok(None) => Ok(false),
        Err(OpenError::Io(e)) => Err(e),
        Err(e) => {
            crate::scan::opening_failed_report(e, r);
            Ok(true)
        }
    }
}

/// An object's bytes for the data pass: one streamed GET read in order (resumed at the offset reached
/// after a transient error, backing off), and ranged GETs for the rare span read out of order. Every
/// request is pinned to the listed ETag. Memory: one network chunk at a time.
struct Stream<'a> {
    obj: &'a Object,
    opts: &'a ScanOptions,
    body: Option<futures::stream::BoxStream<'static, object_store::Result<Vec<u8>>>>,
    /// Bytes received and not yet handed out, from `pending_at`.
    pending: Vec<u8>,
    pending_at: usize,
    /// Offset of the next byte `next_chunk` hands out.
    pos: u64,
}

impl<'a> Stream<'a> {
    fn new(obj: &'a Object, opts: &'a ScanOptions) -> Stream<'a> {
        Stream {
            obj,
            opts,
            body: None,
            pending: Vec::new(),
            pending_at: 0,
            pos: 0,
        }
    }

    /// The next piece of the body, opening (or reopening at `pos`) the GET when needed.
    fn refill(&mut self) -> Result<(), ReadError> {
        let (obj, pos) = (self.obj, self.pos);
        let body = &mut self.body;
        let got = runtime().block_on(async {
            if body.is_none() {
                let r = obj
                    .store
                    .get_opts(&obj.location, obj.options(pos..obj.size))
                    .await
                    .map_err(read_error)?;
                *body = Some(r.into_stream().map(|c| c.map(|b| b.to_vec())).boxed());
            }
            match body.as_mut().unwrap().next().await {
                Some(Ok(b)) => Ok(Some(b)),
                Some(Err(e)) => Err(read_error(e)),
                None => Ok(None),
            }
        });
        match got {
            Ok(Some(b)) => {
                self.pending = b;
                self.pending_at = 0;
                Ok(())
            }
            Ok(None) => {
                self.body = None;
                Err(ReadError::Other(format!(
                    "the store ended the body at byte {} of {}",
                    self.pos, self.obj.size
                )))
            }
            Err(e) => {
                self.body = None;
                Err(e)
            }
        }
    }
}

impl ChunkSource for Stream<'_> {
    fn len(&self) -> u64 {
        self.obj.size
    }

    fn next_chunk(&mut self, off: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        if off != self.pos {
            // A new pass (or a jump): start a new GET there.
            self.body = None;
            self.pending.clear();
            self.pending_at = 0;
            self.pos = off;
        }
        let mut n = 0;
        let mut failures = 0u32;
        while n < buf.len() && self.pos < self.obj.size {
            if self.pending_at == self.pending.len() {
                match self.refill() {
                    Ok(()) => failures = 0,
                    Err(ReadError::Changed) => {
                        return Err(std::io::Error::other(ReadError::Changed))
                    }
                    Err(e) => {
                        failures += 1;
                        if failures > STREAM_RETRIES || self.opts.stopped() {
                            return Err(std::io::Error::other(e));
                        }
                        std::thread::sleep(FIRST_BACKOFF * 2u32.pow(failures - 1));
                    }
                }
                continue;
            }
            let k = (self.pending.len() - self.pending_at).min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&self.pending[self.pending_at..self.pending_at + k]);
            self.pending_at += k;
            n += k;
            self.pos += k as u64;
        }
        Ok(n)
    }

    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let len = (buf.len() as u64).min(self.obj.size.saturating_sub(off));
        let got = ReadAt::read_at(self.obj, off, len)?;
        buf[..got.len()].copy_from_slice(&got);
        Ok(got.len())
    }

    fn shrunk(&mut self) -> Option<u64> {
        None // an object that changes is caught by its ETag, never read short
    }
}

/// Temporary files of streamed objects, one folder each (the object's name keeps its extension).
fn spool_dir() -> std::io::Result<std::path::PathBuf> {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "fastscan-remote-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&d)?;
    Ok(d)
}

/// Streams the object once into a temporary file and scans that (the folder is removed after).
fn spool_and_scan(obj: &Object, opts: &ScanOptions) -> std::io::Result<FileReport> {
    let dir = spool_dir()?;
    let name = match obj.name() {
        "" => "object",
        n => n,
    };
    let path = dir.join(name);
    let result = spool(obj, &path, opts).map(|_| crate::scan::scan_file(&path, opts));
    let _ = std::fs::remove_dir_all(&dir);
    let mut r = result?;
    if let Some(e) = r.error.as_mut() {
        e.message = e.message.replace(&*path.to_string_lossy(), &obj.url);
    }
    Ok(r)
}

/// Writes the object to `path` with one streamed GET, resuming at the offset reached after a transient
/// error (backing off); every request is pinned to the listed ETag.
fn spool(obj: &Object, path: &std::path::Path, opts: &ScanOptions) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?,
    );
    let mut off = 0u64;
    let mut failures = 0u32;
    while off < obj.size {
        let before = off;
        let got: Result<(), ReadError> = runtime().block_on(async {
            let r = obj
                .store
                .get_opts(&obj.location, obj.options(off..obj.size))
                .await
                .map_err(read_error)?;
            let mut body = r.into_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(read_error)?;
                out.write_all(&chunk)
                    .map_err(|e| ReadError::Other(format!("temporary file: {e}")))?;
                off += chunk.len() as u64;
                if opts.stopped() {
                    return Err(ReadError::Other("scan stopped".into()));
                }
            }
            Ok(())
        });
        match got {
            Ok(()) if off < obj.size => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the store sent {off} of {} bytes", obj.size),
                ))
            }
            Ok(()) => {}
            Err(ReadError::Changed) => return Err(std::io::Error::other(ReadError::Changed)),
            Err(e) => {
                if off > before {
                    failures = 0; // progress was made: the budget is per stall, not per object
                }
                failures += 1;
                if failures > STREAM_RETRIES || opts.stopped() {
                    return Err(std::io::Error::other(e));
                }
                std::thread::sleep(FIRST_BACKOFF * 2u32.pow(failures - 1));
            }
        }
    }
    out.flush()
}

/// Bytes of one part of a multipart upload (S3 takes at least 5 MiB for every part but the last).
pub const PART: u64 = 8 << 20;
/// Parts of one upload in flight at once (memory: this many parts).
const PARTS_IN_FLIGHT: usize = 4;

/// A new object a fix writes: where it goes, never an object that exists.
struct Target {
    url: String,
    store: Arc<dyn ObjectStore>,
    location: ObjPath,
    endpoint: String,
}

fn target(url: &str, endpoint: Option<&str>) -> Result<Target, String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(format!(
            "{url}: an http(s) URL cannot be written; write to s3://, gs:// or az://"
        ));
    }
    let r = root(url, endpoint)?;
    if r.is_prefix || r.location.as_ref().is_empty() {
        return Err(format!(
            "{url}: names a prefix; the output must be an object's key"
        ));
    }
    Ok(Target {
        url: format!("{}/{}", r.base, r.location),
        store: r.store,
        location: r.location,
        endpoint: r.endpoint,
    })
}

/// Why an upload left nothing.
#[derive(Debug)]
pub enum PutError {
    /// The object exists (or appeared while uploading): it is never replaced.
    Exists(String),
    /// The URL cannot be written, or the store refused a request.
    Failed(String),
    /// The object read back is not what was sent (it was deleted).
    Verify(String),
    /// Stopped by the caller (nothing was left).
    Stopped,
}

/// What an upload wrote.
#[derive(Debug)]
pub struct Uploaded {
    pub url: String,
    pub size: u64,
    pub etag: Option<String>,
    /// BLAKE3 of the bytes sent, equal to that of the bytes read back.
    pub blake3: String,
}

impl Target {
    /// True when the object exists.
    async fn exists(&self) -> Result<bool, PutError> {
        match self.store.head(&self.location).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(PutError::Failed(format!("{}: {}", self.url, describe(&e)))),
        }
    }

    fn exists_error(&self) -> PutError {
        PutError::Exists(format!(
            "{}: already exists; a fix never replaces an object: write to a new key",
            self.url
        ))
    }
}

/// Uploads the local file `local` as the new object `url`: one conditional PUT (`If-None-Match: *`)
/// when it fits in one [`PART`], else a multipart upload of [`PART`]-sized parts read from the file
/// ([`PARTS_IN_FLIGHT`] at a time, hashed as they are read), aborted on any failure; the object
/// appears only when complete. An existing object is refused before anything is sent and again
/// before the multipart upload completes (S3's multipart completion is not conditional through
/// `object_store`: the window between that check and the completion is one request). Then the object
/// is verified: its header re-scanned through the object store, every byte read back (pinned to the
/// ETag the upload returned) and hashed; on a mismatch the object is deleted. `progress(done, total)`
/// returning false stops the upload (nothing is left).
pub fn upload(
    local: &std::path::Path,
    url: &str,
    endpoint: Option<&str>,
    progress: &mut dyn FnMut(crate::fix::Stage, u64, u64) -> bool,
) -> Result<Uploaded, PutError> {
    use crate::fix::Stage;
    use std::io::Read;
    let t = target(url, endpoint).map_err(PutError::Failed)?;
    let local_err = |e: std::io::Error| PutError::Failed(format!("{}: {e}", local.display()));
    let mut file = std::fs::File::open(local).map_err(local_err)?;
    let size = file.metadata().map_err(local_err)?.len();
    let mut sent = blake3::Hasher::new();
    let put = runtime().block_on(async {
        if t.exists().await? {
            return Err(t.exists_error());
        }
        let failed =
            |e: object_store::Error| PutError::Failed(format!("{}: {}", t.url, describe(&e)));
        if size <= PART {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data).map_err(local_err)?;
            sent.update(&data);
            let opts = object_store::PutOptions {
                mode: object_store::PutMode::Create,
                ..Default::default()
            };
            let r = match t.store.put_opts(&t.location, data.into(), opts).await {
                Err(object_store::Error::AlreadyExists { .. }) => Err(t.exists_error()),
                r => r.map_err(failed),
            }?;
            progress(Stage::Upload, size, size);
            return Ok(r);
        }
        let mut up = t.store.put_multipart(&t.location).await.map_err(failed)?;
        let parts = async {
            let mut inflight: futures::stream::FuturesUnordered<object_store::UploadPart> =
                Default::default();
            let mut done = 0u64;
            while done < size {
                let n = PART.min(size - done) as usize;
                let mut buf = vec![0u8; n];
                file.read_exact(&mut buf).map_err(local_err)?;
                sent.update(&buf);
                while inflight.len() >= PARTS_IN_FLIGHT {
                    if let Some(r) = inflight.next().await {
                        r.map_err(failed)?;
                    }
                }
                inflight.push(up.put_part(buf.into()));
                done += n as u64;
                if !progress(Stage::Upload, done, size) {
                    return Err(PutError::Stopped);
                }
            }
            while let Some(r) = inflight.next().await {
                r.map_err(failed)?;
            }
            if t.exists().await? {
                return Err(t.exists_error());
            }
            Ok(())
        }
        .await;
        let completed = match parts {
            Ok(()) => up.complete().await.map_err(failed),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            // Nothing partial is left: the parts sent are dropped with the upload.
            let _ = up.abort().await;
        }
        completed
    })?;
    let uploaded = Uploaded {
        url: t.url.clone(),
        size,
        etag: put.e_tag.clone(),
        blake3: sent.finalize().to_hex().to_string(),
    };
    match read_back(&t, &uploaded, local, progress) {
        Ok(()) => Ok(uploaded),
        Err(ReadBack::Changed) => Err(PutError::Verify(format!(
            "{}: another writer replaced the object before it was verified (left as it is)",
            t.url
        ))),
        Err(ReadBack::Stopped) => {
            delete(&t);
            Err(PutError::Stopped)
        }
        Err(ReadBack::Bad(m)) => {
            delete(&t);
            Err(PutError::Verify(format!(
                "{}: {m}; the object was deleted",
                t.url
            )))
        }
    }
}

fn delete(t: &Target) {
    let _ = runtime().block_on(t.store.delete(&t.location));
}

/// Why the read-back of an uploaded object failed.
enum ReadBack {
    /// The object's ETag is no longer the upload's: someone else wrote it (it is not deleted).
    Changed,
    Stopped,
    Bad(String),
}

/// Re-scans the uploaded object's header through the object store (it must read as the local file
/// does), then reads every byte back pinned to its ETag and compares the BLAKE3 with the one sent.
fn read_back(
    t: &Target,
    up: &Uploaded,
    local: &std::path::Path,
    progress: &mut dyn FnMut(crate::fix::Stage, u64, u64) -> bool,
) -> Result<(), ReadBack> {
    let obj = Object {
        url: up.url.clone(),
        size: up.size,
        etag: up.etag.clone(),
        mtime: 0.0,
        endpoint: t.endpoint.clone(),
        store: t.store.clone(),
        location: t.location.clone(),
    };
    let header_only = ScanOptions {
        hash: crate::HashMode::None,
        ..Default::default()
    };
    let remote = scan_object(&obj, &header_only);
    if remote.findings.iter().any(|f| f.check == "file.changed") {
        return Err(ReadBack::Changed);
    }
    if let Some(e) = &remote.error {
        return Err(ReadBack::Bad(format!("re-scan: {}", e.message)));
    }
    let want = crate::scan::scan_file(local, &header_only);
    let table = |r: &FileReport| {
        (
            r.format,
            r.kind,
            r.arch,
            r.tensors,
            r.findings.iter().map(|f| f.check).collect::<Vec<_>>(),
        )
    };
    if table(&remote) != table(&want) {
        return Err(ReadBack::Bad(
            "re-scan: the object's header does not read as the file sent".into(),
        ));
    }
    let mut stream = Stream::new(&obj, &header_only);
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < up.size {
        let n = stream.next_chunk(off, &mut buf).map_err(|e| {
            if is_changed(&e) {
                ReadBack::Changed
            } else {
                ReadBack::Bad(format!("read back: {e}"))
            }
        })?;
        if n == 0 {
            return Err(ReadBack::Bad(format!(
                "read back: the object ends at byte {off} of {}",
                up.size
            )));
        }
        h.update(&buf[..n]);
        off += n as u64;
        if !progress(crate::fix::Stage::Verify, off, up.size) {
            return Err(ReadBack::Stopped);
        }
    }
    if h.finalize().to_hex().as_str() != up.blake3 {
        return Err(ReadBack::Bad(
            "read back: the object does not hold the bytes sent".into(),
        ));
    }
    Ok(())
}

/// A fix whose output is the new object `url`: the plan is written and verified by
/// [`crate::fix::execute`] into a temporary folder (needing free space for the output there), then
/// uploaded by this module's `upload` (refused when an object is there already) and verified again;
/// the temporary file is removed whatever happens.
pub fn execute_fix(
    plan: &crate::fix::Plan,
    url: &str,
    endpoint: Option<&str>,
    observer: &mut dyn crate::fix::Observer,
) -> Result<crate::fix::Written, crate::fix::FixError> {
    use crate::fix::FixError;
    let t = target(url, endpoint).map_err(FixError::Target)?;
    if runtime().block_on(t.exists()).map_err(put_error)? {
        return Err(put_error(t.exists_error()));
    }
    let dir = spool_dir().map_err(|e| FixError::Io("temporary folder".into(), e))?;
    let name = match t.location.filename() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => "output.safetensors".into(),
    };
    let local = dir.join(name);
    let result = crate::fix::execute(plan, &local, false, None, observer).and_then(|w| {
        let mut stopped = false;
        let up = upload(&local, url, endpoint, &mut |stage, done, total| {
            stopped = observer.progress(stage, done, total).is_err();
            !stopped
        });
        up.map(|_| w).map_err(put_error)
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn put_error(e: PutError) -> crate::fix::FixError {
    use crate::fix::FixError;
    match e {
        PutError::Exists(m) => FixError::Target(m),
        PutError::Failed(m) => FixError::Target(format!("{m}; no object was left")),
        PutError::Verify(m) => FixError::Verify(m),
        PutError::Stopped => FixError::Stopped,
    }
}

/// Copies the one object `url` names into the folder `dir` under its own name (one streamed GET pinned
/// to the ETag listed, resumed after transient errors) and returns the file's path: the input of a fix
/// read from object storage. An error names the URL and the problem; no partial file is left.
pub fn download(
    url: &str,
    endpoint: Option<&str>,
    dir: &std::path::Path,
) -> Result<std::path::PathBuf, String> {
    let mut found = None;
    list(url, endpoint, &mut |o| {
        found = (o.url == url).then_some(o);
        false
    })?;
    let obj = found.ok_or_else(|| format!("{url}: no such object"))?;
    let name = match obj.name() {
        "" => "object",
        n => n,
    };
    let path = dir.join(name);
    spool(&obj, &path, &ScanOptions::default()).map_err(|e| {
        let _ = std::fs::remove_file(&path);
        format!("{url}: {e}")
    })?;
    Ok(path)
}
