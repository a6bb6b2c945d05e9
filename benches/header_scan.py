"""Header-only scan benchmark (issue 13): `fastscan DIR --json --hash none` vs a Python `safetensors` loop.

Builds libraries of sparse files from real layouts (sd15, sdxl, lora, embedding, vae; see
../shared/data/layouts), one per `--files` count (default 1,200 and 10,000), then times, with a warm page
cache, median of `--repeat` runs:
  - fastscan: the CLI as a subprocess, process start and JSON output included;
  - the peer: an in-process loop that walks the directory and, for every file, opens it with
    `safetensors.safe_open(path, "np")` and reads `keys()` and `metadata()`;
  - the limit: what any CLI over the core pays at least: starting Python and loading the extension
    (`python -c "import fastscan._core"`) plus the core's own header scan of the library, in-process,
    on every core, each file object written as JSON text on the scanning threads, as the CLI has it
    (`_core.Scanner(hash="none", text=True)`). "of limit" is limit / fastscan's time.
Prints one table ready for the README (goals: >= 3x the loop at 1,200 files, >= 5x at 10,000), then the
unchanged rescan through the scan cache.

    python benches/header_scan.py [--files 1200,10000] [--repeat 5] [--dir DIR] [--jobs 0]
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

import cli_env  # benches/cli_env.py
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
    env = cli_env.env()
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


def python_start() -> float:
    """Seconds to start Python and load the extension: the floor of any CLI over the core."""
    env = cli_env.env()
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import fastscan._core"], check=True, env=env)
    return time.perf_counter() - t


def core_scan(d: Path, jobs: int) -> tuple[float, int]:
    """The core's header scan of `d` in this process, every core, no cache: (seconds, reports)."""
    from fastscan import _core

    t = time.perf_counter()
    n = sum(1 for _ in _core.Scanner([str(d)], hash="none", jobs=jobs, text=True))
    return time.perf_counter() - t, n


def measure(d: Path, files: int, repeat: int, jobs: int) -> dict[str, float]:
    """Median seconds of each contender over the library `d` of `files` files."""
    fastscan_cli(d, jobs)  # warm the page cache and the binary
    safetensors_loop(d)
    runs: dict[str, list[float]] = {"fastscan": [], "loop": [], "start": [], "core": []}
    for _ in range(repeat):  # interleaved, so a burst of load elsewhere hits every contender alike
        for key, fn in (
            ("fastscan", lambda: fastscan_cli(d, jobs)),
            ("loop", lambda: safetensors_loop(d)),
            ("core", lambda: core_scan(d, jobs)),
        ):
            t, n = fn()
            assert n == files, (key, n, files)
            runs[key].append(t)
        runs["start"].append(python_start())
    return {k: statistics.median(v) for k, v in runs.items()}


def main() -> None:
    """Builds the libraries, times every contender, prints the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", default="1200,10000", help="library sizes, comma-separated")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", type=Path, help="folder to build/reuse the libraries in (default: a temp dir)")
    ap.add_argument("--jobs", type=int, default=0, help="fastscan --jobs (0: every core)")
    a = ap.parse_args()
    sizes = [int(x) for x in a.files.split(",")]

    tmp = None
    base = a.dir
    if base is None:
        tmp = tempfile.TemporaryDirectory(prefix="fastscan-bench-")
        base = Path(tmp.name)
    try:
        rows = []
        for files in sizes:
            d = base / f"lib-{files}"
            if not d.exists() or sum(1 for _ in d.rglob("*.safetensors")) != files:
                shutil.rmtree(d, ignore_errors=True)
                build_library(d, files)
            rows.append((files, measure(d, files, a.repeat, a.jobs)))
        load = os.getloadavg()[0]
        print(f"header-only scan (--json --hash none, CLI start included), warm page cache, "
              f"{os.cpu_count()} CPUs, median of {a.repeat}, load average {load:.1f}")  # fmt: skip
        print("| files | fastscan CLI | safe_open loop | vs loop | limit (start + core) | of limit |")
        print("| --- | --- | --- | --- | --- | --- |")
        for files, m in rows:
            fs, limit = m["fastscan"], m["start"] + m["core"]
            print(f"| {files:,} | {fs:.3f} s ({files / fs:,.0f} files/s) | {m['loop']:.3f} s "
                  f"| {m['loop'] / fs:.2f}x | {limit:.3f} s ({m['start']:.3f} + {m['core']:.3f}) "
                  f"| {limit / fs:.2f} |")  # fmt: skip
        files = sizes[-1]
        d = base / f"lib-{files}"
        with tempfile.TemporaryDirectory(prefix="fastscan-bench-cache-") as c:
            db = Path(c) / "scan.sqlite3"
            first, _ = fastscan_cli(d, a.jobs, db)
            again = statistics.median(fastscan_cli(d, a.jobs, db)[0] for _ in range(a.repeat))
        print(f"with the scan cache, {files:,} files: first scan {first:.3f} s, unchanged rescan median "
              f"{again:.3f} s ({files / again:,.0f} files/s, process start included)")  # fmt: skip
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
