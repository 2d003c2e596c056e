"""Per-domain concurrency: enforced at the origin, lowered by origin overload, never by proxies."""

from __future__ import annotations

from demo_world import OriginSpec, ProxySpec, World

from tests.conftest import gateway_settings, run_crawl


def test_slot_limit_holds_under_asyncio_reactor(world: World) -> None:
    # Scrapy 2.19's own downloader lets ~15 through here; GatewayDownloader must hold 2.
    origin = world.add_origin("a", OriginSpec(service_time=0.05))
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(40)]
    result = run_crawl(gateway_settings([], CONCURRENT_REQUESTS_PER_DOMAIN=2), urls)
    assert len(result.by_kind("callback")) == 40
    assert world.snapshot()["origins"]["a"]["max_in_flight"] <= 2


def test_overloaded_origin_is_throttled_not_hammered(world: World) -> None:
    origin = world.add_origin("a", OriginSpec(capacity=3, service_time=0.05))
    for i in range(4):
        world.add_proxy(f"p{i}", ProxySpec())
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(300)]
    settings = gateway_settings(
        [p.url for p in world.proxies.values()], CONCURRENT_REQUESTS_PER_DOMAIN=8, GATEWAY_BACKOFF_BASE=0.1
    )
    result = run_crawl(settings, urls)
    result.assert_each_request_ended_once(300)
    assert len(result.by_kind("callback")) == 300
    snap = world.snapshot()["origins"]["a"]
    assert result.stat("gateway/concurrency/decreases") >= 1
    # Overload errors stay a small share of what the origin saw (AIMD sawtooth, not a storm).
    assert snap["overload"] <= 0.12 * snap["requests"], snap
    # The overload was the origin's: no proxy was taken out for it.
    assert result.stat("gateway/ejections/count") == 0
