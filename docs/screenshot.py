"""Make docs/web-overview.png: a few hours of a small shop's queue in a fresh SQLite file,
served by ``tickrun web`` and photographed by headless Chromium (Debian's ``chromium``).

    .venv/bin/python docs/screenshot.py        # rewrites docs/web-overview.png
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from playwright.sync_api import sync_playwright
from sqlalchemy import insert

from tickrun import clock
from tickrun.database import open_engine
from tickrun.migrations import init_schema
from tickrun.schema import attempts, runs, tasks

OUT = Path(__file__).resolve().parent / "web-overview.png"
TASKS = [("send_welcome_email", "default"), ("resize_image", "media"), ("sync_crm", "default")]


def fill(url: str) -> None:
    engine = open_engine(url)
    init_schema(engine)
    now = clock.now()
    rnd = random.Random(15)
    with engine.begin() as conn:
        for minute in range(6 * 60, 0, -3):
            at = now - timedelta(minutes=minute)
            conn.execute(
                insert(runs).values(
                    started_at=at,
                    finished_at=at + timedelta(seconds=20),
                    host="web-1",
                    worker="web-1:812",
                    pid=812,
                    claimed=5,
                    succeeded=5,
                    retried=0,
                    dead=0,
                    exit_code=0,
                )
            )
            for _ in range(rnd.randint(2, 9)):
                name, queue = rnd.choice(TASKS)
                failed = rnd.random() < (0.25 if 120 < minute < 150 else 0.04)
                status = "dead" if failed and rnd.random() < 0.15 else "succeeded"
                task_id = conn.execute(
                    insert(tasks).values(
                        name=name,
                        queue=queue,
                        priority=0,
                        status=status,
                        payload=json.dumps({"user_id": rnd.randint(1, 9999)}),
                        run_at=at,
                        attempts=1,
                        max_attempts=3,
                        created_at=at,
                        started_at=at,
                        finished_at=at + timedelta(seconds=1),
                        last_error="TimeoutError: CRM did not answer in 10 s" if failed else None,
                    )
                ).inserted_primary_key[0]
                conn.execute(
                    insert(attempts).values(
                        task_id=task_id,
                        attempt=1,
                        started_at=at,
                        finished_at=at + timedelta(seconds=1),
                        worker="web-1:812",
                        outcome="failed" if failed else "succeeded",
                        error="TimeoutError: CRM did not answer in 10 s" if failed else None,
                    )
                )
        for i in range(4):
            conn.execute(
                insert(tasks).values(
                    name="send_welcome_email",
                    queue="default",
                    priority=0,
                    status="pending",
                    payload=json.dumps({"user_id": 100 + i}),
                    run_at=now - timedelta(seconds=40),
                    claimable_at=now - timedelta(seconds=40),
                    attempts=0,
                    max_attempts=3,
                    created_at=now - timedelta(minutes=1),
                )
            )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/shop.db"
        fill(url)
        server = subprocess.Popen(
            [sys.executable, "-m", "tickrun", "--db", url, "web", "--bind", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            found = re.search(r"serving (\S+)", server.stdout.readline())
            assert found, "tickrun web did not start"
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"]
                )
                page = browser.new_page(viewport={"width": 1200, "height": 820})
                page.goto(found.group(1) + "?window=6h")
                page.screenshot(path=str(OUT))
                browser.close()
        finally:
            server.terminate()
            server.wait(30)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
