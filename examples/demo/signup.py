"""Transactional enqueue: a user row and their welcome email commit together, or not at all.

    python signup.py 7 ada@example.com           # both the user and the task exist
    python signup.py 8 bob@example.com --fail    # the signup fails: neither exists

The task is inserted with ``connection=`` inside the application's own transaction (here an ORM
``Session``; a Core ``Connection`` from ``engine.begin()`` works the same way).
"""

from __future__ import annotations

import os
import sys

from jobs import app
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert
from sqlalchemy.orm import Session

metadata = MetaData()
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(200), nullable=False),
)


def sign_up(session: Session, user_id: int, email: str, fail: bool) -> int:
    session.execute(insert(users).values(id=user_id, email=email))
    task_id = app.enqueue(
        "send_welcome_email",
        {"user_id": user_id, "email": email},
        key=f"welcome:{user_id}",
        connection=session,
    )
    if fail:
        raise RuntimeError("the payment provider rejected the signup")
    return task_id


def main(argv: list[str]) -> int:
    user_id, email, fail = int(argv[0]), argv[1], "--fail" in argv
    engine = create_engine(os.environ.get("TICKRUN_DATABASE_URL", "sqlite:///demo.db"))
    metadata.create_all(engine)
    try:
        with Session(engine) as session, session.begin():
            task_id = sign_up(session, user_id, email, fail)
    except RuntimeError as exc:
        print(f"signup of user {user_id} rolled back ({exc}): no user row, no task")
        return 0
    print(f"user {user_id} signed up; welcome email is task {task_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
