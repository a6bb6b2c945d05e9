"""Typed stubs for `fastscan._core`, the Rust extension (rust/python/src/lib.rs)."""

from collections.abc import Callable, Iterator, Mapping, Sequence
from os import PathLike
from typing import Any, Literal, TypedDict

from typing_extensions import NotRequired

_Path = str | PathLike[str]
_HashMode = Literal["none", "components", "full"]

# The report's file object, as the core writes it: these match docs/report.schema.json (generated from
# rust/core/src/report.rs), which tests/test_schema.py checks field by field, optionality included.
# `X | None`: always present, may be null; `NotRequired[...]`: absent unless it applies.

Severity = Literal["info", "warning", "error", "critical"]
ErrorKind = Literal["io", "loop", "format", "worker"]
Format = Literal[
    "safetensors",
    "torch-zip",
    "torch-legacy",
    "torch-tar",
    "pickle",
    "npy",
    "npz",
    "diffusers",
    "state-dict",
    "json",
    "unknown",
]
Kind = Literal[
    "checkpoint",
    "unet",
    "vae",
    "text-encoder",
    "lora",
    "embedding",
    "controlnet",
    "t2i-adapter",
    "upscaler",
    "taesd",
    "vae-approx",
    "empty",
    "sidecar",
    "index",
    "unknown",
]
# the archs of rust/core/src/rules.json, then unknown (the core's Arch enum is generated from them)
Arch = Literal["sd3", "flux", "sdxl-refiner", "sdxl", "sd1-inpaint", "sd1", "sd2", "unknown"]

class FindingDict(TypedDict):
    check: str
    severity: Severity
    message: str
    details: Any

class ComponentReportDict(TypedDict):
    tensors: int
    bytes: int
    dtypes: dict[str, int]
    blake3: str | None

class HashesDict(TypedDict):
    blake3: str | None
    sha256: str | None
    autov1: str | None
    autov2: str | None
    addnet: str | None

class FileErrorDict(TypedDict):
    kind: ErrorKind
    message: str

class IdentificationDict(TypedDict):
    score: float
    matched: int
    of: int
    missing: list[str]
    missing_count: int
    extra: int
    confident: bool
    threshold: float

class MergeDict(TypedDict):
    method: str | None
    calcmode: str | None
    multipliers: dict[str, Any]

class ParentDict(TypedDict):
    role: str
    name: str | None
    sha256: str | None
    legacy_hash: str | None
    merged: bool

class TrainingDict(TypedDict):
    network_module: str | None
    network_dim: str | None
    network_alpha: str | None
    epochs: str | None
    steps: str | None
    resolution: str | None
    output_name: str | None

class ProvenanceDict(TypedDict):
    tools: list[str]
    merge: MergeDict | None
    parents: list[ParentDict]
    base_model: str | None
    training: TrainingDict | None
    keys: list[str]

class PartDict(TypedDict):
    path: str
    component: str
    role: str
    size: int
    format: Format
    kind: Kind
    arch: Arch
    tensors: int

class EntryDict(TypedDict):
    name: str
    n: int
    block: str

class ComponentPrintDict(TypedDict):
    tensors: list[EntryDict]
    samples: str

class FingerprintDict(TypedDict):
    version: str
    components: dict[str, ComponentPrintDict]

class FileReportDict(TypedDict):
    path: str
    path_b64: NotRequired[str]
    size: int
    mtime: float
    format: Format
    kind: Kind
    arch: Arch
    tensors: int
    dtypes: dict[str, int]
    components: dict[str, ComponentReportDict]
    hashes: HashesDict
    metadata: dict[str, Any]
    provenance: ProvenanceDict | None
    findings: list[FindingDict]
    wasted_bytes: dict[str, int]
    error: FileErrorDict | None
    parts: NotRequired[list[PartDict]]
    identification: IdentificationDict | None
    fingerprint: NotRequired[FingerprintDict]

__version__: str
LINEAGE_KINDS: list[str]  # the kinds of file lineage covers (`kind` values), in the core's order
DTYPE_BITS: dict[str, int]
"""Bits of one element of each safetensors dtype (the core's dtype.rs)."""
WRITER_ORDER: list[str]
"""Dtypes in the reference writer's order, smallest alignment first (it lays data out in reverse)."""
FLOAT_DTYPES: list[str]
"""The floating-point dtypes."""
CAST_FROM: list[str]
"""Dtypes `cast` and fixes read (fp8 only up)."""
DATA_HASH_KEYS: list[str]
"""sd-scripts' metadata hashes of the data (sshs_*), which `write_fix` recomputes from the bytes it writes."""
TMP_SUFFIX: str
"""The suffix of the named temporary files (the fallback where O_TMPFILE is not supported)."""

def walk(
    roots: Sequence[_Path], follow_links: bool = False, jobs: int = 0
) -> tuple[list[tuple[str, int, float]], list[tuple[str, Literal["io", "loop", "format"], str]]]:
    """Walks roots; returns ([(path, size, mtime)] sorted by path, [(path, kind, message)] unreadable).

    Paths are as `os.fsdecode` gives them: bytes that are not UTF-8 come as surrogate escapes."""

def scan_file(
    path: _Path,
    hash: _HashMode = "full",
    sha256: bool = False,
    fingerprint: bool = False,
    endpoint_url: str | None = None,
    etag: str | None = None,
) -> FileReportDict:
    """Scans one file (or diffusers folder, or object URL) and returns its report as a dict (the file
    object of the JSON report), the same report a multi-file scan makes of it. An object is read through
    `endpoint_url`, pinned to `etag` when given (its listing's)."""

def is_url(root: _Path) -> bool:
    """True when `root` is an object-store URL (s3://, gs://, az://, https://...) rather than a local path
    (any path: one whose bytes are not UTF-8 is never a URL)."""

def download(url: str, dir: _Path, endpoint_url: str | None = None) -> str:
    """Copies the object `url` into the folder `dir` under its own name; returns the file's path.
    OSError naming the URL and the problem."""

def plan(
    roots: Sequence[_Path],
    hash: _HashMode = "full",
    follow_links: bool = False,
    endpoint_url: str | None = None,
) -> tuple[list[tuple[str, int, int]], list[tuple[str, str]]]:
    """What a scan of `roots` would read, reading nothing: ([(path or URL, size, bytes read at least)],
    [(root, message)] of roots that cannot be walked or listed)."""

def scan_plan(
    roots: Sequence[_Path], follow_links: bool = False, jobs: int = 0, endpoint_url: str | None = None
) -> tuple[list[tuple[str, int, str | None]], list[FileReportDict], int]:
    """What a scan of `roots` covers, walked and listed as `Scanner` does: ([(path or URL, size, ETag or
    None)] of each file, diffusers folder or object to scan, [report] of each unreadable path or
    unlistable root, as the scan gives it, the number of symlinks inside directories not followed)."""

def read_tensors(path: _Path) -> dict[str, Any]:
    """The core's `open_table`: format, kind, arch, size, header_len, unaccounted_bytes, metadata, the
    header-level findings, convert_metadata (the metadata `convert` writes: pickle extras, source name,
    empty source hashes), and tensors with role, component, canonical name, span, position_ids and prune
    group. ValueError (not a readable model) or OSError naming the file."""

def safetensors_header(
    tensors: Sequence[tuple[str, str, Sequence[int]]], metadata: Sequence[tuple[str, str]] | None = None
) -> tuple[bytes, list[tuple[int, int]]]:
    """The padded header the reference writer would write, and each tensor's data (begin, end)."""

def cast(raw: Any, src: str, dst: str) -> bytes:
    """Float tensor bytes of dtype `src` as `dst` (round to nearest even); ValueError for other pairs."""

def similar(reports: Sequence[FileReportDict]) -> dict[str, Any]:
    """`fastscan.similar/1` from reports with fingerprints; ValueError naming a file without one."""

def similar_exact(paths: Sequence[_Path], archs: Sequence[str]) -> dict[str, Any]:
    """`fastscan.similar/1` from every weight of the files; ValueError naming an unreadable file."""

LINEAGE_FAMILY_MIN: float
"""Similarity at or above which two models are one family (docs/lineage.md)."""

def lineage(reports: Sequence[FileReportDict], exhaustive: bool = False, screen: int = 48) -> dict[str, Any]:
    """`fastscan.lineage/1` from scan reports with fingerprints (docs/lineage.md)."""

def export(
    format: str, reports: Sequence[FileReportDict], force: bool = False, webui_cache: _Path | None = None
) -> list[dict[str, Any]]:
    """Writes the reports' hashes as another tool keeps them (`a1111` into `webui_cache`, `civitai-info`,
    `cm-info` sidecars), atomically; [{model, path, status, message}] (docs/hash-interop.md)."""

_RawTensor = tuple[str, str, Sequence[int], int, int]

def scan_memory(tensors: Sequence[_RawTensor], data: bool = True) -> FileReportDict:
    """The report of tensors in memory: (name, dtype, shape, address, nbytes), each address valid and
    contiguous for the whole call (fastscan.torch passes live CPU tensors). ValueError on a bad size."""

def read_memory(tensors: Sequence[_RawTensor]) -> dict[str, Any]:
    """`read_tensors` of tensors in memory (what fix planning reads); the same contract as scan_memory."""

def pickle_imports(data: bytes) -> list[dict[str, Any]]:
    """Every import of every pickle in a raw stream (never loaded): module, name, opcode, pos, used..."""

class Totals:
    """The core's sum of file objects: a report's `summary` for files that came from elsewhere."""

    summary: dict[str, Any]
    """The totals so far: a report's `summary` object (docs/report-schema.md), skipped_links 0."""

    def add(self, report: FileReportDict | Mapping[str, Any]) -> None:
        """Counts one more file object (ValueError when it is not one)."""

class Scanner(Iterator[Any]):
    """Walks roots and scans what it finds in parallel in the background; iterating yields each report
    dict as it finishes (with `text`, a `(path, size, json_text, dedupe_record | None)` tuple; the record:
    path, size, mtime, error, findings' severities, hashes.blake3 and components' blake3 and bytes). At
    most a few dozen reports wait in its bounded queue."""

    cache_warning: str | None
    """Set when the cache database was unreadable and was rebuilt."""

    progress: tuple[int, int, bool, int]
    """(files_found, bytes_found, walk_done, files_scanned); the totals are final once walk_done."""

    skipped_links: int
    """Symbolic links below a root the walk did not follow (0 with follow_links)."""

    running: bool
    """True while a walking or scanning thread is still at work."""

    summary: dict[str, Any]
    """The totals (a report's `summary` object) of the reports handed out so far, with the links
    skipped so far."""

    def __init__(
        self,
        roots: Sequence[_Path],
        hash: _HashMode = "full",
        sha256: bool = False,
        jobs: int = 0,
        cache: _Path | None = None,
        follow_links: bool = False,
        fingerprint: bool = False,
        endpoint_url: str | None = None,
        text: bool = False,
    ) -> None:
        """Starts the scan; `cache` is a database path serving unchanged files (OSError if unusable);
        `fingerprint` adds each file's lineage fingerprint (docs/fingerprint.md) to its report;
        `text`: each file object as compact JSON text written by the core (see the class)."""
    def __iter__(self) -> Scanner: ...
    def __next__(self) -> Any: ...
    def close(self) -> None:
        """Stops every thread of the scan and waits for them; iteration then ends."""

class TempOutput:
    """A temporary output file in the folder of `out`: unnamed (O_TMPFILE) where the filesystem allows,
    else a hidden `.NAME.PID.N.fastscan-tmp` file. Nothing is left visible if the process is killed."""

    fd: int
    """The open descriptor to write to (owned by this object)."""
    path: str
    """A path that reads the file back until it is committed."""

    def __init__(self, out: _Path, mode: int | None = None) -> None: ...
    def commit(self, out: _Path, overwrite: bool = False) -> None:
        """Names the file `out` and syncs the folder; FileExistsError if `out` exists (unless `overwrite`)."""
    def discard(self) -> None:
        """Closes and removes the file."""

_PlanTensor = tuple[
    str, str, Sequence[int], str, tuple[int, str, str, Sequence[int], int, int, Sequence[int] | None] | None
]

def fix_output_size(
    tensors: Sequence[_PlanTensor], metadata: Sequence[tuple[str, str]], *, source_hashes: bool = False
) -> int:
    """Bytes of the file `write_fix` writes for this plan; ValueError when it cannot be written."""

def write_fix(
    tensors: Sequence[_PlanTensor],
    metadata: Sequence[tuple[str, str]],
    sources: Sequence[_Path],
    out: _Path,
    *,
    gone: Sequence[str] = (),
    kind: str | None = None,
    overwrite: bool = False,
    mode: int | None = None,
    progress: Callable[[str, int, int], object] | None = None,
    endpoint_url: str | None = None,
    source_hashes: bool = False,
) -> dict[str, Any]:
    """Writes a planned safetensors file through a fsynced, verified temporary file; {size, metadata,
    source_findings}: the `values.*` findings of the first source over the tensors the fix read from it.

    With `source_hashes`, the metadata keys `fastscan.source_blake3` and `fastscan.source_sha256` (both
    must be present; `read_tensors`' `convert_metadata` has them) get the first source's whole-file
    hashes, taken while it is read for the write (one read of the source).

    Each tensor: (name, dtype, shape, op copy|cast|arange, (source index, name, dtype, shape, start,
    len, strides) or None for arange). FileExistsError when `out` exists and not `overwrite`; OSError
    on a read/write failure; ValueError for a bad plan, a changed input or a failed verification; an
    exception from `progress(stage, done, total)` (or Ctrl-C) stops the fix and is raised again.
    """

def backup_file(src: _Path, folder: _Path, *, overwrite: bool = False) -> str:
    """Copies `src` into `folder` (same name) through a fsynced temporary file verified by BLAKE3, keeping
    its mode and times; returns the copy's path. ValueError naming the problem when none was made."""

def sweep_temp(folder: _Path) -> list[str]:
    """Removes the named temporary files in `folder` left by fastscan processes that are gone."""
