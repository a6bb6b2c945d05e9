"""fix / convert / extract / bake-vae on fixtures written from the real layouts (shared/data/layouts).

Every fixture names its layout. Tensor data is a sparse hole (zeros) except where a test fills a tensor
with a seeded pattern to check it survives bit for bit. Outputs are read back with the reference
`safetensors` package and with an independent header parser + blake3 written here.
"""

from __future__ import annotations

import copy
import errno
import functools
import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import blake3
import numpy as np
import pytest
from safetensors import safe_open
from typer.testing import CliRunner

import torchzip
from fastscan import _core, synth
from fastscan.fixes import FixError, commands, writer

SD15_POS = "cond_stage_model.transformer.text_model.embeddings.position_ids"
TE_POS = "text_model.embeddings.position_ids"
UNET_T = "model.diffusion_model.input_blocks.1.1.proj_in.weight"  # F16 [320, 320, 1, 1] in sd15
VAE_T = "first_stage_model.decoder.conv_in.weight"  # [512, 4, 3, 3]
EMA_T = "model_ema.diffusion_modelinput_blocks11proj_inweight"
TE_T = "text_model.encoder.layers.0.mlp.fc1.weight"  # F16 [3072, 768]
TE_T2 = "text_model.embeddings.token_embedding.weight"  # F16 [49408, 768]: bigger than one 16 MB chunk


# ---------- independent readers (not the code under test) ----------


@functools.cache
def zeros_hash(n: int) -> str:
    return blake3.blake3(bytes(n)).hexdigest()


def is_hole(fd: int, start: int, n: int) -> bool:
    """The filesystem says bytes start..start+n hold no data (read as zeros)."""
    try:
        return os.lseek(fd, start, os.SEEK_DATA) >= start + n
    except OSError as e:
        return e.errno == errno.ENXIO


def digests(path) -> dict[str, tuple[str, list[int], str]]:
    """name -> (dtype, shape, blake3 of its bytes), parsed with struct/json only (holes hash as zeros)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        head = json.loads(f.read(n))
        head.pop("__metadata__", None)
        out = {}
        for name, e in head.items():
            b, end = e["data_offsets"]
            if is_hole(f.fileno(), 8 + n + b, end - b):
                digest = zeros_hash(end - b)
            else:
                data = os.pread(f.fileno(), end - b, 8 + n + b)
                assert len(data) == end - b
                digest = blake3.blake3(data).hexdigest()
            out[name] = (e["dtype"], e["shape"], digest)
    return out


def metadata(path) -> dict:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)).get("__metadata__", {})


def fingerprint(path) -> tuple[int, str]:
    """(mtime_ns, blake3 of the whole file): to show an input was not touched."""
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    buf = bytearray(16 << 20)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(memoryview(buf)[:n])
    return os.stat(path).st_mtime_ns, h.hexdigest()


def pattern(nbytes: int, seed: int) -> bytes:
    """Seeded pseudo-random bytes."""
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def floats(dtype: str, shape: list[int], seed: int) -> bytes:
    """Seeded finite float values in `dtype` (F64/F32/F16)."""
    v = np.random.default_rng(seed).standard_normal(int(np.prod(shape))) * 3
    return v.astype({"F64": "<f8", "F32": "<f4", "F16": "<f2"}[dtype]).tobytes()


def layout(name: str) -> dict:
    return copy.deepcopy(synth.load_layout(name))


def size_of(lay: dict, name: str) -> int:
    t = lay["tensors"][name]
    return synth.nbytes(t["dtype"], t["shape"])


def files_in(d) -> set[str]:
    return {p.name for p in d.iterdir()}


@pytest.fixture
def bad_clip(tmp_path):
    """sd15 layout, position_ids saved as F32 with 75.9975 at index 76; a UNet and a VAE tensor seeded."""
    lay = layout("sd15")
    lay["tensors"][SD15_POS]["dtype"] = "F32"
    data = {
        SD15_POS: synth.position_ids_bytes("F32", values=[*range(76), 75.9975]),
        UNET_T: pattern(size_of(lay, UNET_T), 1),
        VAE_T: pattern(size_of(lay, VAE_T), 2),
    }
    (tmp_path / "in").mkdir()
    return synth.write_layout(tmp_path / "in" / "bad.safetensors", lay, data=data, metadata={"ss_x": "kept"})


@pytest.fixture
def bad_te(tmp_path):
    """diffusers-sd15-text-encoder layout (246 MB), position_ids F32, 75.9975 at 76; two tensors seeded."""
    lay = layout("diffusers-sd15-text-encoder")
    lay["tensors"][TE_POS]["dtype"] = "F32"
    data = {
        TE_POS: synth.position_ids_bytes("F32", values=[*range(76), 75.9975]),
        TE_T: pattern(size_of(lay, TE_T), 12),
        TE_T2: pattern(size_of(lay, TE_T2), 13),
    }
    (tmp_path / "in").mkdir()
    return synth.write_layout(tmp_path / "in" / "bad.safetensors", lay, data=data)


def unchanged_except(src, out, changed: set[str], dropped: set[str] = frozenset()):
    """Every input tensor not in `changed`/`dropped` is in `out` with the same dtype, shape and bytes."""
    a, b = digests(src), digests(out)
    assert set(b) == set(a) - set(dropped)
    for name in set(a) - set(changed) - set(dropped):
        assert a[name] == b[name], name
    for name in changed:
        assert a[name] != b[name], name


# ---------- --clip ----------


def test_clip_resets_position_ids_and_keeps_every_other_byte(bad_clip, tmp_path):
    out = tmp_path / "fixed.safetensors"
    before = fingerprint(bad_clip)
    res = commands.fix(bad_clip, out, clip=True)
    assert res.out == out
    with safe_open(str(out), "np") as f:
        pos = f.get_tensor(SD15_POS)
        assert pos.dtype == np.int64 and pos.shape == (1, 77)
        assert (pos[0] == np.arange(77)).all()
        assert f.get_tensor(UNET_T).tobytes() == pattern(size_of(synth.load_layout("sd15"), UNET_T), 1)
        meta = f.metadata()
    record = json.loads(meta.pop("fastscan.fix"))
    assert meta == {"ss_x": "kept"} and [r["command"] for r in record] == ["fix"]
    unchanged_except(bad_clip, out, changed={SD15_POS})
    assert fingerprint(bad_clip) == before
    assert not [n for n in files_in(tmp_path / "in") if n.endswith(writer.TMP_SUFFIX)]


def test_fix_without_options_applies_what_the_scan_recommends(bad_clip, tmp_path):
    out = tmp_path / "auto.safetensors"
    res = commands.fix(bad_clip, out)
    assert any("recommends (--clip)" in a for a in res.actions)
    with safe_open(str(out), "np") as f:
        assert (f.get_tensor(SD15_POS)[0] == np.arange(77)).all()


def test_fix_of_a_healthy_file_writes_nothing(tmp_path):
    # sd15 layout as published: position_ids I64 0..76, no EMA, no junk, F16
    src = synth.write_layout(tmp_path / "ok.safetensors", "sd15")
    out = tmp_path / "out.safetensors"
    res = commands.fix(src, out)
    assert res.out is None and not out.exists()
    assert any("nothing to change" in a for a in res.actions)
    res = commands.fix(src, out, clip=True)  # asked, but nothing to reset
    assert res.out is None and not out.exists()


def test_clip_fixes_f16_position_ids_of_sdxl_layout(tmp_path):
    # sdxl-posids-f16: real SDXL fine-tunes store CLIP-L position_ids as F16 (exact values 0..76)
    src = synth.write_layout(tmp_path / "xl.safetensors", "sdxl-posids-f16")
    out = tmp_path / "xl-fixed.safetensors"
    commands.fix(src, out, clip=True)
    name = "conditioner.embedders.0.transformer.text_model.embeddings.position_ids"
    with safe_open(str(out), "np") as f:
        assert f.get_tensor(name).dtype == np.int64
    unchanged_except(src, out, changed={name})


# ---------- --prune ----------


def test_prune_ema_drops_model_ema_and_keeps_the_rest(tmp_path):
    # sd15-full-ema: the official v1-5-pruned.safetensors layout (7.7 GB sparse), UNet and EMA tensors seeded
    lay = layout("sd15-full-ema")
    data = {UNET_T: pattern(size_of(lay, UNET_T), 3), EMA_T: pattern(size_of(lay, EMA_T), 4)}
    src = synth.write_layout(tmp_path / "full.safetensors", lay, data=data)
    out = tmp_path / "pruned.safetensors"
    res = commands.fix(src, out, prune="ema")
    ema = {n for n in lay["tensors"] if n.startswith("model_ema.")}
    assert len(ema) == 688
    unchanged_except(src, out, changed=set(), dropped=ema)
    assert any("dropped 688 EMA" in a for a in res.actions)
    with safe_open(str(out), "np") as f:
        assert len(list(f.keys())) == 1831 - 688
        assert f.get_tensor(UNET_T).tobytes() == data[UNET_T]
    assert not any(f["check"] == "junk.ema" for f in _core.scan_file(str(out), hash="none")["findings"])


def test_prune_ema_on_a_file_without_ema_changes_nothing(tmp_path):
    src = synth.write_layout(tmp_path / "sd15.safetensors", "sd15")  # sd15: no EMA
    assert commands.fix(src, tmp_path / "o.safetensors", prune="ema").out is None


def test_prune_junk_drops_lora_leftovers(tmp_path):
    # sd15 layout plus 6 keys of the lora-sd15-kohya layout (LoRA leftovers merged into a checkpoint)
    lay = layout("sd15")
    lora = synth.load_layout("lora-sd15-kohya")["tensors"]
    junk = dict(list(lora.items())[:6])
    lay["tensors"].update(junk)
    first = next(iter(junk))
    src = synth.write_layout(tmp_path / "j.safetensors", lay, data={first: pattern(size_of(lay, first), 5)})
    kinds = {t["name"]: t["role"] for t in _core.read_tensors(str(src))["tensors"]}
    assert {kinds[n] for n in junk} == {"junk"}
    out = tmp_path / "clean.safetensors"
    res = commands.fix(src, out)  # no option: the scan recommends pruning junk
    assert any("--prune junk" in a for a in res.actions)
    unchanged_except(src, out, changed=set(), dropped=set(junk))
    out2 = tmp_path / "kept.safetensors"
    commands.fix(src, out2, prune="ema")  # asked for EMA only: junk stays, so nothing changes
    assert not out2.exists()


# ---------- --dtype ----------


def test_float64_always_comes_down_to_f32(tmp_path):
    # diffusers-sd15-text-encoder layout with one tensor saved as F64 (seeded values)
    lay = layout("diffusers-sd15-text-encoder")
    name = "text_model.final_layer_norm.weight"
    lay["tensors"][name]["dtype"] = "F64"
    vals = floats("F64", lay["tensors"][name]["shape"], 6)
    src = synth.write_layout(tmp_path / "te64.safetensors", lay, data={name: vals})
    assert any(f["check"] == "dtype.float64" for f in _core.scan_file(str(src), hash="none")["findings"])
    out = tmp_path / "te.safetensors"
    res = commands.fix(src, out)
    assert "cast 1 tensor(s) F64 -> F32" in res.actions
    with safe_open(str(out), "np") as f:
        got = f.get_tensor(name)
        assert got.dtype == np.float32
        assert got.tobytes() == np.frombuffer(vals, "<f8").astype("<f4").tobytes()
        assert f.get_tensor(TE_POS).dtype == np.int64
    unchanged_except(src, out, changed={name})


def test_dtype_fp16_casts_floats_but_not_integers_or_position_ids(tmp_path):
    # sd15-emaonly-official layout (F32, with I64 position_ids and I32 model_ema.num_updates)
    lay = layout("sd15-emaonly-official")
    t = "first_stage_model.quant_conv.weight"
    vals = floats("F32", lay["tensors"][t]["shape"], 7)
    src = synth.write_layout(tmp_path / "f32.safetensors", lay, data={t: vals})
    out = tmp_path / "f16.safetensors"
    commands.fix(src, out, dtype="fp16")
    d = digests(out)
    assert d[SD15_POS][0] == "I64" and d["model_ema.num_updates"][0] == "I32"
    assert {v[0] for n, v in d.items() if n not in (SD15_POS, "model_ema.num_updates")} == {"F16"}
    with safe_open(str(out), "np") as f:
        assert f.get_tensor(t).tobytes() == np.frombuffer(vals, "<f4").astype("<f2").tobytes()
    assert digests(src)[SD15_POS] == d[SD15_POS]


def test_dtype_bf16_rounds_to_nearest_even(tmp_path):
    # vae-sd layout (standalone SD VAE, F32) with one seeded tensor
    lay = layout("vae-sd")
    t = "decoder.conv_in.weight"
    vals = floats("F32", lay["tensors"][t]["shape"], 8)
    src = synth.write_layout(tmp_path / "vae.safetensors", lay, data={t: vals})
    out = tmp_path / "vae-bf16.safetensors"
    commands.fix(src, out, dtype="bf16")
    with open(out, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        e = json.loads(f.read(n))[t]
        assert e["dtype"] == "BF16"
        f.seek(8 + n + e["data_offsets"][0])
        bits = np.frombuffer(f.read(e["data_offsets"][1] - e["data_offsets"][0]), "<u2")
    # independent reference: exact BF16 neighbours via float64 arithmetic, pick the nearest (ties to even)
    x = np.frombuffer(vals, "<f4").astype(np.float64)
    lo = (np.frombuffer(vals, "<f4").view("<u4") >> 16).astype(np.uint32)
    down = (lo << 16).view("<f4").astype(np.float64)
    up = ((lo + 1) << 16).view("<f4").astype(np.float64)
    pick_up = (np.abs(up - x) < np.abs(x - down)) | ((np.abs(up - x) == np.abs(x - down)) & (lo % 2 == 1))
    assert (bits == np.where(pick_up, lo + 1, lo)).all()


def test_bf16_bit_patterns():
    f = np.array([0x3F808000, 0x3F818000, 0x3F808001, 0x7F7FFFFF, 0x7F800000, 0x7FC00001, 0xFF800001], "<u4")
    got = np.frombuffer(_core.cast(f.tobytes(), "F32", "BF16"), "<u2")
    assert got[:5].tolist() == [0x3F80, 0x3F82, 0x3F81, 0x7F80, 0x7F80]  # ties to even; max float -> inf
    nan = (got[5:].astype("<u4") << 16).view("<f4")
    assert all(np.isnan(nan))  # NaN stays NaN (even with a low-bit-only payload)
    assert (
        _core.cast(np.float32([1.5, -2.0]).tobytes(), "F32", "BF16") == np.uint16([0x3FC0, 0xC000]).tobytes()
    )


def test_bad_option_values_are_clear_errors(tmp_path):
    src = synth.write_layout(tmp_path / "sd15.safetensors", "sd15")
    with pytest.raises(FixError, match="--prune must be one of"):
        commands.fix(src, tmp_path / "o.safetensors", prune="everything")
    with pytest.raises(FixError, match="--dtype must be one of"):
        commands.fix(src, tmp_path / "o.safetensors", dtype="fp8")


# ---------- safety ----------


def test_a_failing_write_leaves_no_output_and_the_input_untouched(bad_te, tmp_path):
    # A real write error inside the core: the child may not write files larger than 64 kB (RLIMIT_FSIZE;
    # the kernel fails the write with EFBIG as a full disk fails it with ENOSPC).
    before = fingerprint(bad_te)
    out = tmp_path / "in" / "out.safetensors"  # same folder as the input: the temp file goes there too
    child = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (64000, 64000))\n"
        "from fastscan.fixes import FixError, commands\n"
        "try:\n"
        "    commands.fix(sys.argv[1], sys.argv[2], clip=True)\n"
        "except FixError as e:\n"
        "    print(e)\n"
        "    sys.exit(3)\n"
    )
    r = subprocess.run([sys.executable, "-c", child, str(bad_te), str(out)], capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    assert "File too large" in r.stdout and "no output was left" in r.stdout
    assert files_in(tmp_path / "in") == {"bad.safetensors"}
    assert fingerprint(bad_te) == before


def test_bad_inputs_are_clear_errors_and_write_nothing(tmp_path):
    # sd15 layout cut short (a truncated download)
    src = synth.write_layout(tmp_path / "cut.safetensors", "sd15")
    os.truncate(src, os.path.getsize(src) - 1000)
    out = tmp_path / "o.safetensors"
    with pytest.raises(FixError, match=r"cut\.safetensors: truncated: tensor .* needs bytes up to"):
        commands.fix(src, out, clip=True)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(FixError, match="garbage.safetensors"):
        commands.fix(garbage, out)
    with pytest.raises(FixError, match="no such file"):
        commands.fix(tmp_path / "missing.safetensors", out)
    assert not out.exists()
    assert not [n for n in files_in(tmp_path) if n.endswith(writer.TMP_SUFFIX)]


def test_refuses_to_overwrite_unless_forced(bad_te, tmp_path):
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(FixError, match="already exists"):
        commands.fix(bad_te, out, clip=True)
    assert out.read_bytes() == b"precious"
    commands.fix(bad_te, out, clip=True, force=True)
    assert digests(out)[TE_POS][0] == "I64"
    with pytest.raises(FixError, match="is the input itself"):
        commands.fix(bad_te, bad_te, clip=True, force=True)


def test_in_place_needs_a_verified_backup(bad_te, tmp_path):
    original = fingerprint(bad_te)
    with pytest.raises(FixError, match="--in-place needs --backup"):
        commands.fix(bad_te, in_place=True, clip=True)
    assert fingerprint(bad_te) == original
    missing = tmp_path / "nope"
    with pytest.raises(FixError, match="backup folder does not exist"):
        commands.fix(bad_te, in_place=True, backup=missing, clip=True)
    assert fingerprint(bad_te) == original
    bdir = tmp_path / "backups"
    bdir.mkdir()
    res = commands.fix(bad_te, in_place=True, backup=bdir, clip=True)
    assert res.backup == bdir / "bad.safetensors"
    assert fingerprint(res.backup)[1] == original[1]  # the backup is the original, byte for byte
    assert digests(bad_te)[TE_POS][0] == "I64"
    unchanged_except(res.backup, bad_te, changed={TE_POS})
    with pytest.raises(FixError, match="a backup already exists"):
        commands.fix(bad_te, in_place=True, backup=bdir, dtype="fp32")


def test_in_place_failure_leaves_the_input_as_it_was(bad_te, tmp_path):
    def full(stage, done, total):
        raise OSError(errno.ENOSPC, "full")

    before = fingerprint(bad_te)
    bdir = tmp_path / "b"
    bdir.mkdir()
    with pytest.raises(FixError, match="full"):
        commands.fix(bad_te, in_place=True, backup=bdir, clip=True, progress=full)
    assert fingerprint(bad_te) == before
    assert files_in(tmp_path / "in") == {"bad.safetensors"}


# ---------- extract ----------


def test_extracted_vae_has_the_standalone_vae_names(tmp_path):
    # sd15-emaonly-official checkpoint (F32 VAE) vs vae-sd (standalone SD VAE, bare names)
    lay = layout("sd15-emaonly-official")
    src = synth.write_layout(tmp_path / "ck.safetensors", lay, data={VAE_T: pattern(size_of(lay, VAE_T), 9)})
    out = tmp_path / "vae.safetensors"
    commands.extract(src, "vae", out)
    standalone = synth.load_layout("vae-sd")["tensors"]
    got = digests(out)
    assert {n: (v[0], v[1]) for n, v in got.items()} == {
        n: (t["dtype"], t["shape"]) for n, t in standalone.items()
    }
    assert got["decoder.conv_in.weight"][2] == digests(src)[VAE_T][2]
    assert _core.read_tensors(str(out))["kind"] == "vae"
    a = _core.scan_file(str(src), hash="components")["components"].get("vae", {}).get("blake3")
    b = _core.scan_file(str(out), hash="components")["components"].get("vae", {}).get("blake3")
    assert a == b  # same canonical component hash (both None until component hashing lands)


def test_extracted_text_encoder_matches_the_diffusers_text_encoder(tmp_path):
    # sd15 checkpoint vs diffusers-sd15-text-encoder (text_encoder/model.fp16.safetensors)
    src = synth.write_layout(tmp_path / "ck.safetensors", "sd15")
    out = tmp_path / "te.safetensors"
    commands.extract(src, "text-encoder", out)
    ref = synth.load_layout("diffusers-sd15-text-encoder")["tensors"]
    assert {n: (v[0], v[1]) for n, v in digests(out).items()} == {
        n: (t["dtype"], t["shape"]) for n, t in ref.items()
    }


def test_extract_errors(tmp_path):
    xl = synth.write_layout(tmp_path / "xl.safetensors", "sdxl")  # sdxl: two text encoders
    with pytest.raises(FixError, match="2 text encoders; pick one with --component clip_g|clip_l"):
        commands.extract(xl, "text-encoder", tmp_path / "te.safetensors")
    commands.extract(xl, "clip_l", tmp_path / "clip_l.safetensors")
    assert _core.read_tensors(str(tmp_path / "clip_l.safetensors"))["kind"] == "text-encoder"
    unet = synth.write_layout(tmp_path / "unet.safetensors", "diffusers-sd15-unet")  # no VAE in it
    with pytest.raises(FixError, match="has no vae"):
        commands.extract(unet, "vae", tmp_path / "vae.safetensors")


# ---------- bake-vae ----------


def test_bake_vae_replaces_the_vae_and_nothing_else(tmp_path):
    # sd15 checkpoint (F16 VAE, UNet tensor seeded) + vae-sd standalone VAE (F32, seeded)
    ck_lay = layout("sd15")
    ck = synth.write_layout(
        tmp_path / "ck.safetensors", ck_lay, data={UNET_T: pattern(size_of(ck_lay, UNET_T), 10)}
    )
    vae_lay = layout("vae-sd")
    vt = "decoder.conv_in.weight"
    vae = synth.write_layout(
        tmp_path / "vae.safetensors", vae_lay, data={vt: pattern(size_of(vae_lay, vt), 11)}
    )
    out = tmp_path / "baked.safetensors"
    commands.bake_vae(ck, vae, out)
    a, v, b = digests(ck), digests(vae), digests(out)
    assert set(a) == set(b)
    vae_keys = {n for n in a if n.startswith("first_stage_model.")}
    assert len(vae_keys) == 248
    for n in set(a) - vae_keys:
        assert a[n] == b[n]
    for n in vae_keys:
        assert b[n] == v[n[len("first_stage_model.") :]]
    assert metadata(out)["fastscan.baked_vae"] == "vae.safetensors"
    with safe_open(str(out), "np") as f:
        assert f.get_tensor(VAE_T).dtype == np.float32


def test_bake_vae_shape_mismatch_names_the_tensor(tmp_path):
    ck = synth.write_layout(tmp_path / "ck.safetensors", "sd15")
    lay = layout("vae-sd")  # vae-sd with one shape changed: not the same architecture
    lay["tensors"]["decoder.conv_in.weight"]["shape"] = [512, 16, 3, 3]
    vae = synth.write_layout(tmp_path / "vae.safetensors", lay)
    with pytest.raises(FixError, match=r"VAE tensor decoder\.conv_in\.weight has shape \[512, 16, 3, 3\]"):
        commands.bake_vae(ck, vae, tmp_path / "out.safetensors")
    flux = synth.write_layout(tmp_path / "ae.safetensors", "flux-ae")  # FLUX VAE: 16 latent channels
    with pytest.raises(FixError, match="not the same VAE architecture"):
        commands.bake_vae(ck, flux, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


# ---------- convert ----------


def test_convert_refuses_what_is_not_a_pickle(tmp_path):
    src = synth.write_layout(tmp_path / "sd15.safetensors", "sd15")
    with pytest.raises(FixError, match="already safetensors"):
        commands.convert(src, tmp_path / "o.safetensors")
    junk = tmp_path / "notes.ckpt"
    junk.write_bytes(b"hello, this is not a checkpoint at all")
    with pytest.raises(FixError, match="notes.ckpt"):
        commands.convert(junk, tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()


def test_convert_lightning_ckpt_keeps_every_tensor_and_records_source_hashes(tmp_path):
    # sd15 layout saved as a Lightning-style torch zip {"state_dict": {...}, "global_step": ...}
    lay = layout("sd15")
    data = {UNET_T: pattern(size_of(lay, UNET_T), 20), VAE_T: pattern(size_of(lay, VAE_T), 21)}
    ck = tmp_path / "sd15.ckpt"
    torchzip.write_zip(ck, lay["tensors"], data=data, nest="state_dict", extra={"global_step": 1000})
    out = tmp_path / "sd15.safetensors"
    commands.convert(ck, out)
    got = digests(out)
    assert {n: (v[0], v[1]) for n, v in got.items()} == {
        n: (t["dtype"], t["shape"]) for n, t in lay["tensors"].items()
    }
    for name, blob in data.items():
        assert got[name][2] == blake3.blake3(blob).hexdigest()
    meta = metadata(out)
    assert meta["fastscan.source_blake3"] == fingerprint(ck)[1]
    h = hashlib.sha256()
    with open(ck, "rb") as f:
        while b := f.read(1 << 24):
            h.update(b)
    assert meta["fastscan.source_sha256"] == h.hexdigest()
    assert meta["format"] == "pt" and meta["fastscan.source"] == "sd15.ckpt"
    with safe_open(str(out), "np") as f:
        assert (f.get_tensor(SD15_POS)[0] == np.arange(77)).all()
    r = _core.read_tensors(str(out))
    assert (r["kind"], r["arch"]) == ("checkpoint", "sd1")


def test_convert_gathers_strided_tensors_and_reads_legacy_files(tmp_path):
    # hand-made tensors: a [3, 4] F16 view with strides [1, 3] (a transpose, as torch saves .t())
    storage = np.arange(12, dtype="<f2")
    pt = tmp_path / "w.pt"
    torchzip.write_zip(
        pt, {"w": {"dtype": "F16", "shape": [3, 4]}}, strides={"w": [1, 3]}, data={"w": storage.tobytes()}
    )
    commands.convert(pt, tmp_path / "w.safetensors")
    with safe_open(str(tmp_path / "w.safetensors"), "np") as f:
        assert (f.get_tensor("w") == storage.reshape(4, 3).T).all()
    # embedding-sd15 layout in the pre-1.6 legacy format
    lay = layout("embedding-sd15")
    name = next(iter(lay["tensors"]))
    blob = floats("F32", lay["tensors"][name]["shape"], 22)
    legacy = tmp_path / "emb.pt"
    torchzip.write_legacy(legacy, lay["tensors"], data={name: blob})
    commands.convert(legacy, tmp_path / "emb.safetensors")
    with safe_open(str(tmp_path / "emb.safetensors"), "np") as f:
        assert f.get_tensor(name).tobytes() == blob


def test_convert_never_executes_a_dangerous_pickle(tmp_path):
    # embedding-sd15 layout in a torch zip whose pickle also references os.system (never called)
    lay = layout("embedding-sd15")
    pt = tmp_path / "evil.pt"
    torchzip.write_zip(pt, lay["tensors"], extra={"x": os.system}, nest="params")
    res = commands.convert(pt, tmp_path / "evil.safetensors")
    assert any(a.startswith("note:") and "never executed" in a for a in res.actions)
    assert list(digests(tmp_path / "evil.safetensors")) == ["params." + next(iter(lay["tensors"]))]
    # a real exploit sample from the picklescan corpus: no tensors, a clear error, nothing written
    corpus = Path(__file__).resolve().parents[2] / "shared" / "data" / "pickle-corpus" / "malicious0.pkl"
    with pytest.raises(FixError, match="malicious0.pkl: no tensors found"):
        commands.convert(corpus, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


# ---------- CLI ----------


def test_cli_commands_exit_codes(bad_te, tmp_path):
    from fastscan.cli import app

    run = CliRunner().invoke
    out = tmp_path / "cli.safetensors"
    r = run(app, ["fix", str(bad_te), "-o", str(out), "--clip"])
    # bad_te's seeded pattern bytes hold NaN/Inf as F32: the ids are fixed, and the NaN named as damage no
    # fix repairs, with exit 1.
    assert r.exit_code == 1, r.output
    assert "wrote" in r.output and out.exists() and "re-download" in r.output
    r = run(app, ["fix", str(bad_te), "-o", str(out), "--clip"])
    assert r.exit_code == 2 and "already exists" in r.output
    r = run(app, ["fix", str(bad_te), "--in-place"])
    assert r.exit_code == 2 and "--backup" in r.output
    r = run(app, ["extract", str(bad_te), "--component", "text-encoder", "-o", str(tmp_path / "t.sft")])
    assert r.exit_code == 0, r.output
    r = run(app, ["extract", str(bad_te), "--component", "vae", "-o", str(tmp_path / "v.sft")])
    assert r.exit_code == 2 and "has no vae" in r.output
    r = run(app, ["convert", str(bad_te), "-o", str(tmp_path / "c.safetensors")])
    assert r.exit_code == 2 and "already safetensors" in r.output
    r = run(app, ["bake-vae", str(bad_te), "--vae", str(out), "-o", str(tmp_path / "b.sft")])
    assert r.exit_code == 2 and "not a checkpoint" in r.output
    assert not (tmp_path / "b.sft").exists() and not (tmp_path / "v.sft").exists()


def test_extract_refuses_a_lora(tmp_path):
    lora = synth.write_layout(tmp_path / "l.safetensors", "lora-sd15-kohya")  # kohya LoRA layout
    with pytest.raises(FixError, match="is a lora file"):
        commands.extract(lora, "text-encoder", tmp_path / "te.safetensors")


def test_an_input_changed_during_the_fix_is_refused(bad_te, tmp_path):
    def touch_input(stage, done, total):
        os.utime(bad_te, ns=(1, 1))  # someone rewrote the input meanwhile

    out = tmp_path / "o.safetensors"
    with pytest.raises(FixError, match="changed while it was being fixed"):
        commands.fix(bad_te, out, clip=True, progress=touch_input)
    assert not out.exists() and files_in(tmp_path / "in") == {"bad.safetensors"}


def test_auto_fix_leaves_a_lora_alone(tmp_path):
    # lora-sd15-kohya layout: no junk, EMA or position_ids to fix, F16 throughout
    lora = synth.write_layout(
        tmp_path / "l.safetensors", "lora-sd15-kohya", metadata={"ss_network_dim": "16"}
    )
    assert commands.fix(lora, tmp_path / "o.safetensors").out is None


def test_a_fix_keeps_metadata_recomputes_data_hashes_and_records_itself(tmp_path):
    # vae-sd layout carrying sd-scripts' hash of its data region: the fix writes the new data's hash
    meta = {"sshs_model_hash": "0" * 64, "modelspec.title": "kept"}
    src = synth.write_layout(tmp_path / "v.safetensors", "vae-sd", metadata=meta)
    out = tmp_path / "o.safetensors"
    res = commands.fix(src, out, dtype="fp16")
    got = metadata(out)
    assert got["modelspec.title"] == "kept"
    with open(out, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + n)
        data = hashlib.sha256()
        while chunk := f.read(1 << 20):
            data.update(chunk)
    assert got["sshs_model_hash"] == data.hexdigest()  # the addnet hash of the output (sd-scripts)
    assert _core.scan_file(str(out), hash="full", sha256=True)["hashes"]["addnet"] == data.hexdigest()
    record = json.loads(got["fastscan.fix"])
    assert [r["command"] for r in record] == ["fix"] and record[0]["source"] == "v.safetensors"
    assert any("F32 -> F16" in a for a in record[0]["actions"])
    assert any("sshs_model_hash" in a for a in res.actions)
    # a second fix appends to the record
    again = tmp_path / "o2.safetensors"
    commands.fix(out, again, dtype="bf16")
    assert [r["command"] for r in json.loads(metadata(again)["fastscan.fix"])] == ["fix", "fix"]


def test_bake_vae_casts_with_dtype(tmp_path):
    # sd15 checkpoint layout (F32) and a vae-sd layout (F32): --dtype fp16 gives an all-F16 checkpoint
    ckpt = synth.write_layout(tmp_path / "c.safetensors", "sd15", metadata={"kept": "yes"})
    vae = synth.write_layout(tmp_path / "v.safetensors", "vae-sd")
    out = tmp_path / "o.safetensors"
    res = commands.bake_vae(ckpt, vae, out, dtype="fp16")
    d = digests(out)
    floats = {dt for dt, _, _ in d.values()} - {"I64"}
    assert floats == {"F16"}
    assert any("-> F16" in a for a in res.actions)
    meta = metadata(out)
    assert meta["kept"] == "yes" and json.loads(meta["fastscan.fix"])[0]["command"] == "bake-vae"


def test_the_progress_callback_sees_writing_then_verifying(bad_te, tmp_path):
    seen = []
    commands.fix(bad_te, tmp_path / "o.safetensors", clip=True, progress=lambda *a: seen.append(a))
    stages = [s for s, _, _ in seen]
    assert stages == sorted(stages, key=["write", "verify"].index) and set(stages) == {"write", "verify"}
    for stage in ("write", "verify"):
        done = [d for s, d, _ in seen if s == stage]
        total = {t for s, _, t in seen if s == stage}
        assert done == sorted(done) and len(total) == 1 and done[-1] == total.pop()


def test_the_cli_progress_bar_draws_on_a_terminal_only(bad_te, tmp_path, monkeypatch):
    import io

    from fastscan.cli import fix as cli_fix

    assert cli_fix._bar("x").__enter__() is None  # pytest's stderr is no terminal
    from rich.console import Console

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    buf = Terminal()
    monkeypatch.setattr(sys, "stderr", buf)

    monkeypatch.setattr(cli_fix, "_console", lambda stderr=False: Console(file=buf, force_terminal=True))
    with cli_fix._bar("fix bad") as update:
        update("write", 50, 100)
        update("verify", 100, 100)
    assert "fix bad" in buf.getvalue()


def test_trailing_bytes_are_dropped_and_the_reference_loader_then_accepts_the_file(tmp_path):
    # sd15 layout with 5 stray bytes after the data (file.unaccounted-bytes)
    src = synth.write_layout(tmp_path / "t.safetensors", "sd15", trailing=b"stray")
    with pytest.raises(Exception):  # noqa: B017 - the reference loader refuses it (its error type varies)
        with safe_open(str(src), "np") as f:
            f.get_tensor(SD15_POS)
    out = tmp_path / "o.safetensors"
    res = commands.fix(src, out)
    assert any("dropped 5 unaccounted" in a for a in res.actions)

    def data_bytes(p) -> int:  # the output's header also gains the fastscan.fix record
        with open(p, "rb") as f:
            return os.path.getsize(p) - 8 - struct.unpack("<Q", f.read(8))[0]

    assert data_bytes(out) == data_bytes(src) - 5
    with safe_open(str(out), "np") as f:
        assert (f.get_tensor(SD15_POS)[0] == np.arange(77)).all()
    unchanged_except(src, out, changed=set())


def test_in_place_through_a_symlink_fixes_the_target(bad_te, tmp_path):
    link = tmp_path / "link.safetensors"
    link.symlink_to(bad_te)
    bdir = tmp_path / "b"
    bdir.mkdir()
    commands.fix(link, in_place=True, backup=bdir, clip=True)
    assert link.is_symlink() and digests(bad_te)[TE_POS][0] == "I64"


def test_an_interrupted_fix_leaves_no_partial_output(bad_te, tmp_path):
    seen = []

    def interrupted(stage, done, total):
        seen.append((stage, done, total))
        if stage == "write" and done < total:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the data

    before = fingerprint(bad_te)
    out = tmp_path / "in" / "o.safetensors"
    with pytest.raises(KeyboardInterrupt):
        commands.fix(bad_te, out, clip=True, progress=interrupted)
    assert seen and seen[-1][0] == "write" and 0 < seen[-1][1] < seen[-1][2]
    assert files_in(tmp_path / "in") == {"bad.safetensors"}
    assert fingerprint(bad_te) == before


def test_an_output_that_appears_while_the_fix_runs_is_never_overwritten(bad_te, tmp_path):
    out = tmp_path / "in" / "out.safetensors"

    def intruder(stage, done, total):
        if not out.exists():
            out.write_bytes(b"someone else's file")  # appears after the up-front check passed

    before = fingerprint(bad_te)
    with pytest.raises(FixError, match="already exists"):
        commands.fix(bad_te, out, clip=True, progress=intruder)
    assert out.read_bytes() == b"someone else's file"
    assert files_in(tmp_path / "in") == {"bad.safetensors", "out.safetensors"}  # no temporary file left
    assert fingerprint(bad_te) == before


@pytest.mark.parametrize("fp8", ["F8_E4M3", "F8_E5M2"])
def test_fp8_tensors_cast_up_exactly(tmp_path, fp8):
    """embedding-sd15 (8 x 768) re-typed fp8 with every byte pattern: --dtype fp32 gives torch's values."""
    torch = pytest.importorskip("torch")
    lay = layout("embedding-sd15")
    lay["tensors"]["emb_params"]["dtype"] = fp8
    raw = (np.arange(8 * 768) % 256).astype(np.uint8).tobytes()
    src = synth.write_layout(tmp_path / "e.safetensors", lay, data={"emb_params": raw})
    out = tmp_path / "o.safetensors"
    commands.fix(src, out, dtype="fp32")
    tdt = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}[fp8]
    want = torch.frombuffer(bytearray(raw), dtype=tdt).to(torch.float32).numpy()
    with safe_open(str(out), "np") as f:
        got = f.get_tensor("emb_params").reshape(-1)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)  # NaN where torch has NaN, every other value exact
