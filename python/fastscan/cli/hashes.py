"""`fastscan hashes PATH...`: lines `b3sum -c` / `sha256sum -c` accept, AutoV2 lines, CSV; `--check LIST`.

Hashes come from the core's scan (served from the scan cache for unchanged files).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from fastscan.cli.choices import JobsOpt, NoCacheOpt, choice
from fastscan.cli.errors import EXIT_FINDINGS, EXIT_OK, closed_pipe, fail
from fastscan.cli.options import HashFormat, bounded_jobs
from fastscan.model import Kind

# Which hash of the report each line format carries.
FIELD = {HashFormat.b3sum: "blake3", HashFormat.sha256sum: "sha256", HashFormat.autov2: "autov2"}


def _escape(path: str) -> tuple[str, str]:
    """GNU coreutils' escaping of a name in a hash line: (prefix, name); `\\` marks an escaped line."""
    if "\\" in path or "\n" in path or "\r" in path:
        return "\\", path.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return "", path


def _unescape(name: str) -> str:
    out, i = [], 0
    while i < len(name):
        c = name[i]
        if c == "\\" and i + 1 < len(name):
            out.append({"n": "\n", "r": "\r", "\\": "\\"}.get(name[i + 1], name[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def hash_line(digest: str, path: str) -> str:
    """One `HEX  NAME` line as b3sum and sha256sum write it (text mode: two spaces)."""
    prefix, name = _escape(path)
    return f"{prefix}{digest}  {name}"


def parse_line(line: str) -> tuple[str, str] | None:
    """(hex, path) of a `HEX  NAME` or `HEX *NAME` line; None for blank lines and comments."""
    line = line.rstrip("\n")
    if not line.strip() or line.startswith("#"):
        return None
    escaped = line.startswith("\\")
    if escaped:
        line = line[1:]
    digest, sep, rest = line.partition(" ")
    if not sep or not rest or rest[0] not in " *":
        raise ValueError(f"not a hash line: {line!r}")
    name = rest[1:]
    return digest.lower(), _unescape(name) if escaped else name


def command(
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="Files and directories to hash.", metavar="PATH", show_default=False),
    ] = None,
    fmt: Annotated[
        HashFormat,
        choice(HashFormat, "--format", help="b3sum/sha256sum: `HEX  NAME` lines; autov2: 10-digit ids; csv."),
    ] = HashFormat.b3sum,
    check: Annotated[
        Path | None,
        typer.Option(
            "--check", "-c", metavar="LIST", help="Verify the files named in LIST against its hashes."
        ),
    ] = None,
    jobs: JobsOpt = 0,
    no_cache: NoCacheOpt = False,
) -> None:
    """Print or check hash lines: b3sum, sha256sum, AutoV2, CSV."""
    if check is not None:
        if paths:
            raise fail("--check LIST takes the file names from LIST; give no PATH")
        raise typer.Exit(_check(check, fmt, bounded_jobs(jobs), no_cache))
    if not paths:
        raise fail("missing PATH (or --check LIST)")
    report = _scan(paths, fmt, bounded_jobs(jobs), no_cache)
    try:
        _write(report, fmt, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        raise closed_pipe() from None
    unreadable = [f for f in report.files if f.error is not None]
    for f in unreadable:
        typer.echo(f"fastscan: {f.error.message}", err=True)
    for f in report.files:
        if f.error is None and f.hashes.blake3 is None and f.kind != Kind.SIDECAR:
            typer.echo(f"fastscan: {f.path}: not a model file; not hashed", err=True)
    raise typer.Exit(EXIT_FINDINGS if unreadable else EXIT_OK)


def _scan(paths: list[str], fmt: HashFormat, jobs: int, no_cache: bool) -> Any:
    from fastscan.api import scan

    try:
        return scan(
            paths,
            hash="full",
            sha256=fmt is not HashFormat.b3sum,
            jobs=jobs,
            cache=None if no_cache else True,
        )
    except (OSError, ValueError) as e:
        raise fail(str(e)) from None


def _write(report: Any, fmt: HashFormat, out: Any) -> None:
    if fmt is HashFormat.csv:
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["path", "size", "blake3", "sha256", "autov2", "autov1", "addnet"])
        for f in report.files:
            if f.error is None:
                h = f.hashes
                w.writerow([f.path, f.size, h.blake3, h.sha256, h.autov2, h.autov1 or "", h.addnet or ""])
        return
    field = FIELD[fmt]
    for f in report.files:
        digest = getattr(f.hashes, field)
        if f.error is None and digest:
            out.write(hash_line(digest, f.path) + "\n")


def _check(listing: Path, fmt: HashFormat, jobs: int, no_cache: bool) -> int:
    """Checks every file of a b3sum/sha256sum/autov2 list; prints `NAME: OK|FAILED`, exit 1 on any failure."""
    if fmt is HashFormat.csv:
        raise fail("--check reads b3sum, sha256sum or autov2 lines; give --format b3sum|sha256sum|autov2")
    try:
        text = sys.stdin.read() if str(listing) == "-" else listing.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise fail(f"cannot read {listing}: {getattr(e, 'strerror', None) or e}") from None
    expected: list[tuple[str, str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            entry = parse_line(line)
        except ValueError:
            raise fail(f"{listing}:{n}: not a `HEX  NAME` line") from None
        if entry:
            expected.append(entry)
    import os

    present = [p for _, p in expected if os.path.isfile(p)]
    report = _scan(present, fmt, jobs, no_cache) if present else None
    got = {f.path: getattr(f.hashes, FIELD[fmt]) for f in (report.files if report else []) if f.error is None}
    failed = 0
    for digest, path in expected:
        status = "OK" if got.get(path) == digest else "FAILED" if path in got else "FAILED open or read"
        failed += status != "OK"
        typer.echo(f"{path}: {status}")
    if failed:
        typer.echo(
            f"fastscan: WARNING: {failed} of {len(expected)} computed checksums did NOT match", err=True
        )
    return EXIT_FINDINGS if failed else EXIT_OK
