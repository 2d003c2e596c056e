"""How long a retry waits: exponential backoff with full jitter, never shorter than Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float  # seconds; the first retry waits uniform(0, base)
    cap: float  # the exponential part never exceeds this
    retry_after_jitter: float = 0.1  # spread retries that share a Retry-After over +10 %

    def delay(
        self, retry_number: int, rng: random.Random, retry_after: float | None = None, *, scale: float = 1.0
    ) -> float:
        """Seconds before retry number `retry_number` (1 for the first retry).

        Full jitter: uniform(0, scale * min(cap, base * 2**(n-1))). A Retry-After is a floor: the retry goes
        at uniform(t, t * (1 + jitter)) so that requests told the same time do not arrive together.
        """
        exponent = min(max(retry_number - 1, 0), 62)  # beyond 2**62 the cap has long won
        ceiling = min(self.cap, self.base * (2**exponent))
        wait = rng.uniform(0.0, ceiling * scale)
        if retry_after is not None:
            wait = max(wait, rng.uniform(retry_after, retry_after * (1.0 + self.retry_after_jitter)))
        return wait
