"""Golden outputs of `fix`, `convert`, `extract` and `bake-vae`: the BLAKE3 of each file they write.

Each case names its inputs by how they are built: a demo-library file (`demo:NAME`, written by
`fastscan.demo`'s writer for NAME from the real layouts) or a real file (`real:NAME`, read in place from
../shared/data/real). `python tests/golden_fixes.py` runs every case with the code of the checkout and
rewrites tests/golden/fixes.json; tests/test_golden.py re-runs them and compares. A change that is meant
to change what a fix writes updates the JSON in the same commit and says so.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import blake3

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden" / "fixes.json"
REAL = HERE.parent / ".." / "shared" / "data" / "real"

SD15_CLIP = "demo:clip-position-ids-drifted-sd15.safetensors"
SD15_EMA = "demo:ema-left-in-sd15-full-ema.safetensors"
SD15_F64 = "demo:float64-tensor-sd15.safetensors"
SD15_JUNK = "demo:lora-leftover-keys-sd15.safetensors"
SD15_TRAILING = "demo:trailing-bytes-sd15.safetensors"
SD15 = "demo:clean-sd15.safetensors"
SDXL = "demo:clean-sdxl.safetensors"
SD3 = "demo:sd3-medium-no-text-encoders.safetensors"
VAE = "demo:clean-vae.safetensors"
EMB = "demo:nan-values-embedding.safetensors"
LORA_F32 = "real:cloneofsimo-lora_lora_disney.safetensors"
LORA_MIXED = "real:cloneofsimo-lora_lora_disney_inpainting.safetensors"
LORA_F16 = "real:cloneofsimo-lora_analog_svd_rank4.safetensors"

# name -> (command, input specs, keyword options)
CASES: dict[str, tuple[str, list[str], dict]] = {
    "fix-clip": ("fix", [SD15_CLIP], {"clip": True}),
    "fix-auto-clip": ("fix", [SD15_CLIP], {}),
    "fix-prune-ema": ("fix", [SD15_EMA], {"prune": "ema"}),
    "fix-prune-junk": ("fix", [SD15_JUNK], {"prune": "junk"}),
    "fix-prune-all": ("fix", [SD15_EMA], {"prune": "all"}),
    "fix-auto-float64": ("fix", [SD15_F64], {}),
    "fix-trailing": ("fix", [SD15_TRAILING], {}),
    "fix-dtype-fp16-sd15": ("fix", [SD15_F64], {"dtype": "fp16"}),
    "fix-dtype-bf16-sd15": ("fix", [SD15], {"dtype": "bf16"}),
    "fix-dtype-fp32-sd15": ("fix", [SD15], {"dtype": "fp32"}),
    "fix-dtype-fp16-nan-embedding": ("fix", [EMB], {"dtype": "fp16"}),
    "fix-dtype-bf16-nan-embedding": ("fix", [EMB], {"dtype": "bf16"}),
    "fix-dtype-fp16-real-f32": ("fix", [LORA_F32], {"dtype": "fp16"}),
    "fix-dtype-bf16-real-f32": ("fix", [LORA_F32], {"dtype": "bf16"}),
    "fix-dtype-fp16-real-mixed": ("fix", [LORA_MIXED], {"dtype": "fp16"}),
    "fix-dtype-bf16-real-mixed": ("fix", [LORA_MIXED], {"dtype": "bf16"}),
    "fix-dtype-fp32-real-mixed": ("fix", [LORA_MIXED], {"dtype": "fp32"}),
    "fix-dtype-fp32-real-f16": ("fix", [LORA_F16], {"dtype": "fp32"}),
    "fix-dtype-bf16-real-f16": ("fix", [LORA_F16], {"dtype": "bf16"}),
    "extract-vae-sd15": ("extract", [SD15], {"component": "vae"}),
    "extract-unet-sd15": ("extract", [SD15], {"component": "unet"}),
    "extract-text-encoder-sd15": ("extract", [SD15], {"component": "text-encoder"}),
    "extract-clip_l-sdxl": ("extract", [SDXL], {"component": "clip_l"}),
    "extract-clip_g-sdxl": ("extract", [SDXL], {"component": "clip_g"}),
    "extract-vae-sd3": ("extract", [SD3], {"component": "vae"}),
    "bake-vae-sd15": ("bake_vae", [SD15, VAE], {}),
    "convert-real-vae-approx": ("convert", ["real:a1111_VAE-approx_model.pt"], {}),
    "convert-real-te-lora": ("convert", ["real:cloneofsimo-lora_analog_svd_distill.text_encoder.pt"], {}),
    "convert-real-ti": ("convert", ["real:cloneofsimo-lora_lora_kiriko2.ti.pt"], {}),
    "convert-real-taef2-decoder": ("convert", ["real:taesd_taef2_decoder.pth"], {}),
    "convert-real-taef2-encoder": ("convert", ["real:taesd_taef2_encoder.pth"], {}),
    "convert-real-taesana-encoder": ("convert", ["real:taesd_taesana_encoder.pth"], {}),
}


def build_input(spec: str, workdir: Path) -> Path:
    """The input file a spec names: a demo file written into `workdir` (once), or a real file in place."""
    how, name = spec.split(":", 1)
    if how == "real":
        return REAL / name
    from fastscan import demo

    p = workdir / name
    if not p.exists():
        demo_file = next(f for f in demo.FILES if f.name == name)
        demo_file.write(p)
    return p


def file_blake3(path: Path) -> str:
    """BLAKE3 of a whole file."""
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    h.update_mmap(str(path))
    return h.hexdigest()


def run_case(name: str, workdir: Path, check=None) -> str:
    """Runs one case with today's code; returns the BLAKE3 of the file it wrote (removed afterwards).

    `check(path)`, when given, is called on the output first.
    """
    from fastscan.fixes import commands

    cmd, specs, kw = CASES[name]
    inputs = [build_input(s, workdir) for s in specs]
    out = workdir / f"out-{name}.safetensors"
    kw = dict(kw)
    if cmd == "extract":
        res = commands.extract(inputs[0], kw.pop("component"), out, **kw)
    else:
        res = getattr(commands, cmd)(*inputs, out, **kw)
    assert res.out == out, f"{name}: wrote {res.out}"
    try:
        if check is not None:
            check(out)
        return file_blake3(out)
    finally:
        out.unlink()


def regenerate() -> None:
    """Runs every case and writes tests/golden/fixes.json."""
    with tempfile.TemporaryDirectory(prefix="fastscan-golden-") as d:
        digests = {name: run_case(name, Path(d)) for name in CASES}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"cases": CASES, "blake3": digests}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({len(digests)} outputs)", file=sys.stderr)


if __name__ == "__main__":
    regenerate()
