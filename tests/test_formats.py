"""The formats people have (issue 11 items 4-5; the kinds of the 11 real files in ../shared/data/real
are in test_classify_real.py): the other files of a model folder (embeddings, .pt LoRAs, adapters,
upscalers, tiny autoencoders), diffusers folders as one entry, .npy/.npz, numpy arrays inside pickles,
and provenance from `__metadata__`. Each feature has a test that fires and one that stays silent.
Expected answers are written by hand from the files' structure (read through `fastscan info`) and the
tools' documented formats, not computed by the code under test.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fastscan import _core, cli, synth
from fastscan.api import scan

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"

def comps(r: dict) -> dict:
    return {k: v["tensors"] for k, v in r["components"].items()}


# ---- embeddings and .pt LoRAs written the way their tools write them -----------------------------


def test_webui_string_to_param_embedding(tmp_path):
    import torch

    p = tmp_path / "style.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.zeros(4, 1024)},
                "name": "style", "step": 3000, "sd_checkpoint": "abcd1234", "sd_checkpoint_name": "v2-1"}, p)
    r = _core.scan_file(str(p), hash="none")
    assert (r["kind"], r["arch"], comps(r)) == ("embedding", "sd2", {"embedding": 1})


def test_diffusers_learned_embeds_and_what_is_not_one(tmp_path):
    import torch

    p = tmp_path / "learned_embeds.bin"
    torch.save({"<cat-toy>": torch.zeros(768)}, p)
    r = _core.scan_file(str(p), hash="none")
    assert (r["kind"], r["arch"]) == ("embedding", "sd1")
    # Nine vectors (over the 8 a token file holds) and a dotted name: not an embedding.
    many = tmp_path / "many.bin"
    torch.save({f"<t{i}>": torch.zeros(768) for i in range(9)}, many)
    assert _core.scan_file(str(many), hash="none")["kind"] == "unknown"
    dotted = tmp_path / "dotted.bin"
    torch.save({"layer.weight": torch.zeros(768)}, dotted)
    assert _core.scan_file(str(dotted), hash="none")["kind"] == "unknown"


def test_pt_lora_pairs_must_chain(tmp_path):
    import torch

    ok = tmp_path / "ok.pt"
    torch.save([torch.zeros(320, 4), torch.zeros(4, 320), torch.zeros(320, 4), torch.zeros(4, 768)], ok)
    assert (_core.scan_file(str(ok), hash="none")["kind"], _core.scan_file(str(ok), hash="none")["arch"]) == (
        "lora", "sd1")
    bad = tmp_path / "bad.pt"
    torch.save([torch.zeros(320, 4), torch.zeros(8, 320)], bad)  # rank 4 then 8: no pair
    assert _core.scan_file(str(bad), hash="none")["kind"] == "unknown"


# ---- adapters, upscalers, tiny autoencoders (rules.json file_kinds) ------------------------------


def _st(path, shapes: dict, metadata=None) -> str:
    tensors = {k: {"dtype": "F16", "shape": s} for k, s in shapes.items()}
    return str(synth.write_safetensors(path, tensors, metadata=metadata))


T2I_SD = {"conv_in.weight": [320, 192, 3, 3], "body.0.block1.weight": [320, 320, 3, 3],
          "body.0.block2.weight": [320, 320, 1, 1]}
ESRGAN = {"params_ema.conv_first.weight": [64, 3, 3, 3],
          "params_ema.body.0.rdb1.conv1.weight": [32, 64, 3, 3],
          "params_ema.conv_body.weight": [64, 64, 3, 3], "params_ema.conv_last.weight": [3, 64, 3, 3]}


@pytest.mark.parametrize(
    ("shapes", "expected"),
    [
        (T2I_SD, ("t2i-adapter", "sd1", {"adapter": 3})),
        ({**T2I_SD, "conv_in.weight": [320, 768, 3, 3]}, ("t2i-adapter", "sdxl", {"adapter": 3})),
        ({"adapter.conv_in.weight": [320, 768, 3, 3],
          "adapter.body.0.resnets.0.block1.weight": [320, 320, 3, 3]},
         ("t2i-adapter", "sdxl", {"adapter": 2})),
        (ESRGAN, ("upscaler", "unknown", {"upscaler": 4})),
        ({"model.0.weight": [64, 3, 3, 3], "model.1.sub.0.RDB1.conv1.0.weight": [32, 64, 3, 3]},
         ("upscaler", "unknown", {"upscaler": 2})),
        ({"body.0.weight": [64, 3, 3, 3], "body.1.weight": [64], "body.2.weight": [64, 64, 3, 3]},
         ("upscaler", "unknown", {"upscaler": 3})),
        # Silent: an RRDBNet without its last conv, a conv8 that does not write RGB.
        ({k: v for k, v in ESRGAN.items() if "conv_last" not in k}, ("unknown", "unknown", None)),
        ({"conv1.weight": [8, 4, 7, 7], "conv8.weight": [4, 8, 3, 3]}, ("unknown", "unknown", None)),
    ],
)
def test_file_kind_rules(tmp_path, shapes, expected):
    r = _core.scan_file(_st(tmp_path / "x.safetensors", shapes), hash="none")
    kind, arch, components = expected
    assert (r["kind"], r["arch"]) == (kind, arch)
    if components is not None:
        assert comps(r) == components


def test_diffusers_autoencoder_tiny_and_a_plain_sequential(tmp_path):
    blocks = {f"{half}.layers.{i}.conv.{j}.weight": [64, 64, 3, 3]
              for half in ("encoder", "decoder") for i in (1, 2, 3) for j in (0, 2, 4)}
    r = _core.scan_file(_st(tmp_path / "tiny.safetensors", blocks), hash="none")
    assert (r["kind"], comps(r)) == ("taesd", {"taesd": 18})
    plain = {f"{i}.weight": [64, 64, 3, 3] for i in range(6)}
    assert _core.scan_file(_st(tmp_path / "seq.safetensors", plain), hash="none")["kind"] == "unknown"


# ---- provenance ----------------------------------------------------------------------------------

SHA_A = "a" * 64
SHA_B = "b" * 64


def _merged(tmp_path) -> str:
    recipe = {"type": "webui", "primary_model_hash": SHA_A, "secondary_model_hash": SHA_B,
              "tertiary_model_hash": None, "interp_method": "Weighted sum", "multiplier": 0.35,
              "save_as_half": True, "bake_in_vae": "None", "discard_weights": ""}
    models = {SHA_A: {"name": "dreamshaper_8", "legacy_hash": "879db523", "sd_merge_recipe": None},
              SHA_B: {"name": "anything-v5", "legacy_hash": "7f96a1a9", "sd_merge_recipe": None}}
    meta = {"sd_merge_recipe": json.dumps(recipe), "sd_merge_models": json.dumps(models), "format": "pt"}
    return str(synth.write_layout(tmp_path / "merge.safetensors", "sd15", metadata=meta))


def test_provenance_of_a_webui_merge(tmp_path):
    r = _core.scan_file(_merged(tmp_path), hash="none")
    p = r["provenance"]
    assert p["tools"] == ["webui"]
    assert p["merge"]["method"] == "Weighted sum"
    assert p["merge"]["multipliers"] == {"multiplier": 0.35}
    assert [(x["role"], x["name"], x["sha256"], x["legacy_hash"]) for x in p["parents"]] == [
        ("primary", "dreamshaper_8", SHA_A, "879db523"), ("secondary", "anything-v5", SHA_B, "7f96a1a9")]
    assert p["keys"] == ["sd_merge_recipe", "sd_merge_models"]


def test_provenance_of_a_kohya_lora_and_none_without_keys(tmp_path):
    meta = {"ss_sd_model_name": "v1-5-pruned-emaonly.safetensors", "ss_base_model_version": "sd_v1",
            "ss_network_module": "networks.lora", "ss_network_dim": "16", "ss_network_alpha": "8.0",
            "ss_num_epochs": "10", "ss_steps": "1500"}
    r = _core.scan_file(str(synth.write_layout(tmp_path / "l.safetensors", "lora-sd15-kohya", metadata=meta)),
                        hash="none")
    p = r["provenance"]
    assert p["tools"] == ["kohya-ss/sd-scripts"]
    assert p["base_model"] == "sd_v1"
    assert p["parents"][0]["name"] == "v1-5-pruned-emaonly.safetensors"
    assert p["training"]["network_dim"] == "16" and p["training"]["steps"] == "1500"
    # The real cloneofsimo LoRA has 194 metadata keys, none about how it was made.
    real = _core.scan_file(str(REAL / "cloneofsimo-lora_analog_svd_rank4.safetensors"), hash="none")
    assert real["metadata"] and real["provenance"] is None


def run_cli(*args: str):
    return CliRunner().invoke(cli.app, list(args), terminal_width=200)


def test_info_shows_a_provenance_section(tmp_path):
    out = run_cli("info", _merged(tmp_path), "--hash", "none")
    assert out.exit_code == 0, out.output
    text = out.stdout
    assert "Provenance" in text and "Weighted sum" in text and "dreamshaper_8" in text and "0.35" in text
    vae = synth.write_layout(tmp_path / "plain.safetensors", "vae-sd")
    plain = run_cli("info", str(vae), "--hash", "none")
    assert plain.exit_code == 0 and "Provenance" not in plain.stdout


# ---- diffusers folders ---------------------------------------------------------------------------


def test_diffusers_folder_is_one_entry(tmp_path):
    d = synth.write_diffusers(tmp_path / "lib" / "sd15")
    (tmp_path / "lib" / "loose.safetensors").write_bytes(
        Path(synth.write_layout(tmp_path / "v.safetensors", "vae-sd")).read_bytes())
    rep = scan(tmp_path / "lib", hash="components")
    assert sorted(Path(f.path).name for f in rep.files) == ["loose.safetensors", "sd15"]
    f = next(f for f in rep.files if f.format == "diffusers")
    assert f.path == str(d)
    assert (f.kind, f.arch) == ("checkpoint", "sd1")
    # Tensor counts from the layouts' README: UNet 686, VAE 248, CLIP-L 196 + position_ids.
    assert {k: c.tensors for k, c in f.components.items()} == {"unet": 686, "vae": 248, "text_encoder": 197}
    assert f.tensors == 686 + 248 + 197
    assert all(c.blake3 for c in f.components.values())
    files = {p["path"]: (p["component"], p["role"], p["kind"]) for p in f.parts}
    assert files == {
        "unet/diffusion_pytorch_model.fp16.safetensors": ("unet", "weights", "unet"),
        "vae/diffusion_pytorch_model.fp16.safetensors": ("vae", "weights", "vae"),
        "text_encoder/model.fp16.safetensors": ("text_encoder", "weights", "text-encoder"),
    }
    weights = sum((d / p).stat().st_size for p in files)
    assert f.size == weights + (d / "model_index.json").stat().st_size
    assert f.findings == []


def test_sharded_unet_and_a_missing_shard(tmp_path):
    d = synth.write_diffusers(tmp_path / "sharded", variant=None, unet_shards=2)
    f = _core.scan_file(str(d), hash="none")
    assert (f["arch"], f["components"]["unet"]["tensors"]) == ("sd1", 686)
    roles = sorted((p["path"], p["role"]) for p in f["parts"] if p["component"] == "unet")
    assert roles == [
        ("unet/diffusion_pytorch_model-00001-of-00002.safetensors", "weights"),
        ("unet/diffusion_pytorch_model-00002-of-00002.safetensors", "weights"),
        ("unet/diffusion_pytorch_model.safetensors.index.json", "index"),
    ]
    assert [x["check"] for x in f["findings"]] == []
    (d / "unet" / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    f = _core.scan_file(str(d), hash="none")
    miss = [x for x in f["findings"] if x["check"] == "diffusers.missing-shard"]
    assert len(miss) == 1 and miss[0]["severity"] == "error"
    assert miss[0]["details"]["missing"] == ["diffusion_pytorch_model-00002-of-00002.safetensors"]


def test_folder_without_model_index_is_scanned_file_by_file(tmp_path):
    d = synth.write_diffusers(tmp_path / "x")
    (d / "model_index.json").unlink()
    rep = scan(tmp_path, hash="none")
    weights = [f for f in rep.files if f.format == "safetensors"]
    assert sorted(f.kind for f in weights) == ["text-encoder", "unet", "vae"]
    assert not [f for f in rep.files if f.format == "diffusers"]


def test_info_describes_a_diffusers_folder_but_not_a_plain_one(tmp_path):
    d = synth.write_diffusers(tmp_path / "sd15")
    out = run_cli("info", str(d), "--hash", "none")
    assert out.exit_code == 0, out.output
    assert "diffusers" in out.stdout and "Files" in out.stdout and "text-encoder" in out.stdout
    (d / "model_index.json").unlink()
    bad = run_cli("info", str(d), "--hash", "none")
    assert bad.exit_code == 2 and "is a directory" in bad.output


# ---- .npy / .npz ---------------------------------------------------------------------------------


def _npy_with_pickle(pkl: bytes) -> bytes:
    """An object-array .npy as numpy writes it (v1 header padded to 64), holding the given pickle bytes."""
    h = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    h += " " * (-(10 + len(h) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + pkl


def test_npy_plain_array_is_a_tensor(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "w.npy", a)
    r = _core.scan_file(str(tmp_path / "w.npy"), hash="components")
    assert (r["format"], r["tensors"], r["dtypes"]) == ("npy", 1, {"F32": 48})
    assert r["findings"] == []
    t = _core.read_tensors(str(tmp_path / "w.npy"))["tensors"][0]
    raw = (tmp_path / "w.npy").read_bytes()
    assert (t["name"], t["shape"]) == ("w", [3, 4])
    assert raw[t["start"] : t["start"] + t["len"]] == a.tobytes()


def test_npy_object_array_with_code_is_critical_and_benign_is_not(tmp_path):
    # Protocol 2 pickle of [os.system] (built by hand, never loaded).
    evil = tmp_path / "evil.npy"
    evil.write_bytes(_npy_with_pickle(b"\x80\x02]q\x00cos\nsystem\nq\x01a."))
    r = _core.scan_file(str(evil), hash="none")
    crit = [f for f in r["findings"] if f["severity"] == "critical"]
    assert [(f["check"], f["details"]["module"], f["details"]["name"]) for f in crit] == [
        ("pickle.dangerous-import", "os", "system")]
    benign = tmp_path / "ok.npy"
    np.save(benign, np.array([{"a": 1}, "text", 3], dtype=object), allow_pickle=True)
    r = _core.scan_file(str(benign), hash="none")
    assert [(f["check"], f["severity"]) for f in r["findings"]] == [("npy.object-array", "info")]


def test_npz_members(tmp_path):
    np.savez(tmp_path / "z.npz", w=np.ones((2, 2), np.float16), b=np.zeros(3, np.int64))
    r = _core.scan_file(str(tmp_path / "z.npz"), hash="components")
    assert (r["format"], r["tensors"], r["dtypes"]) == ("npz", 2, {"F16": 8, "I64": 24})
    assert r["findings"] == []
    np.savez_compressed(tmp_path / "c.npz", w=np.ones((2, 2), np.float16))
    r = _core.scan_file(str(tmp_path / "c.npz"), hash="none")
    assert (r["tensors"], [f["check"] for f in r["findings"]]) == (0, ["npz.compressed"])


# ---- numpy arrays pickled inside checkpoints -----------------------------------------------------


def test_numpy_arrays_in_a_checkpoint_are_tensors(tmp_path):
    import torch

    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = tmp_path / "with-numpy.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2, 3)}, "stats": {"mean": arr}}, p, pickle_protocol=4)
    t = {x["name"]: x for x in _core.read_tensors(str(p))["tensors"]}
    assert set(t) == {"w"}  # the state_dict is what loaders read
    p2 = tmp_path / "numpy-root.ckpt"
    torch.save({"w": torch.zeros(2, 3), "mean": arr, "f": np.asfortranarray(arr)}, p2, pickle_protocol=4)
    t = {x["name"]: x for x in _core.read_tensors(str(p2))["tensors"]}
    assert set(t) == {"w", "mean", "f"}
    raw = p2.read_bytes()
    m = t["mean"]
    assert (m["dtype"], m["shape"], m["strides"]) == ("F32", [3, 4], None)
    assert raw[m["start"] : m["start"] + m["len"]] == arr.tobytes()
    f = t["f"]
    assert f["strides"] == [1, 3]
    assert raw[f["start"] : f["start"] + f["len"]] == arr.tobytes(order="F")
    r = _core.scan_file(str(p2), hash="components")
    assert r["tensors"] == 3 and "pickle.numpy-array" not in [x["check"] for x in r["findings"]]


def test_protocol2_numpy_arrays_are_named_not_listed(tmp_path):
    import torch

    p = tmp_path / "p2.ckpt"
    torch.save({"w": torch.zeros(2), "mean": np.ones(4, np.float32)}, p)  # torch's default protocol 2
    r = _core.scan_file(str(p), hash="none")
    assert r["tensors"] == 1
    info = [x for x in r["findings"] if x["check"] == "pickle.numpy-array"]
    assert [a["name"] for a in info[0]["details"]["arrays"]] == ["mean"]
    assert info[0]["severity"] == "info"
    plain = tmp_path / "plain.ckpt"
    torch.save({"w": torch.zeros(2)}, plain)
    checks = [x["check"] for x in _core.scan_file(str(plain), hash="none")["findings"]]
    assert "pickle.numpy-array" not in checks


def test_bare_pickle_of_numpy_arrays(tmp_path):
    import pickle

    arr = np.arange(6, dtype=np.float16)
    p = tmp_path / "arrays.pkl"
    p.write_bytes(pickle.dumps({"a": arr}, protocol=4))  # written, never loaded
    t = _core.read_tensors(str(p))["tensors"]
    assert [(x["name"], x["dtype"], x["shape"]) for x in t] == [("a", "F16", [6])]
    raw = p.read_bytes()
    assert raw[t[0]["start"] : t[0]["start"] + t[0]["len"]] == arr.tobytes()
