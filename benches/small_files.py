"""Many small files (LoRAs, embeddings): files per second of a hashing scan against b3sum and the limit.

Writes a library of real-layout files of random finite weights (benches/weights.py; lora-sd15-kohya: 19
MB, embedding-sd15 and embedding-sdxl: 25-66 KB; see ../shared/data/layouts) to the temp dir, warms the
page cache, then times, median of `--repeat` runs (interleaved, so load elsewhere hits every contender
alike):
  - fastscan: `fastscan DIR --json --hash full --no-cache` (CLI start included), and `--hash components`;
  - the peer: b3sum over every file (one process, all files, one after another, each hashed on every
    core: `apt-get install b3sum`; without it the `blake3` package in-process, a weaker peer), and the
    same on one thread (`--num-threads 1`; its limit is one core's);
  - the limit (issue 13): max(read, bytes x streams / (BLAKE3 per core x cores)) plus the peer's own
    per-file overhead (b3sum over as many empty files), where read is `cat` of every file, BLAKE3 per
    core is measured here on one thread, and streams is 2 for `--hash full`, 1 for `--hash components`.
    "of limit" is limit / time.
Each contender's CPU time (user + system, median) is printed too, with fastscan's against the peer's: on
a machine shared with other work, wall-clock ratios move with the load and CPU ratios much less.
Prints a table ready for the README. The library is deleted at the end.

    python benches/small_files.py [--loras 100] [--embeddings 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import blake3

import cli_env  # benches/cli_env.py
import weights  # benches/weights.py


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children so far."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, cpu: list[float] | None = None) -> float:
    """Wall seconds of `fn()`; its CPU seconds (user + system, children included) go to `cpu`."""
    c, t = cpu_seconds(), time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    if cpu is not None:
        cpu.append(cpu_seconds() - c)
    return wall


def blake3_per_core() -> float:
    """Bytes/s of BLAKE3 on one thread (best of 3 over 64 MiB in memory)."""
    buf = os.urandom(64 << 20)
    return max(len(buf) / timed(lambda: blake3.blake3(buf).digest()) for _ in range(3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loras", type=int, default=100)
    ap.add_argument("--embeddings", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()

    d = Path(tempfile.mkdtemp(prefix="fastscan-small-"))
    try:
        lib, empty = d / "lib", d / "empty"
        lib.mkdir()
        empty.mkdir()
        total, files = 0, []
        for i in range(a.loras):
            p = lib / f"lora-{i:04d}.safetensors"
            total += weights.write(p, "lora-sd15-kohya", i)
            files.append(p)
        for i in range(a.embeddings):
            layout = "embedding-sd15" if i % 2 else "embedding-sdxl"
            p = lib / f"emb-{i:05d}.safetensors"
            total += weights.write(p, layout, 10_000 + i)
            files.append(p)
        n = len(files)
        names = [str(p) for p in files]
        empties = [str(empty / f"{i:05d}") for i in range(n)]
        for p in empties:
            Path(p).touch()
        os.sync()  # the kernel writing 2 GB back would run beside the timed runs
        for p in files:  # warm the page cache
            p.read_bytes()

        b3sum = shutil.which("b3sum")
        peer = "b3sum" if b3sum else "blake3 package"
        serial = f"{peer}, one thread"  # files one after another on one core, as issue 13 pictured it

        def b3(paths: list[str], threads: int = 0):
            """The peer over `paths`, on every core (threads=0) or on `threads` threads."""

            def go() -> None:
                if b3sum:
                    one = ["--num-threads", str(threads)] if threads else []
                    subprocess.run([b3sum, "--no-names", *one, *paths], stdout=subprocess.DEVNULL, check=True)
                else:
                    for p in paths:
                        blake3.blake3(max_threads=threads or blake3.blake3.AUTO).update_mmap(p)

            return go

        cli = cli_env.env()

        def fastscan(mode: str):
            def go() -> None:
                cmd = [sys.executable, "-m", "fastscan", str(lib), "--json", "--hash", mode, "--no-cache"]
                subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False, env=cli)

            return go

        def cat() -> None:
            subprocess.run(["cat", *names], stdout=subprocess.DEVNULL, check=True)

        contenders = {
            "cat": cat,
            "peer overhead": b3(empties),
            peer: b3(names),
            serial: b3(names, threads=1),
            "fastscan --hash full": fastscan("full"),
            "fastscan --hash components": fastscan("components"),
        }
        runs: dict[str, list[float]] = {k: [] for k in contenders}
        cpus: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(a.repeat):
            for k, fn in contenders.items():
                runs[k].append(timed(fn, cpus[k]))
        t = {k: statistics.median(v) for k, v in runs.items()}
        cpu = {k: statistics.median(v) for k, v in cpus.items()}
        per_core = blake3_per_core()
        cores = os.cpu_count() or 1

        def limit(streams: int, on: int = cores) -> float:
            return max(t["cat"], total * streams / (per_core * on)) + t["peer overhead"]

        limits = {
            peer: limit(1),
            serial: limit(1, on=1),
            "fastscan --hash full": limit(2),
            "fastscan --hash components": limit(1),
        }
        print(f"library: {n} files ({a.loras} LoRAs, {a.embeddings} embeddings), {total / 1e9:.2f} GB, "
              f"warm page cache, {cores} CPUs, median of {a.repeat}, load average {os.getloadavg()[0]:.1f}; "
              f"read (cat) {t['cat']:.3f} s, BLAKE3 {per_core / 2**30:.2f} GiB/s per core, "
              f"{peer} per-file overhead {t['peer overhead']:.3f} s for {n} empty files")  # fmt: skip
        # CPU seconds (user + system) are what a loaded machine still measures fairly: wall-clock ratios
        # there depend on what else runs.
        print(f"| contender | s | files/s | GB/s | vs {peer} | limit s | of limit | CPU s | CPU vs {peer} |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for k in (peer, serial, "fastscan --hash full", "fastscan --hash components"):
            s, lim = t[k], limits[k]
            print(f"| {k} | {s:.3f} | {n / s:,.0f} | {total / s / 1e9:.2f} | {t[peer] / s:.2f}x "
                  f"| {lim:.3f} | {lim / s:.2f} | {cpu[k]:.2f} | {cpu[peer] / cpu[k]:.2f}x |")  # fmt: skip
        comp, full = t["fastscan --hash components"], t["fastscan --hash full"]
        print(f"against {serial}: fastscan --hash components {t[serial] / comp:.2f}x, "
              f"--hash full {t[serial] / full:.2f}x")  # fmt: skip
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
