"""Fleet state in a real redis-server: crawler processes share each slot's in-flight count.

Several real crawler processes (subprocesses, each its own Scrapy) run side by side against one
origin of the demo world, with GATEWAY_STATE pointing at a redis-server the test starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from demo_world import OriginSpec, ProxySpec, World
from scrapy.statscollectors import MemoryStatsCollector
from scrapy.utils.test import get_crawler

from scrapy_gateway.core.concurrency import ConcurrencyControl, Phase
from scrapy_gateway.fleet import FleetLeases
from scrapy_gateway.fleet_limits import CLEAN, DOUBTFUL, LATE, OUTAGE, OVERLOAD
from tests.conftest import (
    ROOT,
    SILENT_FIRST_SEED,
    CrawlResult,
    assert_silent_picks_were_cut,
    gateway_settings,
    run_crawl,
    silent_first_picks,
)
from tests.harness.waits import wait_until
from tests.real.servers import Redis, Servers, free_port


@pytest.fixture
def servers() -> Iterator[Servers]:
    with Servers() as started:
        yield started


def _control() -> ConcurrencyControl:
    return ConcurrencyControl(minimum=1, beta=0.7, initial=2)


def _pool(world: World) -> list[str]:
    """Three good proxies, then the world starts; their URLs."""
    proxies = [world.add_proxy(f"p{i}", ProxySpec(), host=f"127.0.1.{i + 1}") for i in range(3)]
    world.start()
    return [p.url for p in proxies]


def _fleet_settings(proxies: list[str], redis: Redis, **extra: Any) -> dict[str, Any]:
    return gateway_settings(proxies, GATEWAY_STATE=redis.url, GATEWAY_STATE_PREFIX="test-fleet", **extra)


def _start_crawl(settings: dict[str, Any], urls: list[str], folder: Any) -> subprocess.Popen[bytes]:
    """A crawl in a subprocess that the test may SIGKILL (run_crawl waits for its end)."""
    spec = folder / "victim.json"
    spec.write_text(json.dumps({"settings": settings, "urls": urls}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    harness = [sys.executable, str(ROOT / "tests" / "harness" / "run_crawl.py"), str(spec), str(folder / "out.json")]
    return subprocess.Popen(harness, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _crawl_side_by_side(settings: dict[str, Any], url_sets: list[list[str]]) -> list[CrawlResult]:
    with ThreadPoolExecutor(len(url_sets)) as pool:
        return list(pool.map(lambda urls: run_crawl(settings, urls, timeout=180), url_sets))


def test_processes_share_the_per_domain_limit(world: World, servers: Servers) -> None:
    redis = servers.redis()
    origin = world.add_origin("a", OriginSpec(service_time=0.2))
    proxies = _pool(world)
    # Three processes, each allowed 2 in flight on the domain: together they hold 2, not 6. Without
    # per-attempt timeouts: on a loaded machine one may cut an attempt, whose lease then goes back
    # while the origin still serves it (CI once saw 4 in flight at the origin, 62 requests).
    url_sets = [[origin.url(f"/{p}/{i}") for i in range(20)] for p in range(3)]
    settings = _fleet_settings(proxies, redis, CONCURRENT_REQUESTS_PER_DOMAIN=2, GATEWAY_ATTEMPT_TIMEOUT_FACTOR=0)
    results = _crawl_side_by_side(settings, url_sets)
    for result in results:
        assert len(result.by_kind("callback")) == 20
    served = world.snapshot()["origins"]["a"]
    assert served["max_in_flight"] <= 2, (served, [r.stat("gateway/failures/attempt_timeout") for r in results])
    # They did overlap: some of them waited for a lease the others held, and heard their outcomes.
    assert sum(r.stat("gateway/fleet/lease_waits") for r in results) > 0
    assert sum(r.stat("gateway/fleet/heard") for r in results) > 0


def test_a_process_killed_with_sigkill_returns_its_share(world: World, servers: Servers, tmp_path: Any) -> None:
    redis = servers.redis()
    origin = world.add_origin("a", OriginSpec(service_time=0.5))
    proxies = _pool(world)
    # A short lease life, so that the test waits seconds, not the default ten; long enough that
    # the survivor, started after the kill, is up before the dead leases expire on a loaded
    # machine (at 2 s, a busy core once let them expire first: no wait to observe).
    settings = _fleet_settings(proxies, redis, CONCURRENT_REQUESTS_PER_DOMAIN=2, GATEWAY_LEASE_TTL=6)
    victim = _start_crawl(settings, [origin.url(f"/victim/{i}") for i in range(50)], tmp_path)
    try:
        # It holds the fleet's two leases on the slot (two downloads in flight at the origin).
        wait_until(lambda: world.snapshot()["origins"]["a"]["in_flight"] == 2, "the victim had 2 in flight")
        victim.kill()  # SIGKILL: no release, no renewal, no goodbye
        victim.wait(timeout=10)
    finally:
        if victim.poll() is None:
            victim.kill()
    # The survivor gets the slot once the dead process's leases expire; without expiry it would
    # wait for ever (and this crawl time out).
    result = run_crawl(settings, [origin.url(f"/survivor/{i}") for i in range(10)], timeout=60)
    assert len(result.by_kind("callback")) == 10
    assert result.stat("gateway/fleet/lease_waits") >= 1  # it did find the dead process's leases
    assert result.stat("gateway/fleet/lost") == 0


def test_redis_lost_mid_crawl_loses_nothing_and_rejoins(world: World, servers: Servers) -> None:
    redis = servers.redis()
    origin = world.add_origin("a", OriginSpec(service_time=0.02))
    proxies = _pool(world)
    pages = 600  # at 2 in flight, several seconds: Redis comes back long before the end
    urls = [origin.url(f"/p/{i}") for i in range(pages)]
    settings = _fleet_settings(proxies, redis, CONCURRENT_REQUESTS_PER_DOMAIN=2)
    with ThreadPoolExecutor(1) as pool:
        crawl = pool.submit(run_crawl, settings, urls, timeout=180)

        def served() -> int:
            return int(world.snapshot()["origins"]["a"]["requests"])

        wait_until(lambda: served() >= 30, "the crawl was under way")
        redis.kill()
        lost_at = served()
        wait_until(lambda: served() >= lost_at + 30, "the crawl went on without Redis")
        assert not crawl.done()
        redis.restart()
        result = crawl.result()
    result.assert_each_request_ended_once(pages)
    assert len(result.by_kind("callback")) == pages
    assert result.stat("gateway/fleet/unleased") > 0  # it went on alone meanwhile
    lost = [line for line in result.log.splitlines() if "lost the shared state" in line]
    assert len(lost) == 1 and "WARNING" in lost[0], lost
    assert result.stat("gateway/fleet/lost") == 1
    assert "rejoined the fleet" in result.log


def test_redis_unreachable_at_start_is_a_clear_error(world: World) -> None:
    origin = world.add_origin("a", OriginSpec())
    proxies = _pool(world)
    nobody = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    settings = gateway_settings(proxies, GATEWAY_STATE=nobody)
    result = run_crawl(settings, [origin.url(f"/p/{i}") for i in range(5)])
    assert result.close_reason == "gateway_state_unavailable"
    assert "GATEWAY_STATE: no answer from Redis at redis://:***@127.0.0.1" in result.log
    assert "s3cret" not in result.log
    assert world.snapshot()["origins"]["a"]["requests"] == 0
    assert "Traceback" not in result.log  # closing does not trip over the client it never had


def test_a_redis_state_needs_the_asyncio_reactor(world: World, servers: Servers) -> None:
    redis = servers.redis()
    origin = world.add_origin("a", OriginSpec())
    proxies = _pool(world)
    settings = _fleet_settings(proxies, redis, TWISTED_REACTOR="twisted.internet.epollreactor.EPollReactor")
    result = run_crawl(settings, [origin.url("/p/0")])
    assert "GATEWAY_STATE: a Redis state needs Scrapy's asyncio reactor" in result.log, result.log[-3000:]
    assert world.snapshot()["origins"]["a"]["requests"] == 0


def test_a_dead_holders_leases_expire(servers: Servers) -> None:
    redis = servers.redis()

    async def scenario() -> float:
        stats = MemoryStatsCollector(get_crawler())
        dead = FleetLeases(redis.url, "test-expiry", 1.0, stats, time.monotonic, _control())
        alive = FleetLeases(redis.url, "test-expiry", 1.0, stats, time.monotonic, _control())
        await dead.start()
        await alive.start()
        assert await dead.acquire("slot", 1) is not None
        # The holder dies: no release, no renewal (as after SIGKILL).
        assert dead._renewer is not None
        dead._renewer.cancel()
        started = time.monotonic()
        lease = await asyncio.wait_for(alive.acquire("slot", 1), timeout=10)
        waited = time.monotonic() - started
        assert lease is not None
        await alive.close()
        await dead._client.aclose()
        return waited

    waited = asyncio.run(scenario())
    # Not before the lease's time to live, and within seconds of it (the waiter asks every <= 30 ms).
    assert 0.8 <= waited <= 6.0, waited


@pytest.mark.parametrize("seed", range(8))
def test_the_fleets_limit_follows_the_same_aimd_as_one_process(servers: Servers, seed: int) -> None:
    # fleet_limits.py ports ConcurrencyControl to Lua: the same events must give the same limits.
    redis = servers.redis()
    import random

    import redis as redis_py

    rng = random.Random(seed)
    ceiling = rng.choice([4, 8, 16, 32])
    control = ConcurrencyControl(minimum=1, beta=0.7, caution=32.0, initial=2)
    client = redis_py.Redis.from_url(redis.url)
    clean, overload = client.register_script(CLEAN), client.register_script(OVERLOAD)
    outage, doubtful = client.register_script(OUTAGE), client.register_script(DOUBTFUL)
    late = client.register_script(LATE)
    for step in range(400):
        if step % 50 == 0:  # a fresh slot every 50 events: slow start, where most rules live
            slot, key = f"s{step}", f"test-aimd:{seed}:{step}"
            control.begin(slot, ceiling)
            told = 0  # downloads told long unanswered on this slot (by one process, here)
        if step % 50 < 4 and rng.random() < 0.5:
            # Early in a slot's life, before and after its first outcomes: `late` counts only
            # while nothing was heard. Each call tells how many more wait (fleet.late).
            more, pending = rng.randint(1, 3), rng.choice([0, 0, 0, 1])
            told += more
            for _ in range(pending):
                control.clean(slot, None)
            expected = control.late(slot, told)
            got = late(keys=[key], args=[ceiling, 2, more, pending, 32.0, 0])
        elif rng.random() < 0.01:
            expected = control.outage(slot)
            got = outage(keys=[key], args=[ceiling, 2])
        elif rng.random() < 0.04:
            load = rng.randint(0, ceiling + 2)  # 0: not known (None on the Python side)
            # Clean responses not reported yet go first, in the same script (fleet._pending_cleans).
            pending, most = rng.choice([0, 0, 1, 3]), rng.randint(0, ceiling)
            for _ in range(pending):
                control.clean(slot, most or None)
            expected = control.doubtful(slot, load or None)
            got = doubtful(keys=[key], args=[ceiling, 2, 1, load, pending, 32.0, most])
        elif rng.random() < 0.06:
            # sent after the last cut (it cuts), or before it (it does not): Redis's clock decides
            # the Lua side, so a stale one is sent at 0.
            stale = rng.random() < 0.3
            load = rng.randint(0, ceiling + 2)
            expected = control.overloaded(slot, ceiling, 0.0 if stale else 1e12, float(step), load or None)
            got = overload(keys=[key], args=[0.0 if stale else 1e12, ceiling, 1, 0.7, 2, load, 0, 32.0, 0])
        else:
            load = rng.randint(0, ceiling)
            expected = control.clean(slot, load or None)
            got = clean(keys=[key], args=[1, ceiling, 32.0, 2, load])
        assert int(got[0]) == (control.limit(slot) or ceiling), (step, expected, got)
        # And its phase, which judges the slot's failures in each process (Gateway.fleet_phase).
        assert Phase(*(bool(flag) for flag in got[1:])) == control.phase(slot), (step, got)
    client.close()


def test_the_fleets_limit_undoes_a_start_up_cut_its_first_clean_response_contradicts(servers: Servers) -> None:
    # As ConcurrencyControl._unhurt: bad proxies answered first, then a request sent with 2 in
    # flight came back clean. The random walk above seldom meets it.
    import redis as redis_py

    client = redis_py.Redis.from_url(servers.redis().url)
    clean, overload = client.register_script(CLEAN), client.register_script(OVERLOAD)
    key = "test-aimd:unhurt"
    cut = overload(keys=[key], args=[1e12, 16, 1, 0.7, 2, 1, 0, 32.0, 0])
    assert int(cut[0]) == 1 and not int(cut[1])  # out of slow start, at 1
    back = clean(keys=[key], args=[1, 16, 32.0, 2, 2])
    assert int(back[0]) == 3 and int(back[1])  # slow start again, one step up
    control = ConcurrencyControl(minimum=1, beta=0.7, caution=32.0, initial=2)
    control.begin("s", 16)
    control.overloaded("s", 16, 1e12, 0.0, 1)
    control.clean("s", 2)
    assert control.limit("s") == int(back[0]) and control.starting("s")
    client.close()


# As tests/integration/test_time.py's test of the same name, with the fleet's limit in Redis
# ruling the slot.
def test_a_fleet_whose_first_picks_are_silent_does_not_wait_out_download_timeout(
    world: World, servers: Servers
) -> None:
    redis = servers.redis()
    urls, proxies = silent_first_picks(world)
    timeout = 60
    settings = _fleet_settings(proxies, redis, DOWNLOAD_TIMEOUT=timeout, GATEWAY_SEED=SILENT_FIRST_SEED)
    result = run_crawl(settings, urls, timeout=timeout + 30)
    assert_silent_picks_were_cut(result, timeout)
    assert "the fleet's limit is asked to rise in slow start" in result.log


def test_the_users_limit_is_each_callers_own(servers: Servers) -> None:
    redis = servers.redis()
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    clean, overload = client.register_script(CLEAN), client.register_script(OVERLOAD)
    for _ in range(40):
        assert int(clean(keys=["test-ceiling"], args=[1, 8, 32.0, 2, 0])[0]) <= 8
    assert int(clean(keys=["test-ceiling"], args=[1, 8, 32.0, 2, 0])[0]) == 8
    # A process started with a higher limit grows past the old one; a lower one applies at once.
    grown = [int(clean(keys=["test-ceiling"], args=[1, 32, 32.0, 2, 0])[0]) for _ in range(200)]
    assert max(grown) > 8
    assert int(clean(keys=["test-ceiling"], args=[1, 4, 32.0, 2, 0])[0]) == 4
    # 4 * 0.7, rounded
    assert int(overload(keys=["test-ceiling"], args=[1e12, 4, 1, 0.7, 2, 0, 0, 32.0, 0])[0]) == 3
    client.close()


def test_a_throttled_slots_leases_go_back_to_redis_with_the_next_one_asked(servers: Servers) -> None:
    # A lease passed on within a process does not ask Redis, so it would carry a download past a
    # cut another process made a moment ago: where the fleet's limit is below the user's (or in
    # slow start) each download asks, giving back the last one's lease in the same script.
    redis = servers.redis()
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)

    async def scenario() -> None:
        stats = MemoryStatsCollector(get_crawler())
        fleet = FleetLeases(redis.url, "test-swap", 5.0, stats, time.monotonic, _control())
        await fleet.start()
        first = await fleet.acquire("starting", 8)  # 8 > slow start's first limit (2)
        fleet.release("starting", first)
        second = await fleet.acquire("starting", 8)
        assert second != first
        assert client.zrange("test-swap:inflight:starting", 0, -1) == [second.encode()]  # type: ignore[union-attr]
        fleet.release("starting", second)
        # At the user's own limit (2: no slow start) a lease is passed on without asking.
        calm = await fleet.acquire("calm", 2)
        fleet.release("calm", calm)
        assert await fleet.acquire("calm", 2) == calm
        await fleet.close()
        assert client.zcard("test-swap:inflight:starting") == 0 and client.zcard("test-swap:inflight:calm") == 0

    asyncio.run(scenario())
    client.close()


def test_leases_redis_lost_carry_no_more_downloads(servers: Servers) -> None:
    redis = servers.redis()
    import redis as redis_py

    async def scenario() -> bool:
        stats = MemoryStatsCollector(get_crawler())
        a, b = (FleetLeases(redis.url, "test-lost", 1.0, stats, time.monotonic, _control()) for _ in range(2))
        await a.start()
        await b.start()
        held = [await a.acquire("slot", 2), await a.acquire("slot", 2)]
        redis_py.Redis.from_url(redis.url).flushall()  # as a restart without persistence would
        deadline = time.monotonic() + 10
        while not a._epochs.get("slot") and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # a's renewal finds its leases gone
        assert await b.acquire("slot", 2) is not None and await b.acquire("slot", 2) is not None
        for lease in held:
            a.release("slot", lease)
        try:
            await asyncio.wait_for(a.acquire("slot", 2), timeout=0.5)
            went = True  # a third and fourth download with b's two: the fleet past its limit
        except asyncio.TimeoutError:
            went = False
        await a.close()
        await b.close()
        return went

    assert asyncio.run(scenario()) is False


def test_retries_waiting_in_a_process_killed_with_sigkill_are_taken_over(
    world: World, servers: Servers, tmp_path: Any
) -> None:
    redis = servers.redis()
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    # Every page's first hit: 503 with Retry-After 4 s, so all ten retries wait in the victim.
    origin = world.add_origin("a", OriginSpec(retry_after=4.0))
    proxies = _pool(world)
    settings = _fleet_settings(proxies, redis, GATEWAY_LEASE_TTL=2)
    urls = [origin.url(f"/victim/{i}") for i in range(10)]
    victim = _start_crawl(settings, urls, tmp_path)
    waiting = ["test-fleet:waiting:probe"]  # the harness spider is called "probe"
    try:
        wait_until(lambda: client.zcard(waiting[0]) == 10, "the victim's ten retries were waiting in Redis")
        victim.kill()
        victim.wait(timeout=10)
    finally:
        if victim.poll() is None:
            victim.kill()
    wait_until(lambda: not client.keys("test-fleet:alive:*"), "the victim's alive key expired")
    # Another process of the fleet, with a page of its own: it takes the ten over.
    result = run_crawl(settings, [origin.url("/survivor/0")], timeout=60)
    fetched = sorted(o["url"] for o in result.by_kind("callback"))
    assert fetched == sorted([*urls, origin.url("/survivor/0")]), fetched
    assert "took over 10 waiting retries" in result.log
    assert client.zcard(waiting[0]) == 0
    assert world.snapshot()["origins"]["a"]["early"] == 0  # their Retry-After kept
    client.close()


def test_a_stopped_crawl_leaves_its_waiting_retries_to_the_next_run(world: World, servers: Servers) -> None:
    redis = servers.redis()
    origin = world.add_origin("a", OriginSpec(retry_after=5.0))
    proxies = _pool(world)
    settings = _fleet_settings(proxies, redis, CLOSESPIDER_TIMEOUT=2.5)
    urls = [origin.url(f"/p/{i}") for i in range(10)]
    stopped = run_crawl(settings, urls)
    assert stopped.close_reason == "closespider_timeout"
    assert stopped.by_kind("errback") == []  # left in Redis, not given up on
    left = stopped.stat("gateway/waiting/persisted")
    assert left == 10 - len(stopped.by_kind("callback")) and left > 0
    assert "waiting retries left in the fleet's Redis at close" in stopped.log
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    due = [score for _, score in client.zrange("test-fleet:waiting:probe", 0, -1, withscores=True)]
    assert len(due) == left
    # Resumed once they are all due: the next run (its own pages elsewhere) takes them over at once
    # (the closing process said goodbye), sends them, and nothing stays behind in Redis.
    wait_until(lambda: time.time() > max(due), "the saved retries were due")
    resumed = run_crawl({**settings, "CLOSESPIDER_TIMEOUT": 60}, [origin.url("/next/0")])
    done = [o["url"] for o in stopped.by_kind("callback") + resumed.by_kind("callback")]
    assert sorted(done) == sorted([*urls, origin.url("/next/0")])
    assert world.snapshot()["origins"]["a"]["early"] == 0
    assert client.zcard("test-fleet:waiting:probe") == 0
    assert client.hlen("test-fleet:waiting:probe:data") == 0
    client.close()


def test_a_retry_parked_while_the_crawl_closes_ends_once(world: World, servers: Servers) -> None:
    redis = servers.redis()
    # Pages take 1 s: the crawl is closing (0.5 s) when their 503 + Retry-After come back.
    origin = world.add_origin("a", OriginSpec(retry_after=5.0, service_time=1.0))
    proxies = _pool(world)
    settings = _fleet_settings(proxies, redis, CLOSESPIDER_TIMEOUT=0.5)
    urls = [origin.url(f"/p/{i}") for i in range(8)]
    stopped = run_crawl(settings, urls)
    resumed = run_crawl({**settings, "CLOSESPIDER_TIMEOUT": 60}, [origin.url("/next/0")])
    ended = [o["url"] for o in stopped.outcomes + resumed.outcomes]
    # Each page ends once: an errback in the closing run is never followed by a fetch later.
    assert sorted(ended) == sorted(set(ended)), sorted(ended)
    assert set(ended) >= {origin.url("/next/0")}


def test_waiting_retries_are_stored_again_after_redis_restarts_empty(
    world: World, servers: Servers, tmp_path: Any
) -> None:
    redis = servers.redis()
    import redis as redis_py

    slow = world.add_origin("a", OriginSpec(retry_after=30.0))
    busy = world.add_origin("b", OriginSpec(service_time=0.2))
    proxies = _pool(world)
    settings = _fleet_settings(proxies, redis, CLOSESPIDER_TIMEOUT=6)
    urls = [slow.url(f"/p/{i}") for i in range(5)] + [busy.url(f"/q/{i}") for i in range(200)]
    victim = _start_crawl(settings, urls, tmp_path)
    try:
        client = redis_py.Redis.from_url(redis.url)
        wait_until(lambda: client.zcard("test-fleet:waiting:probe") == 5, "five retries were waiting in Redis")
        client.close()
        redis.stop()  # and back at once, empty, as after a restart without persistence
        redis.restart()
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
    out = json.loads((tmp_path / "out.json").read_text())
    left = out["stats"].get("gateway/waiting/persisted", 0)
    given_up = [o for o in out["outcomes"] if "/p/" in o["url"]]
    client = redis_py.Redis.from_url(redis.url)
    # The five end once: left in Redis again (stored anew on rejoin), or sent to their errbacks.
    assert left + len(given_up) == 5, (left, given_up, out["stats"])
    assert client.zcard("test-fleet:waiting:probe") == left
    client.close()


def test_a_proxy_one_process_took_out_is_out_for_the_fleet(world: World, servers: Servers) -> None:
    redis = servers.redis()
    origin = world.add_origin("a", OriginSpec(service_time=0.02))
    # A proxy that refuses connections: its first refusal takes it out (a hard failure).
    dead = world.add_proxy("dead", ProxySpec(mode="dead"), host="127.0.1.9")
    good = _pool(world)  # starts the world
    settings = _fleet_settings([dead.url, *good], redis, GATEWAY_COOLDOWN_BASE=120, GATEWAY_COOLDOWN_MAX=300)
    first = run_crawl(settings, [origin.url(f"/first/{i}") for i in range(60)])
    assert first.stat("gateway/ejections/count") >= 1  # it paid for the dead proxy, and took it out
    assert first.stat("gateway/failures/proxy_refused") >= 1
    # The next process of the fleet learns it from Redis instead of paying again.
    second = run_crawl(settings, [origin.url(f"/second/{i}") for i in range(60)])
    assert len(second.by_kind("callback")) == 60
    assert second.stat("gateway/failures/proxy_refused") == 0
    assert second.stat("gateway/fleet/learned") >= 1
    import re

    left = [int(n) for n in re.findall(r"for (\d+)s: another process of the fleet saw proxy_refused", second.log)]
    assert left and all(30 <= n <= 300 for n in left), left  # what is left of its cooldown, not more
    # Without the shared state, it pays again (what the test would show if nothing were shared).
    alone = run_crawl(gateway_settings([dead.url, *good]), [origin.url(f"/alone/{i}") for i in range(60)])
    assert alone.stat("gateway/failures/proxy_refused") >= 1


def test_outcomes_reach_the_other_processes_and_garbage_is_skipped(servers: Servers) -> None:
    # Two processes' cores, sharing outcomes through a real Redis (fleet_evidence.py): what one
    # sees, the other's judge, pool and gates learn; entries it cannot read are skipped.
    redis = servers.redis()
    import random

    import redis as redis_py

    from scrapy_gateway.core.attempt import Attempt
    from scrapy_gateway.core.faults import Blame, Fault
    from scrapy_gateway.core.gateway import Gateway, Policy
    from scrapy_gateway.core.health import State
    from scrapy_gateway.core.proxies import parse_proxy
    from scrapy_gateway.fleet_evidence import SharedEvidence

    pool = [parse_proxy(f"http://127.0.1.{i}:8080") for i in range(1, 4)]

    async def scenario() -> tuple[Gateway, list[Any], int]:
        stats = MemoryStatsCollector(get_crawler())
        cores = [Gateway(pool, Policy()), Gateway(pool, Policy())]
        fleets = [FleetLeases(redis.url, "test-heard", 5.0, stats, time.monotonic, _control()) for _ in cores]
        shared = [SharedEvidence(f, c, random.Random(1)) for f, c in zip(fleets, cores, strict=True)]
        changes: list[Any] = []
        shared[1].on_events = changes.extend
        for fleet, evidence in zip(fleets, shared, strict=True):
            await fleet.start()
            evidence.start()
        client = redis_py.Redis.from_url(redis.url)
        client.xadd("test-heard:outcomes", {"by": "someone", "o": "[[1, {}], 7, null]", "s": '{"x": "y"}'})
        client.xadd("test-heard:outcomes", {"garbage": "\xff"})
        client.close()
        seer, key = cores[0], pool[0].key
        for _ in range(6):
            seer.sent(key, "a.example", time.monotonic(), first_attempt=True)
            seer.on_success(key, "a.example", "a.example", time.monotonic(), 0.05)
        seer.sent(pool[1].key, "a.example", time.monotonic(), first_attempt=True)
        seer.on_failure(
            Fault("proxy_refused", Blame.PROXY, hard=True),
            Attempt(3, 2, proxy=pool[1].key),
            domain="a.example",
            slot="a.example",
            ceiling=8,
            now=time.monotonic(),
            rng=random.Random(0),
        )
        deadline = time.monotonic() + 10
        while stats.get_value("gateway/fleet/heard", 0) < 7 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for evidence, fleet in zip(shared, fleets, strict=True):
            await evidence.close()
            await fleet.close()
        return cores[1], changes, int(stats.get_value("gateway/fleet/heard", 0))

    hearer, changes, heard = asyncio.run(scenario())
    assert heard == 7  # six successes and a failure; the garbage entries counted nothing
    record = hearer.pool.records[pool[0].key]
    assert record.health.latency.samples == 6 and hearer.judge.worked(pool[0].key, "a.example", time.monotonic())
    refused = hearer.pool.records[pool[1].key].health
    # The failure raised the proxy's score; its ejection stays with the process that saw it.
    assert refused.score > 0.0 and refused.state is State.ACTIVE
    assert changes == []


def test_a_broad_crawl_keeps_the_limits_of_a_bounded_number_of_slots() -> None:
    # No Redis needed: what the process remembers per slot stays bounded, and a slot whose leases
    # it holds is never forgotten (its cut count decides whether they may be passed on).
    stats = MemoryStatsCollector(get_crawler())
    fleet = FleetLeases("redis://127.0.0.1:1/0", "test-bounded", 1.0, stats, time.monotonic, _control())
    fleet._held["busy"] = {"lease"}
    fleet._learn("busy", [8, 0, 0, 0])
    fleet._learn("busy", [4, 0, 0, 1])  # a cut: a new epoch
    for i in range(12_000):
        fleet._learn(f"slot{i}", [8, 1, 1, 0])
        fleet._learn(f"slot{i}", [4, 0, 0, 1])
    assert len(fleet._limits) <= 10_000 and len(fleet._epochs) <= 10_000
    assert len(fleet._phases) == len(fleet._limits)  # a limit's phase goes with it
    assert fleet._limits["busy"] == 4 and fleet._epochs["busy"] == 1
    assert "slot11999" in fleet._limits and "slot0" not in fleet._limits
