"""The decision core: one object that answers the adapter's three questions.

- Which proxy should this request take?                       -> `route`
- A download went well: what changes?                          -> `on_success`
- A download failed: whose fault, retry or not, after how long? -> `on_failure`

It reads no clock and draws no random number of its own: `now` (monotonic seconds) and `rng` come
from the caller, so every decision can be replayed in a test.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass, field, replace

from scrapy_gateway.core.attempt import Attempt
from scrapy_gateway.core.backoff import Backoff
from scrapy_gateway.core.blame import Judge
from scrapy_gateway.core.budget import RetryBudget
from scrapy_gateway.core.concurrency import ConcurrencyControl
from scrapy_gateway.core.events import Event
from scrapy_gateway.core.faults import ATTEMPT_TIMEOUT, Blame, Fault
from scrapy_gateway.core.health import HealthRules
from scrapy_gateway.core.latency import DomainLatencies, TimeoutRule
from scrapy_gateway.core.pool import Exhausted, Pick, ProxyPool, Wait
from scrapy_gateway.core.proxies import Proxy

DIRECT = "direct"  # how the judge names the path of a request sent without a proxy
OVERLOAD_BACKOFF_SCALE = 0.1


@dataclass(frozen=True, slots=True)
class Policy:
    """Every tunable of the core, with the defaults the README documents."""

    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    health: HealthRules = field(default_factory=HealthRules)
    max_ejected_ratio: float = 0.5
    blame_window: float = 30.0
    budget_ratio: float = 0.2
    budget_min_per_second: float = 20.0
    budget_burst: float = 10.0
    concurrency_min: int = 1
    concurrency_beta: float = 0.7
    max_pairs: int = 100_000
    max_domains: int = 10_000
    timeouts: TimeoutRule = field(default_factory=TimeoutRule)


@dataclass(frozen=True, slots=True)
class Verdict:
    fault: Fault  # with its blame settled
    retry: bool
    delay: float = 0.0  # seconds the retry must wait
    budget_wait: float = 0.0  # the part of `delay` the retry budget imposed
    new_limit: int | None = None  # the domain's new concurrency limit, if it changed
    events: tuple[Event, ...] = ()
    next_attempt: Attempt | None = None  # the retry's attempt record, when `retry`


class Gateway:
    def __init__(self, proxies: Collection[Proxy], policy: Policy) -> None:
        self.policy = policy
        self.pool = ProxyPool(
            proxies,
            policy.health,
            max_ejected_ratio=policy.max_ejected_ratio,
            max_pairs=policy.max_pairs,
            max_domains=policy.max_domains,
        )
        self.latencies = DomainLatencies(policy.max_domains)
        self.timeouts = policy.timeouts
        self.judge = Judge(policy.blame_window, max_domains=policy.max_domains)
        self.budget = RetryBudget(
            policy.budget_ratio, policy.budget_min_per_second, policy.budget_burst, policy.max_domains
        )
        self.concurrency = ConcurrencyControl(
            policy.concurrency_min, policy.concurrency_beta, max_slots=policy.max_domains
        )
        self.backoff = Backoff(policy.backoff_base, policy.backoff_cap)

    def route(
        self, domain: str, now: float, rng: random.Random, avoid: Collection[str] = ()
    ) -> Pick | Wait | Exhausted:
        seen = self.latencies.get(domain)
        return self.pool.choose(domain, now, rng, avoid, seen.srtt if seen is not None else None)

    def attempt_timeout(self, domain: str, proxy: str, *, cuts: int, user_timeout: float) -> float | None:
        """Seconds an attempt through this proxy may take before it is cut, or None (the user's)."""
        rule = self.timeouts
        if not rule.enabled:
            return None
        record = self.pool.records.get(proxy)
        path = None
        if record is not None:
            pair = self.pool.pairs.get((proxy, domain))
            path = pair.latency if pair is not None and (pair.latency.samples or pair.latency.silences) else None
            path = path or record.health.latency
        return rule.attempt_timeout(self.latencies.get(domain), path, cuts=cuts, user_timeout=user_timeout)

    def sent(self, proxy: str | None, domain: str, now: float, *, first_attempt: bool) -> None:
        if proxy is not None:
            self.pool.started(proxy, domain, now)
        if first_attempt:
            self.budget.deposit(domain, now)

    def released(self, proxy: str | None, domain: str) -> None:
        """The download ended in something that is nobody's fault (a request dropped on purpose)."""
        if proxy is not None:
            self.pool.finished(proxy, domain)

    def on_success(
        self, proxy: str | None, domain: str, slot: str, now: float, latency: float | None = None
    ) -> tuple[list[Event], int | None]:
        """`latency`: how long the download took to its headers (Scrapy's download_latency)."""
        events: list[Event] = []
        if latency is not None and latency >= 0.0:
            self.latencies.observe(domain, latency, now)
        else:
            latency = None
        if proxy is not None:
            events = self.pool.succeeded(proxy, domain, now, latency)
        self.judge.success(proxy or DIRECT, domain, now)
        return events, self.concurrency.clean(slot)

    def on_failure(
        self,
        fault: Fault,
        attempt: Attempt,
        *,
        domain: str,
        slot: str,
        ceiling: int,
        now: float,
        rng: random.Random,
    ) -> Verdict:
        """Settle the blame of a failed attempt, update what it teaches, and decide the retry.

        `ceiling`: the user's own concurrency limit of the slot. The verdict carries the next
        `Attempt` when the request is to be retried.
        """
        proxy = attempt.proxy
        if proxy is not None and not fault.answered and attempt.sent_at is not None:
            self.pool.waited(proxy, domain, now - attempt.sent_at, now)
        if proxy is not None:
            blame = self.judge.failure(
                proxy,
                domain,
                now,
                fault.blame,
                pool_size=len(self.pool),
                transport=fault.transport,
                # A cut says the path is slower than the domain has shown elsewhere: never an outage.
                path_only=fault.kind == ATTEMPT_TIMEOUT,
            )
            fault = replace(fault, blame=blame)
            events = tuple(self.pool.failed(proxy, domain, fault, now, rng))
        else:
            events = ()
        new_limit = None
        sent_at = now if attempt.sent_at is None else attempt.sent_at
        # A Retry-After is the origin's own throttle, and honouring it is enough.
        if fault.throttles and fault.blame is Blame.ORIGIN and fault.retry_after is None:
            new_limit = self.concurrency.overloaded(slot, ceiling, sent_at, now)
        # A proxy's own failure says nothing about the page: it is retried on another proxy from a
        # separate allowance, so a few bad proxies cannot use up the retries the origin may need.
        proxy_side = attempt.rotating and fault.blame in (Blame.PROXY, Blame.PAIR)
        # Wrong credentials do not heal: without another proxy to rotate to, a retry cannot succeed.
        hopeless = fault.retires and not (attempt.rotating and len(self.pool) > 1)
        if hopeless or not fault.retryable or not attempt.can_retry(proxy_side=proxy_side):
            return Verdict(fault, retry=False, new_limit=new_limit, events=events)
        if attempt.rotating and len(self.pool) > 1 and fault.blame is not Blame.ORIGIN:
            # The next proxy is a fresh path: no reason to wait, and the origin never saw this one.
            delay = budget_wait = 0.0
            if fault.blame is Blame.UNKNOWN:
                budget_wait = self.budget.withdraw(domain, now)
                delay = budget_wait
        else:
            # An origin that still answers is shedding load, and the concurrency cut is the cure:
            # a short pause will do. One that answers nothing gets the full backoff.
            scale = OVERLOAD_BACKOFF_SCALE if self.judge.answering(domain, now) else 1.0
            delay = self.backoff.delay(attempt.retries + 1, rng, fault.retry_after, scale=scale)
            # An origin that named its time with Retry-After has throttled us itself.
            budget_wait = 0.0 if fault.retry_after is not None else self.budget.withdraw(domain, now)
            delay = max(delay, budget_wait)
        return Verdict(
            fault,
            retry=True,
            delay=delay,
            budget_wait=budget_wait,
            new_limit=new_limit,
            events=events,
            next_attempt=attempt.increment(proxy_side=proxy_side, cut=fault.kind == ATTEMPT_TIMEOUT),
        )
