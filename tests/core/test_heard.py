"""heard.py and Gateway.hear: a fleet's processes learn from each other's outcomes."""

from __future__ import annotations

import random

import pytest

from scrapy_gateway.core.events import Ejected, GateClosed, GateOpened, Readmitted
from scrapy_gateway.core.faults import ATTEMPT_TIMEOUT, Blame, Fault, classify_status
from scrapy_gateway.core.gates import PROVIDER
from scrapy_gateway.core.gateway import Gateway, Policy
from scrapy_gateway.core.health import State
from scrapy_gateway.core.heard import Heard, Outbox
from tests.core.test_gateway import SOFT, D, failure, proxies

# A plain 502 through a proxy: UNKNOWN, which history settles.
PLAIN_502 = classify_status(502, {}, via_proxy=True, in_tunnel=False, now_epoch=0.0, retry_after_cap=60.0)
RNG = random.Random(0)


def keys(n: int) -> list[str]:
    return [p.key for p in proxies(n)]


def hear_successes(gateway: Gateway, paths: list[str], now: float, rounds: int = 8) -> None:
    for i in range(rounds):
        for key in paths:
            gateway.hear(Heard(key, D, latency=0.05), now + i * 0.01, RNG)


def test_heard_successes_make_a_failure_through_a_working_path_the_origins():
    # One process of four saw the domain work through two proxies, the others through the rest.
    # Its first failure through a path only the others used is an overload, not a ban.
    paths = keys(10)
    alone, fleet = Gateway(proxies(10), Policy()), Gateway(proxies(10), Policy())
    for gateway in (alone, fleet):
        for i in range(8):
            for key in paths[:2]:
                gateway.on_success(key, D, D, 1.0 + i * 0.01, 0.05)
    hear_successes(fleet, paths[2:], 1.0)
    assert failure(alone, PLAIN_502, paths[5], now=2.0).fault.blame is Blame.PAIR
    assert failure(fleet, PLAIN_502, paths[5], now=2.0).fault.blame is Blame.ORIGIN


def test_heard_failures_raise_scores_but_never_eject():
    gateway = Gateway(proxies(4), Policy())
    key = keys(4)[0]
    for i in range(5):
        assert gateway.hear(Heard(key, D, fault=SOFT, evidence=Blame.PROXY), 1.0 + i, RNG) == []
    health = gateway.pool.records[key].health
    assert health.state is State.ACTIVE and health.score > 0.6 and health.streak == 5
    # This process's own next failure of it ejects: the evidence is the fleet's.
    verdict = failure(gateway, SOFT, key, now=7.0)
    assert [type(e) for e in verdict.events] == [Ejected]


def test_a_heard_success_readmits_a_proxy_on_probation_but_not_one_cooling_down():
    gateway = Gateway(proxies(4), Policy())
    key = keys(4)[0]
    failure(gateway, Fault("proxy_refused", Blame.PROXY, hard=True), key, now=1.0)
    health = gateway.pool.records[key].health
    assert gateway.hear(Heard(key, D, latency=0.05), 2.0, RNG) == []
    assert health.state is State.EJECTED and health.ejections == 1  # its cooldown is this process's
    health.usable(health.until)  # the cooldown ends: probation
    assert gateway.hear(Heard(key, D, latency=0.05), health.until, RNG) == [Readmitted(key)]
    assert not health.probation


def test_heard_outcomes_teach_latency():
    gateway = Gateway(proxies(3), Policy())
    key = keys(3)[1]
    hear_successes(gateway, [key], 1.0, rounds=4)
    assert gateway.pool.records[key].health.latency.samples == 4
    assert gateway.latencies.get(D) is not None
    gateway.hear(Heard(key, D, fault=SOFT, evidence=Blame.PROXY, waited=3.0), 2.0, RNG)
    assert gateway.pool.records[key].health.latency.current(2.0) >= 0.05


def test_a_heard_success_closes_the_gate_and_a_heard_failed_probe_delays_the_next():
    gateway = Gateway(proxies(10), Policy())  # 4 failing paths of 10: the domain, not the provider
    paths = keys(10)
    opened = []
    for i in range(12):
        heard = Heard(paths[i % 4], D, fault=PLAIN_502, evidence=Blame.UNKNOWN)
        opened += [e for e in gateway.hear(heard, 1.0 + i * 0.5, RNG) if isinstance(e, GateOpened)]
    assert [e.scope for e in opened] == [D]  # the fleet's failures are outage evidence here too
    gates = gateway.gates
    before = gates._scopes[D].next_probe
    gateway.hear(Heard(paths[0], D, fault=PLAIN_502, evidence=Blame.UNKNOWN, probe=D), before, RNG)
    assert gates._scopes[D].next_probe >= before + 0.5 * 0.8  # the fleet's probe was this one's too
    closed = gateway.hear(Heard(paths[1], D, latency=0.05), before + 1.0, RNG)
    assert [type(e) for e in closed] == [GateClosed] and not gates.is_open(D)


def test_no_pool_change_while_the_provider_gate_is_open():
    gateway = Gateway(proxies(4), Policy())
    gateway.gates._scope(PROVIDER, 0.0).opened_at = 0.0
    gateway.gates._open += 1
    key = keys(4)[0]
    gateway.hear(Heard(key, D, fault=SOFT, evidence=Blame.PROXY), 1.0, RNG)
    assert gateway.pool.records[key].health.score == 0.0


def test_the_budget_is_the_fleets():
    policy = Policy(budget_burst=2.0, budget_ratio=0.5, budget_min_per_second=0.0)
    gateway = Gateway(proxies(3), policy)
    key = keys(3)[0]
    for _ in range(2):  # the others' retries spend the domain's tokens here too
        gateway.hear(Heard(key, D, fault=PLAIN_502, evidence=Blame.UNKNOWN, withdrew=True), 1.0, RNG)
    assert gateway.budget.withdraw(D, 1.0) == float("inf")
    gateway.heard_sent(D, 4, 1.0)  # and their first attempts refill them: 4 * 0.5 = 2 tokens
    assert gateway.budget.withdraw(D, 1.0) == 0.0


def test_the_outbox_holds_what_this_process_saw_with_the_blame_it_settled():
    gateway = Gateway(proxies(10), Policy())
    gateway.outbox = outbox = Outbox()
    paths = keys(10)
    for i in range(8):
        gateway.on_success(paths[0], D, D, 1.0 + i * 0.01, 0.05)
    gateway.sent(paths[1], D, 1.9, first_attempt=True)
    verdict = failure(gateway, PLAIN_502, paths[1], now=2.0)
    outcomes, sent = outbox.take()
    assert sent == {D: 1}
    assert outcomes[0] == Heard(paths[0], D, latency=0.05)
    last = outcomes[-1]
    assert last.fault == verdict.fault and last.fault.blame is Blame.PAIR and last.evidence is Blame.UNKNOWN
    assert last.withdrew is False and last.waited is None
    assert outbox.take() == ([], {})


def test_the_outbox_is_bounded():
    outbox = Outbox()
    for i in range(Outbox.LIMIT + 1):
        outbox.add(Heard(None, f"d{i}"))
    assert len(outbox.outcomes) <= Outbox.LIMIT
    assert outbox.outcomes[-1].domain == f"d{Outbox.LIMIT}"


def test_the_stream_rows_round_trip_and_garbage_is_none():
    from scrapy_gateway.fleet_evidence import decode, encode

    fault = Fault("http_503", Blame.ORIGIN, throttles=True, retry_after=2.0)
    rows = [
        Heard("http://10.0.0.1:8080", D, latency=0.25),
        Heard(None, D),
        Heard(
            "http://10.0.0.2:8080", D, fault=fault, evidence=Blame.UNKNOWN, cut=True, probe=D, waited=1.5, withdrew=True
        ),
        Heard("http://10.0.0.3:8080", D, fault=fault, cut=True, everyone=True),
    ]
    for heard in rows:
        assert decode(encode(heard)) == heard
    for garbage in (None, [], ["p", D], ["p", D, "x"], ["p", D, -1, "k", "zz", "un", 0, -1, "", -1], 7):
        assert decode(garbage) is None
    # Durations no download could take are dropped, never a poisoned latency estimate.
    for seconds in (float("inf"), float("nan"), 1e9):
        assert decode(["p", D, seconds]) == Heard("p", D)


@pytest.mark.parametrize("everyone", [False, True])
def test_heard_cuts_are_evidence_about_the_domain_only_when_the_sender_found_it_slow_everywhere(everyone):
    # Two other processes cut attempts through two paths of a domain that has never answered; a
    # third path fails here. Cuts made while the domain was slow through other paths too (as
    # the senders judged) are the domain's evidence: three paths failing is an outage.
    gateway = Gateway(proxies(4), Policy())
    paths = keys(4)
    cut = Fault(ATTEMPT_TIMEOUT, Blame.UNKNOWN, retryable=True, transport=True)
    for key in paths[:2]:
        gateway.hear(Heard(key, D, fault=cut, cut=True, everyone=everyone, waited=1.0), 3.0, RNG)
    verdict = failure(gateway, PLAIN_502, paths[2], now=3.1)
    assert verdict.fault.blame is (Blame.ORIGIN if everyone else Blame.UNKNOWN)


def test_a_proxy_outside_the_pool_teaches_nothing():
    gateway = Gateway(proxies(3), Policy())
    assert gateway.hear(Heard("http://10.9.9.9:8080", D, latency=0.05), 1.0, RNG) == []
    assert gateway.latencies.get(D) is None and not gateway.judge.worked("http://10.9.9.9:8080", D, 1.0)


def test_a_success_seen_before_the_gate_opened_here_does_not_close_it():
    gateway = Gateway(proxies(10), Policy())
    paths = keys(10)
    for i in range(12):
        gateway.hear(Heard(paths[i % 4], D, fault=PLAIN_502, evidence=Blame.UNKNOWN), 1.0 + i * 0.5, RNG)
    opened_at = gateway.gates._scopes[D].opened_at
    assert opened_at is not None
    late = Heard(paths[5], D, latency=0.05)
    assert gateway.hear(late, opened_at + 0.05, RNG, at=opened_at - 0.01) == []  # seen before: old news
    assert gateway.gates.is_open(D)
    assert [type(e) for e in gateway.hear(late, opened_at + 0.1, RNG, at=opened_at + 0.06)] == [GateClosed]


def test_a_gate_the_fleet_opened_undoes_the_cuts_here():
    gateway = Gateway(proxies(10), Policy())
    paths = keys(10)
    gateway.concurrency.overloaded(D, 16, sent_at=0.0, now=0.5)  # cut to 11 before the outage
    gateway.concurrency.clean(D)
    calm = gateway.concurrency.limit(D)
    gateway.concurrency.overloaded(D, 16, sent_at=0.9, now=0.9)
    assert gateway.concurrency.limit(D) < calm
    for i in range(12):
        gateway.hear(Heard(paths[i % 4], D, fault=PLAIN_502, evidence=Blame.UNKNOWN), 1.0 + i * 0.5, RNG)
    assert gateway.gates.is_open(D)
    assert gateway.concurrency.limit(D) == calm  # the outage's cuts are undone, as for one seen here


def test_rows_must_be_lists():
    from scrapy_gateway.fleet_evidence import decode

    assert decode("ab1") is None and decode(("p", D, 0.1)) is None
