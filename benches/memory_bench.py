"""Peak resident memory of a scan (and of `convert`) for every input form, cold (goal: < 200 MB).

Builds, for each form fastscan reads (safetensors, PyTorch zip .ckpt, the same zip cut before its
central directory, legacy `torch.save(..., _use_new_zipfile_serialization=False)`, the pre-1.0 tar
format, an `.npz` of stored arrays), a sparse file of about --size bytes from the real sd15 layout
(F32 stored as F16, tensors taken in order until the size is reached: ~1,000 storage records), evicts
it from the page cache, and runs each mode in its own child process: `scan --hash none`,
`--hash components`, `--hash full`, and `convert` for the pickle forms. The child prints its own
`VmHWM` (the peak resident set, which starts anew at exec: `ru_maxrss` would carry the parent's) and
the interpreter's before the work; afterwards `fincore` tells how much of the input the page cache
still holds (the pass drops behind what it brought in). Each mode runs again with the input wholly
cached (read back after eviction, as after a download: large page-cache folios), where every page a
reader touches through a map of the file counts as resident. One run each; needs about 2x --size
free in --dir (holes cost nothing; the convert output is real).

    python benches/memory_bench.py [--dir DIR] [--size 1.2e9] [--forms safetensors,zip,...]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import torchzip  # noqa: E402
from fastscan import synth  # noqa: E402

CHILD = """
import sys
def hwm():
    with open('/proc/self/status') as f:
        return next(int(x.split()[1]) for x in f if x.startswith('VmHWM:'))
import fastscan._core as c
from fastscan.fixes import commands
base = hwm()
path, mode, out = sys.argv[1:4]
if mode == 'convert':
    commands.convert(path, out)
else:
    r = c.scan_file(path, hash=mode)
    assert r['error'] is None and r['tensors'] > 0, (r['error'], r['tensors'])
print(base, hwm())
"""

FORMS = ("safetensors", "zip", "zip-nodir", "legacy", "tar", "npz")
PICKLE_FORMS = ("zip", "zip-nodir", "legacy", "tar")


def tensors_of(size: float) -> dict:
    """The sd15 layout's tensors (F32 as F16) in order until their bytes reach `size`."""
    lay = copy.deepcopy(synth.load_layout("sd15"))
    out, total = {}, 0
    for name, t in lay["tensors"].items():
        if t["dtype"] == "F32":
            t["dtype"] = "F16"
        out[name] = t
        total += synth.nbytes(t["dtype"], t["shape"])
        if total >= size:
            break
    return out


def build(form: str, path: Path, tensors: dict) -> None:
    if form == "safetensors":
        synth.write_layout(path, {"tensors": tensors})
    elif form in ("zip", "zip-nodir"):
        torchzip.write_zip(path, tensors)
        if form == "zip-nodir":
            # A download cut off before the central directory: the reader walks the local headers.
            with open(path, "rb") as f:
                f.seek(-22, os.SEEK_END)
                cd = struct.unpack("<I", f.read(22)[16:20])[0]
            os.truncate(path, cd)
    elif form == "legacy":
        torchzip.write_legacy(path, tensors)
    elif form == "tar":
        torchzip.write_tar(path, tensors)
    elif form == "npz":
        torchzip.write_npz(path, tensors)
    else:
        raise SystemExit(f"unknown form {form}")


def cached_mb(path: Path) -> float:
    """MB of the file in the page cache (`fincore`)."""
    out = subprocess.run(["fincore", "-b", "-n", "-o", "RES", str(path)], capture_output=True, text=True)
    return int(out.stdout.split()[0]) / 1e6 if out.returncode == 0 and out.stdout.strip() else float("nan")


def warm(path: Path) -> None:
    """Evicts the file, then reads it back (as after a download: readahead caches it in large folios)."""
    synth.evict(path)
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(16 << 20)
        while f.readinto(buf):
            pass


def run(path: Path, mode: str, out: Path, cold: bool) -> tuple[float, float, float]:
    """(interpreter's MB before, peak MB, MB of the input cached after) of one child run, the input
    evicted first (`cold`) or wholly cached."""
    if cold:
        synth.evict(path)
    else:
        warm(path)
    res = subprocess.run([sys.executable, "-c", CHILD, str(path), mode, str(out)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{path.name} {mode} failed:\n{res.stderr[-2000:]}")
    base, peak = map(int, res.stdout.split()[-2:])
    out.unlink(missing_ok=True)
    return base / 1024, peak / 1024, cached_mb(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="folder for the files (default: a temp dir)")
    ap.add_argument("--size", type=float, default=1.2e9)
    ap.add_argument("--forms", default=",".join(FORMS))
    ap.add_argument("--modes", default="none,components,full,convert")
    args = ap.parse_args()
    tensors = tensors_of(args.size)
    work = Path(tempfile.mkdtemp(prefix="fastscan-mem-", dir=args.dir))
    total = sum(synth.nbytes(t["dtype"], t["shape"]) for t in tensors.values())
    print(f"{len(tensors)} tensors, {total / 1e9:.2f} GB")
    print(f"{'form':<12} {'mode':<11} {'file MB':>8} {'base MB':>8} {'cold peak MB':>13}"
          f" {'cached after cold MB':>21} {'warm peak MB':>13}")
    try:
        for form in args.forms.split(","):
            path = work / f"model.{ {'safetensors': 'safetensors', 'npz': 'npz'}.get(form, 'ckpt') }"
            build(form, path, tensors)
            for mode in args.modes.split(","):
                if mode == "convert" and form not in PICKLE_FORMS:
                    continue
                base, peak, cached = run(path, mode, work / "out.safetensors", cold=True)
                _, warm_peak, _ = run(path, mode, work / "out.safetensors", cold=False)
                print(f"{form:<12} {mode:<11} {path.stat().st_size / 1e6:>8.0f} {base:>8.0f} {peak:>13.0f}"
                      f" {cached:>21.1f} {warm_peak:>13.0f}", flush=True)
            path.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
