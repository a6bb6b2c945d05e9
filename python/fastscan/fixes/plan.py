"""What a fix changes: the output tensors (name, dtype, shape, where their bytes come from, how they change).

Planning reads only tensor tables (and the few bytes of `position_ids`); writing is writer.py's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastscan import _core
from fastscan.fixes.errors import FixError
from fastscan.fixes.source import Source
from fastscan.model import Format, Kind

DTYPE_OPTIONS = {"fp16": "F16", "bf16": "BF16", "fp32": "F32"}
PRUNE_OPTIONS = ("ema", "junk", "all")
TEXT_ENCODERS = ("clip_l", "clip_g", "open_clip_h", "t5xxl")
# the kind an extracted component's file must be identified as (the core checks it after writing)
COMPONENT_KIND = {
    "vae": Kind.VAE.value,
    "unet": Kind.UNET.value,
    **dict.fromkeys(TEXT_ENCODERS, Kind.TEXT_ENCODER.value),
}
# The metadata key under which every fix records what it did: a JSON list, one entry per fix applied.
FIX_KEY = "fastscan.fix"


@dataclass
class OutTensor:
    """One output tensor: its name, dtype and shape, the source row it comes from, and the operation."""

    name: str
    dtype: str
    shape: list[int]
    src: int
    entry: dict
    op: str = "copy"  # copy | cast | arange


@dataclass
class Plan:
    """A whole output file: tensors, metadata, what was done (for the user) and what the re-scan must show."""

    tensors: list[OutTensor]
    metadata: dict[str, str]
    actions: list[str]
    gone: set[str] = field(default_factory=set)  # checks that must no longer fire on the output
    kind: str | None = None  # kind the output must have, when the fix decides it
    # the core fills the metadata's source hashes (convert) while it reads the first source
    source_hashes: bool = False

    def changes_anything(self, source: Source) -> bool:
        """True when the output would differ from the input in tensors, names or values."""
        if any(t.op != "copy" for t in self.tensors) or source.unaccounted():
            return True
        return [t.name for t in self.tensors] != [t["name"] for t in source.tensors] or any(
            t.name != t.entry["name"] for t in self.tensors
        )

    def core_tensors(self) -> list[tuple]:
        """The tensors as the core's executor takes them (`_core.write_fix`)."""
        out = []
        for o in self.tensors:
            e = o.entry
            src = (o.src, e["name"], e["dtype"], e["shape"], e["start"], e["len"], e.get("strides"))
            out.append((o.name, o.dtype, o.shape, o.op, None if o.op == "arange" else src))
        return out

    def output_size(self) -> int:
        """Bytes of the file this plan writes."""
        try:
            return _core.fix_output_size(
                self.core_tensors(), list(self.metadata.items()), source_hashes=self.source_hashes
            )
        except ValueError as e:
            raise FixError(f"cannot write the output: {e}") from None


def _rewrites_position_ids(source: Source) -> set[str]:
    """Names of the position_ids the core's `clip.position-ids` check flags (what `fix --clip` rewrites)."""
    return {f["details"]["tensor"] for f in source.table["findings"] if f["check"] == "clip.position-ids"}


def _metadata(source: Source) -> dict[str, str]:
    return {k: v if isinstance(v, str) else str(v) for k, v in (source.table.get("metadata") or {}).items()}


def record(plan: Plan, command: str, source: Source) -> Plan:
    """Appends what `command` did to the plan's `fastscan.fix` metadata (kept from earlier fixes) and
    notes the data hashes the core recomputes."""
    import json

    try:
        done = json.loads(plan.metadata.get(FIX_KEY, "[]"))
    except ValueError:
        done = []
    if not isinstance(done, list):
        done = [done]
    done.append({"command": command, "source": source.path.name, "actions": list(plan.actions)})
    plan.metadata[FIX_KEY] = json.dumps(done, separators=(",", ":"), ensure_ascii=False)
    for key in _core.DATA_HASH_KEYS:
        if key in plan.metadata:
            plan.actions.append(f"recomputed metadata {key} from the data written")
    return plan


def _fmt_bytes(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def recommend(source: Source) -> dict:
    """The fix options the core's findings call for: {clip, prune, dtype} (dtype None: F64 comes down)."""
    clip = source.has_finding("clip.position-ids")
    ema = source.has_finding("junk.ema")
    junk = source.has_finding("junk.unknown-keys")
    prune = "all" if ema and junk else "ema" if ema else "junk" if junk else None
    return {"clip": clip, "prune": prune, "dtype": None}


def plan_fix(source: Source, clip: bool = False, prune: str | None = None, dtype: str | None = None) -> Plan:
    """Plans `fix`: reset position_ids, drop EMA/junk, cast floats (F64 always comes down to F32).

    The input's metadata is kept; `record` adds what was done once the command knows it writes.
    """
    if prune is not None and prune not in PRUNE_OPTIONS:
        raise FixError(f"--prune must be one of {', '.join(PRUNE_OPTIONS)}, not {prune!r}")
    if dtype is not None and dtype not in DTYPE_OPTIONS:
        raise FixError(f"--dtype must be one of {', '.join(DTYPE_OPTIONS)}, not {dtype!r}")
    target = DTYPE_OPTIONS.get(dtype) if dtype else None
    drop_ema = prune in ("ema", "all")
    drop_junk = prune in ("junk", "all")
    out: list[OutTensor] = []
    actions: list[str] = []
    gone: set[str] = set()
    dropped_ema = dropped_junk = 0
    dropped_ema_bytes = dropped_junk_bytes = 0
    casts: dict[tuple[str, str], int] = {}
    clip_done: list[str] = []
    rewrite = _rewrites_position_ids(source) if clip else set()
    for t in source.tensors:
        if drop_ema and t["prune"] == "ema":
            dropped_ema += 1
            dropped_ema_bytes += t["len"]
            continue
        if drop_junk and t["prune"] == "junk":
            dropped_junk += 1
            dropped_junk_bytes += t["len"]
            continue
        o = OutTensor(t["name"], t["dtype"], list(t["shape"]), 0, t)
        if t["position_ids"]:
            if t["name"] in rewrite:
                o.op, o.dtype = "arange", "I64"
                clip_done.append(f"{t['name']} ({t['dtype']})")
        elif t["dtype"] in _core.CAST_FROM:
            want = target or ("F32" if t["dtype"] == "F64" else t["dtype"])
            if want != t["dtype"]:
                o.op, o.dtype = "cast", want
                casts[(t["dtype"], want)] = casts.get((t["dtype"], want), 0) + 1
        out.append(o)
    if clip:
        gone.add("clip.position-ids")
        if clip_done:
            actions.append("reset position_ids to int64 0..n-1: " + ", ".join(clip_done))
        else:
            actions.append("position_ids already int64 0..n-1 (or absent): nothing to reset")
    if drop_ema:
        gone.add("junk.ema")
        actions.append(f"dropped {dropped_ema} EMA tensor(s), {_fmt_bytes(dropped_ema_bytes)}")
    if drop_junk:
        gone.add("junk.unknown-keys")
        actions.append(f"dropped {dropped_junk} unknown (junk) tensor(s), {_fmt_bytes(dropped_junk_bytes)}")
    for (a, b), n in sorted(casts.items()):
        actions.append(f"cast {n} tensor(s) {a} -> {b}")
    gone.add("dtype.float64")
    extra = source.unaccounted()
    if extra > 0:
        gone.add("file.unaccounted-bytes")
        actions.append(f"dropped {extra:,} unaccounted byte(s) that belonged to no tensor")
    return Plan(out, _metadata(source), actions, gone)


def plan_convert(source: Source) -> Plan:
    """Plans `convert`: every tensor of a pickle checkpoint as is; the metadata the core gives a converted
    checkpoint (its scalar extras, its name, its hashes, which the core fills while it reads the file)."""
    if source.table["format"] == Format.SAFETENSORS:
        raise FixError(
            f"{source.path}: already safetensors; convert reads pickle checkpoints (.ckpt/.pt/.bin)"
        )
    if not source.tensors:
        raise FixError(f"{source.path}: no tensors found in this {source.table['format']} file")
    seen: set[str] = set()
    out = []
    for t in source.tensors:
        if t["name"] in seen:
            raise FixError(f"{source.path}: tensor name {t['name']} appears twice")
        seen.add(t["name"])
        out.append(OutTensor(t["name"], t["dtype"], list(t["shape"]), 0, t))
    meta = dict(source.table["convert_metadata"])
    actions = [f"converted {len(out)} tensor(s) from {source.table['format']} without executing its pickle"]
    return Plan(out, meta, actions, {"format.legacy-pickle"}, source_hashes=True)


def pick_component(source: Source, component: str) -> str:
    """The component name inside the file for `vae|unet|text-encoder` (or an exact name like clip_g)."""
    if source.table["kind"] in (Kind.LORA, Kind.EMBEDDING):
        raise FixError(f"{source.path}: is a {source.table['kind']} file; extract reads full models")
    present = sorted({t["component"] for t in source.tensors if t["role"] == "component"})
    if component == "text-encoder":
        tes = [c for c in present if c in TEXT_ENCODERS]
        if len(tes) == 1:
            return tes[0]
        if not tes:
            raise FixError(f"{source.path}: has no text encoder (components: {', '.join(present) or 'none'})")
        raise FixError(
            f"{source.path}: has {len(tes)} text encoders; pick one with --component {'|'.join(tes)}"
        )
    if component not in present:
        raise FixError(f"{source.path}: has no {component} (components: {', '.join(present) or 'none'})")
    return component


def component_tensors(source: Source, comp: str) -> list[tuple[str, dict]]:
    """(canonical name, row) of a component's tensors and of the buffers (position_ids) the core places
    under it."""
    return [(t["canonical"], t) for t in source.tensors if t["component"] == comp]


def plan_extract(source: Source, component: str) -> Plan:
    """Plans `extract`: one component alone, under its canonical names (prefix stripped)."""
    comp = pick_component(source, component)
    rows = component_tensors(source, comp)
    out = [OutTensor(name, t["dtype"], list(t["shape"]), 0, t) for name, t in rows]
    meta = {**_metadata(source), "fastscan.extracted_from": source.path.name, "fastscan.component": comp}
    actions = [f"extracted {comp}: {len(out)} tensor(s), {_fmt_bytes(sum(t['len'] for _, t in rows))}"]
    return Plan(out, meta, actions, set(), COMPONENT_KIND.get(comp))


def plan_bake_vae(ckpt: Source, vae: Source, dtype: str | None = None) -> Plan:
    """Plans `bake-vae`: the checkpoint with its VAE tensors from a standalone VAE (shapes must match);
    with `dtype`, every float tensor of the output is cast to it (as `fix --dtype`)."""
    if dtype is not None and dtype not in DTYPE_OPTIONS:
        raise FixError(f"--dtype must be one of {', '.join(DTYPE_OPTIONS)}, not {dtype!r}")
    target = DTYPE_OPTIONS.get(dtype) if dtype else None
    if ckpt.table["kind"] != Kind.CHECKPOINT:
        raise FixError(f"{ckpt.path}: is a {ckpt.table['kind']} file, not a checkpoint")
    theirs = {t["canonical"]: t for t in vae.tensors if t["role"] == "component" and t["component"] == "vae"}
    if not theirs:
        raise FixError(f"{vae.path}: holds no VAE tensors (kind {vae.table['kind']})")
    ours = [t for t in ckpt.tensors if t["role"] == "component" and t["component"] == "vae"]
    if not ours:
        raise FixError(f"{ckpt.path}: has no VAE to replace")
    used = set()
    out = []
    for t in ckpt.tensors:
        if not (t["role"] == "component" and t["component"] == "vae"):
            out.append(OutTensor(t["name"], t["dtype"], list(t["shape"]), 0, t))
            continue
        v = theirs.get(t["canonical"])
        if v is None:
            raise FixError(f"{vae.path}: lacks VAE tensor {t['canonical']} (the checkpoint has {t['name']})")
        if list(v["shape"]) != list(t["shape"]):
            raise FixError(
                f"{vae.path}: VAE tensor {t['canonical']} has shape {v['shape']}, "
                f"the checkpoint's {t['name']} has {t['shape']}: not the same VAE architecture"
            )
        used.add(t["canonical"])
        out.append(OutTensor(t["name"], v["dtype"], list(v["shape"]), 1, v))
    casts: dict[tuple[str, str], int] = {}
    for o in out if target else []:
        if o.dtype in _core.CAST_FROM and o.dtype != target and not o.entry["position_ids"]:
            casts[(o.dtype, target)] = casts.get((o.dtype, target), 0) + 1
            o.op, o.dtype = "cast", target
    extra = sorted(set(theirs) - used)
    if extra:
        raise FixError(
            f"{vae.path}: has {len(extra)} VAE tensor(s) the checkpoint's VAE lacks, e.g. {extra[0]}: "
            "not the same VAE architecture"
        )
    meta = _metadata(ckpt)
    meta["fastscan.baked_vae"] = vae.path.name
    dtypes = sorted({theirs[c]["dtype"] for c in used})
    actions = [f"replaced {len(used)} VAE tensor(s) with those of {vae.path.name} ({', '.join(dtypes)})"]
    actions += [f"cast {n} tensor(s) {a} -> {b}" for (a, b), n in sorted(casts.items())]
    return Plan(out, meta, actions, set(), ckpt.table["kind"])
