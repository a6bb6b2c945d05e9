"""The library report's page size and load time in headless Chromium, for 1,000 and 10,000 files.

The library is the demo library (`fastscan demo`: 23 files, most of them with findings) scanned once
header-only, its file objects replicated under new paths into a `fastscan.report/1` document of N files
(what `fastscan report scan.json` renders), as the tests do. Each page is opened 3 times in Debian's
headless Chromium (selenium + chromedriver); the load time is the navigation's `loadEventEnd` (HTML
parsed, table laid out, script run), the median of the 3 printed with the machine's load average.

    python benches/report_load.py [N ...]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
RUNS = 3


def fastscan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastscan", *args], capture_output=True, text=True)


def demo_scan(d: Path) -> dict:
    """The demo library's header-only JSON report."""
    from fastscan.demo import write_library

    write_library(d / "demo")
    out = d / "scan.json"
    r = fastscan("scan", str(d / "demo"), "--hash", "none", "--json", "-o", str(out), "--no-cache")
    assert r.returncode in (0, 1), r.stderr
    return json.loads(out.read_text())


def library(doc: dict, n: int, out: Path) -> Path:
    """`doc`'s files replicated into a report of `n` files (its summary summed by the model's `Summary`)."""
    from fastscan.model import FileReport, Summary

    base = doc["files"]
    files = []
    for i in range(n):
        f = dict(base[i % len(base)])
        f["path"] = f"library/copy{i // len(base):04d}/{os.path.basename(f['path'])}"
        files.append(f)
    big = {**doc, "files": files, "duplicates": []}
    big["summary"] = Summary.of(FileReport.from_dict(f) for f in files).to_dict()
    out.write_text(json.dumps(big))
    return out


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1800", "--disable-extensions"):  # fmt: skip
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def load_ms(driver, page: Path) -> float:
    driver.get("about:blank")
    driver.get(f"file://{page}")
    return driver.execute_script(
        "const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime"
    )


def main(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        doc = demo_scan(d)
        driver = browser()
        try:
            for n in sizes:
                src = library(doc, n, d / f"lib{n}.json")
                page = d / f"lib{n}.html"
                r = fastscan("report", str(src), "-o", str(page))
                assert r.returncode == 0, r.stderr
                times = [load_ms(driver, page) for _ in range(RUNS)]
                load = os.getloadavg()[0]
                print(
                    f"{n:>6} files: {page.stat().st_size / 1e6:.1f} MB, loads in "
                    f"{statistics.median(times):.0f} ms (median of {RUNS}: "
                    f"{', '.join(f'{t:.0f}' for t in times)}; load average {load:.1f})"
                )
        finally:
            driver.quit()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000, 10_000])
