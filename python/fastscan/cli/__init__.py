"""The `fastscan` command line: one typer app (`fastscan.cli.root`), one module per command.

This package imports nothing at load time, so the command modules can import `fastscan.cli.errors` and
`fastscan.cli.choices` without an import circle; the app is built when `main` runs (or `app` is asked for).
"""

from __future__ import annotations

from typing import Any


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `fastscan` command.

    SIGTERM is handled as Ctrl-C is (the same clean-up, no traceback), then exits 143 (128 + 15).
    Paths whose bytes are not UTF-8 print as those bytes (surrogate escapes), never as a crash.
    """
    import signal
    import sys

    from fastscan.cli.root import run

    terminated: list[int] = []

    def on_term(signum: int, _frame: object) -> None:
        terminated.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    try:
        run(argv)
    except SystemExit:
        if terminated:
            raise SystemExit(128 + signal.SIGTERM) from None
        raise


def __getattr__(name: str) -> Any:
    if name == "app":
        from fastscan.cli.root import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
