"""Duplicate groups in a scanned library: identical files, shared components, same weights repackaged.

Works on report file objects (the dicts of `fastscan.report/1`), so it serves the API, `--json` and
`fastscan dedupe` alike.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

# Components that are not model weights: never grounds for calling two files the same model.
NOT_WEIGHTS = {"buffers", "ema", "junk"}
# A file with a finding of these severities is damaged: never grouped as "same weights", never kept over a
# healthy copy.
DAMAGING = {"error", "critical"}


def damaged(f: Mapping) -> bool:
    """True when the file could not be read or has an error or critical finding."""
    return bool(f.get("error")) or any(x.get("severity") in DAMAGING for x in f.get("findings") or [])


def choose_keep(fs: list[Mapping], keep: str = "oldest") -> Mapping:
    """The copy to keep: healthy before damaged, then by `keep`: `oldest`, `newest` or `path:PREFIX`."""
    if keep.startswith("path:"):
        prefix = keep[len("path:") :]
        return min(
            fs, key=lambda f: (damaged(f), not f["path"].startswith(prefix), f.get("mtime", 0), f["path"])
        )
    sign = -1 if keep == "newest" else 1
    return min(fs, key=lambda f: (damaged(f), sign * f.get("mtime", 0), f["path"]))


def _weights(f: Mapping) -> dict[str, str]:
    """Component name -> canonical hash for the weight components of a file (empty if unhashed)."""
    out = {}
    for name, c in (f.get("components") or {}).items():
        if name in NOT_WEIGHTS:
            continue
        h = c.get("blake3")
        if not h:
            return {}
        out[name] = h
    return out


def find_duplicates(files: Iterable[Mapping], keep: str = "oldest") -> list[dict]:
    """Groups of identical files, files sharing a component, and files with the same weights.

    Each group: {type, hash, component, files, bytes (of one copy), reclaimable (bytes freed by keeping one;
    0 for a shared component, which deleting files cannot free), keep (the copy to keep, see `choose_keep`),
    damaged (the group's damaged files)}. A damaged file is never in a same-weights group. Sorted by
    reclaimable bytes, largest first.
    """
    files = [f for f in files if not f.get("error")]
    groups: list[dict] = []

    by_file: dict[str, list[Mapping]] = defaultdict(list)
    for f in files:
        h = (f.get("hashes") or {}).get("blake3")
        if h:
            by_file[h].append(f)
    for h, fs in by_file.items():
        if len(fs) > 1:
            size = fs[0]["size"]
            groups.append(_group("identical-files", h, None, fs, size, keep))

    # One representative per distinct file, so identical copies are not counted again below.
    distinct = [fs[0] for fs in by_file.values()] + [
        f for f in files if not (f.get("hashes") or {}).get("blake3")
    ]

    by_weights: dict[tuple, list[Mapping]] = defaultdict(list)
    for f in distinct:
        if damaged(f):
            continue
        w = _weights(f)
        if w:
            by_weights[tuple(sorted(w.items()))].append(f)
    for key, fs in by_weights.items():
        if len(fs) > 1:
            size = sum(fs[0]["components"][name]["bytes"] for name, _ in key)
            groups.append(_group("same-weights", _key_hash(key), None, fs, size, keep))

    # One representative per set of weights, so a repackaged model counts once below.
    representatives = [fs[0] for fs in by_weights.values()]
    by_comp: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for f in representatives:
        for name, h in _weights(f).items():
            by_comp[(name, h)].append(f)
    for (name, h), fs in by_comp.items():
        if len(fs) > 1:
            groups.append(_group("shared-component", h, name, fs, fs[0]["components"][name]["bytes"], keep))

    groups.sort(key=lambda g: (-g["reclaimable"], g["type"], g["hash"]))
    return groups


def _key_hash(key: tuple) -> str:
    """A stable id for a set of component hashes."""
    import hashlib

    return hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()


def _group(kind: str, h: str, component: str | None, fs: list[Mapping], size: int, keep: str) -> dict:
    paths = sorted(f["path"] for f in fs)
    shared = kind == "shared-component"
    return {
        "type": kind,
        "hash": h,
        "component": component,
        "files": paths,
        "bytes": size,
        "reclaimable": 0 if shared else size * (len(paths) - 1),
        "keep": None if shared else choose_keep(fs, keep)["path"],
        "damaged": sorted(f["path"] for f in fs if damaged(f)),
    }
