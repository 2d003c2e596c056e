"""A real nginx reverse proxy in front of a demo world origin: its real 502s while the upstream is
down and 504s while it is too slow are the origin's fault, whether the crawl goes direct or through
forward proxies."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from demo_world import OriginSpec, ProxySpec, World

from tests.conftest import CrawlResult, gateway_settings, run_crawl
from tests.real.servers import Servers


@pytest.fixture
def servers() -> Iterator[Servers]:
    with Servers() as started:
        yield started


ROUTES = ["direct", "via_proxies"]


def add_pool(route: str, world: World) -> None:
    """No forward proxy, or three good demo world proxies (blame by history needs a few)."""
    if route == "via_proxies":
        for i in range(3):
            world.add_proxy(f"fwd{i}", ProxySpec())


def during_crawl(world: World, origin: str, first: Callable[[], None], then: Callable[[], None], after: float) -> None:
    """Once the origin has served 10 requests, run `first`; `after` seconds later, `then`."""

    def requests() -> int:
        return int(world.snapshot()["origins"][origin]["requests"])

    def script() -> None:
        deadline = time.monotonic() + 60
        while requests() < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        first()
        time.sleep(after)
        then()

    threading.Thread(target=script, daemon=True).start()


def assert_origin_blamed_and_recovered(result: CrawlResult, count: int, status: int) -> None:
    result.assert_each_request_ended_once(count)
    failed = result.by_kind("errback")
    assert not failed, f"{len(failed)} pages not fetched: {failed[:5]}\n{result.log[-3000:]}"
    assert result.stat(f"gateway/failures/http_{status}") > 0
    assert result.stat("gateway/blame/origin") > 0
    assert result.stat("gateway/blame/proxy") == 0
    assert result.stat("gateway/retry/blame/origin") > 0  # backed off, not retried at once
    # Handled as the origin's: throttled (an overload) or held by its outage gate (an outage),
    # whichever the timing of the first failures made it.
    cuts, gated = result.stat("gateway/concurrency/decreases"), result.stat("gateway/gates/opened")
    assert cuts >= 1 or gated >= 1, result.stats
    if cuts:
        assert "Concurrency of 127.0.0.1 lowered" in result.log
    assert result.stat("gateway/ejections/count") == 0  # no proxy pays for the origin's outage
    assert result.stat("gateway/retirements") == 0


@pytest.mark.parametrize("route", ROUTES)
def test_nginx_502_while_upstream_is_down(world: World, servers: Servers, route: str) -> None:
    app = world.add_origin("app", OriginSpec(service_time=0.05))
    add_pool(route, world)
    world.start()
    proxies = [p.url for p in world.proxies.values()]
    nginx = servers.nginx(app.netloc)
    # The upstream really goes away (connection refused) for 2 s, then comes back on the same port.
    during_crawl(world, "app", app.stop, app.start, after=2.0)
    urls = [nginx.url_for(f"/p/{i}") for i in range(60)]
    result = run_crawl(gateway_settings(proxies, GATEWAY_BACKOFF_BASE=0.5, GATEWAY_MAX_RETRIES=10), urls)
    assert app.listening
    assert nginx.statuses().get(502, 0) > 0, nginx.logs()[-2000:]
    assert "connect() failed (111: Connection refused) while connecting to upstream" in nginx.logs()
    assert_origin_blamed_and_recovered(result, 60, 502)
    # Each page once, plus any attempt cut by its per-attempt timeout that the app still answered,
    # and any answer the crash cut off on its way to nginx (counted by the app, a 502 to us).
    app_side = world.snapshot()["origins"]["app"]
    served, aborted = app_side["statuses"].get("200"), app_side["aborted"]
    cut = result.stat("gateway/failures/attempt_timeout")
    assert 60 <= served <= 60 + cut + aborted, (served, cut, aborted)
    if proxies:
        assert result.stat("gateway/pair_ejections/count") == 0


@pytest.mark.parametrize("route", ROUTES)
def test_nginx_504_while_upstream_is_too_slow(world: World, servers: Servers, route: str) -> None:
    app = world.add_origin("app")
    add_pool(route, world)
    world.start()
    proxies = [p.url for p in world.proxies.values()]
    nginx = servers.nginx(app.netloc, read_timeout=1.0)
    normal, slow = app.spec, dataclasses.replace(app.spec, slow=1.5)

    # The origin reads its spec on every request: it answers past nginx's proxy_read_timeout for 2 s.
    def slow_down() -> None:
        app.spec = slow

    def recover() -> None:
        app.spec = normal

    during_crawl(world, "app", slow_down, recover, after=2.0)
    urls = [nginx.url_for(f"/p/{i}") for i in range(60)]
    result = run_crawl(gateway_settings(proxies, GATEWAY_BACKOFF_BASE=0.5, GATEWAY_MAX_RETRIES=10), urls)
    assert nginx.statuses().get(504, 0) > 0, nginx.logs()[-2000:]
    assert "upstream timed out" in nginx.logs()
    assert_origin_blamed_and_recovered(result, 60, 504)
    if proxies:
        assert result.stat("gateway/pair_ejections/count") == 0
