"""The `fix`, `convert`, `extract` and `bake-vae` commands: option parsing and output only.

The work is in fastscan.fixes.commands, imported when a command runs so `fastscan --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fastscan.fixes.errors import FixError


def _report(res: Any) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    for a in res.actions:
        console.print(f"  - {escape(a)}")
    if res.backup is not None:
        console.print(f"[green]backup[/] {escape(str(res.backup))} (verified)")
    if res.out is not None:
        console.print(f"[green]wrote[/] {escape(str(res.out))} (verified)")


def _run(name: str, *args, **kw) -> None:
    """Runs the named function of fastscan.fixes.commands (imported only now: it loads numpy)."""
    from fastscan.fixes import commands

    try:
        res = getattr(commands, name)(*args, **kw)
    except FixError as e:
        typer.echo(f"fastscan: error: {e}", err=True)
        raise typer.Exit(2) from None
    _report(res)


OutOpt = Annotated[Path, typer.Option("-o", "--output", help="File to write (never the input).")]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Overwrite OUT if it exists; prune/extract/bake-vae also on a low-confidence identification.",
    ),
]


def register(app: typer.Typer) -> None:
    """Adds the `fix`, `convert`, `extract` and `bake-vae` commands to a typer app."""

    @app.command("fix")
    def fix_cmd(
        file: Annotated[Path, typer.Argument(help="safetensors file to repair")],
        output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write.")] = None,
        clip: Annotated[bool, typer.Option("--clip", help="Reset position_ids to int64 0..n-1.")] = False,
        prune: Annotated[str | None, typer.Option("--prune", help="Drop ema, junk or all.")] = None,
        dtype: Annotated[str | None, typer.Option("--dtype", help="Cast floats: fp16, bf16 or fp32.")] = None,
        in_place: Annotated[bool, typer.Option("--in-place", help="Replace FILE (needs --backup).")] = False,
        backup: Annotated[
            Path | None, typer.Option("--backup", help="Folder for the verified backup.")
        ] = None,
        force: ForceOpt = False,
    ) -> None:
        """Repair a model: CLIP position_ids, EMA/junk keys, precision. No option: what the scan advises."""
        _run(
            "fix",
            file,
            output,
            clip=clip,
            prune=prune,
            dtype=dtype,
            in_place=in_place,
            backup=backup,
            force=force,
        )

    @app.command("convert")
    def convert_cmd(
        file: Annotated[Path, typer.Argument(help="pickle checkpoint (.ckpt, .pt, .pth, .bin)")],
        output: OutOpt,
        force: ForceOpt = False,
    ) -> None:
        """Convert a pickle checkpoint to safetensors without executing it."""
        _run("convert", file, output, force=force)

    @app.command("extract")
    def extract_cmd(
        file: Annotated[Path, typer.Argument(help="model file")],
        component: Annotated[str, typer.Option("--component", help="vae, unet or text-encoder")],
        output: OutOpt,
        force: ForceOpt = False,
    ) -> None:
        """Write one component alone, under the names a standalone file of it has."""
        _run("extract", file, component, output, force=force)

    @app.command("bake-vae")
    def bake_vae_cmd(
        ckpt: Annotated[Path, typer.Argument(help="checkpoint")],
        vae: Annotated[Path, typer.Option("--vae", help="standalone VAE file")],
        output: OutOpt,
        force: ForceOpt = False,
    ) -> None:
        """Replace a checkpoint's VAE with a standalone one."""
        _run("bake_vae", ckpt, vae, output, force=force)
