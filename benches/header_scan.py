"""Header-only scan benchmark (contract §9): `fastscan DIR --json --hash none` vs a Python `safetensors` loop.

Builds a library of thousands of sparse files from real layouts (sd15, sdxl, lora, embedding, vae; see
../shared/data/layouts), then times, with a warm page cache:
  - fastscan: the CLI as a subprocess, process start and JSON output included;
  - safetensors: an in-process loop that walks the directory and, for every file, opens it with
    `safetensors.safe_open(path, "np")` and reads `keys()` and `metadata()`.
Prints both times, files/s and the ratio (contract §9 asks for >= 3x).

    python benches/header_scan.py [--files 3000] [--repeat 3] [--dir DIR] [--jobs 0]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastscan import synth

LAYOUTS = ["sd15", "sdxl", "lora-sd15-kohya", "embedding-sd15", "vae-sd"]


def copy_sparse(src: Path, dst: Path) -> None:
    """Copies `src` to `dst` writing only its data regions (holes stay holes)."""
    size = src.stat().st_size
    with open(src, "rb") as i, open(dst, "wb") as o:
        fd, pos = i.fileno(), 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # no data after pos
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            while start < end:
                chunk = os.pread(fd, min(end - start, 1 << 24), start)
                o.seek(start)
                o.write(chunk)
                start += len(chunk)
            pos = end
        o.truncate(size)


def build_library(d: Path, n: int) -> None:
    """Writes `n` sparse files, cycling through LAYOUTS (one template per layout, copied sparsely)."""
    d.mkdir(parents=True, exist_ok=True)
    templates = [synth.write_layout(d / f"00000-{name}.safetensors", name) for name in LAYOUTS]
    for i in range(len(templates), n):
        t = templates[i % len(templates)]
        sub = d / f"shard{i // 500:02d}"
        sub.mkdir(exist_ok=True)
        copy_sparse(t, sub / f"{i:05d}-{LAYOUTS[i % len(LAYOUTS)]}.safetensors")


def fastscan_cli(d: Path, jobs: int, cache: Path | None = None) -> tuple[float, int]:
    """Runs the CLI once (with `cache`, through that scan cache); returns (seconds, files in its report)."""
    exe = shutil.which("fastscan")
    cmd = [exe] if exe else [sys.executable, "-m", "fastscan"]
    cmd += [str(d), "--json", "--hash", "none", "--fail-on", "never", "--jobs", str(jobs)]
    env = dict(os.environ)
    if cache is None:
        cmd.append("--no-cache")
    else:
        env["FASTSCAN_CACHE"] = str(cache)
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, env=env).stdout
    dt = time.perf_counter() - t
    return dt, json.loads(out)["summary"]["files"]


def safetensors_loop(d: Path) -> tuple[float, int]:
    """Walks `d` and reads every file's keys and metadata with the safetensors package."""
    from safetensors import safe_open

    t = time.perf_counter()
    n = keys = 0
    for root, _, files in os.walk(d):
        for name in files:
            with safe_open(os.path.join(root, name), "np") as f:
                keys += len(f.keys())
                f.metadata()
            n += 1
    return time.perf_counter() - t, n


def main() -> None:
    """Builds the library, times both, prints the numbers."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, help="library to build/reuse (default: a temporary directory)")
    ap.add_argument("--jobs", type=int, default=0, help="fastscan --jobs (0: every core)")
    a = ap.parse_args()

    tmp = None
    d = a.dir
    if d is None:
        tmp = tempfile.TemporaryDirectory(prefix="fastscan-bench-")
        d = Path(tmp.name) / "lib"
    try:
        if not d.exists() or sum(1 for _ in d.rglob("*.safetensors")) != a.files:
            t = time.perf_counter()
            build_library(d, a.files)
            print(f"built {a.files} files from {', '.join(LAYOUTS)} in {time.perf_counter() - t:.1f} s")
        apparent = sum(p.stat().st_size for p in d.rglob("*.safetensors"))
        print(f"library: {d} ({a.files} files, {apparent / 1e12:.2f} TB apparent), {os.cpu_count()} CPUs")

        fastscan_cli(d, a.jobs)  # warm the page cache and the binary
        safetensors_loop(d)
        fs = [fastscan_cli(d, a.jobs) for _ in range(a.repeat)]
        st = [safetensors_loop(d) for _ in range(a.repeat)]
        assert all(n == a.files for _, n in fs + st), (fs, st)
        f_best, s_best = min(t for t, _ in fs), min(t for t, _ in st)
        f_med, s_med = statistics.median(t for t, _ in fs), statistics.median(t for t, _ in st)
        print(f"fastscan CLI (--json --hash none, process start included): best {f_best:.3f} s, "
              f"median {f_med:.3f} s, {a.files / f_best:,.0f} files/s")  # fmt: skip
        print(f"safetensors safe_open loop (keys + metadata, in-process):   best {s_best:.3f} s, "
              f"median {s_med:.3f} s, {a.files / s_best:,.0f} files/s")  # fmt: skip
        print(f"ratio (safetensors / fastscan): best {s_best / f_best:.2f}x, median {s_med / f_med:.2f}x "
              f"(contract §9: >= 3x)")  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="fastscan-bench-cache-") as c:
            db = Path(c) / "scan.sqlite3"
            first, _ = fastscan_cli(d, a.jobs, db)
            again = min(fastscan_cli(d, a.jobs, db)[0] for _ in range(a.repeat))
        print(f"with the scan cache: first scan {first:.3f} s, unchanged rescan best {again:.3f} s "
              f"({a.files / again:,.0f} files/s, process start included)")  # fmt: skip
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
