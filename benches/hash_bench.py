"""Hashing throughput of fastscan's data pass against b3sum (or the blake3 package), `cat` and the limit.

Writes a real-layout safetensors file (shared/data/layouts, default sd15: 2.1 GB) of random finite
weights (benches/weights.py) to the temp dir, then times each contender `--repeat` times (median run)
with the page cache warm, then with the file evicted before each run (cold: disk speed counts), and
prints GB/s and ratios for both (`--cache warm|cold` for one table). fastscan runs with everything its
pass computes in a cached scan: value checks, component hashes and lineage fingerprints.

Each mode's limit (issue 13) is the larger of the time to read the bytes (`cat`, warm or cold as the
table) and the time its hashing work takes with every core busy (measured over cached pages, for the
cold table too: a cold b3sum's time includes its reads): BLAKE3 with all threads (the peer) once
for `components`, twice for `full`, plus SHA-256 on every core (the fastest measured here: hashlib or
`openssl speed`) for `--sha256`, over the bytes of both SHA-256 digests that mode computes: the
file's (sha256, AutoV2) and the addnet hash's (everything after the header, A1111's
`sshs_model_hash`), two serial streams a file cannot share. "of limit" is limit / fastscan's time:
1.0 is the hardware's limit. The file is deleted at the end.

    python benches/hash_bench.py [--layout sdxl] [--repeat 3] [--cache both|warm|cold]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import blake3

import weights  # benches/weights.py
from fastscan import _core


def evict(path: Path) -> None:
    """Drops the file's pages from the page cache (cold runs)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def median(fn, repeat: int, cold: Path | None = None) -> float:
    times = []
    for _ in range(repeat):
        if cold is not None:
            evict(cold)
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def sha256_per_core() -> float:
    """Bytes/s of the fastest SHA-256 measured here on one core: Python's `hashlib` (median of 5 over
    64 MiB) or `openssl speed` over 16 KiB blocks. hashlib ran at 1.1 GiB/s on this machine where
    `openssl speed` gave 2.0 GB/s: a limit from hashlib alone made fastscan look past it (1.41)."""
    buf = os.urandom(64 << 20)
    best = len(buf) / median(lambda: hashlib.sha256(buf).digest(), 5)
    if shutil.which("openssl"):
        cmd = ["openssl", "speed", "-evp", "sha256", "-bytes", "16384", "-seconds", "1"]
        out = subprocess.run(cmd, capture_output=True, text=True).stdout.split()
        # the last line: "sha256  2000601.09k", in thousands of bytes per second
        if len(out) >= 2 and out[-2] == "sha256" and out[-1].endswith("k"):
            best = max(best, float(out[-1][:-1]) * 1000)
    return best


def sha256_all_cores(size: int) -> float:
    """Seconds SHA-256 takes over `size` bytes with every core hashing its own share (measured)."""
    return size / (sha256_per_core() * (os.cpu_count() or 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layout", default="sd15")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", choices=["warm", "cold", "both"], default="both",
                    help="page cache warm, or the file evicted before each run (cold), or both tables")
    args = ap.parse_args()

    fd, name = tempfile.mkstemp(suffix=".safetensors", prefix="fastscan-hash-bench-")
    os.close(fd)
    path = Path(name)
    try:
        size = weights.write(path, args.layout)
        os.sync()  # the kernel writing 2 GB back would run beside the timed runs
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # warm the cache
        b3sum = shutil.which("b3sum")

        def run_b3():
            if b3sum:
                subprocess.run([b3sum, "--no-names", str(path)], stdout=subprocess.DEVNULL, check=True)
            else:
                blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(str(path)).hexdigest()

        def scan(mode: str, sha256: bool = False):
            def go():
                (r,) = list(_core.Scanner([str(path)], hash=mode, sha256=sha256, fingerprint=mode != "none"))
                assert mode == "none" or r.get("fingerprint"), "the pass must carry every consumer"

            return go

        # the answers must agree before the times mean anything
        want = blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(str(path)).hexdigest()
        assert _core.scan_file(str(path), hash="full")["hashes"]["blake3"] == want

        contenders = [
            ("cat file > /dev/null", lambda: subprocess.run(
                f"cat '{path}' > /dev/null", shell=True, check=True)),
            ("b3sum" if b3sum else "blake3 package (update_mmap, max_threads=AUTO)", run_b3),
            ("fastscan hash=components", scan("components")),
            ("fastscan hash=full", scan("full")),
            ("fastscan hash=full --sha256", scan("full", True)),
            ("fastscan hash=none", scan("none")),
        ]  # fmt: skip
        with open(path, "rb") as f:
            after_header = size - 8 - int.from_bytes(f.read(8), "little")  # the addnet hash's bytes
        sha_s = sha256_all_cores(size + after_header)
        # The hashing work is CPU time: b3sum over cached pages gives it (a cold b3sum adds its reads).
        b3_work = median(run_b3, args.repeat)
        for cache in ["warm", "cold"] if args.cache == "both" else [args.cache]:
            cold = path if cache == "cold" else None
            if cold is None:
                subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
            results = [(label, median(fn, args.repeat, cold)) for label, fn in contenders]
            cat_s, b3_s = results[0][1], results[1][1]
            limits = {
                "fastscan hash=components": max(cat_s, b3_work),
                "fastscan hash=full": max(cat_s, 2 * b3_work),
                "fastscan hash=full --sha256": max(cat_s, 2 * b3_work + sha_s),
            }
            print(f"file: {args.layout} layout, {size / 1e9:.2f} GB random weights, "
                  f"page cache {'cold (evicted before each run)' if cold else 'warm'}, "
                  f"{os.cpu_count()} CPUs, median of {args.repeat}, load average {os.getloadavg()[0]:.1f}")
            print(f"{'contender':48} {'s':>7} {'GB/s':>7} {'vs b3':>6} {'limit s':>8} {'of limit':>8}")
            for label, t in results:
                lim = limits.get(label)
                tail = f"{lim:8.3f} {lim / t:8.2f}" if lim else ""
                print(f"{label:48} {t:7.3f} {size / t / 1e9:7.2f} {b3_s / t:6.2f} {tail}")
            print()
    finally:
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
