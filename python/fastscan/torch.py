"""In memory, for tools that already hold the weights (a web UI extension, a ComfyUI node).

    import fastscan.torch as fst
    report = fst.scan_state_dict(sd)      # a fastscan.FileReport: kind, arch, findings, component hashes
    fixed, changes = fst.fix_state_dict(sd, clip=True, prune="ema", dtype="fp16")

The core reads each contiguous CPU tensor where it lies (its address and size; nothing is copied) and
runs the same classification, checks, component hashes and value checks as on a file. Whole-file hashes
do not apply: there is no file. Tensors on another device or not contiguous are copied to contiguous
CPU memory first (that copy is the only one). PyTorch is imported on first use, with a clear message
when it is not installed (`pip install 'fastscan[torch]'`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastscan import _core
from fastscan.model import FileReport

_DTYPES: dict[Any, str] = {}


def _torch() -> Any:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "fastscan.torch needs PyTorch, which is not installed: pip install 'fastscan[torch]'"
        ) from e
    if not _DTYPES:
        names = {
            "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
            "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
            "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
            "uint16": "U16", "uint32": "U32", "uint64": "U64",
        }  # fmt: skip
        _DTYPES.update({getattr(torch, k): v for k, v in names.items() if hasattr(torch, k)})
    return torch


def _raw(sd: Mapping[str, Any]) -> tuple[list[tuple], list[Any]]:
    """(name, dtype, shape, address, nbytes) of every tensor of `sd`, and the tensors those addresses
    belong to (the caller keeps them referenced while the core reads them)."""
    torch = _torch()
    raw, keep = [], []
    for name, t in sd.items():
        if not isinstance(t, torch.Tensor):
            continue  # a checkpoint's bookkeeping (epoch, step): no weights
        if t.layout != torch.strided:
            raise ValueError(f"tensor {name}: {t.layout} tensors are not supported; give dense tensors")
        dtype = _DTYPES.get(t.dtype)
        if dtype is None:
            raise ValueError(f"tensor {name}: dtype {t.dtype} has no safetensors equivalent")
        t = t.detach()
        if t.device.type != "cpu" or not t.is_contiguous():
            t = t.to("cpu").contiguous()
        keep.append(t)
        raw.append((name, dtype, list(t.shape), t.data_ptr(), t.numel() * t.element_size()))
    return raw, keep


def scan_state_dict(sd: Mapping[str, Any]) -> FileReport:
    """The report of a loaded state dict: kind, arch, every check, component hashes, NaN/Inf and
    constant-tensor checks (`format` is `state-dict`; no path, size of the tensors, no file hashes)."""
    raw, keep = _raw(sd)
    d = _core.scan_memory(raw)
    del keep
    return FileReport.from_dict(d)


class _MemorySource:
    """What fix planning reads of an input (fastscan.fixes.plan), for tensors held in memory."""

    def __init__(self, table: dict) -> None:
        self.table = table
        self.tensors = table["tensors"]
        self.path = "<state dict>"

    def unaccounted(self) -> int:
        return 0

    def has_finding(self, check: str) -> bool:
        return any(f["check"] == check for f in self.table["findings"])


def fix_state_dict(
    sd: Mapping[str, Any], clip: bool = True, prune: str | None = None, dtype: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The fixes of `fastscan fix`, in memory: (the fixed state dict, what was done).

    `clip` resets the position_ids the core flags to int64 0..n-1; `prune` (`ema`, `junk`, `all`) drops
    what the core classed as EMA or junk; `dtype` (`fp16`, `bf16`, `fp32`) casts floats (float64 always
    comes down to float32). The plan is `fix`'s own, from the core's roles and findings. `sd` is not
    modified; tensors left as they were are the same objects in the result. Non-tensor entries are kept.
    """
    from fastscan.fixes.plan import plan_fix

    torch = _torch()
    raw, keep = _raw(sd)
    table = _core.read_memory(raw)
    del keep
    plan = plan_fix(_MemorySource(table), clip=clip, prune=prune, dtype=dtype)
    to_torch = {v: k for k, v in _DTYPES.items()}
    out: dict[str, Any] = {}
    for o in plan.tensors:
        t = sd[o.entry["name"]]
        if o.op == "arange":
            n = 1
            for d in o.shape:
                n *= d
            t = torch.arange(n, dtype=torch.int64).reshape(o.shape)
        elif o.op == "cast":
            t = t.to(to_torch[o.dtype])
        out[o.name] = t
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            out[k] = v
    return out, list(plan.actions)
