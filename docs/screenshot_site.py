"""Photograph the built documentation site: its home page and one guide page, served over
HTTP on loopback and taken by headless Chromium (Debian's ``chromium``) into docs/screenshots/.

    make docs && .venv/bin/python docs/screenshot_site.py

Nothing here runs under pytest: the pictures are for people (the README and reviews), and a
look at them is the check that the theme and the navigation render.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

DOCS = Path(__file__).resolve().parent
SITE = DOCS.parent / "site"
OUT = DOCS / "screenshots"
CHROMIUM = os.environ.get("TICKRUN_TEST_CHROMIUM", "/usr/bin/chromium")
# page on the site -> picture
PAGES = {"": "home.png", "guides/flow-control/": "guide-flow-control.png"}


def shoot(url: str, picture: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--screenshot={picture}",
                "--window-size=1280,900",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


def main() -> int:
    if not (SITE / "index.html").is_file():
        print("site/ is not built: run `make docs` first", file=sys.stderr)
        return 2
    handler = functools.partial(Quiet, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        OUT.mkdir(exist_ok=True)
        for page, name in PAGES.items():
            url = f"http://127.0.0.1:{server.server_address[1]}/{page}"
            shoot(url, OUT / name)
            print(f"{url} -> {(OUT / name).relative_to(DOCS.parent)}")
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
