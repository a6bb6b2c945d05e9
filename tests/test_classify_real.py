"""Kind and arch of every real layout (../shared/data/layouts) and of the real safetensors files
(../shared/data/real), each written out and scanned by fastscan. The expected answers are written here
by hand from each layout's README entry, not computed."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastscan import _core, synth

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"

# layout -> (kind, arch, {component: tensors}) ; components as the report counts them
LAYOUTS = {
    "sd15": ("checkpoint", "sd1", {"unet": 686, "vae": 248, "clip_l": 196, "buffers": 1}),
    "sd15-emaonly-official": ("checkpoint", "sd1", {"unet": 686, "vae": 248, "clip_l": 196, "buffers": 15}),
    "sd15-full-ema": ("checkpoint", "sd1",
                      {"unet": 686, "vae": 248, "clip_l": 196, "buffers": 15, "ema": 686}),
    # What a training checkpoint adds to sd15: the UNet's EMA copy + schedule buffers. No loader takes it
    # as a model, but it is an SD1 UNet's weights (under EMA names), so: a unet, sd1, all of it EMA.
    "sd15-ema-extras": ("unet", "sd1", {"ema": 686, "buffers": 14}),
    "sd15-inpaint": ("checkpoint", "sd1-inpaint", {"unet": 686, "vae": 248, "clip_l": 196, "buffers": 1}),
    "sd21": ("checkpoint", "sd2", {"unet": 686, "vae": 248, "open_clip_h": 294}),
    "sdxl": ("checkpoint", "sdxl", {"unet": 1680, "vae": 248, "clip_l": 196, "clip_g": 390, "buffers": 1}),
    "sdxl-posids-f16": ("checkpoint", "sdxl",
                        {"unet": 1680, "vae": 248, "clip_l": 196, "clip_g": 390, "buffers": 1}),
    "sdxl-refiner": ("checkpoint", "sdxl-refiner", {"unet": 1220, "vae": 248, "clip_g": 390}),
    "sd3-medium": ("checkpoint", "sd3", {"unet": 491, "vae": 244}),
    "sd3-medium-incl-clips": ("checkpoint", "sd3", {"unet": 491, "vae": 244, "clip_l": 196, "clip_g": 517}),
    "sd3-medium-incl-clips-t5xxlfp16": (
        "checkpoint", "sd3", {"unet": 491, "vae": 244, "clip_l": 196, "clip_g": 517, "t5xxl": 220}),
    "flux1-dev": ("unet", "flux", {"unet": 780}),
    "flux-ae": ("vae", "unknown", {"vae": 244}),
    "vae-sd": ("vae", "unknown", {"vae": 248}),
    "lora-sd15-kohya": ("lora", "sd1", {"unet": 576, "text_encoder": 216}),
    "embedding-sd15": ("embedding", "sd1", {"embedding": 1}),
    "embedding-sdxl": ("embedding", "sdxl", {"embedding": 2}),
    "diffusers-sd15-unet": ("unet", "sd1", {"unet": 686}),
    "diffusers-sd15-vae": ("vae", "unknown", {"vae": 248}),
    "diffusers-sd15-text-encoder": ("text-encoder", "unknown", {"clip_l": 196, "buffers": 1}),
}

# real file -> (kind, arch, {component: tensors})
REAL_FILES = {
    # cloneofsimo lora_diffusion format: `unet:N:down|up`, `text_encoder:N:down|up`; the UNet's
    # cross-attention downs read 768 wide (CLIP-L), so SD1.
    "cloneofsimo-lora_analog_svd_rank4.safetensors": ("lora", "sd1", {"unet": 288, "text_encoder": 96}),
    # ... plus the two textual-inversion vectors <s1>, <s2> it was trained with.
    "cloneofsimo-lora_lora_disney.safetensors": ("lora", "sd1",
                                                 {"unet": 288, "text_encoder": 96, "embedding": 2}),
    # An inpainting LoRA touches only attention, which is the same in SD1 and SD1-inpaint: sd1.
    "cloneofsimo-lora_lora_disney_inpainting.safetensors": (
        "lora", "sd1", {"unet": 288, "text_encoder": 96, "embedding": 2}),
    # The other files of a model folder, in PyTorch's zip format (structure read through `fastscan info`).
    # The web UI's 'Approx NN' preview decoder: conv1 [8, 4, 7, 7] ... conv8 [3, 8, 3, 3].
    "a1111_VAE-approx_model.pt": ("vae-approx", "unknown", {"vae_approx": 16}),
    # A pickle of an empty dict: no tensors at all.
    "a1111_test_empty.pt": ("empty", "unknown", {}),
    # cloneofsimo's .pt LoRA: a list [up, down, ...]; 48 pairs whose downs all read 768 (CLIP-L):
    # an SD1 text-encoder LoRA.
    "cloneofsimo-lora_analog_svd_distill.text_encoder.pt": ("lora", "sd1", {"text_encoder": 96}),
    # 128 UNet pairs; 32 downs read 1024 wide: the cross-attention of an SD2 UNet (SD1's reads 768).
    "cloneofsimo-lora_lora_disney.pt": ("lora", "sd2", {"unet": 256}),
    # {"<krk>": tensor[768]}: one CLIP-L token vector.
    "cloneofsimo-lora_lora_kiriko2.ti.pt": ("embedding", "sd1", {"embedding": 1}),
    # TAESD halves: the encoder's 0.weight reads 3 (RGB) channels; the decoder has no 0.weight
    # (its layer 0 is a clamp).
    "taesd_taef2_decoder.pth": ("taesd", "unknown", {"taesd_decoder": 79}),
    "taesd_taef2_encoder.pth": ("taesd", "unknown", {"taesd_encoder": 79}),
    "taesd_taesana_encoder.pth": ("taesd", "unknown", {"taesd_encoder": 69}),
}


def test_every_layout_is_in_the_table():
    names = {p.stem for p in synth.layouts_dir().glob("*.json")}
    assert names == set(LAYOUTS), names ^ set(LAYOUTS)


def components(report: dict) -> dict:
    return {k: v["tensors"] for k, v in report["components"].items()}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_kind_and_arch(tmp_path, name):
    kind, arch, comps = LAYOUTS[name]
    p = synth.write_layout(tmp_path / f"{name}.safetensors", name)
    r = _core.scan_file(str(p), hash="none")
    assert (r["kind"], r["arch"]) == (kind, arch)
    assert components(r) == comps


def test_file_name_is_not_trusted(tmp_path):
    """An SDXL layout named like an SD1.5 VAE is still an SDXL checkpoint."""
    p = synth.write_layout(tmp_path / "sd15-vae-ft-mse.safetensors", "sdxl")
    r = _core.scan_file(str(p), hash="none")
    assert (r["kind"], r["arch"]) == ("checkpoint", "sdxl")


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_file_kind_and_arch(name):
    kind, arch, comps = REAL_FILES[name]
    r = _core.scan_file(str(REAL / name), hash="none")
    assert r["error"] is None
    assert (r["kind"], r["arch"]) == (kind, arch)
    assert components(r) == comps
    assert [f for f in r["findings"] if f["severity"] in ("error", "critical")] == []


def test_every_real_file_is_in_the_table():
    """All 11 real files, and none of them is `unknown`."""
    files = {p.name for p in REAL.iterdir() if p.name != "README.md"}
    assert len(files) == 11 and files == set(REAL_FILES)
    assert all(kind != "unknown" for kind, _, _ in REAL_FILES.values())


def test_empty_table_is_empty(tmp_path):
    """A readable file holding no tensors at all is kind `empty` (not a model of an unknown kind)."""
    p = synth.write_safetensors(tmp_path / "empty.safetensors", {})
    r = _core.scan_file(str(p), hash="none")
    assert (r["kind"], r["arch"]) == ("empty", "unknown")
