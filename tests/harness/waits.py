"""Waits on conditions for the tests, never for a fixed time: the deadline is only a safety net."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL = 0.02


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> bool:
    """Whether `condition()` held within `timeout` seconds (polled every 20 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL)
    return True


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Wait until `condition()` holds; fail naming `what` after `timeout` seconds."""
    if not wait_for(condition, timeout):
        raise AssertionError(f"gave up after {timeout:.0f} s waiting until {what}")
