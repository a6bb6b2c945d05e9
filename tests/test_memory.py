"""Reading a file's tensor table costs little memory and leaves little in the page cache, whatever its form.

A container's reader looks at a few bytes of every record (a legacy checkpoint's element counts, a tar
checkpoint's record pickles, a zip's local headers, an .npz member's header). Read through a map of the
file, each touch makes the page-cache folio around it resident (with the file cached, a 300 MB file of
1 MiB records counted ~100-285 MB of RSS) and, cold, reads ahead around it, and the data pass keeps
those pages as if cached before it. Read by positioned reads, neither happens. Each form is measured in
a child process (its own VmHWM: ru_maxrss would carry the parent's over exec); the files are sparse.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import subprocess
import sys

import pytest

import torchzip
from fastscan import synth

N, SHAPE = 300, [512, 512]  # 300 F32 records of 1 MiB
TENSORS = {f"model.diffusion_model.w{i}": {"dtype": "F32", "shape": SHAPE} for i in range(N)}


def _zip_without_directory(path, tensors):
    """A PyTorch zip cut off before its central directory (a download stopped early)."""
    torchzip.write_zip(path, tensors)
    with open(path, "rb") as f:
        f.seek(-22, os.SEEK_END)
        directory = struct.unpack("<I", f.read(22)[16:20])[0]
    os.truncate(path, directory)


FORMS = {
    "zip.ckpt": torchzip.write_zip,
    "model.ckpt": torchzip.write_legacy,
    "model.pt": torchzip.write_tar,
    "cut.ckpt": _zip_without_directory,
    "arrays.npz": torchzip.write_npz,
}

CHILD = (
    "import sys, fastscan._core as c\n"
    "def hwm():\n"
    "    with open('/proc/self/status') as f:\n"
    "        return next(int(x.split()[1]) for x in f if x.startswith('VmHWM:'))\n"
    "base = hwm()\n"
    "t = c.read_tensors(sys.argv[1])\n"
    "print(len(t['tensors']), hwm() - base)\n"
)


def _cached_bytes(path) -> int:
    """Bytes of the file in the page cache (mincore over a private map, never read)."""
    libc = ctypes.CDLL(None, use_errno=True)
    size, page = os.path.getsize(path), mmap.PAGESIZE
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as m:
        buf = (ctypes.c_char * size).from_buffer(m)
        vec = (ctypes.c_ubyte * ((size + page - 1) // page))()
        rc = libc.mincore(ctypes.c_void_p(ctypes.addressof(buf)), ctypes.c_size_t(size), vec)
        del buf
    assert rc == 0, ctypes.get_errno()
    return sum(v & 1 for v in vec) * page


def _read_table(path) -> tuple[int, int]:
    """(tensors listed, KiB the child's peak RSS grew by while reading the table)."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True)
    count, grown_kib = map(int, out.stdout.split())
    return count, grown_kib


@pytest.mark.parametrize("name", FORMS)
def test_reading_a_table_maps_nothing_resident_and_leaves_no_page_cache(tmp_path, name):
    path = tmp_path / name
    FORMS[name](path, TENSORS)
    size = path.stat().st_size
    assert size > N << 20
    synth.evict(path)
    if _cached_bytes(path) > size // 10:
        pytest.skip("this file system does not evict on request (tmpfs): nothing to observe")
    # Cold: what the table's reads bring into the page cache stays there (the data pass keeps it).
    count, _ = _read_table(path)
    assert count == N
    left = _cached_bytes(path)
    assert left < size // 20, f"{left >> 20} MiB of {size >> 20} MiB cached after reading the table"
    # Cached, as after a download read back (readahead caches the file in large folios).
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass
    count, grown_kib = _read_table(path)
    assert count == N
    assert grown_kib * 1024 < size // 8, f"peak RSS grew {grown_kib} KiB reading the table"
