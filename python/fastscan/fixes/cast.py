"""Which float dtypes fixes cast between; the conversion itself is the core's (`_core.cast`)."""

from __future__ import annotations

from fastscan import _core

# Float dtypes fixes cast from (F64 always comes down to F32; the targets are F32, F16 and BF16).
FLOATS = ("F64", "F32", "F16", "BF16")


def cast_bytes(raw, src: str, dst: str) -> bytes:
    """Bytes of `raw` (elements of float dtype `src`) converted to float dtype `dst`, round to nearest even.

    F64 to BF16 goes through F32, as torch does.
    """
    return _core.cast(raw if isinstance(raw, bytes) else bytes(raw), src, dst)
