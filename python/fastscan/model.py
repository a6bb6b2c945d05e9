"""Typed results of a scan (report schema `fastscan.report/1`, documented in docs/report-schema.md).

Everything is built from the plain dicts `fastscan._core` returns; fields the core adds later and this
module does not know yet are kept in `extra` and written back out, so nothing is lost on the way.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from fastscan._core import Arch as ArchName
    from fastscan._core import FingerprintDict, PartDict, ProvenanceDict
    from fastscan._core import Format as FormatName
    from fastscan._core import Kind as KindName

SCHEMA = "fastscan.report/1"
SEVERITIES = ("info", "warning", "error", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}


class Format(str, Enum):
    """A file's format as the core names it (the report's `format`, as docs/report.schema.json lists it).

    Members compare equal to the report's strings; a set of them does not hold those strings (an Enum
    hashes by member name): test membership against a tuple.
    """

    SAFETENSORS = "safetensors"
    TORCH_ZIP = "torch-zip"
    TORCH_LEGACY = "torch-legacy"
    TORCH_TAR = "torch-tar"
    PICKLE = "pickle"
    NPY = "npy"
    NPZ = "npz"
    DIFFUSERS = "diffusers"
    STATE_DICT = "state-dict"
    JSON = "json"
    UNKNOWN = "unknown"


class Kind(str, Enum):
    """What a file holds as the core names it (the report's `kind`)."""

    CHECKPOINT = "checkpoint"
    UNET = "unet"
    VAE = "vae"
    TEXT_ENCODER = "text-encoder"
    LORA = "lora"
    EMBEDDING = "embedding"
    CONTROLNET = "controlnet"
    T2I_ADAPTER = "t2i-adapter"
    UPSCALER = "upscaler"
    TAESD = "taesd"
    VAE_APPROX = "vae-approx"
    EMPTY = "empty"
    SIDECAR = "sidecar"
    INDEX = "index"
    UNKNOWN = "unknown"


class Arch(str, Enum):
    """A model architecture as the core names it (the report's `arch`: the archs of rules.json)."""

    SD3 = "sd3"
    FLUX = "flux"
    SDXL_REFINER = "sdxl-refiner"
    SDXL = "sdxl"
    SD1_INPAINT = "sd1-inpaint"
    SD1 = "sd1"
    SD2 = "sd2"
    UNKNOWN = "unknown"


def severity_at_least(severity: str, threshold: str) -> bool:
    """True when `severity` is at or above `threshold` (`never` is above everything)."""
    if threshold == "never":
        return False
    return SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK[threshold]


def display_path(path: str) -> str:
    """`path` for display and JSON: bytes that are not UTF-8 (surrogate escapes) shown as U+FFFD."""
    return os.fsencode(path).decode("utf-8", "replace")


def _path_from(d: Mapping[str, Any]) -> str:
    """The exact path of a file object: from `path_b64` when the core sent the bytes, else `path`."""
    raw = d.get("path_b64")
    return os.fsdecode(base64.b64decode(raw)) if raw else d["path"]


def _extra(d: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    """The entries of `d` whose keys are not in `known` (fields a newer core added)."""
    if known.issuperset(d):
        return {}
    return {k: v for k, v in d.items() if k not in known}


@dataclass(slots=True)
class Finding:
    """One problem found in a file."""

    check: str
    severity: str
    message: str
    details: Any = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        """Builds a finding from its report dict."""
        return cls(d["check"], d["severity"], d.get("message", ""), d.get("details"))

    def to_dict(self) -> dict[str, Any]:
        """The finding as it appears in the JSON report."""
        return {
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "details": self.details,
        }


@dataclass(slots=True)
class Component:
    """Totals of one component (unet, vae, clip_l, ...) of a file."""

    tensors: int
    bytes: int
    dtypes: dict[str, int]
    blake3: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Component:
        """Builds a component from its report dict."""
        return cls(
            int(d.get("tensors", 0)), int(d.get("bytes", 0)), dict(d.get("dtypes") or {}), d.get("blake3")
        )

    def to_dict(self) -> dict[str, Any]:
        """The component as it appears in the JSON report."""
        return {"tensors": self.tensors, "bytes": self.bytes, "dtypes": self.dtypes, "blake3": self.blake3}


_HASH_NAMES = ("blake3", "sha256", "autov1", "autov2", "addnet")
_HASH_SET = frozenset(_HASH_NAMES)


@dataclass(slots=True)
class Hashes:
    """Whole-file hashes (lowercase hex); the ones not computed are None."""

    blake3: str | None = None
    sha256: str | None = None
    autov1: str | None = None
    autov2: str | None = None
    addnet: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Hashes:
        """Builds hashes from their report dict."""
        d = d or {}
        return cls(**{k: d.get(k) for k in _HASH_NAMES}, extra=_extra(d, _HASH_SET))

    def to_dict(self) -> dict[str, Any]:
        """The hashes as they appear in the JSON report."""
        return {**{k: getattr(self, k) for k in _HASH_NAMES}, **self.extra}


@dataclass(slots=True)
class FileError:
    """Why a file could not be read at all (`kind`: io, loop, format, ...)."""

    kind: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """The error as it appears in the JSON report."""
        return {"kind": self.kind, "message": self.message}


@dataclass(slots=True)
class Identification:
    """How well a file matched the rule that gave its kind/arch (decided by the core)."""

    score: float
    matched: int
    of: int
    missing: list[str]
    missing_count: int
    extra: int
    confident: bool
    threshold: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Identification:
        """Builds an identification from its report dict."""
        return cls(
            float(d["score"]),
            int(d["matched"]),
            int(d["of"]),
            list(d["missing"]),
            int(d["missing_count"]),
            int(d["extra"]),
            bool(d["confident"]),
            float(d["threshold"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """The identification as it appears in the JSON report."""
        return {
            "score": self.score,
            "matched": self.matched,
            "of": self.of,
            "missing": self.missing,
            "missing_count": self.missing_count,
            "extra": self.extra,
            "confident": self.confident,
            "threshold": self.threshold,
        }


_FILE_FIELDS = (
    "path",
    "path_b64",
    "size",
    "mtime",
    "format",
    "kind",
    "arch",
    "tensors",
    "dtypes",
    "components",
    "hashes",
    "metadata",
    "provenance",
    "findings",
    "wasted_bytes",
    "identification",
    "error",
    "parts",
    "fingerprint",
)
_FILE_SET = frozenset(_FILE_FIELDS)


@dataclass(slots=True)
class FileReport:
    """Everything fastscan knows about one file."""

    path: str
    size: int = 0
    mtime: float = 0.0
    format: FormatName = "unknown"
    kind: KindName = "unknown"
    arch: ArchName = "unknown"
    tensors: int = 0
    dtypes: dict[str, int] = field(default_factory=dict)
    components: dict[str, Component] = field(default_factory=dict)
    hashes: Hashes = field(default_factory=Hashes)
    metadata: dict[str, Any] = field(default_factory=dict)
    # What the metadata says about how the model was made (merge recipe, parents, base model, training).
    provenance: ProvenanceDict | None = None
    findings: list[Finding] = field(default_factory=list)
    wasted_bytes: dict[str, int] = field(default_factory=dict)
    # How sure the kind/arch is (None for kinds identified by their own markers: LoRA, embedding, ...).
    identification: Identification | None = None
    error: FileError | None = None
    # The files of a diffusers folder (empty for a single file).
    parts: list[PartDict] = field(default_factory=list)
    # Lineage fingerprint (docs/fingerprint.md), only when the scan was asked for it.
    fingerprint: FingerprintDict | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FileReport:
        """Builds a file report from the dict `_core.scan_file` returns."""
        err = d.get("error")
        ident = d.get("identification")
        return cls(
            path=_path_from(d),
            size=int(d.get("size") or 0),
            mtime=float(d.get("mtime") or 0.0),
            format=d.get("format", "unknown"),
            kind=d.get("kind", "unknown"),
            arch=d.get("arch", "unknown"),
            tensors=int(d.get("tensors") or 0),
            dtypes=dict(d.get("dtypes") or {}),
            components={k: Component.from_dict(v) for k, v in (d.get("components") or {}).items()},
            hashes=Hashes.from_dict(d.get("hashes")),
            metadata=dict(d.get("metadata") or {}),
            provenance=d.get("provenance"),
            findings=[Finding.from_dict(f) for f in d.get("findings") or []],
            wasted_bytes=dict(d.get("wasted_bytes") or {}),
            identification=Identification.from_dict(ident) if ident else None,
            error=FileError(err["kind"], err["message"]) if err else None,
            parts=list(d.get("parts") or []),
            fingerprint=d.get("fingerprint"),
            extra=_extra(d, _FILE_SET),
        )

    @classmethod
    def failed(cls, path: str, kind: str, message: str, size: int = 0, mtime: float = 0.0) -> FileReport:
        """A report for a file that could not be read at all."""
        return cls(path=path, size=size, mtime=mtime, error=FileError(kind, message))

    @property
    def worst(self) -> str | None:
        """The highest severity among findings (`error` when the file could not be read), or None."""
        sevs = [f.severity for f in self.findings]
        if self.error is not None:
            sevs.append("error")
        return max(sevs, key=lambda s: SEVERITY_RANK.get(s, 0)) if sevs else None

    def checks(self) -> list[str]:
        """Names of the checks that fired on this file."""
        return [f.check for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        """The file object of the JSON report (`path_b64` only when the path is not UTF-8)."""
        shown = display_path(self.path)
        exact = {} if shown == self.path else {"path_b64": base64.b64encode(os.fsencode(self.path)).decode()}
        return {
            "path": shown,
            **exact,
            "size": self.size,
            "mtime": self.mtime,
            "format": self.format,
            "kind": self.kind,
            "arch": self.arch,
            "tensors": self.tensors,
            "dtypes": self.dtypes,
            "components": {k: c.to_dict() for k, c in self.components.items()},
            "hashes": self.hashes.to_dict(),
            "metadata": self.metadata,
            "provenance": self.provenance,
            "findings": [f.to_dict() for f in self.findings],
            "wasted_bytes": self.wasted_bytes,
            "error": self.error.to_dict() if self.error else None,
            **({"parts": self.parts} if self.parts else {}),
            # after `parts`, where these came out before they were typed: the JSON text is unchanged
            "identification": self.identification.to_dict() if self.identification else None,
            **({"fingerprint": self.fingerprint} if self.fingerprint is not None else {}),
            **self.extra,
        }


@dataclass
class Summary:
    """Totals over every file of a report, as the core sums them (a scan's `Scanner.summary`, or
    `_core.Totals` for file reports from elsewhere)."""

    files: int = 0
    bytes: int = 0
    errors: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_arch: dict[str, int] = field(default_factory=dict)
    by_check: dict[str, int] = field(default_factory=dict)
    findings: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEVERITIES, 0))
    wasted_bytes: dict[str, int] = field(default_factory=dict)
    skipped_links: int = 0
    """Symbolic links below a root the walk did not follow (set by the scan, not by `add`)."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Summary:
        """Builds a summary from its report dict (severities in order, each present)."""
        return cls(
            files=int(d["files"]),
            bytes=int(d["bytes"]),
            errors=int(d["errors"]),
            by_kind=dict(d["by_kind"]),
            by_arch=dict(d["by_arch"]),
            by_check=dict(d["by_check"]),
            findings={s: int(d["findings"].get(s, 0)) for s in SEVERITIES},
            wasted_bytes=dict(d["wasted_bytes"]),
            skipped_links=int(d.get("skipped_links", 0)),
        )

    @classmethod
    def of(cls, files: Iterable[FileReport]) -> Summary:
        """Sums up a list of file reports (in the core)."""
        from fastscan import _core

        totals = _core.Totals()
        for f in files:
            totals.add(f.to_dict())
        return cls.from_dict(totals.summary)

    def to_dict(self) -> dict[str, Any]:
        """The `summary` object of the JSON report (maps sorted by key)."""
        return {
            "files": self.files,
            "bytes": self.bytes,
            "errors": self.errors,
            "by_kind": dict(sorted(self.by_kind.items())),
            "by_arch": dict(sorted(self.by_arch.items())),
            "by_check": dict(sorted(self.by_check.items())),
            "findings": self.findings,
            "wasted_bytes": dict(sorted(self.wasted_bytes.items())),
            "skipped_links": self.skipped_links,
        }


@dataclass
class Report:
    """The result of one scan run (schema `fastscan.report/1`)."""

    roots: list[str]
    started: str
    elapsed_s: float
    files: list[FileReport]
    summary: Summary
    version: str
    duplicates: list[Any] = field(default_factory=list)
    schema: str = SCHEMA
    file_texts: list[str] | None = None
    """The file objects as the core wrote them (compact JSON, sorted by path), in place of `files`: a
    report made to be written (`fastscan scan --json`), not read."""

    def worst(self) -> str | None:
        """The highest severity of any file (errors reading a file count as `error`), or None.

        Read from the summary, so it holds for a report whose `files` were not kept (`--jsonl`).
        """
        sevs = [s for s, n in self.summary.findings.items() if n] + (["error"] if self.summary.errors else [])
        return max(sevs, key=lambda s: SEVERITY_RANK.get(s, 0)) if sevs else None

    def fails(self, threshold: str) -> bool:
        """True when any file has a finding (or error) at or above `threshold`."""
        w = self.worst()
        return w is not None and severity_at_least(w, threshold)

    def to_dict(self, *, with_files: bool = True) -> dict[str, Any]:
        """The whole report as plain data (`files` empty, in its place, unless `with_files`)."""
        return {
            "schema": self.schema,
            "tool": {"name": "fastscan", "version": self.version},
            "roots": [display_path(r) for r in self.roots],
            "started": self.started,
            "elapsed_s": self.elapsed_s,
            "summary": self.summary.to_dict(),
            "files": self._file_dicts() if with_files else [],
            "duplicates": self.duplicates,
        }

    def _file_dicts(self) -> list[dict[str, Any]]:
        if self.file_texts is not None:
            return [json.loads(t) for t in self.file_texts]
        return [f.to_dict() for f in self.files]

    def to_json(self, indent: int | None = 2) -> str:
        """The report as a JSON document."""
        out = io.StringIO()
        self.write_json(out, indent)
        return out.getvalue()

    def write_json(self, fp: TextIO, indent: int | None = 2) -> None:
        """Writes the report as a JSON document to `fp`.

        Compact output (`indent=None`, no spaces) is written one file object at a time, the same
        document as `json.dumps(self.to_dict())` without holding it, or every file's dict, in memory
        at once; file objects the core wrote as text (`file_texts`) are written as they are.
        """
        if indent is not None:
            fp.write(json.dumps(self.to_dict(), indent=indent, ensure_ascii=False))
            return
        # Written in pieces of about 1 MiB: one write per fragment would be a system call each on an
        # unbuffered stream (PYTHONUNBUFFERED, common in containers): 20,000 of them for 10,000 files.
        pending: list[str] = []
        held = 0

        def put(text: str) -> None:
            nonlocal held
            pending.append(text)
            held += len(text)
            if held >= WRITE_PIECE:
                fp.write("".join(pending))
                pending.clear()
                held = 0

        put("{")
        for i, (k, v) in enumerate(self.to_dict(with_files=False).items()):
            put(f"{',' if i else ''}{json.dumps(k)}:")
            if k != "files":
                put(compact_json(v))
                continue
            put("[")
            texts = self.file_texts
            if texts is None:
                texts = (compact_json(f.to_dict()) for f in self.files)
            for j, t in enumerate(texts):
                put("," + t if j else t)
            put("]")
        put("}")
        fp.write("".join(pending))


# Characters `Report.write_json` gathers before each write.
WRITE_PIECE = 1 << 20


def compact_json(v: Any) -> str:
    """`v` as compact JSON text (no spaces, UTF-8 kept), the form the core writes file objects in."""
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
