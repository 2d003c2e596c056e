"""One request's retry state, as a value: what the core takes and returns for each attempt.

Like urllib3's `Retry`, an `Attempt` is frozen and `increment()` returns the next one, so Scrapy's
shallow copies of `meta` (a retry, a redirect, a spider's `replace()`) can never share a change.
The adapter keeps it under a single meta key. Besides the retry counts it carries three facts the
adapter needs on every copy, also after a JOBDIR or scrapy-redis queue has pickled it: when a
waiting retry may go (wall-clock, since it must survive a restart), whether it has been through
the scheduler (so it can be parked there again), and whether the gateway asked Scrapy for
truncated bodies on its behalf.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Attempt:
    max_retries: int  # retries for failures that are not a proxy's own (origin, unknown)
    max_proxy_retries: int  # further retries for failures blamed on the proxy
    retries: int = 0
    proxy_retries: int = 0
    sends: int = 0  # attempts sent so far: 0 until the first one leaves
    proxy: str | None = None  # the pool proxy (Proxy.key) this attempt went through; None: unscored
    pinned: bool = False  # the request must use this proxy (gateway_proxy meta): no rotation
    tried: tuple[str, ...] = ()  # pool proxies earlier attempts failed through
    sent_at: float | None = None  # monotonic time this attempt left; None: not sent yet
    cuts: int = 0  # earlier attempts cut short by the per-attempt timeout (each doubles the next)
    probe: str | None = None  # the outage gate (scope) this attempt probes, if any
    held: str | None = None  # the outage gate (scope) it waits on, if any
    final: bool = False  # its gate stalled: one last try, past any gate, and no retry after it
    # Adapter bookkeeping that must travel with every copy (see the module docstring):
    not_before: float | None = None  # wall-clock (epoch) time before which it must not go
    scheduled: bool = False  # it has passed the scheduler: handed back, it can wait there again
    asked_partial: bool = False  # the gateway set download_fail_on_dataloss on it
    told_to_wait: bool = False  # its wait is the origin's own Retry-After: never cut short

    @property
    def rotating(self) -> bool:
        """Whether a retry may take another proxy of the pool."""
        return self.proxy is not None and not self.pinned

    def sending(
        self,
        proxy: str | None,
        now: float,
        *,
        pinned: bool = False,
        asked_partial: bool = False,
        probe: str | None = None,
    ) -> Attempt:
        # Built field by field rather than with dataclasses.replace(): this runs for every attempt
        # of the crawl, and replace() costs about twice as much (benchmarks/overhead.py).
        return Attempt(
            self.max_retries,
            self.max_proxy_retries,
            self.retries,
            self.proxy_retries,
            self.sends + 1,
            proxy,
            pinned,
            self.tried,
            now,
            self.cuts,
            probe,
            None,  # held
            self.final,
            None,  # not_before
            self.scheduled,
            asked_partial,
            self.told_to_wait,
        )

    @property
    def retries_allowed(self) -> bool:
        """Whether the user allows this request any retry at all."""
        return self.max_retries > 0 or self.max_proxy_retries > 0

    def waiting_on(self, scope: str) -> Attempt:
        """The next attempt of a request held by an outage gate: the outage costs it no retry."""
        return replace(self, proxy=None, sent_at=None, probe=None, held=scope)

    def can_retry(self, *, proxy_side: bool) -> bool:
        if self.final:
            return False
        return self.retries < self.max_retries or (proxy_side and self.proxy_retries < self.max_proxy_retries)

    def uses_proxy_allowance(self, *, proxy_side: bool) -> bool:
        return proxy_side and self.proxy_retries < self.max_proxy_retries

    def increment(self, *, proxy_side: bool, cut: bool = False) -> Attempt:
        """The next attempt after a retry decision; the proxy allowance pays for proxy-side faults."""
        tried = self.tried if self.proxy is None or self.proxy in self.tried else (*self.tried, self.proxy)
        paid_by_proxy = self.uses_proxy_allowance(proxy_side=proxy_side)
        return replace(
            self,
            retries=self.retries + (0 if paid_by_proxy else 1),
            proxy_retries=self.proxy_retries + (1 if paid_by_proxy else 0),
            proxy=None,  # the next attempt is routed (or re-pinned) afresh
            tried=tried,
            sent_at=None,
            cuts=self.cuts + (1 if cut else 0),
        )
