"""Per-domain retry budget: retries may add at most `ratio` of a domain's first attempts, plus a
small floor of `min_per_second`, with a burst of `burst`.

It is a token bucket that may go into debt: a retry over budget is not dropped (the page may
still be fetchable once the outage ends) but paced, waiting until its token would exist. Against
an origin that is down this caps the extra load at about (1 + ratio) times the normal traffic plus
the floor, instead of (1 + retries) times.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RetryBudget:
    def __init__(self, ratio: float, min_per_second: float, burst: float, max_domains: int = 10_000) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.burst = burst
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._max_domains = max_domains

    def _bucket(self, domain: str, now: float) -> _Bucket:
        bucket = self._buckets.get(domain)
        if bucket is None:
            bucket = self._buckets[domain] = _Bucket(self.burst, now)
            if len(self._buckets) > self._max_domains:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(domain)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.min_per_second)
            bucket.updated = max(bucket.updated, now)
        return bucket

    def deposit(self, domain: str, now: float, count: int = 1) -> None:
        """`count` first attempts were sent to `domain`."""
        bucket = self._bucket(domain, now)
        bucket.tokens = min(self.burst, bucket.tokens + self.ratio * count)

    def withdraw(self, domain: str, now: float) -> float:
        """Take a token for one retry; return how long that retry must wait for it (0 if none)."""
        bucket = self._bucket(domain, now)
        bucket.tokens -= 1.0
        if bucket.tokens >= 0.0:
            return 0.0
        if self.min_per_second <= 0:
            return float("inf")
        return -bucket.tokens / self.min_per_second
