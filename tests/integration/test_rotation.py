"""Intercept, classify, blame and rotate: real crawls through loopback proxies."""

from __future__ import annotations

import pytest
from demo_world import OriginSpec, ProxySpec, World

from scrapy_gateway.core.proxies import parse_proxy
from tests.conftest import gateway_settings, run_crawl


def test_dead_and_502_proxies_are_rotated_away(world: World) -> None:
    origin = world.add_origin("a")
    for i in range(3):
        world.add_proxy(f"good{i}", ProxySpec())
    world.add_proxy("dead", ProxySpec(mode="dead"))
    world.add_proxy("bad", ProxySpec(mode="bad_gateway"))
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(100)]
    result = run_crawl(gateway_settings([p.url for p in world.proxies.values()]), urls)
    result.assert_each_request_ended_once(100)
    assert len(result.by_kind("callback")) == 100
    # A proxy is tried when the known good ones are busy enough (pool.py, Debuts): with three good
    # ones, the bad ones may never be needed. If the dead one was tried, it was ejected once, not
    # once per request in flight; the 502 one, once tried twice, by the ban signature.
    refused = result.stat("gateway/failures/proxy_refused")
    assert result.stat("gateway/ejections/proxy_refused") == min(refused, 1), result.stats
    attempts = world.snapshot()["proxies"]
    if attempts["bad"]["requests"] >= 2:
        assert result.stat("gateway/pair_ejections/http_502") >= 1, result.stats
    # After the first burst, the bad proxies are no longer chosen: few wasted attempts overall.
    wasted = attempts["dead"]["requests"] + attempts["bad"]["requests"]
    assert wasted <= 16, attempts
    # A retry never goes back to the proxy it just failed on.
    assert "Retrying" in result.log


def test_proxy_banned_on_one_domain_keeps_serving_the_other(world: World) -> None:
    shop, news = world.add_origin("shop"), world.add_origin("news")
    for i in range(3):
        world.add_proxy(f"good{i}", ProxySpec())
    banned = world.add_proxy("banned", ProxySpec(banned_hosts={shop.host}))
    world.start()
    urls = [shop.url(f"/p/{i}") for i in range(60)] + [news.url(f"/p/{i}") for i in range(60)]
    result = run_crawl(gateway_settings([p.url for p in world.proxies.values()]), urls)
    result.assert_each_request_ended_once(120)
    assert len(result.by_kind("callback")) == 120
    # Its 502s on shop are the pair's (a ban: the pair is ejected) or, while shop had not yet worked
    # through the others, unknown (the pair's score alone steers selection away): never the proxy's.
    assert result.stat("gateway/blame/pair") + result.stat("gateway/blame/unknown") >= 1
    assert result.stat("gateway/ejections/count") == 0  # never taken out of the whole pool
    # Whether it carries news is the selection's business (a proxy with no success anywhere is an
    # untried one, taken when the known good ones are busy: test_health_pool covers it); what it
    # carried there, it carried well.
    banned_key = parse_proxy(banned.url).key
    through_banned = [o for o in result.outcomes if o.get("proxy") == banned_key and news.host in o["url"]]
    assert all(o["kind"] == "callback" for o in through_banned), through_banned
    # Only the first burst (16 requests in flight before any feedback) reaches the ban.
    assert world.snapshot()["proxies"]["banned"]["own_errors"] <= 8


def test_storming_domain_is_blamed_on_the_origin(world: World) -> None:
    storm = world.add_origin("storm", OriginSpec(fail_for_seconds=2.0))
    for i in range(4):
        world.add_proxy(f"good{i}", ProxySpec())
    world.start()
    urls = [storm.url(f"/p/{i}") for i in range(20)]
    result = run_crawl(gateway_settings([p.url for p in world.proxies.values()], GATEWAY_BACKOFF_BASE=0.5), urls)
    result.assert_each_request_ended_once(20)
    assert len(result.by_kind("callback")) == 20
    # The first failures, through fewer than three proxies, say nothing yet (unknown); from then
    # on history blames the origin, never a proxy. (How many is the gate's business: it holds the
    # rest, the queued requests too, so only a few fail at all.)
    assert result.stat("gateway/blame/origin") >= 1
    assert result.stat("gateway/blame/proxy") == 0 and result.stat("gateway/blame/pair") == 0
    # Origin faults never hurt a proxy: nothing ejected, everything still active.
    assert result.stat("gateway/ejections/count") == 0
    assert result.stat("gateway/pair_ejections/count") == 0
    assert result.stat("gateway/proxies/active") == 4
    # A storm is an outage, not an overload: it is held by a gate, and the gate undoes any cut made
    # before it opened (the storm's first failures, before anything worked, look like an overload).
    assert result.stat("gateway/gates/opened") >= 1
    assert result.stat("gateway/concurrency/decreases") <= 1
    assert result.stat(f"gateway/concurrency/limit/{storm.host}") in (0, 8), result.stats


def test_https_through_connect_rotates_on_tunnel_failures(world: World) -> None:
    origin = world.add_origin("tls", OriginSpec(tls=True))
    world.add_proxy("good", ProxySpec())
    world.add_proxy("good2", ProxySpec())
    world.add_proxy("bad", ProxySpec(mode="bad_gateway"))
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(30)]
    assert urls[0].startswith("https://")
    result = run_crawl(gateway_settings([p.url for p in world.proxies.values()]), urls)
    result.assert_each_request_ended_once(30)
    assert len(result.by_kind("callback")) == 30
    assert result.stat("gateway/failures/tunnel_502") >= 1
    assert world.snapshot()["proxies"]["bad"]["requests"] <= 10


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https-connect"])
def test_requests_queued_for_a_proxy_taken_out_meanwhile_go_through_another(world: World, tls: bool) -> None:
    # One download at a time on the domain, so the requests routed on arrival queue for the slot
    # (every answer takes 0.3 s or more: time for the engine to hand all of them over, even on a
    # loaded machine). The first of them through the proxy given the wrong password retires it;
    # the ones queued behind it go through the other proxy, with its credentials only.
    origin = world.add_origin("a", OriginSpec(tls=tls, service_time=0.3))
    good = world.add_proxy("good", ProxySpec(credentials=("bob", "s3cretBBB")))
    locked = world.add_proxy("locked", ProxySpec(credentials=("user", "right"), latency=0.5))
    world.start()
    wrong = locked.url.replace(":right@", ":wrong@")
    urls = [origin.url(f"/p/{i}") for i in range(10)]
    result = run_crawl(gateway_settings([good.url, wrong], CONCURRENT_REQUESTS_PER_DOMAIN=1), urls)
    result.assert_each_request_ended_once(10)
    assert len(result.by_kind("callback")) == 10
    assert result.stat("gateway/retirements") == 1
    proxies = world.snapshot()["proxies"]
    assert proxies["locked"]["auth_failures"] == 1, proxies["locked"]
    assert result.stat("gateway/rerouted") >= 1, result.stats
    assert proxies["good"]["authorization_values_seen"] == [good.authorization]
    assert "wrong" not in result.log
