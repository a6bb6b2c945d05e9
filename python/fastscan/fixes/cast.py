"""Casting raw tensor bytes between float dtypes with numpy alone (BF16 by bit manipulation)."""

from __future__ import annotations

import numpy as np

# Float dtypes fixes cast between; the numpy dtype is None for BF16 (numpy has none).
FLOATS = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": None}
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}


def f32_to_bf16(f32: np.ndarray) -> np.ndarray:
    """BF16 bits (uint16) of float32 values, rounded to nearest even; NaN stays NaN, overflow gives ±Inf."""
    u = np.ascontiguousarray(f32, dtype="<f4").view("<u4")
    rounded = ((u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)).astype(
        "<u2"
    )
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    if nan.any():
        rounded[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype("<u2")
    return rounded


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """float32 values of BF16 bits (exact)."""
    return (bits.astype("<u4") << np.uint32(16)).view("<f4")


def decode(raw, dtype: str) -> np.ndarray:
    """numpy array of the float values held in raw little-endian bytes of `dtype`."""
    if dtype == "BF16":
        return bf16_to_f32(np.frombuffer(raw, dtype="<u2"))
    return np.frombuffer(raw, dtype=FLOATS[dtype])


def cast_bytes(raw, src: str, dst: str) -> bytes:
    """Bytes of `raw` (elements of float dtype `src`) converted to float dtype `dst`, round to nearest even.

    F64 to BF16 goes through F32, as torch does.
    """
    values = decode(raw, src)
    if dst == "BF16":
        return f32_to_bf16(values.astype("<f4", copy=False)).tobytes()
    with np.errstate(over="ignore"):
        return values.astype(FLOATS[dst]).tobytes()
