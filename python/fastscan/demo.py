"""`fastscan demo`: writes a small library with known problems from the real layouts, then scans it.

Every model file is a sparse safetensors file with a full-size header built from a real layout (see
`shared/data/layouts/`), so the library costs a few MB of disk whatever its apparent size; one small
pickle shows a booby-trapped checkpoint. Each file is named for its problem.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from fastscan import synth
from fastscan.options import HashMode

POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"
TOKEN_EMBEDDING = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"


@dataclass(frozen=True)
class DemoFile:
    """One file of the demo library: its name, what is wrong with it, the checks it must fire."""

    name: str
    problem: str
    checks: tuple[str, ...]
    write: Callable[[Path], None]


def _layout(name: str) -> dict:
    return synth.load_layout(name)["tensors"]


def _plain(layout: str, **kw) -> Callable[[Path], None]:
    def write(p: Path) -> None:
        synth.write_layout(p, layout, **kw)

    return write


def _drifted_position_ids(p: Path) -> None:
    # As many fp32 merges store them: float, and index 76 drifted to 75.9975 (truncates to 75).
    tensors = _layout("sd15")
    tensors[POSITION_IDS] = {"dtype": "F32", "shape": [1, 77]}
    values = [float(i) for i in range(76)] + [75.9975]
    synth.write_safetensors(p, tensors, data={POSITION_IDS: synth.position_ids_bytes("F32", 77, values)})


def _offset_only_position_ids(p: Path) -> None:
    # A weighted merge that left F32 ids a hair above their index: every one still truncates right.
    tensors = _layout("sd15")
    tensors[POSITION_IDS] = {"dtype": "F32", "shape": [1, 77]}
    values = [i + 0.0001 * (i % 3) for i in range(77)]
    synth.write_safetensors(p, tensors, data={POSITION_IDS: synth.position_ids_bytes("F32", 77, values)})


def _zeroed_block(p: Path) -> None:
    # Every tensor gets a non-zero first element except UNet output_blocks.4, which a merge zeroed.
    tensors = _layout("sd15")
    synth.write_safetensors(p, tensors)
    synth.mark_first_elements(p, tensors, skip=("model.diffusion_model.output_blocks.4.",))


def _float64(p: Path) -> None:
    tensors = _layout("sd15")
    tensors[TOKEN_EMBEDDING] = {"dtype": "F64", "shape": [49408, 768]}
    synth.write_safetensors(p, tensors)


def _lora_leftovers(p: Path) -> None:
    # A merge that kept the LoRA it merged: the first 24 keys of a real kohya LoRA layout.
    tensors = _layout("sd15")
    lora = _layout("lora-sd15-kohya")
    tensors.update({k: lora[k] for k in sorted(lora)[:24]})
    synth.write_safetensors(p, tensors)


def _truncated(p: Path) -> None:
    synth.write_layout(p, "sd15")
    with open(p, "r+b") as f:
        f.truncate(os.path.getsize(p) * 6 // 10)


def _malformed_header(p: Path) -> None:
    # One byte of the JSON header broken (`"shape":` -> `"shape";`): not JSON any more.
    synth.write_layout(p, "vae-sd")
    with open(p, "r+b") as f:
        head = f.read(4096)
        at = head.index(b'"shape":')
        f.seek(at + len(b'"shape"'))
        f.write(b";")


def _nan_embedding(p: Path) -> None:
    import numpy as np

    vec = np.zeros((8, 768), dtype="<f4")
    vec[3, 100] = np.nan
    vec[5, 7] = np.inf
    synth.write_layout(p, "embedding-sd15", data={"emb_params": vec.tobytes()})


def _dangerous_pickle(p: Path) -> None:
    # What a booby-trapped .ckpt does: a pickle that imports os.system and calls it on load. The command is
    # a harmless echo; fastscan only reads the bytes, it never unpickles.
    cmd = b"echo this pickle ran a command"
    p.write_bytes(
        b"\x80\x02"  # PROTO 2
        + b"cposix\nsystem\n"  # GLOBAL posix.system
        + b"X" + len(cmd).to_bytes(4, "little") + cmd  # BINUNICODE
        + b"\x85R."  # TUPLE1, REDUCE, STOP
    )


FILES: tuple[DemoFile, ...] = (
    DemoFile("clean-sd15.safetensors", "none: an SD 1.5 pruned fp16 checkpoint (sd15)", (), _plain("sd15")),
    DemoFile("clean-sdxl.safetensors", "none: SDXL base 1.0 (sdxl)", (), _plain("sdxl")),
    DemoFile("clean-vae.safetensors", "none: the SD VAE (vae-sd)", (), _plain("vae-sd")),
    DemoFile(
        "clean-lora.safetensors",
        "none: a kohya LoRA for SD 1.5 (lora-sd15-kohya)",
        (),
        _plain("lora-sd15-kohya"),
    ),
    DemoFile(
        "clean-embedding.safetensors",
        "none: a textual inversion for SD 1.5 (embedding-sd15)",
        (),
        _plain("embedding-sd15"),
    ),
    DemoFile(
        "ema-left-in-sd15-full-ema.safetensors",
        "a training checkpoint with its EMA copy of the UNet (sd15-full-ema)",
        ("junk.ema",),
        _plain("sd15-full-ema"),
    ),
    DemoFile(
        "clip-position-ids-drifted-sd15.safetensors",
        "CLIP position_ids stored as F32 with index 76 drifted to 75.9975 (sd15)",
        ("clip.position-ids",),
        _drifted_position_ids,
    ),
    DemoFile(
        "float64-tensor-sd15.safetensors",
        "the token embedding stored as float64 (sd15)",
        ("dtype.float64", "dtype.mixed"),
        _float64,
    ),
    DemoFile(
        "lora-leftover-keys-sd15.safetensors",
        "24 lora_* keys left over from a merge (sd15 + lora)",
        ("junk.unknown-keys",),
        _lora_leftovers,
    ),
    DemoFile(
        "truncated-download-sd15.safetensors", "a download cut at 60% (sd15)", ("file.truncated",), _truncated
    ),
    DemoFile(
        "trailing-bytes-sd15.safetensors",
        "bytes after the last tensor (sd15)",
        ("file.unaccounted-bytes",),
        _plain("sd15", trailing=b"\0" * 4096),
    ),
    DemoFile(
        "malformed-header-vae.safetensors",
        "a header that is not JSON (vae-sd)",
        ("header.invalid",),
        _malformed_header,
    ),
    DemoFile(
        "duplicate-vae-renamed.safetensors",
        "the same VAE as clean-vae under another name (vae-sd)",
        (),
        _plain("vae-sd"),
    ),
    DemoFile(
        "sd3-medium-no-text-encoders.safetensors",
        "SD3 medium without its CLIP encoders (sd3-medium)",
        ("text-encoder.missing",),
        _plain("sd3-medium"),
    ),
    DemoFile(
        "code-running-pickle.ckpt",
        "a pickle checkpoint that runs a shell command when loaded with torch.load",
        ("pickle.dangerous-import", "format.legacy-pickle"),
        _dangerous_pickle,
    ),
    DemoFile(
        "nan-values-embedding.safetensors",
        "an embedding holding NaN and Inf (embedding-sd15; seen with --hash components or full)",
        ("values.nan-inf",),
        _nan_embedding,
    ),
    DemoFile(
        "sdxl-finetune-f16-position-ids.safetensors",
        "none that matters: an SDXL fine-tune with exact CLIP position_ids in F16, as most are saved "
        "(sdxl-posids-f16; info only)",
        ("clip.position-ids",),
        _plain("sdxl-posids-f16"),
    ),
    DemoFile(
        "clip-position-ids-offset-only-sd15.safetensors",
        "CLIP position_ids in F32 a hair above their index: no loader misreads them yet (sd15; warning)",
        ("clip.position-ids",),
        _offset_only_position_ids,
    ),
    DemoFile(
        "zeroed-block-merge-sd15.safetensors",
        "UNet output_blocks.4 all zeros, as a broken merge leaves it (sd15; seen with --hash components)",
        ("values.constant",),
        _zeroed_block,
    ),
)
# Checks that need the data pass (not run with --hash none).
DATA_PASS_CHECKS = frozenset({"values.nan-inf", "values.constant"})


def supports_sparse_files(directory: Path) -> bool:
    """True when a 64 MiB hole written in `directory` takes (almost) no disk."""
    probe = directory / ".fastscan-sparse-probe"
    try:
        with open(probe, "wb") as f:
            f.truncate(64 << 20)
            f.seek((64 << 20) - 1)
            f.write(b"\0")
        return probe.stat().st_blocks * 512 < (1 << 20)
    finally:
        probe.unlink(missing_ok=True)


def write_library(directory: str | os.PathLike) -> list[Path]:
    """Writes every demo file (and a README.txt naming each problem) into `directory`; returns the paths.

    Raises OSError when the filesystem cannot hold sparse files (the library would take ~32 GB).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if not supports_sparse_files(d):
        raise OSError(f"{d}: this filesystem does not keep sparse files; the demo would write ~32 GB")
    paths = []
    for f in FILES:
        p = d / f.name
        if p.exists():
            p.unlink()
        f.write(p)
        paths.append(p)
    lines = ["fastscan demo library: every file is named for its problem.", ""]
    lines += [f"{f.name}: {f.problem}" + (f"  [{', '.join(f.checks)}]" if f.checks else "") for f in FILES]
    (d / "README.txt").write_text("\n".join(lines) + "\n")
    return paths


def expected_checks(hash: str = "none") -> dict[str, set[str]]:
    """File name -> the checks the demo file must fire when scanned with this hash mode."""
    skip = DATA_PASS_CHECKS if hash == "none" else frozenset()
    return {f.name: set(f.checks) - skip for f in FILES}


def command(
    directory: Annotated[
        str, typer.Argument(help="Where to write the library.", metavar="DIR")
    ] = "demo-library",
    hash: Annotated[
        HashMode, typer.Option("--hash", help="Hashes for the scan (none keeps the demo fast).")
    ] = HashMode.none,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the JSON report instead of the tables.")
    ] = False,
) -> None:
    """Write a small library of files with known problems (from the real layouts), then scan it."""
    from fastscan.api import scan
    from fastscan.cli import fail

    try:
        if not (synth.layouts_dir() / "sd15.json").is_file():
            raise FileNotFoundError
    except FileNotFoundError:
        raise fail(
            "the demo needs the real tensor layouts (shared/data/layouts, next to the project) and "
            "did not find them; set FASTSCAN_LAYOUTS=/path/to/shared/data/layouts"
        ) from None
    try:
        write_library(directory)
    except OSError as e:
        raise fail(f"cannot write the demo library in {directory}: {e}") from None
    report = scan([directory], hash=hash.value)
    if json_out:
        typer.echo(report.to_json())
        return
    from rich.console import Console

    from fastscan.render import print_report

    console = Console()
    console.print(
        f"[bold]fastscan demo[/]: wrote {len(FILES)} model files to {directory}/ (see README.txt there)"
    )
    print_report(report, console)
    if hash.value == "none":
        console.print(
            f"[dim]data-pass checks ({', '.join(sorted(DATA_PASS_CHECKS))}) run with: "
            f"fastscan {directory} --hash components[/]"
        )
