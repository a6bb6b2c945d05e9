"""Every header-level check of contract §4: a fixture that fires it (built from a real layout, named in each
test) and the clean real layouts on which it stays silent. header.invalid and file.* are in test_header.py.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from fastscan import _core, synth

ROOT = Path(__file__).resolve().parents[1]
RULES = json.loads((ROOT / "rust" / "core" / "src" / "rules.json").read_text())

CLEAN = ["sd15", "sd15-inpaint", "sd21", "sdxl", "vae-sd", "lora-sd15-kohya", "embedding-sd15"]
HEADER_CHECKS = ["clip.position-ids", "dtype.float64", "dtype.mixed", "junk.ema", "junk.unknown-keys",
                 "size.unusual", "vae.missing", "text-encoder.missing"]

SD1_POS = "cond_stage_model.transformer.text_model.embeddings.position_ids"
SDXL_POS = "conditioner.embedders.0.transformer.text_model.embeddings.position_ids"


def scan(path) -> dict:
    r = _core.scan_file(str(path), hash="none")
    assert r["error"] is None, r["error"]
    return r


def findings(r: dict, check: str) -> list[dict]:
    return [f for f in r["findings"] if f["check"] == check]


def one(r: dict, check: str) -> dict:
    got = findings(r, check)
    assert len(got) == 1, r["findings"]
    return got[0]


def layout(name: str) -> dict:
    return synth.load_layout(name)["tensors"]


def write(tmp_path, tensors: dict, name="m", **kw) -> Path:
    return synth.write_safetensors(tmp_path / f"{name}.safetensors", tensors, **kw)


def nai_era(tensors: dict) -> dict:
    """The layout with CLIP-L under the NAI-era `cond_stage_model.transformer.` names (no `text_model.`)."""
    old, new = "cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."
    return {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in tensors.items()}


# --- silence on clean real layouts ---------------------------------------------------------------


@pytest.mark.parametrize("name", CLEAN + ["sd15-emaonly-official", "sdxl-refiner", "sd3-medium-incl-clips",
                                          "sd3-medium-incl-clips-t5xxlfp16", "flux1-dev", "flux-ae",
                                          "diffusers-sd15-unet", "diffusers-sd15-text-encoder",
                                          "embedding-sdxl", "sd15-ema-extras"])
def test_clean_layouts_are_silent(tmp_path, name):
    r = scan(synth.write_layout(tmp_path / f"{name}.safetensors", name))
    assert r["findings"] == []
    assert r["wasted_bytes"] == {}


# --- clip.position-ids ----------------------------------------------------------------------------


def test_position_ids_float_drift_breaks_positions(tmp_path):
    """sd15 layout; position_ids stored as F32 with the values a bad merge leaves (75.9975 at 76)."""
    t = layout("sd15")
    t[SD1_POS] = {"dtype": "F32", "shape": [1, 77]}
    vals = np.arange(77, dtype=np.float64)
    vals[76] = 75.9975
    vals[40] = 40.00001  # drifts up: not exact, still truncates to 40
    r = scan(write(tmp_path, t, data={SD1_POS: synth.position_ids_bytes("F32", values=list(vals))}))
    f = one(r, "clip.position-ids")
    d = f["details"]
    assert f["severity"] == "error"
    assert (d["tensor"], d["encoder"], d["dtype"], d["int64"]) == (SD1_POS, "clip_l", "F32", False)
    assert [o["index"] for o in d["offset"]] == [40, 76]
    assert d["offset"][1]["value"] == pytest.approx(75.9975, abs=1e-5)
    b = d["broken"]
    assert len(b) == 1 and b[0] == d["offset"][1]
    assert (b[0]["index"], b[0]["as_int64"], b[0]["rounded"]) == (76, 75, 76)
    assert (b[0]["truncation_ok"], b[0]["rounding_ok"]) == (False, True)
    assert b[0]["signed_offset"] == pytest.approx(-0.0025, abs=1e-5)
    # fp16 holds multiples of 1/16 near 76: 75.9975 would round to 76, 40.00001 to 40
    assert b[0]["fp16_hides"] is True and d["offset"][0]["fp16_hides"] is True
    assert d["rounding_disagrees"] == [76]
    assert d["max_deviation"] == pytest.approx(0.0025, abs=1e-5)
    assert d["affects"]["misread_by"] == ["A1111 web UI", "transformers < 4.31"]
    assert d["affects"]["ignored_by"] == ["ComfyUI", "transformers >= 4.31"]
    assert "misread token position(s) 76" in f["message"]
    assert "clip_l" in f["message"]


def test_position_ids_int64_wrong_values(tmp_path):
    """sd15 layout; I64 position_ids already truncated wrong (a shifted tail)."""
    t = layout("sd15")
    vals = list(range(77))
    vals[70:] = [v - 1 for v in vals[70:]]
    r = scan(write(tmp_path, t, data={SD1_POS: synth.position_ids_bytes("I64", values=vals)}))
    d = one(r, "clip.position-ids")["details"]
    assert d["int64"] is True
    assert [o["index"] for o in d["broken"]] == list(range(70, 77))
    assert [o["as_int64"] for o in d["broken"]] == list(range(69, 76))
    assert d["max_deviation"] == 1


def test_position_ids_f16_exact_as_in_real_sdxl_finetunes(tmp_path):
    """sdxl-posids-f16 layout (the exact layout of SDXL-Lightning & co.): F16 but exact values.

    No loader reads a wrong token: info, not an error (issue 11)."""
    r = scan(synth.write_layout(tmp_path / "x.safetensors", "sdxl-posids-f16"))
    f = one(r, "clip.position-ids")
    d = f["details"]
    assert (d["tensor"], d["encoder"], d["dtype"], d["int64"]) == (SDXL_POS, "clip_l", "F16", False)
    assert d["offset"] == [] and d["broken"] == [] and d["max_deviation"] == 0
    assert d["affects"]["misread_by"] == [] and "A1111 web UI" in d["affects"]["read_correctly_by"]
    assert "no loader reads a wrong token" in f["message"]
    assert f["severity"] == "info"
    assert r["findings"] == [f]  # nothing else on a real SDXL fine-tune


def test_sdxl_library_exits_zero(tmp_path):
    """`fastscan` on a folder of SDXL fine-tunes (sdxl-posids-f16 layout) and the base model exits 0."""
    import subprocess
    import sys

    synth.write_layout(tmp_path / "finetune.safetensors", "sdxl-posids-f16")
    synth.write_layout(tmp_path / "base.safetensors", "sdxl")
    r = subprocess.run([sys.executable, "-m", "fastscan", str(tmp_path), "--hash", "none", "--no-cache"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_position_ids_offset_only_is_a_warning(tmp_path):
    """sd15 layout; F32 ids drifted upward (a weighted merge): every value still truncates to its index."""
    t = layout("sd15")
    t[SD1_POS] = {"dtype": "F32", "shape": [1, 77]}
    vals = [i + 0.0001 * (i % 3) for i in range(77)]
    r = scan(write(tmp_path, t, data={SD1_POS: synth.position_ids_bytes("F32", values=vals)}))
    f = one(r, "clip.position-ids")
    d = f["details"]
    want = [i for i in range(77) if np.float32(vals[i]) != i]
    assert f["severity"] == "warning"
    assert [o["index"] for o in d["offset"]] == want and d["broken"] == []
    assert all(o["truncation_ok"] and o["rounding_ok"] for o in d["offset"])
    assert d["rounding_disagrees"] == []
    assert d["affects"]["misread_by"] == []


def test_position_ids_rounding_and_truncation_disagree(tmp_path):
    """sd15 layout; one F32 id at 10.6: truncation reads 10 (right), rounding 11 (wrong): a warning."""
    t = layout("sd15")
    t[SD1_POS] = {"dtype": "F32", "shape": [1, 77]}
    vals = [float(i) for i in range(77)]
    vals[10] = 10.6
    r = scan(write(tmp_path, t, data={SD1_POS: synth.position_ids_bytes("F32", values=vals)}))
    f = one(r, "clip.position-ids")
    assert f["severity"] == "warning"
    assert f["details"]["rounding_disagrees"] == [10]
    o = f["details"]["offset"][0]
    assert (o["as_int64"], o["rounded"], o["fp16_hides"]) == (10, 11, False)
    assert "rounds" in f["message"]


def test_position_ids_nai_era_layout(tmp_path):
    """sd15 layout with CLIP under the NAI-era `cond_stage_model.transformer.` names, ids swapped at 5/6."""
    t = nai_era(layout("sd15"))
    key = "cond_stage_model.transformer.embeddings.position_ids"
    vals = list(range(77))
    vals[5], vals[6] = 6, 5
    r = scan(write(tmp_path, t, data={key: synth.position_ids_bytes("I64", values=vals)}))
    f = one(r, "clip.position-ids")
    assert f["severity"] == "error" and f["details"]["encoder"] == "clip_l"
    assert [o["index"] for o in f["details"]["broken"]] == [5, 6]


@pytest.mark.parametrize("prefix", ["text_encoder.", "text_encoder_2."])
def test_position_ids_diffusers_key_forms(tmp_path, prefix):
    """diffusers-sd15-text-encoder layout under the `text_encoder.` / `text_encoder_2.` key forms."""
    t = {prefix + k: v for k, v in layout("diffusers-sd15-text-encoder").items()}
    key = prefix + "text_model.embeddings.position_ids"
    t[key] = {"dtype": "F32", "shape": [1, 77]}
    vals = [float(i) for i in range(77)]
    vals[50] = 49.5
    d = one(scan(write(tmp_path, t, data={key: synth.position_ids_bytes("F32", values=vals)})),
            "clip.position-ids")["details"]  # fmt: skip
    assert d["tensor"] == key and [o["index"] for o in d["broken"]] == [50]


@pytest.mark.parametrize("dtype", ["I32", "BF16", "F64"])
def test_position_ids_other_dtypes_are_read(tmp_path, dtype):
    """sd15 layout; exact values in another dtype: fires for the dtype only."""
    t = layout("sd15")
    t[SD1_POS] = {"dtype": dtype, "shape": [1, 77]}
    if dtype == "BF16":  # top half of each float32 (synth.position_ids_bytes knows no BF16 yet)
        blob = (np.arange(77, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()
    else:
        blob = synth.position_ids_bytes(dtype)
    f = one(scan(write(tmp_path, t, data={SD1_POS: blob})), "clip.position-ids")
    d = f["details"]
    assert (d["dtype"], d["offset"], d["broken"]) == (dtype, [], [])
    assert f["severity"] == "info"


def test_position_ids_every_text_encoder_of_sd3(tmp_path):
    """sd3-medium-incl-clips layout plus the position_ids older SD3 files carry for clip_l and clip_g."""
    t = layout("sd3-medium-incl-clips")
    vals = [float(i) for i in range(77)]
    vals[3] = 2.5
    for enc in ("clip_l", "clip_g"):
        t[f"text_encoders.{enc}.transformer.text_model.embeddings.position_ids"] = {
            "dtype": "F32", "shape": [1, 77]}
    key_g = "text_encoders.clip_g.transformer.text_model.embeddings.position_ids"
    r = scan(write(tmp_path, t, data={key_g: synth.position_ids_bytes("F32", values=vals)}))
    got = {f["details"]["encoder"]: f["details"] for f in findings(r, "clip.position-ids")}
    assert set(got) == {"clip_l", "clip_g"}
    assert got["clip_l"]["broken"] == []
    assert [(o["index"], o["value"], o["as_int64"], o["rounded"]) for o in got["clip_g"]["broken"]] == [
        (3, 2.5, 2, 2)]


def test_position_ids_standalone_text_encoder(tmp_path):
    """diffusers-sd15-text-encoder layout (transformers CLIP-L file) with F32 drifted values."""
    t = layout("diffusers-sd15-text-encoder")
    t["text_model.embeddings.position_ids"] = {"dtype": "F32", "shape": [1, 77]}
    vals = [i - 0.001 if i else 0.0 for i in range(77)]
    data = {"text_model.embeddings.position_ids": synth.position_ids_bytes("F32", values=vals)}
    d = one(scan(write(tmp_path, t, data=data)), "clip.position-ids")["details"]
    assert d["encoder"] == "clip_l"
    assert len(d["broken"]) == 76


def test_position_ids_missing_is_fine(tmp_path):
    """sd15 layout without position_ids (transformers >= 4.31 does not save them)."""
    t = layout("sd15")
    del t[SD1_POS]
    assert findings(scan(write(tmp_path, t)), "clip.position-ids") == []


# --- dtype.float64 / dtype.mixed ------------------------------------------------------------------


def test_float64_tensors(tmp_path):
    """sd15 layout with its VAE's two largest-named conv weights stored as F64."""
    t = layout("sd15")
    names = ["first_stage_model.decoder.conv_in.weight", "first_stage_model.encoder.conv_out.weight"]
    for n in names:
        t[n] = {**t[n], "dtype": "F64"}
    f = one(scan(write(tmp_path, t)), "dtype.float64")
    nbytes = sum(synth.nbytes("F64", t[n]["shape"]) for n in names)
    assert f["severity"] == "warning"
    assert f["details"]["tensors"] == 2
    assert f["details"]["bytes"] == nbytes
    assert f["details"]["bytes_saved_at_f32"] == nbytes // 2
    assert sorted(f["details"]["names"]) == sorted(names)
    r = scan(write(tmp_path, t))
    assert r["wasted_bytes"]["float64"] == nbytes // 2


def test_mixed_float_dtypes_in_a_component(tmp_path):
    """sd15 layout (F16) with one UNet tensor left at F32, as a careless half-precision export does."""
    t = layout("sd15")
    n = "model.diffusion_model.out.2.weight"
    t[n] = {**t[n], "dtype": "F32"}
    f = one(scan(write(tmp_path, t)), "dtype.mixed")
    hist = f["details"]["components"]
    assert list(hist) == ["unet"]
    assert hist["unet"]["F32"] == synth.nbytes("F32", t[n]["shape"])
    unet_f16 = sum(synth.nbytes("F16", v["shape"]) for k, v in t.items()
                   if k.startswith("model.diffusion_model.") and k != n)
    assert hist["unet"]["F16"] == unet_f16
    assert f["severity"] == "info"


def retyped(prefix: str, dtype: str) -> dict:
    """sd15 layout with every tensor under `prefix` stored as `dtype`."""
    return {k: ({**v, "dtype": dtype} if k.startswith(prefix) else v) for k, v in layout("sd15").items()}


def test_bf16_text_encoder_in_an_fp16_checkpoint(tmp_path):
    """sd15 layout (F16) with CLIP-L in BF16: what a merge of an fp16 and a bf16 parent leaves."""
    f = one(scan(write(tmp_path, retyped("cond_stage_model.", "BF16"))), "dtype.mixed")
    assert f["severity"] == "warning"
    assert f["details"]["across"] == {"unet": "F16", "vae": "F16", "clip_l": "BF16"}
    assert f["details"]["f16_and_bf16"] is True and f["details"]["components"] == {}
    assert "BF16" in f["message"]


def test_fp32_vae_in_an_fp16_checkpoint_is_info(tmp_path):
    """sd15 layout with its VAE in F32 (a common, harmless save): noted as info."""
    f = one(scan(write(tmp_path, retyped("first_stage_model.", "F32"))), "dtype.mixed")
    assert f["severity"] == "info"
    assert f["details"]["across"] == {"unet": "F16", "vae": "F32", "clip_l": "F16"}
    assert f["details"]["f16_and_bf16"] is False


def test_int64_buffer_is_not_mixing(tmp_path):
    """sd15-emaonly-official: F32 weights with I64 / I32 buffers is not a mixed component."""
    r = scan(synth.write_layout(tmp_path / "x.safetensors", "sd15-emaonly-official"))
    assert findings(r, "dtype.mixed") == []


# --- junk.ema ---------------------------------------------------------------------------------------


def test_full_ema_checkpoint(tmp_path):
    """sd15-full-ema layout (v1-5-pruned.safetensors): 686 EMA tensors."""
    t = layout("sd15-full-ema")
    r = scan(synth.write_layout(tmp_path / "x.safetensors", "sd15-full-ema"))
    f = one(r, "junk.ema")
    ema = {k: v for k, v in t.items() if k.startswith("model_ema.diffusion_model")}
    nbytes = sum(synth.nbytes(v["dtype"], v["shape"]) for v in ema.values())
    assert (f["details"]["tensors"], f["details"]["bytes"]) == (686, nbytes)
    assert r["wasted_bytes"] == {"ema": nbytes}
    assert f["severity"] == "warning"


def test_emaonly_official_keeps_only_ema_bookkeeping(tmp_path):
    """sd15-emaonly-official: model_ema.decay / num_updates only, which are not EMA weights."""
    r = scan(synth.write_layout(tmp_path / "x.safetensors", "sd15-emaonly-official"))
    assert findings(r, "junk.ema") == []
    assert findings(r, "junk.unknown-keys") == []


# --- junk.unknown-keys ----------------------------------------------------------------------------


def test_unknown_keys_grouped_by_look(tmp_path):
    """sd15 layout plus: the kohya LoRA's 792 tensors (lora-sd15-kohya, merged in by mistake), optimizer
    state, SDXL's clip_g weights under their SDXL prefix (a foreign copy) and a stray scalar."""
    t = layout("sd15")
    lora = layout("lora-sd15-kohya")
    sdxl_g = {k: v for k, v in layout("sdxl").items() if k.startswith("conditioner.embedders.1.model.")}
    opt = {"optimizer.state.0.exp_avg": {"dtype": "F32", "shape": [320]},
           "optimizer.state.0.exp_avg_sq": {"dtype": "F32", "shape": [320]}}
    other = {"global_step": {"dtype": "I64", "shape": []}}
    r = scan(write(tmp_path, {**t, **lora, **sdxl_g, **opt, **other}))
    assert (r["kind"], r["arch"]) == ("checkpoint", "sd1")
    f = one(r, "junk.unknown-keys")
    d = f["details"]

    def size(ts):
        return sum(synth.nbytes(v["dtype"], v["shape"]) for v in ts.values())

    want = {"lora": lora, "optimizer": opt, "copy": sdxl_g, "other": other}
    assert sorted(d["groups"]) == sorted(want)
    for g, ts in want.items():
        assert d["groups"][g]["count"] == len(ts), g
        assert d["groups"][g]["bytes"] == size(ts), g
        assert len(d["groups"][g]["keys"]) == min(50, len(ts))
        assert set(d["groups"][g]["keys"]) <= set(ts)
    total = sum(len(ts) for ts in want.values())
    assert d["count"] == total
    assert d["bytes"] == sum(size(ts) for ts in want.values())
    assert len(d["keys"]) == 50
    assert sorted(d["looks_like"]) == sorted(want)
    assert r["wasted_bytes"]["junk"] == d["bytes"]
    assert "LoRA leftovers" in f["message"] and "optimizer state" in f["message"]


def test_buffers_and_position_ids_are_not_junk(tmp_path):
    """sd15 layout plus the 12 schedule buffers of the official file: known keys, not junk."""
    t = layout("sd15")
    official = layout("sd15-emaonly-official")
    buffers = {k: v for k, v in official.items() if "." not in k}
    assert len(buffers) == 12
    r = scan(write(tmp_path, {**t, **buffers}))
    assert r["findings"] == []


# --- size.unusual --------------------------------------------------------------------------------


def test_reference_element_counts_match_the_layouts(tmp_path):
    """rules.json's reference_elements are recomputed here from the layouts each names as its source."""
    refs = {k: v for k, v in RULES["reference_elements"].items() if not k.startswith("_")}
    assert set(refs) == set(RULES["reference_sources"])
    for arch, sources in RULES["reference_sources"].items():
        got: dict[str, int] = {}
        for src in sources:
            table = _core.read_tensors(str(synth.write_layout(tmp_path / f"{src}.safetensors", src)))
            assert table["arch"] in (arch, "unknown"), (src, table["arch"])
            for x in table["tensors"]:
                if x["role"] == "component":
                    got[x["component"]] = got.get(x["component"], 0) + math.prod(x["shape"])
        assert got == refs[arch], arch


def test_partial_unet(tmp_path):
    """sd15 layout with the UNet's last output block (output_blocks.11.*) pruned away."""
    t = layout("sd15")
    cut = {k: v for k, v in t.items() if k.startswith("model.diffusion_model.output_blocks.11.")}
    assert cut
    for k in cut:
        del t[k]
    p = write(tmp_path, t)
    f = one(scan(p), "size.unusual")
    d = f["details"]
    missing_el = sum(math.prod(v["shape"]) for v in cut.values())
    missing_b = sum(synth.nbytes(v["dtype"], v["shape"]) for v in cut.values())
    u = d["components"]["unet"]
    assert u["expected_elements"] == RULES["reference_elements"]["sd1"]["unet"]
    assert u["difference_elements"] == -missing_el
    assert u["difference_bytes"] == -missing_b
    assert d["actual"] == p.stat().st_size
    assert d["expected"] - d["actual"] == missing_b
    assert d["difference"] == -missing_b
    assert f["severity"] == "info"
    assert "pruned, partial" in f["message"]


def test_extra_tensors_in_a_component(tmp_path):
    """sd15-inpaint layout plus one extra [320, 4] F16 UNet tensor: 1280 elements (2560 bytes) more."""
    t = layout("sd15-inpaint")
    t["model.diffusion_model.extra_proj.weight"] = {"dtype": "F16", "shape": [320, 4]}
    d = one(scan(write(tmp_path, t)), "size.unusual")["details"]
    assert d["components"]["unet"]["difference_elements"] == 1280
    assert d["difference"] == 2560


def write_padded(path: Path, tensors: dict, pad: int, metadata: dict | None = None) -> Path:
    """Writes `tensors` (sparse, correct position_ids) with `pad` spaces added after the header JSON."""
    header, offsets = synth.header_for(tensors, metadata)
    header += b" " * pad
    start = 8 + len(header)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        b, _ = offsets[SD1_POS]
        fh.seek(start + b)
        fh.write(synth.position_ids_bytes("I64"))
        fh.truncate(start + max(e for _, e in offsets.values()))
    return path


def test_header_padding(tmp_path):
    """sd15 layout written with 2 MiB of spaces after the header JSON (the reference still opens it)."""
    pad = 2 << 20
    r = scan(write_padded(tmp_path / "padded.safetensors", layout("sd15"), pad))
    assert [f["check"] for f in r["findings"]] == ["size.unusual"]
    f = one(r, "size.unusual")
    d = f["details"]
    assert d["header"]["padding"] >= pad
    assert d["header"]["padding"] - pad < 8  # only the writer's own 8-byte alignment on top
    assert d["difference"] == d["header"]["padding"]
    assert "components" not in d


def test_small_header_padding_is_silent(tmp_path):
    """sd15 layout with 64 KiB of header padding: under the 1 MiB threshold."""
    p = write_padded(tmp_path / "padded.safetensors", layout("sd15"), 64 << 10, {"note": "x" * 1000})
    assert scan(p)["findings"] == []


# --- vae.missing / text-encoder.missing -----------------------------------------------------------


def test_vae_missing(tmp_path):
    """sd15 layout without first_stage_model.* (a checkpoint meant for an external VAE)."""
    t = {k: v for k, v in layout("sd15").items() if not k.startswith("first_stage_model.")}
    r = scan(write(tmp_path, t))
    f = one(r, "vae.missing")
    assert f["severity"] == "info" and f["details"]["arch"] == "sd1"
    assert findings(r, "text-encoder.missing") == []


def test_text_encoder_missing(tmp_path):
    """sdxl layout without the clip_g encoder (conditioner.embedders.1.*)."""
    t = {k: v for k, v in layout("sdxl").items() if not k.startswith("conditioner.embedders.1.")}
    r = scan(write(tmp_path, t))
    f = one(r, "text-encoder.missing")
    assert f["details"]["missing"] == ["clip_g"]
    assert findings(r, "vae.missing") == []


def test_checks_only_on_checkpoints(tmp_path):
    """A standalone VAE (vae-sd) or UNet (diffusers-sd15-unet) lacks nothing."""
    for name in ("vae-sd", "diffusers-sd15-unet"):
        r = scan(synth.write_layout(tmp_path / f"{name}.safetensors", name))
        for c in HEADER_CHECKS:
            assert findings(r, c) == [], (name, c)
