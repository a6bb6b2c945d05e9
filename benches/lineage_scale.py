"""Lineage at library scale: time of the lineage maths for 1,000 and 5,000 models from fingerprints.

Fingerprints are synthesized in-process (tests/fpsynth.py: families of `--family` models built like
real ones — fine-tunes, weighted-sum, block-weighted and add-difference merges, twins, baked and
blended VAEs — in two archs, plus unrelated models; 3.5k samples per checkpoint, a reduced layout),
so this times only `_core.lineage` (what a cached `fastscan lineage` rerun does after reading the
cache), not the scan. Prints wall time and CPU time (all threads) per size; `--exhaustive` also times
every-pair mode (quadratic; keep sizes small).

    python benches/lineage_scale.py [--sizes 1000 5000] [--family 100] [--exhaustive]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import fpsynth  # noqa: E402

from fastscan import _core  # noqa: E402


def timed(reports: list, exhaustive: bool) -> tuple[float, float, dict]:
    w, c = time.perf_counter(), time.process_time()
    doc = _core.lineage(reports, exhaustive=exhaustive)
    return time.perf_counter() - w, time.process_time() - c, doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--family", type=int, default=100)
    ap.add_argument("--exhaustive", action="store_true")
    a = ap.parse_args()
    for n in a.sizes:
        reports = fpsynth.library(n, seed=n, family_size=a.family)
        wall, cpu, doc = timed(reports, False)
        merges = sum(1 for m in doc["models"] if m["merge"])
        line = f"{n:6d} models  screened    {wall:7.2f} s wall  {cpu:7.2f} s CPU  ({merges} recipes)"
        if a.exhaustive:
            ew, ec, edoc = timed(reports, True)
            line += f"\n{'':13} exhaustive  {ew:7.2f} s wall  {ec:7.2f} s CPU  same answer: {edoc == doc}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
