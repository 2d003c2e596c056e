"""The crawl scenarios: a loopback world (demo_world) and the pages crawled in it.

Proxies listen on distinct loopback addresses (127.0.1.1, 127.0.1.2, ...: real pools are distinct
hosts) and origins on 127.0.0.2, 127.0.0.3, ... Pages are crawled once each (distinct paths),
interleaved across domains so every domain starts at once. `run.py` crawls SCENARIOS; the sweep
(`grid.py`) builds more Scenario values, with parameters, from the same parts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from demo_world import OriginSpec, ProxySpec, World

SERVICE = 0.02  # seconds an ordinary origin takes per page
OVERLOAD_C = 4
OVERLOAD_SERVICE = 0.05

# How the oracle row is made: "good": stock Scrapy through good_proxies() only; "retries": stock
# through the whole pool with RETRY_TIMES 10 (a pool of one has no good subset); "ideal": no crawl,
# the scenario's ideal time (no subset of the pool is an oracle: outages); "told": a crawl through
# the good proxies with the per-domain limit set to the origin's capacity (`told`), as a client that
# knew it would (overload): what this machine serves at that capacity, beside the ideal.
OracleKind = Literal["good", "retries", "ideal", "told"]


@dataclass(frozen=True)
class Window:
    """A scheduled outage, so that rows can say how soon after its end the crawl was done."""

    clock: str  # "world": from the world's first request; else the origin (name) whose first request starts it
    start: float
    duration: float
    origins: tuple[str, ...]  # the origins whose pages wait for it

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    build: Callable[[World], None]
    pages: dict[str, int]  # origin name -> pages crawled
    ideal: float | None = None  # seconds: the scenario's own yardstick (else the oracle's time)
    healthy: str | None = None  # origin whose completion time is also measured crawled alone
    capacity: float | None = None  # pages per second the origin can serve
    cap: float | None = None  # this scenario's crawl time cap, when longer than the default
    # -- the sweep's (run.py leaves them at their defaults) --
    params: str = ""  # the cell's parameters as shown, e.g. "timeout=5 pool=10"
    settings: Mapping[str, Any] = field(default_factory=dict)  # every contender's: DOWNLOAD_TIMEOUT, ...
    oracle: OracleKind = "good"
    window: Window | None = None
    flaky: float | None = None  # a pool of one: the share f of the endpoint's exits that fail
    service: float = SERVICE  # seconds per page, for the "normal time" of pages left after an outage
    told: int | None = None  # oracle "told": the per-domain limit it is told, min(capacity, ceiling)

    @property
    def slug(self) -> str:
        """Names the cell's log files."""
        return "-".join([self.name, *self.params.replace("=", "").split()])

    @property
    def per_domain(self) -> int:
        return int(self.settings.get("CONCURRENT_REQUESTS_PER_DOMAIN", PER_DOMAIN))

    @property
    def timeout(self) -> float:
        return float(self.settings.get("DOWNLOAD_TIMEOUT", 2))


def proxy_host(i: int) -> str:
    """Proxy i's own loopback address: 127.0.1.1, 127.0.1.2, ... (all of 127/8 is loopback on Linux)."""
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


def add_pool(world: World, modes: list[tuple[str, ProxySpec]]) -> None:
    for i, (name, spec) in enumerate(modes):
        world.add_proxy(f"{name}{i}", spec, host=proxy_host(i))


def _good(n: int) -> list[tuple[str, ProxySpec]]:
    return [("good", ProxySpec())] * n


def _dead(world: World) -> None:
    world.add_origin("site", OriginSpec(service_time=SERVICE))
    add_pool(world, [("dead", ProxySpec(mode="dead"))] * 3 + _good(7))


def _bad_gateway(world: World) -> None:
    world.add_origin("site", OriginSpec(service_time=SERVICE))
    add_pool(world, [("bad_gateway", ProxySpec(mode="bad_gateway"))] * 3 + _good(7))


def mixed_modes() -> list[tuple[str, ProxySpec]]:
    return [
        ("dead", ProxySpec(mode="dead")),
        ("blackhole", ProxySpec(mode="blackhole")),
        ("bad_gateway", ProxySpec(mode="bad_gateway")),
        ("flaky", ProxySpec(mode="flaky", flaky_p=0.5, seed=1)),
        ("flaky", ProxySpec(mode="flaky", flaky_p=0.5, seed=2)),
        *_good(5),
    ]


def _mixed(world: World) -> None:
    world.add_origin("site", OriginSpec(service_time=SERVICE))
    add_pool(world, mixed_modes())


def _banned(world: World) -> None:
    shop = world.add_origin("shop", OriginSpec(service_time=SERVICE))
    world.add_origin("news", OriginSpec(service_time=SERVICE))
    add_pool(world, [("banned_shop", ProxySpec(banned_hosts=frozenset({shop.host})))] * 5 + _good(5))


def _overload(world: World) -> None:
    world.add_origin("slow", OriginSpec(capacity=OVERLOAD_C, service_time=OVERLOAD_SERVICE))
    add_pool(world, _good(10))


def _storm(world: World) -> None:
    world.add_origin("storm", OriginSpec(fail_for_seconds=STORM_SECONDS, service_time=SERVICE))
    world.add_origin("healthy", OriginSpec(service_time=0.05))
    add_pool(world, _good(10))


def _retry_after(world: World) -> None:
    world.add_origin("paused", OriginSpec(retry_after=1.0, service_time=SERVICE))
    add_pool(world, _good(10))


OVERLOAD_PAGES = 400
STORM_SECONDS = 8.0
STORM_PAGES = 200
RETRY_AFTER_PAGES = 200
PER_DOMAIN = 8  # CONCURRENT_REQUESTS_PER_DOMAIN

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("dead", "30 % of the proxies refuse connections", _dead, {"site": 500}),
        Scenario("bad_gateway", "30 % of the proxies answer their own 502", _bad_gateway, {"site": 500}),
        Scenario("mixed", "dead, blackhole, 502, 2 flaky (50 %), 5 good", _mixed, {"site": 500}),
        Scenario("banned", "5 of 10 proxies banned on shop only; shop + news", _banned, {"shop": 250, "news": 250}),
        Scenario(
            "overload",
            f"origin 502s past {OVERLOAD_C} in flight, {OVERLOAD_SERVICE * 1000:.0f} ms per page",
            _overload,
            {"slow": OVERLOAD_PAGES},
            ideal=OVERLOAD_PAGES * OVERLOAD_SERVICE / OVERLOAD_C,
            capacity=OVERLOAD_C / OVERLOAD_SERVICE,
        ),
        Scenario(
            "storm",
            "storm: 502 to all for its first 8 s; healthy: 50 ms/page",
            _storm,
            {"storm": STORM_PAGES, "healthy": 400},
            # The storm domain cannot be done before its storm ends.
            ideal=STORM_SECONDS + STORM_PAGES * SERVICE / PER_DOMAIN,
            healthy="healthy",
            cap=90.0,
        ),
        Scenario(
            "retry_after",
            "first hit of each page: 503 + Retry-After: 1",
            _retry_after,
            {"paused": RETRY_AFTER_PAGES},
            # Every page waits its 1 s once.
            ideal=1.0 + RETRY_AFTER_PAGES * SERVICE / PER_DOMAIN,
        ),
    )
}


def good_proxies(world: World) -> list[str]:
    """The oracle's pool: proxies that work for every domain, fast and at all times."""
    banned = {ip for origin in world.origins.values() for ip in origin.spec.ban_ips}
    return [
        p.url
        for p in world.proxies.values()
        if p.spec.mode == "good"
        and not p.spec.banned_hosts
        and not p.spec.latency
        and p.spec.outage is None
        and p.spec.flap is None
        and p.host not in banned
    ]


def urls(world: World, pages: dict[str, int]) -> list[list[str]]:
    """[url, origin name] pairs, interleaved across origins."""
    out: list[list[str]] = []
    for i in range(max(pages.values())):
        for name, count in pages.items():
            if i < count:
                out.append([world.origin(name).url(f"/{name}/{i}"), name])
    return out
