"""A PNG of one page of a feature browser site, taken with headless Chromium (the README's
``docs/browser.png``).

    python scripts/screenshot_browser.py SITE_DIR '#/r/0/d/17' docs/browser.png [--size 1400x900] [--colors 256]

The page is opened from ``file://``, the view named by the hash is waited for, and the screenshot
is reduced to a palette of ``--colors`` colours (0 keeps full colour) to keep the file small.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import chromium_driver, open_file  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("site", type=Path)
    p.add_argument("hash", help="the view, e.g. '#/' or '#/r/0/d/17'")
    p.add_argument("out", type=Path)
    p.add_argument("--size", default="1400x900", help="window size WIDTHxHEIGHT (default 1400x900)")
    p.add_argument("--colors", type=int, default=256, help="palette size of the PNG (0: full colour)")
    args = p.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        driver = chromium_driver(Path(tmp) / "profile")
        try:
            driver.set_window_size(width, height)
            open_file(driver, args.site / "index.html")
            driver.execute_script(f"location.hash = {json.dumps(args.hash)};")
            end = time.monotonic() + 30
            while driver.execute_script("return document.body.dataset.rendered;") != args.hash:
                if time.monotonic() > end:
                    raise SystemExit(f"the page did not render {args.hash}: {driver.errors()}")
                time.sleep(0.1)
            driver.execute_script("return Promise.all([...document.images].map(i => i.decode().catch(() => null)));")
            time.sleep(0.3)
            png = driver.get_screenshot_as_png()
            errors = driver.errors()
        finally:
            driver.quit()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    if args.colors:
        image = image.quantize(colors=args.colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(buffer.getvalue())
    print(f"wrote {args.out} ({len(buffer.getvalue()) / 1e3:.0f} kB, {image.width}x{image.height})"
          + (f"; page errors: {errors}" if errors else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
