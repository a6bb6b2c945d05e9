"""Scanning orchestration: walk the roots, scan every file in the Rust core, gather a `Report`."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from fastscan import _core
from fastscan.dedupe import find_duplicates
from fastscan.model import FileReport, Report, Summary

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
    """Where a running scan stands, passed to the `progress` callback after each file."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    file: FileReport


def _roots(paths: PathLike | Iterable[PathLike]) -> list[str]:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    roots = [os.fspath(p) for p in paths]
    if not roots:
        raise ValueError("no path to scan")
    for r in roots:
        if not os.path.lexists(r):
            raise FileNotFoundError(f"{r}: no such file or directory")
    return roots


def _walk_error(path: str, kind: str, message: str) -> FileReport:
    msg = message if path and message.startswith(path) else f"{path}: {message}" if path else message
    return FileReport.failed(path, kind, msg)


class ScanRun:
    """A scan under way: iterate to receive each `FileReport` as it finishes, then call `report()`.

    The walk happens on construction, so `files_total` and `bytes_total` are known before any file
    is scanned. Entries the walk could not read (permissions, symlink loops, dangling links) come
    first, as reports whose `error` says why.
    """

    def __init__(
        self,
        paths: PathLike | Iterable[PathLike],
        *,
        hash: str = "full",
        sha256: bool = False,
        jobs: int = 0,
        follow_links: bool = False,
        cache: bool | PathLike | None = None,
    ) -> None:
        if hash not in HASH_MODES:
            raise ValueError(f"hash must be one of {', '.join(HASH_MODES)}, not {hash!r}")
        if jobs < 0:
            raise ValueError(f"jobs must be 0 (all cores) or more, not {jobs}")
        self.roots = _roots(paths)
        self.hash, self.sha256, self.jobs = hash, sha256, jobs
        self.cache = _cache_path(cache)
        self.cache_warning: str | None = None
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._t0 = time.perf_counter()
        found, errors = _core.walk(self.roots, follow_links, jobs)
        self._paths = [p for p, _, _ in found]
        self._errors = [_walk_error(p, k, m) for p, k, m in errors]
        self.files_total = len(found) + len(errors)
        self.bytes_total = sum(size for _, size, _ in found)
        self.files: list[FileReport] = []

    def __iter__(self) -> Iterator[FileReport]:
        for r in self._errors:
            self.files.append(r)
            yield r
        if not self._paths:
            return
        for d in self._scanner():
            r = FileReport.from_dict(d)
            self.files.append(r)
            yield r

    def _scanner(self) -> _core.Scanner:
        """The core's parallel scanner; a cache that cannot be opened means no cache, with a warning."""
        if self.cache is not None:
            try:
                s = _core.Scanner(
                    self._paths, hash=self.hash, sha256=self.sha256, jobs=self.jobs, cache=self.cache
                )
                self.cache_warning = s.cache_warning
                return s
            except OSError as e:
                self.cache_warning = f"scan cache {self.cache} not used: {e}"
        return _core.Scanner(self._paths, hash=self.hash, sha256=self.sha256, jobs=self.jobs)

    def drive(
        self,
        *,
        progress: Callable[[Progress], object] | None = None,
        on_file: Callable[[FileReport], object] | None = None,
    ) -> Report:
        """Runs the scan to the end, calling `on_file` and `progress` after each file; returns the report."""
        done_files = done_bytes = 0
        for r in self:
            done_files += 1
            done_bytes += r.size
            if on_file is not None:
                on_file(r)
            if progress is not None:
                progress(Progress(done_files, self.files_total, done_bytes, self.bytes_total, r))
        return self.report()

    def report(self) -> Report:
        """The report of every file received so far, sorted by path."""
        files = sorted(self.files, key=lambda f: f.path)
        return Report(
            roots=self.roots,
            started=self.started,
            elapsed_s=round(time.perf_counter() - self._t0, 6),
            files=files,
            summary=Summary.of(files),
            version=_core.__version__,
            duplicates=find_duplicates(f.to_dict() for f in files) if self.hash != "none" else [],
        )


def scan(
    paths: PathLike | Iterable[PathLike],
    *,
    hash: str = "full",
    sha256: bool = False,
    jobs: int = 0,
    follow_links: bool = False,
    progress: Callable[[Progress], object] | None = None,
    cache: bool | PathLike | None = None,
) -> Report:
    """Scans files and directories and returns the report (raises FileNotFoundError for a missing root).

    `hash`: `none` (header-level checks only), `components` (component hashes and value checks) or
    `full` (whole-file hashes too); `sha256` adds SHA-256 and the hashes built on it; `jobs` 0 uses
    every core; `progress` is called with a `Progress` after each file; `cache`: True for the user's
    scan cache (`default_cache_path()`), a path for another database, None for none.
    """
    run = ScanRun(paths, hash=hash, sha256=sha256, jobs=jobs, follow_links=follow_links, cache=cache)
    return run.drive(progress=progress)


def scan_one(path: PathLike, *, hash: str = "full", sha256: bool = False) -> FileReport:
    """Scans a single file (raises FileNotFoundError when it does not exist)."""
    p = os.fspath(path)
    if not os.path.lexists(p):
        raise FileNotFoundError(f"{p}: no such file or directory")
    if hash not in HASH_MODES:
        raise ValueError(f"hash must be one of {', '.join(HASH_MODES)}, not {hash!r}")
    return FileReport.from_dict(_core.scan_file(p, hash=hash, sha256=sha256))
