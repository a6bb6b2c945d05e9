"""`fastscan export --format a1111|civitai-info|cm-info PATH...`: other tools' hashes, in their own files.

The scan (`--hash full --sha256`, served from the scan cache for unchanged files) gives the hashes; the
core renders and writes each tool's file atomically (docs/hash-interop.md). Nothing a user made is
replaced without `--force`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastscan.cli.choices import JobsOpt, NoCacheOpt, choice
from fastscan.cli.errors import EXIT_FINDINGS, EXIT_OK, fail
from fastscan.cli.options import ExportFormat, bounded_jobs

# What the core did: written (stdout), a model the format cannot describe (stderr note), or left
# undone, a file kept or not writable (stderr, exit 1).
DONE = {"written", "replaced", "added", "updated", "unchanged"}
NOTED = {"skipped"}


def command(
    paths: Annotated[
        list[str],
        typer.Argument(help="Model files and directories to describe.", metavar="PATH", show_default=False),
    ],
    fmt: Annotated[
        ExportFormat,
        choice(
            ExportFormat,
            "--format",
            help="a1111: the web UI's cache.json (--webui-cache); civitai-info, cm-info: sidecars.",
            show_default=False,
        ),
    ],
    webui_cache: Annotated[
        Path | None,
        typer.Option(
            "--webui-cache",
            metavar="FILE",
            help="The web UI's cache.json to merge into (--format a1111); created when absent.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace existing sidecars and cache entries that disagree.")
    ] = False,
    jobs: JobsOpt = 0,
    no_cache: NoCacheOpt = False,
) -> None:
    """Write the hashes the web UI, Civitai Helper or StabilityMatrix compute, in their own files."""
    if fmt is ExportFormat.a1111 and webui_cache is None:
        raise fail("--format a1111 needs --webui-cache FILE (the web UI's cache.json, in its install folder)")
    if fmt is not ExportFormat.a1111 and webui_cache is not None:
        raise fail("--webui-cache is for --format a1111 only")
    from fastscan import _core
    from fastscan.api import scan

    try:
        cache = None if no_cache else True
        report = scan(paths, hash="full", sha256=True, jobs=bounded_jobs(jobs), cache=cache)
    except (OSError, ValueError) as e:
        raise fail(str(e)) from None
    try:
        outcomes = _core.export(
            fmt.value, [f.to_dict() for f in report.files], force=force, webui_cache=webui_cache
        )
    except OSError as e:
        raise fail(str(e), EXIT_FINDINGS) from None
    problems = 0
    for o in outcomes:
        if o["status"] in DONE:
            typer.echo(o["message"])
        elif o["status"] in NOTED:
            typer.echo(f"fastscan: {o['status']}: {o['message']}", err=True)
        else:
            problems += 1
            typer.echo(f"fastscan: {o['status']}: {o['message']}", err=True)
    raise typer.Exit(EXIT_FINDINGS if problems else EXIT_OK)
