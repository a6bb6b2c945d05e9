"""The demo library: small files with known problems, built from the real layouts (`fastscan demo`).

Every model file is a sparse safetensors file with a full-size header built from a real layout (see
`shared/data/layouts/`; the ones used here ship packed in `fastscan/data/demo-layouts.json.gz`, written by
`scripts/pack-demo-layouts`), so the library costs a few MB of disk whatever its apparent size; one small
pickle shows a booby-trapped checkpoint. Each file is named for its problem.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastscan import synth

# The real layouts the demo files are built from, shipped with the package.
LAYOUTS_USED = frozenset(
    {
        "sd15",
        "sdxl",
        "sdxl-posids-f16",
        "vae-sd",
        "lora-sd15-kohya",
        "embedding-sd15",
        "sd15-full-ema",
        "sd3-medium",
        *(layout for layout, _ in synth.DIFFUSERS_SD15.values()),
    }
)
PACKED_LAYOUTS = "fastscan/data/demo-layouts.json.gz"
README = "README.txt"
README_FIRST_LINE = "fastscan demo library: every file is named for its problem."


class NotDemoFolder(OSError):
    """The target folder holds files the demo did not write (it is never written into without --force)."""


@functools.cache
def _packed() -> dict[str, dict[str, list]]:
    data = resources.files("fastscan").joinpath(PACKED_LAYOUTS.removeprefix("fastscan/")).read_bytes()
    return json.loads(gzip.decompress(data))


def packed_layouts() -> dict[str, dict[str, dict]]:
    """Every shipped layout as {name: {tensor: {"dtype", "shape"}}} (the `tensors` of a real layout)."""
    return {name: _layout(name) for name in _packed()}


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
    """A fresh copy of a shipped layout's tensors: {name: {"dtype", "shape"}}."""
    return {t: {"dtype": d, "shape": list(shape)} for t, (d, shape) in _packed()[name].items()}


def _plain(layout: str, **kw) -> Callable[[Path], None]:
    def write(p: Path) -> None:
        synth.write_safetensors(p, _layout(layout), **kw)

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
    synth.write_safetensors(p, _layout("sd15"))
    with open(p, "r+b") as f:
        f.truncate(os.path.getsize(p) * 6 // 10)


def _malformed_header(p: Path) -> None:
    # One byte of the JSON header broken (`"shape":` -> `"shape";`): not JSON any more.
    synth.write_safetensors(p, _layout("vae-sd"))
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
    synth.write_safetensors(p, _layout("embedding-sd15"), data={"emb_params": vec.tobytes()})


def _dangerous_pickle(p: Path) -> None:
    # What a booby-trapped .ckpt does: a pickle that imports os.system and calls it on load. The command is
    # a harmless echo; fastscan only reads the bytes, it never unpickles.
    cmd = b"echo this pickle ran a command"
    p.write_bytes(
        b"\x80\x02"  # PROTO 2
        + b"cposix\nsystem\n"  # GLOBAL posix.system
        + b"X"
        + len(cmd).to_bytes(4, "little")
        + cmd  # BINUNICODE
        + b"\x85R."  # TUPLE1, REDUCE, STOP
    )


def _merge_with_recipe(p: Path) -> None:
    # What the web UI's checkpoint merger writes into __metadata__ (fastscan info shows it as Provenance).
    a, b = "a" * 64, "b" * 64
    recipe = {"type": "webui", "primary_model_hash": a, "secondary_model_hash": b,
              "tertiary_model_hash": None, "interp_method": "Weighted sum", "multiplier": 0.3}
    models = {a: {"name": "dreamshaper_8", "legacy_hash": "879db523", "sd_merge_recipe": None},
              b: {"name": "anything-v5", "legacy_hash": "7f96a1a9", "sd_merge_recipe": None}}
    meta = {"sd_merge_recipe": json.dumps(recipe), "sd_merge_models": json.dumps(models)}
    synth.write_safetensors(p, _layout("sd15"), metadata=meta)


def _object_array_npy(p: Path) -> None:
    # An .npy object array whose pickle imports os.system (np.load(allow_pickle=True) would run it).
    pkl = b"\x80\x02]q\x00cos\nsystem\nq\x01a."
    h = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    h += " " * (-(10 + len(h) + 1) % 64) + "\n"
    p.write_bytes(b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h.encode() + pkl)


def _diffusers(p: Path) -> None:
    synth.write_diffusers(p, load=_layout)


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
        "clean-sd15-diffusers",
        "none: SD 1.5 as a diffusers folder, reported as one model (diffusers-sd15-*)",
        (),
        _diffusers,
    ),
    DemoFile(
        "merged-sd15-with-recipe.safetensors",
        "none: a web UI merge whose recipe and parents `fastscan info` shows as Provenance (sd15)",
        (),
        _merge_with_recipe,
    ),
    DemoFile(
        "code-running-object-array.npy",
        "a NumPy object array whose pickle runs os.system when loaded with allow_pickle=True",
        ("pickle.dangerous-import", "npy.object-array"),
        _object_array_npy,
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


def is_demo_folder(directory: Path) -> bool:
    """True when `directory` is missing, empty, or holds nothing but what `write_library` writes there."""
    try:
        entries = set(os.listdir(directory))
    except FileNotFoundError:
        return True
    if not entries:
        return True
    ours = {f.name for f in FILES} | {README}
    if not entries <= ours or README not in entries:
        return False
    try:
        with open(directory / README, encoding="utf-8") as f:
            return f.readline().rstrip("\n") == README_FIRST_LINE
    except (OSError, UnicodeDecodeError):
        return False


def write_library(directory: str | os.PathLike, *, force: bool = False) -> list[Path]:
    """Writes every demo file (and a README.txt naming each problem) into `directory`; returns the paths.

    Raises NotDemoFolder when `directory` holds files the demo did not write (unless `force`), OSError when
    the filesystem cannot hold sparse files (the library would take ~32 GB).
    """
    d = Path(directory)
    if not force and not is_demo_folder(d):
        raise NotDemoFolder(f"{d} is not empty and was not made by `fastscan demo`")
    d.mkdir(parents=True, exist_ok=True)
    if not supports_sparse_files(d):
        raise OSError(f"{d}: this filesystem does not keep sparse files; the demo would write ~32 GB")
    paths = []
    for f in FILES:
        p = d / f.name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.is_symlink() or p.exists():
            p.unlink()
        f.write(p)
        paths.append(p)
    lines = [README_FIRST_LINE, ""]
    lines += [f"{f.name}: {f.problem}" + (f"  [{', '.join(f.checks)}]" if f.checks else "") for f in FILES]
    (d / README).write_text("\n".join(lines) + "\n")
    return paths


def expected_checks(hash: str = "none") -> dict[str, set[str]]:
    """File name -> the checks the demo file must fire when scanned with this hash mode."""
    skip = DATA_PASS_CHECKS if hash == "none" else frozenset()
    return {f.name: set(f.checks) - skip for f in FILES}
