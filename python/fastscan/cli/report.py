"""`fastscan report PATH... -o FILE`: the library as one self-contained HTML page (or from a JSON report)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from fastscan.cli.choices import JobsOpt, NoCacheOpt, Sha256Opt
from fastscan.cli.errors import fail, interrupted, warn
from fastscan.cli.options import bounded_jobs


def _is_json_report(paths: list[str]) -> bool:
    """True when the one argument is a `.json` file: a report made elsewhere, rendered as it is."""
    return len(paths) == 1 and paths[0].lower().endswith(".json") and os.path.isfile(paths[0])


def command(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Files and directories to scan, or one JSON report (fastscan scan --json).", metavar="PATH"
        ),
    ],
    output: Annotated[str, typer.Option("-o", "--output", metavar="FILE", help="The HTML file to write.")],
    sha256: Sha256Opt = False,
    jobs: JobsOpt = 0,
    follow_links: Annotated[
        bool, typer.Option("--follow-links", help="Follow symbolic links inside directories.")
    ] = False,
    no_lineage: Annotated[
        bool, typer.Option("--no-lineage", help="Leave out lineage (no fingerprints: a faster first scan).")
    ] = False,
    no_cache: NoCacheOpt = False,
) -> None:
    """Write a library report: overview charts, every file, duplicates, CLIP offsets, lineage (HTML)."""
    from fastscan import report_html

    out_dir = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(out_dir):
        raise fail(f"cannot write {output}: {out_dir} is not a directory")
    try:
        if _is_json_report(paths):
            lib = report_html.load(paths[0])
        elif any(p.lower().endswith(".json") and os.path.isfile(p) for p in paths):
            raise fail("a JSON report is rendered on its own: give it as the only PATH")
        else:
            lib = _scan(paths, sha256, bounded_jobs(jobs), follow_links, not no_lineage, not no_cache)
    except KeyboardInterrupt:
        raise interrupted() from None
    except (OSError, ValueError) as e:
        raise fail(str(e)) from None
    for w in lib.warnings:
        warn(w)
    try:
        report_html.write(lib, output)
    except OSError as e:
        raise fail(f"cannot write {output}: {e.strerror or e}") from None
    s = lib.report["summary"]
    typer.echo(f"wrote {output}: {s['files']} file(s)", err=True)


def _scan(paths: list[str], sha256: bool, jobs: int, follow_links: bool, lineage: bool, cache: bool):
    from fastscan.report_html import gather

    opts = dict(sha256=sha256, jobs=jobs, follow_links=follow_links, lineage=lineage, cache=cache)
    if sys.stderr.isatty():
        from fastscan.render import progress_bar, stderr_console

        with progress_bar(stderr_console()) as update:
            return gather(paths, progress=update, **opts)
    return gather(paths, **opts)
