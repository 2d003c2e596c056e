"""Chaos: 10,000 requests through random proxy and origin faults; nothing lost, nothing twice."""

from __future__ import annotations

from collections import Counter

from demo_world import OriginSpec, ProxySpec, World

from tests.conftest import gateway_settings, run_crawl

PAGES = 10_000


def test_chaos_crawl_loses_nothing_and_stats_add_up(world: World) -> None:
    origins = [
        world.add_origin("healthy"),
        world.add_origin("flaky", OriginSpec(flaky=0.1, seed=1)),
        world.add_origin("retry_after", OriginSpec(retry_after=1.0)),
        world.add_origin("storm", OriginSpec(fail_for_seconds=3.0)),
        world.add_origin("overloaded", OriginSpec(capacity=6, service_time=0.01)),
    ]
    for i in range(5):
        world.add_proxy(f"good{i}", ProxySpec())
    faults = {
        "flaky": ProxySpec(mode="flaky", flaky_p=0.3, seed=2),
        "reset": ProxySpec(mode="reset"),
        "blackhole": ProxySpec(mode="blackhole"),
        "bad_gateway": ProxySpec(mode="bad_gateway"),
        "dead": ProxySpec(mode="dead"),
        "truncate": ProxySpec(mode="truncate"),
        "garbage": ProxySpec(mode="garbage"),
        "banned": ProxySpec(banned_hosts={origins[0].host}),
    }
    for name, spec in faults.items():
        world.add_proxy(name, spec)
    world.start()
    # The retry_after origin answers every path once with 503 first; keep it to a share of pages.
    urls = [origins[i % 5].url(f"/c/{i}") for i in range(PAGES)]
    settings = gateway_settings(
        [p.url for p in world.proxies.values()],
        LOG_LEVEL="INFO",
        DOWNLOAD_TIMEOUT=1,
        CONCURRENT_REQUESTS=64,
        GATEWAY_BACKOFF_BASE=0.2,
        GATEWAY_BACKOFF_MAX=2.0,
        GATEWAY_RETRY_BUDGET_MIN_PER_SECOND=200,
        GATEWAY_MAX_RETRIES=8,
    )
    result = run_crawl(settings, urls, timeout=600)

    # Every request ends in exactly one callback or one errback; no page is delivered twice.
    numbers = Counter(o["n"] for o in result.outcomes)
    assert len(numbers) == PAGES and set(numbers.values()) == {1}
    # All pages are fetchable here (every fault is transient or avoidable): all arrive.
    assert len(result.by_kind("callback")) == PAGES, Counter(o.get("error") for o in result.by_kind("errback"))
    # Requests in = outcomes out, and the attempts add up in Scrapy's own stats.
    assert result.stat("gateway/requests") == PAGES
    attempts = result.stat("downloader/request_count")
    # Those held back as their transfer started (a gate opened while they queued) pass twice.
    assert attempts == PAGES + result.stat("gateway/retry/count") + result.stat("gateway/gates/held_at_start")
    assert result.stat("downloader/response_count") + result.stat("downloader/exception_count") == attempts
    assert result.stat("gateway/retry/max_reached") == 0
    # Faults were really injected and really handled.
    snapshot = world.snapshot()
    injected = sum(snapshot["proxies"][name]["requests"] for name in faults) + result.stat(
        "gateway/failures/proxy_refused"
    )
    assert injected > 50
    # A Retry-After is honoured whenever it reaches the crawl. An attempt that timed out (the
    # gateway's per-attempt timeout, or DOWNLOAD_TIMEOUT: on a loaded machine even a good path can
    # stall past either) after the origin had answered never brought its 503 back, so the retry of
    # that one may come early: CI once saw 1. Ignoring Retry-After would show hundreds of the 2,000.
    early = snapshot["origins"]["retry_after"]["early"]
    timed_out = result.stat("gateway/failures/attempt_timeout") + result.stat("gateway/failures/timeout")
    assert early <= timed_out, (early, timed_out)
    print(
        f"chaos: {PAGES} requests, {attempts} attempts, {result.stat('gateway/retry/count')} retries, "
        f"through faulty proxies {injected}, lost 0, duplicated 0, {result.elapsed:.1f}s"
    )
