"""Time-aware routing in real crawls: per-attempt timeouts, slow paths, slow domains."""

from __future__ import annotations

import pytest
from demo_world import OriginSpec, ProxySpec, World

from tests.conftest import (
    SILENT_FIRST_SEED,
    assert_silent_picks_were_cut,
    gateway_settings,
    run_crawl,
    silent_first_picks,
)

LONG_TIMEOUT = 60  # a DOWNLOAD_TIMEOUT no test may wait out


# Under the asyncio reactor the watch cancels the download's own task; under another reactor the
# download runs as a Deferred of its own (deadlines.py): both must cut.
@pytest.mark.parametrize("reactor", ["asyncio", "epoll"])
def test_a_silent_proxy_is_cut_short_whatever_download_timeout_is(world: World, reactor: str) -> None:
    origin = world.add_origin("a", OriginSpec(service_time=0.02))
    hole = world.add_proxy("hole", ProxySpec(mode="blackhole"), host="127.0.1.1")
    good = [world.add_proxy(f"good{i}", ProxySpec(), host=f"127.0.1.{i + 2}") for i in range(3)]
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(60)]
    settings = gateway_settings([hole.url, *(p.url for p in good)], DOWNLOAD_TIMEOUT=LONG_TIMEOUT)
    if reactor == "epoll":
        settings["TWISTED_REACTOR"] = "twisted.internet.epollreactor.EPollReactor"
    result = run_crawl(settings, urls, timeout=LONG_TIMEOUT + 30)
    result.assert_each_request_ended_once(60)
    assert len(result.by_kind("callback")) == 60
    assert world.snapshot()["proxies"]["hole"]["requests"] >= 1  # it was tried, and cut
    assert result.stat("gateway/failures/attempt_timeout") >= 1
    assert not [o for o in result.by_kind("callback") if o["proxy"] and "127.0.1.1" in o["proxy"]]
    # Cut after about a second (the floor), not after DOWNLOAD_TIMEOUT.
    assert result.elapsed < LONG_TIMEOUT / 4, result.elapsed


def test_a_domain_slow_through_every_proxy_is_never_cut(world: World) -> None:
    origin = world.add_origin("slow", OriginSpec(service_time=1.2))
    proxies = [world.add_proxy(f"p{i}", ProxySpec(), host=f"127.0.1.{i + 1}") for i in range(3)]
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(16)]
    settings = gateway_settings([p.url for p in proxies], DOWNLOAD_TIMEOUT=30, CONCURRENT_REQUESTS_PER_DOMAIN=4)
    result = run_crawl(settings, urls)
    assert len(result.by_kind("callback")) == 16
    assert result.stat("gateway/failures/attempt_timeout") == 0
    assert result.stat("downloader/request_count") == 16


def test_a_slow_healthy_proxy_is_avoided_but_never_taken_for_dead(world: World) -> None:
    origin = world.add_origin("a", OriginSpec(service_time=0.02))
    slow = world.add_proxy("slow", ProxySpec(latency=0.8), host="127.0.1.1")
    fast = [world.add_proxy(f"fast{i}", ProxySpec(), host=f"127.0.1.{i + 2}") for i in range(3)]
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(150)]
    settings = gateway_settings([slow.url, *(p.url for p in fast)], DOWNLOAD_TIMEOUT=30)
    result = run_crawl(settings, urls)
    assert len(result.by_kind("callback")) == 150
    # Never ejected or retired as a proxy; whatever it carried, it answered.
    assert result.stat("gateway/ejections/count") == 0
    assert result.stat("gateway/proxies/retired") == 0
    served = world.snapshot()["proxies"]
    assert served["slow"]["requests"] <= 150 * 0.1, served["slow"]  # the fast ones carry the crawl


def test_a_crawl_whose_first_picks_are_silent_does_not_wait_out_download_timeout(world: World) -> None:
    urls, proxies = silent_first_picks(world)
    settings = gateway_settings(proxies, DOWNLOAD_TIMEOUT=LONG_TIMEOUT, GATEWAY_SEED=SILENT_FIRST_SEED)
    result = run_crawl(settings, urls, timeout=LONG_TIMEOUT + 30)
    # Nothing came back for a second (RFC 6298's first timeout): only the two silent proxies can
    # do that.
    assert_silent_picks_were_cut(result, LONG_TIMEOUT)
    assert "nothing has come back in 1.00 s" in result.log
