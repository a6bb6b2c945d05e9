"""Human output: progress bars, the library and problem tables, file listings, one file in detail (rich).

Laid out for 80 columns first: sizes never wrap (SI units, as the core's messages), severities are
abbreviated with a legend printed once, long paths are elided in the middle keeping the file name whole.
A wider terminal gets longer paths; a pipe gets plain text that never wraps (`--format tsv` for programs).
"""

from __future__ import annotations

import json
import os
import re
import sys
from bisect import insort
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

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

from fastscan.advice import UNREADABLE, Remedy, how, remedy
from fastscan.api import Progress as ScanProgress
from fastscan.model import SEVERITIES, SEVERITY_RANK, FileReport, Report
from fastscan.terminal import markup, visible

SEVERITY_STYLE = {"critical": "bold magenta", "error": "bold red", "warning": "yellow", "info": "cyan"}
SEVERITY_ABBR = {"critical": "crit", "error": "err", "warning": "warn", "info": "info"}
WORST_FIRST = tuple(reversed(SEVERITIES))
# Which `wasted_bytes` cause a check's pruning frees.
CHECK_WASTE = {"junk.ema": "ema", "junk.unknown-keys": "junk", "dtype.float64": "float64"}
FILES_SHOWN = 6
PIPE_WIDTH = 4096  # on a pipe nothing is elided or wrapped
SIZE_WIDTH = len("999.9 MB")


class _StdoutConsole(Console):
    """A console that lets a closed pipe reach the command (rich would exit 1 on its own)."""

    def on_broken_pipe(self) -> None:
        """Raises BrokenPipeError: the command decides what a closed pipe means (exit 2)."""
        raise BrokenPipeError


def stdout_console() -> Console:
    """The console for stdout: the terminal's width, or (on a pipe) plain text that never wraps."""
    if sys.stdout.isatty():
        return _StdoutConsole()
    return _StdoutConsole(width=PIPE_WIDTH, no_color=True, highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    """The console for progress bars (stderr)."""
    return Console(stderr=True)


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


@contextmanager
def bytes_bar(console: Console, label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A transient bar for one long job over `total` bytes; yields the callback taking bytes done."""
    bar = Progress(
        TextColumn(f"[bold]{markup(label)}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task(label, total=max(total, 1))
    with bar:
        yield lambda done: bar.update(task, completed=done)


def _sev(s: str) -> str:
    return f"[{SEVERITY_STYLE.get(s, '')}]{SEVERITY_ABBR.get(s, s)}[/]"


def size(n: int) -> str:
    """Bytes in SI units (`6.9 GB`), the one convention of the CLI and the core's messages."""
    return human_bytes(n)


_SIZE_SPACE = re.compile(r"(\d) (bytes?|kB|MB|GB|TB)\b")


def keep_sizes_whole(text: str) -> str:
    """`text` with a no-break space inside every size (`6.9 GB`), so wrapping never splits one."""
    return _SIZE_SPACE.sub("\\1\u00a0\\2", text)


def print_wrapped(console: Console, prefix: str, prefix_len: int, text: str, indent: int = 6) -> None:
    """Prints markup `prefix` (`prefix_len` visible characters) then `text`, wrapped at the console width
    between words, never inside a size; continuation lines indented by `indent`."""
    console.print(wrapped(console.width, prefix, prefix_len, text, indent), highlight=False, soft_wrap=True)


def remedy_line(width: int, r: Remedy, path: str, indent: int) -> str:
    """The markup of a remedy's line, `→ action`, `indent` spaces in: a command stays one line (the
    terminal may fold it; it copies whole), an action said in words wraps under its first word."""
    prefix = " " * indent + "[green]→[/] "
    if r in (Remedy.fix, Remedy.convert):
        return prefix + markup(how(r, path))
    return wrapped(width, prefix, indent + 2, how(r, path), indent + 2)


def wrapped(width: int, prefix: str, prefix_len: int, text: str, indent: int = 6) -> str:
    """The markup [`print_wrapped`] prints for a console `width` wide."""
    import textwrap

    width = max(width, prefix_len + 20)
    lines = textwrap.wrap(
        keep_sizes_whole(visible(text)),
        width=width,
        initial_indent=" " * prefix_len,
        subsequent_indent=" " * indent,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [" " * prefix_len]
    lines = [escape(line.replace("\u00a0", " ")) for line in lines]
    lines[0] = prefix + lines[0][prefix_len:]
    return "\n".join(lines)


def elide(path: str, width: int) -> str:
    """`path` shortened to `width` by a `…` in the middle of its folders; the file name stays whole."""
    if len(path) <= width:
        return path
    head, name = os.path.split(path)
    room = width - len(name) - 2  # "…/"
    if room < 4:
        return name if len(name) <= width else "…" + name[-(width - 1) :]
    left = room // 2
    right = room - left
    return f"{head[:left]}…{head[len(head) - right :] if right else ''}/{name}"


def short_path(path: str, roots: list[str]) -> str:
    """`path` relative to the root it was found under (its name when the root is the file itself)."""
    for root in sorted(roots, key=len, reverse=True):
        if path == root:
            return os.path.basename(path) or path
        prefix = root.rstrip(os.sep) + os.sep
        if path.startswith(prefix):
            return path[len(prefix) :]
    return path


def shown_path(path: str, roots: list[str], width: int) -> str:
    """`path` as a table row prints it: relative to its root, controls escaped, elided to `width`
    columns, and escaped for rich's markup."""
    return escape(elide(visible(short_path(path, roots)), width))


def _file_severities(f: FileReport) -> set[str]:
    """Severities a file has (an unreadable file counts as an error)."""
    sevs = {x.severity for x in f.findings}
    if f.error is not None:
        sevs.add("error")
    return sevs


class Digest:
    """What the scan's tables print, gathered one report at a time as the scan streams them: counts per
    kind/arch, the problem rows (each with its first `shown` paths, None: all) and, when `keep_affected`,
    the path, error and findings of each file that has any (`--files`, `--format tsv`). No report is
    kept whole, so the table mode's memory does not grow with the library's healthy files."""

    def __init__(self, *, shown: int | None = FILES_SHOWN, keep_affected: bool = False) -> None:
        self.shown = shown
        self.keep_affected = keep_affected
        self.groups: dict[tuple[str, str], dict[str, int]] = {}
        self.file_counts = dict.fromkeys(WORST_FIRST, 0)
        self.unreadable = 0
        # (severity, check) -> [files, bytes pruning saves, the first paths in path order]
        self.rows: dict[tuple[str, str], list[Any]] = {}
        self.affected: list[FileReport] = []

    @classmethod
    def of(cls, files: Iterable[FileReport], **kw: Any) -> Digest:
        """The digest of reports already at hand."""
        d = cls(**kw)
        for f in files:
            d.add(f)
        return d

    def add(self, f: FileReport) -> None:
        """Counts one more file report."""
        sevs = _file_severities(f)
        g = self.groups.get((f.kind, f.arch))
        if g is None:
            g = self.groups[(f.kind, f.arch)] = dict.fromkeys(_GROUP_KEYS, 0)
        g["files"] += 1
        g["bytes"] += f.size
        g["wasted"] += sum(f.wasted_bytes.values())
        for s in sevs:
            g[s] += 1
            self.file_counts[s] += 1
        self.unreadable += f.error is not None
        rows: dict[tuple[str, str], int] = {}
        if f.error is not None:
            rows[("error", f"unreadable ({f.error.kind})")] = 0
        for x in f.findings:
            rows.setdefault((x.severity, x.check), f.wasted_bytes.get(CHECK_WASTE.get(x.check, ""), 0))
        for key, saved in rows.items():
            r = self.rows.setdefault(key, [0, 0, []])
            r[0] += 1
            r[1] += saved
            insort(r[2], f.path)
            if self.shown is not None and len(r[2]) > self.shown:
                r[2].pop()
        if self.keep_affected and rows:
            self.affected.append(FileReport(path=f.path, error=f.error, findings=f.findings))

    def problem_rows(self) -> list[tuple[str, str, int, int, list[str]]]:
        """(severity, check, files, bytes pruning saves, first paths) per check and severity that fired,
        worst first (a check whose files differ in severity, such as `clip.position-ids`, gets a row per
        severity: an info finding is never listed under an error)."""
        out = [(sev, check, n, saved, paths) for (sev, check), (n, saved, paths) in self.rows.items()]
        out.sort(key=lambda r: (-SEVERITY_RANK.get(r[0], 0), r[1]))
        return out


_GROUP_KEYS = ("files", "bytes", "wasted", *WORST_FIRST)


def _digest(report: Report, digest: Digest | None, **kw: Any) -> Digest:
    return digest if digest is not None else Digest.of(report.files, **kw)


def summary_table(report: Report, digest: Digest | None = None) -> Table:
    """Files by kind and arch: count, size, files with a problem of each severity, wasted bytes."""
    t = Table(title="Library", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    t.add_column("kind", no_wrap=True)
    t.add_column("arch", no_wrap=True)
    t.add_column("files", justify="right", no_wrap=True)
    t.add_column("size", justify="right", no_wrap=True, min_width=SIZE_WIDTH)
    for s in WORST_FIRST:
        t.add_column(f"[{SEVERITY_STYLE[s]}]{SEVERITY_ABBR[s]}[/]", justify="right", no_wrap=True)
    t.add_column("wasted", justify="right", no_wrap=True, min_width=SIZE_WIDTH)
    groups = _digest(report, digest).groups

    def row(g: dict[str, int]) -> list[str]:
        counts = [str(g[s]) if g[s] else "" for s in WORST_FIRST]
        return [str(g["files"]), size(g["bytes"]), *counts, size(g["wasted"]) if g["wasted"] else ""]

    total = dict.fromkeys(_GROUP_KEYS, 0)
    for (kind, arch), g in sorted(groups.items()):
        t.add_row(markup(kind), markup(arch), *row(g))
        for k in total:
            total[k] += g[k]
    t.add_section()
    t.add_row("[bold]total", "", *(f"[bold]{c}" for c in row(total)))
    return t


LEGEND = "crit/err/warn/info: files with a finding of that severity (unreadable ones count as err)"


def totals_line(report: Report, digest: Digest | None = None) -> str:
    """Two lines, counting files as the tables do: files with problems and unreadable; wasted bytes."""
    d = _digest(report, digest)
    counts, unreadable = d.file_counts, d.unreadable
    probs = ", ".join(f"{counts[s]} {_sev(s)}" for s in WORST_FIRST)
    first = f"files with problems: {probs}"
    if unreadable:
        first += f"; [bold red]{unreadable} unreadable[/] (in err)"
    wasted = sum(report.summary.wasted_bytes.values())
    if wasted:
        causes = ", ".join(f"{k} {size(v)}" for k, v in sorted(report.summary.wasted_bytes.items()))
        second = f"wasted: [bold]{size(wasted)}[/] ({causes})"
    else:
        second = "wasted: 0 bytes"
    links = report.summary.skipped_links
    if links:
        plural = "s" if links != 1 else ""
        second += f"\n{links} symlink{plural} skipped (not followed: --follow-links scans them)"
    return f"{first}\n{second}"


def print_problems(
    report: Report, console: Console, *, all_files: bool = False, digest: Digest | None = None
) -> bool:
    """Files grouped by the check that fired (worst first), each file on its own line; False when none."""
    d = digest if digest is not None and not all_files else Digest.of(report.files, shown=None)
    rows = d.problem_rows()
    if not rows:
        return False
    width = console.width
    check_w = max(len("check"), *(len(r[1]) for r in rows))
    files_w = max(len("files"), *(len(str(r[2])) for r in rows))
    console.print("\n[italic]Problems[/]", highlight=False)
    head = f"{'sev':<4}  {'check':<{check_w}}  {'files':>{files_w}}  {'saves':>{SIZE_WIDTH}}"
    console.print(f"[bold]{head}[/]", highlight=False)
    indent = "      "
    for sev, check, n, saved, files in rows:
        pad = " " * (4 - len(SEVERITY_ABBR.get(sev, sev)))
        saves = size(saved) if saved else ""
        console.print(
            f"{_sev(sev)}{pad}  {markup(check):<{check_w}}  {n:>{files_w}}  {saves:>{SIZE_WIDTH}}",
            highlight=False,
        )
        shown = files if all_files else files[:FILES_SHOWN]
        for p in shown:
            console.print(indent + shown_path(p, report.roots, width - len(indent)), highlight=False)
        if n > len(shown):
            console.print(f"{indent}… and {n - len(shown)} more (--files lists them all)", highlight=False)
    return True


def reclaimable(groups: list[dict]) -> int:
    """Bytes deleting redundant copies would free (shared components are not reclaimable that way)."""
    return sum(g.get("reclaimable", 0) for g in groups if g["type"] != "shared-component")


def duplicates_line(report: Report) -> str | None:
    """`duplicates: N groups, X reclaimable; see them: fastscan dedupe ROOTS`, or None when there are none."""
    groups = [g for g in report.duplicates if g["type"] != "shared-component"]
    if not groups:
        return None
    roots = " ".join(_quote(r) for r in report.roots)
    return (
        f"duplicates: {len(groups)} group(s) of redundant copies, {size(reclaimable(groups))} reclaimable; "
        f"see them with: fastscan dedupe {roots}"
    )


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


FILES_PER_PRINT = 256


def print_files(report: Report, console: Console, digest: Digest | None = None) -> None:
    """Every affected file, worst first: its findings and what to do about it."""
    affected = list(_digest(report, digest, keep_affected=True).affected)
    affected.sort(key=lambda f: (-SEVERITY_RANK.get(f.worst or "info", 0), f.path))
    if not affected:
        return
    console.print(f"\n[italic]Affected files[/] ({len(affected)})", highlight=False)
    # Files are printed FILES_PER_PRINT at a time: one console.print (markup parse, render, write) per
    # file made `--files` on 100,000 files take minutes.
    width = console.width
    for i in range(0, len(affected), FILES_PER_PRINT):
        block: list[str] = []
        for f in affected[i : i + FILES_PER_PRINT]:
            block.append(f"[bold]{markup(f.path)}[/]")
            remedies: list[Remedy] = []
            if f.error is not None:
                prefix = f"  {_sev('error')} unreadable ({markup(f.error.kind)}): "
                shown = len(f"  err unreadable ({f.error.kind}): ")
                block.append(wrapped(width, prefix, shown, f.error.message))
                remedies.append(UNREADABLE)
            for x in sorted(f.findings, key=lambda x: -SEVERITY_RANK.get(x.severity, 0)):
                sev = SEVERITY_ABBR.get(x.severity, x.severity)
                prefix = f"  {_sev(x.severity)} {markup(x.check)}: "
                block.append(wrapped(width, prefix, len(f"  {sev} {x.check}: "), x.message))
                remedies.append(remedy(x.check, x.severity))
            for r in dict.fromkeys(remedies):
                if r is not Remedy.review:
                    block.append(remedy_line(width, r, f.path, 2))
        # lines of findings are wrapped already (never inside a size); a long path or command folds
        console.print("\n".join(block), highlight=False, overflow="fold", emoji=False)


def print_report(
    report: Report, console: Console, *, files: bool = False, digest: Digest | None = None
) -> None:
    """The scan's human summary: library table, legend, totals, problems, duplicates line, file listing.

    Read from `digest` when given (a scan that kept no file report; it must keep the affected files for
    `files`), else from `report.files`."""
    digest = _digest(report, digest, keep_affected=files)
    console.print(summary_table(report, digest))
    console.print(f"[dim]{LEGEND}[/]", highlight=False)
    console.print(totals_line(report, digest), highlight=False)
    if not print_problems(report, console, all_files=False, digest=digest):
        console.print("[green]no problems found[/]")
    dup = duplicates_line(report)
    if dup:
        console.print(markup(dup), highlight=False)
    if files:
        print_files(report, console, digest)
    console.print(f"[dim]{report.summary.files} files in {report.elapsed_s:.2f} s[/]", highlight=False)


def _tsv_field(s: str) -> str:
    """A TSV field: tabs, line breaks and other control characters shown as escapes (`visible`)."""
    return visible(s)


def write_tsv(report: Report, out: IO[str], digest: Digest | None = None) -> None:
    """One tab-separated line per finding (and unreadable file): path, severity, check, action, message."""
    out.write("path\tseverity\tcheck\taction\tmessage\n")
    for f in sorted(_digest(report, digest, keep_affected=True).affected, key=lambda f: f.path):
        if f.error is not None:
            out.write(
                "\t".join(
                    map(
                        _tsv_field,
                        [f.path, "error", f"unreadable.{f.error.kind}", UNREADABLE.value, f.error.message],
                    )
                )
                + "\n"
            )
        for x in f.findings:
            line = [f.path, x.severity, x.check, remedy(x.check, x.severity).value, x.message]
            out.write("\t".join(map(_tsv_field, line)) + "\n")


def _kv_table(title: str | None) -> Table:
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", show_header=False)
    t.add_column("key", style="bold", no_wrap=True)
    t.add_column("value", overflow="fold")
    return t


def _dtypes(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {size(v)}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))


def natural_key(s: str) -> list[Any]:
    """Sort key that orders numbers by value: `unet:2:rank` before `unet:10:rank`."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", s)]


METADATA_ROWS = 24  # keys shown before the rest are summarised
METADATA_VALUE = 160  # characters of a value shown before it is summarised


def metadata_rows(meta: dict[str, Any], *, full: bool = False) -> list[tuple[str, str]]:
    """Metadata as (key, value) rows in natural order; long values and long key lists summarised."""
    rows = []
    for k in sorted(meta, key=natural_key):
        v = meta[k]
        text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        if not full and len(text) > METADATA_VALUE:
            text = f"{text[: METADATA_VALUE - 40]}… ({len(text):,} characters)"
        rows.append((k, text))
    if full or len(rows) <= METADATA_ROWS:
        return rows
    # Many keys: show the first ones, then count the rest by their prefix (`unet:`, `ss_`).
    shown, rest = rows[: METADATA_ROWS - 1], rows[METADATA_ROWS - 1 :]
    prefixes: dict[str, int] = {}
    for k, _ in rest:
        m = re.match(r"[^:._]*[:._]", k)
        p = m.group(0) + "…" if m else k
        prefixes[p] = prefixes.get(p, 0) + 1
    summary = ", ".join(f"{p} {n}" for p, n in sorted(prefixes.items(), key=lambda kv: (-kv[1], kv[0]))[:6])
    shown.append((f"… {len(rest)} more", f"{summary} (--all-metadata prints them)"))
    return shown


def print_file(f: FileReport, console: Console, *, all_metadata: bool = False) -> None:
    """One file in detail: identity, components, hashes, metadata, findings with their details."""
    console.print(f"[bold]{markup(f.path)}[/]", overflow="fold")
    head = _kv_table(None)
    for k, v in [
        ("size", f"{size(f.size)} ({f.size:,} bytes)"),
        ("format", f.format),
        ("kind", f.kind),
        ("arch", f.arch),
        ("tensors", str(f.tensors)),
        ("dtypes", _dtypes(f.dtypes)),
    ]:
        head.add_row(k, markup(v))
    ident = f.identification
    if ident:
        verdict = "confident" if ident.confident else f"not confident (below {ident.threshold:.0%})"
        head.add_row(
            "identification",
            f"{ident.score:.1%} of {ident.of} reference keys, {verdict}"
            + (f"; {ident.missing_count} missing" if ident.missing_count else ""),
        )
    if f.error is not None:
        head.add_row("error", f"[bold red]{markup(f.error.kind)}[/]: {markup(f.error.message)}")
    console.print(head)

    if f.components:
        t = Table(title="Components", box=box.SIMPLE_HEAD, title_justify="left")
        t.add_column("component", no_wrap=True)
        t.add_column("tensors", justify="right", no_wrap=True)
        t.add_column("size", justify="right", no_wrap=True, min_width=SIZE_WIDTH)
        t.add_column("dtypes")
        t.add_column("blake3 (canonical v1)", overflow="fold")
        for name, c in sorted(f.components.items()):
            t.add_row(name, str(c.tensors), size(c.bytes), _dtypes(c.dtypes), c.blake3 or "-")
        console.print(t)

    hashes = {k: v for k, v in f.hashes.to_dict().items() if v}
    if hashes:
        t = _kv_table("Hashes")
        for k, v in hashes.items():
            t.add_row(k, str(v))
        console.print(t)

    if f.parts:
        t = Table(title="Files", box=box.SIMPLE_HEAD, title_justify="left")
        for c in ("file", "component", "kind", "arch", "tensors", "size"):
            t.add_column(c, justify="right" if c in ("tensors", "size") else "left", overflow="fold")
        for p in f.parts:
            row = (markup(p["path"]), p["component"], p["kind"], p["arch"], str(p["tensors"]))
            t.add_row(*row, human_bytes(p["size"]))
        console.print(t)

    if f.provenance:
        console.print(provenance_table(f.provenance))

    if f.metadata:
        t = _kv_table(f"Metadata ({len(f.metadata)} keys)")
        for k, v in metadata_rows(f.metadata, full=all_metadata):
            t.add_row(markup(k), markup(v))
        console.print(t)

    if not f.findings:
        if f.error is None:
            console.print("[green]no problems found[/]")
        return
    console.print("[bold]Findings")
    for x in f.findings:
        sev = SEVERITY_ABBR.get(x.severity, x.severity)
        prefix = f"  {_sev(x.severity)} [bold]{markup(x.check)}[/]: "
        print_wrapped(console, prefix, len(f"  {sev} {x.check}: "), x.message)
        if x.details not in (None, {}, []):
            # Never wrapped by rich: a tensor name stays one copyable line (the terminal may fold it).
            console.print(
                "\n".join(map(markup, details_lines(x.details, "      "))), highlight=False, soft_wrap=True
            )
        r = remedy(x.check, x.severity)
        if r is not Remedy.review:
            console.print(remedy_line(console.width, r, f.path, 6), highlight=False, soft_wrap=True)


LIST_SHOWN = 8  # items of a long list in a finding's details shown by `info`


def _parent_line(p: dict[str, Any]) -> str:
    ids = [x for x in (p.get("sha256") and p["sha256"][:12], p.get("legacy_hash")) if x]
    text = p.get("name") or "(unnamed)"
    if ids:
        text += f" [{', '.join(ids)}]"
    if p.get("merged"):
        text += " (itself a merge)"
    return f"{p['role']}: {text}"


def provenance_table(prov: dict[str, Any]) -> Table:
    """The compact "Provenance" section: tools, merge and multipliers, parents, base model, training."""
    t = _kv_table("Provenance")
    if prov.get("tools"):
        t.add_row("tool", markup(", ".join(prov["tools"])))
    merge = prov.get("merge")
    if merge:
        method = merge.get("method") or "?"
        if merge.get("calcmode"):
            method += f" ({merge['calcmode']})"
        t.add_row("merge", markup(method))
        for k, v in (merge.get("multipliers") or {}).items():
            t.add_row(f"  {markup(k)}", markup(v if isinstance(v, str) else json.dumps(v)))
    for p in prov.get("parents") or []:
        t.add_row("parent", markup(_parent_line(p)))
    if prov.get("base_model"):
        t.add_row("base model", markup(prov["base_model"]))
    training = {k: v for k, v in (prov.get("training") or {}).items() if v}
    if training:
        t.add_row("training", markup(", ".join(f"{k} {v}" for k, v in training.items())))
    return t


def details_lines(value: Any, indent: str = "", width: int = 80) -> list[str]:
    """A finding's details as readable lines: short values inline, lists one item per line."""
    compact = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, dict | list) or len(compact) <= width:
        return [indent + compact]
    lines = []
    if isinstance(value, list):
        for item in value[:LIST_SHOWN] if len(value) > LIST_SHOWN + 2 else value:
            text = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)
            lines.append(f"{indent}- {text}")
        if len(value) > LIST_SHOWN + 2:
            lines.append(f"{indent}… and {len(value) - LIST_SHOWN} more (--json lists them all)")
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
    "same-weights": "same weights, other packaging",
    "shared-component": "shared component",
}


def print_duplicates(report: Report, console: Console) -> None:
    """The duplicate groups, largest reclaimable first: each copy on its own line, the one to keep marked."""
    groups = report.duplicates
    if not groups:
        console.print(f"no duplicates among {report.summary.files} file(s)")
        return
    width = console.width
    indent = "    "
    for g in groups:
        what = DUPLICATE_TITLES.get(g["type"], g["type"])
        if g["type"] == "shared-component":
            head = (
                f"[bold]{what}[/] {markup(g['component'] or '')}: {size(g['bytes'])} in each file"
                " (not reclaimable by deleting files)"
            )
        else:
            head = f"[bold]{what}[/]: {size(g['bytes'])} each, {size(g['reclaimable'])} reclaimable"
        console.print(head, highlight=False)
        damaged = set(g.get("damaged") or [])
        for p in g["files"]:
            mark = "[green]keep[/] " if p == g.get("keep") else "[red]damaged[/] " if p in damaged else ""
            room = width - len(indent) - (len("damaged ") if mark else 0)
            console.print(f"{indent}{mark}{shown_path(p, report.roots, room)}", highlight=False)
    n = sum(1 for g in groups if g["type"] != "shared-component")
    console.print(
        f"{n} group(s) of redundant copies: deleting all but the kept copies would free "
        f"{size(reclaimable(groups))}; {len(groups) - n} shared-component group(s) free nothing that way",
        highlight=False,
    )
