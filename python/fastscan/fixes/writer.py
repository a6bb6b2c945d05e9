"""Streaming safetensors writer: a temporary file in the target folder, fsync, verify, then rename.

Holes of a sparse input stay holes (as `cp` does). Peak memory is one chunk (one tensor for
strided pickle tensors), whatever the model's size.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fastscan import _core
from fastscan.fixes.cast import cast_bytes
from fastscan.fixes.errors import FixError
from fastscan.fixes.pipeline import END, Prefetch
from fastscan.fixes.plan import OutTensor, Plan
from fastscan.fixes.source import Hole, Source, TensorHasher, is_hole

TMP_SUFFIX = ".fastscan-tmp"  # the named fallback's suffix (rust/core/src/atomic.rs)
_HASH_POOL = ThreadPoolExecutor(1, thread_name_prefix="fastscan-hash")


def _write(fd: int, data) -> None:
    """Writes all of `data` to `fd` (the one place output bytes go: tests make it fail like a full disk)."""
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


class _Writeback:
    """Starts the kernel's writeback of each finished 64 MB of output early (Linux sync_file_range), so
    the final fsync has little left to wait for; a no-op where the call is missing."""

    STEP = 64 << 20

    def __init__(self, fd: int):
        self.fd, self.done, self.pos = fd, 0, 0
        self.call = _sync_file_range()

    def advance(self, n: int) -> None:
        """Notes n more bytes written; starts writeback of whole steps behind."""
        self.pos += n
        if self.call is not None and self.pos - self.done >= self.STEP:
            self.call(self.fd, self.done, self.pos - self.done, 2)  # SYNC_FILE_RANGE_WRITE
            self.done = self.pos


def _sync_file_range():
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


def tensor_bytes(o: OutTensor, sources: list[Source], take=None) -> Iterator[bytes | memoryview]:
    """The output bytes of one planned tensor, chunk by chunk (`take`: see `Source.chunks`)."""
    src = sources[o.src]
    if o.op == "arange":
        yield np.broadcast_to(np.arange(o.shape[-1], dtype="<i8"), o.shape).tobytes()
    elif o.op == "cast":
        ratio = (_core.DTYPE_BITS[o.dtype], _core.DTYPE_BITS[o.entry["dtype"]])
        for chunk in src.chunks(o.entry, take=take):
            if is_hole(chunk):  # zeros are zeros in every float dtype
                yield Hole(chunk * ratio[0] // ratio[1])
            else:
                yield cast_bytes(chunk, o.entry["dtype"], o.dtype)
    else:
        yield from src.chunks(o.entry, take=take)


def header(plan: Plan) -> tuple[bytes, list[OutTensor]]:
    """The padded JSON header (reference writer layout) and the tensors in data order."""
    try:
        raw, offsets = _core.safetensors_header(
            [(o.name, o.dtype, o.shape) for o in plan.tensors], list(plan.metadata.items()) or None
        )
    except ValueError as e:
        raise FixError(f"cannot write the output: {e}") from None
    order = sorted(range(len(plan.tensors)), key=lambda i: offsets[i])
    return raw, [plan.tensors[i] for i in order]


def write_plan(fd: int, plan: Plan, sources: list[Source]) -> dict[str, str]:
    """Writes the planned file to `fd` and fsyncs it; returns the blake3 of each tensor's bytes as written."""
    raw, order = header(plan)
    _write(fd, struct.pack("<Q", len(raw)))
    _write(fd, raw)
    flush = _Writeback(fd)
    flush.advance(8 + len(raw))
    written = {}

    def produce(take):
        for o in order:
            for chunk in tensor_bytes(o, sources, take):
                yield o, chunk
            yield o, END

    h, n = TensorHasher(), 0
    with contextlib.closing(iter(Prefetch(produce))) as items:  # stops the reader on any error
        for o, chunk in items:
            if chunk is END:
                if n != o.nbytes:
                    raise FixError(f"{o.name}: produced {n} bytes, its dtype and shape need {o.nbytes}")
                written[o.name] = h.hexdigest()
                h, n = TensorHasher(), 0
                continue
            if is_hole(chunk):  # keep a sparse input's holes: seek instead of writing zeros
                h.update(chunk)
                os.lseek(fd, chunk, os.SEEK_CUR)
                size = int(chunk)
            elif len(chunk) >= 1 << 20:  # hash (GIL released) while the kernel takes the write
                pending = _HASH_POOL.submit(h.update, chunk)
                try:
                    _write(fd, chunk)
                finally:
                    pending.result()
                size = len(chunk)
            else:
                h.update(chunk)
                _write(fd, chunk)
                size = len(chunk)
            n += size
            flush.advance(size)
    os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_CUR))
    os.fsync(fd)
    return written


def temp_path(out: Path, mode: int | None = None) -> _core.TempOutput:
    """A new temporary file for `out`, in its folder, with `mode` (default: 0o666 less the umask).

    The core makes it unnamed (O_TMPFILE) where the filesystem allows, so a killed run leaves nothing;
    leftovers of the named fallback from runs that are gone are swept first.
    """
    _core.sweep_temp(str(out.parent))
    return _core.TempOutput(str(out), mode)


def commit(tmp: _core.TempOutput, out: Path, overwrite: bool) -> None:
    """Names the finished temporary file `out` atomically; never replaces an existing `out` unless told."""
    try:
        tmp.commit(str(out), overwrite)
    except FileExistsError:
        raise FixError(f"{out}: already exists (use --force to overwrite)") from None


def check_space(out: Path, need: int) -> None:
    """Raises FixError when the target folder's filesystem has fewer than `need` free bytes."""
    st = os.statvfs(out.parent)
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise FixError(f"{out.parent}: needs {need:,} bytes free for the output, has {free:,}")


def check_target(out: Path, overwrite: bool) -> None:
    """Raises FixError when `out` cannot be written: missing folder, or it exists and overwrite is off."""
    if not out.parent.is_dir():
        raise FixError(f"{out.parent}: no such folder for the output")
    if out.exists() and not overwrite:
        raise FixError(f"{out}: already exists (use --force to overwrite)")
    if out.exists() and out.is_dir():
        raise FixError(f"{out}: is a folder")


def write_verified(plan: Plan, sources: list[Source], out: Path, *, overwrite: bool = False) -> Path:
    """Writes `plan` to `out` via a fsynced, re-scanned, verified temp file; on failure leaves nothing."""
    from fastscan.fixes.verify import scan_checks, verify

    out = Path(out)
    check_target(out, overwrite)
    raw, _ = header(plan)
    check_space(out, 8 + len(raw) + plan.data_bytes)
    before = scan_checks(sources[0].path)
    mode = os.stat(out).st_mode & 0o7777 if overwrite and out.exists() else None
    tmp = temp_path(out, mode)
    try:
        written = write_plan(tmp.fd, plan, sources)
        verify(Path(tmp.path), plan, written, before)
        for s in sources:
            s.check_unchanged()
        commit(tmp, out, overwrite)
    except OSError as e:
        tmp.discard()
        raise FixError(f"{out}: {e.strerror or e} while writing; no output was left") from None
    except BaseException:
        tmp.discard()
        raise
    return out
