"""`fastscan demo [DIR]`: write the demo library (fastscan.demo), then scan it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastscan.cli.choices import HashOpt
from fastscan.cli.errors import closed_pipe, fail
from fastscan.cli.options import HashMode


def command(
    directory: Annotated[
        str,
        typer.Argument(
            help="Where to write the library (new or empty, or one the demo made).", metavar="DIR"
        ),
    ] = "demo-library",
    hash: HashOpt = HashMode.none,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the JSON report instead of the tables.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Write into DIR even when it holds files the demo did not make.")
    ] = False,
) -> None:
    """Write a demo library of files with known problems, then scan it.

    The files are sparse, built from real tensor layouts: ~32 GB apparent, a few MB on disk.
    """
    from fastscan import demo
    from fastscan.api import scan

    try:
        demo.write_library(directory, force=force)
    except demo.NotDemoFolder as e:
        raise fail(f"{e}; choose a new folder or add --force") from None
    except OSError as e:
        raise fail(f"cannot write the demo library in {directory}: {e}") from None
    report = scan([directory], hash=hash.value)
    try:
        if json_out:
            typer.echo(report.to_json())
            return
        from fastscan.render import print_report, stdout_console

        console = stdout_console()
        console.print(
            f"[bold]fastscan demo[/]: wrote {len(demo.FILES)} model files to {Path(directory)}/"
            " (see README.txt there)",
            highlight=False,
        )
        print_report(report, console)
        if hash is HashMode.none:
            console.print(
                f"[dim]data-pass checks ({', '.join(sorted(demo.DATA_PASS_CHECKS))}) run with: "
                f"fastscan {directory} --hash components[/]",
                highlight=False,
            )
    except BrokenPipeError:
        raise closed_pipe() from None
