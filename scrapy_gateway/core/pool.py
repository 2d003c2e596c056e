"""The proxy pool: which proxy a request takes, and what each outcome does to the pool.

Selection chooses by expected completion time: a candidate costs its latency on the domain (the
pair's peak estimate, else the proxy's, else a prior) times its outstanding requests + 1, over its
chance of success: the worse of what the proxy's and the pair's failure scores say and what their
kept outcomes say (health.py). A request outstanding on a proxy for longer than that latency says
the proxy takes at least that long, so a silent proxy (a blackhole) grows costly while it keeps us
waiting, long before any timeout. A proxy nobody has measured costs a prior: twice the domain's
typical latency, plus what first contacts with proxies have wasted so far, a failure's retry
included (`Debuts`). In a pool where half the proxies turned out silent or slow, an unknown one is
a gamble on that record, so the known good ones carry more load before the next one is tried; in a
pool of equals the prior stays low and load spreads.

The candidates are two proxies drawn at random (power of two choices: O(1) whatever the pool size)
and the domain's last choice, which must beat them by a margin. Once the domain has proxies proven
on it, the first of the two is drawn from them (`WorkingSet`): in a pool of 120, two uniform draws
mostly find untried proxies, so every request the last choice could not take was an exploration,
and a good proxy found once was seldom drawn again. The remembered one keeps a good proxy in every
comparison, so that a pool where half the proxies are slow does not send the quarter of requests
that draws two slow ones to a slow proxy; the margin keeps a pool of equals rotating. Proxies the
request has already failed on are avoided while any other proxy is usable.

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
from scrapy_gateway.core.latency import Latency
from scrapy_gateway.core.proxies import Proxy

_RANDOM_DRAWS = 8  # random probes before falling back to a scan of the pool
DEFAULT_PRIOR = 1.0  # seconds: the latency of a proxy on a domain nothing is known about
PRIOR_FACTOR = 2.0  # an unmeasured proxy is assumed this much slower than the domain's typical path
_MIN_LATENCY = 0.001  # seconds: keeps costs comparable by load when every estimate has faded
_MIN_SUCCESS = 0.05  # chance of success below which all candidates look alike
_MEMORY_HANDICAP = 1.25  # the remembered candidate must be this much better than the random ones
_PROVEN = 0.8  # chance of success a proxy needs to become the domain's one to beat
_WORKING_SET = 32  # proven proxies remembered per domain (WorkingSet)
_DEBUT_MEMORY = 32.0  # first contacts the debut record remembers (older ones fade geometrically)
_ACTIVE, _EJECTED = State.ACTIVE, State.EJECTED  # plain names for the hot paths (see health.py)


@dataclass(slots=True, eq=False)  # identity: records are compared and found by who they are
class ProxyRecord:
    proxy: Proxy
    health: Health = field(default_factory=Health)
    requests: int = 0
    successes: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # blamed on the proxy, by kind
    origin_failures: int = 0  # failures through this proxy that were the origin's
    busy_since: float = 0.0  # when its outstanding requests last went from none to some
    last_answer: float = 0.0  # when it last answered anything, good or bad
    debuted: bool = False  # its first attempt has ended in an outcome that counts (Debuts)


class Debuts:
    """What a first contact with a proxy has wasted: seconds beyond the typical latency (all of it
    for a failure or a cut), over the chance that a new proxy works.

    A debut still outstanding counts with the time it has waited beyond the typical latency so
    far, so that silent proxies raise the price of exploring while they keep us waiting.
    """

    __slots__ = ("_ok", "_pending", "_pending_sum", "_waste", "_weight")

    def __init__(self) -> None:
        self._waste = 0.0  # decayed sums over finished debuts
        self._ok = 0.0
        self._weight = 0.0
        self._pending: dict[str, float] = {}  # proxy key -> when its first attempt went out
        self._pending_sum = 0.0  # sum of those start times: the ages' sum is n * now - this

    def start(self, key: str, now: float) -> None:
        if key not in self._pending:
            self._pending[key] = now
            self._pending_sum += now

    def end(self, key: str, now: float, ok: bool | None, typical: float | None) -> bool:
        """The first attempt ended; `ok` None: nobody's fault, it does not count. True if it was one."""
        started = self._pending.pop(key, None)
        if started is None:
            return False
        self._pending_sum -= started
        if not self._pending:
            self._pending_sum = 0.0  # no float drift carried across
        if ok is None:
            return False
        took = max(0.0, now - started)
        # A failure wastes its time and the retry it calls for: another typical round trip.
        waste = max(0.0, took - (took if typical is None else typical)) if ok else took + (typical or 0.0)
        keep = 1.0 - 1.0 / _DEBUT_MEMORY
        self._waste = self._waste * keep + waste
        self._ok = self._ok * keep + (1.0 if ok else 0.0)
        self._weight = self._weight * keep + 1.0
        return True

    def penalty(self, now: float, typical: float) -> float:
        """Seconds an untried proxy is expected to cost beyond a typical one (0.0: nothing known)."""
        pending = len(self._pending)
        weight = self._weight + pending
        if weight == 0.0:
            return 0.0
        waiting = max(0.0, pending * (now - typical) - self._pending_sum)
        chance = (self._ok + pending + 1.0) / (weight + 1.0)  # one optimistic pseudo-debut
        return (self._waste + waiting) / weight / chance


class WorkingSet:
    """The proxies that have proven themselves on one domain (a ring of up to `size`; the oldest
    member makes way), from which one of each draw's two candidates comes: in a large pool, two
    uniform draws mostly find proxies nobody has tried, so every request that the one to beat
    cannot take would otherwise explore, and a good proxy found once would seldom be drawn again.
    `members` is read directly on the hot path (a method call costs more than the lookup); a
    membership test scans it, which at this size costs less than a set kept beside it."""

    __slots__ = ("_next", "_size", "members")

    def __init__(self, size: int) -> None:
        self.members: list[ProxyRecord] = []
        self._next = 0
        self._size = size

    def join(self, record: ProxyRecord) -> None:
        members = self.members
        if record in members:
            return
        if len(members) < self._size:
            members.append(record)
            return
        members[self._next] = record
        self._next = (self._next + 1) % self._size


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
        max_domains: int = 10_000,
    ) -> None:
        self.rules = rules
        self.records: dict[str, ProxyRecord] = {p.key: ProxyRecord(p) for p in proxies}
        self._order = list(self.records.values())
        self.max_ejected_ratio = max_ejected_ratio
        self.max_pairs = max_pairs
        # LRU of (proxy key, domain) health; bounded so a broad crawl does not grow without limit.
        self.pairs: OrderedDict[tuple[str, str], Health] = OrderedDict()
        self.in_panic = False
        self.latency = Latency()  # every successful download through the pool
        # The last choice per domain: the third candidate of every draw (LRU-bounded).
        self._last: OrderedDict[str, ProxyRecord] = OrderedDict()
        self._max_domains = max_domains
        self._working: OrderedDict[str, WorkingSet] = OrderedDict()  # per domain (oldest out first)
        self.debuts = Debuts()

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[ProxyRecord]:
        return iter(self._order)

    # -- selection -------------------------------------------------------------------------

    def choose(
        self,
        domain: str,
        now: float,
        rng: random.Random,
        avoid: Collection[str] = (),
        typical: float | None = None,
    ) -> Pick | Wait | Exhausted:
        """`typical`: the domain's typical latency through the pool, when known (seconds)."""
        order = self._order
        if not order:
            return Exhausted()
        if typical is None:
            typical = self.latency.srtt if self.latency.samples else DEFAULT_PRIOR / PRIOR_FACTOR
        prior = PRIOR_FACTOR * typical + self.debuts.penalty(now, typical)
        best = self._last.get(domain)
        best_cost = 0.0
        if best is not None:
            cost = self._cost(best, domain, now, avoid, prior)
            if cost is None:
                best = None
            else:
                # Handicapped, so that among equals the random draws win and load keeps rotating.
                best_cost = cost * _MEMORY_HANDICAP
        remembered = best
        found = 0
        draw, size = rng.random, len(order)  # random() * n: a third of randrange()'s cost
        working = self._working.get(domain)
        if working is not None:  # the first candidate: one proven on the domain (never empty)
            members = working.members
            record = members[int(draw() * len(members))]
            if record is not remembered and (cost := self._cost(record, domain, now, avoid, prior)) is not None:
                if best is None or cost < best_cost:
                    best, best_cost = record, cost
                found = 1
        for _ in range(_RANDOM_DRAWS):
            record = order[int(draw() * size)]
            if record is remembered or record is best:
                continue  # two draws means two proxies, neither of them the remembered one
            cost = self._cost(record, domain, now, avoid, prior)
            if cost is None:
                continue
            if best is None or cost < best_cost:
                best, best_cost = record, cost
            found += 1
            if found == 2:
                break
        if best is None:
            choice = self._scan(domain, now, avoid, prior)
            if not isinstance(choice, Pick):
                return choice
            best = self.records[choice.proxy.key]
        if best is not remembered and self._proven(best, domain):
            # Only a proxy that answers, and nearly always well, becomes the one to beat: an
            # exploration pick still waiting, or a flaky proxy, must not push a good one out of
            # every comparison.
            self._remember(domain, best)
        return Pick(best.proxy)

    def _proven(self, record: ProxyRecord, domain: str) -> bool:
        pair = self.pairs.get((record.proxy.key, domain))
        success = _success(record.health, pair)
        answered = pair.latency.samples if pair is not None else record.health.latency.samples
        return bool(answered) and success >= _PROVEN

    def _remember(self, domain: str, record: ProxyRecord) -> None:
        last = self._last
        if last.get(domain) is not record:
            last[domain] = record
            last.move_to_end(domain)
            if len(last) > self._max_domains:
                last.popitem(last=False)

    def _working_set(self, domain: str) -> WorkingSet:
        working = self._working.get(domain)
        if working is None:
            working = self._working[domain] = WorkingSet(_WORKING_SET)
            if len(self._working) > self._max_domains:
                self._working.popitem(last=False)
        return working

    def _cost(self, record: ProxyRecord, domain: str, now: float, avoid: Collection[str], prior: float) -> float | None:
        """Expected seconds to a good answer through this proxy, or None if it cannot be chosen."""
        health = record.health
        key = record.proxy.key
        if (avoid and key in avoid) or not health.usable(now):
            return None
        pair = self.pairs.get((key, domain))
        if pair is not None and not pair.usable(now):
            return None
        success = _success(health, pair)
        seen = pair.latency if pair is not None and pair.latency.samples else health.latency
        latency = seen.current(now)
        if not seen.samples:  # never answered well: the prior, or what its silences have shown
            latency = max(latency, prior)
        inflight = health.inflight
        if inflight:
            # Kept waiting this long without an answer: it takes at least this long.
            latency = max(latency, now - max(record.busy_since, record.last_answer))
        return max(latency, _MIN_LATENCY) * (inflight + 1) / max(success, _MIN_SUCCESS)

    def _scan(self, domain: str, now: float, avoid: Collection[str], prior: float) -> Pick | Wait | Exhausted:
        """The slow path: few proxies are usable, so look at every one."""
        best: ProxyRecord | None = None
        best_score = 0.0
        fallback: ProxyRecord | None = None  # usable, but already tried by this request
        earliest: float | None = None
        for record in self._order:
            health = record.health
            if health.state is State.RETIRED:
                continue
            score = self._cost(record, domain, now, (), prior)
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
        if not record.debuted:
            self.debuts.start(proxy_key, now)
        record.requests += 1
        record.health.inflight += 1
        self.pair(proxy_key, domain).inflight += 1

    def finished(
        self, proxy_key: str, domain: str, now: float = 0.0, *, ok: bool | None = None, ended: float = 0.0
    ) -> tuple[ProxyRecord, Health] | None:
        """`ok`: whether the attempt got a good answer (None: nobody's fault); `ended`: when."""
        record = self.records.get(proxy_key)
        if record is None:
            return None
        if not record.debuted:
            typical = self.latency.srtt if self.latency.samples else None
            record.debuted = self.debuts.end(proxy_key, ended or now, ok, typical)
        record.last_answer = max(record.last_answer, now)
        return record, self._release(record, domain)

    def _release(self, record: ProxyRecord, domain: str) -> Health:
        """One request fewer in flight through the proxy, and through its pair with the domain."""
        record.health.inflight = max(0, record.health.inflight - 1)
        pair = self.pair(record.proxy.key, domain)
        pair.inflight = max(0, pair.inflight - 1)
        return pair

    def succeeded(self, proxy_key: str, domain: str, now: float, latency: float | None = None) -> list[Event]:
        found = self.finished(proxy_key, domain, now, ok=True)
        if found is None:
            return []
        record, pair = found
        record.successes += 1
        if latency is not None:
            self._observe(record, pair, latency, now)
            if domain not in self._last:
                self._remember(domain, record)  # the domain's first good path: the one to beat
            working = self._working.get(domain)
            if (working is None or record not in working.members) and self._proven(record, domain):
                (working or self._working_set(domain)).join(record)
        events: list[Event] = []
        if record.health.succeed(self.rules, now):
            events.append(Readmitted(proxy_key))
        if pair.succeed(self.rules, now):
            events.append(PairReadmitted(proxy_key, domain))
        return events

    def _observe(self, record: ProxyRecord, pair: Health, latency: float, now: float) -> None:
        """A good download's latency: the pool's, the proxy's and the pair's estimates learn it."""
        self.latency.observe(latency, now)
        record.health.latency.observe(latency, now)
        pair.latency.observe(latency, now)

    def in_rotation(self, proxy_key: str, domain: str, now: float) -> bool:
        """Neither the proxy nor its pair with the domain has been taken out (and is still out)."""
        record = self.records.get(proxy_key)
        if record is None:
            return True
        health = record.health
        if health.state is not _ACTIVE and not (health.state is _EJECTED and now >= health.until):
            return False
        pair = self.pairs.get((proxy_key, domain))
        return pair is None or pair.state is _ACTIVE or now >= pair.until

    def moved(self, old: str, new: str, domain: str, now: float) -> None:
        """A request routed to `old` goes through `new` instead, before it was sent."""
        self.unstarted(old, domain, now)
        self.started(new, domain, now)

    def unstarted(self, proxy_key: str, domain: str, now: float) -> None:
        """A request routed to this proxy was not sent after all (`started`, undone)."""
        record = self.records.get(proxy_key)
        if record is not None:
            record.requests -= 1
            self._release(record, domain)
            if not record.debuted and not record.health.inflight:
                self.debuts.end(proxy_key, now, None, None)  # its first contact has not happened yet

    def waited(self, proxy_key: str, domain: str, took: float, now: float) -> None:
        """An attempt through this proxy got no answer in `took` seconds: it takes at least that."""
        record = self.records.get(proxy_key)
        if record is None:
            return
        record.health.latency.bound(took, now)
        self.pair(proxy_key, domain).latency.bound(took, now)

    def failed(
        self, proxy_key: str, domain: str, fault: Fault, now: float, rng: random.Random, *, refused: bool = False
    ) -> list[Event]:
        """Record a failure whose blame is final. Origin faults only release the request.
        `refused`: the failure itself said the site refused (its status, before history): a ban
        of the pair lasts (health.py)."""
        # An origin's failure says nothing of the proxy: its debut is still to come.
        ok = None if fault.blame is Blame.ORIGIN else False
        found = self.finished(proxy_key, domain, now if fault.answered else 0.0, ok=ok, ended=now)
        if found is None:
            return []
        record, pair = found
        if self._last.get(domain) is record:
            # Whoever is to blame, a path that just failed is no longer the one to beat: if it was
            # the path's fault, the next request would go straight back to it.
            del self._last[domain]
        if fault.blame is Blame.ORIGIN:
            record.origin_failures += 1
            pair.doubted()
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
            retired = pair.eject(self.rules, now, rng, durable=refused)
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

    def heard(self, proxy_key: str, domain: str, now: float, latency: float | None, fault: Fault | None) -> list[Event]:
        """An outcome another process of the fleet saw through this proxy (`fault` None: a success).

        Scores, streaks and latency learn it; ejecting stays with the process that saw it (the
        ejection reaches this one as news: `learned`), so no failure is counted twice. Records that
        are out are left alone: a cooldown is this process's, and it ends in its own probation."""
        record = self.records.get(proxy_key)
        if record is None:
            return []
        health, pair = record.health, self.pair(proxy_key, domain)
        if fault is None:
            if latency is not None:
                self._observe(record, pair, latency, now)
            events: list[Event] = []
            if health.state is State.ACTIVE and health.succeed(self.rules, now):
                events.append(Readmitted(proxy_key))
            if pair.state is State.ACTIVE and pair.succeed(self.rules, now):
                events.append(PairReadmitted(proxy_key, domain))
            return events
        if fault.blame is Blame.PROXY:
            if health.state is State.ACTIVE and not health.probation:
                health.fail(self.rules, hard=False)
        elif fault.blame is not Blame.ORIGIN and pair.state is State.ACTIVE and not pair.probation:
            pair.fail(self.rules, hard=False)
        return []

    def learned(self, event: Event, now: float, *, seconds_left: float = 0.0) -> bool:
        """Another process of the fleet took this proxy (or pair) out: take it out here too, for
        what is left of its cooldown. Never past the soft-ejection cap (its evidence is not this
        process's own), never counted as this process's ejection (retirement stays its own
        count), and a proxy in probation or already out is left as it is. True if it changed."""
        if isinstance(event, Retired | Ejected):
            record = self.records.get(event.proxy)
            if record is None or record.health.state is not State.ACTIVE or record.health.probation:
                return False
            if isinstance(event, Retired):
                record.health.retire()
                return True
            if seconds_left <= 0.0 or self._out_share_after_one_more() > self.max_ejected_ratio:
                return False
            record.health.state, record.health.until, record.health.ejected_at = State.EJECTED, now + seconds_left, now
            return True
        if isinstance(event, PairEjected) and event.proxy in self.records and seconds_left > 0.0:
            pair = self.pair(event.proxy, event.domain)
            if pair.state is not State.ACTIVE or pair.probation:
                return False
            pair.state, pair.until, pair.ejected_at = State.EJECTED, now + seconds_left, now
            return True
        return False

    def forgive(self, since: float) -> int:
        """Re-admit the proxies ejected since `since` (a provider-wide outage); how many."""
        forgiven = 0
        for record in self._order:
            health = record.health
            if health.state is State.EJECTED and health.ejected_at >= since:
                health.forgive(self.rules)
                forgiven += 1
        if forgiven:
            self.in_panic = False
        return forgiven

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

    def ejected(self, now: float) -> set[str]:
        """The proxies out of rotation now (their cooldown not over), by key."""
        out = set()
        for record in self._order:
            record.health.usable(now)  # a finished cooldown shows as probation, not out
            if record.health.state is State.EJECTED:
                out.add(record.proxy.key)
        return out

    def all_retired(self) -> bool:
        return bool(self._order) and all(r.health.state is State.RETIRED for r in self._order)


def _success(health: Health, pair: Health | None) -> float:
    """A proxy's chance of success on a domain: the worse of what its recent outcomes (the scores)
    and its kept ones (`Health.reliability`) say, through the proxy and through the pair."""
    # Health.reliability, inlined: this runs for every candidate of every choice.
    ok = health.kept_ok
    recent, kept = 1.0 - health.score, (ok + 1.0) / (ok + health.kept_failed + 1.0)
    if pair is not None:
        ok = pair.kept_ok
        recent *= 1.0 - pair.score
        kept *= (ok + 1.0) / (ok + pair.kept_failed + 1.0)
    return recent if recent < kept else kept
