"""What a failure is recorded as: ``Type: message`` and a traceback, each bounded.

Pure: used by the runner for handler errors and by the loader for import errors.
"""

from __future__ import annotations

import traceback as tb

MAX_TEXT_BYTES = 64 * 1024


def bounded(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, keeping its head and its tail."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw.decode("utf-8")  # lone surrogates, replaced: no driver can store them
    marker = f"\n... [{len(raw) - limit} bytes cut] ...\n".encode()
    keep = (limit - len(marker)) // 2
    head = raw[:keep].decode("utf-8", "ignore")
    tail = raw[-keep:].decode("utf-8", "ignore")
    return head + marker.decode() + tail


def describe(exc: BaseException) -> tuple[str, str]:
    """(``Type: message``, traceback), each bounded; works when ``str(exc)`` itself raises."""
    kind = type(exc).__qualname__
    try:
        message = str(exc)
    except BaseException as inner:  # noqa: BLE001 - a broken __str__ must not hide the failure
        message = f"<str() of the exception raised {type(inner).__qualname__}>"
    try:
        trace = "".join(tb.format_exception(exc))
    except BaseException:  # noqa: BLE001
        trace = f"{kind}: <traceback could not be formatted>"
    return bounded(f"{kind}: {message}" if message else kind), bounded(trace)
