"""Scanning orchestration: the core walks and scans, `iter_scan` streams the reports, `scan` gathers them."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from fastscan import _core
from fastscan.dedupe import DAMAGING, find_duplicates
from fastscan.model import FileReport, Report, Summary

if TYPE_CHECKING:
    from fastscan.cluster import ClusterScan

HASH_MODES = ("none", "components", "full")
PathLike = str | os.PathLike
CACHE_FILE = "scan-cache.sqlite3"


def default_cache_path() -> str:
    """The scan cache database: $FASTSCAN_CACHE, else fastscan/scan-cache.sqlite3 in the user's cache dir."""
    env = os.environ.get("FASTSCAN_CACHE")
    if env:
        return env
    if sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "fastscan", CACHE_FILE)


def _cache_path(cache: bool | PathLike | None) -> str | None:
    if cache is None or cache is False:
        return None
    return default_cache_path() if cache is True else os.fspath(cache)


@dataclass
class Progress:
    """Where a running scan stands, passed to the `progress` callback after each file.

    The totals are what the walk has found so far: they grow while it runs (`walk_done` False) and are
    final once it has finished.
    """

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    file: FileReport | None
    """The file just finished (None when the scan yields the core's JSON text: `ScanRun(as_text=True)`)."""
    walk_done: bool = True


def _roots(paths: PathLike | Iterable[PathLike]) -> list[str]:
    if isinstance(paths, str | bytes | os.PathLike):
        paths = [paths]
    roots = [os.fsdecode(p) for p in paths]
    if not roots:
        raise ValueError("no path to scan")
    for r in roots:
        if not _core.is_url(r) and not os.path.lexists(r):
            raise FileNotFoundError(f"{r}: no such file or directory")
    return roots


def _check_options(hash: str, jobs: int) -> None:
    if hash not in HASH_MODES:
        raise ValueError(f"hash must be one of {', '.join(HASH_MODES)}, not {hash!r}")
    if jobs < 0:
        raise ValueError(f"jobs must be 0 (all cores) or more, not {jobs}")


class StoppableScan(Iterator[FileReport]):
    """A scan under way that yields `FileReport`s and is stopped by `close()`: on `with` exit, and when
    dropped while open (subclasses set `_open` and define `close`)."""

    _open = False

    def __iter__(self) -> StoppableScan:
        return self

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> StoppableScan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_open", False):
            self.close()


class ScanIterator(StoppableScan):
    """A scan under way in the core (see `iter_scan`): iterating yields each `FileReport` as it finishes.

    `close()` (also on `with` exit, on `break` out of a `for` over `iter_scan(...)` and when the iterator
    is dropped) stops every walking and scanning thread and returns once they have stopped.
    """

    def __init__(self, scanner: _core.Scanner, roots: list[str], cache_warning: str | None) -> None:
        self.roots = roots
        self.cache_warning = cache_warning
        self._core = scanner
        self._open = True

    def __next__(self) -> FileReport:
        return FileReport.from_dict(self._next())

    def _next(self) -> Any:
        """The core's next item, as it gives it."""
        if not self._open:
            raise StopIteration
        try:
            return next(self._core)
        except StopIteration:
            self._open = False
            raise

    @property
    def summary(self) -> Summary:
        """The totals (summed by the core) of the reports received so far."""
        return Summary.from_dict(self._core.summary)

    @property
    def found(self) -> tuple[int, int, bool]:
        """(files found, bytes found, walk finished) so far."""
        files, size, done, _ = self._core.progress
        return files, size, done

    @property
    def skipped_links(self) -> int:
        """Symbolic links below a root the walk did not follow, so far (0 with `follow_links`)."""
        return self._core.skipped_links

    @property
    def files_scanned(self) -> int:
        """Files whose scan has finished in the core, reports not yet read included (it stops growing
        once the scan is closed)."""
        return self._core.progress[3]

    def close(self) -> None:
        """Stops the scan; returns once every thread of it has stopped."""
        if self._open:
            self._open = False
            self._core.close()


def iter_scan(
    paths: PathLike | Iterable[PathLike],
    *,
    hash: str = "full",
    sha256: bool = False,
    jobs: int = 0,
    follow_links: bool = False,
    cache: bool | PathLike | None = None,
    fingerprint: bool = False,
    cluster: Any = None,
    endpoint_url: str | None = None,
    _text: bool = False,
) -> ScanIterator | ClusterScan:
    """Scans files and directories, yielding each file's `FileReport` as it finishes (completion order).

    The walk runs in the core and feeds the scanning threads directly; reports wait in a small bounded
    queue, so memory stays flat however large the library. Stop early with `close()`, a `with` block
    or `break` (the iterator is closed as soon as it is dropped). Options as for `scan`. Unreadable paths
    come as reports whose `error` says why; a missing root raises FileNotFoundError at once.
    Roots may be object-store URLs (`s3://bucket/prefix/`, `gs://`, `az://`, `https://host/file`):
    objects are listed and scanned in place, credentials from the standard environment;
    `endpoint_url` names an S3-compatible service (else `AWS_ENDPOINT_URL`). A root that cannot be
    listed comes as a report whose `error` says why.
    """
    _check_options(hash, jobs)
    roots = _roots(paths)
    if cluster is not None:  # the scan cache is per machine: a cluster's workers scan every file
        from fastscan.cluster import ClusterScan

        return ClusterScan(
            roots,
            cluster,
            hash=hash,
            sha256=sha256,
            jobs=jobs,
            follow_links=follow_links,
            fingerprint=fingerprint,
            endpoint_url=endpoint_url,
        )
    opts = {
        "hash": hash,
        "sha256": sha256,
        "jobs": jobs,
        "follow_links": follow_links,
        "fingerprint": fingerprint,  # lineage fingerprints in each report (docs/fingerprint.md)
        "endpoint_url": endpoint_url,
        "text": _text,  # ScanRun's JSON documents: the core writes each file object's text
    }
    db = _cache_path(cache)
    if db is not None:
        try:
            scanner = _core.Scanner(roots, cache=db, **opts)
            return ScanIterator(scanner, roots, scanner.cache_warning)
        except OSError as e:  # a cache that cannot be opened means no cache, with a warning
            return ScanIterator(_core.Scanner(roots, **opts), roots, f"scan cache {db} not used: {e}")
    return ScanIterator(_core.Scanner(roots, **opts), roots, None)


class ScanRun:
    """A scan under way, for callers that want the whole `Report` at the end (the CLI, `scan`).

    Iterate to receive each `FileReport` as it finishes, then call `report()`. With `keep_files=False`
    the file reports are not kept (constant memory: `--jsonl`); the report then has the summary, the
    duplicate groups and an empty `files` list. Of each hashed file, what duplicate grouping needs is
    kept either way (a few hashes), never its whole report.

    With `as_text` (a report to be written as JSON, not read: `--json`, `--jsonl`), iterating yields
    each file object as the JSON text the core wrote, and the report keeps those texts
    (`Report.file_texts`) instead of `FileReport`s; a cluster scan's reports are written from Python.
    """

    def __init__(
        self,
        paths: PathLike | Iterable[PathLike],
        *,
        keep_files: bool = True,
        as_text: bool = False,
        **options: Any,
    ) -> None:
        """`options` are those of `iter_scan`."""
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._t0 = time.perf_counter()
        self._text = as_text and options.get("cluster") is None
        self._it = iter_scan(paths, _text=self._text, **options)
        self.roots = self._it.roots
        self.hash = options.get("hash", "full")
        self.keep_files = keep_files
        self.files: list[FileReport] = []
        self._texts: list[tuple[str, str]] = []  # (exact path, file object text) with as_text
        self._text_bytes = 0  # bytes of the files whose text came
        self._totals = None if isinstance(self._it, ScanIterator) else _core.Totals()
        self._hashed: list[dict] = []  # what duplicate grouping needs of each hashed file

    @property
    def cache_warning(self) -> str | None:
        """Why the scan cache was rebuilt or not used, if it was."""
        return self._it.cache_warning

    @property
    def files_total(self) -> int:
        """Files (and unreadable paths) the walk has found so far."""
        return self._it.found[0]

    @property
    def bytes_total(self) -> int:
        """Bytes of the files the walk has found so far."""
        return self._it.found[1]

    def __iter__(self) -> Iterator[Any]:
        """Each `FileReport` (with `as_text`, each file object's JSON text) as it finishes."""
        yield from (self._iter_text() if self._text else self._iter_reports())

    def _iter_reports(self) -> Iterator[FileReport]:
        with self._it:
            for r in self._it:
                if self._totals is not None:
                    self._totals.add(r.to_dict())
                if self.keep_files:
                    self.files.append(r)
                if self.hash != "none" and r.error is None and (r.hashes.blake3 or r.components):
                    self._hashed.append(_dedupe_record(r))
                yield r

    def _iter_text(self) -> Iterator[str]:
        it = self._it
        assert isinstance(it, ScanIterator)
        with it:
            while True:
                try:
                    path, size, text, record = it._next()
                except StopIteration:
                    return
                self._text_bytes += size
                if self.keep_files:
                    self._texts.append((path, text))
                if record is not None and record["error"] is None:
                    if record["hashes"]["blake3"] or record["components"]:
                        record["findings"] = [x for x in record["findings"] if x["severity"] in DAMAGING]
                        self._hashed.append(record)
                yield text

    def drive(
        self,
        *,
        progress: Callable[[Progress], object] | None = None,
        on_file: Callable[[Any], object] | None = None,
    ) -> Report:
        """Runs the scan to the end, calling `on_file` (with what iterating yields) and `progress`
        after each file; returns the report."""
        done_files = done_bytes = 0
        for r in self:
            done_files += 1
            if on_file is not None:
                on_file(r)
            if progress is not None:
                done_bytes = self._text_bytes if self._text else done_bytes + r.size
                files, size, walked = self._it.found
                progress(Progress(done_files, files, done_bytes, size, None if self._text else r, walked))
        return self.report()

    def report(self) -> Report:
        """The report of every file received so far, sorted by path."""
        hashed = sorted(self._hashed, key=lambda f: f["path"])
        if self._totals is None:
            summary = self._it.summary
        else:
            summary = Summary.from_dict(self._totals.summary)
            summary.skipped_links = self._it.skipped_links
        texts = None
        if self._text:
            texts = [t for _, t in sorted(self._texts, key=lambda pt: pt[0])] if self.keep_files else []
        return Report(
            roots=self.roots,
            started=self.started,
            elapsed_s=round(time.perf_counter() - self._t0, 6),
            files=sorted(self.files, key=lambda f: f.path),
            summary=summary,
            version=_core.__version__,
            duplicates=find_duplicates(hashed) if self.hash != "none" else [],
            file_texts=texts,
        )


def _dedupe_record(r: FileReport) -> dict:
    """The part of a file object duplicate grouping reads: path, size, mtime (which copy to keep), the
    damaging findings' severities (a damaged copy is not kept), hashes and component hashes."""
    comps = {k: {"blake3": c.blake3, "bytes": c.bytes} for k, c in r.components.items()}
    path = r.to_dict()["path"]
    damage = [{"severity": f.severity} for f in r.findings if f.severity in DAMAGING]
    return {
        "path": path,
        "size": r.size,
        "mtime": r.mtime,
        "findings": damage,
        "hashes": {"blake3": r.hashes.blake3},
        "components": comps,
    }


def scan(
    paths: PathLike | Iterable[PathLike],
    *,
    hash: str = "full",
    sha256: bool = False,
    jobs: int = 0,
    follow_links: bool = False,
    progress: Callable[[Progress], object] | None = None,
    cache: bool | PathLike | None = None,
    cluster: Any = None,
    endpoint_url: str | None = None,
) -> Report:
    """Scans files and directories and returns the report (raises FileNotFoundError for a missing root).

    Built on `iter_scan`. `hash`: `none` (header-level checks only), `components` (component hashes and
    value checks) or `full` (whole-file hashes too); `sha256` adds SHA-256 and the hashes built on it;
    `jobs` 0 uses every core; `progress` is called with a `Progress` after each file; `cache`: True for
    the user's scan cache (`default_cache_path()`), a path for another database, None for none.
    `cluster`: a `distributed.Client` or a Dask scheduler address (`tcp://host:8786`) to spread the files
    over that cluster's workers (`fastscan.cluster`; the same report, files named by absolute path; no
    scan cache); raises `fastscan.cluster.ClusterError` when the cluster cannot run the scan.
    `endpoint_url`: an S3-compatible service for `s3://` roots (see `iter_scan`).
    """
    run = ScanRun(
        paths,
        hash=hash,
        sha256=sha256,
        jobs=jobs,
        follow_links=follow_links,
        cache=cache,
        endpoint_url=endpoint_url,
        cluster=cluster,
    )
    return run.drive(progress=progress)


@dataclass
class PlannedFile:
    """One file or object a scan would read (`plan`)."""

    path: str
    size: int
    bytes_to_read: int


@dataclass
class Plan:
    """What a scan would read, found by walking and listing only (`--dry-run`)."""

    files: list[PlannedFile]
    errors: list[tuple[str, str]]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def bytes_to_read(self) -> int:
        return sum(f.bytes_to_read for f in self.files)

    def to_dict(self) -> dict:
        return {
            "files": [f.__dict__ for f in self.files],
            "errors": [{"path": p, "message": m} for p, m in self.errors],
            "summary": {"files": len(self.files), "size": self.size, "bytes_to_read": self.bytes_to_read},
        }


def plan(
    paths: PathLike | Iterable[PathLike],
    *,
    hash: str = "full",
    follow_links: bool = False,
    endpoint_url: str | None = None,
) -> Plan:
    """Lists what a scan of `paths` would read (files and objects, their sizes and the bytes the scan
    reads at least), opening nothing: the dry run."""
    _check_options(hash, 0)
    files, errors = _core.plan(_roots(paths), hash=hash, follow_links=follow_links, endpoint_url=endpoint_url)
    return Plan([PlannedFile(*f) for f in sorted(files)], errors)


def scan_one(
    path: PathLike, *, hash: str = "full", sha256: bool = False, endpoint_url: str | None = None
) -> FileReport:
    """Scans a single file or object (raises FileNotFoundError when a local file does not exist; an
    object that cannot be read is a report with its error). `endpoint_url` as for `iter_scan`."""
    p = os.fsdecode(path)
    if not _core.is_url(p) and not os.path.lexists(p):
        raise FileNotFoundError(f"{p}: no such file or directory")
    _check_options(hash, 0)
    return FileReport.from_dict(_core.scan_file(p, hash=hash, sha256=sha256, endpoint_url=endpoint_url))
