"""`fastscan scan PATH...` (also `fastscan PATH...`): scan, then print tables, TSV, JSON or JSON lines."""

from __future__ import annotations

import gc
import json
import sys
from typing import Annotated, Any

import typer

from fastscan.cli.choices import (
    EndpointOpt,
    FailOn,
    HashMode,
    HashOpt,
    JobsOpt,
    NoCacheOpt,
    Sha256Opt,
    TableFormat,
    bounded_jobs,
    choice,
)
from fastscan.cli.errors import EXIT_FINDINGS, EXIT_INTERRUPTED, EXIT_OK, closed_pipe, fail, warn
from fastscan.model import compact_json


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
    from fastscan.api import ScanRun
    from fastscan.cluster import ClusterError

    if json_out and jsonl:
        raise fail("--json and --jsonl exclude each other")
    if dry_run:
        _dry_run(paths, hash.value, follow_links, endpoint_url, json_out)
        return
    mode = "jsonl" if jsonl else "json" if (json_out or output) else "table"
    show_table = mode == "table" or output is not None
    digest = None
    if show_table:  # made (render imported) before the scan starts, so Ctrl-C always meets the handler
        from fastscan.render import Digest

        digest = Digest(keep_affected=files or fmt is TableFormat.tsv)
    try:
        run = ScanRun(
            paths,
            hash=hash.value,
            sha256=sha256,
            jobs=bounded_jobs(jobs),
            follow_links=follow_links,
            cache=not no_cache,
            # only the JSON document holds every file; the tables read a digest made as the scan goes
            keep_files=mode == "json",
            # without tables, the core writes each file object's JSON text (no Python objects made)
            as_text=not show_table,
            cluster=cluster,
            endpoint_url=endpoint_url,
        )
    except (OSError, ValueError, ClusterError) as e:
        raise fail(str(e)) from None
    try:
        sink = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    except OSError as e:
        raise fail(f"cannot write {output}: {e.strerror}") from None

    show_progress = sys.stderr.isatty() and not (
        mode == "jsonl" and sink is sys.stdout and sys.stdout.isatty()
    )
    try:
        try:
            report = _run(run, mode, sink, show_progress, digest)
            if mode == "json":  # indented for a person at a terminal, compact for programs
                report.write_json(sink, indent=2 if sink.isatty() else None)
                sink.write("\n")
            sink.flush()
        finally:
            if sink is not sys.stdout:
                sink.close()
        if run.cache_warning:
            warn(run.cache_warning)
        if show_table:
            _print_human(report, fmt, files, digest)
    except KeyboardInterrupt:
        raise fail("interrupted", EXIT_INTERRUPTED) from None
    except ClusterError as e:
        raise fail(str(e)) from None
    except BrokenPipeError:  # the reader went away (`| head`)
        raise closed_pipe() from None
    except OSError as e:
        raise fail(f"cannot write {output or 'stdout'}: {e.strerror or e}") from None
    raise typer.Exit(EXIT_FINDINGS if report.fails(fail_on.value) else EXIT_OK)


def _dry_run(
    paths: list[str], hash: str, follow_links: bool, endpoint_url: str | None, as_json: bool
) -> None:
    """Prints each file or object a scan would read, then the totals; exits 2 when a root cannot be listed."""
    from fastscan.api import plan
    from fastscan.render import size as human_bytes

    try:
        p = plan(paths, hash=hash, follow_links=follow_links, endpoint_url=endpoint_url)
    except (OSError, ValueError) as e:
        raise fail(str(e)) from None
    if as_json:
        sys.stdout.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
    else:
        for f in p.files:
            sys.stdout.write(f"{f.size}\t{f.bytes_to_read}\t{f.path}\n")
        sys.stdout.write(
            f"{len(p.files)} files, {human_bytes(p.size)}; the scan (--hash {hash}) reads at least "
            f"{human_bytes(p.bytes_to_read)} ({p.bytes_to_read} bytes)\n"
        )
    sys.stdout.flush()
    for _, message in p.errors:
        warn(message)  # the core names the path in it
    if p.errors:
        raise typer.Exit(2)


def _print_human(report: Any, fmt: TableFormat, files: bool, digest: Any) -> None:
    from fastscan import render

    if fmt is TableFormat.tsv:
        render.write_tsv(report, sys.stdout, digest)
        sys.stdout.flush()
        return
    console = render.stdout_console()
    render.print_report(report, console, files=files, digest=digest)
    sys.stdout.flush()


def _run(run: Any, mode: str, sink: Any, show_progress: bool, digest: Any) -> Any:
    """Drives the scan (progress bar when asked), streaming lines for --jsonl and feeding the tables'
    digest; returns the Report."""

    # What the imports and argument parsing made lives as long as the process: out of the collector's
    # way, so its passes over the reports the scan builds do not walk every module object again (a
    # tenth of a --json scan of a thousand embeddings went to the collector).
    gc.freeze()

    def on_file(r: Any) -> None:
        if digest is not None:
            digest.add(r)
        if mode == "jsonl":  # the core's text, or (beside the tables) the report written here
            sink.write((r if isinstance(r, str) else compact_json(r.to_dict())) + "\n")
            sink.flush()

    if show_progress:
        from fastscan.render import progress_bar, stderr_console

        with progress_bar(stderr_console()) as update:
            report = run.drive(progress=update, on_file=on_file)
    else:
        report = run.drive(on_file=on_file)
    if mode == "jsonl":
        head = report.to_dict(with_files=False)
        del head["files"]
        sink.write(compact_json(head) + "\n")
    return report
