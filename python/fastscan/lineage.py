"""Lineage and similarity: a scan with fingerprints, the core's figures, and how they are shown.

The core computes every figure (fingerprints in the data pass, similarities, recipe fits, families;
see docs/lineage.md); this module runs the scan, hands the reports to the core and presents the
result as tables or Graphviz.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastscan import _core
from fastscan.api import PathLike, Progress, ScanRun
from fastscan.model import Kind

# The kinds lineage covers, as the core has them (it leaves reports of other kinds out of lineage).
MODEL_KINDS = tuple(Kind(k) for k in _core.LINEAGE_KINDS)


@dataclass
class Scanned:
    """Reports of a fingerprint scan: the model files, and why other files were left out."""

    reports: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)
    cache_warning: str | None = None


def scan_fingerprints(
    paths: PathLike | Iterable[PathLike],
    *,
    jobs: int = 0,
    cache: bool | PathLike | None = True,
    progress: Callable[[Progress], object] | None = None,
    endpoint_url: str | None = None,
) -> Scanned:
    """Scans with component hashes and fingerprints (one data pass, cached); keeps the model files.
    Paths may be object-store URLs (`endpoint_url` as for `fastscan.scan`)."""
    run = ScanRun(
        paths, hash="components", jobs=jobs, cache=cache, fingerprint=True, endpoint_url=endpoint_url
    )
    report = run.drive(progress=progress)
    out = Scanned([], cache_warning=run.cache_warning)
    for f in report.files:
        d = f.to_dict()
        if f.error is not None:
            out.skipped.append(f.error.message)
        elif f.kind in MODEL_KINDS and d.get("fingerprint"):
            out.reports.append(d)
    return out


def lineage(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The `fastscan.lineage/1` document of the model reports (computed by the core)."""
    return _core.lineage(reports)


def check_comparable(reports: list[dict[str, Any]], wanted: list[str]) -> None:
    """Raises ValueError when a wanted file is not a model with weights or kinds or archs differ."""
    by_path = {r["path"]: r for r in reports}
    for p in wanted:
        if p not in by_path:
            raise ValueError(f"{p}: not a model file with weights (checkpoint, UNet, VAE or text encoder)")
    sorts = {(by_path[p]["kind"], by_path[p]["arch"]) for p in wanted}
    if len(sorts) > 1:
        listed = ", ".join(f"{p} ({by_path[p]['kind']}, {by_path[p]['arch']})" for p in wanted)
        raise ValueError(f"files of different kinds or archs cannot be compared: {listed}")


def similar(
    files: list[str],
    *,
    exact: bool = False,
    jobs: int = 0,
    cache: bool | PathLike | None = True,
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """`fastscan.similar/1` for two or more files: from fingerprints, or (`exact`) from every weight.
    Files may be objects' URLs (`endpoint_url` as for `fastscan.scan`), compared by fingerprints."""
    if len(files) < 2:
        raise ValueError("similar needs at least two files")
    for p in files:
        if os.path.isdir(p):
            raise ValueError(f"{p} is a directory: similar compares files (lineage takes directories)")
        if exact and _core.is_url(os.fspath(p)):
            raise ValueError(
                f"{p}: --exact reads local files; objects are compared by their fingerprints (drop --exact)"
            )
    scanned = scan_fingerprints(files, jobs=jobs, cache=cache, endpoint_url=endpoint_url)
    if scanned.skipped:
        raise ValueError(scanned.skipped[0])
    wanted = [os.fspath(p) for p in files]
    check_comparable(scanned.reports, wanted)
    by_path = {r["path"]: r for r in scanned.reports}
    if exact:
        return _core.similar_exact(wanted, [by_path[p]["arch"] for p in wanted])
    return _core.similar([by_path[p] for p in wanted])


def vae_similarity(
    ckpt: PathLike,
    vae: PathLike,
    *,
    cache: bool | PathLike | None = True,
    endpoint_url: str | None = None,
) -> float | None:
    """Cosine of a checkpoint's VAE and a standalone VAE's weights, from fingerprints (scan cache used);
    None when either file has no VAE fingerprint. Either may be an object's URL."""
    scanned = scan_fingerprints([ckpt, vae], cache=cache, endpoint_url=endpoint_url)
    by_path = {r["path"]: r for r in scanned.reports}
    a, b = by_path.get(os.fspath(ckpt)), by_path.get(os.fspath(vae))
    if a is None or b is None:
        return None
    comps = _core.similar([a, b])["pairs"][0]["components"]
    return comps["vae"]["similarity"] if "vae" in comps else None


# ---- presentation --------------------------------------------------------------------------------

_BLOCK = re.compile(r"^(IN|M|OUT)(\d+)$")


def block_order(name: str) -> tuple[int, int]:
    """Sort key of a block name: IN00.., M00, OUT00.., then BASE."""
    m = _BLOCK.match(name)
    if not m:
        return (3, 0)
    return ({"IN": 0, "M": 1, "OUT": 2}[m.group(1)], int(m.group(2)))


def similar_tables(doc: dict[str, Any]) -> list[Any]:
    """One rich table per pair: a row per component and block, the overall figure in the title."""
    from rich import box
    from rich.table import Table

    from fastscan.terminal import markup

    tables = []
    for pair in doc["pairs"]:
        t = Table(
            title=f"{markup(pair['a'])}  vs  {markup(pair['b'])}: {pair['similarity']:.4f} ({doc['method']})",
            box=box.SIMPLE_HEAD,
            title_justify="left",
        )
        t.add_column("component")
        t.add_column("block")
        t.add_column("cosine", justify="right")
        for comp, c in sorted(pair["components"].items()):
            t.add_row(f"[bold]{markup(comp)}[/]", "all", f"[bold]{c['similarity']:.4f}[/]")
            for block in sorted(c["blocks"], key=block_order):
                t.add_row("", block, f"{c['blocks'][block]:.4f}")
        tables.append(t)
    return tables


def recipe_text(merge: dict[str, Any] | None) -> str:
    """A merge recipe as a merge tool writes it: `0.60·A + 0.40·B`, `A + 0.70·(B − C)`."""
    if not merge:
        return ""
    name = os.path.basename
    ps = merge["parents"]
    if merge["method"] == "add-difference":
        text = (
            f"{name(ps[0]['path'])} + {ps[1]['weight']:.2f}·({name(ps[1]['path'])} − {name(merge['base'])})"
        )
    else:
        text = " + ".join(f"{p['weight']:.2f}·{name(p['path'])}" for p in ps)
        if merge.get("blocks"):
            text += " (weights per block)"
    return f"{text}  fit {merge['fit']:.3f}"


def lineage_table(doc: dict[str, Any]) -> Any:
    """The models, strongest relations first: merges by fit, then by similarity to the nearest model."""
    from rich import box
    from rich.table import Table

    from fastscan.terminal import markup

    def strength(m: dict[str, Any]) -> tuple[int, float]:
        if m["merge"]:
            return (0, -m["merge"]["fit"])
        top = m["nearest"][0]["similarity"] if m["nearest"] else 0.0
        return (1, -top)

    t = Table(title="Lineage", box=box.SIMPLE_HEAD, title_justify="left")
    t.add_column("model", overflow="fold")
    t.add_column("arch")
    t.add_column("nearest", overflow="fold")
    t.add_column("made from (weights)", overflow="fold")
    for m in sorted(doc["models"], key=strength):
        near = m["nearest"][0] if m["nearest"] else None
        near_text = f"{markup(os.path.basename(near['path']))} {near['similarity']:.3f}" if near else ""
        made = markup(recipe_text(m["merge"]))
        if m["same_weights"]:
            same = ", ".join(os.path.basename(p) for p in m["same_weights"])
            made = (made + "\n" if made else "") + f"same weights as {markup(same)}"
        t.add_row(markup(m["path"]), m["arch"], near_text, made)
    return t


def block_table(m: dict[str, Any]) -> Any:
    """Per-block weights of a block-weighted merge."""
    from rich import box
    from rich.table import Table

    from fastscan.terminal import markup

    blocks = m["merge"]["blocks"]
    parents = [p["path"] for p in m["merge"]["parents"]]
    t = Table(title=f"{markup(m['path'])}: weights per block", box=box.SIMPLE_HEAD, title_justify="left")
    t.add_column("block")
    for p in parents:
        t.add_column(markup(os.path.basename(p)), justify="right")
    for b in sorted(blocks, key=block_order):
        t.add_row(b, *(f"{blocks[b].get(p, 0.0):.2f}" for p in parents))
    return t


def print_lineage(doc: dict[str, Any], console: Any) -> None:
    """The lineage table, per-block weights of block merges, findings and families."""
    from fastscan.render import SEVERITY_STYLE
    from fastscan.terminal import markup

    if not doc["models"]:
        console.print("No model files with weights found.")
        return
    console.print(lineage_table(doc))
    for m in doc["models"]:
        if m["merge"] and m["merge"].get("blocks"):
            console.print(block_table(m))
    for m in doc["models"]:
        for f in m["findings"]:
            style = SEVERITY_STYLE.get(f["severity"], "")
            console.print(
                f"[{style}]{f['severity']}[/] {f['check']}: {markup(m['path'])}: {markup(f['message'])}"
            )
    for i, fam in enumerate(doc["families"], 1):
        console.print(f"[bold]family {i}[/]: " + ", ".join(markup(os.path.basename(p)) for p in fam))


def _dot_id(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(doc: dict[str, Any]) -> str:
    """The family graph for Graphviz: weighted edges from parents, bases dashed, a cluster per family."""
    lines = ["digraph lineage {", "  rankdir=LR;", "  node [shape=box, fontsize=10];"]
    fam_of = {p: i for i, fam in enumerate(doc["families"]) for p in fam}
    for i, fam in enumerate(doc["families"]):
        lines.append(f"  subgraph cluster_{i} {{ label={_dot_id(f'family {i + 1}')};")
        lines.extend(f"    {_dot_id(p)} [label={_dot_id(os.path.basename(p))}];" for p in fam)
        lines.append("  }")
    for m in doc["models"]:
        if m["path"] not in fam_of:
            lines.append(f"  {_dot_id(m['path'])} [label={_dot_id(os.path.basename(m['path']))}];")
    for m in doc["models"]:
        merge = m["merge"]
        if merge:
            for p in merge["parents"]:
                lines.append(f'  {_dot_id(p["path"])} -> {_dot_id(m["path"])} [label="{p["weight"]:.2f}"];')
            if merge["base"]:
                lines.append(
                    f'  {_dot_id(merge["base"])} -> {_dot_id(m["path"])} [style=dashed, label="base"];'
                )
        elif (
            m["nearest"] and m["path"] in fam_of and fam_of.get(m["nearest"][0]["path"]) == fam_of[m["path"]]
        ):
            near = m["nearest"][0]
            lines.append(
                f"  {_dot_id(near['path'])} -> {_dot_id(m['path'])} "
                f'[style=dotted, arrowhead=none, label="{near["similarity"]:.3f}"];'
            )
        for p in m["same_weights"]:
            if p > m["path"]:
                lines.append(f'  {_dot_id(m["path"])} -> {_dot_id(p)} [dir=both, color=gray, label="same"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
