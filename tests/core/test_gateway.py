"""gateway.py: the three questions, answered from the pieces together."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from scrapy_gateway.core.attempt import Attempt
from scrapy_gateway.core.backoff import Backoff
from scrapy_gateway.core.concurrency import Phase
from scrapy_gateway.core.events import Ejected, GateOpened, PairEjected, Readmitted
from scrapy_gateway.core.faults import Blame, Fault, TransportError, classify_status, classify_transport
from scrapy_gateway.core.gates import PROVIDER
from scrapy_gateway.core.gateway import OVERLOAD_BACKOFF_SCALE, Gateway, Policy, Verdict
from scrapy_gateway.core.pool import Pick
from scrapy_gateway.core.proxies import Proxy, parse_proxy

D = "shop.example"
HARD = Fault("proxy_refused", Blame.PROXY, hard=True)
SOFT = Fault("timeout", Blame.PROXY)
OVERLOAD = Fault("http_503", Blame.ORIGIN, throttles=True)
TIMEOUT = classify_transport(TransportError.TIMEOUT, via_proxy=True)  # UNKNOWN


def proxies(n: int) -> list[Proxy]:
    return [parse_proxy(f"http://10.0.0.{i}:8080") for i in range(1, n + 1)]


def failure(gateway: Gateway, fault: Fault, proxy: str | None, *, now: float = 1.0, seed: int = 0, **kw) -> Verdict:
    args = {"domain": D, "slot": D, "ceiling": 8, "retries_done": 0, "max_retries": 3, "sent_at": now - 0.5}
    args.update(kw)
    if proxy is not None:
        gateway.sent(proxy, args["domain"], args["sent_at"], first_attempt=False)
    attempt = Attempt(
        args.pop("max_retries"),
        args.pop("max_proxy_retries", 0),
        retries=args.pop("retries_done"),
        proxy=proxy,
        sent_at=args.pop("sent_at"),
    )
    return gateway.on_failure(fault, attempt, now=now, rng=random.Random(seed), **args)


def test_proxy_blamed_failure_retries_at_once_on_another_proxy():
    gateway = Gateway(proxies(3), Policy())
    key = proxies(3)[0].key
    verdict = failure(gateway, HARD, key)
    assert verdict.retry
    assert (verdict.delay, verdict.budget_wait, verdict.new_limit) == (0.0, 0.0, None)
    assert verdict.fault.blame is Blame.PROXY
    assert [type(e) for e in verdict.events] == [Ejected]
    assert verdict.events[0].proxy == key
    pick = gateway.route(D, 1.0, random.Random(1), avoid=[key])
    assert isinstance(pick, Pick)
    assert pick.proxy.key != key


def test_proxy_and_pair_blamed_retries_do_not_spend_the_budget():
    policy = Policy(budget_burst=1.0, budget_ratio=0.0, budget_min_per_second=1.0)
    gateway = Gateway(proxies(4), policy)
    keys = [p.key for p in proxies(4)]
    rate_limited = classify_status(429, {}, via_proxy=True, in_tunnel=True, now_epoch=0.0, retry_after_cap=60.0)
    for n in range(3):
        assert failure(gateway, SOFT, keys[n % 3], now=1.0).delay == 0.0
        assert failure(gateway, rate_limited, keys[n % 3], now=1.0).delay == 0.0
    assert failure(gateway, OVERLOAD, keys[3], now=1.0).budget_wait == 0.0  # the one token is still there
    assert failure(gateway, OVERLOAD, keys[3], now=1.0).budget_wait == 1.0


def test_an_attempt_whose_proxy_left_rotation_before_it_was_sent_is_rerouted():
    gateway = Gateway(proxies(3), Policy())
    keys = [p.key for p in proxies(3)]
    queued = Attempt(3, 0).sending(keys[0], 1.0)
    gateway.sent(keys[0], D, 1.0, first_attempt=True)
    pinned = Attempt(3, 0).sending(keys[0], 1.0, pinned=True)
    assert not gateway.stranded(queued, D, 1.0)  # still in rotation: goes as routed
    # A request ahead of it through the same proxy is refused by the site (the pair is out).
    rate_limited = classify_status(
        429, {"retry-after": "120"}, via_proxy=True, in_tunnel=True, now_epoch=0.0, retry_after_cap=600.0
    )
    assert [type(e) for e in failure(gateway, rate_limited, keys[0], now=1.1).events] == [PairEjected]
    assert not gateway.stranded(pinned, D, 1.2)  # the user's choice stands
    assert gateway.stranded(queued, D, 1.2)
    choice = gateway.reroute(queued, D, 1.2, random.Random(0))
    assert choice is not None and choice.proxy.key in keys[1:]
    assert gateway.rerouted(queued, choice.proxy.key, D, 1.2).proxy == choice.proxy.key
    records = gateway.pool.records
    assert (records[keys[0]].health.inflight, records[choice.proxy.key].health.inflight) == (0, 1)
    assert not gateway.stranded(queued, "other.example", 1.2)  # banned on D only


def test_pair_blamed_rate_limit_ejects_the_pair_and_retries_at_once():
    gateway = Gateway(proxies(2), Policy())
    key = proxies(2)[0].key
    fault = classify_status(
        429, {"retry-after": "120"}, via_proxy=True, in_tunnel=True, now_epoch=0.0, retry_after_cap=600.0
    )
    verdict = failure(gateway, fault, key)
    assert verdict.fault.blame is Blame.PAIR
    assert verdict.retry and verdict.delay == 0.0
    assert [(type(e), e.domain) for e in verdict.events] == [(PairEjected, D)]
    assert verdict.new_limit is None


def test_unknown_blame_retries_at_once_but_is_paced_by_the_budget():
    policy = Policy(budget_burst=2.0, budget_ratio=0.0, budget_min_per_second=1.0)
    gateway = Gateway(proxies(3), policy)
    key = proxies(3)[0].key
    verdicts = [failure(gateway, TIMEOUT, key, now=1.0) for _ in range(4)]
    assert [v.fault.blame for v in verdicts] == [Blame.UNKNOWN] * 4
    assert [(v.delay, v.budget_wait) for v in verdicts] == [(0.0, 0.0), (0.0, 0.0), (1.0, 1.0), (2.0, 2.0)]


def test_a_rotating_endpoints_own_failures_do_not_spend_the_budget():
    # The same budget as above: through a rotating endpoint those failures are its exits', paid by
    # the proxy allowance, so the fourth goes at once too (the budget paced a 20 %-failing
    # endpoint's retries at its floor rate, which was most of such a crawl's tail).
    policy = Policy(budget_burst=2.0, budget_ratio=0.0, budget_min_per_second=1.0)
    gateway = Gateway(proxies(1), policy)
    key = proxies(1)[0].key
    plain_502 = classify_status(502, {}, via_proxy=True, in_tunnel=False, now_epoch=0.0, retry_after_cap=60.0)
    verdicts = [failure(gateway, plain_502, key, now=1.0, max_proxy_retries=10) for _ in range(4)]
    assert [v.fault.blame for v in verdicts] == [Blame.UNKNOWN] * 4
    assert [(v.delay, v.budget_wait, v.spent) for v in verdicts] == [(0.0, 0.0, False)] * 4


@pytest.mark.parametrize("seed", range(3))
def test_unknown_failures_through_every_proxy_of_the_pool_back_off(seed):
    # The origin's listener is gone while its open connections still answer: both proxies of a
    # pool of two keep working and fail new connections. A request that failed through both has
    # no fresh path left, and its next unknown failure must not retry at once.
    gateway = Gateway(proxies(2), Policy())
    first, second = (p.key for p in proxies(2))
    attempt = Attempt(10, 0)
    delays = []
    for n in range(4):
        now = 1.0 + n * 0.01
        for key in (first, second):
            gateway.sent(key, D, now - 0.05, first_attempt=True)
            gateway.on_success(key, D, D, now, 0.05)
        proxy = (first, second)[n % 2]
        gateway.sent(proxy, D, now, first_attempt=False)
        verdict = gateway.on_failure(
            TIMEOUT,
            replace(attempt, proxy=proxy, sent_at=now),
            domain=D,
            slot=D,
            ceiling=8,
            now=now,
            rng=random.Random(seed),
        )
        assert verdict.fault.blame is Blame.UNKNOWN and verdict.next_attempt is not None
        delays.append(verdict.delay)
        attempt = verdict.next_attempt
    assert delays[0] == 0.0  # the second proxy is a fresh path
    assert all(delay > 0.0 for delay in delays[1:])
    assert delays[1] == Backoff(1.0, 30.0).delay(2, random.Random(seed), scale=OVERLOAD_BACKOFF_SCALE)


def test_first_attempts_refill_the_budget():
    policy = Policy(budget_burst=1.0, budget_ratio=1.0, budget_min_per_second=0.001)
    gateway = Gateway(proxies(3), policy)
    key = proxies(3)[0].key
    assert failure(gateway, TIMEOUT, key).budget_wait == 0.0
    gateway.sent(key, D, 1.0, first_attempt=True)
    gateway.released(key, D)
    assert failure(gateway, TIMEOUT, key).budget_wait == 0.0
    assert failure(gateway, TIMEOUT, key).budget_wait > 100.0


@pytest.mark.parametrize("seed", range(5))
def test_a_single_static_proxy_backs_off(seed):
    gateway = Gateway(proxies(1), Policy(rotating_endpoints=False))
    verdict = failure(gateway, SOFT, proxies(1)[0].key, retries_done=3, max_retries=5, seed=seed)
    assert verdict.retry
    assert verdict.delay == Backoff(1.0, 30.0).delay(4, random.Random(seed))


def test_a_pool_of_one_is_a_rotating_endpoint_whose_own_failures_retry_at_once():
    gateway = Gateway(proxies(1), Policy())
    key = proxies(1)[0].key
    plain_502 = classify_status(502, {}, via_proxy=True, in_tunnel=False, now_epoch=0.0, retry_after_cap=60.0)
    for n in range(4):  # a few exits in a row fail: still the exits', not the origin's
        verdict = failure(gateway, plain_502, key, now=1.0 + n, max_retries=5, max_proxy_retries=10, seed=n)
        assert verdict.fault.blame is Blame.UNKNOWN
        assert verdict.retry and verdict.delay == 0.0 and verdict.new_limit is None
        assert verdict.next_attempt is not None and verdict.next_attempt.proxy_retries == 1
        assert verdict.next_attempt.retries == 0  # paid by the proxy allowance
    # The origin's own evidence (a forwarded status) still throttles and backs off.
    forwarded = classify_status(
        502,
        {"proxy-status": "gw; received-status=502"},
        via_proxy=True,
        in_tunnel=False,
        now_epoch=0.0,
        retry_after_cap=60.0,
    )
    gateway.sent(key, D, 5.9, first_attempt=True)
    gateway.on_success(key, D, D, 6.0, 0.05)
    verdict = failure(gateway, forwarded, key, now=6.1, max_retries=5, seed=9)
    assert verdict.fault.blame is Blame.ORIGIN and verdict.new_limit == 6 and verdict.delay > 0.0


@pytest.mark.parametrize("seed", range(5))
def test_origin_blamed_failure_backs_off_and_throttles(seed):
    gateway = Gateway(proxies(3), Policy())
    verdict = failure(gateway, OVERLOAD, proxies(3)[0].key, retries_done=2, seed=seed)
    assert verdict.retry
    assert verdict.delay == Backoff(1.0, 30.0).delay(3, random.Random(seed))
    assert verdict.budget_wait == 0.0
    assert verdict.new_limit == 6  # 8 * 0.7 = 5.6, rounded
    assert verdict.events == ()
    assert gateway.concurrency.limit(D) == 6


def test_origin_blamed_failure_waits_at_least_retry_after():
    gateway = Gateway(proxies(3), Policy())
    fault = classify_status(503, {"retry-after": "45"}, via_proxy=True, in_tunnel=True, now_epoch=0.0,
                            retry_after_cap=600.0)  # fmt: skip
    assert fault.blame is Blame.ORIGIN
    delays = [failure(gateway, fault, proxies(3)[0].key, seed=seed).delay for seed in range(20)]
    assert all(45.0 <= d <= 49.5 for d in delays)


def test_origin_blamed_failure_waits_for_the_budget_when_in_debt():
    policy = Policy(budget_burst=1.0, budget_ratio=0.0, budget_min_per_second=0.1)
    gateway = Gateway(proxies(3), policy)
    key = proxies(3)[0].key
    assert failure(gateway, OVERLOAD, key).budget_wait == 0.0
    verdict = failure(gateway, OVERLOAD, key)
    assert verdict.budget_wait == pytest.approx(10.0)
    assert verdict.delay == pytest.approx(10.0)


def test_no_retry_when_retries_are_spent_or_the_fault_is_final():
    gateway = Gateway(proxies(3), Policy())
    keys = [p.key for p in proxies(3)]
    spent = failure(gateway, HARD, keys[0], retries_done=3, max_retries=3)
    assert spent == Verdict(spent.fault, retry=False, delay=0.0, budget_wait=0.0, new_limit=None, events=spent.events)
    assert [type(e) for e in spent.events] == [Ejected]  # the pool still learns
    final = failure(gateway, Fault("http_404", Blame.ORIGIN, retryable=False), keys[1])
    assert not final.retry
    assert failure(gateway, OVERLOAD, keys[2], retries_done=5, max_retries=3).new_limit == 6


def test_direct_requests_are_the_origins_and_leave_the_pool_alone():
    gateway = Gateway(proxies(2), Policy())
    fault = classify_transport(TransportError.TIMEOUT, via_proxy=False)
    verdict = failure(gateway, fault, None, seed=3)
    assert verdict.fault.blame is Blame.ORIGIN
    assert verdict.retry
    assert verdict.delay == Backoff(1.0, 30.0).delay(1, random.Random(3))
    assert verdict.new_limit == 6
    assert verdict.events == ()
    assert all(r.health.score == 0.0 and r.requests == 0 for r in gateway.pool)
    assert gateway.pool.pairs == {}


def test_direct_unknown_is_not_settled_by_history():
    gateway = Gateway(proxies(2), Policy())
    verdict = failure(gateway, Fault("http_599", Blame.UNKNOWN, throttles=True), None)
    assert verdict.fault.blame is Blame.UNKNOWN
    assert verdict.new_limit is None
    assert verdict.delay == Backoff(1.0, 30.0).delay(1, random.Random(0))


def test_only_origin_blamed_throttling_faults_cut_concurrency():
    gateway = Gateway(proxies(4), Policy())
    keys = [p.key for p in proxies(4)]
    broken_proxy = classify_status(502, {"proxy-status": "p; error=proxy_internal_error"}, via_proxy=True,
                                   in_tunnel=False, now_epoch=0.0, retry_after_cap=60.0)  # fmt: skip
    assert broken_proxy.throttles and broken_proxy.blame is Blame.PROXY
    assert failure(gateway, broken_proxy, keys[0]).new_limit is None
    app_bug = Fault("http_500", Blame.ORIGIN, throttles=False)
    assert failure(gateway, app_bug, keys[1]).new_limit is None
    assert gateway.concurrency.limit(D) is None
    assert gateway.concurrency.limits() == {}


def test_a_storm_of_unknown_502s_becomes_the_origins_and_its_gate_undoes_the_cuts():
    gateway = Gateway(proxies(4), Policy())
    keys = [p.key for p in proxies(4)]
    bad_gateway = classify_status(502, {}, via_proxy=True, in_tunnel=False, now_epoch=0.0, retry_after_cap=60.0)
    assert bad_gateway.blame is Blame.UNKNOWN and bad_gateway.throttles
    verdicts = [failure(gateway, bad_gateway, key, now=1.0 + n, seed=n) for n, key in enumerate(keys[:3])]
    assert [v.fault.blame for v in verdicts] == [Blame.UNKNOWN, Blame.UNKNOWN, Blame.ORIGIN]
    # Three proxies failed and none has ever succeeded: history says the origin, and the third cuts
    # (an origin past its capacity from the start would otherwise refill each fast error).
    assert [v.new_limit for v in verdicts] == [None, None, 6]
    assert verdicts[0].delay == 0.0
    assert verdicts[2].delay == Backoff(1.0, 30.0).delay(1, random.Random(2))
    # Two more, and nothing has worked for a while: an outage, not an overload.
    more = [failure(gateway, bad_gateway, key, now=4.0 + n, seed=n) for n, key in enumerate(keys[:2])]
    opened = [e for v in more for e in v.events if isinstance(e, GateOpened)]
    # One domain, and nothing else works: the domain's outage or the provider's, alike here.
    assert opened == [GateOpened(PROVIDER, 5, 3)]
    assert gateway.concurrency.limit(D) is None  # the gate undid the cut: an outage is no overload

    assert more[-1].next_attempt is not None and more[-1].next_attempt.held == PROVIDER
    assert more[-1].next_attempt.retries == 0  # the outage costs no retry


def test_origin_502s_between_successes_are_an_overload_and_throttle():
    gateway = Gateway(proxies(4), Policy())
    keys = [p.key for p in proxies(4)]
    limits = []
    for n in range(12):
        now = 1.0 + 0.1 * n
        key = keys[n % 4]
        gateway.sent(key, D, now - 0.05, first_attempt=True)
        if n % 2:
            limits.append(failure(gateway, OVERLOAD, key, now=now, seed=n).new_limit)
        else:
            gateway.on_success(key, D, D, now, 0.05)
    assert any(limit is not None and limit < 8 for limit in limits), limits


def test_on_success_reports_readmission():
    gateway = Gateway(proxies(1), Policy())
    key = proxies(1)[0].key
    ejected = failure(gateway, HARD, key, now=0.0)
    until = gateway.pool.records[key].health.until
    assert [type(e) for e in ejected.events] == [Ejected]
    assert isinstance(gateway.route(D, until, random.Random(0)), Pick)
    gateway.sent(key, D, until, first_attempt=True)
    assert gateway.on_success(key, D, D, until + 0.5) == ([Readmitted(key)], None)
    assert gateway.on_success(key, D, D, until + 1.0) == ([], None)


def test_on_success_raises_a_throttled_limit():
    gateway = Gateway(proxies(2), Policy())
    key = proxies(2)[0].key
    assert failure(gateway, OVERLOAD, key).new_limit == 6
    changes = []
    for n in range(10):
        gateway.sent(key, D, 2.0 + n, first_attempt=True)
        events, limit = gateway.on_success(key, D, D, 2.5 + n)
        assert events == []
        changes.append(limit)
    assert changes[0] is None
    assert [c for c in changes if c is not None] == [7]  # 5.6 (shown as 6) grows by 1/limit per response; 7 next
    assert gateway.concurrency.limit(D) == 7


def test_on_success_direct_and_unthrottled():
    gateway = Gateway(proxies(1), Policy())
    assert gateway.on_success(None, D, D, 1.0) == ([], None)
    assert gateway.pool.pairs == {}


def test_released_frees_the_probation_slot():
    gateway = Gateway(proxies(1), Policy())
    key = proxies(1)[0].key
    failure(gateway, HARD, key, now=0.0)
    until = gateway.pool.records[key].health.until
    assert isinstance(gateway.route(D, until, random.Random(0)), Pick)
    gateway.sent(key, D, until, first_attempt=True)
    assert not isinstance(gateway.route(D, until, random.Random(0)), Pick)  # one request at a time
    gateway.released(key, D)
    assert isinstance(gateway.route(D, until, random.Random(0)), Pick)


def test_back_at_the_limit_that_hurt_one_failure_through_a_working_path_cuts():
    gateway = Gateway(proxies(5), Policy(concurrency_start=0))
    keys = [p.key for p in proxies(5)]
    relayed = classify_status(502, {}, via_proxy=True, in_tunnel=False, now_epoch=0.0, retry_after_cap=60.0)
    for n in range(4):  # two successes each through four paths: they work, none is proven reliable
        for key in keys[:4]:
            gateway.sent(key, D, n * 0.1, first_attempt=True)
            gateway.on_success(key, D, D, n * 0.1 + 0.05, 0.05)
    control = gateway.concurrency
    control.overloaded(D, 16, sent_at=1.0, now=1.0)
    hurt = control.limit(D)
    assert hurt is not None and control.overloaded(D, 16, sent_at=2.0, now=2.0) is not None  # hurt there
    while control.limit(D) != hurt:
        control.clean(D)  # probed back up to where it hurt
    assert control.probing(D)
    verdict = failure(gateway, relayed, keys[0], now=2.5, sent_at=2.4, ceiling=16)
    assert verdict.fault.blame is Blame.ORIGIN and verdict.new_limit == hurt - 1  # one error, one step back


def test_a_status_failure_not_blamed_on_the_origin_is_doubtful_and_holds_slow_start_back():
    gateway = Gateway(proxies(10), Policy())
    keys = [p.key for p in proxies(10)]
    gateway.concurrency.begin(D, 32)
    for _ in range(2):
        gateway.on_success(keys[0], D, D, 0.5, 0.05)  # 2 -> 4
    plain = classify_status(502, {}, via_proxy=True, in_tunnel=False, now_epoch=0.0, retry_after_cap=60.0)
    verdict = failure(gateway, plain, keys[5], now=1.0)  # a path that never worked: a ban, or the overshoot
    assert verdict.fault.blame is Blame.PAIR and verdict.doubtful and not verdict.overload
    assert verdict.new_limit == 3  # the room it freed goes to no other request
    refused = failure(gateway, HARD, keys[6], now=1.1)  # the proxy's own: no doubt about it
    assert not refused.doubtful and refused.new_limit is None


def test_a_slot_may_go_unheard_for_rfc_6298s_first_timeout_then_for_what_the_pool_has_shown():
    gateway = Gateway(proxies(2), Policy())
    assert gateway.unheard_after() == 1.0  # nothing measured anywhere yet
    key = proxies(2)[0].key
    for n in range(20):
        gateway.sent(key, "elsewhere.example", 1.0 + n, first_attempt=True)
        gateway.on_success(key, "elsewhere.example", "elsewhere.example", 1.05 + n, 0.05)
    # Pages elsewhere take 50 ms: a new domain is silent after far less than a second...
    assert gateway.unheard_after() < 0.5
    # ... but never sooner than the per-attempt timeouts' floor.
    assert gateway.unheard_after() >= Policy().timeouts.floor


@pytest.mark.parametrize("shared", [True, False])
def test_with_a_fleets_limit_its_phase_judges_the_failures(shared: bool) -> None:
    # With a Redis state the fleet's limit rules the slot, in slow start, and this process's own
    # never began: its failures through a path not proven on the domain yet must still be slow
    # start's doubtful overshoot (no room freed), as they are in a process alone.
    gateway = Gateway(proxies(5), Policy())
    if shared:
        gateway.fleet_phase = lambda slot: Phase(starting=True, growing=True) if slot == D else None
    keys = [p.key for p in proxies(5)]
    gateway.sent(keys[0], D, 0.9, first_attempt=True)
    gateway.on_success(keys[0], D, D, 1.0, 0.05, load=1, sent_at=0.9)
    fresh_502 = Fault("http_502", Blame.UNKNOWN, throttles=True)
    verdict = failure(gateway, fresh_502, keys[1], now=1.1, sent_at=1.05, load=3)
    assert verdict.fault.blame is not Blame.ORIGIN
    assert verdict.doubtful is shared
    # The fleet's phase is only the fleet's: another slot, or Redis lost (None), has this
    # process's own (never begun here: not in slow start).
    assert failure(gateway, fresh_502, keys[2], now=1.2, sent_at=1.15, slot="other", load=3).doubtful is False
