"""Writing a planned file: the core's executor (fastscan_core::fix) does it; this passes the plan across.

The core writes the output once through a temporary file in the target folder, fsyncs it, verifies it
(tensor table, metadata, every tensor's bytes, the checks the fix removes) and renames it; on any failure
nothing is left. The helpers below serve `backup.py`, which copies whole files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from fastscan import _core
from fastscan.fixes.errors import FixError
from fastscan.fixes.plan import Plan
from fastscan.fixes.source import Source

TMP_SUFFIX = ".fastscan-tmp"  # the named fallback's suffix (rust/core/src/atomic.rs)
# (stage, done, total): stage "write" then "verify", bytes of tensor data.
Progress = Callable[[str, int, int], None]


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


def write_verified(
    plan: Plan,
    sources: list[Source],
    out: Path | str,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    endpoint_url: str | None = None,
) -> dict:
    """Writes `plan` to `out` through the core's verified executor; returns {size, metadata} as written.

    `out` may be an object's URL (text; `endpoint_url` for an S3-compatible service): the core writes a
    new object, uploaded and read back, and never replaces one, `overwrite` or not. Raises FixError
    naming the problem (nothing is left behind); an exception raised by `progress` (or Ctrl-C) stops
    the fix and propagates.
    """
    mode = None
    if isinstance(out, str) and _core.is_url(out):
        if overwrite:
            raise FixError(f"{out}: an object is never overwritten (--force applies to local files)")
    else:
        out = Path(out)
        if out.parent.is_dir():
            _core.sweep_temp(str(out.parent))
        mode = os.stat(out).st_mode & 0o7777 if overwrite and out.is_file() else None
    try:
        return _core.write_fix(
            plan.core_tensors(),
            list(plan.metadata.items()),
            [str(s.path) for s in sources],
            str(out),
            gone=sorted(plan.gone),
            kind=plan.kind,
            overwrite=overwrite,
            mode=mode,
            progress=progress,
            endpoint_url=endpoint_url,
        )
    except (ValueError, OSError) as e:
        raise FixError(str(e)) from None
