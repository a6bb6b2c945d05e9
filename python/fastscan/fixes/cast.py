"""Casting raw tensor bytes between float dtypes with numpy alone (BF16 by bit manipulation, fp8 read by
table: fp8 tensors can be cast up to F16/BF16/F32, never written)."""

from __future__ import annotations

import numpy as np

from fastscan import _core

# Float dtypes fixes cast between; the numpy dtype is None for BF16 and fp8 (numpy has none).
FLOATS = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": None, "F8_E4M3": None, "F8_E5M2": None}


def _e4m3_table() -> np.ndarray:
    """float32 value of each F8_E4M3 byte ('fn': no Inf; S.1111.111 is NaN; bias 7, 3 mantissa bits)."""
    b = np.arange(256)
    exp, man = (b >> 3) & 0xF, (b & 7).astype(np.float64)
    mag = np.where(exp == 0, man / 8 * 2.0**-6, (1 + man / 8) * 2.0 ** (exp - 7))
    vals = np.where(b & 0x80, -mag, mag)
    vals[(b & 0x7F) == 0x7F] = np.nan
    return vals.astype("<f4")


# F8_E5M2 is the top byte of an F16 (same exponent, Inf and NaN).
_FP8 = {
    "F8_E4M3": _e4m3_table(),
    "F8_E5M2": (np.arange(256, dtype="<u2") << np.uint16(8)).view("<f2").astype("<f4"),
}


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
    if dtype in _FP8:
        return _FP8[dtype][np.frombuffer(raw, dtype=np.uint8)]
    return np.frombuffer(raw, dtype=FLOATS[dtype])


def cast_bytes(raw, src: str, dst: str) -> bytes:
    """Bytes of `raw` (elements of float dtype `src`) converted to float dtype `dst`, round to nearest even.

    F64/F32/F16/BF16 are the core's casts (`_core.cast`); fp8 is read up by table here. F64 to BF16
    goes through F32, as torch does.
    """
    if src not in _FP8:
        return _core.cast(raw if isinstance(raw, bytes) else bytes(raw), src, dst)
    values = decode(raw, src)
    if dst == "BF16":
        return f32_to_bf16(values.astype("<f4", copy=False)).tobytes()
    with np.errstate(over="ignore"):
        return values.astype(FLOATS[dst]).tobytes()
