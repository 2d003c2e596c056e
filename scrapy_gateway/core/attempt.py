"""One request's retry state, as a value: what the core takes and returns for each attempt.

Like urllib3's `Retry`, an `Attempt` is frozen and `increment()` returns the next one, so Scrapy's
shallow copies of `meta` (a retry, a redirect) can never share a change. The adapter keeps it
under a single meta key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Attempt:
    max_retries: int  # retries for failures that are not a proxy's own (origin, unknown)
    max_proxy_retries: int  # further retries for failures blamed on the proxy
    retries: int = 0
    proxy_retries: int = 0
    proxy: str | None = None  # the pool proxy (Proxy.key) this attempt went through; None: unscored
    pinned: bool = False  # the request must use this proxy (gateway_proxy meta): no rotation
    tried: tuple[str, ...] = ()  # pool proxies earlier attempts failed through
    sent_at: float | None = None  # monotonic time this attempt left; None: not sent yet
    not_before: float | None = None  # wall-clock (epoch) time before which it must not go
    persisted: bool = False  # saved to a JOBDIR queue while waiting: comes back via the scheduler

    @property
    def rotating(self) -> bool:
        """Whether a retry may take another proxy of the pool."""
        return self.proxy is not None and not self.pinned

    def sending(self, proxy: str | None, now: float, *, pinned: bool = False) -> Attempt:
        return replace(self, proxy=proxy, pinned=pinned, sent_at=now, not_before=None, persisted=False)

    def can_retry(self, *, proxy_side: bool) -> bool:
        return self.retries < self.max_retries or (proxy_side and self.proxy_retries < self.max_proxy_retries)

    def uses_proxy_allowance(self, *, proxy_side: bool) -> bool:
        return proxy_side and self.proxy_retries < self.max_proxy_retries

    def increment(self, *, proxy_side: bool, not_before: float | None) -> Attempt:
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
            not_before=not_before,
            persisted=False,
        )
