"""The quick path of `fastscan PATH...`: the scan command's arguments read without importing typer.

Importing typer and building its command costs more than a header-only scan of a thousand files (50
of a bare scan's 90 ms), and the scan is the command people run most. So `fastscan.cli.main` first
asks `read_args` here: it reads the arguments by `scan_args.json`, a spec generated from the typer
declaration of the scan command (`fastscan.cli.scan`; `spec_from_typer`, checked against the file by
the tests), with the same value readers (`fastscan.cli.options`). Anything it does not read exactly as
typer would (help, `--version`, another command, an unknown or malformed option, a refused value, a
missing path) it leaves to typer, which then reads the whole command line, errors and help included.
The flags are declared once, for typer; this path only follows that declaration.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastscan.cli.options import READERS, BadValue

# (os.path, not pathlib: this path imports nothing it does not use, and the scan does not use pathlib)
SPEC = os.path.join(os.path.dirname(__file__), "scan_args.json")


def load_spec() -> dict[str, Any] | None:
    """`scan_args.json`, or None when it cannot be read (an install without it runs everything by typer)."""
    try:
        with open(SPEC, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_args(argv: list[str], spec: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The scan command's arguments as typer would pass them, or None where typer must read `argv`."""
    spec = spec if spec is not None else load_spec()
    if spec is None:
        return None
    args = list(argv)
    if args and args[0] == "scan":
        args = args[1:]
    elif not args or args[0] in spec["commands"]:
        return None
    by_name = {name: opt for opt in spec["options"] for name in opt["opts"]}
    given: dict[str, Any] = {}
    paths: list[str] = []
    only_paths = False
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if only_paths or not a.startswith("-"):
            paths.append(a)
            continue
        if a == "--":
            only_paths = True
            continue
        name, eq, inline = a.partition("=") if a.startswith("--") else (a, "", "")
        opt = by_name.get(name)
        if opt is None:
            return None  # help, --version, a short option run together, a typo: typer says what it is
        if opt["read"] == "flag":
            if eq:
                return None
            given[opt["name"]] = True
        elif eq:
            given[opt["name"]] = inline
        elif i < len(args) and not args[i].startswith("-"):
            given[opt["name"]] = args[i]
            i += 1
        else:
            return None  # a missing value, or one that looks like an option
    if not paths:
        return None
    out: dict[str, Any] = {spec["argument"]: paths}
    for opt in spec["options"]:
        value = given.get(opt["name"], opt["default"])
        if opt["read"] not in ("flag", "text") and value is not None:
            try:
                value = READERS[opt["read"]](value)
            except BadValue:
                return None
        out[opt["name"]] = value
    return out


def run(argv: list[str]) -> int | None:
    """Runs the scan command when `read_args` reads `argv`; returns its exit code, or None when typer
    must read `argv` (nothing has run then)."""
    kwargs = read_args(argv)
    if kwargs is None:
        return None
    from fastscan.cli.scan_run import scan

    return scan(**kwargs)


def spec_from_typer() -> dict[str, Any]:
    """The spec `read_args` follows, read off typer's scan command (what `scan_args.json` must hold).

    Refuses what `read_args` cannot read as typer does (a `--x/--no-x` pair, a repeated option, an
    environment variable, a callback, a value read by anything but plain text or a named reader)."""
    import typer

    from fastscan.cli import root

    group = typer.main.get_command(root.app)
    command = group.commands["scan"]
    argument, options = None, []
    for p in command.params:
        where = f"scan's {p.name}"
        extras = getattr(p, "secondary_opts", []) or getattr(p, "prompt", None)
        if p.envvar or p.callback or p.is_eager or p.multiple or extras:
            raise ValueError(f"{where}: the quick path cannot read it as typer does")
        if p.param_type_name == "argument":
            if argument is not None or p.nargs != -1 or not p.required:
                raise ValueError(f"{where}: the quick path reads one argument of one or more values")
            argument = p.name
            continue
        parser = getattr(p.type_descriptor.parameter_info, "parser", None)
        if p.is_flag:
            read, default = "flag", bool(p.default)
        elif parser is not None and getattr(parser, "reader", None) in READERS:
            read, default = parser.reader, getattr(p.default, "value", p.default)
        elif parser is None and p.type_descriptor.annotation in (str, str | None):
            read, default = "text", p.default
        else:
            raise ValueError(f"{where}: read by neither plain text nor a named reader")
        if p.nargs != 1 or getattr(p, "count", False):
            raise ValueError(f"{where}: the quick path reads one value per option")
        options.append({"name": p.name, "opts": list(p.opts), "read": read, "default": default})
    return {
        "_doc": "The scan command's arguments, read off its typer declaration by "
        "fastscan.cli.fast.spec_from_typer; the quick path (fastscan.cli.fast) reads argv by it. "
        "Generated: FASTSCAN_BLESS=1 pytest tests/test_cli_quick.py -k spec",
        "commands": sorted(name for name in root.COMMANDS if name != "scan"),
        "argument": argument,
        "options": options,
    }
