"""A cancellation that the Redis client swallows still ends the fleet's waits (fleet.cancellations).

redis-py awaits its socket writes with asyncio.wait_for, which in Python 3.11 returns the write's
result instead of raising when the cancellation arrives as the write completes. The command then
returns normally in a task that was cancelled. These tests stand in such a command for Redis: one
that catches the cancellation and returns its reply.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import pytest
from scrapy.statscollectors import MemoryStatsCollector
from scrapy.utils.test import get_crawler

from scrapy_gateway.core.concurrency import ConcurrencyControl
from scrapy_gateway.fleet import FleetLeases

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 does not count cancellations")


class _Swallowing:
    """Commands that take a while; the first one cancelled answers anyway (as redis-py can)."""

    def __init__(self) -> None:
        self.swallowed = 0

    async def __call__(self, reply: Any) -> Any:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed += 1
        return reply


class _Client:
    """The client calls the leases make besides the lease script."""

    def __init__(self) -> None:
        self.removed: list[tuple[Any, ...]] = []

    async def zrem(self, *args: Any) -> int:
        self.removed.append(args)
        return 1


def _leases(reply: list[int]) -> tuple[FleetLeases, _Client]:
    stats = MemoryStatsCollector(get_crawler())
    control = ConcurrencyControl(minimum=1, beta=0.7, initial=2)
    leases = FleetLeases("redis://127.0.0.1:1/0", "test", 1.0, stats, time.monotonic, control)
    client = _Client()
    leases._client = client
    swallowing = _Swallowing()
    leases._acquire = lambda keys, args: swallowing(reply)
    return leases, client


@pytest.mark.parametrize("granted", [0, 1])
def test_a_lease_request_cancelled_under_a_swallowing_client_ends(granted: int) -> None:
    """Refused (the slot is full: it would ask again forever) or granted (the lease is given back)."""

    async def scenario() -> list[tuple[Any, ...]]:
        leases, client = _leases([granted, 2, 0, 2])
        task = asyncio.ensure_future(leases.acquire("slot", 2))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
        await asyncio.gather(*leases._releases)
        return client.removed

    removed = asyncio.run(scenario())
    assert len(removed) == 1 and removed[0][0] == "test:inflight:slot"  # whatever Redis did, it is given back


def test_a_redis_call_cancelled_under_a_swallowing_client_raises() -> None:
    async def scenario() -> None:
        leases, _client = _leases([0, 2, 0, 2])
        task = asyncio.ensure_future(leases.call(_Swallowing()("OK")))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)

    asyncio.run(scenario())


def test_a_call_made_while_a_cancellation_is_handled_returns() -> None:
    """Cleanup after a cancellation (close() in a cancelled task) still gets its replies."""

    async def scenario() -> Any:
        leases, _client = _leases([0, 2, 0, 2])
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return await leases.call(asyncio.sleep(0, result="OK"))
        return None

    async def main() -> Any:
        task = asyncio.ensure_future(scenario())
        await asyncio.sleep(0.05)
        task.cancel()
        return await task

    assert asyncio.run(main()) == "OK"
