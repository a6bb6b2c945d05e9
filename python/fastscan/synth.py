"""Writing safetensors files from the real tensor layouts (sparse, full-size headers).

Used by `fastscan demo` and by the tests. A layout is `{"tensors": {name: {"dtype", "shape"}}}` as in
`shared/data/layouts/`; data not given explicitly is left as a sparse hole (zeros cost no disk).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

from fastscan import _core

# Dtype facts come from the core (dtype.rs); fixtures may also name dtypes the core does not know.
DTYPE_BITS: dict[str, int] = dict(_core.DTYPE_BITS)
# Order the reference writer lays data out in: larger alignment first (its dtype enum order, reversed).
_WRITER_RANK = {d: i for i, d in enumerate(_core.WRITER_ORDER)}


def layouts_dir() -> Path:
    """The directory holding the real layouts: $FASTSCAN_LAYOUTS, else `shared/data/layouts` found upward."""
    env = os.environ.get("FASTSCAN_LAYOUTS")
    if env:
        return Path(env)
    starts = [Path.cwd(), Path(__file__).resolve().parent]
    for start in starts:
        for d in [start, *start.parents]:
            cand = d / "shared" / "data" / "layouts"
            if cand.is_dir():
                return cand
    raise FileNotFoundError(
        "real layouts not found: set FASTSCAN_LAYOUTS to the shared/data/layouts directory"
    )


def load_layout(name: str) -> dict:
    """Loads a layout by name (`sd15`, `sdxl`, ...) or path."""
    p = Path(name)
    if not p.suffix:
        p = layouts_dir() / f"{name}.json"
    return json.loads(p.read_text())


def nbytes(dtype: str, shape: list[int]) -> int:
    """Bytes a tensor of this dtype and shape occupies."""
    n = 1
    for d in shape:
        n *= d
    return n * DTYPE_BITS[dtype] // 8


def position_ids_bytes(dtype: str, count: int = 77, values: list[float] | None = None) -> bytes:
    """Bytes of a `position_ids` tensor holding `values` (default 0..count-1) in `dtype`."""
    import numpy as np

    vals = np.arange(count, dtype=np.float64) if values is None else np.asarray(values, dtype=np.float64)
    if dtype == "BF16":
        f32 = vals.astype("<f4").view("<u4")
        return (f32 >> 16).astype("<u2").tobytes()
    np_dtype = {"I64": "<i8", "I32": "<i4", "F16": "<f2", "F32": "<f4", "F64": "<f8"}[dtype]
    return vals.astype(np_dtype).tobytes()


def header_for(
    tensors: Mapping[str, Mapping], metadata: Mapping[str, str] | None = None
) -> tuple[bytes, dict]:
    """Builds a fixture header as the reference writer does: (padded header bytes, name -> (begin, end)).

    Unlike the core's writer (`_core.safetensors_header`, what fixes write with), a fixture may give an
    explicit `nbytes` or a dtype no reader knows, to build broken files.
    """
    order = sorted(tensors, key=lambda n: (-_WRITER_RANK.get(tensors[n]["dtype"], 0), n))
    offsets, entries, pos = {}, {}, 0
    if metadata is not None:
        entries["__metadata__"] = dict(metadata)
    for name in order:
        t = tensors[name]
        size = t.get("nbytes", nbytes(t["dtype"], t["shape"]))
        offsets[name] = (pos, pos + size)
        entries[name] = {"dtype": t["dtype"], "shape": list(t["shape"]), "data_offsets": [pos, pos + size]}
        pos += size
    raw = json.dumps(entries, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return raw, offsets


def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, Mapping],
    *,
    metadata: Mapping[str, str] | None = None,
    data: Mapping[str, bytes] | None = None,
    fill_position_ids: bool = True,
    trailing: bytes = b"",
) -> Path:
    """Writes a (sparse) safetensors file; `data` gives explicit bytes per tensor, the rest is zeros.

    `position_ids` tensors get their correct values 0..n-1 in their dtype unless `data` says otherwise.
    """
    path = Path(path)
    data = dict(data or {})
    if fill_position_ids:
        for name, t in tensors.items():
            if name.endswith("position_ids") and name not in data:
                data[name] = position_ids_bytes(t["dtype"], count=t["shape"][-1])
    header, offsets = header_for(tensors, metadata)
    end = 8 + len(header) + (max((e for _, e in offsets.values()), default=0))
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for name, blob in data.items():
            b, e = offsets[name]
            if len(blob) != e - b:
                raise ValueError(f"{name}: {len(blob)} bytes given, layout needs {e - b}")
            f.seek(8 + len(header) + b)
            f.write(blob)
        f.truncate(end)
        if trailing:
            f.seek(end)
            f.write(trailing)
    return path


def write_layout(path: str | os.PathLike, layout: str | Mapping, **kw) -> Path:
    """Writes the named (or given) layout as a sparse safetensors file."""
    lay = load_layout(layout) if isinstance(layout, str) else layout
    return write_safetensors(path, lay["tensors"], **kw)


# 1.0 in each float dtype: a first element that makes a sparse (zero) tensor non-constant.
_ONE = {"F16": b"\x00\x3c", "BF16": b"\x80\x3f", "F32": b"\x00\x00\x80\x3f", "F64": b"\x00" * 6 + b"\xf0\x3f"}


def mark_first_elements(
    path: str | os.PathLike,
    tensors: Mapping[str, Mapping],
    *,
    metadata: Mapping[str, str] | None = None,
    skip: tuple[str, ...] = (),
) -> int:
    """Sets the first element of each float tensor of a file written from `tensors` to 1.0 (in place).

    A sparse fixture's tensors are all zeros, which `values.constant` reports; one marked element per
    tensor (a page of disk each at most) makes them ordinary. Tensors whose name starts with one of
    `skip` stay all zero. Returns how many tensors were marked.
    """
    header, offsets = header_for(tensors, metadata)
    marked = 0
    with open(path, "r+b") as f:
        for name, (b, e) in offsets.items():
            one = _ONE.get(tensors[name]["dtype"])
            if one is None or e - b < len(one) or name.startswith(skip):
                continue
            f.seek(8 + len(header) + b)
            f.write(one)
            marked += 1
    return marked


# SD 1.5 as a diffusers folder (runwayml/stable-diffusion-v1-5, fp16): subfolder -> (layout, file stem).
DIFFUSERS_SD15 = {
    "unet": ("diffusers-sd15-unet", "diffusion_pytorch_model"),
    "vae": ("diffusers-sd15-vae", "diffusion_pytorch_model"),
    "text_encoder": ("diffusers-sd15-text-encoder", "model"),
}
_SD15_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.6.0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def write_diffusers(
    path: str | os.PathLike,
    *,
    variant: str | None = "fp16",
    unet_shards: int = 1,
    load: Callable[[str], Mapping[str, Mapping]] | None = None,
) -> Path:
    """Writes an SD 1.5 diffusers folder from the real diffusers layouts (sparse weights, first elements
    marked so no tensor is constant, real file names):
    `model_index.json`, `unet/`, `vae/`, `text_encoder/` weights, `tokenizer/` and `scheduler/` configs.
    With `unet_shards` > 1 the UNet is split as diffusers shards it, with its `*.safetensors.index.json`."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps(_SD15_INDEX, indent=2))
    for sub, (layout, stem) in DIFFUSERS_SD15.items():
        (root / sub).mkdir(exist_ok=True)
        (root / sub / "config.json").write_text("{}")
        name = f"{stem}.{variant}" if variant else stem
        tensors = load(layout) if load else load_layout(layout)["tensors"]
        if sub != "unet" or unet_shards <= 1:
            mark_first_elements(write_safetensors(root / sub / f"{name}.safetensors", tensors), tensors)
            continue
        keys = sorted(tensors)
        per = -(-len(keys) // unet_shards)
        weight_map, total = {}, 0
        for i in range(unet_shards):
            part = {k: tensors[k] for k in keys[i * per : (i + 1) * per]}
            shard = f"{name}-{i + 1:05d}-of-{unet_shards:05d}.safetensors"
            mark_first_elements(write_safetensors(root / sub / shard, part), part)
            weight_map.update(dict.fromkeys(part, shard))
            total += sum(nbytes(t["dtype"], t["shape"]) for t in part.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (root / sub / f"{name}.safetensors.index.json").write_text(json.dumps(index, indent=2))
    for sub, cfg in (("tokenizer", "vocab.json"), ("scheduler", "scheduler_config.json")):
        (root / sub).mkdir(exist_ok=True)
        (root / sub / cfg).write_text("{}")
    return root


def evict(path: str | os.PathLike) -> None:
    """Writes the file's pages back and drops them from the page cache (a cold start for benchmarks)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
