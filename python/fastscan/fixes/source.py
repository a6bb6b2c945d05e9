"""An input model file opened for a fix: its tensor table and its tensors' bytes, read chunk by chunk.

Bytes are read with pread rather than a memory map so that a file truncated under us is a clear error,
not a SIGBUS, and resident memory stays at one chunk (one tensor for strided pickle tensors).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fastscan import _core
from fastscan.fixes.errors import FixError
from fastscan.synth import DTYPE_BITS

CHUNK = 16 << 20
ZEROS = memoryview(bytes(CHUNK))


class Hole(int):
    """A run of that many zero bytes stored as a hole in a sparse file (nothing to read or write)."""


def is_hole(chunk) -> bool:
    """True when a chunk from `Source.chunks` is a `Hole`."""
    return isinstance(chunk, Hole)


def hash_update(h, chunk) -> None:
    """Feeds a chunk's bytes (zeros for a hole) to hasher `h`."""
    if not isinstance(chunk, Hole):
        h.update(chunk)
        return
    for off in range(0, chunk, CHUNK):
        h.update(ZEROS[: min(CHUNK, chunk - off)])


def _span(entry: dict) -> int:
    """Bytes from a tensor's first element to the end of its last one in the file."""
    strides = entry.get("strides")
    if strides is None:
        return entry["len"]
    if any(d == 0 for d in entry["shape"]):
        return 0
    item = DTYPE_BITS[entry["dtype"]] // 8
    return (sum((d - 1) * s for d, s in zip(entry["shape"], strides, strict=True)) + 1) * item


class Source:
    """One input file: `table` (from the Rust core), `by_name`, and methods reading tensor bytes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.table = _core.read_tensors(str(self.path))
        except (ValueError, OSError) as e:
            raise FixError(str(e)) from None
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise FixError(f"{self.path}: {e.strerror}") from None
        st = os.fstat(self.fd)
        self.stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        self.size = st.st_size
        self.tensors: list[dict] = self.table["tensors"]
        self.by_name = {t["name"]: t for t in self.tensors}
        for t in self.tensors:
            if t["start"] + _span(t) > self.size:
                raise FixError(
                    f"{self.path}: truncated: tensor {t['name']} needs bytes up to "
                    f"{t['start'] + _span(t)}, the file has {self.size}"
                )

    def close(self) -> None:
        """Closes the file."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def unaccounted(self) -> int:
        """Bytes of a safetensors file that belong to no tensor (gaps, trailing); 0 for other formats."""
        if self.table["format"] != "safetensors":
            return 0
        return self.size - 8 - self.table["header_len"] - sum(t["len"] for t in self.tensors)

    def check_unchanged(self) -> None:
        """Raises FixError when the file changed (size, mtime, inode) since it was opened."""
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise FixError(f"{self.path}: {e.strerror} (changed while fixing)") from None
        if (st.st_size, st.st_mtime_ns, st.st_ino) != self.stamp:
            raise FixError(f"{self.path}: the file changed while it was being fixed; nothing was written")

    def _pread_into(self, buf, offset: int) -> None:
        view = memoryview(buf)
        got = 0
        while got < len(view):
            n = os.preadv(self.fd, [view[got:]], offset + got)
            if n == 0:
                raise FixError(f"{self.path}: file ended at byte {offset + got} (truncated while fixing?)")
            got += n

    def _hole(self, offset: int, n: int) -> bool:
        """True when bytes offset..offset+n of the file are a hole (sparse file): all zeros, no disk."""
        try:
            return os.lseek(self.fd, offset, os.SEEK_DATA) >= offset + n
        except OSError as e:
            return e.errno == errno.ENXIO  # no data after offset
        except AttributeError:  # no SEEK_DATA on this platform
            return False

    def chunks(self, entry: dict, chunk: int = CHUNK) -> Iterator[memoryview | Hole]:
        """Tensor bytes, C-contiguous, in chunks of at most `chunk` bytes (each valid till the next)."""
        if entry.get("strides") is not None:
            data = memoryview(self.contiguous(entry))
            for off in range(0, len(data), chunk):
                yield data[off : off + chunk]
            return
        total, start = entry["len"], entry["start"]
        buf = bytearray(min(chunk, total))
        for off in range(0, total, chunk):
            n = min(chunk, total - off)
            if n >= 65536 and self._hole(start + off, n):
                yield Hole(n)
                continue
            view = memoryview(buf)[:n]
            self._pread_into(view, start + off)
            yield view

    def contiguous(self, entry: dict) -> bytes:
        """The whole tensor's bytes, C-contiguous (strided pickle tensors are gathered with as_strided)."""
        span = _span(entry)
        raw = np.empty(span, dtype=np.uint8)
        self._pread_into(raw, entry["start"])
        strides = entry.get("strides")
        if strides is None:
            return raw.tobytes()
        item = DTYPE_BITS[entry["dtype"]] // 8
        shape = tuple(entry["shape"]) + (item,)
        byte_strides = tuple(s * item for s in strides) + (1,)
        view = np.lib.stride_tricks.as_strided(raw, shape=shape, strides=byte_strides, writeable=False)
        return np.ascontiguousarray(view).tobytes()
