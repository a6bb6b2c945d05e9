"""The `fastscan` command line: one typer app (`fastscan.cli.root`), one module per command.

This package imports nothing at load time, so the command modules can import `fastscan.cli.errors` and
`fastscan.cli.choices` without an import circle; the app is built when `main` needs it (or `app` is
asked for): a plain `fastscan PATH...` runs by the quick path (`fastscan.cli.fast`), without typer.
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

    from fastscan.cli.errors import interrupted

    terminated: list[int] = []

    def on_term(signum: int, _frame: object) -> None:
        terminated.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    args = sys.argv[1:] if argv is None else argv
    try:
        try:  # the quick path (its imports included), else typer's imports: Ctrl-C as typer's path says it
            from fastscan.cli import fast

            code = fast.run(args)
            if code is None:
                from fastscan.cli.root import run
        except KeyboardInterrupt:
            raise interrupted() from None
        if code is not None:
            raise SystemExit(code)
        run(args)
    except SystemExit:
        if terminated:
            raise SystemExit(128 + signal.SIGTERM) from None
        raise


def __getattr__(name: str) -> Any:
    if name == "app":
        from fastscan.cli.root import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
