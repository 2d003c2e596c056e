"""Outage gates on their own: when they open, who probes, when they close or stall."""

from __future__ import annotations

import random

import pytest

from scrapy_gateway.core.events import GateClosed, GateOpened
from scrapy_gateway.core.gates import PROVIDER, GateRules, Go, Hold, OutageGates

D = "shop.example"
RNG = random.Random(1)


def _fail(gates: OutageGates, key: str, paths: list[str], now: float, needed: int = 3) -> list[GateOpened]:
    opened = []
    for path in paths:
        event = gates.failure(key, path, now, RNG, paths_needed=needed, round_trip=0.1)
        if event is not None:
            opened.append(event)
    return opened


def test_a_domain_opens_after_enough_failures_through_enough_paths_and_a_quiet_time() -> None:
    gates = OutageGates(GateRules())
    assert _fail(gates, D, ["a"], 0.0) == []  # the scope's first outcome: quiet time counts from it
    assert _fail(gates, D, ["a", "a", "a", "a", "a"], 0.5) == []  # one path: maybe the proxy
    assert _fail(gates, D, ["b"], 0.1) == []  # three paths, but too soon: 4 round trips of 0.1 s
    assert _fail(gates, D, ["c"], 0.5) == [GateOpened(D, 8, 3)]
    assert gates.is_open(D)


def test_before_anything_is_measured_a_domain_waits_only_the_shortest_quiet_time() -> None:
    gates = OutageGates(GateRules(quiet_min=0.25))
    for path in "abcd":
        assert gates.failure(D, path, 0.01, RNG, paths_needed=3) is None
    assert gates.failure(D, "e", 0.3, RNG, paths_needed=3) == GateOpened(D, 5, 5)


def test_after_a_success_it_takes_a_quiet_time_an_overload_never_has() -> None:
    gates = OutageGates(GateRules())
    gates.success((D,), 1.0)
    # Failures right after a success: an origin shedding load, which keeps answering.
    assert _fail(gates, D, ["a", "b", "c", "d", "e", "f"], 1.05) == []
    # quiet time = 4 round trips (0.1 s each), at least 0.25 s: 1.4 s
    assert _fail(gates, D, ["a"], 1.45) == [GateOpened(D, 7, 6)]


def test_one_probe_at_a_time_then_a_longer_wait_then_release_on_success() -> None:
    gates = OutageGates(GateRules(probe_min=0.5))
    _fail(gates, D, ["z"], 0.0)  # the first outcome, a second before
    assert _fail(gates, D, ["a", "b", "c", "d"], 1.0)
    first = gates.admit((D,), 1.0)
    assert isinstance(first, Hold) and first.scope == D  # the first probe waits probe_min
    probe_at = first.until
    assert 1.4 <= probe_at <= 1.6  # probe_min after the opening, +-20 % jitter: the bounds are the rule
    assert gates.admit((D,), probe_at) == Go(probe=D)
    held = gates.admit((D,), probe_at)
    assert isinstance(held, Hold)  # a second request while the probe is out waits
    gates.probe_ended(D, probe_at + 0.01, RNG)  # the probe failed
    assert isinstance(gates.admit((D,), probe_at + 0.02), Hold)
    events = gates.success((D,), probe_at + 1.0)
    assert [type(e) for e in events] == [GateClosed]
    assert gates.admit((D,), probe_at + 1.0) == Go()


def test_probes_space_out_with_the_outages_age() -> None:
    gates = OutageGates(GateRules(probe_min=0.5, probe_share=0.05, probe_max=30.0))
    _fail(gates, D, ["z"], 0.0)  # the first outcome, a second before
    assert _fail(gates, D, ["a", "b", "c", "d"], 1.0)
    waits = []
    now = 1.0
    for _ in range(60):
        while not gates.probe_due(D, now):
            now += 0.05
        assert gates.admit((D,), now) == Go(probe=D)
        start = now
        gates.probe_ended(D, now, RNG)
        while not gates.probe_due(D, now):
            now += 0.05
        waits.append(now - start)
    assert waits[0] < 1.0
    assert waits[-1] > 3 * waits[0]
    assert all(w <= 30.0 * 1.2 + 0.05 for w in waits)
    # Late by a bounded share of the outage: never more than ~6 % of how long it has lasted.
    assert waits[-1] <= 0.05 * 1.2 * now + 0.05


def test_a_stall_past_the_limit_is_told_once() -> None:
    gates = OutageGates(GateRules(stall_after=10.0))
    _fail(gates, D, ["z"], 0.0)  # the first outcome, a second before
    assert _fail(gates, D, ["a", "b", "c", "d"], 1.0)
    first = gates.admit((D,), 11.0)
    second = gates.admit((D,), 11.5)
    assert isinstance(first, Hold) and first.stalled and first.announce
    assert isinstance(second, Hold) and second.stalled and not second.announce


def test_the_provider_gate_needs_half_the_pool_and_a_quiet_time_even_at_the_start() -> None:
    gates = OutageGates(GateRules())
    assert gates.provider_paths_needed(1) == 1
    assert gates.provider_paths_needed(10) == 5
    assert gates.provider_paths_needed(100) == 50
    # A start-up burst through four bad proxies of ten: no outage.
    assert _fail(gates, PROVIDER, ["a", "b", "c", "d"] * 3, 0.01, needed=5) == []
    assert _fail(gates, PROVIDER, ["e"], 0.02, needed=5) == []  # five paths, but too soon
    assert _fail(gates, PROVIDER, ["f"], 1.5, needed=5) != []
    assert isinstance(gates.admit((PROVIDER, D), 1.5), Hold)
    assert gates.success((PROVIDER, D), 2.0)[0].scope == PROVIDER


def test_enough_evidence_before_the_quiet_time_holds_new_requests_until_it_ends() -> None:
    gates = OutageGates(GateRules())
    gates.success((D,), 1.0)
    assert gates.admit((D,), 1.0) == Go()
    assert _fail(gates, D, ["a", "b", "c", "d"], 1.05) == []
    assert gates.admit((D,), 1.06) == Go()  # four failures: not yet the evidence of an outage
    assert _fail(gates, D, ["e"], 1.06) == []
    # Five through three paths, but 1.4 s (the quiet time) has not come: pending, not open.
    assert not gates.is_open(D)
    soon, last = gates.admit((D,), 1.1), gates.admit((D,), 1.35)
    assert isinstance(soon, Hold) and soon.until == pytest.approx(1.2)  # no fast failures make room
    assert isinstance(last, Hold) and last.until == pytest.approx(1.4)  # ... up to the quiet time
    assert gates.admit((D,), 1.4) == Go()  # the quiet time is over: the next failure decides
    assert _fail(gates, D, ["a"], 1.45) == [GateOpened(D, 6, 5)]
    # A success clears a pending gate at once.
    other = "news.example"
    gates.success((other,), 1.0)
    _fail(gates, other, ["a", "b", "c", "d", "e"], 1.05)
    assert isinstance(gates.admit((other,), 1.1), Hold)
    gates.success((other,), 1.2)
    assert gates.admit((other,), 1.2) == Go()


def test_proxies_that_never_worked_failing_between_successes_leave_the_gate_closed_not_pending() -> None:
    gates = OutageGates(GateRules())
    gates.success((D,), 1.0)
    for path in "abcde":  # banned or bad proxies failing fast while the domain answers elsewhere
        assert gates.failure(D, path, 1.01, RNG, paths_needed=3, round_trip=0.1, worked=False) is None
    assert gates.admit((D,), 1.02) == Go()
    gates.failure(D, "f", 1.03, RNG, paths_needed=3, round_trip=0.1, worked=True)
    assert gates.admit((D,), 1.04) == Go()  # one path that worked: still no outage's signature
    gates.failure(D, "g", 1.05, RNG, paths_needed=3, round_trip=0.1, worked=True)
    assert isinstance(gates.admit((D,), 1.06), Hold)  # two that worked fail too: pending
