"""What a person can do about each finding: the command that repairs it, or that only a new copy will.

Presentation advice as data (one table), shared by the scan's `--files` listing and by `fix`, which says so
and exits non-zero when a file has errors it cannot repair.
"""

from __future__ import annotations

from enum import Enum


class Remedy(str, Enum):
    """The action a finding calls for."""

    fix = "fix"  # `fastscan fix FILE -o OUT` repairs it
    convert = "convert"  # `fastscan convert FILE` writes a safetensors copy
    redownload = "re-download"  # the bytes are damaged or missing: get the file again
    delete = "delete"  # never load it
    review = "review"  # worth a look; nothing to run


REMEDIES: dict[str, Remedy] = {
    "clip.position-ids": Remedy.fix,
    "junk.ema": Remedy.fix,
    "junk.unknown-keys": Remedy.fix,
    "dtype.float64": Remedy.fix,
    "file.unaccounted-bytes": Remedy.fix,
    "format.legacy-pickle": Remedy.convert,
    "pickle.dangerous-import": Remedy.delete,
    "file.truncated": Remedy.redownload,
    "header.invalid": Remedy.redownload,
    "values.nan-inf": Remedy.redownload,
    "pickle.invalid": Remedy.redownload,
    "hash.mismatch": Remedy.redownload,
    "values.constant": Remedy.redownload,
}
# An unreadable file (the report's `error`) also calls for a new copy.
UNREADABLE = Remedy.redownload


def remedy(check: str, severity: str = "error") -> Remedy:
    """The action for a finding of `check`: review when nothing can be run for it or it is only info."""
    if severity == "info":
        return Remedy.review
    return REMEDIES.get(check, Remedy.review)


def how(r: Remedy, path: str) -> str:
    """The action said as a person would do it, with the command when there is one."""
    q = _quote(path)
    return {
        Remedy.fix: f"fastscan fix {q}",
        Remedy.convert: f"fastscan convert {q}",
        Remedy.redownload: "re-download it (the file is damaged; no fix can restore missing or broken bytes)",
        Remedy.delete: "delete it (never load it with torch.load)",
        Remedy.review: "review",
    }[r]


def _quote(path: str) -> str:
    import shlex

    return shlex.quote(path)
