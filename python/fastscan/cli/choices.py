"""The typer options of the choices the CLI offers (`fastscan.cli.options`), validated once, at the edge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from fastscan.cli.options import READERS, BadValue, HashMode, max_jobs


def typer_reader(name: str) -> Callable[[Any], Any]:
    """`READERS[name]` as a typer `parser=`: a refused value becomes typer's usage error. The reader's
    name rides along, for the quick path's spec (`fastscan.cli.fast`)."""
    read = READERS[name]

    def parse(value: Any) -> Any:
        try:
            return read(value)
        except BadValue as e:
            raise typer.BadParameter(str(e)) from None

    parse.reader = name  # type: ignore[attr-defined]
    return parse


def choice(enum: type[Any], *decls: str, help: str, show_default: bool = True) -> Any:
    """A typer Option taking one of `enum`'s values, shown as `a|b|c`, refused in plain words otherwise."""
    return typer.Option(
        *decls,
        help=help,
        metavar="|".join(e.value for e in enum),
        parser=typer_reader(enum.__name__),
        show_default=show_default,
    )


def jobs_option() -> Any:
    """`--jobs N` / `-j N`: threads, 0 for every core, capped at `max_jobs()`."""
    return typer.Option(
        "--jobs",
        "-j",
        metavar="N",
        parser=typer_reader("jobs"),
        help=f"Threads (0, the default: one per core; at most 4 per core, {max_jobs()} here).",
        show_default=False,
    )


# Options several commands share, spelled once.
HashOpt = Annotated[
    HashMode,
    choice(HashMode, "--hash", help="none: headers only; components: also component hashes; full: file too."),
]
Sha256Opt = Annotated[
    bool, typer.Option("--sha256", help="Also compute SHA-256, AutoV2 and the addnet hash.")
]
JobsOpt = Annotated[int, jobs_option()]
NoCacheOpt = Annotated[
    bool, typer.Option("--no-cache", help="Read every file again; do not use the scan cache.")
]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url",
        metavar="URL",
        help="S3-compatible service for s3:// URLs (default: $AWS_ENDPOINT_URL, else AWS). "
        "Credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.",
    ),
]
