"""Golden scan reports: the JSON text `fastscan scan --json` writes for fixed inputs.

Each case scans the demo library (written into a temporary folder by `fastscan.demo`) or the real files
of ../shared/data/real (read in place) with fixed options. What varies between runs is replaced before
comparing: the root folder (`$ROOT`), each file's mtime, the start time and the elapsed seconds.
`python tests/golden_reports.py` writes tests/golden/report-NAME.json with the code of the checkout;
tests/test_golden_report.py compares, so a change of the report's text (a field's order included) is
seen. A change meant to change the report updates these files in the same commit and says so.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
REAL = (HERE.parent / ".." / "shared" / "data" / "real").resolve()

# name -> (input: demo | real, scan options)
CASES: dict[str, tuple[str, dict]] = {
    "demo-header": ("demo", {"hash": "none"}),
    "real-full": ("real", {"hash": "full", "sha256": True, "fingerprint": True}),
}

_VARYING = [
    (re.compile(r'"mtime": [-0-9.e+]+'), '"mtime": 0'),
    (re.compile(r'"started": "[^"]*"'), '"started": ""'),
    (re.compile(r'"elapsed_s": [-0-9.e+]+'), '"elapsed_s": 0'),
]


def golden_path(name: str) -> Path:
    return GOLDEN / f"report-{name}.json"


def case_root(name: str, workdir: Path) -> Path:
    """The folder case `name` scans: the demo library written into `workdir` (once), or the real files."""
    how, _ = CASES[name]
    if how == "real":
        return REAL
    from fastscan import demo

    root = workdir / "demo"
    if not root.exists():
        demo.write_library(root)
    return root


def normalise(text: str, root: Path) -> str:
    """`text` with the root folder and the run's times replaced by fixed placeholders."""
    text = text.replace(str(root), "$ROOT")
    for pattern, fixed in _VARYING:
        text = pattern.sub(fixed, text)
    return text


def report_text(name: str, workdir: Path, cache: Path | None = None) -> str:
    """The normalised JSON report of case `name` made with today's code (through `cache` when given)."""
    from fastscan.api import ScanRun

    root = case_root(name, workdir)
    _, opts = CASES[name]
    run = ScanRun([root], cache=cache, **opts)
    return normalise(run.drive().to_json(), root)


def regenerate() -> None:
    """Scans every case and writes tests/golden/report-NAME.json."""
    with tempfile.TemporaryDirectory(prefix="fastscan-golden-") as d:
        for name in CASES:
            golden_path(name).write_text(report_text(name, Path(d)) + "\n")
            print(f"wrote {golden_path(name)}", file=sys.stderr)


if __name__ == "__main__":
    regenerate()
