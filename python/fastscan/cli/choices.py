"""Every choice the CLI offers, as enums, and the option builder that validates them once, at the edge."""

from __future__ import annotations

import os
from enum import Enum
from typing import Annotated, Any

import typer


class HashMode(str, Enum):
    """Which hashes a scan computes (`--hash`)."""

    none = "none"
    components = "components"
    full = "full"


class FailOn(str, Enum):
    """The lowest severity that makes the exit code 1 (`--fail-on`)."""

    critical = "critical"
    error = "error"
    warning = "warning"
    never = "never"


class TableFormat(str, Enum):
    """How `scan` prints for a person (`--format`): rich tables, or tab-separated lines for programs."""

    table = "table"
    tsv = "tsv"


class Prune(str, Enum):
    """What `fix --prune` drops."""

    ema = "ema"
    junk = "junk"
    all = "all"


class Dtype(str, Enum):
    """What `fix --dtype` casts floats to."""

    fp16 = "fp16"
    bf16 = "bf16"
    fp32 = "fp32"


class Component(str, Enum):
    """What `extract --component` writes: a role, or the exact name of a text encoder."""

    vae = "vae"
    unet = "unet"
    text_encoder = "text-encoder"
    clip_l = "clip_l"
    clip_g = "clip_g"
    open_clip_h = "open_clip_h"
    t5xxl = "t5xxl"


class HashFormat(str, Enum):
    """The line format of `fastscan hashes` (`--format`)."""

    b3sum = "b3sum"
    sha256sum = "sha256sum"
    autov2 = "autov2"
    csv = "csv"


class ExportFormat(str, Enum):
    """Whose hash files `fastscan export` writes (`--format`)."""

    a1111 = "a1111"
    civitai_info = "civitai-info"
    cm_info = "cm-info"


class DedupeAction(str, Enum):
    """What `dedupe --action` does with the redundant copies."""

    report = "report"
    hardlink = "hardlink"
    reflink = "reflink"
    delete = "delete"


def _parser(enum: type[Enum]) -> Any:
    values = [e.value for e in enum]

    def parse(value: Any) -> Enum:
        if isinstance(value, enum):
            return value
        try:
            return enum(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a choice; use one of {', '.join(values)}") from None

    return parse


def choice(enum: type[Enum], *decls: str, help: str, show_default: bool = True) -> Any:
    """A typer Option taking one of `enum`'s values, shown as `a|b|c`, refused in plain words otherwise."""
    return typer.Option(
        *decls,
        help=help,
        metavar="|".join(e.value for e in enum),
        parser=_parser(enum),
        show_default=show_default,
    )


def max_jobs() -> int:
    """The most threads `--jobs` gets: 4 per core (more only adds contention)."""
    return 4 * (os.cpu_count() or 1)


def jobs_option() -> Any:
    """`--jobs N` / `-j N`: threads, 0 for every core, capped at `max_jobs()`."""
    return typer.Option(
        "--jobs",
        "-j",
        metavar="N",
        parser=_parse_jobs,
        help=f"Threads (0, the default: one per core; at most 4 per core, {max_jobs()} here).",
        show_default=False,
    )


def _parse_jobs(value: Any) -> int:
    try:
        n = int(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number of threads") from None
    if n < 0:
        raise typer.BadParameter(f"{n} threads: give 0 (one per core) or more")
    return n


def bounded_jobs(n: int) -> int:
    """`n` capped at `max_jobs()`, with a warning when it was larger."""
    cap = max_jobs()
    if n > cap:
        from fastscan.cli.errors import warn

        warn(f"--jobs {n} is more than 4 threads per core; using {cap}")
        return cap
    return n


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
