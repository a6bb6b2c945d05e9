"""The library report: one self-contained HTML page (inline CSS, inline SVG charts, a small script).

`gather` runs the scan (whole-file hashes and lineage fingerprints, served from the scan cache) and asks
the core for lineage and similarities; `load` reads a `fastscan.report/1` JSON document made elsewhere.
`page` only presents: every number on the page is one the core (or the duplicate grouping) put in the
report, the lineage document or the similarity documents. Nothing on the page fetches anything: no
network, no fonts, no libraries (a Content-Security-Policy forbids it). The overview, duplicates, CLIP and
lineage sections are HTML and inline SVG; the file table and every file's details are one compact JSON
document the page's script turns into HTML when shown (a page of rows at a time, details when opened), so
10,000 files make a light page; without JavaScript a plain table lists every file.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from fastscan.advice import Remedy, how, remedy
from fastscan.dedupe import NOT_WEIGHTS
from fastscan.lineage import MODEL_KINDS, block_order, recipe_text
from fastscan.model import SCHEMA, SEVERITIES
from fastscan.render import DUPLICATE_TITLES, reclaimable, short_path, size

HEATMAP_MAX = 40  # models of one kind and arch drawn in a similarity heatmap (pairs grow as n²)
ALSO_IN_SHOWN = 8  # other files listed for a shared component
DETAILS_CHARS = 2000  # characters of a finding's details shown (JSON), the rest summarised
LAZY_DETAILS_CHARS = 600  # the same (and of a metadata value) above FULL_DETAILS_MAX files
CLIP_CHARTS = 40  # CLIP offset charts drawn; the other files with the finding are listed
# Up to this many files, details keep DETAILS_CHARS of each finding's details and printing opens every
# file's details; above it the page stays light (a file's details are built when it is opened, always).
FULL_DETAILS_MAX = 1000
WASTE_CAUSES = {"ema": "EMA weights", "junk": "junk keys", "float64": "float64", "duplicates": "duplicates"}


@dataclass
class Library:
    """What the page is made of: the report, and the lineage and similarity documents when available."""

    report: dict[str, Any]
    lineage: dict[str, Any] | None = None
    similar: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# ---- gathering (the core computes; this only calls it) -------------------------------------------


def _models(files: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The file objects lineage works on: readable model files carrying a fingerprint."""
    return [
        dict(f) for f in files if not f.get("error") and f.get("kind") in MODEL_KINDS and f.get("fingerprint")
    ]


def _with_lineage(report: dict[str, Any], warnings: list[str]) -> Library:
    """The library of `report`, with lineage and per-kind-and-arch similarities when it has fingerprints."""
    from fastscan import _core

    models = _models(report.get("files") or [])
    lib = Library(report, warnings=warnings)
    if models:
        lib.lineage = _core.lineage(models)
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for m in models:
            groups[(m["kind"], m["arch"])].append(m)
        for (kind, arch), ms in sorted(groups.items()):
            if len(ms) < 2:
                continue
            if len(ms) > HEATMAP_MAX:
                warnings.append(f"{len(ms)} {kind} models of arch {arch}: no heatmap above {HEATMAP_MAX}")
                continue
            doc = _core.similar(sorted(ms, key=lambda m: m["path"]))
            lib.similar.append({"kind": kind, "arch": arch, **doc})
    for f in report.get("files") or []:
        f.pop("fingerprint", None)  # read by the core above; not shown
    return lib


def gather(
    paths: Sequence[str],
    *,
    sha256: bool = False,
    jobs: int = 0,
    follow_links: bool = False,
    cache: bool | str | None = True,
    lineage: bool = True,
    progress: Callable[[Any], object] | None = None,
) -> Library:
    """Scans `paths` (whole-file hashes; fingerprints unless `lineage` is False) into a `Library`."""
    from fastscan.api import ScanRun

    run = ScanRun(
        paths,
        hash="full",
        sha256=sha256,
        jobs=jobs,
        follow_links=follow_links,
        cache=cache,
        fingerprint=lineage,
    )
    report = run.drive(progress=progress).to_dict()
    warnings = [run.cache_warning] if run.cache_warning else []
    if not lineage:
        return Library(report, warnings=warnings)
    return _with_lineage(report, warnings)


def load(path: str) -> Library:
    """A `fastscan.report/1` JSON document made elsewhere (lineage too when its files carry fingerprints).

    Raises ValueError naming the file when it is not such a document.
    """
    try:
        with open(path, encoding="utf-8") as fp:
            doc = json.load(fp)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a JSON report: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a JSON report: not UTF-8 text (byte offset {e.start})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"{path}: not a {SCHEMA} document (schema: {found!r})")
    if not isinstance(doc.get("files"), list) or not isinstance(doc.get("summary"), dict):
        raise ValueError(f"{path}: a {SCHEMA} document without its files (a --jsonl summary line?)")
    return _with_lineage(doc, [])


def write(lib: Library, out: str) -> None:
    """Writes the page to `out` through a temporary file renamed into place (never a half-written page)."""
    text = page(lib)
    tmp = os.path.join(os.path.dirname(os.path.abspath(out)), f".{os.path.basename(out)}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fp:
            fp.write(text)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---- small helpers ------------------------------------------------------------------------------


def _e(s: Any) -> str:
    return escape(str(s), quote=True)


def _base(path: str) -> str:
    return os.path.basename(path.rstrip("/")) or path


def _sev_badge(sev: str, text: str | None = None) -> str:
    return f'<span class="sev {_e(sev)}">{_e(text or sev)}</span>'


def _num(v: float) -> str:
    """A number for an SVG attribute (no exponent, two decimals)."""
    return f"{v:.2f}".rstrip("0").rstrip(".") if v == v else "0"


@dataclass(frozen=True)
class View:
    """How the sections name files: relative to the scan roots, linked by index (`#f-INDEX` opens the
    file's row and details)."""

    roots: Sequence[str]
    ids: Mapping[str, int]

    def short(self, path: str) -> str:
        """`path` as shown: relative to the scan root it was found under (the full path is its tooltip)."""
        return short_path(path, list(self.roots))

    def link(self, path: str) -> str:
        """A link to a file's details, showing its short path (the full path on hover)."""
        return f'<a href="#f-{self.ids.get(path, "")}" title="{_e(path)}">{_e(self.short(path))}</a>'


def _files_of(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return report.get("files") or []


# ---- charts (inline SVG) --------------------------------------------------------------------------


def bar_chart(title: str, items: Sequence[tuple[str, int | float, str]], *, cls: str = "") -> str:
    """A horizontal bar chart: one bar per (label, value, value as shown); empty items are left out."""
    items = [it for it in items if it[1]]
    if not items:
        return f'<figure class="chart empty"><figcaption>{_e(title)}</figcaption><p>none</p></figure>'
    top = max(v for _, v, _ in items)
    label_w, bar_w, row = 130, 210, 22
    width = label_w + bar_w + 80
    height = row * len(items) + 4
    parts = [
        f'<svg class="bars" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{_e(title)}">'
    ]
    for i, (label, value, shown) in enumerate(items):
        y = i * row + 2
        w = max(1.0, bar_w * value / top)
        short = label if len(label) <= 20 else label[:19] + "…"
        klass = f"bar {cls} c-{_e(label)}".strip()
        parts.append(
            f'<g class="{klass}" data-label="{_e(label)}" data-value="{value}">'
            f"<title>{_e(label)}: {_e(shown)}</title>"
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_e(short)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{_num(w)}" height="{row - 6}" rx="2"/>'
            f'<text class="v" x="{label_w + w + 5:.1f}" y="{y + 15}">{_e(shown)}</text></g>'
        )
    parts.append("</svg>")
    return f'<figure class="chart"><figcaption>{_e(title)}</figcaption>{"".join(parts)}</figure>'


def offsets_chart(details: Mapping[str, Any]) -> str | None:
    """A `clip.position-ids` finding's offset (stored value − position) per token position, or None
    when the finding carries no values (unreadable storage)."""
    offs = details.get("offset") or []
    if not offs:
        return None
    shape = details.get("shape") or []
    n = int(shape[-1]) if shape else max(int(o["index"]) for o in offs) + 1
    finite = [abs(o["signed_offset"]) for o in offs if isinstance(o["signed_offset"], int | float)]
    top = max(finite) if finite else 1.0
    top = top or 1.0
    left, w, h, pad = 60, 640, 160, 16
    mid = pad + h / 2
    step = w / max(n, 1)
    parts = [
        f'<svg class="offsets" viewBox="0 0 {left + w + 10} {h + 2 * pad + 18}" width="{left + w + 10}" '
        f'role="img" '
        f'aria-label="offset per token position">',
        f'<line class="axis" x1="{left}" y1="{mid}" x2="{left + w}" y2="{mid}"/>',
        f'<text x="{left - 4}" y="{pad + 4}" text-anchor="end">+{top:.3g}</text>',
        f'<text x="{left - 4}" y="{mid + 4}" text-anchor="end">0</text>',
        f'<text x="{left - 4}" y="{pad + h + 4}" text-anchor="end">−{top:.3g}</text>',
        f'<text x="{left}" y="{h + 2 * pad + 12}">position 0</text>',
        f'<text x="{left + w}" y="{h + 2 * pad + 12}" text-anchor="end">{n - 1}</text>',
    ]
    for o in offs:
        v = o["signed_offset"]
        x = left + int(o["index"]) * step
        if isinstance(v, int | float):
            bh = (h / 2) * abs(v) / top
            y = mid - bh if v > 0 else mid
            shown = f"{v:+.6g}"
        else:  # nan / inf: the string the core wrote, drawn full height
            bh, y, shown = h / 2, pad, str(v)
        klass = "off ok" if o.get("truncation_ok") else "off broken"
        parts.append(
            f'<rect class="{klass}" data-value="{_e(v)}" x="{x:.2f}" y="{y:.2f}" '
            f'width="{max(step - 1, 1):.2f}" height="{max(bh, 0.5):.2f}">'
            f"<title>position {o['index']}: stored {_e(o['value'])}, offset {_e(shown)}, "
            f"read as {_e(o.get('as_int64'))} by truncation</title></rect>"
        )
    parts.append("</svg>")
    return "".join(parts)


def block_chart(m: Mapping[str, Any]) -> str:
    """A block-weighted merge: each parent's weight per merge block, one line per parent."""
    blocks = sorted(m["merge"]["blocks"], key=block_order)
    parents = [p["path"] for p in m["merge"]["parents"]]
    values = [m["merge"]["blocks"][b].get(p, 0.0) for b in blocks for p in parents]
    lo, hi = min(0.0, *values), max(1.0, *values)
    left, w, h, pad = 40, 640, 150, 14
    step = w / max(len(blocks) - 1, 1)

    def y(v: float) -> float:
        return pad + h * (hi - v) / (hi - lo)

    parts = [
        f'<svg class="blockw" viewBox="0 0 {left + w + 20} {h + 2 * pad + 40}" width="{left + w + 20}" '
        f'role="img" '
        f'aria-label="weights per block">',
        f'<line class="axis" x1="{left}" y1="{y(0):.1f}" x2="{left + w}" y2="{y(0):.1f}"/>',
        f'<text x="{left - 4}" y="{y(hi) + 4:.1f}" text-anchor="end">{hi:.2g}</text>',
        f'<text x="{left - 4}" y="{y(0) + 4:.1f}" text-anchor="end">0</text>',
    ]
    for i, b in enumerate(blocks):
        parts.append(
            f'<text class="tick" x="{left + i * step:.1f}" y="{h + 2 * pad + 6}" '
            f'transform="rotate(60 {left + i * step:.1f},{h + 2 * pad + 6})">{_e(b)}</text>'
        )
    for k, p in enumerate(parents):
        pts = [(left + i * step, y(m["merge"]["blocks"][b].get(p, 0.0))) for i, b in enumerate(blocks)]
        parts.append(f'<polyline class="s{k % 6}" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}"/>')
        for (px, py), b in zip(pts, blocks, strict=True):
            v = m["merge"]["blocks"][b].get(p, 0.0)
            parts.append(
                f'<circle class="s{k % 6}" data-value="{v}" cx="{px:.1f}" cy="{py:.1f}" r="3">'
                f"<title>{_e(_base(p))} {_e(b)}: {v:.3f}</title></circle>"
            )
    parts.append("</svg>")
    legend = "".join(
        f'<li><span class="key s{k % 6}"></span>{_e(_base(p))}</li>' for k, p in enumerate(parents)
    )
    return "".join(parts) + f'<ul class="legend">{legend}</ul>'


def heatmap(doc: Mapping[str, Any]) -> str:
    """Similarity of every pair of models of one kind and arch (the core's `fastscan.similar/1`)."""
    paths = [m["path"] for m in doc["models"]]
    at = {p: i for i, p in enumerate(paths)}
    sim: dict[tuple[int, int], float] = {}
    for pair in doc["pairs"]:
        i, j = at[pair["a"]], at[pair["b"]]
        sim[(i, j)] = sim[(j, i)] = pair["similarity"]
    n = len(paths)
    values = list(sim.values())
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    span = (hi - lo) or 1.0
    cell, label_w = (34 if n <= 12 else 18), 170
    parts = [
        f'<svg class="heat" viewBox="0 0 {label_w + n * cell + 10} {label_w + n * cell + 10}" '
        f'width="{label_w + n * cell + 10}" role="img" aria-label="similarity heatmap">'
    ]
    for i, p in enumerate(paths):
        short = _e(_base(p)[:26])
        parts.append(
            f'<text x="{label_w - 6}" y="{label_w + i * cell + cell * 0.65:.1f}" '
            f'text-anchor="end">{short}</text>'
        )
        x = label_w + i * cell + cell * 0.6
        parts.append(
            f'<text x="{x:.1f}" y="{label_w - 6}" '
            f'transform="rotate(-60 {x:.1f},{label_w - 6})">{short}</text>'
        )
    for i in range(n):
        for j in range(n):
            x, y = label_w + j * cell, label_w + i * cell
            if i == j:
                parts.append(f'<rect class="self" x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}"/>')
                continue
            v = sim.get((i, j))
            if v is None:
                continue
            light = 92 - 62 * (v - lo) / span  # darker is more similar, over the range shown
            parts.append(
                f'<rect class="cell" data-value="{v}" x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                f'style="fill:hsl(210,65%,{light:.0f}%)"><title>{_e(_base(paths[i]))} vs '
                f"{_e(_base(paths[j]))}: {v:.4f}</title></rect>"
            )
            if cell >= 30:
                klass = "hv dark" if light < 60 else "hv"
                parts.append(
                    f'<text class="{klass}" x="{x + cell / 2:.1f}" y="{y + cell * 0.62:.1f}" '
                    f'text-anchor="middle">{v:.2f}</text>'
                )
    parts.append("</svg>")
    legend = f'<p class="meta">Lightest {lo:.4f}, darkest {hi:.4f}; exact values on hover.</p>'
    return "".join(parts) + legend


def family_graph(doc: Mapping[str, Any], family: Sequence[str], ids: Mapping[str, int]) -> str:
    """One family as a left-to-right graph: parents before merges, edges as `fastscan lineage --dot`."""
    models = {m["path"]: m for m in doc["models"]}
    members = set(family)
    depth: dict[str, int] = {}

    def depth_of(p: str, seen: frozenset[str] = frozenset()) -> int:
        if p in depth:
            return depth[p]
        merge = models.get(p, {}).get("merge")
        d = 0
        if merge and p not in seen:
            srcs = [q["path"] for q in merge["parents"]] + ([merge["base"]] if merge.get("base") else [])
            d = 1 + max((depth_of(s, seen | {p}) for s in srcs if s in members), default=-1)
        depth[p] = d
        return d

    cols: dict[int, list[str]] = defaultdict(list)
    for p in sorted(family):
        cols[depth_of(p)].append(p)
    bw, bh, gx, gy, pad = 180, 26, 90, 18, 24
    pos = {}
    for c, ps in cols.items():
        for r, p in enumerate(ps):
            pos[p] = (pad + 40 + c * (bw + gx), pad + r * (bh + gy))
    width = pad * 2 + 40 + (max(cols) + 1) * (bw + gx)
    height = pad * 2 + max(len(ps) for ps in cols.values()) * (bh + gy)
    edges = []

    def edge(a: str, b: str, klass: str, label: str) -> None:
        if a not in pos or b not in pos:
            return
        (x1, y1), (x2, y2) = pos[a], pos[b]
        y1, y2 = y1 + bh / 2, y2 + bh / 2
        if x1 == x2:  # same column: an arc on the left
            d = f"M{x1},{y1} C{x1 - 50},{y1} {x2 - 50},{y2} {x2},{y2}"
        else:
            x1 += bw
            d = f"M{x1},{y1} C{x1 + gx / 2},{y1} {x2 - gx / 2},{y2} {x2},{y2}"
        marker = ' marker-end="url(#arrow)"' if klass in ("parent", "base") else ""
        edges.append(
            f'<path class="edge {klass}" d="{d}"{marker}><title>{_e(_base(a))} → {_e(_base(b))}: '
            f"{_e(label)}</title></path>"
        )

    for p in family:
        m = models.get(p)
        if not m:
            continue
        merge = m.get("merge")
        if merge:
            for q in merge["parents"]:
                edge(q["path"], p, "parent", f"parent, weight {q['weight']:.2f}")
            if merge.get("base"):
                edge(merge["base"], p, "base", "base of the difference")
        elif m["nearest"] and m["nearest"][0]["path"] in members:
            near = m["nearest"][0]
            edge(near["path"], p, "near", f"nearest, similarity {near['similarity']:.3f}")
        for q in m["same_weights"]:
            if q > p:
                edge(p, q, "same", "same weights")
    nodes = []
    for p, (x, y) in pos.items():
        m = models.get(p, {})
        klass = "node merge" if m.get("merge") else "node"
        label = _base(p)
        label = label if len(label) <= 24 else label[:23] + "…"
        target = f"#f-{ids[p]}" if p in ids else "#lineage"
        nodes.append(
            f'<a href="{target}"><g class="{klass}"><title>{_e(p)} ({_e(m.get("kind", ""))}, '
            f'{_e(m.get("arch", ""))})</title><rect x="{x}" y="{y}" width="{bw}" height="{bh}" rx="5"/>'
            f'<text x="{x + bw / 2}" y="{y + 17}" text-anchor="middle">{_e(label)}</text></g></a>'
        )
    return (
        f'<svg class="family" viewBox="0 0 {width} {height}" width="{width}" role="img" '
        f'aria-label="family graph"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        f'markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/>'
        f"</marker></defs>{''.join(edges)}{''.join(nodes)}</svg>"
        '<p class="meta">Arrows: parents of a merge found in the weights (bold boxes; weights in the '
        "Merges table and on hover); dashed: the base of an add-difference; dotted: the nearest model; "
        "thick gray: the same weights.</p>"
    )


# ---- sections -----------------------------------------------------------------------------------


def _redundant(duplicates: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, str]]:
    """Path -> (bytes deleting it frees, the copy to keep) for every redundant copy of a group."""
    out: dict[str, tuple[int, str]] = {}
    for g in duplicates:
        if g["type"] == "shared-component" or not g.get("keep"):
            continue
        for p in g["files"]:
            if p != g["keep"] and g["bytes"] > out.get(p, (0, ""))[0]:
                out[p] = (g["bytes"], g["keep"])
    return out


def overview(report: Mapping[str, Any]) -> str:
    """Charts of the library: bytes and files by kind and arch, findings, reclaimable bytes by cause."""
    s = report["summary"]
    bytes_kind: dict[str, int] = defaultdict(int)
    bytes_arch: dict[str, int] = defaultdict(int)
    for f in _files_of(report):
        bytes_kind[f.get("kind", "unknown")] += f.get("size", 0)
        bytes_arch[f.get("arch", "unknown")] += f.get("size", 0)

    def by_size(d: Mapping[str, int]) -> list[tuple[str, int, str]]:
        return [(k, v, size(v)) for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))]

    def by_count(d: Mapping[str, int]) -> list[tuple[str, int, str]]:
        return [(k, v, str(v)) for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))]

    waste = dict(s.get("wasted_bytes") or {})
    waste["duplicates"] = reclaimable(report.get("duplicates") or [])
    findings = s.get("findings") or {}
    sev = [(k, findings.get(k, 0), str(findings.get(k, 0))) for k in reversed(SEVERITIES)]
    charts = [
        bar_chart("Bytes by kind", by_size(bytes_kind)),
        bar_chart("Files by kind", by_count(s.get("by_kind") or {})),
        bar_chart("Bytes by architecture", by_size(bytes_arch)),
        bar_chart("Files by architecture", by_count(s.get("by_arch") or {})),
        bar_chart("Findings by severity", sev, cls="sevbar"),
        bar_chart(
            "Reclaimable bytes by cause",
            [(WASTE_CAUSES.get(k, k), v, size(v)) for k, v in sorted(waste.items(), key=lambda kv: -kv[1])],
        ),
    ]
    checks = s.get("by_check") or {}
    if checks:
        charts.append(bar_chart("Findings by check", by_count(checks)))
    total_waste = sum(waste.values())
    facts = (
        f'<p class="facts"><b>{s.get("files", 0)}</b> files, <b>{size(s.get("bytes", 0))}</b>; '
        f"<b>{s.get('errors', 0)}</b> unreadable; <b>{size(total_waste)}</b> reclaimable "
        f"(pruning and deleting redundant copies; a file counted in both is counted twice).</p>"
    )
    charts_html = "".join(charts)
    return f'<section id="overview"><h2>Overview</h2>{facts}<div class="charts">{charts_html}</div></section>'


def _worst(f: Mapping[str, Any]) -> str | None:
    sevs = [x["severity"] for x in f.get("findings") or []] + (["error"] if f.get("error") else [])
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return max(sevs, key=lambda x: rank.get(x, 0)) if sevs else None


COLS = "<colgroup>" + "".join(f'<col style="width:{w}%">' for w in (34, 8, 7, 8, 8, 25, 10)) + "</colgroup>"


class Texts:
    """Each distinct text of the page's data once: a text is written as its index (a library repeats its
    kinds, dtypes, component names, findings and what to do)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def __call__(self, s: Any) -> int:
        return self.index.setdefault(str(s), len(self.index))


TABLE_PAGE = 200  # rows the script adds to the table at a time (the next ones when the end is in view)
COLUMNS = (
    ("path", "text"),
    ("kind", "text"),
    ("arch", "text"),
    ("size", "num"),
    ("dtypes", "text"),
    ("findings", "num"),
    ("reclaimable", "num"),
)


def file_table(
    report: Mapping[str, Any], redundant: Mapping[str, tuple[int, str]], view: View, t: Texts
) -> tuple[str, list[list[Any]]]:
    """The Files section and its rows as data.

    The script builds the table from the rows (a page at a time, sorted and filtered over every row): a
    table of 10,000 rows of HTML took seconds to lay out. Without JavaScript a plain table lists every
    file (path, kind, arch, size, findings). A row: [path, characters of the path not shown (the scan
    root), kind, arch, size, size as shown, dtypes, severity rank, findings cell, reclaimable bytes,
    reclaimable cell, worst severity]; texts as `Texts` indices, cells as HTML.
    """
    rows: list[list[Any]] = []
    plain = []
    rank = {s: i + 1 for i, s in enumerate(SEVERITIES)}
    for f in _files_of(report):
        path = f["path"]
        counts: dict[str, int] = defaultdict(int)
        for x in f.get("findings") or []:
            counts[x["severity"]] += 1
        badges = "".join(_sev_badge(sv, f"{counts[sv]} {sv}") for sv in reversed(SEVERITIES) if counts[sv])
        checks = " ".join(sorted({x["check"] for x in f.get("findings") or []}))
        if f.get("error"):
            badges = _sev_badge("error", "unreadable") + badges
            checks = (checks + " " + f["error"].get("kind", "")).strip()
        dtypes = ", ".join(k for k, _ in sorted((f.get("dtypes") or {}).items(), key=lambda kv: -kv[1]))
        waste = sum((f.get("wasted_bytes") or {}).values())
        copy = redundant.get(path)
        if copy:
            waste = copy[0]
            reclaim = f'<span title="a redundant copy of {_e(copy[1])}">{size(waste)} (copy)</span>'
        else:
            reclaim = size(waste) if waste else ""
        worst = _worst(f)
        found = f"{badges} <small>{_e(checks)}</small>" if badges else ""
        shown = view.short(path)
        kind, arch, n = f.get("kind", ""), f.get("arch", ""), f.get("size", 0)
        rows.append(
            [
                path,
                len(path) - len(shown),
                t(kind),
                t(arch),
                n,
                t(size(n)),
                t(dtypes),
                rank.get(worst, 0) if worst else 0,
                t(found),
                waste,
                t(reclaim),
                t(worst or "none"),
            ]
        )
        findings = len(f.get("findings") or []) + (1 if f.get("error") else 0)
        plain.append(
            f'<tr><td title="{_e(path)}">{_e(shown)}</td><td>{_e(kind)}</td><td>{_e(arch)}</td>'
            f"<td>{size(n)}</td><td>{findings or ''}</td></tr>"
        )
    head = "".join(f'<th data-type="{t}">{name}</th>' for name, t in COLUMNS)
    total = len(rows)
    html = (
        '<section id="files-section"><h2>Files</h2>'
        '<div id="scripted"><p class="tools"><label>Filter <input id="filter" type="search" '
        'placeholder="path, kind, arch, check…" '
        f'autocomplete="off"></label> <span id="shown">{total}</span> of {total} files match. Click a column '
        "heading to sort, a path to open the file's details.</p>"
        f'<div class="scroll"><table id="files">{COLS}<thead><tr>{head}</tr></thead><tbody></tbody></table>'
        '</div><p><button id="more" type="button" hidden></button></p></div>'
        "<noscript><style>#scripted{display:none}</style><p>Without JavaScript: every file, no sorting, "
        "filtering nor details (the JSON report holds them all).</p>"
        '<table id="plain" class="grid"><thead><tr><th>path</th><th>kind</th><th>arch</th><th>size</th>'
        f"<th>findings</th></tr></thead><tbody>{''.join(plain)}</tbody></table></noscript></section>"
    )
    return html, rows


def _clipped(value: Any, limit: int) -> list[Any]:
    """`[text]`, or `[first limit characters, characters in all]` when longer: compact JSON for values
    that are not text (the page pretty-prints it when whole)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return [text] if len(text) <= limit else [text[:limit], len(text)]


def _finding(f: Mapping[str, Any], path: str, limit: int) -> tuple[Any, ...]:
    """[severity, check, message, what to do, how it is shown (0 text, 1 command, 2 command with the CLIP
    chart), details (`_clipped`)]."""
    r = remedy(f["check"], f["severity"])
    shown = 0
    if r in (Remedy.fix, Remedy.convert):
        shown = 2 if r is Remedy.fix and f["check"] == "clip.position-ids" else 1
    details = _clipped(f.get("details"), limit)
    return f["severity"], f["check"], f.get("message", ""), how(r, path), shown, details


def _provenance(p: Mapping[str, Any]) -> list[list[str]]:
    rows = [["written by", ", ".join(p.get("tools") or [])]]
    merge = p.get("merge")
    if merge:
        mult = ", ".join(f"{k} {v}" for k, v in (merge.get("multipliers") or {}).items())
        method = " ".join(x for x in (merge.get("method"), merge.get("calcmode")) if x)
        rows.append(["merge", method + (f" ({mult})" if mult else "")])
    for q in p.get("parents") or []:
        ids = " ".join(x for x in (q.get("sha256"), q.get("legacy_hash")) if x)
        rows.append([q.get("role", "parent"), f"{q.get('name') or ''} {ids}".strip()])
    if p.get("base_model"):
        rows.append(["base model", str(p["base_model"])])
    for k, v in (p.get("training") or {}).items():
        if v is not None:
            rows.append([str(k), str(v)])
    return rows


def file_data(
    report: Mapping[str, Any],
    redundant: Mapping[str, tuple[int, str]],
    view: View,
    t: Texts,
    rows: list[list[Any]],
) -> str:
    """Every file's details as one compact JSON document, built into HTML by the page's script when the
    file is opened (pre-rendered, the details of 10,000 files were 16 MB of HTML).

    `{"rows": [...], "files": [...], "text": [...], "shared": [[index, ...], ...], "also": n, "print": n,
    "page": n}`: the table's rows (`file_table`), then one object per file, in the same order, with what
    its row does not show (formatted here: sizes, commands). Every text is an index into `text` (`Texts`).
    `page`: rows added to the table at a time. `shared`: the files sharing a component (its
    canonical hash), referred to from each component. `also`: the other files listed for a shared
    component; `print`: the most files printed with their details. A file's keys: `fa` format, size,
    tensors, dtypes; `id` identification; `cp` [index, path] of the copy to keep; `er` why unreadable;
    `h` hashes [name, value]; `k` components [name, tensors, size, dtypes, BLAKE3, shared group or -1];
    `x` findings (`_finding`); `pa` parts; `m` metadata [key, value, length when clipped]; `pr`
    provenance [label, value].
    """
    files = _files_of(report)
    limit = DETAILS_CHARS if len(files) <= FULL_DETAILS_MAX else LAZY_DETAILS_CHARS
    where: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(files):
        for name, c in (f.get("components") or {}).items():
            if name not in NOT_WEIGHTS and c.get("blake3"):
                where[c["blake3"]].append(i)
    shared = [ids for ids in where.values() if len(ids) > 1]
    group = {h: g for g, h in enumerate(h for h, ids in where.items() if len(ids) > 1)}
    out = []
    for f in files:
        path = f["path"]
        d: dict[str, Any] = {
            "fa": [
                t(f.get("format", "")),
                t(f"{size(f.get('size', 0))} ({f.get('size', 0)} bytes)"),
                t(f.get("tensors", 0)),
                t(", ".join(f"{k} {size(v)}" for k, v in (f.get("dtypes") or {}).items())),
            ],
        }
        ident = f.get("identification")
        if ident:
            d["id"] = t(f"score {ident['score']} ({ident['matched']} of {ident['of']} keys)")
        copy = redundant.get(path)
        if copy:
            d["cp"] = [view.ids.get(copy[1], -1), t(copy[1])]
        if f.get("error"):
            d["er"] = t(f"{f['error'].get('kind')}: {f['error'].get('message')}")
        hashes = [[t(k), t(v)] for k, v in (f.get("hashes") or {}).items() if v]
        if hashes:
            d["h"] = hashes
        comps = [
            [
                t(name),
                t(c.get("tensors", 0)),
                t(size(c.get("bytes", 0))),
                t(", ".join(c.get("dtypes") or {})),
                t(c.get("blake3") or ""),
                group.get(c.get("blake3") or "", -1) if name not in NOT_WEIGHTS else -1,
            ]
            for name, c in (f.get("components") or {}).items()
        ]
        if comps:
            d["k"] = comps
        findings = []
        for x in f.get("findings") or []:
            sev, check, message, todo, shown, details = _finding(x, path, limit)
            findings.append([t(sev), t(check), t(message), t(todo), shown, t(details[0]), *details[1:]])
        if findings:
            d["x"] = findings
        parts = [
            [t(p.get("path")), t(p.get("component")), t(p.get("role")), t(size(p.get("size", 0)))]
            for p in f.get("parts") or []
        ]
        if parts:
            d["pa"] = parts
        meta = []
        for k, v in (f.get("metadata") or {}).items():
            value = _clipped(v, limit)
            meta.append([t(k), t(value[0]), *value[1:]])
        if meta:
            d["m"] = meta
        if f.get("provenance"):
            d["pr"] = [[t(k), t(v)] for k, v in _provenance(f["provenance"])]
        out.append(d)
    doc = {
        "rows": rows,
        "files": out,
        "text": list(t.index),
        "shared": shared,
        "also": ALSO_IN_SHOWN,
        "print": FULL_DETAILS_MAX,
        "page": TABLE_PAGE,
    }
    data = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    # JSON inside <script>: `</` written `<\/` and `<!--` `\u003c!--`, so nothing ends or bends it
    data = data.replace("</", "<\\/").replace("<!--", "\\u003c!--")
    return f'<script type="application/json" id="data">{data}</script>'


def duplicates_section(report: Mapping[str, Any], view: View) -> str:
    """The duplicate groups, largest reclaimable first, the copy to keep marked."""
    groups = report.get("duplicates") or []
    if not groups:
        return (
            '<section id="duplicates"><h2>Duplicates</h2>'
            "<p>No duplicate files or shared components.</p></section>"
        )
    items = []
    for g in groups:
        what = DUPLICATE_TITLES.get(g["type"], g["type"])
        if g["type"] == "shared-component":
            head = (
                f"{_e(what)} <b>{_e(g.get('component') or '')}</b>: {size(g['bytes'])} in each file "
                "(not reclaimable by deleting files)"
            )
        else:
            head = f"{_e(what)}: {size(g['bytes'])} each, <b>{size(g['reclaimable'])}</b> reclaimable"
        damaged = set(g.get("damaged") or [])
        lis = []
        for p in g["files"]:
            mark = ' <span class="keep">keep</span>' if p == g.get("keep") else ""
            mark += ' <span class="sev error">damaged</span>' if p in damaged else ""
            lis.append(f"<li>{view.link(p)}{mark}</li>")
        items.append(f'<div class="group {_e(g["type"])}"><p>{head}</p><ul>{"".join(lis)}</ul></div>')
    total = reclaimable(groups)
    return (
        f'<section id="duplicates"><h2>Duplicates</h2><p>{len(groups)} group(s); deleting all but the kept '
        f"copies frees <b>{size(total)}</b>. See them with <code>fastscan dedupe</code>.</p>"
        f"{''.join(items)}</section>"
    )


def clip_section(report: Mapping[str, Any], view: View) -> str:
    """A chart of the offset per token position for every CLIP `position_ids` finding with values."""
    figs = []
    more: list[str] = []
    for f in _files_of(report):
        for x in f.get("findings") or []:
            if x["check"] != "clip.position-ids":
                continue
            d = x.get("details") or {}
            if len(figs) >= CLIP_CHARTS and d.get("offset"):
                more.append(f'<a href="#f-{view.ids[f["path"]]}">{_e(_base(f["path"]))}</a>')
                continue
            chart = offsets_chart(d)
            if chart is None:
                continue
            broken = len(d.get("broken") or [])
            cmd = how(remedy(x["check"], x["severity"]), f["path"])
            figs.append(
                f'<figure class="clip">{chart}<figcaption>{_sev_badge(x["severity"])} '
                f"{view.link(f['path'])}: "
                f"<code>{_e(d.get('tensor', ''))}</code> "
                f"({_e(d.get('encoder', ''))}, {_e(d.get('dtype', ''))}): "
                f"{len(d.get('offset') or [])} inexact position(s), {broken} misread by truncation, "
                f"largest deviation {_e(d.get('max_deviation'))}. "
                f"Fix: <code>{_e(cmd)}</code></figcaption></figure>"
            )
    if not figs:
        return ""
    return (
        '<section id="clip"><h2>CLIP position_ids</h2><p>Stored value minus position, per token position '
        "(red: a loader that truncates the stored ids reads another position).</p>"
        + "".join(figs)
        + (f"<p>{len(more)} more: {', '.join(more)}.</p>" if more else "")
        + "</section>"
    )


def lineage_section(lib: Library, view: View) -> str:
    """Families as graphs, per-block weights of block merges, recipes, similarity heatmaps."""
    doc = lib.lineage
    if doc is None:
        return ""
    if not doc["models"]:
        return '<section id="lineage"><h2>Lineage</h2><p>No model files with weights.</p></section>'
    out = ['<section id="lineage"><h2>Lineage</h2>']
    for k, fam in enumerate(doc["families"], 1):
        out.append(f"<h3>Family {k} ({len(fam)} models)</h3>" + family_graph(doc, fam, view.ids))
    alone = [m["path"] for m in doc["models"] if not any(m["path"] in fam for fam in doc["families"])]
    if alone:
        out.append(
            "<p>Related to no other model: "
            + ", ".join(f'<a href="#f-{view.ids.get(p, "")}">{_e(_base(p))}</a>' for p in alone)
            + "</p>"
        )
    merges = [m for m in doc["models"] if m.get("merge")]
    if merges:
        rows = "".join(
            f"<tr><td>{view.link(m['path'])}</td><td>{_e(recipe_text(m['merge']))}</td></tr>" for m in merges
        )
        out.append(
            '<h3>Merges</h3><table class="grid"><tr><th>model</th><th>recipe (from the weights)</th></tr>'
            f"{rows}</table>"
        )
    for m in merges:
        if m["merge"].get("blocks"):
            out.append(
                f'<figure class="chart wide"><figcaption>{_e(view.short(m["path"]))}: weights per block'
                "</figcaption>"
                f"{block_chart(m)}</figure>"
            )
    for s in lib.similar:
        out.append(
            f'<figure class="chart wide"><figcaption>Similarity of the {_e(s["kind"])} models of arch '
            f"{_e(s['arch'])} (cosine of the weights, {_e(s.get('method', ''))})</figcaption>"
            f"{heatmap(s)}</figure>"
        )
    notes = [
        f"<li>{_sev_badge(x['severity'])} <b>{_e(x['check'])}</b>: {_e(m['path'])}: {_e(x['message'])}</li>"
        for m in doc["models"]
        for x in m.get("findings") or []
    ]
    if notes:
        out.append(f'<h3>Lineage findings</h3><ul class="findings">{"".join(notes)}</ul>')
    out.append("</section>")
    return "".join(out)


# ---- the page -----------------------------------------------------------------------------------

CSS = """
:root{--bg:#fff;--fg:#1d2330;--muted:#5b6475;--line:#d9dde5;--card:#f5f7fa;--accent:#2f6fd0;
--crit:#a3199b;--err:#c62828;--warn:#b26a00;--info:#1f7a99;--bar:#4a80d6;--ok:#d08a00}
@media (prefers-color-scheme:dark){:root{--bg:#15181e;--fg:#e2e6ee;--muted:#9aa3b2;--line:#323845;
--card:#1d2129;--accent:#78a6f0;--crit:#e06fd9;--err:#ff6b6b;--warn:#f0b44c;--info:#5cc2e0;--bar:#6b9be8;
--ok:#f0b44c}}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:var(--bg);color:var(--fg)}main{max-width:1280px;margin:0 auto;padding:0 20px 40px}
header{padding:18px 20px;border-bottom:1px solid var(--line);max-width:1280px;margin:0 auto}
h1{margin:0 0 4px;font-size:22px}h2{margin:28px 0 10px;font-size:18px;border-bottom:1px solid var(--line);
padding-bottom:4px}h3{font-size:15px;margin:18px 0 8px}h4{margin:12px 0 4px;font-size:13px;color:var(--muted)}
a{color:var(--accent)}nav a{margin-right:14px}.meta{color:var(--muted);font-size:12px}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:var(--card);padding:8px;overflow:auto;max-height:24em;white-space:pre-wrap;
word-break:break-all}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{margin:0;padding:10px;background:var(--card);
border:1px solid var(--line);border-radius:6px;max-width:100%;overflow-x:auto}.chart.wide{display:block;
margin:12px 0}
figcaption{font-weight:600;margin-bottom:6px}.clip figcaption{font-weight:400}
svg{max-width:100%;height:auto}svg text{fill:var(--fg);
font-size:11px}
.bar rect{fill:var(--bar)}.bar text.v{fill:var(--muted)}.c-critical rect{fill:var(--crit)}
.c-error rect{fill:var(--err)}.c-warning rect{fill:var(--warn)}.c-info rect{fill:var(--info)}
.sev{display:inline-block;padding:0 5px;border-radius:3px;font-size:11px;font-weight:600;color:#fff;
background:var(--muted);white-space:nowrap}.sev.critical{background:var(--crit)}
.sev.error{background:var(--err)}
.sev.warning{background:var(--warn)}.sev.info{background:var(--info)}
.keep{color:#fff;background:#2e7d32;padding:0 5px;border-radius:3px;font-size:11px}
.scroll{overflow-x:auto}table{border-collapse:collapse}#files{width:100%;table-layout:fixed}
#files>*>tr>th,#files>tbody>tr>td,.grid th,.grid td{padding:3px 8px;border-bottom:1px solid var(--line);
text-align:left;vertical-align:top}#files>thead th{position:sticky;top:0;background:var(--bg);cursor:pointer;
user-select:none}#files th[aria-sort=ascending]::after{content:" ▲"}
#files th[aria-sort=descending]::after{content:" ▼"}#files>tbody>tr>td{overflow-wrap:anywhere}
#files>tbody>tr>td:first-child{word-break:break-all}#files>tbody>tr>td:nth-child(4),
#files>tbody>tr>td:nth-child(7),td.n{text-align:right;white-space:nowrap}
#files small{color:var(--muted)}#files>tbody>tr.more>td{padding:0 0 8px;text-align:left;
white-space:normal}.kv th{text-align:left;padding:2px 12px 2px 0;color:var(--muted);
font-weight:500;vertical-align:top;white-space:nowrap}.kv td{padding:2px 0;word-break:break-all}
.mv{max-height:8em;overflow:auto}details.file{border:1px solid var(--line);border-radius:5px;margin:4px 0;
background:var(--card)}
details.file>summary{padding:5px 8px;cursor:pointer;word-break:break-all}
details.file .body{padding:4px 12px 10px}
details.file:target{outline:2px solid var(--accent)}.findings{padding-left:18px}.findings li{margin:6px 0}
.todo{color:var(--muted)}.group{margin:8px 0;padding:6px 10px;background:var(--card);border-radius:5px}
.group ul{margin:4px 0;padding-left:18px}.group li{word-break:break-all}
.tools input{font:inherit;padding:4px 8px;width:22em;max-width:60vw;background:var(--bg);color:var(--fg);
border:1px solid var(--line);border-radius:4px}.facts{font-size:15px}
.axis{stroke:var(--muted);stroke-width:1}.off.ok{fill:var(--ok)}.off.broken{fill:var(--err)}
.blockw polyline{fill:none;stroke-width:2}.tick{font-size:9px}
.s0{stroke:#2f6fd0;fill:#2f6fd0}.s1{stroke:#d0552f;fill:#d0552f}.s2{stroke:#2e9d5a;fill:#2e9d5a}
.s3{stroke:#9b4fd0;fill:#9b4fd0}.s4{stroke:#c79a00;fill:#c79a00}.s5{stroke:#0097a7;fill:#0097a7}
.blockw polyline.s0,.blockw polyline.s1,.blockw polyline.s2,.blockw polyline.s3,.blockw polyline.s4,
.blockw polyline.s5{fill:none}.legend{list-style:none;padding:0;margin:4px 0;display:flex;gap:14px}
.legend .key{display:inline-block;width:14px;height:4px;margin-right:5px;vertical-align:middle;
border:2px solid}
.heat .self{fill:var(--line)}.heat .hv{font-size:9px;fill:#1d2330}.heat .hv.dark{fill:#fff}
.family .node rect{fill:var(--card);stroke:var(--accent);stroke-width:1.2}
.family .node.merge rect{stroke-width:2.4}
.edge{fill:none;stroke:var(--muted);stroke-width:1.4}.edge.base{stroke-dasharray:5 3}
.edge.near{stroke-dasharray:2 3}
.edge.same{stroke:#8a8f99;stroke-width:3;opacity:.6}.elabel{font-size:10px;fill:var(--muted)}
marker path{fill:var(--muted)}footer{color:var(--muted);font-size:12px;margin-top:30px}
@media print{nav,.tools,#more{display:none}body{font-size:11px;background:#fff;color:#000}
#files>thead th{position:static}details.file{break-inside:avoid}
.chart{break-inside:avoid}
a{color:inherit;text-decoration:none}pre{max-height:none}.mv{max-height:none}}
"""

SCRIPT = """
(function(){
var table=document.getElementById('files'),dataEl=document.getElementById('data');
if(!table||!dataEl)return;
var d=JSON.parse(dataEl.textContent),R=d.rows,T=d.text,body=table.tBodies[0],
    input=document.getElementById('filter'),shown=document.getElementById('shown'),
    more=document.getElementById('more'),timer=null,plain=null,lower=null,
    order=R.map(function(r,i){return i;}),match=order,limit=d.page,opened={},rowEl={};
var esc=function(s){return String(s).replace(/[&<>"']/g,function(c){return '&#'+c.charCodeAt(0)+';';});};
var E=function(k){return esc(T[k]);};
var base=function(p){var s=p.replace(/\\/+$/,'');return s.slice(s.lastIndexOf('/')+1)||p;};
var badge=function(s){return '<span class="sev '+esc(s)+'">'+esc(s)+'</span>';};
var link=function(i,text){return '<a href="#f-'+i+'">'+esc(text)+'</a>';};
var kv=function(rs){
  return rs.length?'<table class="kv">'+rs.map(function(r){
    return '<tr><th>'+esc(r[0])+'</th><td>'+r[1]+'</td></tr>';
  }).join('')+'</table>':'';
};
var grid=function(head,num,rs){
  return '<table class="grid"><tr>'+head.map(function(h){return '<th>'+h+'</th>';}).join('')+'</tr>'+
    rs.map(function(r){
      return '<tr>'+r.map(function(c,k){
        return (num.indexOf(k)>=0?'<td class="n">':'<td>')+c+'</td>';
      }).join('')+'</tr>';
    }).join('')+'</table>';
};
var whole=function(text,n){return n?text+'\\n\\u2026 ('+n+' characters in all; see the JSON report)':text;};
var pretty=function(text,n){
  if(n)return whole(text,n);
  try{return JSON.stringify(JSON.parse(text),null,1);}catch(e){return text;}
};
var FACTS=['format','size','tensors','dtypes'];
var build=function(i){
  var f=d.files[i],out=[],facts=f.fa.map(function(v,k){return [FACTS[k],E(v)];});
  if(f.id!=null)facts.push(['identification',E(f.id)]);
  if(f.cp)facts.push(['copy','a redundant copy of '+(f.cp[0]<0?E(f.cp[1]):link(f.cp[0],T[f.cp[1]]))]);
  if(f.er!=null)facts.push(['unreadable',E(f.er)]);
  out.push(kv(facts));
  if(f.h)out.push('<h4>Hashes</h4>'+kv(f.h.map(function(h){return [T[h[0]],'<code>'+E(h[1])+'</code>'];})));
  if(f.k)out.push('<h4>Components</h4>'+grid(
    ['component','tensors','bytes','dtypes','BLAKE3 (canonical)','also in'],[1,2],f.k.map(function(c){
      var others=c[5]<0?[]:d.shared[c[5]].filter(function(j){return j!==i;}),
          also=others.slice(0,d.also).map(function(j){return link(j,base(R[j][0]));}).join(', ');
      if(others.length>d.also)also+=' and '+(others.length-d.also)+' more';
      return [E(c[0]),E(c[1]),E(c[2]),E(c[3]),'<code>'+E(c[4])+'</code>',also];
    })));
  if(f.x)out.push('<h4>Findings</h4><ul class="findings">'+f.x.map(function(x){
    var todo=x[4]?'<code>'+E(x[3])+'</code>':E(x[3]);
    if(x[4]===2)todo+=' \\u00b7 <a href="#clip">offset chart</a>';
    return '<li>'+badge(T[x[0]])+' <b>'+E(x[1])+'</b>: '+E(x[2])+'<div class="todo">what to do: '+todo+
      '</div><details><summary>details</summary><pre>'+esc(pretty(T[x[5]],x[6]))+'</pre></details></li>';
  }).join('')+'</ul>');
  if(f.pa)out.push('<h4>Parts</h4>'+
    grid(['file','component','role','size'],[3],f.pa.map(function(p){return p.map(E);})));
  if(f.m)out.push('<h4>Metadata</h4>'+kv(f.m.map(function(m){
    return [T[m[0]],'<div class="mv">'+esc(whole(T[m[1]],m[2]))+'</div>'];
  })));
  if(f.pr)out.push('<h4>Provenance</h4>'+kv(f.pr.map(function(p){return [T[p[0]],E(p[1])];})));
  return out.join('');
};
var short=function(r){return r[0].slice(r[1]);};
var rowHtml=function(i){
  var r=R[i];
  return '<tr class="w-'+E(r[11])+'" data-i="'+i+'"><td><a href="#f-'+i+'" title="'+esc(r[0])+'">'+
    esc(short(r))+'</a></td><td>'+E(r[2])+'</td><td>'+E(r[3])+'</td><td data-v="'+r[4]+'">'+E(r[5])+
    '</td><td>'+E(r[6])+'</td><td data-v="'+r[7]+'">'+T[r[8]]+'</td><td data-v="'+r[9]+'">'+T[r[10]]+
    '</td></tr>';
};
var detail=function(i){
  if(!opened[i]){
    var tr=document.createElement('tr'),w=T[R[i][11]];
    tr.className='more';
    tr.innerHTML='<td colspan="7"><details class="file" id="f-'+i+'" open><summary>'+
      (w!=='none'?badge(w)+' ':'')+esc(R[i][0])+'</summary><div class="body">'+build(i)+
      '</div></details></td>';
    opened[i]=tr;
  }
  opened[i].firstChild.firstChild.open=true;
  return opened[i];
};
var place=function(i){var r=rowEl[i];if(r&&opened[i])body.insertBefore(opened[i],r.nextSibling);};
var render=function(){
  body.innerHTML=match.slice(0,limit).map(rowHtml).join('');
  rowEl={};Array.prototype.forEach.call(body.rows,function(r){rowEl[r.getAttribute('data-i')]=r;});
  Object.keys(opened).forEach(place);
  shown.textContent=match.length;
  var left=match.length-Math.min(limit,match.length);
  more.hidden=!left;more.textContent='Show '+Math.min(left,d.page)+' more ('+left+' not shown)';
};
var text=function(k){
  if(!plain)plain={};
  if(!(k in plain)){
    var el=document.createElement('div');el.innerHTML=T[k];plain[k]=el.textContent.toLowerCase();
  }
  return plain[k];
};
var apply=function(){
  var terms=input.value.toLowerCase().split(/\\s+/).filter(Boolean);
  if(!lower)lower=R.map(function(r){
    return [short(r).toLowerCase(),text(r[2]),text(r[3]),text(r[5]),text(r[6]),text(r[8]),text(r[10])]
      .join(' ');
  });
  match=order.filter(function(i){var t=lower[i];return terms.every(function(q){return t.indexOf(q)>=0;});});
  limit=d.page;render();table.setAttribute('data-filtered',input.value);
};
input.addEventListener('input',function(){clearTimeout(timer);timer=setTimeout(apply,120);});
more.addEventListener('click',function(){limit+=d.page;render();});
if(window.IntersectionObserver)new IntersectionObserver(function(es){
  if(es[0].isIntersecting&&!more.hidden){limit+=d.page;render();}
},{rootMargin:'400px'}).observe(more);
var KEYS=[function(r){return short(r).toLowerCase();},function(r){return text(r[2]);},
  function(r){return text(r[3]);},function(r){return r[4];},function(r){return text(r[6]);},
  function(r){return r[7];},function(r){return r[9];}];
Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,col){
  th.addEventListener('click',function(){
    var dir=th.getAttribute('aria-sort')==='ascending'?-1:1,key=KEYS[col];
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(h){h.removeAttribute('aria-sort');});
    th.setAttribute('aria-sort',dir>0?'ascending':'descending');
    var keyed=R.map(function(r,i){return [key(r),i];});
    keyed.sort(function(a,b){return a[0]<b[0]?-dir:a[0]>b[0]?dir:a[1]-b[1];});
    order=keyed.map(function(k){return k[1];});apply();
  });
});
var go=function(i){
  if(!rowEl[i]){input.value=short(R[i]);apply();}
  if(!rowEl[i]){input.value='';match=order;limit=order.indexOf(i)+1;render();}
  detail(i);place(i);history.replaceState(null,'','#f-'+i);rowEl[i].scrollIntoView();
};
document.addEventListener('click',function(e){
  var a=e.target.closest?e.target.closest('a'):null,m=a&&/^#f-(\\d+)$/.exec(a.getAttribute('href')||'');
  if(!m||!R[+m[1]])return;
  var i=+m[1];e.preventDefault();
  if(a.parentNode.parentNode!==rowEl[i])go(i);
  else if(opened[i]){opened[i].remove();delete opened[i];}
  else{detail(i);place(i);history.replaceState(null,'','#f-'+i);}
});
window.addEventListener('beforeprint',function(){
  if(R.length>d.print)return;
  limit=R.length;render();match.forEach(function(i){detail(i);place(i);});
});
render();
var fromHash=function(){var m=/^#f-(\\d+)$/.exec(location.hash);if(m&&R[+m[1]])go(+m[1]);};
window.addEventListener('hashchange',fromHash);fromHash();
table.setAttribute('data-ready','');
})();
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def page(lib: Library) -> str:
    """The whole HTML document of `lib`."""
    report = lib.report
    files = _files_of(report)
    view = View(list(report.get("roots") or []), {f["path"]: i for i, f in enumerate(files)})
    redundant = _redundant(report.get("duplicates") or [])
    roots = ", ".join(view.roots)
    version = (report.get("tool") or {}).get("version", "")
    clip = clip_section(report, view)
    lineage = lineage_section(lib, view)
    nav = [("overview", "Overview"), ("files-section", "Files"), ("duplicates", "Duplicates")]
    if clip:
        nav.append(("clip", "CLIP position_ids"))
    if lineage:
        nav.append(("lineage", "Lineage"))
    nav_html = "".join(f'<a href="#{a}">{t}</a>' for a, t in nav)
    warnings = "".join(f'<p class="meta">warning: {_e(w)}</p>' for w in lib.warnings)
    texts = Texts()
    table, rows = file_table(report, redundant, view, texts)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="color-scheme" content="light dark"><link rel="icon" href="data:,">'
        f"<title>fastscan library report: {_e(roots)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>Library report</h1><div class="meta">{_e(roots)} · '
        f"scanned {_e(report.get('started', ''))} · fastscan {_e(version)} · {_e(report.get('schema', ''))}"
        f"</div>{warnings}<nav>{nav_html}</nav></header>"
        f"<main>{overview(report)}{table}{duplicates_section(report, view)}"
        f"{clip}{lineage}"
        f"<footer>Made by fastscan {_e(version)} from {len(files)} file(s). "
        "Self-contained: no network.</footer>"
        f"</main>{file_data(report, redundant, view, texts, rows)}"
        f"<script>{SCRIPT}</script></body></html>\n"
    )
