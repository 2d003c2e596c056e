"""Latency estimates, the per-attempt timeout rule, and latency-aware selection."""

from __future__ import annotations

import heapq
import random

import pytest

from scrapy_gateway.core.attempt import Attempt
from scrapy_gateway.core.faults import ATTEMPT_TIMEOUT, Blame, TransportError, classify_transport
from scrapy_gateway.core.gateway import Gateway, Policy
from scrapy_gateway.core.latency import PEAK_TAU, DomainLatency, Latency, TimeoutRule
from scrapy_gateway.core.pool import Pick
from scrapy_gateway.core.proxies import parse_proxies

D = "site.example"


def _measured(*samples: float, now: float = 0.0) -> Latency:
    latency = Latency()
    for sample in samples:
        latency.observe(sample, now)
    return latency


def test_first_sample_sets_rfc6298_estimates() -> None:
    latency = _measured(0.2)
    assert latency.srtt == pytest.approx(0.2)
    assert latency.rttvar == pytest.approx(0.1)
    assert latency.timeout() == pytest.approx(0.6)  # srtt + 4 rttvar
    assert Latency().timeout() is None


def test_peak_jumps_up_at_once_and_comes_down_slowly() -> None:
    latency = _measured(0.1, 0.1)
    latency.observe(2.0, 0.0)
    assert latency.current(0.0) == pytest.approx(2.0)
    latency.observe(0.1, 0.0)
    assert latency.current(0.0) == pytest.approx(2.0 - (2.0 - 0.1) / 4)  # a quarter of the way down
    # Unused, it fades, so that a path slow once gets another chance later.
    assert latency.current(3 * PEAK_TAU) < 0.1 * latency.current(0.0)


def test_a_silence_counts_for_the_peak_only() -> None:
    latency = _measured(0.05)
    latency.bound(1.0, 0.0)
    assert latency.current(0.0) == pytest.approx(1.0)
    assert latency.silences == 1
    assert latency.timeout() == pytest.approx(0.05 + 4 * 0.025)  # RTO learns only from answers
    latency.observe(0.05, 0.0)
    assert latency.silences == 0


RULE = TimeoutRule(factor=2.0, floor=1.0)


def test_no_cut_before_the_domain_has_shown_anything() -> None:
    assert RULE.attempt_timeout(None, None, cuts=0, user_timeout=180.0) is None
    assert RULE.attempt_timeout(Latency(), None, cuts=0, user_timeout=180.0) is None


def test_a_fast_domain_cuts_a_silent_path_at_the_floor() -> None:
    domain = _measured(0.02, 0.03, 0.02)
    assert RULE.attempt_timeout(domain, Latency(), cuts=0, user_timeout=180.0) == pytest.approx(1.0)


def test_a_slow_domain_is_slow_not_broken() -> None:
    domain = _measured(2.5, 3.0, 2.0)
    limit = RULE.attempt_timeout(domain, None, cuts=0, user_timeout=180.0)
    assert limit is not None and limit > 3.0 * 2  # well past anything the domain has shown


def test_a_slow_path_that_answers_gets_its_own_time() -> None:
    domain = _measured(0.02, 0.02)
    slow = _measured(1.5, 1.6, 1.5)
    limit = RULE.attempt_timeout(domain, slow, cuts=0, user_timeout=180.0)
    assert limit is not None and limit > 2 * 1.6


def test_never_above_the_users_timeout() -> None:
    domain = _measured(2.0, 3.0)
    assert RULE.attempt_timeout(domain, None, cuts=0, user_timeout=5.0) is None
    assert RULE.attempt_timeout(_measured(0.02), None, cuts=0, user_timeout=1.0) is None


def test_cuts_double_the_next_limit_until_the_users_timeout() -> None:
    domain = _measured(0.02)
    limits = [RULE.attempt_timeout(domain, None, cuts=n, user_timeout=30.0) for n in range(6)]
    assert limits == [1.0, 2.0, 4.0, 8.0, 16.0, None]


def test_a_paths_own_silences_escalate_its_limit_a_few_times() -> None:
    domain = _measured(0.02)
    path = Latency()
    for _ in range(10):
        path.bound(1.0, 0.0)
    # A proxy too slow for the first limit is measured on a later try; capped at 2**3.
    assert RULE.attempt_timeout(domain, path, cuts=0, user_timeout=180.0) == pytest.approx(8.0)


def test_a_domain_silent_through_several_paths_escalates_every_attempts_limit() -> None:
    domain = DomainLatency()
    domain.observe(0.02, 0.0)
    fresh = [RULE.attempt_timeout(domain, None, cuts=0, user_timeout=180.0)]
    for path in ("p1", "p1", "p2", "p3", "p4", "p5"):  # cut through one path, then through more
        domain.silent_through(path, 0.5)
        fresh.append(RULE.attempt_timeout(domain, None, cuts=0, user_timeout=180.0))
    # One silent path is its own problem; each further one doubles, up to the paths' own cap.
    assert fresh == [1.0, 1.0, 1.0, 2.0, 4.0, 8.0, 8.0]
    domain.observe(0.02, 1.0)  # it answers again
    assert RULE.attempt_timeout(domain, None, cuts=0, user_timeout=180.0) == 1.0


def test_factor_zero_turns_timeouts_off() -> None:
    assert TimeoutRule(factor=0.0).attempt_timeout(_measured(0.02), None, cuts=0, user_timeout=180.0) is None


# -- selection -------------------------------------------------------------------------------


def _gateway(n: int) -> tuple[Gateway, list[str]]:
    proxies = parse_proxies([f"http://10.0.0.{i}:8000" for i in range(1, n + 1)], source="test")
    return Gateway(proxies, Policy()), [p.key for p in proxies]


def _simulate(
    gateway: Gateway, latency: dict[str, float], requests: int, concurrency: int, seed: int = 1
) -> dict[str, int]:
    """Discrete-event crawl: `concurrency` requests in flight, each through the chosen proxy."""
    rng = random.Random(seed)
    used: dict[str, int] = {}
    events: list[tuple[float, int, str]] = []
    now, sent, order = 0.0, 0, 0
    while sent < requests or events:
        while sent < requests and len(events) < concurrency:
            choice = gateway.route(D, now, rng)
            assert isinstance(choice, Pick)
            key = choice.proxy.key
            gateway.sent(key, D, now, first_attempt=True)
            used[key] = used.get(key, 0) + 1
            order += 1
            heapq.heappush(events, (now + latency[key], order, key))
            sent += 1
        now, _, key = heapq.heappop(events)
        gateway.on_success(key, D, D, now, latency[key])
    return used


@pytest.mark.parametrize("seed", range(1, 7))
def test_half_the_pool_slow_carries_almost_nothing(seed: int) -> None:
    gateway, keys = _gateway(10)
    latency = {k: (1.5 if i < 5 else 0.02) for i, k in enumerate(keys)}
    used = _simulate(gateway, latency, requests=2000, concurrency=8, seed=seed)
    slow = sum(used.get(k, 0) for k in keys[:5])
    # Blind two choices would send about a fifth of the requests (both draws slow) to them.
    assert slow <= 20, used
    # Load still spreads over the fast ones it knows (once the slow first contacts have raised
    # the price of exploring, the last fast ones need not be tried at all): none carries most.
    fast = sorted((used.get(k, 0) for k in keys[5:]), reverse=True)
    assert fast[1] > 300 and fast[0] <= 0.6 * sum(fast), used


def test_equal_proxies_share_the_load() -> None:
    gateway, keys = _gateway(10)
    used = _simulate(gateway, dict.fromkeys(keys, 0.05), requests=2000, concurrency=8)
    assert min(used.values()) > 100, used


def test_an_unmeasured_proxy_gets_a_prior_not_a_free_pass() -> None:
    gateway, keys = _gateway(2)
    measured, fresh = keys
    gateway.sent(measured, D, 0.0, first_attempt=True)
    gateway.on_success(measured, D, D, 0.1, 0.1)
    pool = gateway.pool
    prior = 2 * 0.1
    idle_cost = pool._cost(pool.records[measured], D, 0.1, (), prior)
    fresh_cost = pool._cost(pool.records[fresh], D, 0.1, (), prior)
    assert idle_cost is not None and fresh_cost is not None and idle_cost < fresh_cost
    for _ in range(2):  # once the measured one is busy, the fresh one is worth trying
        gateway.sent(measured, D, 0.1, first_attempt=True)
    busy_cost = pool._cost(pool.records[measured], D, 0.1, (), prior)
    assert busy_cost is not None and fresh_cost < busy_cost


def test_a_proxy_that_keeps_us_waiting_is_avoided_before_any_timeout() -> None:
    gateway, keys = _gateway(2)
    silent, good = keys
    rng = random.Random(3)
    for key in keys:
        gateway.sent(key, D, 0.0, first_attempt=True)
        gateway.on_success(key, D, D, 0.05, 0.05)
    gateway.sent(silent, D, 0.05, first_attempt=True)  # and no answer comes
    picks = set()
    for step in range(20):
        now = 0.5 + step * 0.05
        choice = gateway.route(D, now, rng)
        assert isinstance(choice, Pick)
        picks.add(choice.proxy.key)
    assert picks == {good}


# -- cuts ------------------------------------------------------------------------------------


def test_cut_attempts_are_never_the_origins_and_escalate_the_request() -> None:
    gateway, keys = _gateway(6)
    rng = random.Random(1)
    for key in keys[3:]:
        gateway.sent(key, D, 0.0, first_attempt=True)
        gateway.on_success(key, D, D, 0.05, 0.05)
    cut = classify_transport(TransportError.CUT, via_proxy=True)
    assert cut.kind == ATTEMPT_TIMEOUT and not cut.throttles
    # Three paths cut in the same tick, with no success in between: not an outage.
    for key in keys[:3]:
        gateway.sent(key, D, 0.0, first_attempt=True)
        attempt = Attempt(5, 10, proxy=key, sent_at=0.0)
        verdict = gateway.on_failure(cut, attempt, domain=D, slot=D, ceiling=8, now=1.0, rng=rng)
        assert verdict.fault.blame is not Blame.ORIGIN
        assert verdict.retry and verdict.new_limit is None
        assert verdict.next_attempt is not None and verdict.next_attempt.cuts == 1
    # What the silent paths showed is kept: they now take at least a second.
    assert gateway.pool.records[keys[0]].health.latency.current(1.0) == pytest.approx(1.0)


def _worked_gateway(n: int) -> tuple[Gateway, list[str]]:
    """A pool of `n` whose every proxy has answered on D ten times in 50 ms."""
    gateway, keys = _gateway(n)
    for _ in range(10):
        for key in keys:
            gateway.sent(key, D, 0.0, first_attempt=True)
            gateway.on_success(key, D, D, 0.05, 0.05)
    return gateway, keys


def test_a_domain_turned_slow_for_every_path_that_worked_is_the_origins_not_the_paths() -> None:
    """An origin that stops answering in time for everyone: its cuts through paths that worked
    there are an outage's (as the 504s a reverse proxy would send), not three silent proxies."""
    gateway, keys = _worked_gateway(4)
    rng = random.Random(1)
    before = gateway.attempt_timeout(D, keys[3], cuts=0, user_timeout=180.0)
    cut = classify_transport(TransportError.CUT, via_proxy=True)
    blames = []
    for i, key in enumerate(keys[:3] * 2):
        gateway.sent(key, D, 1.0, first_attempt=True)
        verdict = gateway.on_failure(
            cut, Attempt(5, 10, proxy=key, sent_at=1.0), domain=D, slot=D, ceiling=8, now=2.0 + 0.01 * i, rng=rng
        )
        blames.append(verdict.fault.blame)
    assert blames[0] is not Blame.ORIGIN  # one path cut: that path's, as far as anyone knows
    assert blames[-1] is Blame.ORIGIN, blames
    assert Blame.PAIR not in blames and Blame.PROXY not in blames, blames
    # A fresh request there, through the path not yet cut, now waits twice two times longer.
    assert before is not None
    assert gateway.attempt_timeout(D, keys[3], cuts=0, user_timeout=180.0) == pytest.approx(4 * before)


def test_attempts_cut_in_one_tick_while_the_domain_answers_stay_the_paths() -> None:
    """Three proxies die in a pool that works: their attempts, sent before the others' last
    answers, are cut in the same tick. That is no silence of the domain."""
    gateway, keys = _worked_gateway(6)
    rng = random.Random(1)
    before = gateway.attempt_timeout(D, keys[5], cuts=0, user_timeout=180.0)
    gateway.on_success(keys[5], D, D, 1.9, 0.05)  # the domain answers after the cut ones left
    cut = classify_transport(TransportError.CUT, via_proxy=True)
    for key in keys[:3] * 2:
        attempt = Attempt(5, 10, proxy=key, sent_at=1.0)
        verdict = gateway.on_failure(cut, attempt, domain=D, slot=D, ceiling=8, now=2.0, rng=rng)
        assert verdict.fault.blame is not Blame.ORIGIN
    assert gateway.attempt_timeout(D, keys[5], cuts=0, user_timeout=180.0) == pytest.approx(before)


def test_attempt_timeout_reads_the_domain_and_the_path() -> None:
    gateway, keys = _gateway(3)
    silent, slow, fast = keys
    assert gateway.attempt_timeout(D, silent, cuts=0, user_timeout=180.0) is None  # nothing known yet
    gateway.sent(fast, D, 0.0, first_attempt=True)
    gateway.on_success(fast, D, D, 0.03, 0.03)
    for _ in range(3):
        gateway.sent(slow, D, 0.0, first_attempt=True)
        gateway.on_success(slow, D, D, 2.0, 2.0)
    assert gateway.attempt_timeout(D, silent, cuts=0, user_timeout=180.0) == pytest.approx(
        2 * gateway.latencies.get(D).timeout()  # type: ignore[union-attr]
    )
    slow_limit = gateway.attempt_timeout(D, slow, cuts=0, user_timeout=180.0)
    assert slow_limit is not None and slow_limit > 4.0


# -- first contacts, the remembered pick, the domain's fastest path -----------------------------


def _first_contacts(gateway: Gateway, latency: dict[str, float], requests: int) -> set[str]:
    used = _simulate(gateway, latency, requests=requests, concurrency=8)
    return set(used)


def test_a_pool_whose_first_contacts_were_often_slow_stops_trying_unknown_proxies() -> None:
    gateway, keys = _gateway(120)
    latency = {k: (1.5 if i % 2 else 0.02) for i, k in enumerate(keys)}
    tried = _first_contacts(gateway, latency, requests=3000)
    slow_tried = sum(1 for k in tried if latency[k] > 1.0)
    # A prior of twice the domain's 20 ms would try an unknown proxy whenever a known one had a
    # request in flight: most of the 60 slow ones, each holding a place for 1.5 s.
    assert slow_tried <= 12, slow_tried
    assert gateway.pool.debuts.penalty(100.0, 0.02) > 0.3  # what an unknown proxy is expected to waste


def test_a_pool_of_equals_keeps_spreading_its_load_over_unknown_proxies() -> None:
    gateway, keys = _gateway(120)
    used = _simulate(gateway, dict.fromkeys(keys, 0.02), requests=3000, concurrency=8)
    # One of each draw's two candidates comes from the proven proxies (pool.WorkingSet), so not
    # every proxy is tried; most are, and none carries much more than its share.
    assert len(used) >= 80, len(used)
    assert max(used.values()) <= 0.03 * 3000, sorted(used.values())[-5:]


def test_a_first_contact_still_outstanding_raises_the_prior_while_it_waits() -> None:
    gateway, keys = _gateway(3)
    debuts = gateway.pool.debuts
    gateway.sent(keys[0], D, 0.0, first_attempt=True)
    gateway.on_success(keys[0], D, D, 0.02, 0.02)
    gateway.sent(keys[1], D, 0.0, first_attempt=True)  # no answer yet
    assert debuts.penalty(0.02, 0.02) == 0.0  # a good first contact wastes nothing
    assert debuts.penalty(1.0, 0.02) > 0.4  # half of the first contacts have waited ~1 s so far
    gateway.released(keys[1], D)  # dropped on purpose: nobody's fault, no first contact made
    assert debuts.penalty(5.0, 0.02) == 0.0
    assert not gateway.pool.records[keys[1]].debuted


def test_an_exploration_pick_that_has_not_answered_does_not_replace_the_proxy_to_beat() -> None:
    gateway, keys = _gateway(10)
    rng = random.Random(2)
    good = keys[0]
    gateway.sent(good, D, 0.0, first_attempt=True)
    gateway.on_success(good, D, D, 0.02, 0.02)
    assert gateway.pool._last[D].proxy.key == good
    for _ in range(3):  # the good one busy: unknown proxies are tried, and do not answer
        gateway.sent(good, D, 0.02, first_attempt=True)
    explored = set()
    for _ in range(5):
        choice = gateway.route(D, 0.03, rng)
        assert isinstance(choice, Pick)
        explored.add(choice.proxy.key)
        gateway.sent(choice.proxy.key, D, 0.03, first_attempt=True)
    assert explored - {good}
    assert gateway.pool._last[D].proxy.key == good


def test_slow_paths_that_answered_first_do_not_make_the_domain_slow() -> None:
    gateway, keys = _gateway(4)
    slow, fast = keys[:2], keys[2]
    for key in slow:
        gateway.sent(key, D, 0.0, first_attempt=True)
        gateway.on_success(key, D, D, 1.5, 1.5)
    slow_limit = gateway.attempt_timeout(D, keys[3], cuts=0, user_timeout=180.0)
    assert slow_limit is not None and slow_limit > 5.0  # all it knows: the domain takes 1.5 s
    for step in range(3):
        now = 1.6 + step * 0.02
        gateway.sent(fast, D, now, first_attempt=True)
        gateway.on_success(fast, D, D, now + 0.02, 0.02)
    # A path that has answered three times in 20 ms speaks for the domain: an unknown path is cut
    # at the floor, a known slow one keeps its own, longer, limit.
    assert gateway.attempt_timeout(D, keys[3], cuts=0, user_timeout=180.0) == pytest.approx(0.25)
    own = gateway.attempt_timeout(D, slow[0], cuts=0, user_timeout=180.0)
    assert own is not None and own > 3.0
