"""blame.py: settling UNKNOWN failures from recent history."""

from __future__ import annotations

import pytest

from scrapy_gateway.core.blame import Judge
from scrapy_gateway.core.faults import Blame

D = "shop.example"
P1, P2, P3, P4, P5, P6 = (f"http://10.0.0.{i}:8080" for i in range(1, 7))
U = Blame.UNKNOWN


def test_storming_domain_is_the_origins_from_the_third_proxy():
    judge = Judge(window=30.0)
    verdicts = [judge.failure(p, D, t, U) for t, p in [(1.0, P1), (2.0, P2), (3.0, P3), (4.0, P4)]]
    assert verdicts == [Blame.UNKNOWN, Blame.UNKNOWN, Blame.ORIGIN, Blame.ORIGIN]


def test_storm_needs_distinct_proxies():
    judge = Judge(window=30.0)
    verdicts = [judge.failure(p, D, t, U) for t, p in [(1.0, P1), (2.0, P1), (3.0, P2), (4.0, P2)]]
    assert verdicts == [Blame.UNKNOWN] * 4


def test_a_success_on_the_domain_stops_a_storm_verdict():
    judge = Judge(window=30.0)
    judge.failure(P1, D, 1.0, U)
    judge.failure(P2, D, 2.0, U)
    judge.success(P4, D, 2.5)  # works through P4, and P4 has never failed there
    # P1 and P2 failed before the success; P3 never worked on D while P4 did: the ban signature.
    assert judge.failure(P3, D, 3.0, U) is Blame.PAIR


def test_proxy_failing_on_two_working_domains_with_no_success_since_is_the_proxys():
    judge = Judge(window=30.0)
    judge.success(P2, "a.example", 0.5)
    judge.success(P2, "b.example", 0.5)
    assert judge.failure(P1, "a.example", 1.0, U) is Blame.PAIR
    assert judge.failure(P1, "b.example", 2.0, U) is Blame.PROXY


def test_proxy_rule_needs_domains_that_work_through_other_proxies():
    judge = Judge(window=30.0)
    assert judge.failure(P1, "a.example", 1.0, U) is Blame.UNKNOWN
    assert judge.failure(P1, "b.example", 2.0, U) is Blame.UNKNOWN  # maybe both sites are down
    judge.success(P2, "b.example", 2.5)  # b works, but a has never been seen working
    assert judge.failure(P1, "b.example", 3.0, U) is Blame.PAIR


def test_a_success_in_between_clears_the_proxy():
    judge = Judge(window=30.0)
    judge.success(P2, "a.example", 0.5)
    judge.success(P2, "b.example", 0.5)
    judge.failure(P1, "a.example", 1.0, U)
    judge.success(P1, "c.example", 1.5)
    assert judge.failure(P1, "b.example", 2.0, U) is Blame.PAIR  # not PROXY: it worked since


def test_repeated_failures_on_one_domain_do_not_blame_the_proxy():
    judge = Judge(window=30.0)
    assert [judge.failure(P1, D, float(t), U) for t in range(5)] == [Blame.UNKNOWN] * 5


def test_banned_pair_is_pair_while_the_domain_works_through_others():
    judge = Judge(window=30.0)
    judge.success(P2, D, 1.0)
    judge.success(P3, D, 2.0)
    verdicts = [judge.failure(P1, D, t, U) for t in (3.0, 4.0, 5.0, 6.0)]
    assert verdicts == [Blame.PAIR] * 4  # never escalates to ORIGIN or PROXY
    judge.success(P2, D, 7.0)
    assert judge.failure(P1, D, 8.0, U) is Blame.PAIR


def _prove(judge: Judge, proxy: str, start: float, n: int = 7) -> None:
    """Seven successes in a row make a path reliable (0.1 * 0.9**7 < 0.05)."""
    for i in range(n):
        judge.success(proxy, D, start + i / 100)


def test_a_path_that_worked_but_fails_often_stays_unknown():
    judge = Judge(window=30.0)
    for t, p in [(0.5, P1), (1.0, P2), (2.0, P3)]:
        judge.success(p, D, t)
    # A path with one success is unproven: its failure is not evidence of an overload.
    assert judge.failure(P1, D, 3.0, U) is Blame.UNKNOWN
    judge.success(P2, D, 3.5)  # the domain keeps working through the others
    judge.success(P1, D, 3.6)
    assert judge.failure(P1, D, 4.0, U) is Blame.UNKNOWN
    # A proven path that then fails every other time loses its standing after one failure.
    _prove(judge, P3, 5.0)
    assert judge.failure(P3, D, 6.0, U) is Blame.ORIGIN
    judge.success(P3, D, 6.5)
    assert judge.failure(P3, D, 7.0, U) is Blame.UNKNOWN


def test_a_domain_that_never_worked_through_anyone_is_unknown_not_pair():
    judge = Judge(window=30.0)
    judge.success(P2, "other.example", 1.0)
    assert judge.failure(P1, D, 2.0, U) is Blame.UNKNOWN


def test_overloaded_origin_fails_now_and_then_through_reliable_paths():
    judge = Judge(window=30.0)
    for start, p in [(1.0, P1), (2.0, P2), (3.0, P3)]:
        _prove(judge, p, start)
    # Paths that work here with clean records: a failure now and then is the origin's.
    assert judge.failure(P1, D, 4.0, U) is Blame.ORIGIN
    _prove(judge, P1, 4.1, n=12)  # reliable again: 0.14 * 0.9**12 < 0.05
    assert judge.failure(P2, D, 6.0, U) is Blame.ORIGIN
    judge.success(P3, D, 6.5)
    assert judge.failure(P1, D, 7.0, U) is Blame.ORIGIN


def test_a_reliable_path_counts_only_while_it_worked_lately():
    judge = Judge(window=30.0)
    _prove(judge, P1, 1.0)
    _prove(judge, P2, 35.0)
    # P1 last worked 35 s ago while D works through P2: the ban signature, not an overload.
    assert judge.failure(P1, D, 36.0, U) is Blame.PAIR
    assert judge.failure(P2, D, 36.5, U) is Blame.ORIGIN


def test_intermittent_failures_through_proxies_that_never_worked_are_bans():
    judge = Judge(window=30.0)
    judge.success(P4, D, 1.0)
    judge.success(P5, D, 2.0)
    judge.failure(P1, D, 3.0, U)
    judge.success(P4, D, 4.0)
    judge.failure(P2, D, 5.0, U)
    judge.success(P5, D, 6.0)
    assert judge.failure(P3, D, 7.0, U) is Blame.PAIR


def test_window_expiry_forgets_a_storm():
    judge = Judge(window=30.0)
    judge.failure(P1, D, 0.0, U)
    judge.failure(P2, D, 1.0, U)
    assert judge.failure(P3, D, 40.0, U) is Blame.UNKNOWN
    # Inside the window the same sequence is a storm.
    fresh = Judge(window=30.0)
    fresh.failure(P1, D, 0.0, U)
    fresh.failure(P2, D, 1.0, U)
    assert fresh.failure(P3, D, 30.0, U) is Blame.ORIGIN


def test_window_expiry_forgets_a_proxy_failure_elsewhere():
    def judge_with_history() -> Judge:
        judge = Judge(window=30.0)
        judge.success(P2, "a.example", 0.0)
        judge.failure(P1, "a.example", 0.5, U)
        judge.success(P2, "a.example", 20.0)
        judge.success(P2, "b.example", 20.0)
        return judge

    assert judge_with_history().failure(P1, "b.example", 29.0, U) is Blame.PROXY
    assert judge_with_history().failure(P1, "b.example", 31.0, U) is Blame.PAIR


def test_window_expiry_forgets_successes_for_the_ban_signature():
    judge = Judge(window=30.0)
    judge.success(P2, D, 0.0)
    assert judge.failure(P1, D, 31.0, U) is Blame.UNKNOWN
    assert judge.failure(P3, "x.example", 31.0, U) is Blame.UNKNOWN


@pytest.mark.parametrize("blame", [Blame.PROXY, Blame.PAIR, Blame.ORIGIN])
def test_settled_blames_pass_through(blame):
    judge = Judge(window=30.0)
    for t, p in [(1.0, P1), (2.0, P2), (3.0, P3)]:
        assert judge.failure(p, D, t, blame) is blame


def test_proxy_faults_are_not_evidence_against_the_domain():
    judge = Judge(window=30.0)
    judge.failure(P1, D, 1.0, Blame.PROXY)
    judge.failure(P2, D, 2.0, Blame.PROXY)
    assert judge.failure(P3, D, 3.0, U) is Blame.UNKNOWN


def test_origin_faults_are_not_evidence_against_the_proxy():
    def judge_after(blame: Blame) -> Judge:
        judge = Judge(window=30.0)
        judge.success(P2, "a.example", 0.5)
        judge.success(P2, "b.example", 0.5)
        judge.failure(P1, "a.example", 1.0, blame)
        return judge

    assert judge_after(Blame.UNKNOWN).failure(P1, "b.example", 2.0, U) is Blame.PROXY
    assert judge_after(Blame.ORIGIN).failure(P1, "b.example", 2.0, U) is Blame.PAIR


def test_origin_faults_are_evidence_against_the_domain():
    judge = Judge(window=30.0)
    judge.failure(P1, D, 1.0, Blame.ORIGIN)
    judge.failure(P2, D, 2.0, Blame.ORIGIN)
    assert judge.failure(P3, D, 3.0, U) is Blame.ORIGIN


# -- "since": more evidence must not weaken a verdict ---------------------------------------------


def test_proxy_rule_is_not_weakened_by_an_older_failure():
    def judge(older_failure: bool) -> Judge:
        judge = Judge(window=30.0)
        for domain in ("a.example", "b.example", "e.example"):
            judge.success(P2, domain, 0.5)
        if older_failure:
            judge.failure(P1, "a.example", 1.0, U)
        judge.success(P1, "c.example", 2.0)
        judge.failure(P1, "b.example", 3.0, U)
        return judge

    assert judge(False).failure(P1, "e.example", 4.0, U) is Blame.PROXY
    assert judge(True).failure(P1, "e.example", 4.0, U) is Blame.PROXY


def test_origin_rule_after_a_success_control():
    judge = Judge(window=30.0)
    judge.success(P4, D, 2.0)
    assert judge.failure(P1, D, 3.0, U) is Blame.PAIR
    assert judge.failure(P2, D, 4.0, U) is Blame.PAIR
    assert judge.failure(P3, D, 5.0, U) is Blame.ORIGIN


def test_origin_rule_is_not_weakened_by_an_older_failure():
    judge = Judge(window=30.0)
    judge.failure(P1, D, 1.0, U)  # the only difference from the control
    judge.success(P4, D, 2.0)
    judge.failure(P1, D, 3.0, U)
    judge.failure(P2, D, 4.0, U)
    assert judge.failure(P3, D, 5.0, U) is Blame.ORIGIN


def test_an_outage_behind_a_pool_of_two_is_seen_through_both():
    judge = Judge(window=30.0)
    judge.success(P1, D, 1.0)
    judge.success(P2, D, 1.5)
    assert judge.failure(P1, D, 2.0, U, pool_size=2, transport=True) is Blame.UNKNOWN
    assert judge.failure(P2, D, 2.1, U, pool_size=2, transport=True) is Blame.ORIGIN
    # With a larger pool two proxies are not enough: it takes three.
    big = Judge(window=30.0)
    big.success(P1, D, 1.0)
    big.success(P2, D, 1.5)
    big.failure(P1, D, 2.0, U, pool_size=10)
    assert big.failure(P2, D, 2.1, U, pool_size=10, transport=True) is not Blame.ORIGIN


def test_a_dropped_connection_through_a_reliable_path_is_not_an_overload():
    judge = Judge(window=30.0)
    _prove(judge, P1, 1.0)
    judge.success(P2, D, 1.5)
    assert judge.failure(P1, D, 2.0, U, transport=True) is Blame.UNKNOWN  # a dying proxy drops too
    fresh = Judge(window=30.0)
    _prove(fresh, P1, 1.0)
    fresh.success(P2, D, 1.5)
    assert fresh.failure(P1, D, 2.0, U) is Blame.ORIGIN  # the same with a status: an overload


def test_working_paths_failing_together_are_a_deep_overload():
    judge = Judge(window=30.0)
    for t, p in [(0.1, P1), (0.2, P2), (0.3, P3)]:
        judge.success(p, D, t)
    for t, p in [(0.4, P1), (0.5, P2)]:
        judge.failure(p, D, t, U)
        judge.success(p, D, t + 0.01)  # the domain keeps answering through each of them
    # No path is reliable any more, but three working paths failing within 2 s: the origin's.
    assert judge.failure(P3, D, 0.6, U) is Blame.ORIGIN
    # The same three failures spread over more than 2 s are no shared event.
    later = Judge(window=30.0)
    for t, p in [(0.1, P1), (0.2, P2), (0.3, P3)]:
        later.success(p, D, t)
    later.failure(P1, D, 1.0, U)
    later.success(P1, D, 1.01)
    later.failure(P2, D, 4.0, U)
    later.success(P2, D, 4.01)
    assert later.failure(P3, D, 7.0, U) is Blame.UNKNOWN


def test_a_few_flaky_paths_failing_together_while_most_work_are_no_overload():
    judge = Judge(window=30.0)
    working = [f"http://10.0.1.{i}:8000" for i in range(1, 21)]
    for step, p in enumerate(working):
        judge.success(p, D, 0.1 + step * 0.01)
    flaky = working[:3]
    judge.failure(flaky[0], D, 0.5, U)
    judge.success(flaky[0], D, 0.51)
    judge.failure(flaky[1], D, 0.6, U)
    judge.success(flaky[1], D, 0.61)
    for step, p in enumerate(working[3:]):
        judge.success(p, D, 0.62 + step * 0.001)  # seventeen other paths keep working meanwhile
    # Three working paths failed within 2 s, but they are a few of the twenty that work here.
    assert judge.failure(flaky[2], D, 0.7, U) is not Blame.ORIGIN


def test_at_the_limit_that_hurt_before_a_mostly_working_path_failing_is_the_probe():
    def judged(probing: bool) -> list[Blame]:
        judge = Judge(window=30.0)
        _prove(judge, P1, 0.0, n=2)  # worked twice: not yet reliable (rate 0.081)
        _prove(judge, P2, 0.5)
        judge.success(P3, D, 0.9)  # the domain works through P3; P4 never did
        return [
            judge.failure(P1, D, 1.0, U, pool_size=5, probing=probing),
            judge.failure(P4, D, 1.5, U, pool_size=5, probing=probing),
        ]

    assert judged(probing=False) == [Blame.UNKNOWN, Blame.PAIR]  # a maybe-flaky path; a ban
    assert judged(probing=True) == [Blame.ORIGIN, Blame.ORIGIN]  # the probe hurt again


def test_paths_that_never_worked_failing_between_successes_are_bans_not_an_outage():
    judge = Judge(window=30.0)
    for i, p in enumerate((P1, P2)):
        judge.success(p, D, 0.1 * (i + 1))
    # A start-up burst: three proxies that never worked fail while the domain keeps answering.
    verdicts = [judge.failure(p, D, 0.3 + 0.001 * i, U, pool_size=5) for i, p in enumerate((P3, P4, P5))]
    assert Blame.ORIGIN not in verdicts
    # An overload fails the paths that work too: two of them among three failing, it is the origin's.
    overload = Judge(window=30.0)
    for i, p in enumerate((P1, P2)):
        overload.success(p, D, 0.1 * (i + 1))
    overload.failure(P1, D, 0.3, U, pool_size=5)
    overload.failure(P3, D, 0.301, U, pool_size=5)
    assert overload.failure(P2, D, 0.302, U, pool_size=5) is Blame.ORIGIN


def test_in_slow_start_a_path_that_worked_failing_is_the_overshoot_and_a_fresh_one_stays_doubtful():
    def judged(growing: bool) -> list[Blame]:
        judge = Judge(window=30.0)
        judge.success(P1, D, 0.1)  # slow start's first requests: each path worked once
        judge.success(P2, D, 0.1)
        return [
            judge.failure(P1, D, 0.2, U, pool_size=5, growing=growing),
            judge.failure(P3, D, 0.2, U, pool_size=5, growing=growing),
        ]

    assert judged(growing=False) == [Blame.UNKNOWN, Blame.PAIR]  # unproven: maybe flaky; a ban
    # Doubling, the limit may be anywhere past the capacity: a path that has just worked failing is
    # the overshoot. A fresh path (the start-up burst through bad proxies) is still no overload.
    assert judged(growing=True) == [Blame.ORIGIN, Blame.PAIR]


# -- outliers: a path failing while the others work at the same time ---------------------------------

ORG = Blame.ORIGIN


def _traffic(judge: Judge, start: float, paths: list[str], rounds: int, domain: str = D) -> float:
    """Each path succeeds `rounds` times, 10 ms apart; the time after the last."""
    t = start
    for _ in range(rounds):
        for p in paths:
            judge.success(p, domain, t)
            t += 0.01
    return t


def test_a_working_proxy_that_starts_failing_while_the_others_work_is_banned_on_its_second_failure():
    judge = Judge(window=30.0)
    t = _traffic(judge, 0.0, [P1, P2, P3, P4], 10)
    # Its first failure cannot be told from an origin shedding load (a reliable path failing once).
    assert judge.failure(P4, D, t, U) is Blame.ORIGIN
    assert judge.overturned == 0
    t = _traffic(judge, t + 0.01, [P1, P2, P3], 10)  # 30 successes through the others meanwhile
    assert judge.failure(P4, D, t, U) is Blame.PAIR
    assert judge.overturned == 1  # the first verdict was wrong, and is counted once
    assert judge.failure(P4, D, t + 0.01, U) is Blame.PAIR
    assert judge.overturned == 0


def test_an_outlier_that_fails_on_another_domain_too_is_the_proxys():
    judge = Judge(window=30.0)
    t = _traffic(judge, 0.0, [P1, P2, P3, P4], 10)
    _traffic(judge, 0.0, [P1, P4], 3, domain="news.example")
    judge.failure(P4, "news.example", t, U)
    t = _traffic(judge, t + 0.01, [P1, P2, P3], 10)
    judge.failure(P4, D, t, U)
    t = _traffic(judge, t + 0.01, [P1, P2, P3], 10)
    assert judge.failure(P4, D, t, U) is Blame.PROXY


def test_a_status_blamed_on_the_origin_through_one_path_only_is_that_paths():
    """A per-IP rate limit (nginx limit_req's 503): the origin wrote it, the address is the fault."""
    judge = Judge(window=30.0)
    t = _traffic(judge, 0.0, [P1, P2, P3, P4], 10)
    verdicts, overturned = [], []
    for _ in range(3):
        verdicts.append(judge.failure(P4, D, t, ORG))
        overturned.append(judge.overturned)
        t = _traffic(judge, t + 0.01, [P1, P2, P3], 4)
    # A run of 2 against the others' 42 clean answers of late (the yardstick: the domain's last 48).
    assert verdicts == [ORG, Blame.PAIR, Blame.PAIR]
    assert overturned == [0, 1, 0]


def test_a_flaky_exit_stands_out_within_ten_of_its_requests():
    judge = Judge(window=30.0)
    t = _traffic(judge, 0.0, [P1, P2, P3, P4], 5)
    verdicts = []
    for i in range(10):
        if i % 2:
            judge.success(P4, D, t)
        else:
            verdicts.append(judge.failure(P4, D, t, U))
        t = _traffic(judge, t + 0.01, [P1, P2, P3], 1)
    assert Blame.PAIR in verdicts


@pytest.mark.parametrize("paths", [4, 8, 16, 30])
def test_failures_shared_by_every_path_make_few_outliers(paths: int) -> None:
    """An overload failing 30 % of all requests, spread over the paths at random: runs of bad luck
    on one path happen, so some failures stand out by chance (about 1 % of them over ten seeds:
    README, blame rule 2), never a steady share."""
    import random

    judged = outliers = 0
    for seed in range(10):
        rng = random.Random(seed)
        judge = Judge(window=30.0)
        names = [f"http://10.0.3.{i}:8080" for i in range(paths)]
        t = 0.0
        for _ in range(3000):
            p = rng.choice(names)
            if rng.random() < 0.3:
                judged += 1
                outliers += judge.failure(p, D, t, ORG, pool_size=paths) is not ORG
            else:
                judge.success(p, D, t)
            t += 0.01
    assert outliers <= judged * 0.02, (outliers, judged)


def test_an_origin_down_for_every_path_makes_no_outlier():
    judge = Judge(window=30.0)
    t = _traffic(judge, 0.0, [P1, P2, P3, P4], 10)
    verdicts = [judge.failure(p, D, t + 0.01 * i, U) for i, p in enumerate([P1, P2, P3, P4] * 5)]
    assert Blame.PAIR not in verdicts and Blame.PROXY not in verdicts


def test_a_pool_of_one_has_no_outliers():
    judge = Judge(window=30.0)
    t = _traffic(judge, 0.0, [P1], 40)
    verdicts = [judge.failure(P1, D, t + 0.01 * i, ORG, pool_size=1) for i in range(5)]
    assert verdicts == [ORG] * 5


def test_when_most_of_the_pool_is_banned_the_paths_that_work_are_the_yardstick():
    """Six of ten addresses rate-limited at once: compared with all the others (mostly failing),
    none would stand out; compared with the paths that work now, each does within a few failures."""
    judge = Judge(window=30.0)
    good = [f"http://10.0.1.{i}:8080" for i in range(4)]
    banned = [f"http://10.0.2.{i}:8080" for i in range(6)]
    t = _traffic(judge, 0.0, good + banned, 3)
    verdicts: dict[str, list[Blame]] = {p: [] for p in banned}
    for _ in range(4):
        for p in banned:
            verdicts[p].append(judge.failure(p, D, t, ORG))
            t = _traffic(judge, t + 0.01, good, 1)
    assert all(Blame.PAIR in v[:3] for v in verdicts.values()), verdicts


def test_failures_older_than_the_window_are_no_evidence():
    judge = Judge(window=30.0)
    t = _traffic(judge, 0.0, [P1, P2, P3, P4], 10)
    for _ in range(4):  # a bad spell long ago
        judge.failure(P4, D, t, ORG)
        t += 0.01
    t = _traffic(judge, t + 600.0, [P1, P2, P3, P4], 3)
    assert judge.failure(P4, D, t, ORG) is ORG


@pytest.mark.parametrize("pool", [[P1, P2], [P1, P2, P3]])
def test_an_outage_starting_through_one_path_first_makes_no_outlier(pool: list[str]) -> None:
    """The origin goes down: the requests in flight through the others still land well for a
    moment, while the first path already fails twice. The others must keep working meanwhile."""
    judge = Judge(window=30.0)
    t = _traffic(judge, 0.0, pool, 20)
    verdicts = [judge.failure(P1, D, t, ORG, pool_size=len(pool))]
    t = _traffic(judge, t + 0.01, pool[1:], 1)  # answers already on their way
    verdicts.append(judge.failure(P1, D, t, ORG, pool_size=len(pool)))
    for i, p in enumerate(pool * 3):
        verdicts.append(judge.failure(p, D, t + 0.01 * (i + 1), ORG, pool_size=len(pool)))
    assert set(verdicts) == {ORG}, verdicts


def _run_of(judge: Judge, path: str) -> int:
    outcomes = judge._domains[D].paths[path]
    return len(outcomes) - max((i + 1 for i, (_t, ok, _m, _s) in enumerate(outcomes) if ok), default=0)


def test_the_requests_an_outlier_still_carried_fail_as_its_own():
    """Taken out, it still carries requests: they fail in a burst, with no answer elsewhere in
    between to compare with. Its run stands out already; each is the path's until it works."""
    judge = Judge(window=30.0)
    t = _traffic(judge, 0.0, [P1, P2, P3, P4], 10)
    judge.failure(P4, D, t, ORG)
    t = _traffic(judge, t + 0.01, [P1, P2, P3], 10)
    assert judge.failure(P4, D, t, ORG) is Blame.PAIR
    burst = [judge.failure(P4, D, t + 0.001 * i, ORG) for i in range(1, 5)]
    assert burst == [Blame.PAIR] * 4
    assert judge.overturned == 0  # counted once, with the run's first verdict
    judge.success(P4, D, t + 1.0)  # back: a new run
    assert _run_of(judge, P4) == 0


def test_origin_verdicts_before_a_late_success_are_overturned_with_the_failures_that_stood_out():
    """A request sent before the ban answers well after the first 503s came back (out of order):
    the window test finds the path an outlier, and every origin verdict it counted is overturned."""
    judge = Judge(window=30.0)
    t = _traffic(judge, 0.0, [P1, P2, P3], 10)
    t = first = _traffic(judge, t, [P4], 2)
    assert judge.failure(P4, D, t, ORG) is ORG
    assert judge.failure(P4, D, t + 0.005, ORG) is ORG  # too soon: nothing worked elsewhere since
    judge.success(P4, D, t + 0.01)
    t = _traffic(judge, t + 0.02, [P1, P2, P3], 3)
    # Not a run (a success came in between), but 3 of its last 6 against the others' clean record.
    assert judge.failure(P4, D, t, ORG) is Blame.PAIR
    assert judge.overturned == 2
    assert judge.overturned_since == first
    # Then the requests it still carried fail in a burst, nothing answering elsewhere in between:
    # its own, as the failures that stood out (the old rule asked for fresh successes elsewhere).
    burst = [judge.failure(P4, D, t + 0.001 * i, ORG) for i in range(1, 4)]
    assert burst == [Blame.PAIR] * 3


def test_a_run_that_stands_out_overturns_the_verdicts_of_its_failures_before_a_late_success_too():
    judge = Judge(window=30.0)
    t = _traffic(judge, 0.0, [P1, P2, P3], 5)
    t = _traffic(judge, t, [P4], 2)
    assert [judge.failure(P4, D, t + 0.01 * i, ORG) for i in range(2)] == [ORG, ORG]
    judge.success(P4, D, t + 0.02)  # sent before the ban, answered after its first 503s
    assert [judge.failure(P4, D, t + 0.03 + 0.01 * i, ORG) for i in range(2)] == [ORG, ORG]
    t = _traffic(judge, t + 0.06, [P1, P2, P3], 2)
    assert judge.failure(P4, D, t, ORG) is Blame.PAIR  # a run of 3 against the others' clean 21
    assert judge.overturned == 4


def _offender() -> tuple[Judge, float]:
    """P4 worked, then failed twice while the others kept working: found an outlier at the end."""
    judge = Judge(window=30.0)
    t = _traffic(judge, 0.0, [P1, P2, P3, P4], 10)
    judge.failure(P4, D, t, U)
    t = _traffic(judge, t + 0.01, [P1, P2, P3], 10)
    assert judge.failure(P4, D, t, U) is Blame.PAIR
    return judge, t


def test_a_repeat_offender_is_out_on_its_first_failure_while_the_others_work():
    judge, t = _offender()  # it went down
    t = _traffic(judge, t + 2.0, [P4, P1, P2, P3], 10)  # back, and working again
    assert judge.failure(P4, D, t, U) is Blame.PAIR  # down again: its own at once, no origin verdict
    # A path never found an outlier keeps the benefit of the doubt (the overload rule).
    assert judge.failure(P3, D, t + 0.01, U) is Blame.ORIGIN
    # Nor is the record held against it for ever: past the window, it is a first failure again.
    t = _traffic(judge, t + 31.0, [P4, P1, P2, P3], 10)
    assert judge.failure(P4, D, t, U) is not Blame.PAIR


def test_a_repeat_offenders_failures_just_before_a_late_success_are_its_own_too():
    judge, t = _offender()
    t = _traffic(judge, t + 2.0, [P1, P2, P3, P4], 10)  # back; its success is the last
    assert judge.failure(P4, D, t, ORG) is ORG  # down again, as the others' last answers came before
    judge.success(P4, D, t + 0.01)  # a request sent before it went down, answered late
    t = _traffic(judge, t + 0.02, [P1, P2, P3], 2)
    assert judge.failure(P4, D, t, ORG) is Blame.PAIR
    assert judge.overturned == 1  # the origin verdict just before the late success


def test_a_repeat_offender_failing_as_the_others_stop_working_is_not_blamed_alone():
    judge, t = _offender()
    judge.success(P4, D, t + 2.0)
    # The origin goes down: nothing else worked since P4 last did.
    assert judge.failure(P4, D, t + 2.01, U) is not Blame.PAIR


def test_a_repeat_offender_is_not_blamed_for_an_outage_that_reaches_it_first():
    """Traffic runs right up to the outage: the others' last successes came before its own."""
    judge, t = _offender()
    t = _traffic(judge, t + 2.0, [P1, P2, P3, P4], 10)  # its success is the last before the outage
    assert judge.failure(P4, D, t, ORG) is ORG


def test_an_outlier_does_not_overturn_an_overload_verdict_from_long_before():
    judge = Judge(window=30.0)
    t = _traffic(judge, 0.0, [P1, P2, P3, P4], 10)
    assert judge.failure(P4, D, t, ORG) is ORG  # a real overload's 503, through a fine path
    t = _traffic(judge, t + 0.01, [P1, P2, P3, P4], 5)
    t = _traffic(judge, t + 10.0, [P1, P2, P3], 10)
    judge.failure(P4, D, t, ORG)  # 10 s later it goes bad
    t = _traffic(judge, t + 0.01, [P1, P2, P3], 10)
    assert judge.failure(P4, D, t, ORG) is Blame.PAIR
    assert judge.overturned == 1  # the run's first verdict, not the overload's


def test_requests_sent_during_an_outage_failing_after_it_ends_make_no_outlier():
    """An origin too slow for nginx: every request sent during it gets a 504 a second later. It
    recovers at `back`: the others' requests sent after it succeed at once, while P1's sent just
    before it still fail. Those successes came later than its requests left: no evidence of P1."""
    judge = Judge(window=30.0)
    t = _traffic(judge, 0.0, [P1, P2, P3, P4], 10)
    for i in range(8):  # the outage, through every path
        judge.failure([P1, P2, P3, P4][i % 4], D, t + 1.0 + 0.1 * i, U, sent=t + 0.1 * i)
    back = t + 2.0
    for i in range(12):
        judge.success([P2, P3, P4][i % 3], D, back + 0.05 + 0.02 * i, sent=back + 0.02 * i)
    verdicts = [judge.failure(P1, D, back + 0.3 + 0.2 * i, U, sent=back - 0.7 + 0.2 * i) for i in range(3)]
    assert Blame.PAIR not in verdicts and Blame.PROXY not in verdicts, verdicts
    # The same failures of requests sent after the others' successes do stand out.
    later = [judge.failure(P1, D, back + 1.0 + 0.01 * i, U, sent=back + 0.9 + 0.01 * i) for i in range(2)]
    assert later[-1] is Blame.PAIR, later


@pytest.mark.parametrize("noise", [False, True])
def test_a_path_whose_failures_take_seconds_still_stands_out(noise: bool) -> None:
    """P1 goes bad at 1 s: each of its requests (one every 0.1 s) fails 2 s after it left, while
    the others answer in 50 ms. 'Meanwhile' runs from when its failing requests left. `noise`:
    another proxy fails now and then (under 2 % of the outcomes), which is no storm."""
    judge = Judge(window=30.0)
    others = [P2, P3, P4, P5]
    events: list[tuple[float, float, str, bool]] = []  # (arrives, left, path, ok)
    for i in range(400):  # 4 s of the others' traffic, 10 ms apart
        left = 0.01 * i
        events.append((left + 0.05, left, others[i % 4], True))
    for i in range(10):
        left = 0.1 * i
        events.append((left + 0.05, left, P1, True))  # it works for its first second
    for i in range(20):
        left = 1.0 + 0.1 * i
        events.append((left + 2.0, left, P1, False))
    if noise:
        events += [(1.05 + 0.5 * k, 1.0 + 0.5 * k, P6, False) for k in range(8)]
    verdicts = []
    for arrives, left, path, ok in sorted(events):
        if ok:
            judge.success(path, D, arrives, sent=left)
        elif path == P1:
            verdicts.append(judge.failure(path, D, arrives, U, sent=left))
        else:
            judge.failure(path, D, arrives, U, sent=left)
    assert Blame.PAIR in verdicts[:3], verdicts


def test_an_outage_whose_failures_take_a_second_makes_no_outlier_of_the_path_they_reach_first():
    """nginx times the origin out after 1 s: every request sent after `down` gets its 504 a second
    later, while those sent just before it still land. P1's failures arrive first, in a row; the
    others' successes that arrived meanwhile are of requests sent before P1's first failing one
    left, so they say nothing of how the origin treats requests sent with P1's."""
    judge = Judge(window=30.0)
    t = _traffic(judge, 0.0, [P1, P2, P3], 20)
    down = t
    for i in range(9):  # sent before `down`, answered after it
        judge.success([P2, P3][i % 2], D, down + 0.01 + 0.01 * i, sent=down - 0.09 + 0.01 * i)
    verdicts = [judge.failure(P1, D, down + 1.0 + 0.001 * i, ORG, sent=down + 0.001 * i) for i in range(4)]
    verdicts += [judge.failure(p, D, down + 1.01, ORG, sent=down + 0.01) for p in (P2, P3)]
    assert set(verdicts) == {ORG}, verdicts


def test_a_path_whose_storm_failures_arrive_after_the_recovery_is_no_outlier():
    """nginx's 504s take a second: P1's requests sent during the storm fail after it is over, by
    when the others' requests sent after the recovery have filled the domain's record. Theirs sent
    at the same time as P1's failed too (cut by the per-attempt timeout): P1 is not alone."""
    judge = Judge(window=30.0)
    t = _traffic(judge, 0.0, [P1, P2, P3], 10)
    storm = t
    for i in range(6):  # the storm, through every path
        judge.failure([P1, P2, P3][i % 3], D, storm + 1.0 + 0.01 * i, ORG, sent=storm + 0.01 * i)
    late = storm + 0.5  # sent late in the storm, a second to fail
    for p in (P2, P3):  # sent with P1's, cut early
        judge.failure(p, D, late + 0.3, U, sent=late + 0.001, path_only=True, transport=True)
    back = late + 0.4
    for i in range(60):  # recovered: the others' requests sent since all work
        judge.success([P2, P3][i % 2], D, back + 0.01 + 0.01 * i, sent=back + 0.01 * i)
    verdicts = [judge.failure(P1, D, late + 1.0 + 0.01 * i, ORG, sent=late + 0.001 * i) for i in range(2)]
    assert set(verdicts) == {ORG}, verdicts
