"""The proxy pool: which proxy a request takes, and what each outcome does to the pool.

Selection is "power of two choices": draw two usable proxies at random and take the healthier
(lower proxy + pair score, plus a little per outstanding request). It spreads load like random
rotation but learns across requests, and costs O(1) whatever the pool size. Proxies the request
has already failed on are avoided while any other proxy is usable.

Soft ejections (a score, no certainty) are capped at `max_ejected_ratio` of the pool: past it the
pool is in panic and keeps the failing proxies in rotation, least bad first, because a mass
ejection on soft evidence usually means the evidence is wrong. Hard failures always eject.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

from scrapy_gateway.core.events import Ejected, Event, PairEjected, PairReadmitted, Panic, Readmitted, Retired
from scrapy_gateway.core.faults import Blame, Fault
from scrapy_gateway.core.health import Health, HealthRules, State
from scrapy_gateway.core.proxies import Proxy

_RANDOM_DRAWS = 8  # random probes before falling back to a scan of the pool
_INFLIGHT_WEIGHT = 0.02  # a score point per 50 outstanding requests
_SILENT_PENALTY = 1.0  # as bad as a proxy that always fails
_SILENT_ROUND_TRIPS = 5.0
_SILENT_FLOOR = 0.1  # seconds
_LATENCY_ALPHA = 0.05


@dataclass(slots=True)
class ProxyRecord:
    proxy: Proxy
    health: Health = field(default_factory=Health)
    requests: int = 0
    successes: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # blamed on the proxy, by kind
    origin_failures: int = 0  # failures through this proxy that were the origin's
    busy_since: float = 0.0  # when its outstanding requests last went from none to some
    last_answer: float = 0.0  # when it last answered anything, good or bad


@dataclass(frozen=True, slots=True)
class Pick:
    proxy: Proxy


@dataclass(frozen=True, slots=True)
class Wait:
    until: float  # monotonic time at which some proxy may be usable again


@dataclass(frozen=True, slots=True)
class Exhausted:
    """Every proxy is retired: nothing will ever be usable again."""


class ProxyPool:
    def __init__(
        self,
        proxies: Collection[Proxy],
        rules: HealthRules,
        *,
        max_ejected_ratio: float = 0.5,
        max_pairs: int = 100_000,
    ) -> None:
        self.rules = rules
        self.records: dict[str, ProxyRecord] = {p.key: ProxyRecord(p) for p in proxies}
        self._order = list(self.records.values())
        self.max_ejected_ratio = max_ejected_ratio
        self.max_pairs = max_pairs
        # LRU of (proxy key, domain) health; bounded so a broad crawl does not grow without limit.
        self.pairs: OrderedDict[tuple[str, str], Health] = OrderedDict()
        self.in_panic = False
        self.latency = 0.0  # EWMA of successful round trips, seconds

    def _silence_limit(self) -> float:
        return max(_SILENT_FLOOR, _SILENT_ROUND_TRIPS * self.latency)

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[ProxyRecord]:
        return iter(self._order)

    # -- selection -------------------------------------------------------------------------

    def choose(
        self, domain: str, now: float, rng: random.Random, avoid: Collection[str] = ()
    ) -> Pick | Wait | Exhausted:
        order = self._order
        if not order:
            return Exhausted()
        best: ProxyRecord | None = None
        best_score = 0.0
        found = 0
        for _ in range(_RANDOM_DRAWS):
            record = order[rng.randrange(len(order))]
            if record is best:
                continue  # two choices means two different proxies
            score = self._candidate_score(record, domain, now, avoid)
            if score is None:
                continue
            if best is None or score < best_score:
                best, best_score = record, score
            found += 1
            if found == 2:
                break
        if best is None:
            return self._scan(domain, now, avoid)
        return Pick(best.proxy)

    def _candidate_score(self, record: ProxyRecord, domain: str, now: float, avoid: Collection[str]) -> float | None:
        key = record.proxy.key
        if key in avoid or not record.health.usable(now):
            return None
        # Outstanding requests count too, so load spreads evenly among equals; and a proxy that
        # has never answered, or has answered nothing for several typical round trips, while a
        # request waits on it (a blackhole) is avoided long before its first timeout: each
        # request stuck there holds a place of its domain's concurrency until then.
        inflight = record.health.inflight
        busy = _INFLIGHT_WEIGHT * inflight
        if inflight and (
            not record.last_answer or now - max(record.busy_since, record.last_answer) > self._silence_limit()
        ):
            busy += _SILENT_PENALTY
        pair = self.pairs.get((key, domain))
        if pair is None:
            return record.health.score + busy
        if not pair.usable(now):
            return None
        return record.health.score + pair.score + busy

    def _scan(self, domain: str, now: float, avoid: Collection[str]) -> Pick | Wait | Exhausted:
        """The slow path: few proxies are usable, so look at every one."""
        best: ProxyRecord | None = None
        best_score = 0.0
        fallback: ProxyRecord | None = None  # usable, but already tried by this request
        earliest: float | None = None
        for record in self._order:
            health = record.health
            if health.state is State.RETIRED:
                continue
            score = self._candidate_score(record, domain, now, ())
            if score is None:
                pair = self.pairs.get((record.proxy.key, domain))
                ready = max(health.until, pair.until if pair is not None else 0.0)
                earliest = ready if earliest is None else min(earliest, ready)
                continue
            if record.proxy.key in avoid:
                fallback = fallback or record
            elif best is None or score < best_score:
                best, best_score = record, score
        if best is not None:
            return Pick(best.proxy)
        if fallback is not None:
            return Pick(fallback.proxy)
        if earliest is None:
            return Exhausted()
        # A proxy on probation with a request in flight is "ready" now but busy: retry shortly.
        return Wait(max(earliest, now + 0.05))

    def pair(self, proxy_key: str, domain: str) -> Health:
        key = (proxy_key, domain)
        health = self.pairs.get(key)
        if health is None:
            health = self.pairs[key] = Health()
            if len(self.pairs) > self.max_pairs:
                self.pairs.popitem(last=False)
        else:
            self.pairs.move_to_end(key)
        return health

    # -- outcomes --------------------------------------------------------------------------

    def started(self, proxy_key: str, domain: str, now: float = 0.0) -> None:
        record = self.records.get(proxy_key)
        if record is None:
            return
        if record.health.inflight == 0:
            record.busy_since = now
        record.requests += 1
        record.health.inflight += 1
        self.pair(proxy_key, domain).inflight += 1

    def finished(self, proxy_key: str, domain: str, now: float = 0.0) -> tuple[ProxyRecord, Health] | None:
        record = self.records.get(proxy_key)
        if record is None:
            return None
        record.last_answer = max(record.last_answer, now)
        record.health.inflight = max(0, record.health.inflight - 1)
        pair = self.pair(proxy_key, domain)
        pair.inflight = max(0, pair.inflight - 1)
        return record, pair

    def succeeded(self, proxy_key: str, domain: str, now: float, latency: float | None = None) -> list[Event]:
        if latency is not None and latency >= 0.0:
            self.latency += _LATENCY_ALPHA * (latency - self.latency)
        found = self.finished(proxy_key, domain, now)
        if found is None:
            return []
        record, pair = found
        record.successes += 1
        events: list[Event] = []
        if record.health.succeed(self.rules, now):
            events.append(Readmitted(proxy_key))
        if pair.succeed(self.rules, now):
            events.append(PairReadmitted(proxy_key, domain))
        return events

    def failed(self, proxy_key: str, domain: str, fault: Fault, now: float, rng: random.Random) -> list[Event]:
        """Record a failure whose blame is final. Origin faults only release the request."""
        found = self.finished(proxy_key, domain, now if fault.answered else 0.0)
        if found is None:
            return []
        record, pair = found
        if fault.blame is Blame.ORIGIN:
            record.origin_failures += 1
            return []
        record.failures[fault.kind] = record.failures.get(fault.kind, 0) + 1
        if fault.blame is Blame.PROXY:
            if fault.retires:
                if record.health.state is State.RETIRED:
                    return []
                record.health.retire()  # wrong credentials do not heal during a crawl
                return [Retired(proxy_key, fault.kind)]
            if record.health.state is not State.ACTIVE:
                return []  # sent before it was taken out: the ejection already counted it
            if record.health.fail(self.rules, hard=fault.hard):
                return self._eject(record, fault, now, rng)
            return []
        # PAIR or UNKNOWN: only this domain's view of the proxy suffers. An UNKNOWN failure only
        # lowers the score (selection then avoids the pair); ejecting takes evidence (blame.py).
        if pair.state is not State.ACTIVE:
            return []
        if pair.fail(self.rules, hard=True) and fault.blame is Blame.PAIR:
            retired = pair.eject(self.rules, now, rng)
            if retired:  # a pair is never retired for good: a ban may lift; keep it at the cap
                pair.state, pair.until = State.EJECTED, now + self.rules.cooldown_cap
            return [PairEjected(proxy_key, domain, fault.kind, pair.until - now)]
        return []

    def _eject(self, record: ProxyRecord, fault: Fault, now: float, rng: random.Random) -> list[Event]:
        key = record.proxy.key
        if not fault.hard and not record.health.probation and self._out_share_after_one_more() > self.max_ejected_ratio:
            self.in_panic = True
            return [Panic(key, fault.kind)]
        if record.health.eject(self.rules, now, rng):
            return [Retired(key, fault.kind)]
        return [Ejected(key, fault.kind, record.health.until - now)]

    def _out_share_after_one_more(self) -> float:
        out = sum(1 for r in self._order if r.health.state is not State.ACTIVE)
        return (out + 1) / len(self._order)

    # -- views -----------------------------------------------------------------------------

    def counts(self, now: float) -> dict[str, int]:
        counts = {"active": 0, "ejected": 0, "retired": 0}
        for record in self._order:
            health = record.health
            health.usable(now)  # let finished cooldowns show as active
            counts[health.state.value] += 1
        if counts["ejected"] == 0 and counts["retired"] == 0:
            self.in_panic = False
        return counts

    def all_retired(self) -> bool:
        return bool(self._order) and all(r.health.state is State.RETIRED for r in self._order)
