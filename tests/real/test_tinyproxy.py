"""tinyproxy and squid, two different real forward-proxy implementations, in one pool."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from demo_world import OriginSpec, World

from scrapy_gateway.core.proxies import parse_proxy
from tests.conftest import gateway_settings, run_crawl
from tests.real.servers import Servers


@pytest.fixture
def servers() -> Iterator[Servers]:
    with Servers() as started:
        yield started


def test_tinyproxy_and_squid_share_the_crawl(world: World, servers: Servers) -> None:
    web, tls = world.add_origin("web"), world.add_origin("tls", OriginSpec(tls=True))
    world.start()
    tiny, squid = servers.tinyproxy(), servers.squid()
    urls = [u for i in range(40) for u in (web.url(f"/p/{i}"), tls.url(f"/p/{i}"))]
    result = run_crawl(gateway_settings([tiny.url, squid.url]), urls)
    result.assert_each_request_ended_once(80)
    failed = result.by_kind("errback")
    assert not failed, f"{len(failed)} pages not fetched: {failed[:5]}\n{result.log[-3000:]}"
    assert result.stat("gateway/retry/count") == 0
    assert result.stat("gateway/ejections/count") == 0
    # Each proxy carried pages of both kinds, and says so in its own log.
    by_proxy = Counter((o["proxy"], o["url"].split(":", 1)[0]) for o in result.by_kind("callback"))
    for proxy in (tiny.url, squid.url):
        for scheme in ("http", "https"):
            assert by_proxy[(parse_proxy(proxy).key, scheme)] > 0, by_proxy
    tiny_log = tiny.requests()
    assert any(line.startswith(f"GET {web.base_url}/p/") for line in tiny_log), tiny_log
    assert any(line.startswith(f"CONNECT {tls.netloc}") for line in tiny_log), tiny_log
    squid_methods = Counter(line.method for line in squid.access_log())
    assert squid_methods["GET"] > 0 and squid_methods["CONNECT"] > 0, squid_methods
    # Plain-HTTP pages reached the origin once each, whichever proxy carried them.
    snap = world.snapshot()["origins"]
    assert snap["web"]["requests"] == 40 and snap["tls"]["requests"] == 40
    assert snap["web"]["proxy_authorization_seen"] == 0 and snap["tls"]["proxy_authorization_seen"] == 0
