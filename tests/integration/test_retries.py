"""Retries: backoff and Retry-After, attempts and meta keys, and waits that hold no concurrency."""

from __future__ import annotations

from demo_world import OriginSpec, ProxySpec, World

from tests.conftest import gateway_settings, run_crawl


def test_retry_after_is_honoured_exactly(world: World) -> None:
    origin = world.add_origin("ra", OriginSpec(retry_after=1.0))
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(10)]
    result = run_crawl(gateway_settings([]), urls)
    result.assert_each_request_ended_once(10)
    assert len(result.by_kind("callback")) == 10
    snap = world.snapshot()["origins"]["ra"]
    assert snap["early"] == 0, snap
    assert result.stat("gateway/retry_after/count") == 10
    assert all(o["at"] >= 1.0 for o in result.by_kind("callback"))


def test_retry_after_http_date_form(world: World) -> None:
    origin = world.add_origin("ra", OriginSpec(retry_after=2.0, retry_after_date=True))
    world.start()
    result = run_crawl(gateway_settings([]), [origin.url(f"/p/{i}") for i in range(5)])
    assert len(result.by_kind("callback")) == 5
    assert world.snapshot()["origins"]["ra"]["early"] == 0


def test_out_of_attempts_delivers_the_last_response_once(world: World) -> None:
    origin = world.add_origin("down", OriginSpec(status_override=502))
    world.start()
    # One page, so that its 1 + 3 attempts stay under the 5 failures that make an outage (a gate
    # would hold the retries at no cost to the allowance: test_outages.py).
    urls = [origin.url("/p/0")]
    result = run_crawl(gateway_settings([], GATEWAY_MAX_RETRIES=3, GATEWAY_BACKOFF_BASE=0.05), urls)
    result.assert_each_request_ended_once(1)
    errors = result.by_kind("errback")
    assert [(o["error"], o["status"]) for o in errors] == [("HttpError", 502)]
    # Exactly 1 + 3 attempts: RetryMiddleware did not retry again after the gateway gave up.
    assert world.snapshot()["origins"]["down"]["requests"] == 4
    assert result.stat("gateway/retry/max_reached") == 1
    assert result.stat("retry/count") == 0


def test_meta_keys_dont_retry_max_retry_times_and_skip(world: World) -> None:
    a = world.add_origin("a", OriginSpec(status_override=503))
    world.start()
    # (RetryMiddleware stays on: once the gateway gives up it sets dont_retry, so it never adds one)
    settings = gateway_settings([], GATEWAY_BACKOFF_BASE=0.05)
    assert len(run_crawl(settings, [a.url("/x")], meta={"dont_retry": True}).by_kind("errback")) == 1
    assert world.snapshot()["origins"]["a"]["requests"] == 1
    run_crawl(settings, [a.url("/y")], meta={"max_retry_times": 1})
    assert world.snapshot()["origins"]["a"]["requests"] == 1 + 2
    skipped = run_crawl(settings, [a.url("/z")], meta={"gateway_skip": True})
    assert skipped.stat("gateway/requests") == 0
    # Left alone by the gateway, it is stock Scrapy's: RetryMiddleware's two instant retries.
    assert skipped.stat("retry/count") == 2
    assert world.snapshot()["origins"]["a"]["requests"] == 1 + 2 + 3


def test_storming_domain_does_not_slow_the_healthy_one(world: World) -> None:
    healthy = world.add_origin("healthy", OriginSpec(service_time=0.02))
    storm = world.add_origin("storm", OriginSpec(fail_for_seconds=4.0))
    world.start()
    urls = [storm.url(f"/s/{i}") for i in range(30)] + [healthy.url(f"/h/{i}") for i in range(60)]
    # Two global slots only: a retry that waited inside the downloader would starve "healthy".
    settings = gateway_settings([], CONCURRENT_REQUESTS=2, GATEWAY_BACKOFF_BASE=1.0, GATEWAY_MAX_RETRIES=8)
    result = run_crawl(settings, urls)
    result.assert_each_request_ended_once(90)
    assert len(result.by_kind("callback")) == 90
    healthy_done = max(o["at"] for o in result.by_kind("callback") if healthy.host in o["url"])
    storm_done = max(o["at"] for o in result.by_kind("callback") if storm.host in o["url"])
    # 60 pages at 20 ms over 2 slots is ~0.6 s of work; the storm lasts 4 s.
    assert healthy_done < 3.0, (healthy_done, storm_done)
    assert storm_done > 4.0
    assert result.stat("gateway/waiting/max") >= 5


def test_budget_paces_retries_against_a_failing_origin(world: World) -> None:
    # Four in five fail, but it keeps answering: an outage gate (one down for good would hold the
    # retries instead) seldom opens, so the retries flow and the budget paces them.
    origin = world.add_origin("failing", OriginSpec(flaky=0.8, seed=1))
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(60)]
    settings = gateway_settings(
        [],
        GATEWAY_MAX_RETRIES=3,
        GATEWAY_BACKOFF_BASE=0.01,
        GATEWAY_BACKOFF_MAX=0.01,
        GATEWAY_RETRY_BUDGET_RATIO=0.1,
        GATEWAY_RETRY_BUDGET_BURST=5,
        GATEWAY_RETRY_BUDGET_MIN_PER_SECOND=20,
    )
    result = run_crawl(settings, urls)
    result.assert_each_request_ended_once(60)
    assert result.stat("gateway/budget/exhausted") > 0
    # About 120 retries at ~20/s beyond the burst: the budget, not the 10 ms backoff, sets the pace.
    assert result.elapsed > 4.0, (result.elapsed, result.stat("gateway/retry/count"))


def test_pinned_proxy_is_kept_across_retries(world: World) -> None:
    origin = world.add_origin("a", OriginSpec(flaky=0.5, seed=3))
    pinned = world.add_proxy("pinned", ProxySpec())
    other = world.add_proxy("other", ProxySpec())
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(20)]
    settings = gateway_settings([pinned.url, other.url], GATEWAY_BACKOFF_BASE=0.05, GATEWAY_MAX_RETRIES=10)
    result = run_crawl(settings, urls, meta={"gateway_proxy": pinned.url})
    assert len(result.by_kind("callback")) == 20
    assert result.stat("gateway/retry/count") > 0
    assert world.snapshot()["proxies"]["other"]["requests"] == 0
