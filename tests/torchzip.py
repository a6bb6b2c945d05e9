"""Writes real PyTorch-format checkpoints without torch, for tests (zip format and the pre-1.6 legacy one).

The pickle is made by Python's own `pickle` module, protocol 2 as `torch.save` uses, from stand-in objects:
a tensor reduces to `torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())`
and a storage is a persistent id `('storage', torch.HalfStorage, key, 'cpu', numel)`, exactly the opcodes
torch writes. Stand-in `torch` / `torch._utils` modules exist in `sys.modules` only while pickling.

The zip is laid out as torch's writer does (`archive/data.pkl`, `archive/byteorder`, `archive/data/N`
stored uncompressed with data aligned to 64 bytes, `archive/version`, `archive/.data/serialization_id`),
with zip64 records when the archive passes 4 GiB. Storage data not given is a sparse hole (zeros cost no
disk); CRCs are right, zeros' CRC computed without reading them.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import struct
import sys
import types
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

from fastscan import synth

STORAGE_CLASS = {
    "F16": "HalfStorage", "F32": "FloatStorage", "BF16": "BFloat16Storage", "F64": "DoubleStorage",
    "I64": "LongStorage", "I32": "IntStorage", "I16": "ShortStorage", "I8": "CharStorage",
    "U8": "ByteStorage", "BOOL": "BoolStorage",
}
ELEM = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
ALIGN = 64


@contextlib.contextmanager
def _stand_in_torch():
    """Puts minimal `torch` and `torch._utils` modules in sys.modules so pickle can name their globals."""
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    for name in STORAGE_CLASS.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise RuntimeError("stand-in")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        yield torch
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class _Storage:
    def __init__(self, cls, key: str, numel: int):
        self.cls, self.key, self.numel = cls, key, numel


class _Tensor:
    def __init__(self, rebuild, storage: _Storage, offset: int, shape, stride):
        self.rebuild, self.storage, self.offset = rebuild, storage, offset
        self.shape, self.stride = tuple(shape), tuple(stride)

    def __reduce__(self):
        return (self.rebuild, (self.storage, self.offset, self.shape, self.stride, False, OrderedDict()))


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def contiguous_stride(shape) -> list[int]:
    """C-order strides of a shape, in elements."""
    out, acc = [], 1
    for d in reversed(list(shape)):
        out.append(acc)
        acc *= d
    return list(reversed(out))


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _tensor_data(tensors: Mapping[str, Mapping], data: Mapping[str, bytes] | None) -> dict[str, bytes]:
    """Explicit bytes per tensor: `data`, plus correct `position_ids` as synth writes them."""
    out = dict(data or {})
    for name, t in tensors.items():
        if name.endswith("position_ids") and name not in out:
            out[name] = synth.position_ids_bytes(t["dtype"], count=t["shape"][-1])
    return out


def _storages(tensors: Mapping[str, Mapping], strides: Mapping[str, list[int]] | None):
    """One storage per tensor, keys "0", "1", ... in table order; returns (objects, storage list)."""
    strides = strides or {}
    objs, stores = {}, []
    import torch  # the stand-in

    for i, (name, t) in enumerate(tensors.items()):
        shape = list(t["shape"])
        stride = strides.get(name, contiguous_stride(shape))
        extent = 0 if _numel(shape) == 0 else 1 + sum((d - 1) * s for d, s in zip(shape, stride, strict=True))
        st = _Storage(getattr(torch, STORAGE_CLASS[t["dtype"]]), str(i), extent)
        objs[name] = _Tensor(torch._utils._rebuild_tensor_v2, st, 0, shape, stride)
        stores.append((str(i), name, extent * ELEM[t["dtype"]]))
    return objs, stores


def _nest(objs: dict, nest: str | None, extra: Mapping | None):
    sd = OrderedDict(objs)
    if nest is None:
        top = sd
    else:
        top = OrderedDict(extra or {})
        top[nest] = sd
    return top


def make_pickle(tensors, strides=None, nest=None, extra=None, protocol=2):
    """The data.pkl bytes and storage list (key, tensor name, byte size) for a tensor table."""
    with _stand_in_torch():
        objs, stores = _storages(tensors, strides)
        buf = io.BytesIO()
        _Pickler(buf, protocol=protocol).dump(_nest(objs, nest, extra))
    return buf.getvalue(), stores


# --- CRC32 of zeros without reading them: zero bytes act linearly on the CRC register (GF(2)) ---

def _gf2_times(mat, vec):
    s, i = 0, 0
    while vec:
        if vec & 1:
            s ^= mat[i]
        vec >>= 1
        i += 1
    return s


def _gf2_square(mat):
    return [_gf2_times(mat, mat[n]) for n in range(32)]


def _zero_powers(count: int = 48) -> list[list[int]]:
    """Operators for 2**k zero bytes, k = 0..count-1."""
    op = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    for _ in range(3):
        op = _gf2_square(op)  # 2, 4, 8 bits: one zero byte
    out = [op]
    for _ in range(count - 1):
        out.append(_gf2_square(out[-1]))
    return out


_ZERO_POWERS = _zero_powers()


def crc32_zeros(n: int) -> int:
    """CRC32 of n zero bytes (as zlib.crc32(bytes(n)))."""
    reg, k = 0xFFFFFFFF, 0
    while n:
        if n & 1:
            reg = _gf2_times(_ZERO_POWERS[k], reg)
        n >>= 1
        k += 1
    return reg ^ 0xFFFFFFFF


# --- zip writing ---

def _write_zip(path: Path, members: list[tuple[str, int, bytes | None]]) -> dict[str, int]:
    """Writes stored members (name, size, bytes or None for zeros); returns name -> data offset."""
    starts, central = {}, []
    with open(path, "wb") as f:
        for name, size, blob in members:
            off = f.tell()
            raw_name = name.encode()
            big = size >= 0xFFFFFFFF or off >= 0xFFFFFFFF
            z64 = struct.pack("<HHQQ", 1, 16, size, size) if big else b""
            base = off + 30 + len(raw_name) + len(z64)
            pad = (-(base + 4)) % ALIGN
            extra = z64 + struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # torch's "FB" padding field
            crc = zlib.crc32(blob) if blob is not None else crc32_zeros(size)
            s32 = 0xFFFFFFFF if big else size
            f.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45 if big else 20, 0, 0, 0, 0x21,
                                crc, s32, s32, len(raw_name), len(extra)))
            f.write(raw_name + extra)
            starts[name] = f.tell()
            if blob is not None:
                f.write(blob)
            else:
                f.seek(size, os.SEEK_CUR)
            central.append((raw_name, off, size, crc))
        cd_off = f.tell()
        f.truncate(cd_off)
        f.seek(cd_off)
        for raw_name, off, size, crc in central:
            need = size >= 0xFFFFFFFF or off >= 0xFFFFFFFF
            extra = struct.pack("<HHQQQ", 1, 24, size, size, off) if need else b""
            s32 = 0xFFFFFFFF if need else size
            o32 = 0xFFFFFFFF if need else off
            f.write(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 0x031E, 45 if need else 20, 0, 0, 0,
                                0x21, crc, s32, s32, len(raw_name), len(extra), 0, 0, 0, 0o644 << 16, o32))
            f.write(raw_name + extra)
        cd_end = f.tell()
        n = len(central)
        if cd_off >= 0xFFFFFFFF or n >= 0xFFFF:
            size = cd_end - cd_off
            f.write(struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, size, cd_off))
            f.write(struct.pack("<4sIQI", b"PK\x06\x07", 0, cd_end, 1))
        f.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, min(n, 0xFFFF), min(n, 0xFFFF),
                            cd_end - cd_off, min(cd_off, 0xFFFFFFFF), 0))
    return starts


def write_zip(
    path: str | os.PathLike,
    tensors: Mapping[str, Mapping],
    *,
    data: Mapping[str, bytes] | None = None,
    strides: Mapping[str, list[int]] | None = None,
    nest: str | None = None,
    extra: Mapping | None = None,
    prefix: str = "archive",
    protocol: int = 2,
) -> dict[str, int]:
    """Writes a PyTorch zip checkpoint of `tensors` ({name: {dtype, shape}}); `nest="state_dict"` puts
    them under that key (next to `extra`) as Lightning .ckpt files do. Returns name -> absolute offset of
    the tensor's first byte. `data` gives a tensor's bytes (storage order); the rest are zeros."""
    path = Path(path)
    blobs = _tensor_data(tensors, data)
    pkl, stores = make_pickle(tensors, strides, nest, extra, protocol)
    members = [(f"{prefix}/data.pkl", len(pkl), pkl), (f"{prefix}/byteorder", 6, b"little")]
    for key, name, size in stores:
        blob = blobs.get(name)
        if blob is not None and len(blob) != size:
            raise ValueError(f"{name}: {len(blob)} bytes given, storage needs {size}")
        members.append((f"{prefix}/data/{key}", size, blob))
    members += [(f"{prefix}/version", 2, b"3\n"), (f"{prefix}/.data/serialization_id", 20, b"0" * 20)]
    starts = _write_zip(path, members)
    return {name: starts[f"{prefix}/data/{key}"] for key, name, _ in stores}


def write_legacy(path: str | os.PathLike, tensors: Mapping[str, Mapping], *, data=None,
                 protocol: int = 2) -> dict[str, int]:
    """Writes a pre-1.6 PyTorch file: magic, protocol, sys info, data pickle, key list, raw storages."""
    blobs = _tensor_data(tensors, data)
    with _stand_in_torch():
        objs, stores = _storages(tensors, None)

        class _LegacyPickler(pickle.Pickler):
            def persistent_id(self, obj):
                if isinstance(obj, _Storage):
                    return ("storage", obj.cls, obj.key, "cpu", obj.numel, None)
                return None

        main = io.BytesIO()
        _LegacyPickler(main, protocol=protocol).dump(OrderedDict(objs))
    head = b"".join([
        pickle.dumps(0x1950A86A20F9469CFC6C, protocol=protocol),
        pickle.dumps(1001, protocol=protocol),
        pickle.dumps({"protocol_version": 1001, "little_endian": True,
                      "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=protocol),
        main.getvalue(),
        pickle.dumps([k for k, _, _ in stores], protocol=protocol),
    ])
    starts = {}
    with open(path, "wb") as f:
        f.write(head)
        for _key, name, size in stores:
            f.write(struct.pack("<q", size // ELEM[tensors[name]["dtype"]]))
            starts[name] = f.tell()
            blob = blobs.get(name)
            if blob is not None:
                f.write(blob)
            else:
                f.seek(size, os.SEEK_CUR)
        f.truncate(f.tell())
    return starts


# --- the pre-1.0 tar format (torch.serialization.legacy_load) ---

def _tar_header(name: str, size: int) -> bytes:
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def write_tar(path: str | os.PathLike, tensors: Mapping[str, Mapping], *, data=None,
              protocol: int = 2) -> dict[str, int]:
    """Writes a pre-1.0 PyTorch tar checkpoint as `legacy_load` reads it: a `storages` member (a count,
    then per storage a pickled (key, location, class), its int64 element count and its bytes, then a
    pickled list of views), a `tensors` member (a count, then per tensor a pickled (key, storage key,
    class), int32 rank + 4 bytes padding, sizes, strides, storage offset as int64) and a `pickle`
    member (the state dict, each tensor a persistent id). Storage bytes not given are sparse holes.
    Returns name -> absolute offset of the tensor's first byte."""
    blobs = _tensor_data(tensors, data)
    with _stand_in_torch() as torch:
        storages = [pickle.dumps(len(tensors), protocol=protocol)]
        records = []  # (pickle + numel bytes, data size, tensor name)
        tens = [pickle.dumps(len(tensors), protocol=protocol)]
        for i, (name, t) in enumerate(tensors.items()):
            shape = list(t["shape"])
            numel = _numel(shape)
            cls = getattr(torch, STORAGE_CLASS[t["dtype"]])
            head = pickle.dumps((i, "cpu", cls), protocol=protocol) + struct.pack("<q", numel)
            records.append((head, numel * ELEM[t["dtype"]], name))
            tens.append(pickle.dumps((i, i, cls), protocol=protocol))
            tens.append(struct.pack("<i4x", len(shape)))
            tens.append(struct.pack(f"<{2 * len(shape) + 1}q", *shape, *contiguous_stride(shape), 0))
        views = pickle.dumps([], protocol=protocol)

    class _Keys(pickle.Pickler):
        def persistent_id(self, obj):
            return obj.key if isinstance(obj, _Key) else None

    class _Key:
        def __init__(self, key):
            self.key = key

    main = io.BytesIO()
    _Keys(main, protocol=protocol).dump(OrderedDict((n, _Key(str(i))) for i, n in enumerate(tensors)))
    st_size = len(storages[0]) + sum(len(h) + n for h, n, _ in records) + len(views)
    starts = {}
    with open(path, "wb") as f:
        def member(name, size):
            f.write(_tar_header(name, size))
            return f.tell()

        def pad():
            f.seek((-f.tell()) % 512, os.SEEK_CUR)

        member("storages", st_size)
        f.write(storages[0])
        for head, n, name in records:
            f.write(head)
            starts[name] = f.tell()
            blob = blobs.get(name)
            if blob is not None:
                f.write(blob)
            else:
                f.seek(n, os.SEEK_CUR)
        f.write(views)
        pad()
        body = b"".join(tens)
        member("tensors", len(body))
        f.write(body)
        pad()
        body = main.getvalue()
        member("pickle", len(body))
        f.write(body)
        pad()
        f.write(bytes(1024))
        f.truncate(f.tell())
    return starts


# --- numpy's .npz (stored members), for the same memory tests ---

def write_npz(path: str | os.PathLike, tensors: Mapping[str, Mapping]) -> None:
    """An `.npz` as `np.savez` writes it (stored `.npy` members), the elements left as holes (CRCs are
    not computed: fastscan ignores them, as PyTorch's reader does)."""
    descr = {"F16": "<f2", "F32": "<f4", "I64": "<i8"}
    central = []
    with open(path, "wb") as f:
        for name, t in tensors.items():
            shape = tuple(t["shape"])
            h = f"{{'descr': '{descr[t['dtype']]}', 'fortran_order': False, 'shape': {shape!r}, }}"
            h += " " * ((-(10 + len(h) + 1)) % 64) + "\n"
            head = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode()
            size = len(head) + synth.nbytes(t["dtype"], t["shape"])
            raw = (name + ".npy").encode()
            off = f.tell()
            f.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0x21, 0, size, size,
                                len(raw), 0))
            f.write(raw + head)
            f.seek(size - len(head), os.SEEK_CUR)
            central.append((raw, off, size))
        cd = f.tell()
        for raw, off, size in central:
            f.write(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 0, 0, 0x21, 0, size, size,
                                len(raw), 0, 0, 0, 0, 0, off))
            f.write(raw)
        end = f.tell()
        n = len(central)
        f.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, end - cd, cd, 0))
