"""Time-scheduled failures of the demo world: they all count from the world's first request."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from demo_world import OriginSpec, ProxySpec, World


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.stop()


def status(url: str, proxy: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    try:
        with opener.open(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_proxy_outage_shares_the_worlds_clock(world: World) -> None:
    origin = world.add_origin("o")
    first = world.add_proxy("first", ProxySpec(outage=(0.3, 0.5)), host="127.0.1.1")
    second = world.add_proxy("second", ProxySpec(outage=(0.3, 0.5)), host="127.0.1.2")
    world.start()
    time.sleep(0.4)  # the clock starts at the first request, not at start()
    assert world.snapshot()["epoch"] is None
    assert status(origin.url("/a"), first.url) == 200  # the epoch: this request
    assert world.snapshot()["epoch"] is not None
    time.sleep(0.4)
    # `second` never saw a request before, yet its outage is already on: the clock is the world's.
    assert status(origin.url("/b"), second.url) == 502
    assert status(origin.url("/c"), first.url) == 502
    time.sleep(0.5)
    assert status(origin.url("/d"), second.url) == 200
    snap = world.snapshot()
    assert snap["proxies"]["first"]["own_errors"] == 1 and snap["proxies"]["second"]["own_errors"] == 1
    assert snap["origins"]["o"]["requests"] == 2  # the outage's 502s never reached the origin


def test_origin_closed_until_after_the_first_request(world: World) -> None:
    origin = world.add_origin("o", OriginSpec(closed_for_seconds=0.5))
    proxy = world.add_proxy("p", host="127.0.1.1")
    world.start()
    assert not origin.listening
    assert status(origin.url("/a"), proxy.url) == 502  # the proxy's own: connection refused
    time.sleep(0.3)
    assert status(origin.url("/b"), proxy.url) == 502
    time.sleep(0.4)
    assert origin.listening
    assert status(origin.url("/c"), proxy.url) == 200
    snap = world.snapshot()
    assert snap["proxies"]["p"]["own_errors"] == 2
    assert snap["origins"]["o"]["requests"] == 1


def test_outage_is_validated() -> None:
    with pytest.raises(ValueError, match="outage"):
        ProxySpec(outage=(-1.0, 2.0))
