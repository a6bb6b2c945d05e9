"""Checking a written file before it replaces anything: re-scan, same tensors, same bytes, fix took."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fastscan import _core
from fastscan.fixes.errors import FixError
from fastscan.fixes.pipeline import END, Prefetch
from fastscan.fixes.plan import Plan
from fastscan.fixes.source import Source, TensorHasher

SERIOUS = ("critical", "error", "warning")


def scan_checks(path: Path) -> set[str]:
    """Names of the warning-or-worse checks a header-only scan of `path` reports."""
    r = _core.scan_file(str(path), hash="none")
    return {f["check"] for f in r.get("findings", []) if f.get("severity") in SERIOUS}


def tensor_hashes(src: Source, entries: list[dict]) -> Iterator[tuple[dict, str]]:
    """(entry, blake3 of its bytes as stored) for each entry, reading ahead while hashing."""

    def produce(take):
        for e in entries:
            for chunk in src.chunks(e, take=take):
                yield e, chunk
            yield e, END

    h = TensorHasher()
    with contextlib.closing(iter(Prefetch(produce))) as items:
        for e, chunk in items:
            if chunk is END:
                yield e, h.hexdigest()
                h = TensorHasher()
            else:
                h.update(chunk)


def verify(tmp: Path, plan: Plan, written: dict[str, str], before: set[str]) -> None:
    """Raises FixError unless `tmp` holds exactly the planned tensors and bytes, and the fix took.

    `written` holds the blake3 of each tensor's bytes as they were read from the input (or computed, for
    tensors the fix changes); `before` the input's warning-or-worse checks.
    """

    def bad(why: str) -> FixError:
        return FixError(f"verification of the output failed, nothing was written: {why}")

    try:
        out = Source(tmp)
    except FixError as e:
        raise bad(f"re-scan: {e}") from None
    with out:
        if out.table["format"] != "safetensors":
            raise bad(f"output reads as {out.table['format']}")
        want = {o.name: (o.dtype, list(o.shape)) for o in plan.tensors}
        got = {t["name"]: (t["dtype"], list(t["shape"])) for t in out.tensors}
        if got != want:
            diff = sorted(set(got) ^ set(want)) or sorted(n for n in want if got[n] != want[n])
            raise bad(f"tensor table differs from the plan at {diff[0]}")
        if out.unaccounted() != 0:
            raise bad(f"{out.unaccounted()} unaccounted bytes")
        hashes = tensor_hashes(out, [out.by_name[o.name] for o in plan.tensors])
        with contextlib.closing(hashes):  # stops the reader if a tensor differs
            for o, digest in hashes:
                if digest != written[o["name"]]:
                    raise bad(f"tensor {o['name']} does not hold the bytes written")
        for o in plan.tensors:
            e = out.by_name[o.name]
            if o.op == "arange":
                values = np.frombuffer(out.contiguous(e), dtype="<i8").reshape(o.shape)
                if not (values == np.arange(o.shape[-1])).all():
                    raise bad(f"{o.name} is not 0..{o.shape[-1] - 1}")
        meta = out.table.get("metadata") or {}
        if meta != plan.metadata:
            raise bad("metadata differs from the plan")
        if plan.kind is not None and out.table["kind"] != plan.kind:
            raise bad(f"output is a {out.table['kind']} file, expected {plan.kind}")
    after = scan_checks(tmp)
    still = after & plan.gone
    if still:
        raise bad(f"the re-scan still reports {', '.join(sorted(still))}")
    new = after - before
    if new:
        raise bad(f"the re-scan reports new problems: {', '.join(sorted(new))}")
