"""What the gateway's state looked like over a crawl, in bounded memory: the health report's data.

A `Timeline` holds series sampled at the same instants. It keeps at most `max_points` points: when
full, neighbours are merged pairwise and later samples are merged `stride` at a time into one
point, so a crawl of any length costs the same memory and the same report size, at a resolution
that halves each time the crawl's length doubles. A series merges by its kind: a cumulative
counter keeps its last value (rates are differences, exact at any resolution), a gauge its mean,
an in-flight count its peak (a burst must not vanish into an average).

A `Sampler` reads the core's own state when the adapter's timer asks (never per request): every
proxy is summed into the pool's series, and up to `max_tracked` of them (the busiest, once they
have carried requests) also get their own, so a pool of thousands stays small; the report draws
the busiest few and shows the rest of the pool as "others" (the pool's sums less theirs). The
adapter feeds what the core does not know: each download slot's limit and requests in flight
(Scrapy's downloader), and each failure's domain, kind and blame (O(1), as it is judged).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from scrapy_gateway.core.gates import PROVIDER
from scrapy_gateway.core.gateway import Gateway
from scrapy_gateway.core.health import State

OTHER = "(other)"  # the bucket of domains past the tracked ones


class Merge(Enum):
    LAST = "last"  # cumulative counters, limits
    MEAN = "mean"  # gauges: health, latency
    MAX = "max"  # requests in flight, gates open


Key = tuple[str, str]  # (metric, label): ("health", "http://u@10.0.0.1:8080")


def _merge(how: Merge, values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if how is Merge.LAST:
        return present[-1]
    if how is Merge.MAX:
        return max(present)
    return sum(present) / len(present)


class Timeline:
    """Series on shared sample times, at most `max_points` long (see the module's text)."""

    def __init__(self, merges: Mapping[str, Merge], max_points: int = 240) -> None:
        if max_points < 2:
            raise ValueError("max_points must be at least 2")
        self.merges = merges  # by metric
        self.max_points = max_points
        self.times: list[float] = []
        self.series: dict[Key, list[float | None]] = {}
        self.stride = 1  # raw samples per point
        self._bucket: list[tuple[float, Mapping[Key, float]]] = []

    def record(self, now: float, values: Mapping[Key, float]) -> None:
        self._bucket.append((now, values))
        if len(self._bucket) >= self.stride:
            self._commit()

    def flush(self) -> None:
        """Commit a part-filled bucket (the crawl's last samples) as a point of its own."""
        if self._bucket:
            self._commit()

    def _commit(self) -> None:
        bucket, self._bucket = self._bucket, []
        keys: dict[Key, None] = {}
        for _, values in bucket:
            keys.update(dict.fromkeys(values))
        width = len(self.times)
        for key in keys:
            merged = _merge(self.merges[key[0]], [values.get(key) for _, values in bucket])
            column = self.series.get(key)
            if column is None:
                column = self.series[key] = [None] * width  # a series born mid-crawl
            column.append(merged)
        for key, column in self.series.items():
            if key not in keys:
                column.append(None)
        self.times.append(bucket[-1][0])
        if len(self.times) >= self.max_points:
            self._halve()

    def _halve(self) -> None:
        self.times = [self.times[min(i + 1, len(self.times) - 1)] for i in range(0, len(self.times), 2)]
        for key, column in self.series.items():
            how = self.merges[key[0]]
            self.series[key] = [_merge(how, column[i : i + 2]) for i in range(0, len(column), 2)]
        self.stride *= 2

    def labels(self, metric: str) -> list[str]:
        return [label for name, label in self.series if name == metric]


# What each metric is, and how it merges. Counters are cumulative since the crawl began.
METRICS: Mapping[str, Merge] = {
    "health": Merge.MEAN,  # 1 - failure score while in rotation, 0 while out
    "latency": Merge.MEAN,  # seconds: the proxy's smoothed round trip (srtt)
    "requests": Merge.LAST,  # counter: attempts through the proxy
    "failures": Merge.LAST,  # counter: the proxy's own failures, all kinds
    "pool_health_sum": Merge.MEAN,  # the pool's sums, from which "others" are derived
    "pool_health_n": Merge.MEAN,
    "pool_latency_sum": Merge.MEAN,
    "pool_latency_n": Merge.MEAN,
    "pool_requests": Merge.LAST,
    "pool_failures": Merge.LAST,
    "failure_kind": Merge.LAST,  # counter: the pool's proxy failures, by kind
    "pool_state": Merge.MEAN,  # proxies active / ejected / retired
    "limit": Merge.LAST,  # a download slot's concurrency limit
    "inflight": Merge.MAX,  # requests transferring on a slot
    "inflight_total": Merge.MAX,
    "errors": Merge.LAST,  # counter: handled failures, by domain
    "errors_total": Merge.LAST,
    "gate": Merge.MAX,  # 1 while the scope's outage gate is open
    "retries": Merge.LAST,  # counter: retries, by blame
}


@dataclass(frozen=True, slots=True)
class SlotView:
    """A download slot as the adapter sees it at a sample."""

    limit: int
    inflight: int


@dataclass
class Failures:
    """What the adapter tells, per failure: by domain, and retries by reason and blame."""

    max_domains: int = 1000
    by_domain: dict[str, int] = field(default_factory=dict)
    total: int = 0
    retried: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, blame) -> retries
    given_up: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, blame) -> not retried

    def add(self, domain: str, kind: str, blame: str, retried: bool) -> None:
        by_domain = self.by_domain
        if domain not in by_domain and len(by_domain) >= self.max_domains:
            domain = OTHER
        by_domain[domain] = by_domain.get(domain, 0) + 1
        self.total += 1
        table = self.retried if retried else self.given_up
        table[kind, blame] = table.get((kind, blame), 0) + 1


class Sampler:
    def __init__(self, gateway: Gateway, *, max_points: int = 240, max_tracked: int = 50) -> None:
        self.gateway = gateway
        self.timeline = Timeline(METRICS, max_points)
        self.failures = Failures()
        self.max_tracked = max_tracked
        self.started: float | None = None
        self._proxies: dict[str, None] = {}  # keys of the proxies with series of their own
        self._slots: dict[str, None] = {}
        self._domains: dict[str, None] = {}
        self._gates: dict[str, None] = {}

    def failure(self, domain: str, kind: str, blame: str, retried: bool) -> None:
        self.failures.add(domain, kind, blame, retried)

    def sample(self, now: float, slots: Mapping[str, SlotView]) -> None:
        if self.started is None:
            self.started = now
        values: dict[Key, float] = {}
        self._sample_pool(now, values)
        self._sample_slots(slots, values)
        self._sample_domains(values)
        self.timeline.record(now - self.started, values)

    def finish(self, now: float, slots: Mapping[str, SlotView]) -> None:
        self.sample(now, slots)
        self.timeline.flush()

    def _sample_pool(self, now: float, values: dict[Key, float]) -> None:
        pool = self.gateway.pool
        self._track(self._proxies, ((r.proxy.key, r.requests) for r in pool if r.requests))
        tracked = self._proxies
        health_sum = latency_sum = 0.0
        latency_n = requests = failures = 0
        states = {"active": 0, "ejected": 0, "retired": 0}
        kinds: dict[str, int] = {}
        for record in pool:
            h = record.health
            h.usable(now)  # a finished cooldown shows as back in rotation
            states[h.state.value] += 1
            health = 1.0 - h.score if h.state is State.ACTIVE else 0.0
            health_sum += health
            own = sum(record.failures.values())
            requests += record.requests
            failures += own
            for kind, n in record.failures.items():
                kinds[kind] = kinds.get(kind, 0) + n
            srtt = h.latency.srtt if h.latency.samples else None
            if srtt is not None:
                latency_sum += srtt
                latency_n += 1
            key = record.proxy.key
            if key in tracked:
                values["health", key] = health
                values["requests", key] = record.requests
                values["failures", key] = own
                if srtt is not None:
                    values["latency", key] = srtt
        values["pool_health_sum", ""] = health_sum
        values["pool_health_n", ""] = len(pool)
        values["pool_latency_sum", ""] = latency_sum
        values["pool_latency_n", ""] = latency_n
        values["pool_requests", ""] = requests
        values["pool_failures", ""] = failures
        for kind, n in kinds.items():
            values["failure_kind", kind] = n
        for state, n in states.items():
            values["pool_state", state] = n

    def _sample_slots(self, slots: Mapping[str, SlotView], values: dict[Key, float]) -> None:
        # Every slot seen, busiest first: an idle slot's limit (cut, or in slow start) still matters.
        self._track(self._slots, ((key, view.inflight) for key, view in slots.items()))
        total = 0
        for key, view in slots.items():
            total += view.inflight
            if key in self._slots:
                values["limit", key] = view.limit
                values["inflight", key] = view.inflight
        values["inflight_total", ""] = total

    def _sample_domains(self, values: dict[Key, float]) -> None:
        failures = self.failures
        self._track(self._domains, failures.by_domain.items())
        for domain in self._domains:
            values["errors", domain] = failures.by_domain.get(domain, 0)
        values["errors_total", ""] = failures.total
        opened = self.gateway.gates.open_scopes()
        self._track(self._gates, ((scope, 1) for scope in opened))
        for scope in self._gates:
            values["gate", scope] = 0
        for scope in opened:
            if scope in self._gates:
                values["gate", scope] = 1
        retries: dict[str, int] = {}
        for (_, blame), n in failures.retried.items():
            retries[blame] = retries.get(blame, 0) + n
        for blame, n in retries.items():
            values["retries", blame] = n

    def _track(self, tracked: dict[str, None], candidates: Iterable[tuple[str, float]]) -> None:
        """Give series to the busiest new candidates while there is room (once given, kept)."""
        room = self.max_tracked - len(tracked)
        if room <= 0:
            return
        new = [(weight, key) for key, weight in candidates if key not in tracked]
        for _, key in sorted(new, key=lambda item: (-item[0], item[1]))[:room]:
            tracked[key] = None


def scope_label(scope: str) -> str:
    return "every proxy" if scope == PROVIDER else scope
