"""The `fastscan` command line: parses options, calls fastscan.api, hands results to fastscan.render.

Commands live in their own modules and are registered at the bottom of this file, one line each.
Heavy imports (rich, the scanner) happen inside the commands so `fastscan --help` starts fast.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from fastscan.options import FailOn, HashMode


class DefaultGroup(TyperGroup):
    """A command group that runs `scan` when the first argument names no command: `fastscan DIR`."""

    default_command = "scan"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Routes `fastscan ARGS` to `fastscan scan ARGS` unless ARGS starts with a command or option."""
        if args:
            group_opts = set(ctx.help_option_names)
            for p in self.get_params(ctx):
                group_opts.update(getattr(p, "opts", ()))
            if args[0] not in self.commands and args[0] not in group_opts:
                args = [self.default_command, *args]
        return super().parse_args(ctx, args)


HELP = "Find and fix what is wrong with Stable Diffusion model files. `fastscan PATH` = `fastscan scan PATH`."
EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

app = typer.Typer(
    cls=DefaultGroup,
    name="fastscan",
    help=HELP,
    rich_markup_mode=None,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Prints an error for the run itself to stderr and returns the Exit to raise."""
    typer.echo(f"fastscan: error: {message}", err=True)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        from fastscan._core import __version__

        typer.echo(f"fastscan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Find and fix what is wrong with Stable Diffusion model files."""


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@app.command()
def scan(
    paths: Annotated[
        list[str],
        typer.Argument(help="Files and directories to scan.", show_default=False, metavar="PATH"),
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
            help="Write the JSON (or --jsonl) report to FILE; the table still prints.",
        ),
    ] = None,
    hash: Annotated[
        HashMode,
        typer.Option("--hash", help="none: headers only; components: component hashes; full: file too."),
    ] = HashMode.full,
    sha256: Annotated[
        bool, typer.Option("--sha256", help="Also compute SHA-256, AutoV2 and the addnet hash.")
    ] = False,
    fail_on: Annotated[
        FailOn, typer.Option("--fail-on", help="Exit 1 when any finding is at or above this severity.")
    ] = FailOn.error,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=0, metavar="N", help="Threads (0: every core).")
    ] = 0,
    follow_links: Annotated[
        bool, typer.Option("--follow-links", help="Follow symbolic links in directories.")
    ] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Scan every file again; do not use the scan cache.")
    ] = False,
) -> None:
    """Scan files and directories and report what is wrong with them."""
    from fastscan.api import ScanRun

    if json_out and jsonl:
        raise typer.BadParameter("--json and --jsonl exclude each other", param_hint="--json/--jsonl")
    fmt = "jsonl" if jsonl else "json" if (json_out or output) else "table"
    try:
        run = ScanRun(
            paths, hash=hash.value, sha256=sha256, jobs=jobs, follow_links=follow_links, cache=not no_cache
        )
    except (OSError, ValueError) as e:
        raise fail(str(e)) from None
    try:
        sink = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    except OSError as e:
        raise fail(f"cannot write {output}: {e.strerror}") from None

    show_table = fmt == "table" or output is not None
    show_progress = sys.stderr.isatty() and not (
        fmt == "jsonl" and sink is sys.stdout and sys.stdout.isatty()
    )
    try:
        report = _run(run, fmt, sink, show_progress)
        if fmt == "json":  # indented for a person at a terminal, compact for programs
            sink.write(report.to_json(indent=2 if sink.isatty() else None) + "\n")
        sink.flush()
    except KeyboardInterrupt:
        raise fail("interrupted", EXIT_INTERRUPTED) from None
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(EXIT_USAGE) from None
    except OSError as e:
        raise fail(f"cannot write {output or 'stdout'}: {e.strerror or e}") from None
    finally:
        if sink is not sys.stdout:
            sink.close()
    if run.cache_warning:
        typer.echo(f"fastscan: warning: {run.cache_warning}", err=True)
    if show_table:
        from rich.console import Console

        from fastscan.render import print_report

        print_report(report, Console())
    raise typer.Exit(EXIT_FINDINGS if report.fails(fail_on.value) else EXIT_OK)


def _run(run: Any, fmt: str, sink: Any, show_progress: bool) -> Any:
    """Drives the scan (progress bar when asked), streaming lines for --jsonl; returns the Report."""

    def line(r: Any) -> None:
        sink.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
        sink.flush()

    on_file = line if fmt == "jsonl" else None
    if show_progress:
        from fastscan.render import progress_bar

        with progress_bar(_stderr_console()) as update:
            report = run.drive(progress=update, on_file=on_file)
    else:
        report = run.drive(on_file=on_file)
    if fmt == "jsonl":
        head = report.to_dict()
        del head["files"]
        sink.write(json.dumps(head, ensure_ascii=False) + "\n")
    return report


@app.command()
def info(
    path: Annotated[str, typer.Argument(help="The file to describe.", show_default=False, metavar="FILE")],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the file object of the JSON report.")
    ] = False,
    hash: Annotated[HashMode, typer.Option("--hash", help="Which hashes to compute.")] = HashMode.full,
    sha256: Annotated[
        bool, typer.Option("--sha256", help="Also compute SHA-256, AutoV2 and the addnet hash.")
    ] = False,
) -> None:
    """Describe one file in detail: format, kind, arch, components, hashes, metadata, findings."""
    from fastscan.api import scan_one

    if os.path.isdir(path):
        raise fail(f"{path} is a directory: `fastscan {path}` scans it")
    try:
        f = scan_one(path, hash=hash.value, sha256=sha256)
    except (OSError, ValueError) as e:
        raise fail(str(e)) from None
    if json_out:
        typer.echo(json.dumps(f.to_dict(), indent=2, ensure_ascii=False))
        return
    from rich.console import Console

    from fastscan.render import print_file

    print_file(f, Console())


def main() -> None:
    """Entry point of the `fastscan` command."""
    app(prog_name="fastscan")


# ---- commands from their own modules: one line each -------------------------------------------
from fastscan import demo as _demo  # noqa: E402

app.command("demo")(_demo.command)
from fastscan import dedupe_cli as _dedupe  # noqa: E402

app.command("dedupe")(_dedupe.command)
from fastscan.fixes import cli as _fixes  # noqa: E402

_fixes.register(app)
from fastscan import lineage_cli as _lineage  # noqa: E402

app.command("similar")(_lineage.similar_command)
app.command("lineage")(_lineage.lineage_command)
