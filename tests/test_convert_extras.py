"""`convert` keeps a checkpoint's scalar pickle extras (`epoch`, `global_step`, ...) as `__metadata__`.

Checkpoints written by real `torch.save` (the `[torch]` extra, as in tests/test_torch_twins.py), read
back through the restricted reader (never executed). Layout: vae-sd.json (a standalone VAE, small enough
to save quickly), saved Lightning-style: `{"state_dict": ..., "epoch": ..., "global_step": ..., ...}`.
"""

import pytest
from safetensors import safe_open

from fastscan import _core, synth
from fastscan.fixes import commands

torch = pytest.importorskip("torch", reason="the [torch] extra writes the real checkpoints")


def state_dict(layout: str = "vae-sd") -> dict:
    g = torch.Generator().manual_seed(7)
    return {
        name: torch.randn(t["shape"], generator=g).to(torch.float16)
        for name, t in synth.load_layout(layout)["tensors"].items()
    }


def metadata(path) -> dict:
    with safe_open(str(path), "np") as f:
        return f.metadata() or {}


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_convert_keeps_scalar_extras_of_a_torch_saved_checkpoint(tmp_path, zipfile):
    sd = state_dict()
    ck = tmp_path / "model.ckpt"
    torch.save(
        {
            "epoch": 12,
            "global_step": 34567,
            "pytorch-lightning_version": "1.6.0",
            "lr": 0.25,
            "ema": True,
            "format": "mine",  # a name convert writes itself: kept under fastscan.ckpt.format
            "state_dict": sd,
            "hyper_parameters": {"lr": 1.0},  # not a scalar: left out
            "callbacks": None,  # not kept
        },
        ck,
        _use_new_zipfile_serialization=zipfile,
    )
    out = tmp_path / "model.safetensors"
    commands.convert(ck, out)
    meta = metadata(out)
    extras = {k: v for k, v in meta.items() if not k.startswith("fastscan.source")}
    assert extras == {
        "epoch": "12",
        "global_step": "34567",
        "pytorch-lightning_version": "1.6.0",
        "lr": "0.25",
        "ema": "true",
        "fastscan.ckpt.format": "mine",
        "format": "pt",
        "fastscan.fix": extras["fastscan.fix"],  # what the fix did (checked elsewhere)
    }
    with safe_open(str(out), "pt") as f:
        assert set(f.keys()) == set(sd)
        for name, v in sd.items():
            assert torch.equal(f.get_tensor(name), v), name


def test_a_plain_state_dict_has_no_extras(tmp_path):
    ck = tmp_path / "vae.pt"
    torch.save(state_dict(), ck)
    # no extras: only what convert writes itself, the hashes left for the core's executor to fill
    assert [tuple(kv) for kv in _core.read_tensors(str(ck))["convert_metadata"]] == [
        ("format", "pt"),
        ("fastscan.source", "vae.pt"),
        ("fastscan.source_blake3", ""),
        ("fastscan.source_sha256", ""),
    ]
    out = tmp_path / "vae.safetensors"
    commands.convert(ck, out)
    assert {k for k in metadata(out) if not k.startswith("fastscan.")} == {"format"}
