"""The library report: one self-contained HTML page (inline CSS, inline SVG charts, a small script).

`gather` runs the scan (whole-file hashes and lineage fingerprints, served from the scan cache) and asks
the core for lineage and similarities; `load` reads a `fastscan.report/1` JSON document made elsewhere.
`page` only presents: every number on the page is one the core (or the duplicate grouping) put in the
report, the lineage document or the similarity documents. Nothing on the page fetches anything: no
network, no fonts, no libraries (a Content-Security-Policy forbids it); the overview, tables and details
work without JavaScript, which adds sorting, filtering and opening a file's details from its row.
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
LAZY_DETAILS_CHARS = 600  # the same, when details are stored as data (over INLINE_DETAILS_MAX files)
CLIP_CHARTS = 40  # CLIP offset charts drawn; the other files with the finding are listed
# Above this many files, file details are stored as data and built when opened (a page of 10,000 files
# loads fast); up to it they are plain HTML, readable without JavaScript.
INLINE_DETAILS_MAX = 1000
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


_ROOTS: list[str] = []


def short(path: str) -> str:
    """`path` as shown: relative to the scan root it was found under (the full path is its tooltip)."""
    return short_path(path, _ROOTS)


def _link(path: str, ids: Mapping[str, int]) -> str:
    """A link to a file's details, showing its short path (the full path on hover)."""
    return f'<a href="#f-{ids.get(path, "")}" title="{_e(path)}">{_e(short(path))}</a>'


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


def file_table(report: Mapping[str, Any], redundant: Mapping[str, tuple[int, str]]) -> str:
    """Every file, one row each; the path links to the file's details."""
    rows = []
    rank = {s: i + 1 for i, s in enumerate(SEVERITIES)}
    for i, f in enumerate(_files_of(report)):
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
        rows.append(
            f'<tr class="w-{worst or "none"}"><td class="p">'
            f'<a href="#f-{i}" title="{_e(path)}">{_e(short(path))}</a></td>'
            f"<td>{_e(f.get('kind', ''))}</td><td>{_e(f.get('arch', ''))}</td>"
            f'<td class="n" data-v="{f.get("size", 0)}">{size(f.get("size", 0))}</td><td>{_e(dtypes)}</td>'
            f'<td data-v="{rank.get(worst, 0) if worst else 0}">{badges} <small>{_e(checks)}</small></td>'
            f'<td class="n" data-v="{waste}">{reclaim}</td></tr>'
        )
    head = "".join(
        f'<th data-type="{t}" scope="col">{name}</th>'
        for name, t in (
            ("path", "text"),
            ("kind", "text"),
            ("arch", "text"),
            ("size", "num"),
            ("dtypes", "text"),
            ("findings", "num"),
            ("reclaimable", "num"),
        )
    )
    n = len(rows)
    return (
        '<section id="files-section"><h2>Files</h2>'
        '<p class="tools"><label>Filter <input id="filter" type="search" '
        'placeholder="path, kind, arch, check…" '
        f'autocomplete="off"></label> <span id="shown">{n}</span> of {n} files shown. '
        '<span class="js-only">Click a column heading to sort.</span></p>'
        f'<div class="scroll"><table id="files">{COLS}<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
        "</tbody></table></div></section>"
    )


def _table(rows: Iterable[tuple[str, str]], klass: str = "kv") -> str:
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="{klass}">{body}</table>' if body else ""


def _finding(f: Mapping[str, Any], path: str, limit: int) -> str:
    r = remedy(f["check"], f["severity"])
    todo = how(r, path)
    todo_html = f"<code>{_e(todo)}</code>" if r in (Remedy.fix, Remedy.convert) else _e(todo)
    if r is Remedy.fix and f["check"] == "clip.position-ids":
        todo_html += ' · <a href="#clip">offset chart</a>'
    details = json.dumps(f.get("details"), indent=1, ensure_ascii=False)
    if len(details) > limit:
        details = details[:limit] + f"\n… ({len(details)} characters in all; see the JSON report)"
    return (
        f"<li>{_sev_badge(f['severity'])} <b>{_e(f['check'])}</b>: {_e(f.get('message', ''))}"
        f'<div class="todo">what to do: {todo_html}</div>'
        f"<details><summary>details</summary><pre>{_e(details)}</pre></details></li>"
    )


def _provenance(p: Mapping[str, Any]) -> str:
    rows = [("written by", _e(", ".join(p.get("tools") or [])))]
    merge = p.get("merge")
    if merge:
        mult = ", ".join(f"{k} {v}" for k, v in (merge.get("multipliers") or {}).items())
        rows.append(
            (
                "merge",
                _e(" ".join(x for x in (merge.get("method"), merge.get("calcmode")) if x))
                + (f" ({_e(mult)})" if mult else ""),
            )
        )
    for q in p.get("parents") or []:
        ids = " ".join(x for x in (q.get("sha256"), q.get("legacy_hash")) if x)
        rows.append((_e(q.get("role", "parent")), _e(f"{q.get('name') or ''} {ids}".strip())))
    if p.get("base_model"):
        rows.append(("base model", _e(p["base_model"])))
    for k, v in (p.get("training") or {}).items():
        if v is not None:
            rows.append((_e(k), _e(v)))
    return _table(rows)


def file_details(
    report: Mapping[str, Any], redundant: Mapping[str, tuple[int, str]], ids: Mapping[str, int]
) -> str:
    """One closed `<details>` per file: facts, hashes, components (and where else they occur), findings,
    metadata, provenance."""
    lazy = len(_files_of(report)) > INLINE_DETAILS_MAX
    bodies: list[str] = []
    where: dict[str, list[str]] = defaultdict(list)
    for f in _files_of(report):
        for name, c in (f.get("components") or {}).items():
            if name not in NOT_WEIGHTS and c.get("blake3"):
                where[c["blake3"]].append(f["path"])
    out = []
    for i, f in enumerate(_files_of(report)):
        path = f["path"]
        worst = _worst(f)
        facts = [
            ("format", _e(f.get("format", ""))),
            ("kind / arch", _e(f"{f.get('kind', '')} / {f.get('arch', '')}")),
            ("size", f"{size(f.get('size', 0))} ({f.get('size', 0)} bytes)"),
            ("tensors", _e(f.get("tensors", 0))),
            ("dtypes", _e(", ".join(f"{k} {size(v)}" for k, v in (f.get("dtypes") or {}).items()))),
        ]
        ident = f.get("identification")
        if ident:
            facts.append(
                ("identification", _e(f"score {ident['score']} ({ident['matched']} of {ident['of']} keys)"))
            )
        copy = redundant.get(path)
        if copy:
            facts.append(
                ("copy", f'a redundant copy of <a href="#f-{ids.get(copy[1], "")}">{_e(copy[1])}</a>')
            )
        if f.get("error"):
            facts.append(("unreadable", _e(f"{f['error'].get('kind')}: {f['error'].get('message')}")))
        hashes = [(_e(k), f"<code>{_e(v)}</code>") for k, v in (f.get("hashes") or {}).items() if v]
        comps = []
        for name, c in (f.get("components") or {}).items():
            h = c.get("blake3")
            others = [p for p in where.get(h, []) if p != path] if h else []
            also = ", ".join(f'<a href="#f-{ids[p]}">{_e(_base(p))}</a>' for p in others[:ALSO_IN_SHOWN])
            if len(others) > ALSO_IN_SHOWN:
                also += f" and {len(others) - ALSO_IN_SHOWN} more"
            comps.append(
                f'<tr><td>{_e(name)}</td><td class="n">{c.get("tensors", 0)}</td>'
                f'<td class="n">{size(c.get("bytes", 0))}</td><td>{_e(", ".join(c.get("dtypes") or {}))}</td>'
                f"<td><code>{_e(h or '')}</code></td><td>{also}</td></tr>"
            )
        comp_html = (
            '<table class="grid"><tr><th>component</th><th>tensors</th><th>bytes</th><th>dtypes</th>'
            f"<th>BLAKE3 (canonical)</th><th>also in</th></tr>{''.join(comps)}</table>"
            if comps
            else ""
        )
        findings = "".join(
            _finding(x, path, LAZY_DETAILS_CHARS if lazy else DETAILS_CHARS) for x in f.get("findings") or []
        )
        meta = [
            (_e(k), f'<div class="mv">{_e(v if isinstance(v, str) else json.dumps(v))}</div>')
            for k, v in (f.get("metadata") or {}).items()
        ]
        parts = [
            f"<tr><td>{_e(p.get('path'))}</td><td>{_e(p.get('component'))}</td><td>{_e(p.get('role'))}</td>"
            f'<td class="n">{size(p.get("size", 0))}</td></tr>'
            for p in f.get("parts") or []
        ]
        body = [_table(facts)]
        if hashes:
            body.append("<h4>Hashes</h4>" + _table(hashes))
        if comp_html:
            body.append("<h4>Components</h4>" + comp_html)
        if findings:
            body.append(f'<h4>Findings</h4><ul class="findings">{findings}</ul>')
        if parts:
            body.append(
                '<h4>Parts</h4><table class="grid"><tr><th>file</th><th>component</th><th>role</th>'
                f"<th>size</th></tr>{''.join(parts)}</table>"
            )
        if meta:
            body.append("<h4>Metadata</h4>" + _table(meta))
        if f.get("provenance"):
            body.append("<h4>Provenance</h4>" + _provenance(f["provenance"]))
        badge = _sev_badge(worst) if worst else ""
        summary = f'{badge} <span title="{_e(path)}">{_e(short(path))}</span>'
        if lazy:
            bodies.append([summary, "".join(body)])
        else:
            out.append(
                f'<details class="file" id="f-{i}"><summary>{summary}</summary>'
                f'<div class="body">{"".join(body)}</div></details>'
            )
    note = ""
    if lazy:
        # JSON inside <script>: `</` written `<\/` and `<!--` `\u003c!--`, so nothing ends or bends it
        data = json.dumps(bodies, ensure_ascii=False).replace("</", "<\\/").replace("<!--", "\\u003c!--")
        out.append(f'<div id="lazy"></div><script type="application/json" id="bodies">{data}</script>')
        note = (
            f"<p>{len(bodies)} files: a file's details are built when its row is opened, "
            "which needs JavaScript.</p>"
        )
    return f'<section id="details"><h2>File details</h2>{note}{"".join(out)}</section>'


def duplicates_section(report: Mapping[str, Any], ids: Mapping[str, int]) -> str:
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
            lis.append(f"<li>{_link(p, ids)}{mark}</li>")
        items.append(f'<div class="group {_e(g["type"])}"><p>{head}</p><ul>{"".join(lis)}</ul></div>')
    total = reclaimable(groups)
    return (
        f'<section id="duplicates"><h2>Duplicates</h2><p>{len(groups)} group(s); deleting all but the kept '
        f"copies frees <b>{size(total)}</b>. See them with <code>fastscan dedupe</code>.</p>"
        f"{''.join(items)}</section>"
    )


def clip_section(report: Mapping[str, Any], ids: Mapping[str, int]) -> str:
    """A chart of the offset per token position for every CLIP `position_ids` finding with values."""
    figs = []
    more: list[str] = []
    for f in _files_of(report):
        for x in f.get("findings") or []:
            if x["check"] != "clip.position-ids":
                continue
            d = x.get("details") or {}
            if len(figs) >= CLIP_CHARTS and d.get("offset"):
                more.append(f'<a href="#f-{ids[f["path"]]}">{_e(_base(f["path"]))}</a>')
                continue
            chart = offsets_chart(d)
            if chart is None:
                continue
            broken = len(d.get("broken") or [])
            cmd = how(remedy(x["check"], x["severity"]), f["path"])
            figs.append(
                f'<figure class="clip">{chart}<figcaption>{_sev_badge(x["severity"])} '
                f'<a href="#f-{ids[f["path"]]}" title="{_e(f["path"])}">{_e(short(f["path"]))}</a>: '
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


def lineage_section(lib: Library, ids: Mapping[str, int]) -> str:
    """Families as graphs, per-block weights of block merges, recipes, similarity heatmaps."""
    doc = lib.lineage
    if doc is None:
        return ""
    if not doc["models"]:
        return '<section id="lineage"><h2>Lineage</h2><p>No model files with weights.</p></section>'
    out = ['<section id="lineage"><h2>Lineage</h2>']
    for k, fam in enumerate(doc["families"], 1):
        out.append(f"<h3>Family {k} ({len(fam)} models)</h3>" + family_graph(doc, fam, ids))
    alone = [m["path"] for m in doc["models"] if not any(m["path"] in fam for fam in doc["families"])]
    if alone:
        out.append(
            "<p>Related to no other model: "
            + ", ".join(f'<a href="#f-{ids.get(p, "")}">{_e(_base(p))}</a>' for p in alone)
            + "</p>"
        )
    merges = [m for m in doc["models"] if m.get("merge")]
    if merges:
        rows = "".join(
            f"<tr><td>{_link(m['path'], ids)}</td><td>{_e(recipe_text(m['merge']))}</td></tr>" for m in merges
        )
        out.append(
            '<h3>Merges</h3><table class="grid"><tr><th>model</th><th>recipe (from the weights)</th></tr>'
            f"{rows}</table>"
        )
    for m in merges:
        if m["merge"].get("blocks"):
            out.append(
                f'<figure class="chart wide"><figcaption>{_e(short(m["path"]))}: weights per block'
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
.scroll{overflow-x:auto}table{border-collapse:collapse}#files{width:100%}
#files th,#files td,.grid th,.grid td{padding:3px 8px;border-bottom:1px solid var(--line);text-align:left;
vertical-align:top}#files th{position:sticky;top:0;background:var(--bg);cursor:pointer;user-select:none}
#files th[aria-sort=ascending]::after{content:" ▲"}#files th[aria-sort=descending]::after{content:" ▼"}
#files{table-layout:fixed}#files td{overflow-wrap:anywhere}
#files td.p{word-break:break-all}td.n{text-align:right;white-space:nowrap}
#files small{color:var(--muted)}.kv th{text-align:left;padding:2px 12px 2px 0;color:var(--muted);
font-weight:500;vertical-align:top;white-space:nowrap}.kv td{padding:2px 0;word-break:break-all}
.mv{max-height:8em;overflow:auto}details.file{border:1px solid var(--line);border-radius:5px;margin:4px 0;
background:var(--card);content-visibility:auto;contain-intrinsic-size:auto 34px}
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
@media print{nav,.tools,.js-only{display:none}body{font-size:11px;background:#fff;color:#000}
#files th{position:static}details.file{content-visibility:visible;break-inside:avoid}
.chart{break-inside:avoid}
a{color:inherit;text-decoration:none}pre{max-height:none}.mv{max-height:none}}
"""

SCRIPT = """
(function(){
var table=document.getElementById('files');
if(table){
  var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows),
      input=document.getElementById('filter'),
      shown=document.getElementById('shown'),timer=null,texts=null;
  var apply=function(){
    var terms=input.value.toLowerCase().split(/\\s+/).filter(Boolean),n=0;
    if(!texts){texts=new Map();rows.forEach(function(r){texts.set(r,r.textContent.toLowerCase());});}
    rows.forEach(function(r){var t=texts.get(r),ok=terms.every(function(q){return t.indexOf(q)>=0;});
      r.hidden=!ok;if(ok)n++;});
    shown.textContent=n;table.setAttribute('data-filtered',input.value);
  };
  input.addEventListener('input',function(){clearTimeout(timer);timer=setTimeout(apply,120);});
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,col){
    th.addEventListener('click',function(){
      var dir=th.getAttribute('aria-sort')==='ascending'?-1:1,num=th.dataset.type==='num';
      Array.prototype.forEach.call(table.tHead.rows[0].cells,function(h){h.removeAttribute('aria-sort');});
      th.setAttribute('aria-sort',dir>0?'ascending':'descending');
      var key=function(r){var c=r.cells[col];return num?Number(c.dataset.v||0):c.textContent.toLowerCase();};
      var keyed=rows.map(function(r){return [key(r),r];});
      keyed.sort(function(a,b){return a[0]<b[0]?-dir:a[0]>b[0]?dir:0;});
      var frag=document.createDocumentFragment();
      keyed.forEach(function(k){frag.appendChild(k[1]);});
      body.appendChild(frag);rows=keyed.map(function(k){return k[1];});
    });
  });
}
var bodies=null,data=function(){
  if(!bodies){var el=document.getElementById('bodies');bodies=el?JSON.parse(el.textContent):[];}
  return bodies;
};
var fill=function(d){
  var b=data()[+d.id.slice(2)];
  if(d.querySelector('.body')||!b)return;
  var div=document.createElement('div');div.className='body';div.innerHTML=b[1];d.appendChild(div);
};
var make=function(id){
  var m=/^f-(\\d+)$/.exec(id),box=document.getElementById('lazy'),b=m&&data()[+m[1]];
  if(!b||!box)return null;
  var d=document.createElement('details');d.className='file';d.id=id;
  d.innerHTML='<summary>'+b[0]+'</summary>';box.appendChild(d);return d;
};
document.addEventListener('toggle',function(e){
  var d=e.target;if(d.open&&d.classList&&d.classList.contains('file'))fill(d);
},true);
var openTarget=function(){
  var id=decodeURIComponent(location.hash.slice(1)),el=id&&(document.getElementById(id)||make(id));
  if(el&&el.tagName==='DETAILS'){fill(el);el.open=true;el.scrollIntoView();}
};
window.addEventListener('hashchange',openTarget);openTarget();
window.addEventListener('beforeprint',function(){
  document.querySelectorAll('details.file').forEach(function(d){fill(d);d.open=true;});
});
})();
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def page(lib: Library) -> str:
    """The whole HTML document of `lib`."""
    report = lib.report
    _ROOTS[:] = list(report.get("roots") or [])
    ids = {f["path"]: i for i, f in enumerate(_files_of(report))}
    redundant = _redundant(report.get("duplicates") or [])
    roots = ", ".join(report.get("roots") or [])
    version = (report.get("tool") or {}).get("version", "")
    clip = clip_section(report, ids)
    lineage = lineage_section(lib, ids)
    nav = [("overview", "Overview"), ("files-section", "Files"), ("duplicates", "Duplicates")]
    if clip:
        nav.append(("clip", "CLIP position_ids"))
    if lineage:
        nav.append(("lineage", "Lineage"))
    nav.append(("details", "File details"))
    nav_html = "".join(f'<a href="#{a}">{t}</a>' for a, t in nav)
    warnings = "".join(f'<p class="meta">warning: {_e(w)}</p>' for w in lib.warnings)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="color-scheme" content="light dark"><link rel="icon" href="data:,">'
        f"<title>fastscan library report: {_e(roots)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>Library report</h1><div class="meta">{_e(roots)} · '
        f"scanned {_e(report.get('started', ''))} · fastscan {_e(version)} · {_e(report.get('schema', ''))}"
        f"</div>{warnings}<nav>{nav_html}</nav></header>"
        f"<main>{overview(report)}{file_table(report, redundant)}{duplicates_section(report, ids)}"
        f"{clip}{lineage}"
        f"{file_details(report, redundant, ids)}"
        f"<footer>Made by fastscan {_e(version)} from {len(ids)} file(s). "
        "Self-contained: no network.</footer>"
        f"</main><script>{SCRIPT}</script></body></html>\n"
    )
