"""The decision core: one object that answers the adapter's three questions.

- Which proxy should this request take?                       -> `route`
- A download went well: what changes?                          -> `on_success`
- A download failed: whose fault, retry or not, after how long? -> `on_failure`

It reads no clock and draws no random number of its own: `now` (monotonic seconds) and `rng` come
from the caller, so every decision can be replayed in a test.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace

from scrapy_gateway.core.attempt import Attempt
from scrapy_gateway.core.backoff import Backoff
from scrapy_gateway.core.blame import Judge
from scrapy_gateway.core.budget import RetryBudget
from scrapy_gateway.core.concurrency import ConcurrencyControl, Phase
from scrapy_gateway.core.events import Event, Forgiven, GateOpened
from scrapy_gateway.core.faults import ATTEMPT_TIMEOUT, Blame, Fault
from scrapy_gateway.core.gates import PROVIDER, GateRules, Go, Hold, OutageGates
from scrapy_gateway.core.health import HealthRules
from scrapy_gateway.core.heard import Heard, Outbox
from scrapy_gateway.core.latency import DomainLatencies, TimeoutRule
from scrapy_gateway.core.pool import Exhausted, Pick, ProxyPool, Wait
from scrapy_gateway.core.proxies import Proxy

DIRECT = "direct"  # how the judge names the path of a request sent without a proxy
OVERLOAD_BACKOFF_SCALE = 0.1
INITIAL_RTO = 1.0  # seconds: RFC 6298's timeout before any round trip is measured


def opens_outage(events: Collection[Event], domain: str) -> bool:
    """A gate opened on the domain, or on the whole pool: the domain's cuts were the outage's."""
    return any(isinstance(event, GateOpened) and event.scope in (domain, PROVIDER) for event in events)


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
    concurrency_start: int = 2  # slow start's first per-domain limit (0: start at the user's)
    max_pairs: int = 100_000
    max_domains: int = 10_000
    timeouts: TimeoutRule = field(default_factory=TimeoutRule)
    gates: GateRules = field(default_factory=GateRules)
    # Proxies that are a provider's rotating endpoint (a new exit per request): None = a pool of
    # one is one, True = every proxy of the pool is one, False = none is.
    rotating_endpoints: bool | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    fault: Fault  # with its blame settled
    retry: bool
    delay: float = 0.0  # seconds the retry must wait
    budget_wait: float = 0.0  # the part of `delay` the retry budget imposed
    new_limit: int | None = None  # the domain's new concurrency limit, if it changed
    overload: bool = False  # an origin-blamed overload (what a fleet's shared limit learns from)
    outage: bool = False  # an outage gate opened on the slot: its cuts since it last worked are undone
    doubtful: bool = False  # in slow start, a status failure not blamed on the origin: it frees no room
    spent: bool = False  # the retry took a token of the domain's retry budget
    overturned: int = 0  # earlier origin verdicts on this path that this failure showed were its own
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
            policy.concurrency_min,
            policy.concurrency_beta,
            max_slots=policy.max_domains,
            initial=policy.concurrency_start,
        )
        self.backoff = Backoff(policy.backoff_base, policy.backoff_cap)
        self.gates = OutageGates(policy.gates, policy.max_domains)
        endpoints = policy.rotating_endpoints
        self.endpoints = len(self.pool) == 1 if endpoints is None else endpoints
        self._pooled = bool(self.pool)  # its proxies are fixed at start-up; _scopes asks per call
        # Set by a fleet's shared state: what this process sees, kept for the others (heard.py).
        self.outbox: Outbox | None = None
        # Set by a fleet's shared state: the phase of the fleet's limit of a slot, which rules it
        # (None: not known, or Redis lost: this process's own limit rules, and its phase).
        self.fleet_phase: Callable[[str], Phase | None] | None = None

    def _fresh_path(self, attempt: Attempt, blame: Blame) -> bool:
        """A retry of this attempt goes out through another path: another proxy of the pool, or
        another exit of a rotating endpoint. A failure nobody could blame is fresh evidence only
        through a proxy the request has not failed through yet: in a pool of two whose proxies
        both fail it (an origin whose listener is gone while its open connections still answer),
        it backs off rather than spend its retries within a second."""
        if not attempt.rotating:
            return False
        if self.endpoints:
            return True
        if blame is not Blame.UNKNOWN:
            return len(self.pool) > 1
        return len(self.pool) > len(attempt.tried) + (attempt.proxy not in attempt.tried)

    def _phase(self, slot: str) -> Phase:
        """The phase of the limit that rules the slot: the fleet's with a Redis state (this
        process's own slow start never begins there, so its own phase would say "not starting"
        and every failure of the fleet's overshoot would free room), else this process's."""
        shared = self.fleet_phase(slot) if self.fleet_phase is not None else None
        return shared if shared is not None else self.concurrency.phase(slot)

    def _scopes(self, domain: str, via_pool: bool) -> tuple[str, ...]:
        return (PROVIDER, domain) if via_pool and self._pooled else (domain,)

    def admit(self, domain: str, now: float, *, via_pool: bool) -> Go | Hold:
        """Whether a request may go now, or waits on an outage gate (gates.py)."""
        return self.gates.admit(self._scopes(domain, via_pool), now)

    def route(
        self, domain: str, now: float, rng: random.Random, avoid: Collection[str] = ()
    ) -> Pick | Wait | Exhausted:
        seen = self.latencies.get(domain)
        return self.pool.choose(domain, now, rng, avoid, seen.typical() if seen is not None else None)

    def starting(self, attempt: Attempt, domain: str, now: float) -> Go | Hold:
        """As an attempt's transfer starts: a request admitted on arrival may have queued for its
        slot while an outage gate opened (or turned pending), and would go into the outage with
        the whole queue once the slot's limit allows. The gate holds it then, as it would have on
        arrival, unless it is the gate's probe or a last try; a probe that has come due makes it
        the probe."""
        if attempt.probe is not None or attempt.final:
            return Go()
        return self.gates.admit(self._scopes(domain, attempt.rotating), now)

    def unsent(self, attempt: Attempt, domain: str, now: float) -> None:
        """An attempt `starting` held back: nothing was sent, so its proxy carried nothing."""
        if attempt.proxy is not None:
            self.pool.unstarted(attempt.proxy, domain, now)

    def stranded(self, attempt: Attempt, domain: str, now: float) -> bool:
        """As an attempt's transfer starts: the pool proxy it was routed to has left rotation since
        (a request routed on arrival may queue for its slot while the proxy's first failures take
        it out)."""
        proxy = attempt.proxy
        return proxy is not None and not attempt.pinned and not self.pool.in_rotation(proxy, domain, now)

    def reroute(self, attempt: Attempt, domain: str, now: float, rng: random.Random) -> Pick | None:
        """Another proxy for a stranded attempt; None: there is none, it goes as routed."""
        proxy = attempt.proxy
        choice = self.route(domain, now, rng, attempt.tried if proxy is None else (*attempt.tried, proxy))
        return choice if isinstance(choice, Pick) and choice.proxy.key != proxy else None

    def rerouted(self, attempt: Attempt, proxy: str, domain: str, now: float) -> Attempt:
        """The attempt goes through `proxy` (from `reroute`) after all: its next record."""
        if attempt.proxy is not None:
            self.pool.moved(attempt.proxy, proxy, domain, now)
        return replace(attempt, proxy=proxy)

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

    def unheard_after(self) -> float:
        """Seconds a slot in slow start may hear nothing back before the requests it waits on free
        their rooms (concurrency.py, `late`): what the pool's paths have taken elsewhere (their RFC
        6298 timeout, with the per-attempt timeouts' margin), or RFC 6298's initial 1 s before
        anything is measured."""
        seen = self.pool.latency.timeout()
        if seen is None:
            return INITIAL_RTO
        return max(self.timeouts.floor, max(self.timeouts.factor, 1.0) * seen)

    def sent(self, proxy: str | None, domain: str, now: float, *, first_attempt: bool) -> None:
        if proxy is not None:
            self.pool.started(proxy, domain, now)
        if first_attempt:
            self.budget.deposit(domain, now)
            if self.outbox is not None:
                self.outbox.sending(domain)

    def released(self, proxy: str | None, domain: str, *, probe: str | None = None, now: float = 0.0) -> None:
        """The download ended in something that is nobody's fault (a request dropped on purpose)."""
        if proxy is not None:
            self.pool.finished(proxy, domain)
        if probe is not None:
            self.gates.probe_ended(probe, now, None)

    def on_success(
        self,
        proxy: str | None,
        domain: str,
        slot: str,
        now: float,
        latency: float | None = None,
        load: int | None = None,
        sent_at: float | None = None,
    ) -> tuple[list[Event], int | None]:
        """`latency`: how long the download took to its headers (Scrapy's download_latency);
        `load`: the requests in flight on the slot when it was sent, itself included; `sent_at`:
        when its transfer began (default: `latency` before now)."""
        events: list[Event] = list(self.gates.success(self._scopes(domain, proxy is not None), now))
        seen = None
        if latency is not None and latency >= 0.0:
            seen = self.latencies.observe(domain, latency, now)
        else:
            latency = None
        if proxy is not None:
            events += self.pool.succeeded(proxy, domain, now, latency)
            pair = self.pool.pairs.get((proxy, domain))
            if seen is not None and pair is not None:
                seen.path_observed(proxy, pair.latency)
        if sent_at is None:
            sent_at = now - latency if latency is not None else now
        self.judge.success(proxy or DIRECT, domain, now, sent=sent_at)
        if self.outbox is not None:
            self.outbox.add(Heard(proxy, domain, latency=latency))
        return events, self.concurrency.clean(slot, load)

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
        load: int | None = None,
    ) -> Verdict:
        """Settle the blame of a failed attempt, update what it teaches, and decide the retry.

        `ceiling`: the user's own concurrency limit of the slot; `load`: as for `on_success`. The
        verdict carries the next `Attempt` when the request is to be retried.
        """
        proxy = attempt.proxy
        cut = fault.kind == ATTEMPT_TIMEOUT
        evidence = fault.blame  # before history settled it
        silent = 0  # paths cut on the domain since it last answered, this one included
        if cut and proxy is not None and (seen := self.latencies.get(domain)) is not None:
            silent = seen.silent_through(proxy, now if attempt.sent_at is None else attempt.sent_at)
        everyone = cut and silent >= 2  # a cut while the domain was slow through other paths too
        overturned = 0
        phase = self._phase(slot)
        if proxy is not None and not fault.answered and attempt.sent_at is not None:
            self.pool.waited(proxy, domain, now - attempt.sent_at, now)
        if proxy is not None:
            blame = self.judge.failure(
                proxy,
                domain,
                now,
                fault.blame,
                sent=attempt.sent_at,
                pool_size=len(self.pool),
                transport=fault.transport,
                # A cut says the path is slower than the domain has shown elsewhere: never an outage,
                # unless other paths have been cut there too since it last answered (it turned slow
                # for everyone). Through a rotating endpoint, each request leaves by another exit:
                # failures through one identity are no cross-proxy evidence of the origin's fault.
                path_only=(cut and not everyone) or self.endpoints,
                probing=phase.probing,
                growing=phase.growing,
            )
            overturned = self.judge.overturned
            fault = replace(fault, blame=blame)
        if attempt.probe is not None:
            self.gates.probe_ended(attempt.probe, now, rng)
        events = self._gate_evidence(fault, evidence, proxy, domain, now, rng, cut=cut)
        scopes = self._scopes(domain, proxy is not None)
        gated = any(self.gates.is_open(scope) for scope in scopes)
        if proxy is not None:
            if self.gates.is_open(PROVIDER):
                self.pool.finished(proxy, domain, now)  # the pool is innocent of a provider outage
            else:
                refused = evidence in (Blame.ORIGIN, Blame.PAIR)
                events += self.pool.failed(proxy, domain, fault, now, rng, refused=refused)
        new_limit = None
        sent_at = now if attempt.sent_at is None else attempt.sent_at
        # Overload is an origin shedding load: a Retry-After is its own throttle, and failures at an
        # open gate are an outage's; when a gate opens, the cuts made before it are undone. Before
        # the domain has worked, history blames the origin only once three proxies have failed and
        # none has succeeded: an origin past its capacity from the first request answers every
        # request but one with a fast error, and each error would otherwise make room for the next.
        overload = fault.throttles and fault.blame is Blame.ORIGIN and fault.retry_after is None and not gated
        # A failure with a status that history did not blame on the origin may still be slow
        # start's overshoot through a path not proven yet: it frees no room (doubtful).
        doubtful = (
            fault.throttles
            and not fault.transport
            and fault.blame in (Blame.PAIR, Blame.UNKNOWN)
            and fault.retry_after is None
            and not gated
            and phase.starting
        )
        if overload:
            new_limit = self.concurrency.overloaded(slot, ceiling, sent_at, now, load, by=proxy)
        elif doubtful:
            new_limit = self.concurrency.doubtful(slot, load)
        if overturned and proxy is not None:
            # This path's run of failures had been judged the origin's: the cuts that run made are
            # undone (with a Redis state, the fleet's limit recovers by itself).
            new_limit = self.concurrency.overturned(slot, proxy, self.judge.overturned_since) or new_limit
        outage = opens_outage(events, domain)
        if outage:
            new_limit = self.concurrency.outage(slot) or new_limit
        base = Verdict(
            fault,
            retry=False,
            new_limit=new_limit,
            overload=overload,
            outage=outage,
            doubtful=doubtful,
            overturned=overturned,
            events=tuple(events),
        )
        # A Retry-After keeps its own schedule; the gate never sends it early.
        if (
            gated
            and fault.retryable
            and attempt.retries_allowed
            and not attempt.final
            and not fault.retires
            and fault.retry_after is None
        ):
            hold = self.gates.hold_retry(scopes, now)
            if hold is not None:
                # The outage costs the request no retry: the gate's stall limit ends it instead.
                held = replace(
                    base, retry=True, delay=max(0.0, hold.until - now), next_attempt=attempt.waiting_on(hold.scope)
                )
                return self._told(evidence, attempt, domain, now, held, everyone=everyone)
        # A proxy's own failure says nothing about the page: it is retried on another proxy from a
        # separate allowance, so a few bad proxies cannot use up the retries the origin may need.
        # A rotating endpoint's own failures (anything without the origin's evidence) are an exit's.
        proxy_side = attempt.rotating and (
            fault.blame in (Blame.PROXY, Blame.PAIR) or (self.endpoints and fault.blame is Blame.UNKNOWN)
        )
        # Wrong credentials do not heal: without another proxy to rotate to, a retry cannot succeed.
        hopeless = fault.retires and not (attempt.rotating and len(self.pool) > 1)
        if hopeless or not fault.retryable or not attempt.can_retry(proxy_side=proxy_side):
            return self._told(evidence, attempt, domain, now, base, everyone=everyone)
        spent = False
        if fault.blame is not Blame.ORIGIN and self._fresh_path(attempt, fault.blame):
            # The next proxy is a fresh path: no reason to wait, and the origin never saw this one.
            # A failure nobody can blame may still be the origin's, so its retry spends the domain's
            # budget; through a rotating endpoint it is an exit's (proxy_side), paid by the proxy
            # allowance alone: at 20 % failing exits the budget's pacing was most of the crawl's tail.
            delay = budget_wait = 0.0
            if fault.blame is Blame.UNKNOWN and not proxy_side:
                budget_wait, spent = self.budget.withdraw(domain, now), True
                delay = budget_wait
        else:
            # An origin that still answers is shedding load, and the concurrency cut is the cure:
            # a short pause will do. One that answers nothing gets the full backoff.
            scale = OVERLOAD_BACKOFF_SCALE if self.judge.answering(domain, now) else 1.0
            delay = self.backoff.delay(attempt.retries + 1, rng, fault.retry_after, scale=scale)
            # An origin that named its time with Retry-After has throttled us itself.
            spent = fault.retry_after is None
            budget_wait = self.budget.withdraw(domain, now) if spent else 0.0
            delay = max(delay, budget_wait)
        retry = attempt.increment(proxy_side=proxy_side, cut=cut)
        verdict = replace(base, retry=True, delay=delay, budget_wait=budget_wait, spent=spent, next_attempt=retry)
        return self._told(evidence, attempt, domain, now, verdict, everyone=everyone)

    def _told(
        self, evidence: Blame, attempt: Attempt, domain: str, now: float, verdict: Verdict, *, everyone: bool
    ) -> Verdict:
        """The verdict, once what it saw is in the outbox for the fleet (heard.py). `everyone`: a
        cut made while the domain was slow through other paths too (evidence about the domain)."""
        if self.outbox is not None:
            fault, sent_at = verdict.fault, attempt.sent_at
            self.outbox.add(
                Heard(
                    attempt.proxy,
                    domain,
                    fault=fault,
                    evidence=evidence,
                    cut=fault.kind == ATTEMPT_TIMEOUT,
                    everyone=everyone,
                    probe=attempt.probe,
                    waited=now - sent_at if not fault.answered and sent_at is not None else None,
                    withdrew=verdict.spent,
                )
            )
        return verdict

    def hear(self, heard: Heard, now: float, rng: random.Random, at: float | None = None) -> list[Event]:
        """An outcome another process of the fleet saw (heard.py): learn it as if seen here, except
        for the decisions that stay with that process (its retry, its ejections). `at`: when it
        was seen (this process's clock): a success from before a gate opened here does not close
        it. An outage gate it opens undoes the domain's cuts, as one opened here would."""
        proxy, domain = heard.proxy, heard.domain
        if proxy is not None and proxy not in self.pool.records:
            return []  # another pool's proxy (a fleet prefix shared by mistake): no evidence here
        fault = heard.fault
        scopes = self._scopes(domain, proxy is not None)
        if fault is None:
            since = now if at is None else at
            events: list[Event] = list(self.gates.success(scopes, now, opened_before=since))
            seen = self.latencies.observe(domain, heard.latency, now) if heard.latency is not None else None
            if proxy is not None:
                events += self.pool.heard(proxy, domain, now, heard.latency, None)
                pair = self.pool.pairs.get((proxy, domain))
                if seen is not None and pair is not None:
                    seen.path_observed(proxy, pair.latency)
            sent = since - heard.latency if heard.latency is not None else since  # it arrived at `since`
            self.judge.success(proxy or DIRECT, domain, now, sent=sent)
            return events
        if proxy is not None:
            if heard.waited is not None:
                self.pool.waited(proxy, domain, heard.waited, now)
            left_at = now - heard.waited if heard.waited is not None else None
            self.judge.record(
                proxy,
                domain,
                now,
                fault.blame,
                sent=left_at,
                path_only=(heard.cut and not heard.everyone) or self.endpoints,
            )
        if heard.probe is not None:
            self.gates.probe_heard(heard.probe, now, rng)
        events = self._gate_evidence(fault, heard.evidence, proxy, domain, now, rng, cut=heard.cut)
        if opens_outage(events, domain):
            self.concurrency.outage(domain)
        if proxy is not None and not self.gates.is_open(PROVIDER):
            events += self.pool.heard(proxy, domain, now, None, fault)
        if heard.withdrew:
            self.budget.withdraw(domain, now)
        return events

    def heard_sent(self, domain: str, first_attempts: int, now: float) -> None:
        """Another process sent this many first attempts to the domain: the budget's deposits."""
        self.budget.deposit(domain, now, min(first_attempts, 100_000))

    def _round_trip(self, domain: str) -> float | None:
        """The domain's round-trip timeout, else the pool's (what other domains have shown)."""
        seen = self.latencies.get(domain)
        shown = seen.timeout() if seen is not None else None
        return shown if shown is not None else self.pool.latency.timeout()

    def _gate_evidence(
        self,
        fault: Fault,
        evidence: Blame,
        proxy: str | None,
        domain: str,
        now: float,
        rng: random.Random,
        *,
        cut: bool,
    ) -> list[Event]:
        """Feed a failure to the outage gates; the events of any gate it opens."""
        gates = self.gates
        if fault.retry_after is not None and fault.blame is Blame.ORIGIN:
            # The origin answered with its own schedule: it is up, and so is the path to it.
            return list(gates.success(self._scopes(domain, proxy is not None), now))
        # Evidence of an outage: anything but a cut (the path's), a ban (the pair's) or a
        # Retry-After (the origin's own schedule, honoured as such).
        if cut or fault.blame is Blame.PAIR or fault.retry_after is not None or not fault.retryable:
            return []
        events: list[Event] = []
        path = proxy or DIRECT
        worked = proxy is None or self.judge.worked(proxy, domain, now)
        # The provider's outage shows as proxies failing, not as an origin failing through them
        # (by the failure's own evidence: history calls anything failing everywhere the origin's).
        if proxy is not None and self.pool and evidence is not Blame.ORIGIN:
            opened = gates.failure(
                PROVIDER,
                path,
                now,
                rng,
                paths_needed=gates.provider_paths_needed(len(self.pool)),
                round_trip=self.pool.latency.timeout(),
                worked=worked,
            )
            if opened is not None:
                events.append(opened)
                forgiven = self.pool.forgive(gates.since(PROVIDER))
                if forgiven:
                    events.append(Forgiven(forgiven))
        # While the whole pool is out, a domain's failures say nothing about the domain.
        if fault.blame is not Blame.PROXY and not gates.is_open(PROVIDER):
            needed = min(3, max(len(self.pool), 1)) if proxy is not None else 1
            round_trip = self._round_trip(domain)
            opened = gates.failure(domain, path, now, rng, paths_needed=needed, round_trip=round_trip, worked=worked)
            if opened is not None:
                events.append(opened)
        return events
