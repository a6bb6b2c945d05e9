"""`fastscan dedupe`: scan with hashes, then show the duplicate groups (grouping lives in fastscan.dedupe)."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def command(
    paths: Annotated[list[str], typer.Argument(help="Files and directories to compare.", metavar="PATH")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the groups as JSON.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker threads (0: every core).")] = 0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Hash every file again.")] = False,
) -> None:
    """Group byte-identical files, files sharing a component, and same weights packaged differently."""
    from fastscan.api import scan
    from fastscan.cli import fail

    try:
        report = scan(paths, hash="full", jobs=jobs, cache=None if no_cache else True)
    except FileNotFoundError as e:
        raise fail(str(e)) from None
    if json_out:
        typer.echo(json.dumps({"schema": "fastscan.dedupe/1", "duplicates": report.duplicates}, indent=2))
        return
    from rich.console import Console

    from fastscan.render import print_duplicates

    print_duplicates(report, Console())
