"""`fastscan scan PATH...` (also `fastscan PATH...`): its arguments, declared for typer; what it does is
`fastscan.cli.scan_run` (which the quick path, `fastscan.cli.fast`, calls with the same arguments)."""

from __future__ import annotations

from typing import Annotated

import typer

from fastscan.cli.choices import EndpointOpt, HashOpt, JobsOpt, NoCacheOpt, Sha256Opt, choice
from fastscan.cli.options import FailOn, HashMode, TableFormat


def command(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Files and directories to scan, or object-store URLs (s3://bucket/prefix/, gs://, az://, "
            "https://host/file).",
            metavar="PATH_OR_URL",
        ),
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the whole report as one JSON document.")
    ] = False,
    jsonl: Annotated[
        bool,
        typer.Option("--jsonl", help="Print one file object per line as each finishes, then a summary line."),
    ] = False,
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            metavar="FILE",
            help="Write the JSON (or --jsonl) report to FILE; the tables still print.",
        ),
    ] = None,
    fmt: Annotated[
        TableFormat,
        choice(TableFormat, "--format", help="table: for a person; tsv: one tab-separated line per finding."),
    ] = TableFormat.table,
    files: Annotated[
        bool,
        typer.Option("--files", help="List every affected file with its findings and what to do about it."),
    ] = False,
    hash: HashOpt = HashMode.full,
    sha256: Sha256Opt = False,
    fail_on: Annotated[
        FailOn, choice(FailOn, "--fail-on", help="Exit 1 when any finding is at or above this severity.")
    ] = FailOn.error,
    jobs: JobsOpt = 0,
    follow_links: Annotated[
        bool, typer.Option("--follow-links", help="Follow symbolic links inside directories.")
    ] = False,
    no_cache: NoCacheOpt = False,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            metavar="ADDRESS",
            help="Spread the files over the workers of a running Dask cluster (its scheduler, e.g. "
            "tcp://host:8786); needs the cluster extra.",
        ),
    ] = None,
    endpoint_url: EndpointOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="List what would be scanned and how many bytes it reads; read nothing."
        ),
    ] = False,
) -> None:
    """Scan files and directories and report what is wrong with them."""
    args = dict(locals())  # every parameter, as read (nothing else is defined yet)
    from fastscan.cli import scan_run

    raise typer.Exit(scan_run.scan(**args))
