"""A verified backup copy of a file, made before `fix --in-place` touches it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import blake3

from fastscan.fixes.errors import FixError
from fastscan.fixes.writer import check_space, commit, temp_path


def file_blake3(path: Path) -> str:
    """blake3 of a whole file."""
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(16 << 20)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _data_ranges(fd: int, size: int):
    """(start, end) of each run of data in a file, holes skipped (the whole file where holes are unknown)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return
            yield pos, size
            return
        yield start, end
        pos = end


def copy_sparse(src: int, dst: int, size: int) -> None:
    """Copies file `src` to `dst` (both fds) keeping holes, with copy_file_range where the kernel allows."""
    for start, end in _data_ranges(src, size):
        pos = start
        while pos < end:
            n = min(end - pos, 64 << 20)
            try:
                done = os.copy_file_range(src, dst, n, pos, pos)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                done = os.pwrite(dst, os.pread(src, n, pos), pos)
            if done == 0:
                raise OSError(errno.EIO, f"source ended at byte {pos}")
            pos += done
    os.ftruncate(dst, size)


def backup(src: Path, folder: Path, *, overwrite: bool = False) -> Path:
    """Copies `src` into `folder` (same name) via a fsynced temp file, verified by blake3."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FixError(f"{folder}: backup folder does not exist")
    dest = folder / src.name
    if dest.exists() and not overwrite:
        raise FixError(f"{dest}: a backup already exists there (use --force to overwrite)")
    try:
        if dest.exists() and os.path.samefile(dest, src):
            raise FixError(f"{dest}: the backup would be the input itself; pick another --backup folder")
        check_space(dest, src.stat().st_size)
        tmp = temp_path(dest, src.stat().st_mode & 0o7777)
    except OSError as e:
        raise FixError(f"{folder}: {e.strerror or e}") from None
    try:
        with open(src, "rb") as fin:
            copy_sparse(fin.fileno(), tmp.fd, os.fstat(fin.fileno()).st_size)
            os.fsync(tmp.fd)
        if file_blake3(Path(tmp.path)) != file_blake3(src):
            raise FixError(f"{dest}: backup copy does not match {src}; the input was not touched")
        commit(tmp, dest, overwrite)
    except OSError as e:
        tmp.discard()
        raise FixError(
            f"{dest}: {e.strerror or e} while making the backup; the input was not touched"
        ) from None
    except BaseException:
        tmp.discard()
        raise
    return dest
