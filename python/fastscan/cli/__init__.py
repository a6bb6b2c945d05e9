"""The `fastscan` command line: one typer app (`fastscan.cli.root`), one module per command.

This package imports nothing at load time, so the command modules can import `fastscan.cli.errors` and
`fastscan.cli.choices` without an import circle; the app is built when `main` runs (or `app` is asked for).
"""

from __future__ import annotations

from typing import Any


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `fastscan` command."""
    from fastscan.cli.root import run

    run(argv)


def __getattr__(name: str) -> Any:
    if name == "app":
        from fastscan.cli.root import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
