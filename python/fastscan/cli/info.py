"""`fastscan info FILE`: one file in detail (or its JSON file object)."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from fastscan.cli.choices import HashOpt, Sha256Opt
from fastscan.cli.errors import closed_pipe, fail
from fastscan.cli.options import HashMode
from fastscan.model import Format


def command(
    path: Annotated[str, typer.Argument(help="The file or diffusers folder to describe.", metavar="FILE")],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the file object of the JSON report.")
    ] = False,
    hash: HashOpt = HashMode.full,
    sha256: Sha256Opt = False,
    all_metadata: Annotated[
        bool, typer.Option("--all-metadata", help="Print every metadata key and value in full.")
    ] = False,
) -> None:
    """Describe one file in detail.

    Format, kind, arch, components, hashes, metadata, and each finding with what to do about it.
    """
    from fastscan.api import scan_one

    try:
        f = scan_one(path, hash=hash.value, sha256=sha256)
    except (OSError, ValueError) as e:
        raise fail(str(e)) from None
    # A diffusers folder is one model; any other directory is a library to scan.
    if os.path.isdir(path) and f.format != Format.DIFFUSERS:
        raise fail(f"{path} is a directory: `fastscan {path}` scans it")
    try:
        if json_out:
            typer.echo(json.dumps(f.to_dict(), indent=2, ensure_ascii=False))
            return
        from fastscan.render import print_file, stdout_console

        print_file(f, stdout_console(), all_metadata=all_metadata)
    except BrokenPipeError:
        raise closed_pipe() from None
