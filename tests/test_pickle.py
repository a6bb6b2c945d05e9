"""Pickle checkpoints: read without running them, flag code, list tensors (contract §2, §4).

The exploit corpus (../shared/data/pickle-corpus, picklescan's test data) is only ever read as bytes.
Clean checkpoints are written by tests/torchzip.py (real PyTorch zip / legacy format, no torch) from the
real layouts in ../shared/data/layouts, next to their safetensors twins written by synth.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import struct
import zipfile
from pathlib import Path

import pytest

import torchzip
from fastscan import _core, synth

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CORPUS = SHARED / "pickle-corpus"
REAL = SHARED / "real"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())

# expected.json calls broken_model.pkl benign ("benign imports"), but its first opcode is
# GLOBAL builtins.exec (bytes `cbuiltins\nexec\n`), which picklescan itself reports as Dangerous; the
# stream is cut off before any call. fastscan reports the import (critical) and the broken stream.
DISPUTED = {"broken_model.pkl": ("builtins", "exec")}


def checks(report, severity=None):
    return [f["check"] for f in report["findings"] if severity is None or f["severity"] == severity]


def dangerous(report):
    return [f for f in report["findings"] if f["check"] == "pickle.dangerous-import"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_verdicts(name):
    verdict = EXPECTED[name]["verdict"]
    r = _core.scan_file(str(CORPUS / name), hash="none")
    crit = [f for f in r["findings"] if f["severity"] == "critical"]
    if verdict == "malicious":
        assert dangerous(r), (name, r["format"], r["findings"], r["error"])
        for f in dangerous(r):
            d = f["details"]
            assert isinstance(d["position"], int) and d["module"] and d["name"]
    elif name in DISPUTED:
        assert [(f["details"]["module"], f["details"]["name"]) for f in crit] == [DISPUTED[name]]
        assert "pickle.invalid" in checks(r)
    elif verdict == "benign":
        assert crit == [], (name, crit)
    else:  # out-of-scope: skipped (unknown format), no crash, nothing claimed
        assert (r["format"], r["findings"], r["error"]) == ("unknown", [], None)


def test_dangerous_import_details_point_at_the_opcode():
    # Encryption flag 0x1 set on a plain stored entry: PyTorch ignores it, so must we.
    path = CORPUS / "malicious1_0x1.zip"
    raw = path.read_bytes()
    [f] = dangerous(_core.scan_file(str(path), hash="none"))
    d = f["details"]
    assert (d["module"], d["name"], d["entry"]) == ("builtins", "eval", "model/config.pkl")
    assert d["opcode"] == "STACK_GLOBAL"
    assert raw[d["offset"]] == 0x93  # STACK_GLOBAL byte, absolute in the file
    # Local header name differs from the central directory: named as PyTorch names it.
    [f] = dangerous(_core.scan_file(str(CORPUS / "malicious1_central_directory.zip"), hash="none"))
    assert f["details"]["entry"] == "data.pkl"


def test_unresolvable_stack_global_is_critical(tmp_path):
    # STACK_GLOBAL whose operands are an int and a string: no name to check.
    p = tmp_path / "x.pkl"
    p.write_bytes(b"\x80\x04K*\x8c\x02os\x93.")
    [f] = dangerous(_core.scan_file(str(p), hash="none"))
    assert "unresolved" in f["details"]


def test_memo_resolution_in_protocol0(tmp_path):
    # Strings stored with PUT, popped, fetched back with GET, then STACK_GLOBAL: picklescan's
    # malicious-invalid-bytes trick with a benign pair must give no critical, a dangerous pair must.
    def build(mod, name):
        return f"V{mod}\np0\n0V{name}\np1\n0g0\ng1\n".encode() + b"\x93."

    ok = tmp_path / "ok.pkl"
    ok.write_bytes(build("collections", "OrderedDict"))
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(build("subprocess", "check_output"))
    r = _core.scan_file(str(ok), hash="none")
    assert r["format"] == "pickle" and dangerous(r) == [] and "pickle.invalid" not in checks(r)
    [f] = dangerous(_core.scan_file(str(bad), hash="none"))
    assert (f["details"]["module"], f["details"]["name"]) == ("subprocess", "check_output")


def test_unknown_import_is_a_warning_until_called(tmp_path):
    # Imported and only stored: a warning. Imported and built with NEWOBJ: critical (not on the allow-list).
    p = tmp_path / "m.pkl"
    p.write_bytes(b"\x80\x02}X\x01\x00\x00\x00mc__main__\nMyModel\ns.")
    r = _core.scan_file(str(p), hash="none")
    assert checks(r, "warning") == ["pickle.unknown-import"]
    assert dangerous(r) == []
    assert "format.legacy-pickle" in checks(r, "info")
    p.write_bytes(b"\x80\x02c__main__\nMyModel\n)\x81.")
    [f] = dangerous(_core.scan_file(str(p), hash="none"))
    assert (f["details"]["name"], f["details"]["used"]) == ("MyModel", "NEWOBJ")


def test_later_pickles_in_a_stream_are_scanned(tmp_path):
    # Python loads only the first pickle, but a file is not clean because its first pickle is.
    p = tmp_path / "two.pkl"
    p.write_bytes(b"\x80\x02}q\x00." + b"cposix\nsystem\n(S'true'\ntR.")
    assert dangerous(_core.scan_file(str(p), hash="none"))


def test_huge_pickle_is_bounded_and_still_checked(tmp_path):
    # 1.5M distinct large ints pass the 1M tracked-value limit; an import after that point is still seen.
    body = pickle.dumps(list(range(10_000, 1_510_000)), protocol=2)[:-1]  # drop STOP
    big = tmp_path / "big.pkl"
    big.write_bytes(body + b"0cposix\nsystem\n0N.")
    r = _core.scan_file(str(big), hash="none")
    assert "pickle.too-large" in checks(r, "warning") and "pickle.invalid" not in checks(r)
    assert [f["details"]["name"] for f in dangerous(r)] == ["system"]
    small = tmp_path / "small.pkl"
    small.write_bytes(pickle.dumps(list(range(10_000, 20_000)), protocol=2))
    assert checks(_core.scan_file(str(small), hash="none")) == ["format.legacy-pickle"]


def _deflated_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_deflated_pickle_entry_is_scanned(tmp_path):
    # torch (miniz) inflates a deflated data.pkl, so a crafted file can hide its pickle that way.
    p = tmp_path / "deflated.pt"
    p.write_bytes(_deflated_zip({"archive/data.pkl": b"cos\nsystem\n(S'true'\ntR." * 20}))
    [f] = dangerous(_core.scan_file(str(p), hash="none"))
    assert f["details"]["entry"] == "archive/data.pkl"
    assert f["details"]["offset"] is None  # inside compressed data: no file offset


def test_zip_without_pickle_is_unknown_not_an_error(tmp_path):
    # contract §2: anything that is not a model format is reported as `unknown` and skipped without error.
    p = tmp_path / "notes.zip"
    p.write_bytes(_deflated_zip({"readme.txt": b"hello"}))
    r = _core.scan_file(str(p), hash="none")
    assert (r["format"], r["error"], r["findings"]) == ("unknown", None, [])


# --- real files nobody on this project wrote ---

REAL_PICKLES = sorted(p for p in REAL.glob("*") if p.suffix in (".pt", ".pth"))


def _zip_storage_ranges(path: Path) -> list[tuple[int, int]]:
    """(start, end) of every `*/data/N` record, found with Python's zipfile (independent of fastscan)."""
    raw = path.read_bytes()
    out = []
    for info in zipfile.ZipFile(path).infolist():
        if "/data/" in info.filename:
            off = info.header_offset
            nl, el = struct.unpack("<HH", raw[off + 26 : off + 30])
            start = off + 30 + nl + el
            out.append((start, start + info.file_size))
    return out


@pytest.mark.parametrize("path", REAL_PICKLES, ids=lambda p: p.name)
def test_real_checkpoints(path):
    r = _core.scan_file(str(path), hash="none")
    assert r["error"] is None and r["format"] == "torch-zip"
    assert checks(r) == ["format.legacy-pickle"]
    table = _core.read_tensors(str(path))["tensors"]
    assert len(table) == r["tensors"]
    ranges = _zip_storage_ranges(path)
    assert len(table) == (0 if "empty" in path.name else len(ranges))
    for t in table:
        n = 1
        for d in t["shape"]:
            n *= d
        assert t["len"] == n * {"F16": 2, "F32": 4}[t["dtype"]]
        assert any(a <= t["start"] and t["start"] + t["len"] <= b for a, b in ranges), t["name"]


def test_real_names_follow_loaders():
    names = [t["name"] for t in _core.read_tensors(str(REAL / "cloneofsimo-lora_lora_disney.pt"))["tensors"]]
    assert names[:3] == ["0", "1", "2"]  # a list of tensors: items by index
    ti = _core.read_tensors(str(REAL / "cloneofsimo-lora_lora_kiriko2.ti.pt"))["tensors"]
    assert [(t["name"], t["shape"]) for t in ti] == [("<krk>", [768])]


def test_legacy_corpus_file_tiles_its_storages():
    # pytorch_model.bin (picklescan corpus, pre-1.6 format): storages follow the key list, each an
    # 8-byte element count then the elements; the table must account for the file's tail exactly.
    path = CORPUS / "pytorch_model.bin"
    raw = path.read_bytes()
    spans = sorted({(t["start"], t["len"]) for t in _core.read_tensors(str(path))["tensors"]})
    assert len(spans) == 38
    for (s, n), nxt in zip(spans, spans[1:] + [(len(raw) + 8, 0)], strict=True):
        assert struct.unpack("<q", raw[s - 8 : s])[0] * 4 == n
        assert s + n + 8 == nxt[0]


# --- twins: the same layout as a torch zip and as safetensors ---

def _seeded(t, seed: int) -> bytes:
    return random.Random(seed).randbytes(synth.nbytes(t["dtype"], t["shape"]))


def _twins(tmp_path, layout: str, small: int = 4096, **zip_kw):
    lay = synth.load_layout(layout)
    tensors = lay["tensors"]
    data = {n: _seeded(t, i) for i, (n, t) in enumerate(sorted(tensors.items()))
            if synth.nbytes(t["dtype"], t["shape"]) <= small and not n.endswith("position_ids")}
    st = synth.write_layout(tmp_path / f"{layout}.safetensors", layout, data=data)
    pt = tmp_path / f"{layout}.ckpt"
    starts = torchzip.write_zip(pt, tensors, data=data, **zip_kw)
    return st, pt, starts, data


def _table(path):
    return {t["name"]: t for t in _core.read_tensors(str(path))["tensors"]}


def _same_tables(st, pt, starts, data):
    a, b = _table(st), _table(pt)
    assert a.keys() == b.keys()
    with open(st, "rb") as fa, open(pt, "rb") as fb:
        for name, ta in a.items():
            tb = b[name]
            for k in ("dtype", "shape", "len", "role", "component", "canonical"):
                assert ta[k] == tb[k], (name, k)
            assert tb["start"] == starts[name] and tb["strides"] is None
            if name in data or name.endswith("position_ids"):
                fa.seek(ta["start"])
                fb.seek(tb["start"])
                assert fa.read(ta["len"]) == fb.read(tb["len"]), name


def test_sd15_ckpt_twin(tmp_path):
    # Layout: sd15.json (DreamShaper-8-like pruned fp16 SD1.5), nested under state_dict as .ckpt files are.
    extra = {"epoch": 6, "global_step": 4200, "pytorch-lightning_version": "1.9.4"}
    st, pt, starts, data = _twins(tmp_path, "sd15", nest="state_dict", extra=extra)
    _same_tables(st, pt, starts, data)
    ra = _core.scan_file(str(st), hash="none")
    rb = _core.scan_file(str(pt), hash="none")
    assert (rb["format"], rb["kind"], rb["arch"]) == ("torch-zip", "checkpoint", "sd1")
    for k in ("kind", "arch", "tensors", "dtypes", "components", "wasted_bytes"):
        assert ra[k] == rb[k], k
    # Every check agrees; only the pickle notice is extra (file sizes differ by format, so size.unusual may).
    assert set(checks(rb)) - {"format.legacy-pickle", "size.unusual"} == set(checks(ra)) - {"size.unusual"}
    assert dangerous(rb) == []


def test_hashes_match_twin(tmp_path):
    # Layout: lora-sd15-kohya.json (kohya LoRA, rank 16, 792 tensors, 18.9 MB): every tensor has seeded bytes.
    st, pt, starts, data = _twins(tmp_path, "lora-sd15-kohya", small=1 << 30)
    _same_tables(st, pt, starts, data)
    ra = _core.scan_file(str(st), hash="components")
    rb = _core.scan_file(str(pt), hash="components")
    assert ra["kind"] == rb["kind"]
    assert {c: v["blake3"] for c, v in ra["components"].items()} == \
        {c: v["blake3"] for c, v in rb["components"].items()}


def test_zip64_sdxl_twin(tmp_path):
    # Layout: sdxl.json (sd_xl_base_1.0, 6.9 GB sparse): past 4 GiB the zip needs zip64 records.
    st, pt, starts, data = _twins(tmp_path, "sdxl")
    assert pt.stat().st_size > 1 << 32
    _same_tables(st, pt, starts, data)
    rb = _core.scan_file(str(pt), hash="none")
    assert (rb["kind"], rb["arch"], rb["error"]) == ("checkpoint", "sdxl", None)


def test_legacy_twin(tmp_path):
    # Layout: embedding-sdxl.json (SDXL textual inversion: clip_g, clip_l) in the pre-1.6 torch format.
    lay = synth.load_layout("embedding-sdxl")
    data = {n: _seeded(t, i) for i, (n, t) in enumerate(sorted(lay["tensors"].items()))}
    st = synth.write_layout(tmp_path / "e.safetensors", lay, data=data)
    pt = tmp_path / "e.pt"
    starts = torchzip.write_legacy(pt, lay["tensors"], data=data)
    assert _core.scan_file(str(pt), hash="none")["format"] == "torch-legacy"
    _same_tables(st, pt, starts, data)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_protocol_lists_tensors(tmp_path, protocol):
    # Protocols 4/5 use STACK_GLOBAL + MEMOIZE (names resolved through the memo) and FRAME opcodes.
    # Layout: embedding-sdxl.json (clip_g [8, 1280], clip_l [8, 768], F32).
    lay = synth.load_layout("embedding-sdxl")
    data = {n: _seeded(t, i) for i, (n, t) in enumerate(sorted(lay["tensors"].items()))}
    st = synth.write_layout(tmp_path / "e.safetensors", lay, data=data)
    for kind, writer in (("torch-zip", torchzip.write_zip), ("torch-legacy", torchzip.write_legacy)):
        pt = tmp_path / f"e.{protocol}.{kind}.pt"
        starts = writer(pt, lay["tensors"], data=data, protocol=protocol)
        r = _core.scan_file(str(pt), hash="none")
        assert (r["format"], checks(r)) == (kind, ["format.legacy-pickle"])
        _same_tables(st, pt, starts, data)


def test_embedding_nesting_joins_keys(tmp_path):
    # A1111 textual-inversion .pt: {string_to_token, string_to_param: {'*': tensor}, name, step}.
    pt = tmp_path / "ti.pt"
    torchzip.write_zip(pt, {"*": {"dtype": "F32", "shape": [8, 768]}}, nest="string_to_param",
                       extra={"string_to_token": {"*": 265}, "name": "ti", "step": 1000})
    assert list(_table(pt)) == ["string_to_param.*"]


def test_strided_tensor_records_strides(tmp_path):
    pt = tmp_path / "t.pt"
    tensors = {"w": {"dtype": "F16", "shape": [3, 4]}, "b": {"dtype": "F16", "shape": [4]}}
    starts = torchzip.write_zip(pt, tensors, strides={"w": [1, 3]})
    t = _table(pt)
    assert t["w"]["strides"] == [1, 3] and t["w"]["start"] == starts["w"] and t["w"]["len"] == 24
    assert t["b"]["strides"] is None


def test_truncated_zip_reports_truncation_and_keeps_whole_tensors(tmp_path):
    # Layout: embedding-sdxl.json. The zip is cut inside the second storage: no central directory is
    # left, the local headers are walked, the first tensor is still listed, the second is reported.
    lay = synth.load_layout("embedding-sdxl")
    pt = tmp_path / "cut.pt"
    starts = torchzip.write_zip(pt, lay["tensors"])
    names = list(lay["tensors"])
    raw = pt.read_bytes()
    cut = tmp_path / "cut2.pt"
    cut.write_bytes(raw[: starts[names[1]] + 100])
    r = _core.scan_file(str(cut), hash="none")
    assert r["error"] is None
    assert {"file.truncated", "pickle.invalid"} <= set(checks(r, "error"))
    assert [t["name"] for t in _core.read_tensors(str(cut))["tensors"]] == names[:1]
    whole = _core.scan_file(str(pt), hash="none")
    assert "file.truncated" not in checks(whole) and whole["tensors"] == 2


# --- robustness: truncated and garbled inputs never crash the scanner ---

def _inputs(tmp_path):
    pt = tmp_path / "small.pt"
    torchzip.write_zip(pt, {"a": {"dtype": "F16", "shape": [4, 4]}, "b": {"dtype": "F32", "shape": [3]}},
                       nest="state_dict", extra={"epoch": 1})
    lg = tmp_path / "small_legacy.pt"
    torchzip.write_legacy(lg, {"a": {"dtype": "F16", "shape": [4, 4]}})
    corpus = ("malicious0.pkl", "malicious1_0x40.zip", "sys_module_override_sploit.pkl")
    return [pt.read_bytes(), lg.read_bytes()] + [(CORPUS / n).read_bytes() for n in corpus]


def test_truncated_and_garbled_inputs(tmp_path):
    rng = random.Random(1234)
    target = tmp_path / "fuzz.bin"
    seen_formats = set()
    for blob in _inputs(tmp_path):
        cuts = sorted({rng.randrange(1, len(blob)) for _ in range(40)} | {1, len(blob) - 1})
        variants = [blob[:c] for c in cuts]
        for _ in range(60):
            b = bytearray(blob)
            for _ in range(rng.randrange(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            variants.append(bytes(b))
        for v in variants:
            target.write_bytes(v)
            r = _core.scan_file(str(target), hash="full")
            seen_formats.add(r["format"])
            assert isinstance(r["findings"], list)
            if r["format"] in ("torch-zip", "torch-legacy"):
                try:
                    _core.read_tensors(str(target))
                except ValueError:
                    pass
    assert {"torch-zip", "torch-legacy", "pickle"} <= seen_formats
