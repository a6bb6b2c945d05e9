"""Every choice the CLI offers, as enums, and how each option's value is read: no framework imported.

The scan command's quick path (`fastscan.cli.fast`) reads its arguments with these readers alone;
`fastscan.cli.choices` hands the same readers to typer, turning `BadValue` into its usage error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import Enum
from typing import Any


class BadValue(ValueError):
    """An option's value that its reader refuses; the message says why in plain words."""


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


def max_jobs() -> int:
    """The most threads `--jobs` gets: 4 per core (more only adds contention)."""
    return 4 * (os.cpu_count() or 1)


def read_choice(enum: type[Enum]) -> Callable[[Any], Enum]:
    """The reader of one of `enum`'s values (an enum member passes as itself)."""
    values = [e.value for e in enum]

    def read(value: Any) -> Enum:
        if isinstance(value, enum):
            return value
        try:
            return enum(value)
        except ValueError:
            raise BadValue(f"{value!r} is not a choice; use one of {', '.join(values)}") from None

    return read


def read_jobs(value: Any) -> int:
    """`--jobs N`: a whole number of threads, 0 or more."""
    try:
        n = int(value)
    except ValueError:
        raise BadValue(f"{value!r} is not a number of threads") from None
    if n < 0:
        raise BadValue(f"{n} threads: give 0 (one per core) or more")
    return n


def bounded_jobs(n: int) -> int:
    """`n` capped at `max_jobs()`, with a warning when it was larger."""
    cap = max_jobs()
    if n > cap:
        from fastscan.cli.errors import warn

        warn(f"--jobs {n} is more than 4 threads per core; using {cap}")
        return cap
    return n


CHOICES = (HashMode, FailOn, TableFormat, Prune, Dtype, Component, HashFormat, ExportFormat, DedupeAction)
# Every option value's reader by name: typer's `parser=` (`fastscan.cli.choices`) and the quick path's
# spec (`fastscan/cli/scan_args.json`) both name the reader they use.
READERS: dict[str, Callable[[Any], Any]] = {e.__name__: read_choice(e) for e in CHOICES}
READERS["jobs"] = read_jobs
