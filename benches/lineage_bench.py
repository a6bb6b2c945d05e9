"""Lineage at full size: cost of the first `lineage` run against a components scan, and of a cached rerun.

Writes a small library of full-size real-layout checkpoints (shared/data/layouts, default sd15: 2.1 GB
each) with seeded random fp16 weights, related like a family: a base, two fine-tunes (base + small
deltas on the UNet and text encoder), and a 0.6/0.4 weighted-sum merge of the fine-tunes computed from
the stored fp16 parents and stored fp16. Then, page cache warm, times (median of `--repeat`):

- `fastscan DIR --hash components --no-cache --json` (the data pass alone),
- `fastscan lineage DIR --no-cache --json` (the same pass with fingerprints, then the lineage maths),
- `fastscan lineage DIR --json` again, served from the cache,

prints medians (of `--repeat`, default 3) with every run, the ratios against the goals (first run ≤ 1.25×
the components scan; cached rerun < 3 s), and the merge recipe found from the full-size fingerprints.
The files are deleted at the end. Needs about 4 × the layout's size of free space in `--dir` (default:
temp dir): 8.5 GB for sd15. About 3 minutes on a quiet 2-core machine with a warm page cache (writing
the files takes most of it); run it on a quiet machine only (`uptime` load below the core count).

    python benches/lineage_bench.py [--layout sd15] [--repeat 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fastscan import synth

CHUNK = 1 << 22  # elements generated at a time, so memory stays bounded


def write_family(d: Path, layout: str) -> dict[str, Path]:
    """base, ft1, ft2 and mix = 0.6·ft1 + 0.4·ft2, every float tensor F16, written tensor by tensor."""
    lay = synth.load_layout(layout)["tensors"]
    tensors = {
        n: {"dtype": "F16" if t["dtype"] in ("F16", "F32", "BF16") else t["dtype"], "shape": t["shape"]}
        for n, t in lay.items()
    }
    header, offsets = synth.header_for(tensors)
    names = {k: d / f"{k}.safetensors" for k in ("base", "ft1", "ft2", "mix")}
    files = {k: open(p, "wb") for k, p in names.items()}  # noqa: SIM115
    try:
        for f in files.values():
            f.write(struct.pack("<Q", len(header)) + header)
        for i, name in enumerate(sorted(offsets, key=lambda n: offsets[n][0])):
            b, e = offsets[name]
            if tensors[name]["dtype"] != "F16":
                for f in files.values():
                    f.seek(8 + len(header) + e)
                continue
            n = (e - b) // 2
            rng = np.random.default_rng(i)
            delta = not name.startswith("first_stage_model.")
            for at in range(0, n, CHUNK):
                m = min(CHUNK, n - at)
                # uniform noise (cheaper to draw than normal; the maths does not care)
                base = (rng.random(m, dtype=np.float32) - 0.5).astype(np.float16)
                scale = np.float32(0.1 if delta else 0.0)
                ft1 = (base + scale * (rng.random(m, dtype=np.float32) - 0.5)).astype(np.float16)
                ft2 = (base + scale * (rng.random(m, dtype=np.float32) - 0.5)).astype(np.float16)
                mix = (0.6 * ft1.astype(np.float32) + 0.4 * ft2.astype(np.float32)).astype(np.float16)
                for k, v in (("base", base), ("ft1", ft1), ("ft2", ft2), ("mix", mix)):
                    files[k].write(v.tobytes())
    finally:
        for f in files.values():
            f.close()
    return names


def timed(cmd: list[str], env: dict[str, str], repeat: int) -> tuple[list[float], str]:
    """Wall times of `repeat` runs of `cmd` and the last run's stdout."""
    times, out = [], ""
    for _ in range(repeat):
        t = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - t)
        if r.returncode not in (0, 1):
            sys.exit(f"{' '.join(cmd)} failed: {r.stderr}")
        out = r.stdout
    return times, out


def show(label: str, times: list[float]) -> float:
    med = statistics.median(times)
    runs = ", ".join(f"{t:.2f}" for t in times)
    print(f"{label:30} {med:7.2f} s   (runs: {runs})")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layout", default="sd15")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="fastscan-lineage-", dir=a.dir))
    try:
        paths = write_family(d, a.layout)
        env = dict(os.environ, FASTSCAN_CACHE=str(d / "cache.sqlite3"))
        fs = [sys.executable, "-m", "fastscan"]
        subprocess.run([*fs, str(d), "--hash", "none", "--json"], env=env, capture_output=True, check=False)
        for p in paths.values():  # warm the page cache
            with open(p, "rb") as f:
                while f.read(64 << 20):
                    pass
        scan, _ = timed([*fs, str(d), "--hash", "components", "--no-cache", "--json"], env, a.repeat)
        first, _ = timed([*fs, "lineage", str(d), "--no-cache", "--json"], env, a.repeat)
        timed([*fs, "lineage", str(d), "--json"], env, 1)  # fill the cache
        cached, out = timed([*fs, "lineage", str(d), "--json"], env, a.repeat)
        doc = json.loads(out)
        mix = next(m for m in doc["models"] if m["path"] == str(paths["mix"]))["merge"]
        weights = {os.path.basename(p["path"]): p["weight"] for p in mix["parents"]} if mix else None
        size = sum(p.stat().st_size for p in paths.values()) / 1e9
        print(f"{len(paths)} x {a.layout} ({size:.1f} GB), page cache warm, median of {a.repeat}")
        s = show("components scan --no-cache", scan)
        f = show("lineage --no-cache", first)
        c = show("lineage, cached rerun", cached)
        print(f"first run / components scan  {f / s:7.2f} x  (goal <= 1.25)")
        print(f"cached rerun                 {c:7.2f} s  (goal < 3 s)")
        print(f"mix recipe from fingerprints {weights} (want ft1 0.6, ft2 0.4)")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
