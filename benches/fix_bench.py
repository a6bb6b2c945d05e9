"""Every fix's throughput against `cp` + `sync` of its output, and its peak memory (goal: >= 0.8x, < 150 MB).

Writes a real layout (default: sd15-full-ema, the official v1-5-pruned.safetensors training checkpoint,
with its F32 tensors stored as F16 so the file is 3.9 GB instead of 7.7 GB) filled with random bytes
(nothing sparse), then, with the page cache warm, times each fix (prune ema, cast to bf16, clip, convert
of a torch.save copy, extract unet, bake-vae of the extracted VAE) and `cp OUT COPY && sync COPY` of the
output that fix wrote: the fix writes, fsyncs, re-reads and verifies its output, so `cp` + `sync` of the
same bytes is the like-for-like floor. Each runs in its own child process; peak RSS comes from that
child's rusage (os.wait4). Times are medians of --runs (3); the load average is printed before and after
(measure only when it is below 3: the figures are meaningless on a busy machine). Needs about 4x the
file size free in --dir; everything is deleted afterwards.

    python benches/fix_bench.py [--dir DIR] [--layout sd15-full-ema] [--full-size] [--runs 3]
                                [--fixes prune,cast,clip,convert,extract,bake-vae]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fastscan import synth

# Each fix as a child's script: argv[1] the input, argv[2] the output, argv[3] a second input (bake-vae).
FIXES = {
    "prune": "commands.fix(sys.argv[1], sys.argv[2], prune='ema')",
    "cast": "commands.fix(sys.argv[1], sys.argv[2], dtype='bf16')",
    "clip": "commands.fix(sys.argv[1], sys.argv[2], clip=True)",
    "convert": "commands.convert(sys.argv[1], sys.argv[2])",
    "extract": "commands.extract(sys.argv[1], sys.argv[3] or 'unet', sys.argv[2])",
    "bake-vae": "commands.bake_vae(sys.argv[1], sys.argv[3], sys.argv[2])",
}


def fix_argv(name: str, src: Path, out: Path, other: Path | str | None) -> list[str]:
    """A child running fix `name`; `other` is bake-vae's VAE, or the component extract writes."""
    code = f"import sys; from fastscan.fixes import commands; {FIXES[name]}"
    return [sys.executable, "-c", code, str(src), str(out), str(other or "")]


def make_pickle(src: str, dst: str) -> None:
    """torch.save of the safetensors file's tensors (the convert input; needs torch)."""
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(src), dst)


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
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fixes", default=",".join(FIXES), help="comma-separated subset of " + ",".join(FIXES))
    args = ap.parse_args()

    lay = copy.deepcopy(synth.load_layout(args.layout))
    if not args.full_size:
        for t in lay["tensors"].values():
            if t["dtype"] == "F32":
                t["dtype"] = "F16"
    need = sum(synth.nbytes(t["dtype"], t["shape"]) for t in lay["tensors"].values())
    root = Path(args.dir) if args.dir else Path("/work" if os.path.isdir("/work") else tempfile.gettempdir())
    free = shutil.disk_usage(root).free
    if free < 4.2 * need:
        raise SystemExit(f"{root}: needs {4.2 * need / 1e9:.1f} GB free, has {free / 1e9:.1f} GB")
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
        fixes = [f.strip() for f in args.fixes.split(",") if f.strip()]
        inputs = {name: src for name in fixes}
        vae = work / "vae.safetensors"
        if "bake-vae" in fixes:
            subprocess.run(fix_argv("extract", src, vae, "vae"), check=True)
        if "convert" in fixes:
            inputs["convert"] = work / "model.ckpt"
            code = "import sys, fix_bench as b; b.make_pickle(sys.argv[1], sys.argv[2])"
            argv = [sys.executable, "-c", code, str(src), str(inputs["convert"])]
            subprocess.run(argv, check=True, env=env)
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        print(f"{'fix':10} {'out GB':>7} {'fix s':>7} {'cp+sync s':>9} {'ratio':>6} {'peak RSS':>9}")
        for name in fixes:
            fix_t, cps_t, fix_rss, out_size = [], [], 0, 0
            out = work / "out.safetensors"
            for _ in range(args.runs):
                warm(inputs[name])
                if name == "bake-vae":
                    warm(vae)
                dt, rss = timed(fix_argv(name, inputs[name], out, vae if name == "bake-vae" else None))
                fix_t.append(dt)
                fix_rss = max(fix_rss, rss)
                out_size = out.stat().st_size
                warm(out)
                dt, _ = timed(["sh", "-c", f"cp '{out}' '{work / 'copy'}' && sync '{work / 'copy'}'"])
                cps_t.append(dt)
                os.unlink(work / "copy")
                os.unlink(out)
            f_b, c_b = statistics.median(fix_t), statistics.median(cps_t)
            row = f"{name:10} {out_size / 1e9:7.2f} {f_b:7.2f} {c_b:9.2f} {c_b / f_b:5.2f}x"
            print(f"{row} {fix_rss / 1e6:6.0f} MB", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
