"""Typed stubs for `fastscan._core`, the Rust extension (rust/python/src/lib.rs)."""

from collections.abc import Iterator, Sequence
from os import PathLike
from typing import Any, Literal

_Path = str | PathLike[str]
_HashMode = Literal["none", "components", "full"]

__version__: str

def walk(
    roots: Sequence[_Path], follow_links: bool = False, jobs: int = 0
) -> tuple[list[tuple[str, int, float]], list[tuple[str, Literal["io", "loop"], str]]]:
    """Walks roots; returns ([(path, size, mtime)] sorted by path, [(path, kind, message)] unreadable)."""

def scan_file(path: _Path, hash: _HashMode = "full", sha256: bool = False) -> dict[str, Any]:
    """Scans one file and returns its report as a dict (the file object of the JSON report)."""

def read_tensors(path: _Path) -> dict[str, Any]:
    """Reads a file's tensor table with each tensor's role; ValueError naming the file if unreadable."""

def similar(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`fastscan.similar/1` from reports with fingerprints; ValueError naming a file without one."""

def similar_exact(paths: Sequence[_Path], archs: Sequence[str]) -> dict[str, Any]:
    """`fastscan.similar/1` from every weight of the files; ValueError naming an unreadable file."""

def lineage(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`fastscan.lineage/1` from scan reports with fingerprints (docs/lineage.md)."""

def pickle_imports(data: bytes) -> list[dict[str, Any]]:
    """Every import of every pickle in a raw stream (never loaded): module, name, opcode, pos, used..."""

class Scanner(Iterator[dict[str, Any]]):
    """Scans files in parallel in the background; iterating yields each report dict as it finishes."""

    cache_warning: str | None
    """Set when the cache database was unreadable and was rebuilt."""

    def __init__(
        self,
        paths: Sequence[_Path],
        hash: _HashMode = "full",
        sha256: bool = False,
        jobs: int = 0,
        cache: _Path | None = None,
        fingerprint: bool = False,
    ) -> None:
        """Starts the scan; `cache` is a database path serving unchanged files (OSError if unusable);
        `fingerprint` adds each file's lineage fingerprint (docs/fingerprint.md) to its report."""
    def __iter__(self) -> Scanner: ...
    def __next__(self) -> dict[str, Any]: ...
