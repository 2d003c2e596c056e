"""Outage gates in real crawls: hold and probe instead of retrying into an outage."""

from __future__ import annotations

from demo_world import OriginSpec, ProxySpec, World
from demo_world.proxy import Proxy

from tests.conftest import gateway_settings, run_crawl


def _pool(world: World, n: int, **spec: object) -> list[Proxy]:
    return [world.add_proxy(f"p{i}", ProxySpec(**spec), host=f"127.0.1.{i + 1}") for i in range(n)]  # type: ignore[arg-type]


def _urls(proxies: list[Proxy]) -> list[str]:
    return [p.url for p in proxies]


def test_a_domain_outage_is_waited_out_by_probes_and_costs_no_retry(world: World) -> None:
    origin = world.add_origin("down", OriginSpec(fail_for_seconds=3.0, service_time=0.01))
    proxies = _pool(world, 4)
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(40)]
    # Three retries each: retrying into a 3-second outage (without a gate) would lose most pages.
    result = run_crawl(gateway_settings(_urls(proxies), GATEWAY_MAX_RETRIES=3), urls)
    result.assert_each_request_ended_once(40)
    assert len(result.by_kind("callback")) == 40
    assert result.stat("gateway/gates/opened") >= 1
    assert result.stat("gateway/gates/closed") == result.stat("gateway/gates/opened")
    assert result.stat("gateway/gates/probes") >= 1
    # During the outage the origin saw the pages' first tries and the probes, not a retry stream.
    failed = world.snapshot()["origins"]["down"]["statuses"].get("502", 0)
    assert failed <= 40 + 3.0 / 0.5 * 1.2 + 8, failed
    assert "answers again after" in result.log


def test_a_stall_longer_than_the_setting_ends_in_errbacks(world: World) -> None:
    origin = world.add_origin("gone", OriginSpec(status_override=502))
    proxies = _pool(world, 3)
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(12)]
    result = run_crawl(gateway_settings(_urls(proxies), GATEWAY_OUTAGE_STALL=2), urls)
    result.assert_each_request_ended_once(12)
    # One last try each after the stall: the spider gets the outage's own answer, the 502.
    errors = {(o["error"], o.get("status")) for o in result.by_kind("errback")}
    assert len(result.by_kind("errback")) == 12
    assert errors == {("HttpError", 502)}, errors
    assert "GATEWAY_OUTAGE_STALL" in result.log
    assert result.stat("gateway/gates/stalled") >= 1
    assert result.elapsed < 30, result.elapsed


def test_a_provider_outage_ejects_no_proxy_and_releases_on_recovery(world: World) -> None:
    a = world.add_origin("a", OriginSpec(service_time=0.01))
    b = world.add_origin("b", OriginSpec(service_time=0.01))
    # Every proxy answers a plain 502 of its own from 0.3 s to 2.3 s (a provider gateway down).
    proxies = _pool(world, 6, outage=(0.3, 2.0))
    world.start()
    urls = [u for i in range(150) for u in (a.url(f"/a/{i}"), b.url(f"/b/{i}"))]
    settings = gateway_settings(_urls(proxies), CONCURRENT_REQUESTS_PER_DOMAIN=2, CONCURRENT_REQUESTS=4)
    result = run_crawl(settings, urls)
    result.assert_each_request_ended_once(300)
    assert len(result.by_kind("callback")) == 300
    assert result.stat("gateway/gates/opened") >= 1
    assert "Every proxy (provider-wide) failed" in result.log
    assert result.stat("gateway/retirements") == 0
    assert result.stat("gateway/proxies/ejected") == 0  # at the end, every proxy is in rotation


def test_a_rotating_endpoint_retries_its_own_502s_at_once_and_cuts_nothing(world: World) -> None:
    origin = world.add_origin("a", OriginSpec(service_time=0.01))
    endpoint = world.add_proxy("gw", ProxySpec(mode="flaky", flaky_p=0.3, seed=3), host="127.0.1.1")
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(80)]
    result = run_crawl(gateway_settings([endpoint.url]), urls)
    result.assert_each_request_ended_once(80)
    assert len(result.by_kind("callback")) == 80
    # Its exits' failures are its own: paid by the proxy allowance, never the origin's, no cut.
    assert result.stat("gateway/blame/origin") == 0
    assert result.stat("gateway/concurrency/decreases") == 0
    assert result.stat("gateway/retry/blame/unknown") == result.stat("gateway/retry/count") > 0
    assert result.stat("gateway/ejections/count") == 0


def test_requests_queued_for_the_slot_when_the_gate_opens_are_held_back_not_sent(world: World) -> None:
    """The origin is down from the first request. Scrapy hands the downloader up to
    CONCURRENT_REQUESTS at once and they queue for the domain's slot; once the gate has opened,
    those still queued wait for it as new ones do: the origin sees the first failures that open
    it and the probes, not the queue."""
    origin = world.add_origin("down", OriginSpec(fail_for_seconds=2.0, service_time=0.01))
    proxies = _pool(world, 4)
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(60)]
    settings = gateway_settings(_urls(proxies), CONCURRENT_REQUESTS=32, CONCURRENT_REQUESTS_PER_DOMAIN=8)
    result = run_crawl(settings, urls)
    result.assert_each_request_ended_once(60)
    assert len(result.by_kind("callback")) == 60
    failed = world.snapshot()["origins"]["down"]["statuses"].get("502", 0)
    probes = result.stat("gateway/gates/probes")
    assert result.stat("gateway/gates/held_at_start") >= 1
    # The gate opens after 5 failures through 3 paths; a few more may be on their way then.
    assert failed - probes <= 10, (failed, probes, result.stats)
    requests = result.stat("downloader/request_count")
    assert requests - result.stat("gateway/gates/held_at_start") == failed + 60  # nothing else left
