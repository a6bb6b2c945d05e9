"""An input model file opened for a fix: its tensor table and its tensors' bytes, read chunk by chunk.

Bytes are read with pread rather than a memory map so that a file truncated under us is a clear error,
not a SIGBUS, and resident memory stays at one chunk (one tensor for strided pickle tensors).
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Iterator
from pathlib import Path

import blake3
import numpy as np

from fastscan import _core
from fastscan.fixes.errors import FixError

CHUNK = 16 << 20
MIN_HOLE = 64 << 10  # smaller holes are read as zeros
_SEEK_DATA = getattr(os, "SEEK_DATA", 0)
_SEEK_HOLE = getattr(os, "SEEK_HOLE", 0)
ZEROS = memoryview(bytes(CHUNK))


class Hole(int):
    """A run of that many zero bytes stored as a hole in a sparse file (nothing to read or write)."""


def is_hole(chunk) -> bool:
    """True when a chunk from `Source.chunks` is a `Hole`."""
    return isinstance(chunk, Hole)


def _feed_zeros(h, n: int) -> None:
    for off in range(0, n, CHUNK):
        h.update(ZEROS[: min(CHUNK, n - off)])


@functools.lru_cache(maxsize=512)
def zeros_blake3(n: int) -> str:
    """blake3 of n zero bytes (cached: sparse fixtures have many all-zero tensors of few sizes)."""
    h = blake3.blake3()
    _feed_zeros(h, n)
    return h.hexdigest()


class TensorHasher:
    """blake3 of one tensor's chunks; a tensor that is all holes costs one cached hash per size."""

    def __init__(self) -> None:
        self.h = None
        self.zeros = 0

    def update(self, chunk) -> None:
        """Feeds a chunk from `Source.chunks` (bytes or a Hole)."""
        if self.h is None:
            if isinstance(chunk, Hole):
                self.zeros += chunk
                return
            self.h = blake3.blake3(max_threads=blake3.blake3.AUTO)
            _feed_zeros(self.h, self.zeros)
        if isinstance(chunk, Hole):
            _feed_zeros(self.h, chunk)
        else:
            self.h.update(chunk)

    def hexdigest(self) -> str:
        """The hex digest of everything fed."""
        return self.h.hexdigest() if self.h is not None else zeros_blake3(self.zeros)


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
        self._buf = bytearray(0)  # one read buffer reused by every `chunks` (one generator at a time)
        for t in self.tensors:
            if t["start"] + t["span"] > self.size:
                raise FixError(
                    f"{self.path}: truncated: tensor {t['name']} needs bytes up to "
                    f"{t['start'] + t['span']}, the file has {self.size}"
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
        """Bytes of a safetensors file that belong to no tensor (gaps, trailing), as the core counts them."""
        return self.table["unaccounted_bytes"]

    def has_finding(self, check: str) -> bool:
        """True when the core reports `check` on this file (header-level checks)."""
        return any(f["check"] == check for f in self.table["findings"])

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

    def _seek(self, pos: int, whence: int, end: int) -> int:
        """lseek SEEK_DATA/SEEK_HOLE clamped to `end`; where holes are unknown, everything is data."""
        try:
            return min(os.lseek(self.fd, pos, whence), end)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no data after pos
                return end
            return pos if whence == _SEEK_DATA else end

    def _pieces(self, pos: int, end: int, base: int, take) -> Iterator[memoryview | Hole]:
        """Bytes pos..end split into holes (aligned to 8 bytes from `base`, at least MIN_HOLE) and data."""

        def down(x: int) -> int:
            return base + (x - base) // 8 * 8

        def up(x: int) -> int:
            return base - (base - x) // 8 * 8

        while pos < end:
            d = self._seek(pos, _SEEK_DATA, end)
            hole_end = down(d) if d < end else end
            if hole_end - pos >= MIN_HOLE:
                yield Hole(hole_end - pos)
                pos = hole_end
                continue
            stop, q = end, max(d, pos)
            while q < end:  # read up to the next hole big enough to skip
                h = self._seek(q, _SEEK_HOLE, end)
                if h >= end:
                    break
                nd = self._seek(h, _SEEK_DATA, end)
                hs, he = up(h), (down(nd) if nd < end else end)
                if he - hs >= MIN_HOLE:
                    stop = hs
                    break
                q = nd
            view = memoryview(take(stop - pos))[: stop - pos]
            self._pread_into(view, pos)
            yield view
            pos = stop

    def _shared(self, n: int) -> bytearray:
        if len(self._buf) < n:
            self._buf = bytearray(max(n, CHUNK))
        return self._buf

    def chunks(self, entry: dict, chunk: int = CHUNK, take=None) -> Iterator[memoryview | Hole]:
        """Tensor bytes, C-contiguous, in chunks of at most `chunk` bytes (each valid till the next).

        Runs of zeros that are holes in a sparse file come as `Hole`s. `take(n)` gives the buffer each
        chunk is read into; by default one buffer of this Source, so one generator at a time.
        """
        take = take or self._shared
        if entry.get("strides") is not None:
            data = memoryview(self.contiguous(entry))
            for off in range(0, len(data), chunk):
                yield data[off : off + chunk]
            return
        total, start = entry["len"], entry["start"]
        for off in range(0, total, chunk):
            n = min(chunk, total - off)
            if n < MIN_HOLE or not _SEEK_DATA:
                view = memoryview(take(n))[:n]
                self._pread_into(view, start + off)
                yield view
            else:
                yield from self._pieces(start + off, start + off + n, start, take)

    def contiguous(self, entry: dict) -> bytes:
        """The whole tensor's bytes, C-contiguous (strided pickle tensors are gathered with as_strided)."""
        raw = np.empty(entry["span"], dtype=np.uint8)
        self._pread_into(raw, entry["start"])
        strides = entry.get("strides")
        if strides is None:
            return raw.tobytes()
        item = _core.DTYPE_BITS[entry["dtype"]] // 8
        shape = tuple(entry["shape"]) + (item,)
        byte_strides = tuple(s * item for s in strides) + (1,)
        view = np.lib.stride_tricks.as_strided(raw, shape=shape, strides=byte_strides, writeable=False)
        return np.ascontiguousarray(view).tobytes()
