"""``tickrun web`` in a real browser, on every database: headless Chromium (Debian's
``chromium`` package) driven by Playwright against a real ``tickrun web`` process.

Open the overview, follow a failure to its task page, retry the dead task there and see it
leave the dead-letter queue, purge another after the confirmation dialog, and check that a
payload holding a script is shown as text and never runs. Screenshots are saved under
tests/artifacts/ (or $TICKRUN_TEST_ARTIFACTS).

Without a browser these tests skip and say why; with TICKRUN_TEST_REQUIRE_BROWSER=1 (CI) they
fail instead. The browser is the system's (TICKRUN_TEST_CHROMIUM, default /usr/bin/chromium):
Playwright never downloads one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.conftest import ROOT
from tests.helpers.seeds import add_attempt, add_task, task_row
from tickrun import clock

REQUIRE = os.environ.get("TICKRUN_TEST_REQUIRE_BROWSER") == "1"
ARTIFACTS = Path(os.environ.get("TICKRUN_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts")
MIN = timedelta(minutes=1)
XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
DECLINED = "CardDeclined: card declined for order 1001"


def _chromium() -> str | None:
    given = os.environ.get("TICKRUN_TEST_CHROMIUM")
    if given:
        return given if os.access(given, os.X_OK) else None
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (TICKRUN_TEST_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install -e '.[test]'")
    try:
        import starlette  # noqa: F401
    except ImportError:
        _unavailable("the web extra is not installed: pip install -e '.[web]'")
    path = _chromium()
    if path is None:
        _unavailable(
            "no Chromium at /usr/bin/chromium (or TICKRUN_TEST_CHROMIUM): apt-get install chromium"
        )
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(
            executable_path=path, headless=True, args=["--no-sandbox"]
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"the page's script failed: {errors}"


def shop(engine: Engine) -> dict[str, int]:
    """A queue to look at, in real time (the server's clock is not frozen)."""
    now = clock.now()
    ids = {
        "dead": add_task(
            engine,
            name="charge_card",
            queue="payments",
            payload=json.dumps({"order": 1001, "amount": "49.99"}),
            status="dead",
            attempts=3,
            max_attempts=3,
            run_at=now - 20 * MIN,
            created_at=now - 30 * MIN,
            finished_at=now - 5 * MIN,
            last_error="CardDeclined: card declined for order 1001",
            last_traceback=(
                'Traceback (most recent call last):\n  File "jobs.py", line 12, in charge_card\n'
                "CardDeclined: card declined for order 1001"
            ),
        ),
        "stale": add_task(
            engine,
            name="import_feed",
            status="dead",
            run_at=now - 90 * MIN,
            created_at=now - 95 * MIN,
            finished_at=now - 80 * MIN,
            last_error="ConnectionError: supplier down",
        ),
        "xss": add_task(
            engine,
            name="send_email",
            payload=json.dumps({"body": XSS}),
            run_at=now - 2 * MIN,
            created_at=now - 3 * MIN,
        ),
    }
    for attempt in (1, 2, 3):
        add_attempt(
            engine,
            ids["dead"],
            attempt,
            "failed",
            now - (20 - 5 * attempt) * MIN,
            now - (20 - 5 * attempt) * MIN + timedelta(seconds=2),
            "CardDeclined: card declined for order 1001",
            traceback=f"Traceback (most recent call last):\n{DECLINED}",
        )
    for i in range(6):
        done = add_task(
            engine,
            name="send_email",
            status="succeeded",
            attempts=1,
            run_at=now - (50 - 8 * i) * MIN,
            created_at=now - (51 - 8 * i) * MIN,
            finished_at=now - (49 - 8 * i) * MIN,
        )
        add_attempt(
            engine, done, 1, "succeeded", now - (50 - 8 * i) * MIN, now - (49 - 8 * i) * MIN
        )
    return ids


def test_follow_a_failure_retry_it_and_see_it_leave_the_dlq(
    db_url: str, engine: Engine, backend: str, project: Path, page: Any
) -> None:
    from tests.helpers.servers import Server

    ids = shop(engine)
    server = Server(project, db_url, "--allow-actions")
    try:
        page.goto(server.url)
        assert page.locator("h1").inner_text() == "Overview"
        assert page.locator("#dead-count").inner_text() == "2"
        assert page.locator(".chart.ok rect").count() > 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"overview-{backend}.png"), full_page=True)

        # A failure, followed to its task page: the traceback is there.
        page.locator(f'#recent-failures a[href="/tasks/{ids["dead"]}"]').first.click()
        page.wait_for_url(f"**/tasks/{ids['dead']}")
        assert page.locator("#task-status").inner_text() == "dead"
        assert (
            "CardDeclined: card declined for order 1001"
            in page.locator("#last-failure").inner_text()
        )
        assert '"order": 1001' in page.locator("#payload").inner_text()
        page.screenshot(path=str(ARTIFACTS / f"task-{backend}.png"), full_page=True)

        # Retry it from there: back to pending, and gone from the dead-letter queue.
        page.locator("button.retry").click()
        page.wait_for_load_state()
        assert "retried 1 dead task" in page.locator(".notice").inner_text()
        assert page.locator("#task-status").inner_text() == "pending"
        page.get_by_role("link", name="Dead letters").click()
        page.wait_for_url("**/dlq")
        listed = page.locator('td[data-field="id"] a').all_inner_texts()
        assert str(ids["dead"]) not in listed and str(ids["stale"]) in listed
        assert task_row(engine, ids["dead"]).status == "pending"

        # Purge asks first: dismissed, nothing happens; accepted, the task is gone.
        page.once("dialog", lambda dialog: dialog.dismiss())
        page.locator("button.danger").click()
        assert page.locator('td[data-field="id"] a').all_inner_texts() == [str(ids["stale"])]
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("button.danger").click()
        page.wait_for_selector("text=purged 1 dead task")
        assert page.locator("text=(the dead-letter queue is empty)").count() == 1
        page.screenshot(path=str(ARTIFACTS / f"dlq-{backend}.png"), full_page=True)
    finally:
        code, err = server.stop()
    assert code == 0, err


def test_a_script_in_a_payload_is_text_and_never_runs(
    db_url: str, engine: Engine, project: Path, page: Any
) -> None:
    from tests.helpers.servers import Server

    ids = shop(engine)
    server = Server(project, db_url)
    try:
        page.goto(f"{server.url}tasks/{ids['xss']}")
        assert "<script>window.__pwned = 1</script>" in page.locator("#payload").inner_text()
        page.wait_for_load_state("load")
        assert page.evaluate("window.__pwned") is None
        page.goto(f"{server.url}due")
        # The page's own script runs (relative times are kept current by it).
        assert page.locator("[data-rel]").count() > 0
    finally:
        server.stop()
