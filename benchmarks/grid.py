"""The sweep's cells: a scenario kind with one parameter set each (issue 8, "Time is the budget").

Grid: DOWNLOAD_TIMEOUT 5, 30, 180 where a request can hang (blackhole, large, mixed), 5 elsewhere;
per-domain ceilings 4, 8, 16, 32 against origin capacities 1, 4, 16 for overload; pools of 1
(endpoint), 10 (most) and 120 (large, slow). QUICK is one cell per kind, for smoke runs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from demo_world import OriginSpec, ProxySpec, World

from benchmarks.scenarios import (
    OVERLOAD_SERVICE,
    SCENARIOS,
    SERVICE,
    STORM_SECONDS,
    Scenario,
    Window,
    add_pool,
    mixed_modes,
    proxy_host,
)

TIMEOUTS = (5, 30, 180)
DEFAULT_TIMEOUT = 5
CEILINGS = (4, 8, 16, 32)
CAPACITIES = (1, 4, 16)
CONTROL = (4, 4)  # the one overload cell whose ceiling does not exceed the capacity
SLOW_LATENCY = 1.5  # seconds a slow proxy adds to every request
ENDPOINT_F = 0.2  # share of a rotating endpoint's exits that fail with the proxy's own 502
PROVIDER_OUTAGE = (1.0, 6.0)  # (start, duration) after the world's first request
ORIGIN_DOWN = 20.0
BURST = 1.0  # seconds during which 3 of 10 proxies answer their own 502, from the first request
# Health that follows change (issue 10): shares of bad proxies in a pool of 10, flap periods.
BAD_SHARES = (0.1, 0.3, 0.6)
FLAP_PERIODS = (4.0, 10.0)
FLAP_DOWN = 0.4  # share of each period a flapping proxy answers its own 502
CHANGE_SERVICE = 0.1  # seconds per page: 80 pages/s at 8 in flight, so a crawl spans periods
BAN_AFTER = 3  # requests an address the site flags may make before it is answered 503

Modes = list[tuple[str, ProxySpec]]


def _good(n: int, **spec: Any) -> Modes:
    return [("good", ProxySpec(**spec))] * n


def _site(world: World, **spec: Any) -> None:
    world.add_origin("site", OriginSpec(service_time=SERVICE, **spec))


def _settings(timeout: float, per_domain: int = 8) -> dict[str, Any]:
    # Global concurrency follows a ceiling above 16, or that ceiling could never be reached.
    return {
        "DOWNLOAD_TIMEOUT": timeout,
        "CONCURRENT_REQUESTS_PER_DOMAIN": per_domain,
        "CONCURRENT_REQUESTS": max(16, per_domain),
    }


def _cap(timeout: float, outage: float = 0.0, slow: float = 0.0) -> float:
    """Crawl time cap: long enough for a client that waits out a timeout once or twice after the outage,
    and (`slow`: pages sent to slow proxies) for a blind one that sends its share through them."""
    return max(40.0, 1.5 * timeout + 30.0) + outage + slow * SLOW_LATENCY / 8


def _shuffled(modes: Modes, seed: int) -> Modes:
    """Bad proxies spread through the list, not at its head (order could favour a contender)."""
    out = list(modes)
    random.Random(seed).shuffle(out)
    return out


# -- pools --------------------------------------------------------------------------------------


def _slow_modes(size: int) -> Modes:
    return _good(size // 2) + [("slow", ProxySpec(latency=SLOW_LATENCY))] * (size - size // 2)


def _blackhole_modes() -> Modes:
    return [("blackhole", ProxySpec(mode="blackhole")), *_good(9)]


def _large_modes(world: World) -> Modes:
    """120 proxies: 60 good, 10 of each bad kind (dead, blackhole, own 502, flaky 50 %, banned, slow)."""
    site = world.origin("site").host
    bad: Modes = []
    for i in range(10):
        bad += [
            ("dead", ProxySpec(mode="dead")),
            ("blackhole", ProxySpec(mode="blackhole")),
            ("bad_gateway", ProxySpec(mode="bad_gateway")),
            ("flaky", ProxySpec(mode="flaky", flaky_p=0.5, seed=100 + i)),
            ("banned", ProxySpec(banned_hosts=frozenset({site}))),
            ("slow", ProxySpec(latency=SLOW_LATENCY)),
        ]
    return _shuffled(bad + _good(60), seed=8)


# -- cells --------------------------------------------------------------------------------------


def slow(size: int) -> Scenario:
    def build(world: World) -> None:
        _site(world)
        add_pool(world, _shuffled(_slow_modes(size), seed=size))

    return Scenario(
        "slow",
        f"{size // 2} fast proxies, {size - size // 2} adding {SLOW_LATENCY} s per request",
        build,
        {"site": 500},
        params=f"timeout={DEFAULT_TIMEOUT} pool={size}",
        settings=_settings(DEFAULT_TIMEOUT),
        cap=_cap(DEFAULT_TIMEOUT, slow=500 / 2),
    )


def hanging(kind: str, timeout: float) -> Scenario:
    """blackhole, mixed, large: a request sent to a blackhole hangs for the whole DOWNLOAD_TIMEOUT."""

    def build(world: World) -> None:
        _site(world)
        modes = {"blackhole": _blackhole_modes, "mixed": mixed_modes}.get(kind)
        add_pool(world, modes() if modes else _large_modes(world))

    title, pages, size, slow_share = {
        "blackhole": ("1 of 10 proxies accepts and never answers, 9 good", 300, 10, 0.0),
        "mixed": ("dead, blackhole, 502, 2 flaky (50 %), 5 good", 500, 10, 0.0),
        "large": ("120 proxies: 60 good; 10 each dead, blackhole, 502, flaky, banned, slow", 600, 120, 1 / 12),
    }[kind]
    return Scenario(
        kind,
        title,
        build,
        {"site": pages},
        params=f"timeout={timeout:g} pool={size}",
        settings=_settings(timeout),
        cap=_cap(timeout, slow=pages * slow_share),
    )


def endpoint() -> Scenario:
    def build(world: World) -> None:
        _site(world)
        add_pool(world, [("endpoint", ProxySpec(mode="flaky", flaky_p=ENDPOINT_F, seed=7))])

    pages = 400
    return Scenario(
        "endpoint",
        f"one rotating endpoint; {ENDPOINT_F:.0%} of its exits answer the proxy's own 502",
        build,
        {"site": pages},
        ideal=pages * SERVICE / 8 / (1 - ENDPOINT_F),
        params=f"timeout={DEFAULT_TIMEOUT} pool=1 f={ENDPOINT_F}",
        settings=_settings(DEFAULT_TIMEOUT),
        oracle="retries",
        flaky=ENDPOINT_F,
        cap=_cap(DEFAULT_TIMEOUT),
    )


def provider_outage() -> Scenario:
    start, duration = PROVIDER_OUTAGE
    service, pages = 0.05, 400

    def build(world: World) -> None:
        world.add_origin("site", OriginSpec(service_time=service))
        add_pool(world, _good(10, outage=PROVIDER_OUTAGE))

    return Scenario(
        "provider_outage",
        f"every proxy answers its own 502 from {start:g} s to {start + duration:g} s; {service * 1000:.0f} ms/page",
        build,
        {"site": pages},
        # The crawl pauses for the outage and otherwise runs at its pace.
        ideal=duration + pages * service / 8,
        params=f"timeout={DEFAULT_TIMEOUT} pool=10 outage={duration:g}s",
        settings=_settings(DEFAULT_TIMEOUT),
        oracle="ideal",
        window=Window("world", start, duration, ("site",)),
        service=service,
        cap=_cap(DEFAULT_TIMEOUT, start + duration),
    )


def origin_outage(how: str) -> Scenario:
    """The origin down for ORIGIN_DOWN s from the first request: answering 502 itself, or refusing."""
    pages = 200

    def build(world: World) -> None:
        if how == "502":
            _site(world, fail_for_seconds=ORIGIN_DOWN)
        else:
            _site(world, closed_for_seconds=ORIGIN_DOWN)
        add_pool(world, _good(10))

    return Scenario(
        "origin_outage",
        f"origin down {ORIGIN_DOWN:g} s: "
        + ("answers 502 itself" if how == "502" else "refuses connections (proxies answer their own 502)"),
        build,
        {"site": pages},
        ideal=ORIGIN_DOWN + pages * SERVICE / 8,
        params=f"timeout={DEFAULT_TIMEOUT} pool=10 origin={how}",
        settings=_settings(DEFAULT_TIMEOUT),
        oracle="ideal",
        window=Window("site" if how == "502" else "world", 0.0, ORIGIN_DOWN, ("site",)),
        cap=_cap(DEFAULT_TIMEOUT, ORIGIN_DOWN),
    )


def overload(capacity: int, ceiling: int, *, burst: bool = False) -> Scenario:
    """Origin capacity C against the per-domain ceiling. `burst`: 3 of the 10 proxies answer their own
    502 for the first BURST s, which says nothing about the origin's capacity."""
    pages = min(100 * capacity, 960)  # 5 s at capacity (3 s for 16: CPU)
    reachable = min(capacity, ceiling)
    modes = _good(10)
    title = f"origin 502s past {capacity} in flight, {OVERLOAD_SERVICE * 1000:.0f} ms per page"
    if burst:
        pages = 60 * ceiling  # 3 s
        modes = _shuffled([("burst", ProxySpec(outage=(0.0, BURST)))] * 3 + _good(7), seed=3)
        title = (
            f"capacity {capacity}, ceiling {ceiling}; 3 of 10 proxies answer their own 502 for the first {BURST:g} s"
        )

    def build(world: World) -> None:
        world.add_origin("slow", OriginSpec(capacity=capacity, service_time=OVERLOAD_SERVICE))
        add_pool(world, modes)

    return Scenario(
        "burst" if burst else "overload",
        title,
        build,
        {"slow": pages},
        ideal=pages * OVERLOAD_SERVICE / reachable,
        capacity=reachable / OVERLOAD_SERVICE,
        params=f"timeout={DEFAULT_TIMEOUT} pool=10 C={capacity} ceiling={ceiling}",
        settings=_settings(DEFAULT_TIMEOUT, ceiling),
        oracle="told",
        told=reachable,
        service=OVERLOAD_SERVICE,
        cap=_cap(DEFAULT_TIMEOUT),
    )


def flapping(share: float, period: float) -> Scenario:
    """A share of the pool goes down now and then (its own 502 for FLAP_DOWN of each period, the
    proxies out of phase), and works in between: a health score that only follows history misses it."""
    bad = round(10 * share)
    pages = 1600  # 20 s at the oracle's pace

    def build(world: World) -> None:
        world.add_origin("site", OriginSpec(service_time=CHANGE_SERVICE))
        flappers: Modes = [
            ("flap", ProxySpec(flap=(period, FLAP_DOWN * period, 1.0 + i * period / bad))) for i in range(bad)
        ]
        add_pool(world, _shuffled(flappers + _good(10 - bad), seed=bad))

    title = f"{bad} of 10 proxies answer their own 502 for {FLAP_DOWN * period:g} s of every {period:g} s"
    return _change_cell("flapping", title, build, pages, f"bad={share:.0%} period={period:g}s", crawl=20.0)


def ip_ban(share: float) -> Scenario:
    """The site rate-limits a share of the pool's addresses: after BAN_AFTER requests each, it
    answers them 503 (nginx limit_req's default) for the rest of the crawl; the others never."""
    bad = round(10 * share)
    pages = 800

    def build(world: World) -> None:
        banned = frozenset(proxy_host(i) for i in range(bad))  # add_pool puts the pool on these
        world.add_origin("site", OriginSpec(service_time=SERVICE, ban_ips=banned, ban_after=BAN_AFTER))
        add_pool(world, [("flagged", ProxySpec())] * bad + _good(10 - bad))

    title = f"the site answers 503 to {bad} of 10 proxies' addresses after {BAN_AFTER} requests each"
    return _change_cell("ip_ban", title, build, pages, f"bad={share:.0%}")


def _change_cell(
    kind: str, title: str, build: Callable[[World], None], pages: int, params: str, crawl: float = 0.0
) -> Scenario:
    """A cell of issue 10's: a pool of 10 on one site, at the sweep's DOWNLOAD_TIMEOUT (`crawl`: the
    oracle's crawl time, when long)."""
    return Scenario(
        kind,
        title,
        build,
        {"site": pages},
        params=f"timeout={DEFAULT_TIMEOUT} pool=10 {params}",
        settings=_settings(DEFAULT_TIMEOUT),
        cap=_cap(DEFAULT_TIMEOUT, crawl),
    )


def change_cells() -> list[Scenario]:
    return [flapping(f, p) for f in BAD_SHARES for p in FLAP_PERIODS] + [ip_ban(f) for f in BAD_SHARES]


def burst() -> Scenario:
    """Capacity above the ceiling: the origin is never overloaded, so any concurrency cut is false."""
    return overload(16, 8, burst=True)


def existing(name: str) -> Scenario:
    """run.py's scenario at the sweep's DOWNLOAD_TIMEOUT; storm also measures its end."""
    base = replace(
        SCENARIOS[name],
        params=f"timeout={DEFAULT_TIMEOUT} pool=10",
        settings=_settings(DEFAULT_TIMEOUT),
        cap=_cap(DEFAULT_TIMEOUT),
    )
    if name == "storm":
        window = Window("storm", 0.0, STORM_SECONDS, ("storm",))
        return replace(base, window=window, oracle="ideal", cap=_cap(DEFAULT_TIMEOUT, STORM_SECONDS))
    if name in ("retry_after",):
        return replace(base, oracle="ideal")
    return base


def overload_cells() -> list[Scenario]:
    return [overload(c, d) for c in CAPACITIES for d in CEILINGS if d > c or (c, d) == CONTROL]


def full() -> list[Scenario]:
    return [
        existing("dead"),
        existing("bad_gateway"),
        existing("banned"),
        slow(10),
        slow(120),
        *(hanging(kind, t) for kind in ("blackhole", "mixed", "large") for t in TIMEOUTS),
        endpoint(),
        provider_outage(),
        origin_outage("502"),
        origin_outage("refused"),
        *overload_cells(),
        burst(),
        existing("storm"),
        existing("retry_after"),
        *change_cells(),
    ]


def quick() -> list[Scenario]:
    """One cell per kind, at DOWNLOAD_TIMEOUT 5 and the default ceiling of 8."""
    return [
        existing("dead"),
        existing("bad_gateway"),
        existing("banned"),
        slow(10),
        *(hanging(kind, DEFAULT_TIMEOUT) for kind in ("blackhole", "mixed", "large")),
        endpoint(),
        provider_outage(),
        origin_outage("502"),
        overload(4, 8),
        burst(),
        existing("storm"),
        existing("retry_after"),
        flapping(0.3, 10.0),
        ip_ban(0.3),
    ]
