"""The typer app: the `fastscan PATH` shortcut, plain help text, one registration line per command."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from fastscan.cli import dedupe, demo, export, fix, hashes, info, lineage, report, scan
from fastscan.cli.errors import EXIT_INTERRUPTED, report_usage_error

HELP = "Find and fix what is wrong with Stable Diffusion model files. `fastscan PATH` = `fastscan scan PATH`."


def _argument_name(p: Any) -> str:
    name = p.metavar or (p.name or "").upper()
    if p.nargs != 1:
        name += "..."
    return name if p.required else f"[{name}]"


class Command(TyperCommand):
    """A command whose help names arguments as `PATH...` and options by their metavar (`none|full`)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """`[OPTIONS] PATH...`: the framework's type labels left out."""
        pieces = [self.options_metavar] if self.options_metavar else []
        pieces += [_argument_name(p) for p in self.get_params(ctx) if p.param_type_name == "argument"]
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """Arguments with their help, then options as `-o, --output FILE  help  [default: ...]`."""
        params = self.get_params(ctx)
        args = [(_argument_name(p), p.help or "") for p in params if p.param_type_name == "argument"]
        opts = []
        for p in params:
            if p.param_type_name != "option" or p.hidden:
                continue
            names = ", ".join([*p.opts, *p.secondary_opts])
            if not p.is_flag and p.metavar:
                names += f" {p.metavar}"
            record = p.get_help_record(ctx)
            opts.append((names, record[1] if record else ""))
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)


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


app = typer.Typer(
    cls=DefaultGroup,
    name="fastscan",
    help=HELP,
    rich_markup_mode=None,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _version(value: bool) -> None:
    if value:
        from fastscan._core import __version__

        typer.echo(f"fastscan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Find and fix what is wrong with Stable Diffusion model files."""


# ---- commands: one line each ------------------------------------------------------------------
app.command("scan", cls=Command)(scan.command)
app.command("info", cls=Command)(info.command)
app.command("demo", cls=Command)(demo.command)
app.command("dedupe", cls=Command)(dedupe.command)
app.command("hashes", cls=Command)(hashes.command)
app.command("export", cls=Command)(export.command)
app.command("fix", cls=Command)(fix.fix)
app.command("convert", cls=Command)(fix.convert)
app.command("extract", cls=Command)(fix.extract)
app.command("bake-vae", cls=Command)(fix.bake_vae)
app.command("similar", cls=Command)(lineage.similar_command)
app.command("lineage", cls=Command)(lineage.lineage_command)
app.command("report", cls=Command)(report.command)


def run(argv: list[str] | None = None) -> None:
    """Runs the app on `argv` (default: the process arguments); usage errors printed in plain words."""
    cmd = typer.main.get_command(app)
    try:
        code = cmd.main(args=argv, prog_name="fastscan", standalone_mode=False)
    except typer.Exit as e:
        code = e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("fastscan: error: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except typer.TyperException as e:  # the framework's usage errors (unknown option, bad value, ...)
        if getattr(e, "exit_code", 1) == 2:
            code = report_usage_error(e)
        else:
            typer.echo(f"fastscan: error: {e}", err=True)
            code = 1
    sys.exit(code if isinstance(code, int) else 0)
