"""Writing a planned file: the core's executor (fastscan_core::fix) does it; this passes the plan across.

The core writes the output once through a temporary file in the target folder, fsyncs it, verifies it
(tensor table, metadata, every tensor's bytes, the checks the fix removes) and renames it; on any failure
nothing is left.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from fastscan import _core
from fastscan.fixes.errors import FixError
from fastscan.fixes.plan import Plan
from fastscan.fixes.source import Source

TMP_SUFFIX = _core.TMP_SUFFIX  # the named fallback's suffix, where O_TMPFILE is not supported
# (stage, done, total): stage "write" then "verify", bytes of tensor data.
Progress = Callable[[str, int, int], None]


def write_verified(
    plan: Plan,
    sources: list[Source],
    out: Path | str,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    endpoint_url: str | None = None,
    mode: int | None = None,
) -> dict:
    """Writes `plan` to `out` through the core's verified executor; returns {size, metadata} as written.

    `out` may be an object's URL (text; `endpoint_url` for an S3-compatible service): the core writes a
    new object, uploaded and read back, and never replaces one, `overwrite` or not. A local output gets
    permission bits `mode` (default: those of the `out` it replaces, else 0o666 less the umask).

    Raises FixError naming the problem (nothing is left behind); an exception raised by `progress`
    (or Ctrl-C) stops the fix and propagates.
    """
    if isinstance(out, str) and _core.is_url(out):
        if overwrite:
            raise FixError(f"{out}: an object is never overwritten (--force applies to local files)")
    else:
        out = Path(out)
        if out.parent.is_dir():
            _core.sweep_temp(str(out.parent))
        if mode is None and overwrite and out.is_file():
            mode = os.stat(out).st_mode & 0o7777
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
            source_hashes=plan.source_hashes,
        )
    except (ValueError, OSError) as e:
        raise FixError(str(e)) from None
