"""Checkpoints written by real `torch.save` read back through the restricted reader (never executed).

CI installs the `[torch]` extra, so these run there; torch writes the pickles, fastscan only reads bytes.
Each tensor table and component hash must match the safetensors twin of the same weights.
Layouts: vae-sd.json (standalone VAE), lora-sd15-kohya.json, embedding-sd15.json.
"""

import pytest

from fastscan import _core, synth

torch = pytest.importorskip("torch", reason="the [torch] extra writes the real checkpoints")
safetensors_torch = pytest.importorskip("safetensors.torch")

TORCH_DTYPES = {"F16": torch.float16, "F32": torch.float32, "BF16": torch.bfloat16, "I64": torch.int64}


def state_dict(layout: str, seed: int = 0) -> dict:
    """Random weights in the real layout's names, dtypes and shapes."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in synth.load_layout(layout)["tensors"].items():
        dt = TORCH_DTYPES[t["dtype"]]
        if dt.is_floating_point:
            out[name] = torch.randn(t["shape"], generator=g, dtype=torch.float32).to(dt)
        else:
            n = max(1, int(torch.tensor(t["shape"]).prod()))
            out[name] = torch.arange(n, dtype=dt).reshape(t["shape"])
    return out


def table(path) -> dict:
    return {t["name"]: (t["dtype"], t["shape"]) for t in _core.read_tensors(str(path))["tensors"]}


@pytest.mark.parametrize("layout", ["vae-sd", "lora-sd15-kohya", "embedding-sd15"])
@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_torch_save_matches_safetensors_twin(tmp_path, layout, zipfile):
    sd = state_dict(layout)
    pt = tmp_path / "model.ckpt"
    torch.save(sd, pt, _use_new_zipfile_serialization=zipfile)
    st = tmp_path / "model.safetensors"
    safetensors_torch.save_file(sd, st)

    a = _core.scan_file(str(pt), hash="components")
    b = _core.scan_file(str(st), hash="components")
    assert a["format"] == ("torch-zip" if zipfile else "torch-legacy")
    assert not [f for f in a["findings"] if f["severity"] in ("critical", "warning")], a["findings"]
    assert table(pt) == table(st)
    assert (a["kind"], a["arch"]) == (b["kind"], b["arch"])
    for name, comp in b["components"].items():
        assert a["components"][name]["blake3"] == comp["blake3"], name


def test_checkpoint_nested_under_state_dict_and_non_contiguous(tmp_path):
    sd = state_dict("vae-sd", seed=1)
    # A transposed view is saved with its strides: it must hash as its contiguous bytes.
    key = "decoder.conv_in.weight"
    sd[key] = sd[key].transpose(0, 1).contiguous().transpose(0, 1)
    assert not sd[key].is_contiguous()
    pt = tmp_path / "vae.pt"
    torch.save({"state_dict": sd, "global_step": 7}, pt)
    st = tmp_path / "vae.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in sd.items()}, st)
    a = _core.scan_file(str(pt), hash="components")
    b = _core.scan_file(str(st), hash="components")
    assert table(pt) == table(st)
    assert a["components"]["vae"]["blake3"] == b["components"]["vae"]["blake3"]
