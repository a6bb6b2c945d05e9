"""Lineage fingerprints, `similar` and `lineage` on a library built like real families.

The library is built from a REDUCED real SD1.5 layout (real tensor names, every merge block present,
shapes cut to at most 1024 elements except the tensor the classifier keys on) with seeded random
weights: a base, fine-tunes (base + independent deltas on UNet and text encoder, VAE untouched), an
unrelated model, weighted-sum merges of two and three parents, a block-weighted merge, an
add-difference merge, a light further fine-tune of a merge, an fp32 re-save and a .ckpt copy of an fp16
model, two standalone VAEs and a checkpoint whose VAE blends them. Parents are stored fp16; merges are
computed from the stored parents (as merge tools do, in fp32) and stored fp16, so rounding is real.
"""

from __future__ import annotations

import base64
import json
import os
import struct

import numpy as np
import pytest
from tests import fpsynth, torchzip
from typer.testing import CliRunner

from fastscan import _core, synth
from fastscan.cli import app
from fastscan.lineage import block_order, scan_fingerprints, similar, to_dot
from fastscan.lineage import lineage as lineage_doc

KEY = "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"  # what the classifier keys sd1 on
UNET, VAE, CLIP = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."


def _block(canonical: str) -> str:
    """Reference block naming (docs/fingerprint.md), independent of the core."""
    parts = canonical.split(".")
    if parts[0] == "input_blocks":
        return f"IN{int(parts[1]):02d}"
    if parts[0] == "output_blocks":
        return f"OUT{int(parts[1]):02d}"
    if parts[0] == "middle_block":
        return "M00"
    return "BASE"


def _shrink(shape: list[int], cap: int = 1024) -> list[int]:
    out = list(shape)
    while int(np.prod(out)) > cap:
        i = int(np.argmax(out))
        out[i] = max(1, out[i] // 2)
    return out


def reduced_layout() -> dict[str, dict]:
    """Two tensors per UNet block, a few text encoder and VAE tensors, real names, small shapes."""
    full = synth.load_layout("sd15")["tensors"]
    picked: dict[str, dict] = {}
    per_block: dict[str, int] = {}
    for name in sorted(full):
        t = full[name]
        if not name.startswith(UNET) or t["dtype"] not in ("F16", "F32"):
            continue
        canon = name[len(UNET) :]
        b = _block(canon)
        if per_block.get(b, 0) < 2 or canon == KEY:
            per_block[b] = per_block.get(b, 0) + 1
            shape = t["shape"] if canon == KEY else _shrink(t["shape"])
            picked[name] = {"dtype": "F16", "shape": shape}
    for prefix, count in ((CLIP, 3), (VAE, 4)):
        names = [n for n in sorted(full) if n.startswith(prefix) and "position_ids" not in n]
        if prefix == VAE:
            names = [VAE + "encoder.conv_in.weight", VAE + "decoder.conv_in.weight"] + names[:2]
        for name in names[:count]:
            picked[name] = {"dtype": "F16", "shape": _shrink(full[name]["shape"])}
    return picked


LAYOUT = reduced_layout()


def f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16)


def random_model(rng: np.random.Generator, layout=LAYOUT) -> dict[str, np.ndarray]:
    return {n: f16(rng.standard_normal(t["shape"])) for n, t in layout.items()}


def fine_tune(base: dict, rng: np.random.Generator, scale: float = 0.1) -> dict[str, np.ndarray]:
    """Base + independent deltas on UNet and text encoder; the VAE is kept (fine-tunes do not train it)."""
    out = {}
    for n, v in base.items():
        delta = 0.0 if n.startswith(VAE) else scale * rng.standard_normal(v.shape)
        out[n] = f16(v.astype(np.float32) + delta)
    return out


def weighted(parts: list[tuple[float, dict]], weight_of=None) -> dict[str, np.ndarray]:
    """Σ w·P computed in fp32 from the stored fp16 parents, stored fp16 (what merge tools do)."""
    out = {}
    for n in parts[0][1]:
        acc = np.zeros(parts[0][1][n].shape, np.float32)
        for k, (w, p) in enumerate(parts):
            acc += np.float32(weight_of(n, k) if weight_of else w) * p[n].astype(np.float32)
        out[n] = f16(acc)
    return out


def write(path, model: dict, dtype: str = "F16", metadata=None) -> str:
    tensors = {n: {"dtype": dtype, "shape": list(v.shape)} for n, v in model.items()}
    np_dtype = {"F16": "<f2", "F32": "<f4"}[dtype]
    data = {n: v.astype(np_dtype).tobytes() for n, v in model.items()}
    synth.write_safetensors(path, tensors, data=data, metadata=metadata)
    return os.fspath(path)


BW_BLOCKS = sorted({_block(n[len(UNET) :]) for n in LAYOUT if n.startswith(UNET)} - {"BASE"}, key=block_order)
BW_WEIGHT = {b: round(0.1 + 0.8 * i / (len(BW_BLOCKS) - 1), 3) for i, b in enumerate(BW_BLOCKS)}


def bw_weight(name: str, k: int) -> float:
    """Block-weighted merge: F1's weight rises from 0.1 (IN00) to 0.9 (OUT11); 0.5 elsewhere."""
    b = _block(name[len(UNET) :]) if name.startswith(UNET) else "BASE"
    w1 = BW_WEIGHT.get(b, 0.5)
    return w1 if k == 0 else 1.0 - w1


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return build_library(tmp_path_factory.mktemp("lib"))


def build_library(d):
    """Writes the test library into directory `d`; returns its paths, scan and lineage document."""
    rng = np.random.default_rng(12)
    base = random_model(rng)
    f1, f2, f3 = (fine_tune(base, rng) for _ in range(3))
    unrelated = random_model(rng)
    m1 = weighted([(0.6, f1), (0.4, f2)])
    m3 = weighted([(0.25, f1), (0.35, f2), (0.4, f3)])
    bw = weighted([(0, f1), (0, f3)], bw_weight)
    ad = {
        n: f16(
            f3[n].astype(np.float32)
            + np.float32(0.7) * (f1[n].astype(np.float32) - base[n].astype(np.float32))
        )
        for n in base
    }
    light = {
        n: f16(v.astype(np.float32) + (0.0 if n.startswith(VAE) else 0.01 * rng.standard_normal(v.shape)))
        for n, v in m1.items()
    }
    vae_names = [n for n in LAYOUT if n.startswith(VAE)]
    v1 = {n[len(VAE) :]: f16(rng.standard_normal(LAYOUT[n]["shape"])) for n in vae_names}
    v2 = {n[len(VAE) :]: f16(rng.standard_normal(LAYOUT[n]["shape"])) for n in vae_names}
    blended = dict(base)
    for n in vae_names:
        c = n[len(VAE) :]
        blended[n] = f16(0.6 * v1[c].astype(np.float32) + 0.4 * v2[c].astype(np.float32))
    p = {
        "base": write(d / "base.safetensors", base),
        "ft1": write(d / "ft1.safetensors", f1),
        "ft2": write(d / "ft2.safetensors", f2),
        "ft3": write(d / "ft3.safetensors", f3),
        "other": write(d / "other.safetensors", unrelated),
        "mix": write(
            d / "mix.safetensors",
            m1,
            metadata={
                "sd_merge_recipe": json.dumps(
                    {"type": "webui", "interp_method": "Weighted sum", "multiplier": 0.1}
                )
            },
        ),
        "mix3": write(d / "mix3.safetensors", m3),
        "blockmix": write(d / "blockmix.safetensors", bw),
        "adddiff": write(d / "adddiff.safetensors", ad),
        "light": write(d / "light.safetensors", light),
        "ft2-fp32": write(d / "ft2-fp32.safetensors", f2, dtype="F32"),
        "vae1": write(d / "vae1.safetensors", v1),
        "vae2": write(d / "vae2.safetensors", v2),
        "grayvae": write(d / "grayvae.safetensors", blended),
    }
    ckpt = d / "ft1.ckpt"
    torchzip.write_zip(
        ckpt,
        {n: {"dtype": "F16", "shape": list(v.shape)} for n, v in f1.items()},
        data={n: v.astype("<f2").tobytes() for n, v in f1.items()},
        nest="state_dict",
    )
    p["ft1-ckpt"] = os.fspath(ckpt)
    cache = d / "cache.sqlite3"
    scanned = scan_fingerprints([d], cache=cache)
    return {"dir": d, "paths": p, "scanned": scanned, "doc": lineage_doc(scanned.reports), "cache": cache}


def by_path(doc):
    return {m["path"]: m for m in doc["models"]}


# ---- the fingerprint contract ---------------------------------------------------------------------


def ref_indices(name: str, n: int) -> list[int]:
    """Reference sample positions (docs/fingerprint.md), written from the contract, not the core."""
    import blake3

    k = min(n, max(64, -(-n // 16384)))
    if k == n:
        return list(range(n))
    state = int.from_bytes(blake3.blake3(name.encode()).digest()[:8], "little")
    mask = (1 << 64) - 1
    out = []
    for j in range(k):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        lo, hi = j * n // k, (j + 1) * n // k
        out.append(lo + z % (hi - lo))
    return out


def reference_fingerprint(model: dict[str, np.ndarray], prefixes: dict[str, str]) -> dict:
    comps: dict[str, list] = {}
    for name, v in model.items():
        for comp, prefix in prefixes.items():
            if name.startswith(prefix):
                comps.setdefault(comp, []).append((name[len(prefix) :], v))
    out = {}
    for comp, items in comps.items():
        items.sort(key=lambda x: x[0].encode())
        samples = b""
        tensors = []
        for canon, v in items:
            flat = v.reshape(-1).astype(np.float32)
            samples += flat[ref_indices(canon, flat.size)].astype("<f4").tobytes()
            tensors.append(
                {"name": canon, "n": int(flat.size), "block": _block(canon) if comp == "unet" else "BASE"}
            )
        out[comp] = {"tensors": tensors, "samples": base64.b64encode(samples).decode()}
    return {"version": "fastscan.fingerprint/1", "components": out}


def test_doc_vector(tmp_path):
    """The small vector of docs/fingerprint.md: a 3-tensor VAE file."""
    model = {
        "encoder.conv_in.weight": np.arange(200, dtype=np.float32).reshape(2, 100) / 8,
        "decoder.conv_in.weight": np.array([1.5, -2.25, 0.0], dtype=np.float32),
        "decoder.big": (np.arange(20000, dtype=np.float32) % 97 - 48).astype(np.float16),
    }
    path = tmp_path / "v.safetensors"
    tensors = {
        n: {"dtype": {np.float32: "F32", np.float16: "F16"}[v.dtype.type], "shape": list(v.shape)}
        for n, v in model.items()
    }
    synth.write_safetensors(path, tensors, data={n: v.tobytes() for n, v in model.items()})
    got = _core.Scanner([path], hash="components", fingerprint=True).__next__()["fingerprint"]
    assert got == reference_fingerprint(model, {"vae": ""})
    # the first sampled positions of the 20000-element tensor, as documented
    assert ref_indices("decoder.big", 20000)[:4] == [288, 334, 864, 1051]


def test_fingerprint_matches_reference_and_is_dtype_and_format_free(library):
    s = {r["path"]: r for r in library["scanned"].reports}
    p = library["paths"]
    fp = s[p["ft2"]]["fingerprint"]
    prefixes = {"unet": UNET, "vae": VAE, "clip_l": CLIP}
    f2 = dict.fromkeys(LAYOUT)  # values back from the file, independently of the core
    with open(p["ft2"], "rb") as fh:
        raw = fh.read()
    hlen = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + hlen])
    for n in f2:
        b, e = header[n]["data_offsets"]
        f2[n] = np.frombuffer(raw[8 + hlen + b : 8 + hlen + e], "<f2").reshape(header[n]["shape"])
    assert fp == reference_fingerprint(f2, prefixes)
    assert s[p["ft2-fp32"]]["fingerprint"] == fp  # fp32 re-save
    assert s[p["ft1-ckpt"]]["fingerprint"] == s[p["ft1"]]["fingerprint"]  # .ckpt vs .safetensors
    assert s[p["ft1"]]["fingerprint"] != fp


def test_fingerprint_is_linear(library):
    """The fingerprint of a weighted sum is the weighted sum of the parents' fingerprints (fp16 rounding)."""
    s = {r["path"]: r["fingerprint"] for r in library["scanned"].reports}
    p = library["paths"]

    def samples(path):
        comps = s[path]["components"]
        return np.concatenate(
            [np.frombuffer(base64.b64decode(comps[c]["samples"]), "<f4") for c in sorted(comps)]
        )

    mix, a, b = samples(p["mix"]), samples(p["ft1"]), samples(p["ft2"])
    want = 0.6 * a.astype(np.float64) + 0.4 * b.astype(np.float64)
    assert np.all(np.abs(mix - want) <= np.abs(want) * 2.0**-10 + 2.0**-24)
    assert not np.allclose(mix, a, atol=1e-3)
    idx = ref_indices("input_blocks.4.1.proj_in.weight", 409600)
    assert len(idx) == 64 and all(x < y for x, y in zip(idx, idx[1:], strict=False))


def test_rescan_is_served_from_cache(library):
    before = os.stat(library["paths"]["base"]).st_atime_ns
    again = scan_fingerprints([library["dir"]], cache=library["cache"])
    assert {r["path"]: r["fingerprint"] for r in again.reports} == {
        r["path"]: r["fingerprint"] for r in library["scanned"].reports
    }
    # a cached rerun does not open the files: a cache holding a fingerprint for a changed file is not used
    assert os.stat(library["paths"]["base"]).st_atime_ns == before


def test_sdxl_fingerprint_size():
    """A whole SDXL checkpoint's fingerprint stays under 4 MB (computed from the real layout's shapes)."""
    full = synth.load_layout("sdxl")["tensors"]
    samples = sum(
        min(int(np.prod(t["shape"])), max(64, -(-int(np.prod(t["shape"])) // 16384))) for t in full.values()
    )
    assert samples * 4 < 4 << 20


# ---- lineage -----------------------------------------------------------------------------------


def test_weighted_sums_come_back(library):
    m = by_path(library["doc"])
    p = library["paths"]
    mix = m[p["mix"]]["merge"]
    assert mix["method"] == "weighted-sum" and mix["blocks"] is None
    w = {q["path"]: q["weight"] for q in mix["parents"]}
    # a parent with same-weights twins is named by the documented rule: the .safetensors file
    # (ft1, not ft1.ckpt), then the smaller file (the fp16 ft2, not its fp32 re-save)
    assert set(w) == {p["ft1"], p["ft2"]}
    assert w[p["ft1"]] == pytest.approx(0.6, abs=0.02)
    assert w[p["ft2"]] == pytest.approx(0.4, abs=0.02)
    assert mix["fit"] > 0.99
    mix3 = m[p["mix3"]]["merge"]
    w3 = sorted(q["weight"] for q in mix3["parents"])
    assert w3 == pytest.approx([0.25, 0.35, 0.4], abs=0.02)


def test_block_weighted_merge_per_block(library):
    m = by_path(library["doc"])
    p = library["paths"]
    merge = m[p["blockmix"]]["merge"]
    assert merge["method"] == "weighted-sum" and merge["blocks"]
    f1 = p["ft1"]
    assert {q["path"] for q in merge["parents"]} == {f1, p["ft3"]}
    for b, want in BW_WEIGHT.items():
        assert merge["blocks"][b][f1] == pytest.approx(want, abs=0.03), b


def test_add_difference_with_base(library):
    m = by_path(library["doc"])
    p = library["paths"]
    merge = m[p["adddiff"]]["merge"]
    assert merge["method"] == "add-difference"
    assert merge["base"] == p["base"]
    assert merge["parents"][0]["path"] == p["ft3"]
    assert merge["parents"][1]["path"] == p["ft1"]
    assert merge["parents"][1]["weight"] == pytest.approx(0.7, abs=0.03)


def test_non_merges_are_null(library):
    m = by_path(library["doc"])
    p = library["paths"]
    for k in (
        "base",
        "ft1",
        "ft2",
        "ft3",
        "other",
        "light",
        "ft2-fp32",
        "ft1-ckpt",
        "vae1",
        "vae2",
        "grayvae",
    ):
        assert m[p[k]]["merge"] is None, k


def test_same_weights_nearest_and_families(library):
    m = by_path(library["doc"])
    p = library["paths"]
    assert m[p["ft2"]]["same_weights"] == [p["ft2-fp32"]]
    assert m[p["ft1"]]["same_weights"] == [p["ft1-ckpt"]]
    assert m[p["light"]]["nearest"][0]["path"] == p["mix"]
    sims = [x["similarity"] for x in m[p["ft1"]]["nearest"]]
    assert sims == sorted(sims, reverse=True) and all(0 <= s <= 1 for s in sims)
    family = next(f for f in library["doc"]["families"] if p["base"] in f)
    assert p["other"] not in family and p["mix"] in family and p["grayvae"] in family
    assert all(p["other"] not in f for f in library["doc"]["families"])
    # the unrelated model is far from everything in the family
    assert all(x["similarity"] < 0.2 for x in m[p["other"]]["nearest"])


def test_blended_vae_and_provenance(library):
    m = by_path(library["doc"])
    p = library["paths"]
    found = [f for f in m[p["grayvae"]]["findings"] if f["check"] == "vae.blended"]
    assert len(found) == 1 and found[0]["severity"] == "warning"
    w = {q["path"]: q["weight"] for q in found[0]["details"]["parents"]}
    assert w == {p["vae1"]: pytest.approx(0.6, abs=0.02), p["vae2"]: pytest.approx(0.4, abs=0.02)}
    for k in ("base", "mix", "vae1", "vae2", "ft1"):
        assert not [f for f in m[p[k]]["findings"] if f["check"] == "vae.blended"], k
    # mix declares multiplier 0.1 (0.9·A + 0.1·B) but is 0.6/0.4
    assert m[p["mix"]]["declared"]["sd_merge_recipe"]["multiplier"] == 0.1
    assert [f["check"] for f in m[p["mix"]]["findings"]] == ["provenance.mismatch"]
    assert m[p["base"]]["declared"] is None


def test_similar_estimate_agrees_with_exact(library):
    p = library["paths"]
    pairs = [(p["ft1"], p["mix"]), (p["ft1"], p["other"]), (p["blockmix"], p["ft3"])]
    for a, b in pairs:
        est = similar([a, b], cache=library["cache"])
        ex = similar([a, b], exact=True)
        assert est["method"] == "fingerprint" and ex["method"] == "exact"
        pe, px = est["pairs"][0], ex["pairs"][0]
        # sampling error: tiny for related models (cosine near 1), ~1/sqrt(samples) around 0
        tol = 0.005 if px["similarity"] > 0.5 else 0.08
        assert pe["similarity"] == pytest.approx(px["similarity"], abs=tol)
        for comp in px["components"]:
            got, want = pe["components"][comp]["similarity"], px["components"][comp]["similarity"]
            assert got == pytest.approx(want, abs=0.005 if want > 0.5 else 0.15), comp
        assert set(pe["components"]["unet"]["blocks"]) == set(px["components"]["unet"]["blocks"])


def test_exact_similarity_reference(library):
    """The exact figure is the cosine over all shared weights (numpy, independently)."""
    p = library["paths"]
    ex = similar([p["ft1"], p["ft2-fp32"]], exact=True)["pairs"][0]

    def load(path):
        raw = open(path, "rb").read()
        hlen = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8 : 8 + hlen])
        base = 8 + hlen
        out = {}
        for n, t in header.items():
            if n == "__metadata__":
                continue
            b, e = t["data_offsets"]
            out[n] = np.frombuffer(raw[base + b : base + e], {"F16": "<f2", "F32": "<f4"}[t["dtype"]]).astype(
                np.float64
            )
        return out

    a, b = load(p["ft1"]), load(p["ft2-fp32"])
    unet = [n for n in a if n.startswith(UNET)]
    va = np.concatenate([a[n] for n in unet])
    vb = np.concatenate([b[n] for n in unet])
    want = float(va @ vb / np.sqrt((va @ va) * (vb @ vb)))
    assert ex["components"]["unet"]["similarity"] == pytest.approx(want, abs=1e-5)


def test_similar_refuses_different_archs_and_non_models(library, tmp_path):
    p = library["paths"]
    with pytest.raises(ValueError, match="different kinds or archs"):
        similar([p["ft1"], p["vae1"]], cache=library["cache"])
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    with pytest.raises(ValueError, match="not a model file"):
        similar([p["ft1"], os.fspath(junk)])


def test_the_files_lineage_covers_are_the_cores_choice(tmp_path):
    """A LoRA and an embedding carry fingerprints too; the core leaves them out of lineage, and Python
    keeps exactly the files the core's lineage covers (it asks the core which kinds, never decides)."""
    for name, layout in [("lora", "lora-sd15-kohya"), ("emb", "embedding-sd15"), ("vae", "vae-sd")]:
        synth.write_layout(tmp_path / f"{name}.safetensors", layout)
    reports = [r for r in _core.Scanner([str(tmp_path)], hash="components", fingerprint=True)]
    assert {r["kind"] for r in reports if r.get("fingerprint")} >= {"lora", "vae"}
    covered = {m["path"] for m in _core.lineage(reports)["models"]}
    assert covered == {str(tmp_path / "vae.safetensors")}
    kept = scan_fingerprints([tmp_path], cache=False).reports
    assert {r["path"] for r in kept} == covered


def test_cli_json_table_and_dot(library):
    runner = CliRunner()
    d = os.fspath(library["dir"])
    r = runner.invoke(app, ["lineage", d, "--json"], env={"FASTSCAN_CACHE": os.fspath(library["cache"])})
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["schema"] == "fastscan.lineage/1"
    assert {m["path"] for m in doc["models"]} == set(library["paths"].values())
    r = runner.invoke(
        app, ["lineage", d], env={"FASTSCAN_CACHE": os.fspath(library["cache"]), "COLUMNS": "200"}
    )
    assert r.exit_code == 0 and "adddiff.safetensors" in r.output and "vae.blended" in r.output
    dot = to_dot(doc)
    assert dot.startswith("digraph lineage {") and dot.rstrip().endswith("}")
    assert f'"{library["paths"]["base"]}" -> "{library["paths"]["adddiff"]}" [style=dashed' in dot
    r = runner.invoke(
        app, ["similar", library["paths"]["ft1"], library["paths"]["mix"]], env={"COLUMNS": "120"}
    )
    assert r.exit_code == 0 and "IN00" in r.output and "OUT11" in r.output
    r = runner.invoke(app, ["similar", library["paths"]["ft1"], library["paths"]["vae1"]])
    assert r.exit_code == 2 and "different kinds or archs" in r.output


def test_twins_are_named_alike_from_any_order(library):
    """The twin rule does not depend on the order reports come in (the core sorts, then ranks)."""
    reports = list(reversed(library["scanned"].reports))
    assert lineage_doc(reports) == library["doc"]


def test_screen_equals_exhaustive():
    """A few hundred synthetic fingerprints in families larger than the screen keeps: the screened
    answer (sketch screen, then fingerprint pairs and fits over the kept candidates only) equals the
    exhaustive one (every pair on fingerprints)."""
    reports = fpsynth.library(300, seed=3, family_size=100)
    screened = _core.lineage(reports)
    assert screened == _core.lineage(reports, exhaustive=True)
    # not vacuous: every kind of relation is found, in families bigger than the 48 the screen keeps
    models = screened["models"]
    methods = {(m["merge"]["method"], m["merge"]["blocks"] is not None) for m in models if m["merge"]}
    assert methods == {("weighted-sum", False), ("weighted-sum", True), ("add-difference", False)}
    assert any(f["check"] == "vae.blended" for m in models for f in m["findings"])
    assert max(len(f) for f in screened["families"]) > 64
    # twins (written as .ckpt copies of .safetensors models) never name a parent
    named = [q["path"] for m in models if m["merge"] for q in m["merge"]["parents"]]
    assert named and not [x for x in named if x.endswith(".ckpt")]
    # the generator's ground truth: unrelated models and bases are no merges
    for m in models:
        if "/other" in m["path"] or "/base" in m["path"]:
            assert m["merge"] is None, m["path"]


@pytest.mark.parametrize("mirror", [False, True], ids=["alone", "with-mirror"])
def test_ninety_ten_merges_among_many_near_base_fine_tunes(tmp_path, mirror):
    """Issue 12: a 90/10 weighted sum of a strong fine-tune A (drift 0.3) and a light one B (drift 0.05)
    in a family with ten lighter fine-tunes (drift 0.03, all nearer the merge than B). B was not among
    the 8 most similar candidates, so: alone, the merge came out as A 0.90 + base 0.10 (fit 0.97: any
    near-base model shrinks A's delta by 10%, leaving far more than rounding); with its 10/90 mirror in
    the library, each came out as its main parent + 0.11 of the other merge (exact, but a recipe of
    merges). The recipe must be A 0.9 + B 0.1 (B explains what A leaves), the mirror B 0.9 + A 0.1,
    and the models they are made of are no merges. Parents stored fp16, merges computed in fp32 and
    stored fp16."""
    rng = np.random.default_rng(90)
    base = random_model(rng)
    a = fine_tune(base, rng, 0.3)
    b = fine_tune(base, rng, 0.05)
    near = [fine_tune(base, rng, 0.03) for _ in range(10)]
    p = {
        "base": write(tmp_path / "base.safetensors", base),
        "a": write(tmp_path / "a.safetensors", a),
        "b": write(tmp_path / "b.safetensors", b),
        "m91": write(tmp_path / "m91.safetensors", weighted([(0.9, a), (0.1, b)])),
    }
    if mirror:
        p["m19"] = write(tmp_path / "m19.safetensors", weighted([(0.1, a), (0.9, b)]))
    for i, f in enumerate(near):
        p[f"near{i}"] = write(tmp_path / f"near{i}.safetensors", f)
    doc = by_path(lineage_doc(scan_fingerprints([tmp_path], cache=tmp_path / "cache.sqlite3").reports))
    for merge, wa in (("m91", 0.9), ("m19", 0.1))[: 1 + mirror]:
        got = doc[p[merge]]["merge"]
        assert got is not None, merge
        w = {q["path"]: q["weight"] for q in got["parents"]}
        assert (got["method"], got["blocks"]) == ("weighted-sum", None), merge
        assert w == {p["a"]: pytest.approx(wa, abs=0.02), p["b"]: pytest.approx(1 - wa, abs=0.02)}, merge
    for k in p:
        if not k.startswith("m"):
            assert doc[p[k]]["merge"] is None, k


def test_bake_vae_warns_for_a_vae_of_another_arch(tmp_path):
    """SD1 and SDXL VAEs have the same shapes: the warning comes from the weights (fingerprints). An
    SDXL VAE (names and shapes from the sdxl layout, its own weights) into an SD1 checkpoint warns; a
    fine-tune of the checkpoint's own VAE (what sd-vae-ft-mse is to the SD1 VAE) does not."""
    rng = np.random.default_rng(5)
    ck = write(tmp_path / "sd1.safetensors", random_model(rng))
    sdxl = synth.load_layout("sdxl")["tensors"]
    vae_names = [n for n in LAYOUT if n.startswith(VAE)]
    assert all(n in sdxl for n in vae_names)
    xl_vae = {n[len(VAE) :]: f16(rng.standard_normal(_shrink(sdxl[n]["shape"]))) for n in vae_names}
    xl = write(tmp_path / "sdxl_vae.safetensors", xl_vae)
    with open(ck, "rb") as fh:  # the checkpoint's own VAE, read back independently of the core
        raw = fh.read()
    hlen = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + hlen])
    own = {
        n[len(VAE) :]: np.frombuffer(
            raw[8 + hlen + header[n]["data_offsets"][0] : 8 + hlen + header[n]["data_offsets"][1]], "<f2"
        ).reshape(header[n]["shape"])
        for n in vae_names
    }
    ft = write(
        tmp_path / "ft_mse.safetensors",
        {n: f16(v.astype(np.float32) + 0.05 * rng.standard_normal(v.shape)) for n, v in own.items()},
    )
    env = {"FASTSCAN_CACHE": os.fspath(tmp_path / "cache.sqlite3"), "COLUMNS": "200"}
    runner = CliRunner()
    out = tmp_path / "baked.safetensors"
    r = runner.invoke(app, ["bake-vae", ck, "--vae", xl, "-o", os.fspath(out), "--force"], env=env)
    assert "unrelated to the VAE of" in r.output and "SDXL" in r.output, r.output
    out.unlink(missing_ok=True)
    r = runner.invoke(app, ["bake-vae", ck, "--vae", ft, "-o", os.fspath(out), "--force"], env=env)
    assert "unrelated" not in r.output and "warning" not in r.output, r.output
    assert r.exit_code == 0 and out.exists(), r.output
