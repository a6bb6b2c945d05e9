"""Fix throughput against `cp`, and the fix's peak memory (SPEC §9: a pure prune at least half of cp).

Writes a real layout (default: sd15-full-ema, the official v1-5-pruned.safetensors training checkpoint,
with its F32 tensors stored as F16 so the file is 3.9 GB instead of 7.7 GB) filled with random bytes
(nothing sparse), then times, with the page cache warm:
  cp SRC DST; cp SRC DST + sync DST (cp does not fsync, the fix does);
  fastscan fix SRC -o OUT --prune ema (streaming copy, fsync, re-scan, per-tensor blake3 both sides, rename).
Each runs in its own child process; peak RSS comes from that child's rusage (os.wait4).
Needs about 3x the file size free in --dir; everything is deleted afterwards.

    python benches/fix_bench.py [--dir DIR] [--layout sd15-full-ema] [--full-size] [--runs 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fastscan import synth

FIX = "import sys; from fastscan.fixes import commands; commands.fix(sys.argv[1], sys.argv[2], prune='ema')"


def fill_random(path: Path, seed: int = 0) -> None:
    """Overwrites every byte after the header with random bytes (the file stops being sparse)."""
    rng = np.random.default_rng(seed)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        pos = 8 + n
        while pos < size:
            k = min(64 << 20, size - pos)
            f.seek(pos)
            f.write(rng.bytes(k))
            pos += k
        f.flush()
        os.fsync(f.fileno())


def make(path: str, layout: str, full_size: bool) -> None:
    """Writes the bench input: the layout (F32 stored as F16 unless full_size) filled with random bytes."""
    lay = copy.deepcopy(synth.load_layout(layout))
    if not full_size:
        for t in lay["tensors"].values():
            if t["dtype"] == "F32":
                t["dtype"] = "F16"
    synth.write_layout(path, lay)
    fill_random(Path(path))


def timed(argv: list[str]) -> tuple[float, int]:
    """Runs argv in a child; returns (wall seconds, child's peak RSS in bytes)."""
    t = time.perf_counter()
    p = subprocess.Popen(argv)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"{argv[0]} failed with status {status}")
    return dt, ru.ru_maxrss * 1024


def warm(path: Path) -> None:
    """Reads a file once so every run starts with it in the page cache."""
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(64 << 20)
        while f.readinto(buf):
            pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--dir", default=None, help="folder for the files (default: a temp dir under /work or /tmp)"
    )
    ap.add_argument("--layout", default="sd15-full-ema")
    ap.add_argument(
        "--full-size", action="store_true", help="keep the layout's dtypes (7.7 GB for sd15-full-ema)"
    )
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()

    lay = copy.deepcopy(synth.load_layout(args.layout))
    if not args.full_size:
        for t in lay["tensors"].values():
            if t["dtype"] == "F32":
                t["dtype"] = "F16"
    need = sum(synth.nbytes(t["dtype"], t["shape"]) for t in lay["tensors"].values())
    root = Path(args.dir) if args.dir else Path("/work" if os.path.isdir("/work") else tempfile.gettempdir())
    free = shutil.disk_usage(root).free
    if free < 3.2 * need:
        raise SystemExit(f"{root}: needs {3.2 * need / 1e9:.1f} GB free, has {free / 1e9:.1f} GB")
    work = Path(tempfile.mkdtemp(prefix="fastscan-fix-bench-", dir=root))
    try:
        src = work / "model.safetensors"
        # made in a child so this process stays small: a child's peak RSS counts its parent's pages at fork
        make = "import sys, fix_bench as b; b.make(sys.argv[1], sys.argv[2], sys.argv[3] == '1')"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
        }
        subprocess.run(
            [sys.executable, "-c", make, str(src), args.layout, "1" if args.full_size else "0"],
            check=True,
            env=env,
        )
        size = src.stat().st_size
        ema = sum(
            synth.nbytes(t["dtype"], t["shape"])
            for n, t in lay["tensors"].items()
            if n.startswith("model_ema.")
        )
        print(
            f"input: {args.layout}{'' if args.full_size else ' (F32 stored as F16)'}, {size / 1e9:.2f} GB, "
            f"{len(lay['tensors'])} tensors; prune drops {ema / 1e9:.2f} GB of EMA"
        )
        cp_t, cps_t, fix_t, fix_rss = [], [], [], 0
        for _ in range(args.runs):
            warm(src)
            dt, _ = timed(["cp", str(src), str(work / "copy")])
            cp_t.append(dt)
            os.unlink(work / "copy")
            warm(src)
            dt, _ = timed(["sh", "-c", f"cp '{src}' '{work / 'copy'}' && sync '{work / 'copy'}'"])
            cps_t.append(dt)
            os.unlink(work / "copy")
            warm(src)
            dt, rss = timed([sys.executable, "-c", FIX, str(src), str(work / "out.safetensors")])
            fix_t.append(dt)
            fix_rss = max(fix_rss, rss)
            os.unlink(work / "out.safetensors")
        cp_b, cps_b, fix_b = min(cp_t), min(cps_t), min(fix_t)
        largest = max(synth.nbytes(t["dtype"], t["shape"]) for t in lay["tensors"].values())
        print(f"cp:            {cp_b:6.2f} s  {size / cp_b / 1e9:5.2f} GB/s")
        print(f"cp + sync:     {cps_b:6.2f} s  {size / cps_b / 1e9:5.2f} GB/s")
        print(f"fix --prune:   {fix_b:6.2f} s  {size / fix_b / 1e9:5.2f} GB/s (input bytes / wall time)")
        print(
            f"ratio fix/cp: {cp_b / fix_b:.2f}x   fix/(cp+sync): {cps_b / fix_b:.2f}x   (SPEC: >= 0.5x of cp)"
        )
        print(
            f"fix peak RSS: {fix_rss / 1e6:.0f} MB "
            f"(largest tensor {largest / 1e6:.0f} MB, file {size / 1e9:.2f} GB)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
