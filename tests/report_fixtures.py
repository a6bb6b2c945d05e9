"""Libraries for the library-report tests: a lineage library scanned by path, the demo library's JSON report.

The lineage library is the one of tests/test_lineage.py (real SD1.5 tensor names, seeded weights: a base,
fine-tunes, merges, a block-weighted merge, VAEs) plus a byte copy of the base under a name HTML must
escape. The demo library (`fastscan demo`) is scanned header-only (`--hash none`: its sparse files are
gigabytes) into a JSON report, which `fastscan report scan.json` renders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.test_lineage import build_library

COPY_NAME = 'base <copy> & "x".safetensors'


def fastscan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastscan", *args], capture_output=True, text=True)


def lineage_library(d: Path) -> dict:
    """Writes the lineage library into `d`/models and its report page to `d`/library.html."""
    models = d / "models"
    models.mkdir()
    lib = build_library(models)
    shutil.copyfile(lib["paths"]["base"], models / COPY_NAME)
    page = d / "library.html"
    r = fastscan("report", str(models), "-o", str(page), "--no-cache")
    assert r.returncode == 0, r.stderr
    return {**lib, "models": models, "page": page, "copy": os.fspath(models / COPY_NAME)}


def demo_report(d: Path) -> dict:
    """Writes the demo library, its header-level JSON report and the page rendered from that JSON."""
    from fastscan.demo import write_library

    write_library(d / "demo")
    scan = d / "scan.json"
    r = fastscan("scan", str(d / "demo"), "--hash", "none", "--json", "-o", str(scan), "--no-cache")
    assert r.returncode in (0, 1), r.stderr  # 1: the demo's files have errors, as they should
    page = d / "demo.html"
    r = fastscan("report", str(scan), "-o", str(page))
    assert r.returncode == 0, r.stderr
    return {"dir": d / "demo", "json": scan, "report": json.loads(scan.read_text()), "page": page}


def big_report(demo_json: Path, out: Path, n: int = 10_000) -> Path:
    """A `fastscan.report/1` of `n` files: the demo scan's file objects replicated under distinct paths,
    its summary summed by the model's own `Summary` (fixture data, not a claim under test)."""
    from fastscan.model import FileReport, Summary

    doc = json.loads(demo_json.read_text())
    base = doc["files"]
    files = []
    for i in range(n):
        f = dict(base[i % len(base)])
        f["path"] = f"library/copy{i // len(base):04d}/{os.path.basename(f['path'])}"
        files.append(f)
    doc["files"] = files
    doc["summary"] = Summary.of(FileReport.from_dict(f) for f in files).to_dict()
    doc["duplicates"] = []
    out.write_text(json.dumps(doc))
    return out
