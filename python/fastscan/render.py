"""Human output: progress bar, summary and problem tables, one file in detail (rich)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console
from rich.filesize import decimal as human_bytes
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from fastscan.api import Progress as ScanProgress
from fastscan.model import SEVERITIES, SEVERITY_RANK, FileReport, Report

SEVERITY_STYLE = {"critical": "bold magenta", "error": "bold red", "warning": "yellow", "info": "cyan"}
# Which `wasted_bytes` cause a check's pruning frees.
CHECK_WASTE = {"junk.ema": "ema", "junk.unknown-keys": "junk", "dtype.float64": "float64"}
FILES_SHOWN = 6


@contextmanager
def progress_bar(console: Console) -> Iterator[Callable[[ScanProgress], None]]:
    """A live progress bar (files, bytes, bytes/s, ETA); yields the callback that advances it."""
    bar = Progress(
        TextColumn("[bold]scanning"),
        BarColumn(),
        TextColumn("{task.fields[files]} files"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task("scan", total=None, files="0/?")

    def update(p: ScanProgress) -> None:
        bar.update(
            task, total=max(p.bytes_total, 1), completed=p.bytes_done, files=f"{p.files_done}/{p.files_total}"
        )

    with bar:
        yield update


def _sev(s: str) -> str:
    return f"[{SEVERITY_STYLE.get(s, '')}]{s}[/]"


def summary_table(report: Report) -> Table:
    """Files by kind and arch: count, bytes, problems by severity (unreadable = error), wasted bytes."""
    t = Table(title="Library", box=box.SIMPLE_HEAD, title_justify="left")
    t.add_column("kind")
    t.add_column("arch")
    t.add_column("files", justify="right")
    t.add_column("bytes", justify="right")
    sevs = list(reversed(SEVERITIES))
    for s in sevs:
        t.add_column(f"[{SEVERITY_STYLE[s]}]{s}[/]", justify="right")
    t.add_column("wasted", justify="right")
    groups: dict[tuple[str, str], dict[str, int]] = {}
    for f in report.files:
        g = groups.setdefault((f.kind, f.arch), dict.fromkeys(["files", "bytes", "wasted", *sevs], 0))
        g["files"] += 1
        g["bytes"] += f.size
        g["wasted"] += sum(f.wasted_bytes.values())
        for x in f.findings:
            g[x.severity] = g.get(x.severity, 0) + 1
        g["error"] += f.error is not None

    def row(g: dict[str, int]) -> list[str]:
        counts = [str(g[s]) if g[s] else "" for s in sevs]
        return [
            str(g["files"]),
            human_bytes(g["bytes"]),
            *counts,
            human_bytes(g["wasted"]) if g["wasted"] else "",
        ]

    total = dict.fromkeys(["files", "bytes", "wasted", *sevs], 0)
    for (kind, arch), g in sorted(groups.items()):
        t.add_row(kind, arch, *row(g))
        for k in total:
            total[k] += g[k]
    t.add_section()
    t.add_row("[bold]total", "", *(f"[bold]{c}" for c in row(total)))
    return t


def totals_line(report: Report) -> str:
    """One line: problems by severity, unreadable files, wasted bytes by cause."""
    s = report.summary
    probs = ", ".join(f"{s.findings.get(k, 0)} {_sev(k)}" for k in reversed(SEVERITIES))
    parts = [f"problems: {probs}"]
    if s.errors:
        parts.append(f"[bold red]{s.errors} unreadable[/]")
    wasted = sum(s.wasted_bytes.values())
    if wasted:
        causes = ", ".join(f"{k} {human_bytes(v)}" for k, v in sorted(s.wasted_bytes.items()))
        parts.append(f"wasted: [bold]{human_bytes(wasted)}[/] ({causes})")
    else:
        parts.append("wasted: 0 B")
    return "  |  ".join(parts)


def short_path(path: str, roots: list[str]) -> str:
    """`path` relative to the root it was found under (its name when the root is the file itself)."""
    for root in sorted(roots, key=len, reverse=True):
        if path == root:
            return os.path.basename(path) or path
        prefix = root.rstrip(os.sep) + os.sep
        if path.startswith(prefix):
            return path[len(prefix) :]
    return path


def problems_table(report: Report) -> Table | None:
    """Files grouped by the check that fired (worst first), with the bytes pruning would save."""
    rows: dict[str, dict[str, Any]] = {}
    for f in report.files:
        if f.error is not None:
            r = rows.setdefault(
                f"unreadable ({f.error.kind})", {"severity": "error", "files": [], "saved": 0}
            )
            r["files"].append(f.path)
        for x in f.findings:
            r = rows.setdefault(x.check, {"severity": x.severity, "files": [], "saved": 0})
            if f.path not in r["files"]:
                r["files"].append(f.path)
                r["saved"] += f.wasted_bytes.get(CHECK_WASTE.get(x.check, ""), 0)
    if not rows:
        return None
    t = Table(title="Problems", box=box.SIMPLE_HEAD, title_justify="left")
    t.add_column("severity")
    t.add_column("check", no_wrap=True)
    t.add_column("files", justify="right")
    t.add_column("saves", justify="right", no_wrap=True)
    t.add_column("which files", overflow="fold")
    order = sorted(rows.items(), key=lambda kv: (-SEVERITY_RANK.get(kv[1]["severity"], 0), kv[0]))
    for check, r in order:
        files = r["files"]
        shown = "\n".join(escape(short_path(p, report.roots)) for p in files[:FILES_SHOWN])
        if len(files) > FILES_SHOWN:
            shown += f"\n… and {len(files) - FILES_SHOWN} more"
        saved = human_bytes(r["saved"]) if r["saved"] else ""
        t.add_row(_sev(r["severity"]), check, str(len(files)), saved, shown)
    return t


def print_report(report: Report, console: Console) -> None:
    """The scan's human summary: library table, totals, problems table."""
    console.print(summary_table(report))
    console.print(totals_line(report))
    problems = problems_table(report)
    if problems is None:
        console.print("[green]no problems found[/]")
    else:
        console.print(problems)
    console.print(f"[dim]{report.summary.files} files in {report.elapsed_s:.2f} s[/]")


def _kv_table(title: str) -> Table:
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value", overflow="fold")
    return t


def _dtypes(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {human_bytes(v)}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))


def print_file(f: FileReport, console: Console) -> None:
    """One file in detail: identity, components, hashes, metadata, findings with their details."""
    console.print(f"[bold]{escape(f.path)}[/]")
    head = _kv_table("")
    head.title = None
    for k, v in [
        ("size", f"{human_bytes(f.size)} ({f.size:,} bytes)"),
        ("format", f.format),
        ("kind", f.kind),
        ("arch", f.arch),
        ("tensors", str(f.tensors)),
        ("dtypes", _dtypes(f.dtypes)),
    ]:
        head.add_row(k, escape(v))
    ident = f.extra.get("identification")
    if ident:
        verdict = "confident" if ident["confident"] else f"not confident (below {ident['threshold']:.0%})"
        head.add_row(
            "identification",
            f"{ident['score']:.1%} of {ident['of']} reference keys, {verdict}"
            + (f"; {ident['missing_count']} missing" if ident["missing_count"] else ""),
        )
    if f.error is not None:
        head.add_row("error", f"[bold red]{escape(f.error.kind)}[/]: {escape(f.error.message)}")
    console.print(head)

    if f.components:
        t = Table(title="Components", box=box.SIMPLE_HEAD, title_justify="left")
        for c in ("component", "tensors", "bytes", "dtypes", "blake3 (canonical v1)"):
            t.add_column(c, justify="right" if c in ("tensors", "bytes") else "left")
        for name, c in sorted(f.components.items()):
            t.add_row(name, str(c.tensors), human_bytes(c.bytes), _dtypes(c.dtypes), c.blake3 or "-")
        console.print(t)

    hashes = {k: v for k, v in f.hashes.to_dict().items() if v}
    if hashes:
        t = _kv_table("Hashes")
        for k, v in hashes.items():
            t.add_row(k, str(v))
        console.print(t)

    if f.metadata:
        t = _kv_table("Metadata")
        for k, v in sorted(f.metadata.items()):
            text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            t.add_row(escape(k), escape(text[:500] + ("…" if len(text) > 500 else "")))
        console.print(t)

    if not f.findings:
        console.print("[green]no problems found[/]")
        return
    console.print("[bold]Findings")
    for x in f.findings:
        console.print(f"  {_sev(x.severity)} [bold]{escape(x.check)}[/]: {escape(x.message)}")
        if x.details not in (None, {}, []):
            console.print(escape("\n".join(details_lines(x.details, "      "))), highlight=False)


def details_lines(value: Any, indent: str = "", width: int = 80) -> list[str]:
    """A finding's details as readable lines: short values inline, lists one item per line."""
    compact = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, dict | list) or len(compact) <= width:
        return [indent + compact]
    lines = []
    if isinstance(value, list):
        for item in value:
            text = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)
            lines.append(f"{indent}- {text}")
        return lines
    for k, v in value.items():
        inner = json.dumps(v, ensure_ascii=False)
        if not isinstance(v, dict | list) or len(inner) + len(k) <= width:
            lines.append(f"{indent}{k}: {inner}")
        else:
            lines.append(f"{indent}{k}:")
            lines.extend(details_lines(v, indent + "  ", width))
    return lines


DUPLICATE_TITLES = {
    "identical-files": "identical files",
    "same-weights": "same weights, different packaging",
    "shared-component": "shared component",
}


def print_duplicates(report: Report, console: Console) -> None:
    """Prints the duplicate groups of a report, largest reclaimable first."""
    groups = report.duplicates
    if not groups:
        console.print(f"no duplicates among {report.summary.files} file(s)")
        return
    t = Table(box=box.SIMPLE_HEAD, title="duplicates")
    t.add_column("what")
    t.add_column("component")
    t.add_column("files")
    t.add_column("each", justify="right")
    t.add_column("reclaimable", justify="right")
    for g in groups:
        files = "\n".join(escape(short_path(p, report.roots)) for p in g["files"])
        t.add_row(
            DUPLICATE_TITLES.get(g["type"], g["type"]),
            g["component"] or "",
            files,
            human_bytes(g["bytes"]),
            human_bytes(g["reclaimable"]),
        )
    console.print(t)
    total = sum(g["reclaimable"] for g in groups if g["type"] != "shared-component")
    console.print(f"{len(groups)} group(s); deleting duplicate files would free {human_bytes(total)}")
