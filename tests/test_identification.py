"""Tolerant identification (issue 11 item 2): archs and components scored against their signatures.

Fixtures are the real layouts (shared/data/layouts) with keys removed or renamed. Expected scores are
computed here from the data files themselves (rules.json match conditions + signatures.json), not from
the core's answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastscan import _core, synth
from fastscan.fixes import commands
from fastscan.fixes.errors import FixError
from test_checks import findings as checks
from test_checks import nai_era, scan

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "rust" / "core" / "src"
RULES = json.loads((SRC / "rules.json").read_text())
SIGS = json.loads((SRC / "signatures.json").read_text())
UNET = "model.diffusion_model."


def arch_keys(arch: str) -> dict[str, list[int] | None]:
    """The keys an arch is scored on: its checkpoint rule's match conditions, then its unet signature."""
    rule = next(r for r in RULES["archs"] if r["arch"] == arch and r.get("components"))
    keys = {c["key"]: c.get("shape") for c in rule["match"]}
    for k, shape in SIGS["archs"][arch]["unet"]:
        keys.setdefault(k, shape)
    return keys


@pytest.mark.parametrize(
    "name,kind,arch",
    [("sd15", "checkpoint", "sd1"), ("sd15-inpaint", "checkpoint", "sd1-inpaint"),
     ("sd21", "checkpoint", "sd2"), ("sdxl", "checkpoint", "sdxl"),
     ("sdxl-refiner", "checkpoint", "sdxl-refiner"),
     ("sd3-medium-incl-clips-t5xxlfp16", "checkpoint", "sd3"), ("vae-sd", "vae", "unknown"),
     ("diffusers-sd15-vae", "vae", "unknown"),
     ("diffusers-sd15-text-encoder", "text-encoder", "unknown")],
)  # fmt: skip
def test_complete_layouts_score_one(tmp_path, name, kind, arch):
    r = scan(synth.write_layout(tmp_path / f"{name}.safetensors", name))
    assert (r["kind"], r["arch"]) == (kind, arch)
    ident = r["identification"]
    assert ident["score"] == 1.0 and ident["confident"] is True
    assert ident["missing"] == [] and ident["missing_count"] == 0 and ident["extra"] == 0
    assert ident["matched"] == ident["of"] > 0
    assert checks(r, "component.incomplete") == []


def test_kinds_without_a_signature_have_no_identification(tmp_path):
    for name in ("lora-sd15-kohya", "embedding-sd15"):
        assert scan(synth.write_layout(tmp_path / f"{name}.safetensors", name))["identification"] is None


def test_sdxl_without_label_emb_stays_sdxl(tmp_path):
    """sdxl layout without its four label_emb tensors (the toolkit#39 kind of file): still SDXL."""
    t = synth.load_layout("sdxl")["tensors"]
    gone = [k for k in t if k.startswith(UNET + "label_emb.")]
    assert len(gone) == 4
    for k in gone:
        del t[k]
    r = scan(synth.write_safetensors(tmp_path / "x.safetensors", t))
    assert (r["kind"], r["arch"]) == ("checkpoint", "sdxl")
    keys = arch_keys("sdxl")
    missing = sorted(k for k in keys if k.startswith("label_emb."))
    ident = r["identification"]
    assert ident["missing"] == missing and ident["missing_count"] == len(missing)
    assert ident["of"] == len(keys)
    assert ident["score"] == pytest.approx(1 - len(missing) / len(keys), abs=1e-4)
    assert ident["confident"] is True
    [f] = checks(r, "component.incomplete")
    assert f["severity"] == "warning"
    assert f["details"]["component"] == "unet" and f["details"]["missing"] == missing
    assert "label_emb.0.0.weight" in f["message"]
    # nothing else changes: the VAE and both text encoders are still found
    assert {"unet", "vae", "clip_l", "clip_g"} <= set(r["components"])
    assert checks(r, "text-encoder.missing") == [] and checks(r, "junk.unknown-keys") == []


def test_a_missing_text_encoder_layer_is_incomplete(tmp_path):
    """sd15 layout without CLIP-L's last encoder layer (a merge that dropped it)."""
    t = synth.load_layout("sd15")["tensors"]
    pre = "cond_stage_model.transformer.text_model.encoder.layers.11."
    for k in [k for k in t if k.startswith(pre)]:
        del t[k]
    r = scan(synth.write_safetensors(tmp_path / "x.safetensors", t))
    assert r["arch"] == "sd1" and r["identification"]["score"] == 1.0  # the unet is whole
    [f] = checks(r, "component.incomplete")
    layer = "text_model.encoder.layers.11."
    want = sorted(k for k, _ in SIGS["archs"]["sd1"]["clip_l"] if k.startswith(layer))
    assert f["details"]["component"] == "clip_l" and f["details"]["missing"] == want


def test_nai_era_clip_keys_are_complete(tmp_path):
    """sd15 layout with CLIP-L under the older `cond_stage_model.transformer.` names (no `text_model.`)."""
    t = nai_era(synth.load_layout("sd15")["tensors"])
    r = scan(synth.write_safetensors(tmp_path / "nai.safetensors", t))
    assert r["arch"] == "sd1" and checks(r, "component.incomplete") == []


def renamed_unet(share: float) -> dict:
    """sdxl layout with the unet keys of the first `share` of its signature blocks renamed out of the unet."""
    t = synth.load_layout("sdxl")["tensors"]
    blocks = sorted({".".join(k.split(".")[:2]) for k in arch_keys("sdxl")})
    gone = blocks[: int(len(blocks) * share)]
    out = {}
    for k, v in t.items():
        canon = k[len(UNET):] if k.startswith(UNET) else None
        if canon is not None and any(canon.startswith(b + ".") for b in gone):
            k = "renamed." + k
        out[k] = v
    return out


def test_low_score_keeps_a_guess_but_is_not_confident(tmp_path):
    r = scan(synth.write_safetensors(tmp_path / "x.safetensors", renamed_unet(0.3)))
    ident = r["identification"]
    assert r["kind"] == "checkpoint"
    assert ident["confident"] is False and ident["score"] < ident["threshold"]
    assert ident["extra"] > 0  # the renamed keys fit no component


def test_destructive_fixes_refuse_a_low_confidence_identification(tmp_path):
    src = synth.write_safetensors(tmp_path / "x.safetensors", renamed_unet(0.3))
    before = src.stat().st_mtime_ns, src.stat().st_size
    with pytest.raises(FixError, match="--force") as e:
        commands.fix(src, tmp_path / "o.safetensors", prune="junk")
    assert "score" in str(e.value) and str(src) in str(e.value)
    with pytest.raises(FixError, match="--force"):
        commands.extract(src, "vae", tmp_path / "v.safetensors")
    assert not (tmp_path / "o.safetensors").exists() and not (tmp_path / "v.safetensors").exists()
    assert (src.stat().st_mtime_ns, src.stat().st_size) == before


def test_force_runs_a_fix_on_a_low_confidence_identification(tmp_path):
    """A tiny checkpoint whose diffusion model matches no arch (identification score 0) with one junk key."""
    t = {UNET + "x.weight": {"dtype": "F16", "shape": [4]},
         "first_stage_model.encoder.conv_in.weight": {"dtype": "F16", "shape": [2]},
         "lora_unet_leftover.alpha": {"dtype": "F16", "shape": []}}  # fmt: skip
    src = synth.write_safetensors(tmp_path / "tiny.safetensors", t)
    r = scan(src)
    assert r["arch"] == "unknown" and r["identification"]["confident"] is False
    with pytest.raises(FixError, match="--force"):
        commands.fix(src, tmp_path / "o.safetensors", prune="junk")
    res = commands.fix(src, tmp_path / "o.safetensors", prune="junk", force=True)
    assert res.out is not None and res.out.exists()
    assert "lora_unet_leftover.alpha" not in {x["name"] for x in _core.read_tensors(str(res.out))["tensors"]}


def test_clip_fix_is_not_destructive_and_needs_no_force(tmp_path):
    src = synth.write_safetensors(tmp_path / "x.safetensors", renamed_unet(0.3))
    # --clip only rewrites position_ids: allowed whatever the identification (here nothing to change)
    assert commands.fix(src, tmp_path / "o.safetensors", clip=True).out is None


def test_signatures_are_in_the_reference_layouts():
    """Every signature key exists with its shape in the arch's reference layout (scripts/signatures.py)."""
    for comp, sig in SIGS["archs"]["diffusers"].items():  # standalone diffusers files: bare names
        tensors = synth.load_layout(f"diffusers-sd15-{comp}")["tensors"]
        assert all(tensors[key]["shape"] == shape for key, shape in sig)
    for arch, comps in SIGS["archs"].items():
        if arch == "diffusers":
            continue
        rule = next(r for r in RULES["archs"] if r["arch"] == arch and r.get("components"))
        tensors = {}
        for s in RULES["reference_sources"][arch]:
            tensors.update(synth.load_layout(s)["tensors"])
        for comp, sig in comps.items():
            for key, shape in sig:
                shapes = [tensors.get(p + key, {}).get("shape") for p in rule["components"][comp]]
                assert shape in shapes, (arch, comp, key)
