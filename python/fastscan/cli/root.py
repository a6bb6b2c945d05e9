"""The typer app: the `fastscan PATH` shortcut, plain help text, one registration line per command.

A command's module is imported when that command runs (or when the help lists every command), so
`fastscan PATH` loads the scan command alone, not the fix, lineage or report machinery.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import CommandInfo

from fastscan.cli.errors import fail, interrupted, report_usage_error

HELP = "Find and fix what is wrong with Stable Diffusion model files. `fastscan PATH` = `fastscan scan PATH`."


def _argument_name(p: Any) -> str:
    name = p.metavar or (p.name or "").upper()
    if p.nargs != 1:
        name += "..."
    return name if p.required else f"[{name}]"


class _Plain:
    """Coercion of a plain parameter, done directly: text, a list of text, a flag left unset, or a
    value for a `parser=` of our own (which is all typer would call).

    typer builds a pydantic validator for every parameter it coerces (the help option included), and
    importing pydantic and building those costs more than a header-only scan of a thousand files.
    Anything else is handed to typer's own coercion, built on first use.
    """

    def __init__(self, kind: str, parser: Any = None) -> None:
        self.kind, self.parser, self.typer_own = kind, parser, None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        """typer's `RuntimeParam.coerce` for the plain cases, else typer's itself."""
        multi = param.multiple or param.nargs == -1
        if value is None:
            return () if multi else None
        if self.kind == "parser":
            if not multi:
                return self.parser(value)
            if not isinstance(value, str):
                return [self.parser(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        elif self.kind == "text":
            if isinstance(value, str) and not multi:
                return value
            if multi and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                return list(value)
        if self.typer_own is None:
            from typer._coercion import build_runtime_param

            self.typer_own = build_runtime_param(param.type_descriptor)
        return self.typer_own.coerce(value, param=param, ctx=ctx)


def _direct(params: list[Any]) -> None:
    """Gives each plain parameter of typer's (see `_Plain`) the direct coercion; typer's stays for others."""
    for p in params:
        desc = getattr(p, "type_descriptor", None)
        info = getattr(desc, "parameter_info", None)
        if info is None or getattr(p, "_runtime_param", 0) is not None:
            continue  # not a typer parameter, or one this typer version handles otherwise
        ann, parser = desc.annotation, getattr(info, "parser", None)
        if getattr(ann, "__origin__", None) is tuple:
            continue
        if parser is not None:
            p._runtime_param = _Plain("parser", parser)
        elif ann is str or ann == list[str]:
            p._runtime_param = _Plain("text")
        elif ann is bool:
            p._runtime_param = _Plain("flag")


class _DirectHelp:
    """The help option of a command or group with the direct coercion (see `_Plain`)."""

    def get_help_option(self, ctx: Any) -> Any:
        """The help option, with the direct coercion of an unset flag."""
        opt = super().get_help_option(ctx)
        _direct([opt] if opt is not None else [])
        return opt


class Command(_DirectHelp, TyperCommand):
    """A command whose help names arguments as `PATH...` and options by their metavar (`none|full`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _direct(self.params)

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


# ---- commands: one line each: name -> (module in fastscan.cli, function) ---------------------------
COMMANDS = {
    "scan": ("scan", "command"),
    "info": ("info", "command"),
    "demo": ("demo", "command"),
    "dedupe": ("dedupe", "command"),
    "hashes": ("hashes", "command"),
    "export": ("export", "command"),
    "fix": ("fix", "fix"),
    "convert": ("fix", "convert"),
    "extract": ("fix", "extract"),
    "bake-vae": ("fix", "bake_vae"),
    "similar": ("lineage", "similar_command"),
    "lineage": ("lineage", "lineage_command"),
    "report": ("report", "command"),
}


class LazyCommands(Mapping[str, Any]):
    """The group's commands by name (in COMMANDS' order), each built from its module on first use."""

    def __init__(self) -> None:
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            module, function = COMMANDS[name]
            callback = getattr(importlib.import_module(f"fastscan.cli.{module}"), function)
            self._built[name] = typer.main.get_command_from_info(
                CommandInfo(name=name, cls=Command, callback=callback),
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
            )
        return self._built[name]

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


class DefaultGroup(_DirectHelp, TyperGroup):
    """A command group that runs `scan` when the first argument names no command: `fastscan DIR`."""

    default_command = "scan"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = LazyCommands()  # type: ignore[assignment]
        _direct(self.params)

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


def run(argv: list[str] | None = None) -> None:
    """Runs the app on `argv` (default: the process arguments); usage errors printed in plain words."""
    cmd = typer.main.get_command(app)
    try:
        code = cmd.main(args=argv, prog_name="fastscan", standalone_mode=False)
    except typer.Exit as e:
        code = e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = interrupted().code
    except typer.TyperException as e:  # the framework's usage errors (unknown option, bad value, ...)
        if getattr(e, "exit_code", 1) == 2:
            code = report_usage_error(e)
        else:
            code = fail(str(e), 1).code
    sys.exit(code if isinstance(code, int) else 0)
