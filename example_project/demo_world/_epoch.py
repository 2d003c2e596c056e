"""The world's shared clock: the moment it received its first request.

Time-scheduled failures (a proxy's `outage`, an origin's `closed_for_seconds`) count from this one
instant, so every proxy and origin of a world agrees on when an outage starts and ends, whichever
of them the client happened to reach first. Used on the world loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Epoch:
    def __init__(self) -> None:
        self.at: float | None = None  # time.monotonic() of the first request; None before it
        self._waiting: list[tuple[float, Callable[[], None]]] = []

    def mark(self, now: float) -> None:
        """Called on every request; only the first one sets the epoch and starts the timers."""
        if self.at is not None:
            return
        self.at = now
        loop = asyncio.get_running_loop()
        for delay, callback in self._waiting:
            loop.call_later(delay, callback)
        self._waiting.clear()

    def call_after(self, delay: float, callback: Callable[[], None]) -> None:
        """Run `callback` on the world loop `delay` seconds after the epoch (once it is set)."""
        if self.at is None:
            self._waiting.append((delay, callback))
        else:
            asyncio.get_running_loop().call_later(delay, callback)

    def since(self, now: float) -> float | None:
        return None if self.at is None else now - self.at

    def reset(self) -> None:
        # Timers already started keep running; a reset world starts a new epoch at its next request.
        self.at = None
