"""`fastscan.torch`: a loaded state dict scanned and fixed in memory, compared with the same weights on disk.

Real torch builds the state dicts (random weights in the real layouts' names and shapes); safetensors
writes their disk twins. In memory there is no file: whole-file hashes are absent and offsets in
findings are positions, so the comparison is of kind, arch, findings (check, severity), component
hashes; fixes are compared tensor by tensor with what `fastscan fix` writes for the disk twin.
"""

from __future__ import annotations

import pytest

from fastscan import _core
from fastscan.model import FileReport
from test_cli import run_cli
from test_torch_twins import state_dict

torch = pytest.importorskip("torch", reason="the [torch] extra")
safetensors_torch = pytest.importorskip("safetensors.torch")
fst = pytest.importorskip("fastscan.torch")

POS = "text_model.embeddings.position_ids"


def summary(r: FileReport) -> tuple:
    return (
        r.kind,
        r.arch,
        sorted((f.check, f.severity) for f in r.findings),
        {k: c.blake3 for k, c in r.components.items()},
        r.wasted_bytes,
    )


def broken_text_encoder() -> dict:
    """The SD1.5 text encoder with merged-model position_ids (float, the last ones off), a NaN, an F64 key."""
    sd = state_dict("diffusers-sd15-text-encoder")
    ids = torch.arange(77, dtype=torch.float32)
    ids[70:] -= 0.0003
    sd[POS] = ids.reshape(1, 77)
    w = sd["text_model.final_layer_norm.weight"]
    w[3] = float("nan")
    sd["junk.extra"] = torch.ones(8, dtype=torch.float64)
    return sd


@pytest.mark.parametrize("layout", ["lora-sd15-kohya", "embedding-sd15", "text-encoder"])
def test_memory_scan_equals_disk_scan(tmp_path, layout):
    sd = broken_text_encoder() if layout == "text-encoder" else state_dict(layout, seed=3)
    disk = tmp_path / "m.safetensors"
    safetensors_torch.save_file(sd, disk)
    mem = fst.scan_state_dict(sd)
    file = FileReport.from_dict(_core.scan_file(str(disk), hash="components"))
    assert summary(mem) == summary(file)
    assert mem.format == "state-dict"
    assert mem.hashes.blake3 is None and mem.hashes.sha256 is None
    weights = {k: c for k, c in mem.components.items() if k not in ('buffers', 'ema', 'junk')}
    assert weights and all(c.blake3 for c in weights.values())
    if layout == "text-encoder":
        checks = {f.check for f in mem.findings}
        assert {"clip.position-ids", "values.nan-inf"} <= checks, checks


def test_non_contiguous_and_shared_storage(tmp_path):
    sd = state_dict("lora-sd15-kohya", seed=5)
    name, t = next((k, v) for k, v in sd.items() if v.dim() == 2 and v.shape[0] != v.shape[1])
    sd[name] = t.t().contiguous().t()  # same values, column-major storage
    assert not sd[name].is_contiguous()
    disk = tmp_path / "m.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in sd.items()}, disk)
    file = FileReport.from_dict(_core.scan_file(str(disk), hash="components"))
    assert summary(fst.scan_state_dict(sd)) == summary(file)


def test_fix_in_memory_equals_fix_on_disk(tmp_path):
    sd = broken_text_encoder()
    disk = tmp_path / "m.safetensors"
    safetensors_torch.save_file(sd, disk)
    out = tmp_path / "fixed.safetensors"
    r = run_cli("fix", "--clip", "--prune", "junk", "--dtype", "fp16", "-o", str(out), str(disk))
    assert out.is_file(), r.stderr
    want = safetensors_torch.load_file(out)

    fixed, changes = fst.fix_state_dict(sd, clip=True, prune="junk", dtype="fp16")
    assert sorted(fixed) == sorted(want)
    for k, v in want.items():
        assert fixed[k].dtype == v.dtype, k
        assert torch.equal(fixed[k].nan_to_num(), v.nan_to_num()), k
    assert fixed[POS].dtype == torch.int64
    assert any("position_ids" in c for c in changes)
    # the input is untouched
    assert sd[POS].dtype == torch.float32 and sd["junk.extra"].dtype == torch.float64
    assert fixed["junk.extra"].dtype == torch.float16
    checks = {f.check for f in fst.scan_state_dict(fixed).findings}
    assert "clip.position-ids" not in checks


def test_refusals():
    with pytest.raises(ValueError, match="complex"):
        fst.scan_state_dict({"x": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(ValueError, match="twice|bytes"):
        _core.scan_memory([("a", "F32", [2], 0, 4)])
