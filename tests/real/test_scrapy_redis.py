"""scrapy-redis's persistent scheduler and the gateway's waiting retries, with a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from demo_world import OriginSpec, ProxySpec, World

from tests.conftest import gateway_settings, run_crawl
from tests.real.servers import Servers


@pytest.fixture
def servers() -> Iterator[Servers]:
    with Servers() as started:
        yield started


def test_retries_waiting_at_a_stop_survive_in_the_persistent_queue(world: World, servers: Servers) -> None:
    redis = servers.redis()
    # Every page's first hit: 503 with Retry-After 5 s, so every retry is waiting when the crawl
    # is stopped after 2.5 s.
    origin = world.add_origin("a", OriginSpec(retry_after=5.0))
    proxies = [world.add_proxy(f"p{i}", ProxySpec(), host=f"127.0.1.{i + 1}") for i in range(3)]
    world.start()
    settings = gateway_settings(
        [p.url for p in proxies],
        SCHEDULER="scrapy_redis.scheduler.Scheduler",
        DUPEFILTER_CLASS="scrapy_redis.dupefilter.RFPDupeFilter",
        SCHEDULER_PERSIST=True,
        REDIS_URL=redis.url,
        CLOSESPIDER_TIMEOUT=2.5,
    )
    urls = [origin.url(f"/p/{i}") for i in range(10)]
    stopped = run_crawl(settings, urls, dont_filter=False)
    assert stopped.close_reason == "closespider_timeout"
    assert stopped.by_kind("errback") == []  # none given up on: they are in Redis
    assert stopped.stat("gateway/waiting/persisted") == 10 - len(stopped.by_kind("callback"))
    assert stopped.stat("gateway/waiting/persisted") > 0
    # The same crawl again: its start requests are duplicates now; the saved retries come back,
    # wait out the rest of their Retry-After and succeed.
    resumed = run_crawl({**settings, "CLOSESPIDER_TIMEOUT": 60}, urls, dont_filter=False)
    done = [o["url"] for o in stopped.by_kind("callback") + resumed.by_kind("callback")]
    assert sorted(done) == sorted(urls)
    assert resumed.by_kind("errback") == []
    assert world.snapshot()["origins"]["a"]["early"] == 0  # never before its Retry-After
