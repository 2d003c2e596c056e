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


def _epoch(world: World) -> float:
    epoch = world.snapshot()["epoch"]
    assert epoch is not None
    return float(epoch)


def _wait_until(epoch: float, at: float) -> None:
    """Let the world's clock reach `at` seconds (waiting for the clock is the condition itself)."""
    time.sleep(max(0.0, epoch + at - time.monotonic()))


def _expect(url: str, proxy: str, epoch: float, window: tuple[float, float]) -> int:
    """Fetch, check the status against where the request fell on the world's clock, return it.

    Inside `window` for the whole call: 502; outside it: 200. On a loaded machine a request may
    straddle an edge of the window: then either answer is right.
    """
    before = time.monotonic() - epoch
    got = status(url, proxy)
    after = time.monotonic() - epoch
    start, end = window
    inside = start <= before and after < end
    outside = after < start or before >= end
    if inside:
        assert got == 502, (got, before, after, window)
    elif outside:
        assert got == 200, (got, before, after, window)
    return got


def test_proxy_outage_shares_the_worlds_clock(world: World) -> None:
    window = (0.5, 2.0)  # seconds after the world's first request
    origin = world.add_origin("o")
    first = world.add_proxy("first", ProxySpec(outage=(window[0], window[1] - window[0])), host="127.0.1.1")
    second = world.add_proxy("second", ProxySpec(outage=(window[0], window[1] - window[0])), host="127.0.1.2")
    world.start()
    time.sleep(0.2)  # nothing is asked of the world: its clock must not start by itself
    assert world.snapshot()["epoch"] is None
    assert status(origin.url("/a"), first.url) == 200  # the epoch: this request
    epoch = _epoch(world)
    _wait_until(epoch, 1.0)
    # `second` never saw a request before, yet its outage is already on: the clock is the world's.
    got = [_expect(origin.url("/b"), second.url, epoch, window), _expect(origin.url("/c"), first.url, epoch, window)]
    _wait_until(epoch, window[1] + 0.2)
    got.append(_expect(origin.url("/d"), second.url, epoch, window))
    snap = world.snapshot()
    own = snap["proxies"]["first"]["own_errors"] + snap["proxies"]["second"]["own_errors"]
    assert own == got.count(502)  # each 502 came from the proxy itself
    assert snap["origins"]["o"]["requests"] == 4 - own  # the outage's 502s never reached the origin


def test_origin_closed_until_after_the_first_request(world: World) -> None:
    closed = 1.0
    origin = world.add_origin("o", OriginSpec(closed_for_seconds=closed))
    proxy = world.add_proxy("p", host="127.0.1.1")
    world.start()
    assert not origin.listening
    assert status(origin.url("/a"), proxy.url) == 502  # the proxy's own: connection refused
    epoch = _epoch(world)
    second = _expect(origin.url("/b"), proxy.url, epoch, (0.0, closed))
    _wait_until(epoch, closed + 0.2)
    assert origin.listening
    assert status(origin.url("/c"), proxy.url) == 200
    snap = world.snapshot()
    assert snap["proxies"]["p"]["own_errors"] == 1 + (second == 502)
    assert snap["origins"]["o"]["requests"] == 1 + (second == 200)


def test_outage_is_validated() -> None:
    with pytest.raises(ValueError, match="outage"):
        ProxySpec(outage=(-1.0, 2.0))


def test_a_flapping_proxy_is_down_in_each_period_from_its_phase(world: World) -> None:
    origin = world.add_origin("o")
    flapper = world.add_proxy("flap", ProxySpec(flap=(1.0, 0.4, 0.5)), host="127.0.1.1")  # down 0.5-0.9, 1.5-1.9, ...
    world.start()
    assert status(origin.url("/first"), flapper.url) == 200  # the epoch: this request
    epoch = _epoch(world)
    got = []
    for k in range(2):
        _wait_until(epoch, 0.6 + k)
        got.append(_expect(origin.url(f"/down{k}"), flapper.url, epoch, (0.5 + k, 0.9 + k)))
        _wait_until(epoch, 1.0 + k)
        got.append(_expect(origin.url(f"/up{k}"), flapper.url, epoch, (0.5 + k, 0.9 + k)))
    assert world.snapshot()["proxies"]["flap"]["own_errors"] == got.count(502)


def test_the_site_bans_the_flagged_addresses_after_their_allowance_only(world: World) -> None:
    origin = world.add_origin("o", OriginSpec(ban_ips=frozenset({"127.0.1.2"}), ban_after=2))
    fine = world.add_proxy("fine", ProxySpec(), host="127.0.1.1")
    flagged = world.add_proxy("flagged", ProxySpec(), host="127.0.1.2")
    world.start()
    # The origin sees each proxy's own address: only the flagged one's third request on is refused.
    assert [status(origin.url(f"/f{i}"), flagged.url) for i in range(4)] == [200, 200, 503, 503]
    assert [status(origin.url(f"/g{i}"), fine.url) for i in range(4)] == [200] * 4
    assert world.snapshot()["origins"]["o"]["banned"] == 2
