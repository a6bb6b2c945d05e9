"""The library report's page size and load time in headless Chromium, for 1,000 and 10,000 files.

The library is the demo library (`fastscan demo`: 23 files, most of them with findings) scanned once
header-only, its file objects replicated under new paths into a `fastscan.report/1` document of N files
(what `fastscan report scan.json` renders), with the tests' `tests/report_fixtures.py`. Each page is
opened 3 times in Debian's headless Chromium (selenium + chromedriver); the load time is the
navigation's `loadEventEnd` (HTML parsed, table laid out, script run), the median of the 3 printed with
the machine's load average.

    python benches/report_load.py [N ...]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.report_fixtures import big_report, demo_report, fastscan  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
RUNS = 3


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
        demo = demo_report(d)
        driver = browser()
        try:
            for n in sizes:
                src = big_report(demo["json"], d / f"lib{n}.json", n)
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
