"""The demo application: a small shop's background jobs, run by ``tickrun run``.

Each handler leaves its result under ``out/`` so you can see what it did. Delivery is
at-least-once, so every handler is idempotent: running one twice rewrites the same file.

- ``send_welcome_email`` succeeds (it "sends" by writing the message to ``out/outbox/``).
- ``resize_image`` succeeds; it has a ``timeout``, so it runs in a child process.
- ``notify_partner`` finds the partner's API busy on its first attempt and raises ``Retry``;
  the next ``tickrun run`` delivers it.
- ``charge_card`` meets a declined card and raises ``Fail``: straight to the dead-letter queue.
- ``import_feed`` raises on every attempt and is dead once its 2 attempts are used up.
- ``weekly_digest`` runs on a cron schedule, Mondays at 09:00 Paris time.
- ``export_orders`` writes a CSV, returns where it is (its result, which
  ``status_endpoint.py`` serves as JSON) and enqueues ``send_export_email`` as a follow-up,
  committed only with the export's success: a chain of two steps.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tickrun import App, Fail, Retry, TaskContext

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

# The demo script sets TICKRUN_DATABASE_URL; this is the fallback when it is not set.
app = App(database_url="sqlite:///demo.db")


def _write(path: Path, text: str) -> Path:
    """Write atomically, so a crash mid-write never leaves half a file for the next attempt."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


@app.task(priority=10, max_attempts=3)
def send_welcome_email(user_id: int, email: str) -> None:
    _write(
        OUT / "outbox" / f"welcome-{user_id}.eml",
        f"To: {email}\nSubject: Welcome!\n\nHello user {user_id}, thanks for signing up.\n",
    )


@app.task(timeout=30, queue="media")
def resize_image(src: str, width: int) -> None:
    """Shrink a grey-scale PGM image (nearest neighbour) to ``width`` pixels wide."""
    tokens = [
        token
        for line in (HERE / src).read_text().splitlines()
        if not line.startswith("#")
        for token in line.split()
    ]
    if tokens[0] != "P2":
        raise Fail(f"{src} is not an ASCII PGM image")
    w, h, maxval = int(tokens[1]), int(tokens[2]), int(tokens[3])
    pixels = [int(t) for t in tokens[4 : 4 + w * h]]
    height = max(1, h * width // w)
    rows = [
        " ".join(str(pixels[(y * h // height) * w + x * w // width]) for x in range(width))
        for y in range(height)
    ]
    header = f"P2\n{width} {height}\n{maxval}\n"
    _write(OUT / "thumbs" / f"{Path(src).stem}-{width}.pgm", header + "\n".join(rows) + "\n")


@app.task(context=True, max_attempts=5)
def notify_partner(ctx: TaskContext, order_id: int) -> None:
    # The partner's API answers "busy" the first time (a marker file stands in for its state).
    busy_marker = OUT / "partner-was-busy"
    if not busy_marker.exists():
        _write(busy_marker, "")
        raise Retry(delay=2)
    body = {"order_id": order_id, "task_id": ctx.task_id, "attempt": ctx.attempt}
    _write(OUT / "partner" / f"order-{order_id}.json", json.dumps(body) + "\n")


@app.task(max_attempts=3)
def charge_card(order_id: int, amount_cents: int, card: str) -> None:
    if card == "tok_declined":
        # Retrying cannot help: send it to the dead-letter queue for a human.
        raise Fail(f"card declined for order {order_id} ({amount_cents / 100:.2f} EUR)")
    _write(OUT / "charges" / f"order-{order_id}.txt", f"charged {amount_cents} cents\n")


@app.task(max_attempts=2, backoff=2)
def import_feed(url: str) -> None:
    raise ConnectionError(f"cannot fetch {url}: connection refused")


@app.schedule("0 9 * * 1", tz="Europe/Paris", catchup="latest", overlap="skip")
@app.task(context=True)
def weekly_digest(ctx: TaskContext) -> None:
    week = (ctx.scheduled_for or datetime.now(UTC)).strftime("%G-W%V")
    _write(OUT / "digests" / f"{week}.txt", f"digest for {week}\n")


@app.task(context=True, max_attempts=3)
def export_orders(ctx: TaskContext, user_id: int) -> dict[str, Any]:
    rows = [(1001, "49.99"), (1002, "12.50")]
    csv = "order_id,amount\n" + "".join(f"{order},{amount}\n" for order, amount in rows)
    path = _write(OUT / "exports" / f"orders-{user_id}.csv", csv)
    # The next step exists only once this one succeeded, and then exactly once.
    ctx.enqueue("send_export_email", {"user_id": user_id}, key=f"export-email:{user_id}")
    return {"path": str(path.relative_to(HERE)), "rows": len(rows)}


@app.task
def send_export_email(user_id: int) -> None:
    _write(
        OUT / "outbox" / f"export-{user_id}.eml",
        f"To: user {user_id}\nSubject: Your export is ready\n\nout/exports/orders-{user_id}.csv\n",
    )
