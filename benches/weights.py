"""Random weights as real checkpoints hold them, for the benchmarks' files.

Finite values, normal with sigma 0.05 and cast to each tensor's dtype: real weights hold no NaN or Inf
(random bytes read as F16 are 3% NaN/Inf, which would make every block of the value checks a block
with findings). Integer tensors get random bytes. Hashing speed does not depend on the values.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from fastscan import synth

_FLOATS = {"F16": np.float16, "F32": np.float32, "F64": np.float64}


def finite(dtype: str, nbytes: int, rng: np.random.Generator) -> bytes:
    """`nbytes` of random finite weights of `dtype` (random bytes for integer dtypes)."""
    if dtype in _FLOATS:
        n = nbytes // np.dtype(_FLOATS[dtype]).itemsize
        return (rng.standard_normal(n, dtype=np.float32) * 0.05).astype(_FLOATS[dtype]).tobytes()
    if dtype == "BF16":
        top = (rng.standard_normal(nbytes // 2, dtype=np.float32) * 0.05).view(np.uint32) >> 16
        return top.astype(np.uint16).tobytes()
    return rng.bytes(nbytes)


def write(path: Path, layout: str, seed: int = 0) -> int:
    """Writes `layout` (shared/data/layouts) as the reference writer lays it out, every tensor holding
    random finite weights; returns the file's size."""
    tensors = synth.load_layout(layout)["tensors"]
    header, offsets = synth.header_for(tensors)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        for name, (a, b) in sorted(offsets.items(), key=lambda kv: kv[1]):
            left, dtype = b - a, tensors[name]["dtype"]
            while left:  # in pieces: a tensor may hold hundreds of MB
                n = min(left, 64 << 20)
                f.write(finite(dtype, n, rng))
                left -= n
    return path.stat().st_size
