"""The one error printer of the CLI: exit codes, `fastscan: error: ...` lines, usage errors in plain words."""

from __future__ import annotations

import os
import sys
from typing import Any

from fastscan.terminal import visible

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def say(line: str, err: bool = False) -> None:
    """Prints one line to stdout (or stderr) at once (the streams are looked up now: tests swap them)."""
    stream = sys.stderr if err else sys.stdout
    stream.write(line + "\n")
    stream.flush()


def fail(message: str, code: int = EXIT_USAGE) -> SystemExit:
    """Prints an error of the run itself to stderr (a path in it shown by `terminal.visible`) and returns
    the exit to raise (a `SystemExit`, which the framework passes through untouched, so the quick path
    and typer's commands end alike)."""
    say(f"fastscan: error: {visible(message)}", err=True)
    return SystemExit(code)


def interrupted() -> SystemExit:
    """Ctrl-C (or SIGTERM, which `fastscan.cli.main` turns into it): prints `fastscan: error: interrupted`
    and returns the exit (130) to raise.

    CPython marks a `KeyboardInterrupt` that left code `exec` ran from source text as unhandled
    (dataclasses build their methods that way, so a Ctrl-C during an import does it), and we saw the
    process then, once the interpreter had finished, kill itself with SIGINT instead of exiting 130,
    although the exception was caught (5 of ~250 runs). `exec` of source text clears that mark when it
    starts: with one empty `exec` here, 0 of ~280 runs."""
    exec("")  # the constant empty program: see above
    return fail("interrupted", EXIT_INTERRUPTED)


def warn(message: str) -> None:
    """Prints a warning to stderr (a path in it shown by `terminal.visible`)."""
    say(f"fastscan: warning: {visible(message)}", err=True)


def closed_pipe() -> SystemExit:
    """The reader of stdout went away (`| head`): silence stdout and return the exit (2) to raise."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError:
        pass
    return SystemExit(EXIT_USAGE)


def _option_names(ctx: Any) -> list[str]:
    names: list[str] = []
    for p in ctx.command.get_params(ctx) if ctx is not None else []:
        if getattr(p, "param_type_name", "") == "option":
            names += [*p.opts, *p.secondary_opts]
    return names


def _param_label(param: Any) -> str:
    if param is None:
        return "a value"
    if getattr(param, "param_type_name", "") == "argument":
        return param.metavar or (param.name or "").upper()
    return "/".join(param.opts)


def usage_message(e: Exception) -> str:
    """A framework usage error (unknown option, bad value, missing argument) said in plain words."""
    name = type(e).__name__
    ctx = getattr(e, "ctx", None)
    if name == "NoArgsIsHelpError":
        return str(getattr(e, "message", e))
    if name == "NoSuchOption":
        import difflib

        opt = getattr(e, "option_name", "")
        close = difflib.get_close_matches(opt, _option_names(ctx), n=1, cutoff=0.75)
        return f"unknown option {opt}" + (f" (did you mean {close[0]}?)" if close else "")
    if name == "MissingParameter":
        param = getattr(e, "param", None)
        label = _param_label(param)
        if getattr(param, "param_type_name", "") == "argument":
            return f"missing {label}"
        return f"missing option {label}"
    if name == "BadParameter":
        label = _param_label(getattr(e, "param", None))
        return f"{label}: {e.message}"  # type: ignore[attr-defined]
    return str(getattr(e, "message", e))


def report_usage_error(e: Exception) -> int:
    """Prints a usage error with the command to get help; returns the exit code (2; 0 for bare help)."""
    ctx = getattr(e, "ctx", None)
    if type(e).__name__ == "NoArgsIsHelpError":  # `fastscan` alone: the help, as asked
        say(usage_message(e))
        return EXIT_OK
    where = ctx.command_path if ctx is not None else "fastscan"
    say(f"fastscan: error: {usage_message(e)}", err=True)
    say(f"(see `{where} --help`)", err=True)
    return EXIT_USAGE
