"""Scale of the walk (issue 9): a library of N empty `.safetensors` files, every output mode of the CLI.

Each run is a child process: wall time and the child's peak resident memory (ru_maxrss) are printed per
mode, the median of `--repeat` runs. Every file is empty (0 bytes), so the work is the walk, the open,
the per-file report and its rendering: what a scan of a huge library costs beyond reading models.

    python benches/walk_scale.py [--files 100000] [--repeat 3] [--dir /tmp/fastscan-walk]

The default table is rendered to a pseudo-terminal-free pipe (stdout is a pipe, so no progress bar).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def build(d: Path, n: int) -> None:
    """`n` empty files, 1,000 to a folder (a fresh tree each time the count changes)."""
    stamp = d.with_name(d.name + ".count")
    if stamp.exists() and stamp.read_text() == str(n):
        return
    shutil.rmtree(d, ignore_errors=True)
    for i in range(n):
        sub = d / f"{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        (sub / f"m{i:06d}.safetensors").touch()
    stamp.write_text(str(n))


def timed(argv: list[str]) -> tuple[float, int, int]:
    """Runs argv with stdout to a pipe that is drained; returns (seconds, peak RSS bytes, stdout bytes)."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = 0
    assert p.stdout is not None
    while chunk := p.stdout.read(1 << 20):
        out += len(chunk)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t
    # exit 1 is "findings at or above --fail-on" (every empty file is an error): expected here
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{argv} failed with status {status}")
    return dt, ru.ru_maxrss * 1024, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/fastscan-walk"))
    a = ap.parse_args()
    build(a.dir, a.files)
    exe = [sys.executable, "-m", "fastscan", "scan", str(a.dir), "--hash", "none", "--no-cache"]
    modes = {"--jsonl": ["--jsonl"], "--json": ["--json"], "table": [], "table --files": ["--files"]}
    print(f"{a.files:,} empty files, median of {a.repeat} runs")
    print(f"{'mode':<14} {'wall s':>8} {'peak RSS MB':>12} {'stdout MB':>10}")
    for name, extra in modes.items():
        runs = [timed(exe + extra) for _ in range(a.repeat)]
        wall = statistics.median(r[0] for r in runs)
        rss = statistics.median(r[1] for r in runs)
        print(f"{name:<14} {wall:8.1f} {rss / 1e6:12.0f} {runs[0][2] / 1e6:10.1f}")


if __name__ == "__main__":
    main()
