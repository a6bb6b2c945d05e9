"""What `fastscan scan` does, given its arguments read (by typer, `fastscan.cli.scan`, or by the quick
path, `fastscan.cli.fast`): scan, then print tables, TSV, JSON or JSON lines. No framework imported."""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

from fastscan.cli.errors import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, closed_pipe, fail, interrupted, warn
from fastscan.cli.options import FailOn, HashMode, TableFormat, bounded_jobs
from fastscan.model import compact_json


def scan(
    paths: list[str],
    json_out: bool,
    jsonl: bool,
    output: str | None,
    fmt: TableFormat,
    files: bool,
    hash: HashMode,
    sha256: bool,
    fail_on: FailOn,
    jobs: int,
    follow_links: bool,
    no_cache: bool,
    cluster: str | None,
    endpoint_url: str | None,
    dry_run: bool,
) -> int:
    """Scans `paths` and prints the report as the options ask; returns the exit code (errors of the run
    itself raise `fail`'s exit)."""
    from fastscan.api import ScanRun
    from fastscan.cluster import ClusterError

    if json_out and jsonl:
        raise fail("--json and --jsonl exclude each other")
    if dry_run:
        return _dry_run(paths, hash.value, follow_links, endpoint_url, json_out)
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
        raise interrupted() from None
    except ClusterError as e:
        raise fail(str(e)) from None
    except BrokenPipeError:  # the reader went away (`| head`)
        raise closed_pipe() from None
    except OSError as e:
        raise fail(f"cannot write {output or 'stdout'}: {e.strerror or e}") from None
    return EXIT_FINDINGS if report.fails(fail_on.value) else EXIT_OK


def _dry_run(paths: list[str], hash: str, follow_links: bool, endpoint_url: str | None, as_json: bool) -> int:
    """Prints each file or object a scan would read, then the totals; the exit code: 2 when a root
    cannot be listed."""
    from fastscan.api import plan
    from fastscan.render import size as human_bytes
    from fastscan.terminal import visible

    try:
        p = plan(paths, hash=hash, follow_links=follow_links, endpoint_url=endpoint_url)
    except (OSError, ValueError) as e:
        raise fail(str(e)) from None
    if as_json:
        sys.stdout.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
    else:
        for f in p.files:
            sys.stdout.write(f"{f.size}\t{f.bytes_to_read}\t{visible(f.path)}\n")
        sys.stdout.write(
            f"{len(p.files)} files, {human_bytes(p.size)}; the scan (--hash {hash}) reads at least "
            f"{human_bytes(p.bytes_to_read)} ({p.bytes_to_read} bytes)\n"
        )
    sys.stdout.flush()
    for _, message in p.errors:
        warn(message)  # the core names the path in it
    return EXIT_USAGE if p.errors else EXIT_OK


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
