"""File hashes (contract §5) and the canonical component hash v1 (docs/component-hash.md).

Every expected value is computed here independently, with `hashlib` and the `blake3` package over the
file's bytes, and compared with what the Rust data pass reports. Fixtures come from the real layouts
named in each test (shared/data/layouts).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import blake3
import numpy as np
import pytest

from fastscan import _core, synth

DOC = Path(__file__).resolve().parents[1] / "docs" / "component-hash.md"


# ---- independent implementations -------------------------------------------------------------


def py_file_hashes(path: Path) -> dict:
    """contract §5 file hashes computed from the file's bytes with hashlib and blake3."""
    b = path.read_bytes()
    sha = hashlib.sha256(b).hexdigest()
    (n,) = struct.unpack("<Q", b[:8])
    return {
        "blake3": blake3.blake3(b, max_threads=blake3.blake3.AUTO).hexdigest(),
        "sha256": sha,
        "autov2": sha[:10],
        "autov1": hashlib.sha256(b[0x100000:0x110000]).hexdigest()[:8] if len(b) >= 2 << 20 else None,
        "addnet": hashlib.sha256(b[8 + n :]).hexdigest(),
    }


def frame(name: str, dtype: str, shape: list[int], nbytes: int) -> bytes:
    """The bytes v1 puts before a tensor's data."""
    out = name.encode() + b"\0" + dtype.encode() + b"\0" + struct.pack("<Q", len(shape))
    out += b"".join(struct.pack("<Q", d) for d in shape)
    return out + struct.pack("<Q", nbytes)


def py_component_hash(items) -> str:
    """v1 over (canonical name, dtype, shape, data bytes) items, in any order."""
    h = blake3.blake3()
    for name, dtype, shape, data in sorted(items, key=lambda x: x[0].encode()):
        h.update(frame(name, dtype, shape, len(data)))
        h.update(data)
    return h.hexdigest()


def read_st(path: Path) -> tuple[dict, bytes]:
    """A safetensors file's header entries and its data region (own parser, no fastscan)."""
    b = path.read_bytes()
    (n,) = struct.unpack("<Q", b[:8])
    header = json.loads(b[8 : 8 + n])
    header.pop("__metadata__", None)
    return header, b[8 + n :]


def py_component_of_file(path: Path, prefix: str) -> str:
    """v1 of the tensors whose key starts with `prefix` (prefix stripped), read from the file."""
    header, data = read_st(path)
    items = []
    for key, t in header.items():
        if key.startswith(prefix):
            b, e = t["data_offsets"]
            items.append((key[len(prefix) :], t["dtype"], t["shape"], data[b:e]))
    return py_component_hash(items)


# ---- file hashes -----------------------------------------------------------------------------


def random_lora(path: Path, seed: int = 7, metadata=None) -> Path:
    """lora-sd15-kohya layout (a real kohya LoRA) with every tensor filled with seeded random bytes."""
    lay = synth.load_layout("lora-sd15-kohya")["tensors"]
    rng = np.random.default_rng(seed)
    data = {k: rng.bytes(synth.nbytes(t["dtype"], t["shape"])) for k, t in lay.items()}
    return synth.write_safetensors(path, lay, data=data, metadata=metadata)


def test_full_hashes_match_hashlib_and_blake3(tmp_path):
    p = random_lora(tmp_path / "lora.safetensors")
    assert p.stat().st_size > 2 << 20
    r = _core.scan_file(str(p), hash="full", sha256=True)
    assert r["hashes"] == py_file_hashes(p)


def test_sha256_family_is_opt_in(tmp_path):
    p = random_lora(tmp_path / "lora.safetensors")
    want = py_file_hashes(p)
    h = _core.scan_file(str(p), hash="full")["hashes"]
    assert (h["blake3"], h["autov1"]) == (want["blake3"], want["autov1"])
    assert h["sha256"] is None and h["autov2"] is None and h["addnet"] is None


def test_autov1_is_null_under_2mib(tmp_path):
    # embedding-sd15 (a real textual-inversion embedding): a few KB
    p = synth.write_layout(tmp_path / "emb.safetensors", "embedding-sd15")
    assert p.stat().st_size < 2 << 20
    h = _core.scan_file(str(p), hash="full", sha256=True)["hashes"]
    want = py_file_hashes(p)
    assert h["autov1"] is None
    assert (h["blake3"], h["sha256"], h["addnet"]) == (want["blake3"], want["sha256"], want["addnet"])


def test_addnet_vector_from_notes(tmp_path):
    # hashing-security-dedupe.md §1.6: 68-byte file, header space-padded to 56 bytes, data 00 01 02 03
    header = b'{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}'.ljust(56)
    p = tmp_path / "a.safetensors"
    p.write_bytes(struct.pack("<Q", 56) + header + bytes([0, 1, 2, 3]))
    h = _core.scan_file(str(p), hash="full", sha256=True)["hashes"]
    assert h["addnet"] == "054edec1d0211f624fed0cbca9d4f9400b0e491c43742af2c5b0abebf0c990d8"
    assert h["sha256"].startswith("d97fa06d") and h["sha256"].endswith("9f83b501")
    assert h["blake3"].startswith("6ae15614") and h["blake3"].endswith("0a21f14a")


def test_no_data_pass_no_hashes(tmp_path):
    p = random_lora(tmp_path / "lora.safetensors")
    for mode in ("none", "components"):
        h = _core.scan_file(str(p), hash=mode, sha256=True)["hashes"]
        assert all(v is None for v in h.values()), (mode, h)


def test_truncated_file_hashes_only_what_exists(tmp_path):
    p = random_lora(tmp_path / "lora.safetensors")
    size = p.stat().st_size
    with open(p, "r+b") as f:
        f.truncate(size - 100_001)
    r = _core.scan_file(str(p), hash="full", sha256=True)
    assert r["error"] is None
    assert "file.truncated" in {f["check"] for f in r["findings"]}
    assert r["hashes"] == py_file_hashes(p)


def _mismatch(r):
    return [f for f in r["findings"] if f["check"] == "hash.mismatch"]


def test_sshs_model_hash_mismatch_is_reported(tmp_path):
    p = random_lora(tmp_path / "bad.safetensors", metadata={"sshs_model_hash": "0" * 64})
    r = _core.scan_file(str(p), hash="full", sha256=True)
    (f,) = _mismatch(r)
    assert f["severity"] == "warning"
    assert f["details"]["stored"] == "0" * 64
    assert f["details"]["computed"] == py_file_hashes(p)["addnet"]


def test_sshs_model_hash_that_matches_is_quiet(tmp_path):
    # addnet skips the header, so the right value can be computed before it is written into the header
    plain = random_lora(tmp_path / "plain.safetensors")
    addnet = py_file_hashes(plain)["addnet"]
    p = random_lora(tmp_path / "good.safetensors", metadata={"sshs_model_hash": addnet.upper()})
    r = _core.scan_file(str(p), hash="full", sha256=True)
    assert r["hashes"]["addnet"] == addnet
    assert _mismatch(r) == []


# ---- canonical component hash v1 -------------------------------------------------------------

VECTORS = [
    # (what, items, hash) — the same table is in docs/component-hash.md
    ("one U8 tensor", [("a", "U8", [4], bytes([0, 1, 2, 3]))],
     "46b97d1fed2ea2ba18ce3c721e5103d4de1432d96a0b08fdfa5310cf88882fab"),
    ("F16 matrix and F32 scalar (given out of order)",
     [("w", "F16", [2, 2], bytes(range(8))), ("b", "F32", [], struct.pack("<f", 1.0))],
     "f47e986c78a8d0588564f1ba67702b531b9987f02fbc12004f024669992c6f22"),
]


def test_doc_vectors_from_python_implementation():
    doc = DOC.read_text()
    for what, items, want in VECTORS:
        assert py_component_hash(items) == want, what
        assert want in doc, f"{what}: vector missing from {DOC.name}"


def vae_pattern(name: str, nbytes: int, seed: int = 1234) -> bytes:
    """A seeded pattern for one VAE tensor (same bytes whatever file it is written to)."""
    rng = np.random.default_rng([seed, *name.encode()])
    return rng.bytes(nbytes)


def layout_vectors():
    """Doc vectors on the real vae-sd layout (F32), data all zeros and byte k = k mod 251."""
    lay = synth.load_layout("vae-sd")["tensors"]
    out = {}
    for fill in ("zeros", "mod251"):
        items = []
        for k, t in lay.items():
            n = synth.nbytes(t["dtype"], t["shape"])
            data = bytes(n) if fill == "zeros" else (bytes(range(251)) * (n // 251 + 1))[:n]
            items.append((k, t["dtype"], t["shape"], data))
        out[fill] = items
    return lay, out


def test_doc_vectors_on_the_vae_layout(tmp_path):
    lay, vectors = layout_vectors()
    doc = DOC.read_text()
    for fill, items in vectors.items():
        want = py_component_hash(items)
        assert want in doc, f"vae-sd {fill}: vector missing from {DOC.name}"
        data = None if fill == "zeros" else {k: d for k, _, _, d in items}
        p = synth.write_safetensors(tmp_path / f"vae-{fill}.safetensors", lay, data=data)
        r = _core.scan_file(str(p), hash="components")
        assert r["kind"] == "vae"
        assert r["components"]["vae"]["blake3"] == want


@pytest.fixture(scope="module")
def vae_pair(tmp_path_factory):
    """The sd15 checkpoint (real layout, fp16) and a standalone VAE with the same VAE bytes.

    The standalone file is the real vae-sd layout with its dtypes set to F16, as the fp16 checkpoint
    stores it; its names are exactly the checkpoint's `first_stage_model.` names without the prefix.
    """
    d = tmp_path_factory.mktemp("vae")
    sd15 = synth.load_layout("sd15")["tensors"]
    prefix = "first_stage_model."
    vae_in_ckpt = {k[len(prefix) :]: t for k, t in sd15.items() if k.startswith(prefix)}
    standalone = synth.load_layout("vae-sd")["tensors"]
    assert set(vae_in_ckpt) == set(standalone)
    assert all(standalone[k]["shape"] == t["shape"] for k, t in vae_in_ckpt.items())
    standalone = {k: dict(vae_in_ckpt[k]) for k in standalone}
    data = {k: vae_pattern(k, synth.nbytes(t["dtype"], t["shape"])) for k, t in standalone.items()}
    ckpt = synth.write_safetensors(
        d / "ckpt.safetensors", sd15, data={prefix + k: v for k, v in data.items()}
    )
    alone = synth.write_safetensors(d / "vae.safetensors", standalone, data=data)
    return ckpt, alone, standalone, data


def test_same_vae_in_checkpoint_and_alone(vae_pair):
    ckpt, alone, _, _ = vae_pair
    rc = _core.scan_file(str(ckpt), hash="components")
    ra = _core.scan_file(str(alone), hash="components")
    assert (rc["kind"], ra["kind"]) == ("checkpoint", "vae")
    want = py_component_of_file(alone, "")
    assert want == py_component_of_file(ckpt, "first_stage_model.")
    assert rc["components"]["vae"]["blake3"] == want
    assert ra["components"]["vae"]["blake3"] == want
    # other components are hashed too, and differ from the VAE
    assert rc["components"]["unet"]["blake3"] not in (None, want)
    assert rc["components"]["unet"]["blake3"] == py_component_of_file(ckpt, "model.diffusion_model.")


def write_shuffled(path: Path, tensors: dict, data: dict, metadata: dict, pad: int) -> Path:
    """A valid safetensors file with keys in reverse order, data laid out in that order, extra
    header padding and metadata: everything the component hash must not depend on."""
    names = sorted(tensors, reverse=True)
    entries, pos = {"__metadata__": metadata}, 0
    for k in names:
        n = len(data[k])
        t = tensors[k]
        entries[k] = {"dtype": t["dtype"], "shape": t["shape"], "data_offsets": [pos, pos + n]}
        pos += n
    raw = json.dumps(entries, indent=1).encode()
    raw += b" " * (pad + (-(len(raw) + pad) % 8))
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for k in names:
            f.write(data[k])
    return path


def test_layout_and_metadata_do_not_change_it(vae_pair, tmp_path):
    _, alone, tensors, data = vae_pair
    want = _core.scan_file(str(alone), hash="components")["components"]["vae"]["blake3"]
    p = write_shuffled(tmp_path / "shuffled.safetensors", tensors, data, {"note": "re-saved"}, pad=4096)
    r = _core.scan_file(str(p), hash="full", sha256=True)
    assert r["kind"] == "vae"
    assert r["components"]["vae"]["blake3"] == want
    assert r["hashes"]["sha256"] != py_file_hashes(alone)["sha256"]  # the files differ


def test_one_changed_byte_changes_it(vae_pair, tmp_path):
    _, alone, tensors, data = vae_pair
    want = _core.scan_file(str(alone), hash="components")["components"]["vae"]["blake3"]
    changed = dict(data)
    k = sorted(data)[len(data) // 2]
    b = bytearray(changed[k])
    b[len(b) // 3] ^= 0x01
    changed[k] = bytes(b)
    p = synth.write_safetensors(tmp_path / "changed.safetensors", tensors, data=changed)
    got = _core.scan_file(str(p), hash="components")["components"]["vae"]["blake3"]
    assert got != want
    assert got == py_component_of_file(p, "")


def test_components_mode_hashes_components_only(vae_pair):
    _, alone, _, _ = vae_pair
    none = _core.scan_file(str(alone), hash="none")
    assert none["components"]["vae"]["blake3"] is None


def test_vae_in_a_torch_checkpoint_hashes_like_safetensors(vae_pair, tmp_path):
    """contract §5: a VAE in a .ckpt and the same VAE in a .safetensors hash alike.

    The .ckpt is the sd15 layout written as a PyTorch zip checkpoint (tests/torchzip.py), with the
    same VAE bytes; one 1x1-conv weight is stored transposed (non-contiguous strides, as torch saves a
    transposed view), so the pass must feed it in C order.
    """
    import torchzip  # tests/torchzip.py

    _, alone, tensors, data = vae_pair
    want = py_component_of_file(alone, "")
    prefix = "first_stage_model."
    name = next(
        k for k in sorted(tensors)
        if len(tensors[k]["shape"]) == 4 and tensors[k]["shape"][2:] == [1, 1] and tensors[k]["shape"][0] > 1
    )
    rows, cols = tensors[name]["shape"][:2]
    matrix = np.frombuffer(data[name], dtype="<f2").reshape(rows, cols)
    storage = {prefix + k: v for k, v in data.items()}
    storage[prefix + name] = matrix.T.copy().tobytes()
    p = tmp_path / "model.ckpt"
    torchzip.write_zip(p, synth.load_layout("sd15")["tensors"], data=storage,
                       strides={prefix + name: [1, rows, 1, 1]})
    table = {t["name"]: t for t in _core.read_tensors(str(p))["tensors"]}
    assert table[prefix + name]["strides"] == [1, rows, 1, 1]
    r = _core.scan_file(str(p), hash="components")
    assert (r["format"], r["kind"]) == ("torch-zip", "checkpoint")
    assert r["components"]["vae"]["blake3"] == want
