"""fastscan: find and fix what is wrong with Stable Diffusion model files.

    import fastscan
    report = fastscan.scan("models/")        # a fastscan.Report
    print(report.to_json())
    for f in fastscan.iter_scan("models/"):  # each fastscan.FileReport as it finishes
        print(f.path, f.worst)

Names are imported on first use, so `import fastscan` (and the CLI's start) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastscan.api import Plan, Progress, ScanIterator, iter_scan, plan, scan, scan_one
    from fastscan.model import Component, FileError, FileReport, Finding, Hashes, Report, Summary

__all__ = [
    "Component",
    "FileError",
    "FileReport",
    "Finding",
    "Hashes",
    "Plan",
    "Progress",
    "Report",
    "Summary",
    "ScanIterator",
    "__version__",
    "iter_scan",
    "plan",
    "scan",
    "scan_one",
]

_LAZY = {
    "scan": "fastscan.api",
    "scan_one": "fastscan.api",
    "iter_scan": "fastscan.api",
    "ScanIterator": "fastscan.api",
    "Progress": "fastscan.api",
    "plan": "fastscan.api",
    "Plan": "fastscan.api",
    "Report": "fastscan.model",
    "FileReport": "fastscan.model",
    "Finding": "fastscan.model",
    "Component": "fastscan.model",
    "Hashes": "fastscan.model",
    "Summary": "fastscan.model",
    "FileError": "fastscan.model",
}


def __getattr__(name: str) -> Any:
    """Imports the public names on first use."""
    if name == "__version__":
        from fastscan._core import __version__

        return __version__
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'fastscan' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
