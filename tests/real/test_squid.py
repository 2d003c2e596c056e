"""Real crawls through real squid 5 forward proxies (plain HTTP and CONNECT), with the demo world's
origins behind them: credentials, squid's own refusals, and a squid that dies mid-crawl."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from demo_world import OriginSpec, World

from scrapy_gateway.config import DEFAULT_HTTP_CODES
from scrapy_gateway.core.proxies import parse_proxy
from tests.conftest import CrawlResult, gateway_settings, run_crawl
from tests.harness.waits import wait_for
from tests.real.servers import Servers, Squid


@pytest.fixture
def servers() -> Iterator[Servers]:
    with Servers() as started:
        yield started


def proxies_used(result: CrawlResult) -> Counter[str]:
    return Counter(o["proxy"] for o in result.by_kind("callback"))


def assert_all_fetched(result: CrawlResult, count: int) -> None:
    result.assert_each_request_ended_once(count)
    failed = result.by_kind("errback")
    assert not failed, f"{len(failed)} pages not fetched: {failed[:5]}\n{result.log[-3000:]}"
    assert all(o["status"] == 200 for o in result.by_kind("callback"))


def test_squid_forwards_http_and_https_through_connect(world: World, servers: Servers) -> None:
    web, tls = world.add_origin("web"), world.add_origin("tls", OriginSpec(tls=True))
    world.start()
    squid = servers.squid()
    # squid asks for no credentials and ignores these; inside a CONNECT tunnel it could not strip
    # them, so the origin not seeing them is the gateway's doing.
    proxy = squid.proxy_url("crawler", "s3cret")
    urls = [web.url(f"/p/{i}") for i in range(20)] + [tls.url(f"/p/{i}") for i in range(20)]
    assert urls[-1].startswith("https://")
    result = run_crawl(gateway_settings([proxy]), urls)
    assert_all_fetched(result, 40)
    assert proxies_used(result) == {parse_proxy(proxy).key: 40}
    snap = world.snapshot()["origins"]
    assert snap["web"]["requests"] == 20 and snap["tls"]["requests"] == 20
    assert snap["web"]["proxy_authorization_seen"] == 0
    assert snap["tls"]["proxy_authorization_seen"] == 0
    log = squid.access_log()
    methods = Counter(line.method for line in log)
    assert methods["GET"] == 20, methods  # plain HTTP: squid fetched each page itself
    assert methods["CONNECT"] >= 1, methods  # HTTPS: tunnels (reused across pages)
    assert {line.url for line in log if line.method == "CONNECT"} == {tls.netloc}
    assert result.stat("gateway/retry/count") == 0


def test_two_squids_with_different_credentials_each_see_only_their_own(world: World, servers: Servers) -> None:
    web, tls = world.add_origin("web"), world.add_origin("tls", OriginSpec(tls=True))
    world.start()
    alice = servers.squid(users=[("alice", "a-secret")])
    bob = servers.squid(users=[("bob", "b-secret")])
    pool = [alice.proxy_url("alice", "a-secret"), bob.proxy_url("bob", "b-secret")]
    urls = [web.url(f"/p/{i}") for i in range(40)] + [tls.url(f"/p/{i}") for i in range(40)]
    result = run_crawl(gateway_settings(pool), urls)
    assert_all_fetched(result, 80)
    used = proxies_used(result)
    assert set(used) == {parse_proxy(p).key for p in pool}, used  # both carried pages
    for squid, user in ((alice, "alice"), (bob, "bob")):
        log = squid.access_log()
        assert log, f"{user}'s squid saw no request"
        seen = Counter(line.proxy_authorization_user for line in log)
        assert seen == {user: len(log)}, f"{user}'s squid received {seen}"
        assert all(line.status != 407 for line in log), log
    assert result.stat("gateway/failures/http_407") == 0
    assert result.stat("gateway/failures/tunnel_407") == 0
    snap = world.snapshot()["origins"]
    assert snap["web"]["proxy_authorization_seen"] == 0
    assert snap["tls"]["proxy_authorization_seen"] == 0


def test_squid_with_wrong_credentials_is_retired(world: World, servers: Servers) -> None:
    web, tls = world.add_origin("web"), world.add_origin("tls", OriginSpec(tls=True))
    world.start()
    good = servers.squid(users=[("alice", "a-secret")])
    locked = servers.squid(users=[("bob", "b-secret")])
    good_url, wrong_url = good.proxy_url("alice", "a-secret"), locked.proxy_url("bob", "not-bobs")
    urls = [web.url(f"/p/{i}") for i in range(30)] + [tls.url(f"/p/{i}") for i in range(30)]
    result = run_crawl(gateway_settings([good_url, wrong_url]), urls)
    assert_all_fetched(result, 60)
    assert proxies_used(result) == {parse_proxy(good_url).key: 60}
    assert result.stat("gateway/failures/http_407") + result.stat("gateway/failures/tunnel_407") > 0
    assert result.stat("gateway/blame/proxy") > 0
    assert result.stat("gateway/retirements") >= 1
    assert result.stat("gateway/proxies/retired") == 1
    assert result.stat("gateway/concurrency/decreases") == 0  # the proxy's fault, not the origin's
    rejected = locked.access_log()
    # Refused, or (a per-attempt timeout met while squid's auth helper was still busy on a loaded
    # machine) given up by us before squid answered, which squid logs with status 0.
    assert rejected
    assert [line for line in rejected if line.status not in (407, 0)] == []
    # The good squid never received bob's credentials, nor the locked one alice's.
    assert {line.proxy_authorization_user for line in good.access_log()} == {"alice"}
    assert {line.proxy_authorization_user for line in rejected} == {"bob"}
    # Retired at once: only the first burst reached it.
    assert len(rejected) <= 16, len(rejected)
    assert "retired" in result.log


def test_squid_denying_one_domain_gets_a_pair_ejection(world: World, servers: Servers) -> None:
    shop, news = world.add_origin("shop"), world.add_origin("news")
    world.start()
    denying = servers.squid(deny_hosts=[shop.host])
    normal = servers.squid()
    settings = gateway_settings(
        [denying.url, normal.url], GATEWAY_HTTP_CODES=[*DEFAULT_HTTP_CODES, 403], GATEWAY_COOLDOWN_BASE=30.0
    )
    urls = [u for i in range(40) for u in (shop.url(f"/p/{i}"), news.url(f"/p/{i}"))]
    result = run_crawl(settings, urls)
    assert_all_fetched(result, 80)
    assert result.stat("gateway/failures/http_403") > 0
    assert result.stat("gateway/pair_ejections/count") >= 1
    assert result.stat("gateway/ejections/count") == 0  # banned on shop only, still serving news
    assert result.stat("gateway/concurrency/decreases") == 0
    # squid's refusal is its own error page, never the origin's.
    refusals = [line for line in denying.access_log() if line.status == 403]
    assert refusals and all(shop.netloc in line.url for line in refusals), refusals
    assert all(line.squid_status == "TCP_DENIED" for line in refusals)
    # Banned on shop only: never taken out for news (whether news then goes through it is the
    # selection's call: a proxy that has not answered well yet costs its prior there).
    banned_for = re.findall(r"out of rotation for (\S+) only", result.log)
    assert banned_for and all(d == shop.host for d in banned_for), banned_for
    assert world.snapshot()["origins"]["shop"]["statuses"] == {"200": 40}
    assert len(refusals) <= 16, len(refusals)


def call_when(condition: Callable[[], bool], action: Callable[[], None], timeout: float = 60) -> threading.Thread:
    """Run `action` in a thread as soon as `condition` holds (checked every 20 ms)."""

    def watch() -> None:
        if wait_for(condition, timeout):
            action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_squid_killed_mid_crawl(world: World, servers: Servers) -> None:
    origin = world.add_origin("slowish", OriginSpec(service_time=0.2))
    world.start()
    doomed: Squid = servers.squid()
    survivor = servers.squid()
    seen_at_kill: list[int] = []

    def requests_so_far() -> int:
        return int(world.snapshot()["origins"]["slowish"]["requests"])

    def kill() -> None:
        seen_at_kill.append(requests_so_far())
        doomed.kill()

    def both_serving() -> bool:  # mid-crawl: each squid has already served pages, more are coming
        return requests_so_far() >= 10 and bool(doomed.access_log()) and bool(survivor.access_log())

    watcher = call_when(both_serving, kill)
    urls = [origin.url(f"/p/{i}") for i in range(80)]
    result = run_crawl(gateway_settings([doomed.url, survivor.url]), urls)
    watcher.join(timeout=5)
    assert seen_at_kill, "squid was never killed"
    assert 0 < seen_at_kill[0] < 80, f"killed after {seen_at_kill[0]} of 80 pages: not mid-crawl"
    assert not doomed.running
    assert_all_fetched(result, 80)
    assert result.stat("gateway/ejections/count") >= 1
    assert result.stat("gateway/ejections/proxy_refused") >= 1
    assert result.stat("gateway/concurrency/decreases") == 0  # a dead proxy is not the origin's fault
    after_kill = [o for o in result.by_kind("callback") if o["proxy"] == parse_proxy(survivor.url).key]
    assert len(after_kill) >= 80 - seen_at_kill[0]


@pytest.mark.parametrize(
    "tls",
    [
        pytest.param(False, id="http"),
        pytest.param(True, id="https"),
    ],
)
def test_origin_down_behind_squid_is_the_origins_fault(world: World, servers: Servers, tls: bool) -> None:
    app = world.add_origin("app", OriginSpec(tls=tls, service_time=0.05))
    world.start()
    squids = [servers.squid(), servers.squid()]

    def outage() -> None:
        app.stop()  # squid now gets connection refused: 503 ERR_CONNECT_FAIL (on the CONNECT for https)
        time.sleep(2.0)  # the fault's duration, not a wait for something to happen
        app.start()

    watcher = call_when(lambda: world.snapshot()["origins"]["app"]["requests"] >= 10, outage)
    urls = [app.url(f"/p/{i}") for i in range(50)]
    result = run_crawl(
        gateway_settings([s.url for s in squids], GATEWAY_BACKOFF_BASE=0.5, GATEWAY_MAX_RETRIES=10), urls
    )
    watcher.join(timeout=5)
    assert app.listening
    assert_all_fetched(result, 50)
    refused = [line for squid in squids for line in squid.access_log() if line.status == 503]
    assert refused, "squid never answered 503 for the refused origin"
    assert result.stat("gateway/failures/tunnel_503" if tls else "gateway/failures/http_503") > 0
    assert result.stat("gateway/blame/origin") > 0
    assert result.stat("gateway/blame/proxy") == 0
    assert result.stat("gateway/ejections/count") == 0  # the origin's outage costs no proxy anything
    assert result.stat("gateway/pair_ejections/count") == 0
    assert result.stat("gateway/concurrency/decreases") >= 1
