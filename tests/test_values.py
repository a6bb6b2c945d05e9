"""values.nan-inf (contract §4): NaN and ±Inf counted per floating tensor in the data pass; values.constant.

Expected counts come from numpy (`isnan` / `isinf`) on the very bytes written. Fixtures are the real
standalone SD VAE layout (shared/data/layouts/vae-sd.json, F32), some tensors re-typed where a test
needs F16 / BF16 / F64 data (as fp16 / bf16 files and float64 exports store them).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastscan import _core, synth

NP = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}


def vae_layout() -> dict:
    return {k: dict(t) for k, t in synth.load_layout("vae-sd")["tensors"].items()}


def values_with_specials(dtype: str, n: int, rng, nan: int, inf: int) -> tuple[bytes, int, int]:
    """`n` random finite values of `dtype` with `nan` NaNs and `inf` ±Infs at random places."""
    vals = rng.standard_normal(n).astype(np.float64)
    idx = rng.permutation(n)[: nan + inf]
    vals[idx[:nan]] = np.nan
    vals[idx[nan:]] = np.where(rng.random(inf) < 0.5, np.inf, -np.inf)
    if dtype == "BF16":
        f32 = vals.astype("<f4")
        raw = (f32.view("<u4") >> 16).astype("<u2")
        back = (raw.astype("<u4") << 16).view("<f4")
        return raw.tobytes(), int(np.isnan(back).sum()), int(np.isinf(back).sum())
    arr = vals.astype(NP[dtype])
    return arr.tobytes(), int(np.isnan(arr).sum()), int(np.isinf(arr).sum())


def nan_finding(r):
    found = [f for f in r["findings"] if f["check"] == "values.nan-inf"]
    assert len(found) <= 1
    return found[0] if found else None


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """vae-sd with four tensors holding NaN/Inf, one per float dtype, and one clean random tensor."""
    rng = np.random.default_rng(42)
    lay = vae_layout()
    plan = {
        "decoder.conv_in.weight": ("F16", 17, 5),
        "encoder.conv_in.weight": ("BF16", 3, 9),
        "decoder.conv_out.weight": ("F32", 1, 0),
        "quant_conv.weight": ("F64", 0, 2),
    }
    data, want = {}, {}
    for name, (dtype, nan, inf) in plan.items():
        lay[name]["dtype"] = dtype
        n = int(np.prod(lay[name]["shape"]))
        data[name], want_nan, want_inf = values_with_specials(dtype, n, rng, nan, inf)
        want[name] = (dtype, want_nan, want_inf)
    clean = "decoder.norm_out.weight"
    data[clean] = rng.standard_normal(int(np.prod(lay[clean]["shape"]))).astype("<f4").tobytes()
    p = synth.write_safetensors(tmp_path_factory.mktemp("v") / "vae.safetensors", lay, data=data)
    return p, want


def test_counts_per_tensor_match_numpy(mixed):
    p, want = mixed
    f = nan_finding(_core.scan_file(str(p), hash="full"))
    assert f is not None and f["severity"] == "error"
    got = {t["name"]: (t["dtype"], t["nan"], t["inf"]) for t in f["details"]["tensors"]}
    assert got == want
    assert f["details"]["count"] == len(want)
    assert f["details"]["nan"] == sum(v[1] for v in want.values())
    assert f["details"]["inf"] == sum(v[2] for v in want.values())


def test_components_mode_runs_the_check(mixed):
    p, want = mixed
    f = nan_finding(_core.scan_file(str(p), hash="components"))
    assert f is not None and f["details"]["count"] == len(want)


def test_mode_none_skips_the_data_pass(mixed):
    p, _ = mixed
    assert nan_finding(_core.scan_file(str(p), hash="none")) is None


def test_clean_random_data_has_no_finding(tmp_path):
    rng = np.random.default_rng(3)
    lay = vae_layout()
    names = sorted(lay)[:40]
    data = {k: rng.standard_normal(int(np.prod(lay[k]["shape"]))).astype("<f4").tobytes() for k in names}
    p = synth.write_safetensors(tmp_path / "clean.safetensors", lay, data=data)
    r = _core.scan_file(str(p), hash="full")
    assert nan_finding(r) is None
    assert r["error"] is None


def test_integer_tensor_with_nan_bits_is_not_counted(tmp_path):
    # lora-sd15-kohya (a real kohya LoRA) with one tensor re-typed I32 holding F32 NaN bit patterns
    lay = {k: dict(t) for k, t in synth.load_layout("lora-sd15-kohya")["tensors"].items()}
    name = next(k for k, t in lay.items() if t["shape"])
    lay[name]["dtype"] = "I32"
    n = int(np.prod(lay[name]["shape"]))
    data = {name: np.full(n, np.nan, dtype="<f4").tobytes()}
    p = synth.write_safetensors(tmp_path / "lora.safetensors", lay, data=data)
    assert nan_finding(_core.scan_file(str(p), hash="full")) is None
    lay[name]["dtype"] = "F32"
    p = synth.write_safetensors(tmp_path / "lora-f32.safetensors", lay, data=data)
    f = nan_finding(_core.scan_file(str(p), hash="full"))
    assert f["details"]["tensors"] == [{"name": name, "dtype": "F32", "nan": n, "inf": 0}]


def test_lists_first_50_tensors_and_counts_all(tmp_path):
    lay = vae_layout()
    names = sorted(k for k, t in lay.items() if int(np.prod(t["shape"])) >= 1)[:60]
    inf = np.array([np.inf], dtype="<f4").tobytes()
    data = {}
    for k in names:
        n = int(np.prod(lay[k]["shape"]))
        data[k] = inf + bytes(4 * (n - 1))
    p = synth.write_safetensors(tmp_path / "inf.safetensors", lay, data=data)
    f = nan_finding(_core.scan_file(str(p), hash="components"))
    assert f["details"]["count"] == 60
    assert f["details"]["inf"] == 60 and f["details"]["nan"] == 0
    assert len(f["details"]["tensors"]) == 50


def test_truncated_file_counts_only_present_tensors(tmp_path):
    # vae-sd: NaN in the tensor the reference writer puts first and in the one it puts last
    lay = vae_layout()
    _, offsets = synth.header_for(lay)
    order = sorted(offsets, key=lambda k: offsets[k][0])
    first, last = order[0], order[-1]
    data = {}
    for k in (first, last):
        n = int(np.prod(lay[k]["shape"]))
        data[k] = np.full(n, np.nan, dtype="<f4").tobytes()
    p = synth.write_safetensors(tmp_path / "cut.safetensors", lay, data=data)
    size = p.stat().st_size
    with open(p, "r+b") as fh:
        fh.truncate(size - 2)  # the last tensor loses its last bytes
    r = _core.scan_file(str(p), hash="full", sha256=True)
    assert r["error"] is None
    checks = {f["check"] for f in r["findings"]}
    assert "file.truncated" in checks
    f = nan_finding(r)
    assert [t["name"] for t in f["details"]["tensors"]] == [first]
    assert r["components"]["vae"]["blake3"] is None  # its bytes are not all there


# --- values.constant ---------------------------------------------------------------------------


def constant_finding(r):
    found = [f for f in r["findings"] if f["check"] == "values.constant"]
    assert len(found) <= 1
    return found[0] if found else None


def elements(t: dict) -> int:
    return int(np.prod(t["shape"]))


@pytest.fixture(scope="module")
def lora_up():
    """The first lora_up of the kohya LoRA layout with at least 1,024 elements (320 x 16 and up)."""
    lay = synth.load_layout("lora-sd15-kohya")["tensors"]
    return next(k for k in sorted(lay) if ".lora_up." in k and elements(lay[k]) >= 1024)


def test_all_zero_lora_up_matrix_is_constant(tmp_path, lora_up):
    """lora-sd15-kohya; every tensor marked but one up-matrix, left as zeros of both signs (w * 0.0)."""
    lay = synth.load_layout("lora-sd15-kohya")["tensors"]
    n = elements(lay[lora_up])
    signed_zeros = np.tile(np.array([0x0000, 0x8000], dtype="<u2"), n // 2 + 1)[:n].tobytes()
    p = synth.write_safetensors(tmp_path / "lora.safetensors", lay, data={lora_up: signed_zeros})
    synth.mark_first_elements(p, lay, skip=(lora_up,))
    f = constant_finding(_core.scan_file(str(p), hash="components"))
    assert f is not None and f["severity"] == "warning"
    assert f["details"]["tensors"] == [{"name": lora_up, "dtype": "F16", "elements": n, "value": 0.0}]
    assert f["details"]["count"] == 1 and f["details"]["blocks"] == []
    assert _core.scan_file(str(p), hash="none")["findings"] == []  # a data-pass check only


def test_lora_with_varied_values_is_silent(tmp_path):
    lay = synth.load_layout("lora-sd15-kohya")["tensors"]
    p = synth.write_safetensors(tmp_path / "lora.safetensors", lay)
    assert synth.mark_first_elements(p, lay) == len(lay)
    assert constant_finding(_core.scan_file(str(p), hash="components")) is None


def test_zeroed_merge_block_is_reported_as_a_block(tmp_path):
    """sd15 layout; every tensor marked except those of UNet output_blocks.4 (a merge that zeroed it)."""
    lay = synth.load_layout("sd15")["tensors"]
    prefix = "model.diffusion_model.output_blocks.4."
    p = synth.write_safetensors(tmp_path / "m.safetensors", lay)
    synth.mark_first_elements(p, lay, skip=(prefix,))
    f = constant_finding(_core.scan_file(str(p), hash="components"))
    block = {k: t for k, t in lay.items() if k.startswith(prefix)}
    assert f["details"]["blocks"] == [
        {"component": "unet", "block": "output_blocks.4", "tensors": len(block),
         "elements": sum(elements(t) for t in block.values()), "value": 0.0}
    ]  # fmt: skip
    assert f["details"]["count"] == 0  # its big tensors are named by the block, not one by one
    assert "output_blocks.4" in f["message"]


# --- fp8 ---------------------------------------------------------------------------------------------


def test_fp8_nan_and_inf_rules(tmp_path):
    """vae-sd with two tensors re-typed fp8 holding random bytes: E4M3 has NaN (S.1111.111) and no Inf,
    E5M2 has both (exponent all ones)."""
    rng = np.random.default_rng(8)
    lay = vae_layout()
    e4, e5 = "decoder.conv_in.weight", "encoder.conv_in.weight"
    lay[e4]["dtype"], lay[e5]["dtype"] = "F8_E4M3", "F8_E5M2"
    data = {k: rng.integers(0, 256, elements(lay[k]), dtype=np.uint8) for k in (e4, e5)}
    blobs = {k: v.tobytes() for k, v in data.items()}
    p = synth.write_safetensors(tmp_path / "fp8.safetensors", lay, data=blobs)
    f = nan_finding(_core.scan_file(str(p), hash="components"))
    got = {t["name"]: (t["nan"], t["inf"]) for t in f["details"]["tensors"]}
    mag4, mag5 = data[e4] & 0x7F, data[e5] & 0x7F
    want5 = (int((mag5 > 0x7C).sum()), int((mag5 == 0x7C).sum()))
    assert got == {e4: (int((mag4 == 0x7F).sum()), 0), e5: want5}
    assert all(v[0] > 0 for v in got.values())
