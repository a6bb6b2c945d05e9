"""Issue 9, the pickle half: one probe per class of evasion (docs/pickle-policy.md).

Every probe is a pickle written here byte by byte, proven well-formed with `pickletools.dis` (which decodes
and checks the stack without importing or calling anything) and never loaded.
"""

from __future__ import annotations

import io
import pickletools
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from fastscan import _core

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def well_formed(data: bytes) -> bytes:
    pickletools.dis(data, out=io.StringIO())
    return data


def u(s: str) -> bytes:
    """SHORT_BINUNICODE s."""
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def x(s: str) -> bytes:
    """BINUNICODE s (protocol 2)."""
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def call(module: str, name: str, proto: int = 4) -> bytes:
    """`module.name('x')`: STACK_GLOBAL (protocol 4) or GLOBAL (protocol 2), then REDUCE."""
    if proto >= 4:
        return well_formed(b"\x80\x04" + u(module) + u(name) + b"\x93" + u("x") + b"\x85R.")
    return well_formed(b"\x80\x02c" + f"{module}\n{name}\n".encode() + x("x") + b"\x85R.")


def scan(tmp_path: Path, data: bytes, name: str = "probe.pkl") -> dict:
    p = tmp_path / name
    p.write_bytes(data)
    return _core.scan_file(str(p), hash="none")


def critical(report: dict) -> list[tuple[str, str]]:
    return [
        (f["details"]["module"], f["details"]["name"])
        for f in report["findings"]
        if f["severity"] == "critical" and f["check"] == "pickle.dangerous-import"
    ]


def checks(report: dict) -> list[str]:
    return [f["check"] for f in report["findings"]]


# --- class 1: policy by allow-list, names resolved as CPython resolves them ---

DOTTED = [
    ("torch", "hub.download_url_to_file"),
    ("torch", "_inductor.codecache.compile_file"),
    ("torch", "storage._load_from_bytes"),
    ("numpy.testing", "_private.utils.runstring"),
    ("torch.utils.data", "datapipes.utils.decoder.basichandlers"),
]


@pytest.mark.parametrize(("module", "name"), DOTTED)
def test_dotted_evasions_are_critical(tmp_path, module, name):
    assert critical(scan(tmp_path, call(module, name))) == [(module, name)]


LISTED = [
    ("torch.fx.graph_module", "reduce_graph_module"),
    ("torch.fx.graph_module", "_forward_from_src"),
    ("torch.serialization", "_legacy_load"),
    ("torch.utils.cpp_extension", "load_inline"),
    ("dataclasses", "_create_fn"),
    ("typing", "ForwardRef._evaluate"),
    ("pathlib", "Path.write_text"),
    ("codecs", "open"),
    ("numpy", "load"),
    ("numpy.lib.npyio", "load"),
    ("numpy.lib.format", "read_array"),
]


@pytest.mark.parametrize(("module", "name"), LISTED)
def test_each_listed_callable_is_critical(tmp_path, module, name):
    assert critical(scan(tmp_path, call(module, name))) == [(module, name)]
    if "." not in name:  # protocol 2 GLOBAL spelling too
        assert critical(scan(tmp_path, call(module, name, proto=2))) == [(module, name)]


def test_unknown_callable_is_critical_only_when_used(tmp_path):
    r = scan(tmp_path, call("argparse", "Namespace"))
    [f] = [f for f in r["findings"] if f["check"] == "pickle.dangerous-import"]
    assert (f["details"]["name"], f["details"]["used"]) == ("Namespace", "REDUCE")
    # Only referenced (a value in a dict): a warning, as the policy says.
    ref = well_formed(b"\x80\x04}" + u("k") + u("argparse") + u("Namespace") + b"\x93s.")
    r = scan(tmp_path, ref)
    assert critical(r) == [] and "pickle.unknown-import" in checks(r)
    # Passed as an argument to an allowed call (OrderedDict(x)): used, so critical.
    arg = well_formed(
        b"\x80\x04" + u("collections") + u("OrderedDict") + b"\x93" + u("argparse") + u("Namespace")
        + b"\x93\x85R."
    )
    assert critical(scan(tmp_path, arg)) == [("argparse", "Namespace")]


@pytest.mark.parametrize(
    ("written", "resolved"),
    [
        (("__builtin__", "eval"), ("builtins", "eval")),
        (("SimpleXMLRPCServer", "SimpleXMLRPCServer"), ("xmlrpc.server", "SimpleXMLRPCServer")),
        (("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")),
    ],
)
def test_python2_names_map_through_compat_pickle(tmp_path, written, resolved):
    # Protocol 2: CPython's unpickler renames through _compat_pickle (fix_imports, the default).
    r = scan(tmp_path, call(*written, proto=2))
    [f] = [f for f in r["findings"] if f["check"] == "pickle.dangerous-import"]
    d = f["details"]
    assert (d["module"], d["name"], d["written"]) == (*resolved, " ".join(written))


# --- class 2: parity with CPython's unpickler ---


def test_memo_slots_after_the_object_limit_are_numbered_as_cpython_does(tmp_path):
    # 1,000,010 distinct ints memoized (past the reader's 1,000,000-value limit), then four strings
    # memoized at slots n..n+3: 'collections', 'OrderedDict', 'builtins', 'eval'. Fetching slots n+2 and
    # n+3 must give builtins.eval, never the allowed pair.
    def build(n: int) -> bytes:
        body = b"".join(b"J" + struct.pack("<i", 100_000 + i) + b"\x940" for i in range(n))
        names = b"".join(u(s) + b"\x940" for s in ("collections", "OrderedDict", "builtins", "eval"))
        fetch = b"j" + struct.pack("<I", n + 2) + b"j" + struct.pack("<I", n + 3)
        return b"\x80\x04" + body + names + fetch + b"\x93" + u("1") + b"\x85R."

    well_formed(build(10))  # the same structure, small enough to disassemble
    big = build(1_000_010)
    assert sum(1 for _ in pickletools.genops(big)) == 1 + 3 * 1_000_010 + 4 * 3 + 7
    r = scan(tmp_path, big)
    assert "pickle.too-large" in checks(r)
    assert critical(r) == [("builtins", "eval")]


def test_operands_cpython_accepts_do_not_stop_the_scan(tmp_path):
    # INT/LONG text CPython accepts (C load_int: strtol base 0, then int(s, 0); load_long: int(s, 0)),
    # memo indices with '_' and '\v' (load_get / load_put: int(s)). Values as Python computes them:
    operands = [b"0x1f", b"0o17", b"0b11", b"1_000", b"\x0b7", b"-0x10"]
    assert [int(o.decode(), 0) for o in operands] == [31, 15, 3, 1000, 7, -16]
    ints = b"".join(b"I" + o + b"\n0" for o in operands) + b"L0x_ffL\n0"
    memo = u("posix") + b"p1_0\n0" + u("system") + b"p\x0b11\n0"
    memo += b"g10\ng 1_1\x0b\n\x93" + u("id") + b"\x85R."
    data = b"\x80\x04" + ints + memo
    # pickletools reads INT with int(s) (base 10), so its proof uses the decimal spellings.
    well_formed(b"\x80\x04" + b"I31\n0I15\n0I3\n0I1_000\n0I\x0b7\n0I-16\n0L255L\n0" + memo)
    r = scan(tmp_path, data)
    assert "pickle.invalid" not in checks(r)
    [f] = [f for f in r["findings"] if f["check"] == "pickle.dangerous-import"]
    assert (f["details"]["module"], f["details"]["name"], f["details"].get("unresolved")) == (
        "posix",
        "system",
        None,
    )


def test_an_operand_cpython_rejects_does_not_hide_what_follows(tmp_path):
    # g0x1: CPython's load_get reads int(s) in base 10 and raises; the scan goes on lexically.
    data = b"\x80\x02g0x1\ncposix\nsystem\n" + x("id") + b"\x85R."
    well_formed(b"\x80\x02cposix\nsystem\n" + x("id") + b"\x85R.")
    r = scan(tmp_path, data)
    assert "pickle.invalid" in checks(r)
    assert critical(r) == [("posix", "system")]


# --- no size cap hides an import ---

MIB = 1 << 20
TAIL = b"cposix\nsystem\n" + x("id") + b"\x85R."


def _stored_zip_sparse(path: Path, name: bytes, head: bytes, hole: int, tail: bytes) -> int:
    """A one-entry stored zip whose data is head, `hole` zero bytes (a sparse hole), tail; returns the
    file offset of tail."""
    size = len(head) + hole + len(tail)
    with path.open("wb") as f:
        f.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, size, size, len(name), 0))
        f.write(name + head)
        f.seek(hole, io.SEEK_CUR)
        at = f.tell()
        f.write(tail)
        cd_off = f.tell()
        fields = (20, 20, 0, 0, 0, 0, 0, size, size, len(name), 0, 0, 0, 0, 0, 0)
        cd = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", *fields) + name
        f.write(cd)
        f.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(cd), cd_off, 0))
    return at


def test_import_after_128_mib_of_a_stored_data_pkl(tmp_path):
    head = b"\x80\x04\x8e" + struct.pack("<Q", 130 * MIB)
    well_formed(b"\x80\x04\x8e" + struct.pack("<Q", 4) + b"\0" * 4 + b"0" + TAIL)
    p = tmp_path / "big.pt"
    at = _stored_zip_sparse(p, b"archive/data.pkl", head, 130 * MIB, b"0" + TAIL)
    r = _core.scan_file(str(p), hash="none")
    [f] = [f for f in r["findings"] if f["check"] == "pickle.dangerous-import"]
    assert f["details"]["offset"] == at + 1
    with p.open("rb") as fh:
        fh.seek(f["details"]["offset"])
        assert fh.read(1) == b"c"


def test_import_after_128_mib_of_a_deflated_data_pkl(tmp_path):
    filler = b"N0" * MIB  # 2 MiB of push-None / pop
    well_formed(b"\x80\x04" + filler[:64] + TAIL)
    p = tmp_path / "bigdeflated.pt"
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as z, z.open("archive/data.pkl", "w") as w:
        w.write(b"\x80\x04")
        for _ in range(66):
            w.write(filler)
        w.write(TAIL)
    assert p.stat().st_size < 4 * MIB
    r = _core.scan_file(str(p), hash="none")
    [f] = [f for f in r["findings"] if f["check"] == "pickle.dangerous-import"]
    assert f["details"]["position"] == 2 + 132 * MIB and f["details"]["offset"] is None
    assert "pickle.too-large" in checks(r) and "pickle.invalid" not in checks(r)


# --- class 3: the pre-1.0 tar checkpoint format ---


def _tar_checkpoint(pickle_member: bytes) -> bytes:
    """storages / tensors / pickle members as torch.serialization.legacy_load reads them (written with
    Python's tarfile): one FloatStorage of 6 elements, one 2x3 tensor on it, and the given pickle."""
    storages = (
        well_formed(b"\x80\x02K\x01.")
        + well_formed(b"\x80\x02(" + x("0") + x("cpu") + b"ctorch\nFloatStorage\nt.")
        + struct.pack("<q", 6)
        + struct.pack("<6f", 1, 2, 3, 4, 5, 6)
        + well_formed(b"\x80\x02].")
    )
    tensors = (
        well_formed(b"\x80\x02K\x01.")
        + well_formed(b"\x80\x02(K\x01" + x("0") + b"ctorch\nFloatTensor\nt.")
        + struct.pack("<i4x", 2)
        + struct.pack("<5q", 2, 3, 3, 1, 0)
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in (("storages", storages), ("tensors", tensors), ("pickle", pickle_member)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_checkpoint_is_read_and_scanned(tmp_path):
    clean = well_formed(b"\x80\x02ccollections\nOrderedDict\n)R" + x("w") + b"K\x01Qs.")
    p = tmp_path / "old.pt"
    p.write_bytes(_tar_checkpoint(clean))
    r = _core.scan_file(str(p), hash="none")
    assert (r["format"], r["error"], checks(r)) == ("torch-tar", None, ["format.legacy-pickle"])
    [t] = _core.read_tensors(str(p))["tensors"]
    assert (t["name"], t["dtype"], t["shape"], t["len"]) == ("w", "F32", [2, 3], 24)
    raw = p.read_bytes()
    assert struct.unpack("<6f", raw[t["start"] : t["start"] + 24]) == (1, 2, 3, 4, 5, 6)
    bad = well_formed(b"\x80\x02cposix\nsystem\n" + x("id") + b"\x85R.")
    p.write_bytes(_tar_checkpoint(bad))
    r = _core.scan_file(str(p), hash="none")
    assert critical(r) == [("posix", "system")]


def test_tar_without_pickles_is_not_a_model(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("notes.txt")
        info.size = 5
        t.addfile(info, io.BytesIO(b"hello"))
    r = scan(tmp_path, buf.getvalue(), "notes.tar")
    assert (r["format"], r["error"], r["findings"]) == ("unknown", None, [])


# --- no crying wolf ---


def test_benign_torch_checkpoints_have_no_warning(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)).half()
    for i, kw in enumerate(({}, {"_use_new_zipfile_serialization": False})):
        p = tmp_path / f"sd{i}.ckpt"
        torch.save({"state_dict": model.state_dict(), "epoch": 3, "global_step": 7}, p, **kw)
        r = _core.scan_file(str(p), hash="none")
        assert checks(r) == ["format.legacy-pickle"], (kw, r["findings"])
        assert r["tensors"] == 4


@pytest.mark.parametrize("path", sorted(REAL.glob("*.pt*")), ids=lambda p: p.name)
def test_real_files_stay_clean(path):
    r = _core.scan_file(str(path), hash="none")
    assert [f for f in r["findings"] if f["severity"] in ("critical", "warning")] == []
