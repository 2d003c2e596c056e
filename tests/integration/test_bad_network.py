"""Bad input from the network is classified and rotated away; it never crashes the crawl."""

from __future__ import annotations

import pytest
from demo_world import OriginSpec, ProxySpec, World

from tests.conftest import gateway_settings, run_crawl


@pytest.mark.parametrize("mode", ["garbage", "truncate", "huge_headers", "status_only", "reset", "blackhole"])
def test_malformed_proxy_is_handled(world: World, mode: str) -> None:
    origin = world.add_origin("a", OriginSpec(body_bytes=4000))
    world.add_proxy("good1", ProxySpec())
    world.add_proxy("good2", ProxySpec())
    world.add_proxy("broken", ProxySpec(mode=mode))  # type: ignore[arg-type]
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(40)]
    result = run_crawl(gateway_settings([p.url for p in world.proxies.values()], DOWNLOAD_TIMEOUT=1), urls)
    result.assert_each_request_ended_once(40)
    assert len(result.by_kind("callback")) == 40, result.by_kind("errback")
    failures = {k: v for k, v in result.stats.items() if k.startswith("gateway/failures/")}
    assert failures, "the broken proxy's answers were not seen as failures"
    assert "Traceback" not in result.log
    # Found out and avoided: a handful of attempts at most, not one in three.
    assert world.snapshot()["proxies"]["broken"]["requests"] <= 12
