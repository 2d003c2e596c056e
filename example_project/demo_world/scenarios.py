"""Named worlds for the CLI, the demo crawl and benchmarks."""

from __future__ import annotations

from collections.abc import Callable

from .origin import OriginSpec
from .proxy import ProxySpec
from .world import World


def demo() -> World:
    world = World()
    shop = world.add_origin("shop", OriginSpec())
    world.add_origin("news", OriginSpec(fail_for_seconds=6.0))
    world.add_origin("slow", OriginSpec(capacity=4, service_time=0.05))
    world.add_proxy("good1", ProxySpec())
    world.add_proxy("good2", ProxySpec())
    world.add_proxy("dead", ProxySpec(mode="dead"))
    world.add_proxy("bad_gateway", ProxySpec(mode="bad_gateway"))
    world.add_proxy("flaky", ProxySpec(mode="flaky", flaky_p=0.5))
    world.add_proxy("banned_shop", ProxySpec(banned_hosts=frozenset({shop.host})))
    world.add_proxy("auth", ProxySpec(credentials=("user", "pass")))
    return world


def minimal() -> World:
    world = World()
    world.add_origin("site", OriginSpec())
    world.add_proxy("good", ProxySpec())
    return world


def tls() -> World:
    world = World()
    world.add_origin("secure", OriginSpec(tls=True))
    world.add_origin("plain", OriginSpec())
    world.add_proxy("good", ProxySpec())
    world.add_proxy("auth", ProxySpec(credentials=("user", "pass")))
    world.add_proxy("bad_gateway", ProxySpec(mode="bad_gateway", proxy_status=True))
    return world


def bench() -> World:
    world = World()
    world.add_origin("fast", OriginSpec(body_bytes=2048))
    for i in range(1, 5):
        world.add_proxy(f"good{i}", ProxySpec())
    return world


SCENARIOS: dict[str, Callable[[], World]] = {
    "demo": demo,
    "minimal": minimal,
    "tls": tls,
    "bench": bench,
}


def build(name: str) -> World:
    try:
        factory = SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
    return factory()
