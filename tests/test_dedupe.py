"""`fastscan dedupe` end to end on real layouts: renamed copies, a VAE baked into checkpoints, repackaging.

Fixtures: vae-sd.json (standalone F32 VAE) and sd15.json (UNet + CLIP-L) with that VAE baked in under
`first_stage_model.`, as people bake an fp32 VAE into fp16 checkpoints. Sparse files; a few tensors carry
seeded bytes so the hashes depend on real data.
"""

import json
import shutil

import numpy as np
from typer.testing import CliRunner

from fastscan import cli, scan, synth

VAE = synth.load_layout("vae-sd")["tensors"]
SD15 = synth.load_layout("sd15")["tensors"]
UNET_KEY = "model.diffusion_model.out.2.weight"


def _bytes(tensors, name, seed):
    # Finite random values (random bytes would hold NaN patterns: values.nan-inf, a damaged file).
    t = tensors[name]
    n = synth.nbytes(t["dtype"], t["shape"]) // {"F16": 2, "F32": 4}[t["dtype"]]
    values = np.random.default_rng(seed).standard_normal(n)
    return values.astype({"F16": "<f2", "F32": "<f4"}[t["dtype"]]).tobytes()


def _vae_data(prefix=""):
    names = ["decoder.conv_in.bias", "encoder.conv_out.weight", "quant_conv.weight"]
    return {prefix + k: _bytes(VAE, k, i) for i, k in enumerate(names)}


def _checkpoint(unet_seed):
    tensors = {k: v for k, v in SD15.items() if not k.startswith("first_stage_model.")}
    tensors.update({"first_stage_model." + k: v for k, v in VAE.items()})
    data = _vae_data("first_stage_model.")
    data[UNET_KEY] = _bytes(SD15, UNET_KEY, unet_seed)
    return tensors, data


def _library(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    synth.write_safetensors(lib / "vae.safetensors", VAE, data=_vae_data())
    shutil.copy(lib / "vae.safetensors", lib / "vae-renamed.safetensors")
    t, d = _checkpoint(unet_seed=1)
    synth.write_safetensors(lib / "model-a.safetensors", t, data=d)
    synth.write_safetensors(lib / "model-a-repacked.safetensors", t, data=d, metadata={"note": "repacked"})
    t, d = _checkpoint(unet_seed=2)
    synth.write_safetensors(lib / "model-b.safetensors", t, data=d)
    return lib


def _groups(report):
    return {(g["type"], g["component"]): sorted(p.rsplit("/", 1)[1] for p in g["files"]) for g in report}


def test_groups_in_the_report(tmp_path):
    lib = _library(tmp_path)
    report = scan([lib], hash="full")
    groups = _groups(report.duplicates)
    assert groups[("identical-files", None)] == ["vae-renamed.safetensors", "vae.safetensors"]
    assert groups[("same-weights", None)] == ["model-a-repacked.safetensors", "model-a.safetensors"]
    # One VAE in three places: two checkpoints (a and its repack count once) and the standalone file.
    vae_files = groups[("shared-component", "vae")]
    assert len(vae_files) == 3 and "model-b.safetensors" in vae_files
    assert ("shared-component", "unet") not in groups  # a and b differ in one UNet tensor
    ident = next(g for g in report.duplicates if g["type"] == "identical-files")
    assert ident["reclaimable"] == (lib / "vae.safetensors").stat().st_size


def test_header_only_scan_makes_no_groups(tmp_path):
    assert scan([_library(tmp_path)], hash="none").duplicates == []


def test_dedupe_command_json_and_table(tmp_path):
    lib = _library(tmp_path)
    r = CliRunner().invoke(cli.app, ["dedupe", str(lib), "--json", "--no-cache"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["schema"] == "fastscan.dedupe/1"
    assert {g["type"] for g in doc["duplicates"]} == {"identical-files", "same-weights", "shared-component"}
    r = CliRunner().invoke(cli.app, ["dedupe", str(lib), "--no-cache"])
    assert r.exit_code == 0 and "shared component" in r.output and "vae-renamed" in r.output


def test_dedupe_missing_path_is_a_usage_error(tmp_path):
    r = CliRunner().invoke(cli.app, ["dedupe", str(tmp_path / "nope")])
    assert r.exit_code == 2
