"""header.invalid and the file.* findings: every case of notes §3.3, checked against the reference reader.

Each bad input is built by hand (a few bytes), so its exact defect is visible in the table below. The
differential test opens every case with the reference `safetensors` package (`safe_open(path, "np")`)
and requires: fastscan reports no header.invalid / file.* error exactly when the reference opens the file.
"""

from __future__ import annotations

import json
import random
import re
import struct

import pytest
from safetensors import safe_open

from fastscan import _core, synth

F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


def st(header: bytes | str | dict, data: bytes = b"", prefix: int | None = None) -> bytes:
    """A safetensors file: 8-byte length (or `prefix`), header bytes, data."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    if isinstance(header, str):
        header = header.encode()
    n = len(header) if prefix is None else prefix
    return struct.pack("<Q", n) + header + data


def entry(dtype: str, shape: list, begin: int, end: int) -> str:
    return json.dumps({"dtype": dtype, "shape": shape, "data_offsets": [begin, end]})


def every_common_dtype() -> bytes:
    """One element of each common dtype, each in its own 8-byte slot padded by a U8 tensor."""
    header, pos = {}, 0
    for d in ["F64", "I64", "F32", "I32", "BF16", "F16", "U8", "BOOL"]:
        size = synth.nbytes(d, [1])
        header[d] = {"dtype": d, "shape": [1], "data_offsets": [pos, pos + size]}
        if size < 8:
            header["pad_" + d] = {"dtype": "U8", "shape": [8 - size], "data_offsets": [pos + size, pos + 8]}
        pos += 8
    return st(header, bytes(pos))


# name -> (file bytes, check it must get, words the reason must contain)
BAD = {
    "too-small": (b"\x01\x00\x00", "header.invalid", "too small"),
    "empty-file": (b"", "header.invalid", "too small"),
    "too-large": (st("{}", prefix=100_000_001), "header.invalid", "over the 100,000,000"),
    "prefix-past-end": (st("{}", prefix=100_000_000), "header.invalid", "past the end"),
    "prefix-only": (struct.pack("<Q", 16), "header.invalid", "past the end"),
    "bad-utf8": (st(b'{"a\xff":' + entry("F32", [2], 0, 8).encode() + b"}", bytes(8)), "header.invalid",
                 "UTF-8"),
    "bom": (st(b"\xef\xbb\xbf" + json.dumps({"a": F32x2}).encode(), bytes(8)), "header.invalid", "JSON"),
    "bad-json": (st("{"), "header.invalid", "JSON"),
    "trailing-nul": (st(json.dumps({"a": F32x2}).encode() + b"\x00", bytes(8)), "header.invalid",
                     "trailing characters"),
    "unknown-dtype": (st({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
                      "header.invalid", "unknown dtype `Q7`"),
    "lowercase-dtype": (st({"a": {"dtype": "f32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
                        "header.invalid", "unknown dtype `f32`"),
    "shape-dtype-mismatch": (st({"a": {"dtype": "I32", "shape": [2, 2], "data_offsets": [0, 4]}}, bytes(4)),
                             "header.invalid", "needs 16 bytes"),
    "negative-shape": (st({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8)),
                       "header.invalid", "-2"),
    "float-shape": (st({"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, bytes(8)),
                    "header.invalid", "floating point"),
    "three-offsets": (st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 8]}}, bytes(8)),
                      "header.invalid", "has 3 numbers, expected 2"),
    "missing-offsets": (st({"a": {"dtype": "F32", "shape": [2]}}, bytes(8)), "header.invalid",
                        "missing field `data_offsets`"),
    "end-before-begin": (st({"a": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}}, bytes(4)),
                         "header.invalid", "before it begins"),
    "overlap": (st({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                    "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, bytes(6)),
                "header.invalid", "overlaps"),
    "dup-key-different-offsets": (
        st('{"a":' + entry("U8", [4], 0, 4) + ',"b":' + entry("U8", [4], 4, 8) + ',"a":'
           + entry("U8", [4], 8, 12) + "}", bytes(12)),
        "header.invalid", "listed twice"),
    "dup-metadata": (st('{"__metadata__":{},"__metadata__":{}}'), "header.invalid", "duplicate field"),
    "non-string-metadata": (st({"__metadata__": {"epoch": 1}}), "header.invalid", "not a string"),
    "non-string-metadata-replaced": (st('{"__metadata__":{"k":1,"k":"v"}}'), "header.invalid",
                                     "not a string"),
    "metadata-not-object": (st('{"__metadata__":5}'), "header.invalid", "JSON"),
    "top-level-array": (st("[]"), "header.invalid", "JSON"),
    "tensor-value-5": (st('{"a":5}'), "header.invalid", "tensor `a`"),
    "shape-overflow": (st({"a": {"dtype": "F32", "shape": [2**62, 8], "data_offsets": [0, 8]}}, bytes(8)),
                       "header.invalid", "overflows"),
    "gap": (st({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}}, bytes(6)),
            "file.unaccounted-bytes", "belong to no tensor"),
    "first-not-at-zero": (st({"a": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}}, bytes(4)),
                          "file.unaccounted-bytes", "belong to no tensor"),
    "trailing-byte": (st({"a": F32x2}, bytes(9)), "file.unaccounted-bytes", "belong to no tensor"),
    "short-data": (st({"a": F32x2}, bytes(6)), "file.truncated", "truncated"),
    # 128 levels (object, tensor entry, 126 arrays) in a field the reader otherwise ignores
    "nested-128-levels": (st('{"a":' + entry("F32", [2], 0, 8)[:-1] + ',"x":' + "[" * 126 + "]" * 126 + "}}",
                             bytes(8)), "header.invalid", "nested deeper than 127"),
}

# name -> file bytes the reference opens, and so must fastscan
GOOD = {
    "plain": st({"a": F32x2}, bytes(8)),
    "leading-whitespace": st("\n  " + json.dumps({"a": F32x2}), bytes(8)),
    "trailing-spaces": st(json.dumps({"a": F32x2}) + "     ", bytes(8)),
    "metadata-null": st({"__metadata__": None, "a": F32x2}, bytes(8)),
    "metadata-strings": st({"__metadata__": {"k": "v", "n": ""}, "a": F32x2}, bytes(8)),
    "metadata-repeated-key": st('{"__metadata__":{"k":"1","k":"2"},"a":' + entry("F32", [2], 0, 8) + "}",
                                bytes(8)),
    "unknown-field": st({"a": {**F32x2, "extra": [1, 2]}}, bytes(8)),
    "unaligned": st(b'{"a":' + entry("F32", [2], 0, 8).encode() + b"}", bytes(8)),
    "out-of-order": st({"b": {"dtype": "U8", "shape": [3], "data_offsets": [4, 7]},
                        "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(7)),
    "empty-object": st("{}      "),
    "zero-size-tensor": st({"z": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]}, "a": F32x2},
                           bytes(8)),
    "scalar-shape": st({"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}, bytes(4)),
    "exact-duplicate": st('{"a":' + entry("F32", [2], 0, 8) + ',"a":' + entry("F32", [2], 0, 8) + "}",
                          bytes(8)),
    "dup-key-last-wins-valid": st('{"a":' + entry("U8", [4], 0, 4) + ',"a":' + entry("U8", [8], 0, 8) + "}",
                                  bytes(8)),
    "every-common-dtype": every_common_dtype(),
    # header length 0x480: its first two bytes (0x80 0x04) are also how a pickle protocol 4 stream starts
    "length-looks-like-pickle": st(json.dumps({"a": F32x2}).ljust(0x480), bytes(8)),
    "nested-127-levels": st('{"a":' + entry("F32", [2], 0, 8)[:-1] + ',"x":' + "[" * 125 + "]" * 125 + "}}",
                            bytes(8)),
    "brackets-in-a-string": st({"__metadata__": {"k": "[" * 300}, "a": F32x2}, bytes(8)),
}

FILE_ERRORS = ("header.invalid", "file.truncated", "file.unaccounted-bytes")


def write(tmp_path, name: str, blob: bytes):
    p = tmp_path / f"{name}.safetensors"
    p.write_bytes(blob)
    return p


def reference_opens(path) -> bool:
    """The reference validates the whole header and the data coverage when it opens a file.

    (Reading values is not asked: numpy has no bfloat16, float8 or float4 to read them into.)"""
    try:
        with safe_open(str(path), "np") as f:
            for k in f.keys():
                f.get_slice(k).get_shape()
        return True
    except Exception:
        return False


def file_errors(report: dict) -> list[dict]:
    return [f for f in report["findings"] if f["check"] in FILE_ERRORS]


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_gets_its_finding(tmp_path, name):
    blob, check, words = BAD[name]
    r = _core.scan_file(str(write(tmp_path, name, blob)), hash="none")
    assert r["error"] is None, r["error"]
    assert r["format"] == "safetensors"
    found = file_errors(r)
    assert [f["check"] for f in found] == [check], found
    f = found[0]
    assert f["severity"] == "error"
    assert words in f["message"], f["message"]
    if check == "header.invalid":
        pos = f["details"]["position"]
        assert isinstance(pos, int) and 0 <= pos <= max(len(blob), 8)
        assert f"at byte {pos}" in f["message"]


def test_positions_point_at_the_problem(tmp_path):
    """The byte position names where the defect is, in file coordinates (8 + offset in the JSON)."""
    blob = BAD["unknown-dtype"][0]
    r = _core.scan_file(str(write(tmp_path, "u", blob)), hash="none")
    pos = file_errors(r)[0]["details"]["position"]
    assert blob[pos:pos + 3] == b'"a"'
    blob = BAD["bad-utf8"][0]
    r = _core.scan_file(str(write(tmp_path, "b", blob)), hash="none")
    assert file_errors(r)[0]["details"]["position"] == blob.index(b"\xff")
    blob = BAD["trailing-nul"][0]
    r = _core.scan_file(str(write(tmp_path, "n", blob)), hash="none")
    assert file_errors(r)[0]["details"]["position"] == blob.index(b"\x00", 8)
    blob = BAD["dup-key-different-offsets"][0]
    r = _core.scan_file(str(write(tmp_path, "d", blob)), hash="none")
    assert file_errors(r)[0]["details"]["position"] == blob.rindex(b'"a"')


def test_ranges_and_byte_counts(tmp_path):
    r = _core.scan_file(str(write(tmp_path, "g", BAD["gap"][0])), hash="none")
    f = file_errors(r)[0]
    header_end = 8 + struct.unpack("<Q", BAD["gap"][0][:8])[0]
    assert f["details"]["bytes"] == 2
    assert f["details"]["ranges"] == [[header_end + 2, header_end + 4]]
    r = _core.scan_file(str(write(tmp_path, "s", BAD["short-data"][0])), hash="none")
    f = file_errors(r)[0]
    assert f["details"]["actual"] == len(BAD["short-data"][0])
    assert f["details"]["expected"] - f["details"]["actual"] == 2


@pytest.mark.parametrize("name", sorted(GOOD))
def test_accepted_input_has_no_file_error(tmp_path, name):
    r = _core.scan_file(str(write(tmp_path, name, GOOD[name])), hash="none")
    assert r["error"] is None
    assert file_errors(r) == []


@pytest.mark.parametrize("name", sorted(BAD) + sorted(GOOD))
def test_differential_against_reference(tmp_path, name):
    blob = BAD[name][0] if name in BAD else GOOD[name]
    p = write(tmp_path, name, blob)
    ours_ok = not file_errors(_core.scan_file(str(p), hash="none"))
    assert ours_ok == reference_opens(p), f"{name}: fastscan ok={ours_ok}, reference disagrees"


def test_real_layout_headers_agree_with_reference(tmp_path):
    """A writer-exact header of a real layout (sd15) is accepted by both."""
    p = synth.write_layout(tmp_path / "sd15.safetensors", "sd15", metadata={"format": "pt"})
    assert reference_opens(p)
    assert file_errors(_core.scan_file(str(p), hash="none")) == []


def test_directory_of_bad_files_reports_each_and_carries_on(tmp_path):
    for n in sorted(BAD):
        write(tmp_path, n, BAD[n][0])
    good = synth.write_layout(tmp_path / "good-sd15.safetensors", "sd15")
    files, walk_errors = _core.walk([str(tmp_path)])
    assert walk_errors == []
    paths = [f[0] for f in files]
    assert len(paths) == len(BAD) + 1
    reports = {r["path"]: r for r in _core.Scanner(paths, hash="full", jobs=2)}
    assert sorted(reports) == sorted(paths)
    for n in BAD:
        r = reports[str(tmp_path / f"{n}.safetensors")]
        assert [f["check"] for f in file_errors(r)] == [BAD[n][1]], n
    assert reports[str(good)]["kind"] == "checkpoint"
    assert file_errors(reports[str(good)]) == []


_TOKENS = [b"{", b"}", b"[", b"]", b",", b":", b'"', b" ", b"\x00", b"0", b"9", b"-", b".", b"e", b"F16",
           b"__metadata__", b"null", b"\xff"]
_DTYPES = [b'"F16"', b'"F64"', b'"U8"', b'"BOOL"', b'"F4"', b'"F6_E2M3"', b'"C64"', b'"F8_E8M0"', b'"I64"',
           b'"f16"']
_NUMBERS = [0, 1, 2, 3, 4, 7, 8, 9, 16, 2**63, 2**64]


def _mutate(rng: random.Random, blob: bytes) -> bytes:
    """One to three edits of the header JSON (numbers, dtypes, bytes, tokens); prefix kept consistent."""
    n = struct.unpack("<Q", blob[:8])[0] if len(blob) >= 8 else 0
    head, data = bytearray(blob[8:8 + n]), blob[8 + n:]
    for _ in range(rng.randint(1, 3)):
        op, pos = rng.random(), rng.randrange(len(head) + 1)
        numbers = [m.span() for m in re.finditer(rb"[0-9]+", bytes(head))]
        dtypes = [m.span() for m in re.finditer(rb'"(F|I|U|B|C)[A-Z0-9_]*"', bytes(head))]
        if op < 0.25 and numbers:
            a, z = rng.choice(numbers)
            head[a:z] = str(rng.choice([*_NUMBERS, rng.randrange(40)])).encode()
        elif op < 0.35 and dtypes:
            a, z = rng.choice(dtypes)
            head[a:z] = rng.choice(_DTYPES)
        elif op < 0.5 and head:
            head[min(pos, len(head) - 1)] = rng.randrange(256)
        elif op < 0.8:
            head[pos:pos] = rng.choice(_TOKENS)
        else:
            del head[pos:pos + rng.randint(1, 4)]
    if rng.random() < 0.2:
        data = data[:-1] if data and rng.random() < 0.5 else data + b"\0"
    return struct.pack("<Q", len(head)) + bytes(head) + data


def test_mutated_headers_agree_with_reference(tmp_path):
    """A small seeded fuzz: 600 edits of the cases above; fastscan and the reference agree on each."""
    rng = random.Random(20261125)
    seeds = [GOOD[k] for k in sorted(GOOD)] + [BAD[k][0] for k in sorted(BAD) if 8 <= len(BAD[k][0]) < 1000]
    disagree = []
    for i in range(600):
        blob = _mutate(rng, rng.choice(seeds))
        p = write(tmp_path, f"m{i}", blob)
        r = _core.scan_file(str(p), hash="none")
        ours = r["error"] is None and not file_errors(r)
        if ours != reference_opens(p):
            disagree.append((blob[:300], [f["message"] for f in r["findings"]]))
    assert disagree == []


def _generated_header(rng: random.Random) -> bytes:
    """A safetensors file from a random table, then (most of the time) a few random edits of its header."""
    header: dict = {}
    if rng.random() < 0.3:
        header["__metadata__"] = {"k": rng.choice(["v", "", "[{"])} if rng.random() < 0.8 else {"k": 1}
    pos = 0
    for _ in range(rng.randint(0, 4)):
        dtype = rng.choice(["F32", "F16", "U8", "I64", "BF16", "BOOL", "F8_E4M3", "X"])
        shape = [rng.randint(0, 3) for _ in range(rng.randint(0, 2))]
        n = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8}.get(dtype, 1)
        for d in shape:
            n *= d
        begin = pos + rng.choice([0, 0, 0, 1])
        end = begin + n + rng.choice([0, 0, 0, 0, 1, -1])
        entry = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
        if rng.random() < 0.1:
            depth = rng.randint(120, 130)
            entry["x"] = json.loads("[" * depth + "]" * depth)
        header[f"t{rng.randint(0, 5)}"] = entry
        pos = max(pos, end)
    text = json.dumps(header, separators=(",", ":"))
    for _ in range(rng.choice([0, 0, 1, 2])):
        at = rng.randrange(len(text) + 1)
        edit = rng.choice(['"', "{", "}", "[", "]", ",", ":", "0", "-1", " ", "null", ""])
        text = text[:at] + edit + text[at + 1 :]
    data = bytes(max(pos + rng.choice([0, 0, 0, 1, -1]), 0))
    return st(text, data)


def test_generated_headers_get_the_reference_verdict(tmp_path):
    """Differential over generated headers (valid and broken): fastscan accepts exactly what the
    reference opens. FASTSCAN_FUZZ_ITERS raises the number of cases (CI: the default, a few seconds)."""
    import os

    n = int(os.environ.get("FASTSCAN_FUZZ_ITERS", "300"))
    rng = random.Random(20261201)
    for i in range(n):
        blob = _generated_header(rng)
        p = write(tmp_path, "g", blob)
        ours_ok = not file_errors(_core.scan_file(str(p), hash="none"))
        assert ours_ok == reference_opens(p), f"case {i}: fastscan ok={ours_ok} on {blob[:300]!r}"
