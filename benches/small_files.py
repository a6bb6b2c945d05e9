"""Many small files (LoRAs, embeddings): files per second of a hashing scan against b3sum on the same files.

Writes a library of real-layout files filled with random bytes (lora-sd15-kohya: 19 MB, embedding-sd15
and embedding-sdxl: 25-66 KB; see ../shared/data/layouts) to the temp dir, warms the page cache, then
times, median of `--repeat`:
  - fastscan: `fastscan DIR --json --hash full --no-cache` (CLI start included), and `--hash components`;
  - b3sum over every file (one process, all files; or the `blake3` package in-process when b3sum is absent).
Prints files/s, GB/s and the ratios. The library is deleted at the end.

    python benches/small_files.py [--loras 100] [--embeddings 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import blake3

from fastscan import synth


def write_random(path: Path, layout: str, seed: int) -> int:
    """Writes the layout with random data for every tensor; returns the file size."""
    tensors = synth.load_layout(layout)["tensors"]
    rnd = __import__("random").Random(seed)
    data = {n: rnd.randbytes(synth.nbytes(t["dtype"], t["shape"])) for n, t in tensors.items()}
    synth.write_safetensors(path, tensors, data=data)
    return path.stat().st_size


def median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loras", type=int, default=100)
    ap.add_argument("--embeddings", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()

    d = Path(tempfile.mkdtemp(prefix="fastscan-small-"))
    try:
        total, files = 0, []
        for i in range(a.loras):
            p = d / f"lora-{i:04d}.safetensors"
            total += write_random(p, "lora-sd15-kohya", i)
            files.append(p)
        for i in range(a.embeddings):
            layout = "embedding-sd15" if i % 2 else "embedding-sdxl"
            p = d / f"emb-{i:05d}.safetensors"
            total += write_random(p, layout, 10_000 + i)
            files.append(p)
        for p in files:  # warm the page cache
            p.read_bytes()
        n = len(files)
        print(f"library: {n} files ({a.loras} LoRAs, {a.embeddings} embeddings), {total / 1e9:.2f} GB, "
              f"{os.cpu_count()} CPUs")  # fmt: skip

        b3sum = shutil.which("b3sum")
        names = [str(p) for p in files]

        def run_b3() -> None:
            if b3sum:
                subprocess.run([b3sum, "--no-names", *names], stdout=subprocess.DEVNULL, check=True)
            else:
                for p in names:
                    blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(p)

        def run_fastscan(mode: str):
            def go() -> None:
                cmd = [sys.executable, "-m", "fastscan", str(d), "--json", "--hash", mode, "--no-cache"]
                subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False)

            return go

        peer = "b3sum" if b3sum else "blake3 package"
        t_peer = median(run_b3, a.repeat)
        rows = [(peer, t_peer)]
        for mode in ("full", "components"):
            rows.append((f"fastscan --hash {mode} (CLI)", median(run_fastscan(mode), a.repeat)))
        for name, t in rows:
            print(f"{name:34s} {t:7.3f} s  {n / t:8,.0f} files/s  {total / t / 1e9:6.2f} GB/s  "
                  f"ratio to {peer}: {t_peer / t:.2f}x")  # fmt: skip
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
