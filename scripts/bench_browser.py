"""Time the feature browser in headless Chromium on a fabricated run of 10,000 test images and
D = 256 dimensions (no network is trained; see ``tests/synthetic_features.py``).

Builds the site once (timed), then opens it ``--loads`` times from ``file://`` in a fresh tab and
reports, from the page's own ``performance.now()`` marks (milliseconds since navigation start):
the table rendered (DOM built) and painted (the next animation frame), then the time to re-sort
the 256 rows, to re-render after a scroll, and to open a dimension page and an image page (each
loading its data file). Exits 1 when the median time to the painted table is 2 s or more.

    python scripts/bench_browser.py [--images 10000] [--dims 256] [--loads 5] [--out DIR]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bayesncl_pyro.browser.site_builder import build_site  # noqa: E402
from tests.browser import chromium_driver, open_file  # noqa: E402
from tests.synthetic_features import synthetic_run  # noqa: E402

LIMIT_MS = 2000.0


def wait(driver, script: str, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(f"return {script};")
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"waited {timeout} s for {script}; page errors: {driver.errors()}")


def show(driver, hash_: str) -> float:
    driver.execute_script(f"location.hash = '{hash_}';")
    wait(driver, f"document.body.dataset.rendered === '{hash_}'")
    return driver.execute_script("return BNCL.timings[document.body.dataset.view];")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--dims", type=int, default=256)
    p.add_argument("--loads", type=int, default=5)
    p.add_argument("--out", help="where to write the site (default: a temporary directory)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "site"
        start = time.perf_counter()
        run = synthetic_run(args.images, args.dims, draws=20)
        fabricated = time.perf_counter() - start
        start = time.perf_counter()
        build_site([run], out, progress=False)
        built = time.perf_counter() - start
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        startup = sum((out / "data" / name).stat().st_size for name in ("site.js", "run0/table.js"))
        print(f"N = {args.images}, D = {args.dims}: fabricated in {fabricated:.1f} s, site built in {built:.1f} s, "
              f"{size / 1e6:.1f} MB in all, {startup / 1e3:.0f} kB loaded before the table shows")
        driver = chromium_driver(Path(tmp) / "profile")
        try:
            rendered, painted, sort, scroll, dimension, image = [], [], [], [], [], []
            for load in range(args.loads):
                driver.get("about:blank")
                open_file(driver, out / "index.html")
                painted.append(wait(driver, "BNCL.timings.tablePainted"))
                rendered.append(driver.execute_script("return BNCL.timings.tableRendered;"))
                driver.find_element("css selector", "th[data-key=entropy]").click()
                sort.append(driver.execute_script("return BNCL.timings.sort;"))
                driver.execute_script("document.getElementById('scroller').scrollTop = 2000;")
                wait(driver, "'scroll' in BNCL.timings")
                scroll.append(driver.execute_script("return BNCL.timings.scroll;"))
                dimension.append(show(driver, f"#/r/0/d/{17 + load}"))
                image.append(show(driver, f"#/r/0/i/{(9876 + 997 * load) % args.images}"))
            errors = driver.errors()
        finally:
            driver.quit()

    def line(name: str, values: list[float]) -> None:
        print(f"{name:<40} median {statistics.median(values):7.1f} ms   min {min(values):7.1f}   max {max(values):7.1f}")

    print(f"{args.loads} loads from file:// in headless Chromium:")
    line("table rendered (since navigation start)", rendered)
    line("table painted (since navigation start)", painted)
    line("re-sort all rows", sort)
    line("re-render after a scroll", scroll)
    line("open a dimension page", dimension)
    line("open an image page", image)
    if errors:
        print(f"JavaScript errors: {errors}")
    ok = statistics.median(painted) < LIMIT_MS and not errors
    print(("PASS" if ok else "FAIL") + f": median time to a painted table {statistics.median(painted):.0f} ms "
          f"(limit {LIMIT_MS:.0f} ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
