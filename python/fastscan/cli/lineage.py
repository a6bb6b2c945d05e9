"""`fastscan similar` and `fastscan lineage`: parse options, run the scan, print what the core found."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from fastscan.cli.choices import EndpointOpt


def similar_command(
    files: Annotated[list[str], typer.Argument(help="Two or more model files to compare.", metavar="FILE")],
    json_out: Annotated[bool, typer.Option("--json", help="Print fastscan.similar/1 JSON.")] = False,
    exact: Annotated[
        bool, typer.Option("--exact", help="Compute from every weight (streamed) instead of fingerprints.")
    ] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=0, help="Threads (0: every core).")] = 0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the scan cache.")] = False,
    endpoint_url: EndpointOpt = None,
) -> None:
    """Per-component, per-block cosine similarity of models' weights (one row per merge block)."""
    from fastscan.cli.errors import fail
    from fastscan.lineage import similar

    try:
        doc = similar(files, exact=exact, jobs=jobs, cache=not no_cache, endpoint_url=endpoint_url)
    except (OSError, ValueError) as e:
        raise fail(str(e)) from None
    if json_out:
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    from rich.console import Console

    from fastscan.lineage import similar_tables

    console = Console()
    for t in similar_tables(doc):
        console.print(t)


def lineage_command(
    paths: Annotated[list[str], typer.Argument(help="Files and directories of the library.", metavar="PATH")],
    json_out: Annotated[bool, typer.Option("--json", help="Print fastscan.lineage/1 JSON.")] = False,
    dot: Annotated[bool, typer.Option("--dot", help="Print the family graph for Graphviz.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=0, help="Threads (0: every core).")] = 0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Read every file again.")] = False,
    endpoint_url: EndpointOpt = None,
) -> None:
    """Which models are the same model underneath: same weights, nearest, merge recipes, blended VAEs."""
    from fastscan.cli.errors import fail
    from fastscan.lineage import lineage, scan_fingerprints

    if json_out and dot:
        raise typer.BadParameter("--json and --dot exclude each other", param_hint="--json/--dot")
    try:
        if sys.stderr.isatty():
            from rich.console import Console

            from fastscan.render import progress_bar

            with progress_bar(Console(stderr=True)) as update:
                scanned = scan_fingerprints(
                    paths, jobs=jobs, cache=not no_cache, progress=update, endpoint_url=endpoint_url
                )
        else:
            scanned = scan_fingerprints(paths, jobs=jobs, cache=not no_cache, endpoint_url=endpoint_url)
        doc = lineage(scanned.reports)
    except (OSError, ValueError) as e:
        raise fail(str(e)) from None
    for message in scanned.skipped:
        typer.echo(f"fastscan: warning: {message}", err=True)
    if scanned.cache_warning:
        typer.echo(f"fastscan: warning: {scanned.cache_warning}", err=True)
    if json_out:
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    elif dot:
        from fastscan.lineage import to_dot

        typer.echo(to_dot(doc), nl=False)
    else:
        from rich.console import Console

        from fastscan.lineage import print_lineage

        print_lineage(doc, Console())
