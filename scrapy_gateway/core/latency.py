"""What the paths have shown about time: latency estimates and the per-attempt timeout they imply.

Two estimates per path (a proxy, a (proxy, domain) pair, a domain), from the download itself
(Scrapy's `download_latency`: time to the response headers, not time queued in a slot):

- `peak`: a peak-sensitive EWMA (Finagle, linkerd, tower): it jumps at once to a slower sample,
  moves a quarter of the way to a faster one, and fades with time constant `PEAK_TAU` while
  nothing is measured, so a path that was slow once is re-tried now and then instead of being
  shunned for good. Selection reads it.
- `srtt` / `rttvar`: the smoothed round trip and its deviation of TCP's retransmission timer
  (RFC 6298). `timeout()` reads them: `srtt + 4 rttvar` covers the tail of what the path has
  shown, the way TCP sets its RTO.

`attempt_timeout` is the rule the adapter applies to every attempt in flight (and re-applies while
it waits, since the estimates move): a path may take as long as the domain has shown through any
path, or as long as this path itself has shown, whichever is longer, times a safety factor; never
less than a floor and never more than the user's own DOWNLOAD_TIMEOUT. A domain that is slow
through every path has shown it is slow, so it is never cut short, and nothing is cut before the
domain has shown anything at all. A domain that turns slow for everyone has not shown it yet: once
attempts through several paths have been cut since it last answered, each further path silent
doubles every attempt's limit there (as a path's own silences do), until it answers again.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

PEAK_TAU = 10.0  # seconds: a peak halves in about 7 s without a slower sample
_PEAK_ALPHA = 0.25  # how far one faster sample pulls the peak down
_SRTT_ALPHA = 0.125  # RFC 6298's alpha and beta
_RTTVAR_BETA = 0.25


class Latency:
    """Latency estimates of one path; seconds; `samples == 0` means never measured."""

    __slots__ = ("peak", "rttvar", "samples", "silences", "srtt", "stamp")

    def __init__(self) -> None:
        self.peak = 0.0
        self.stamp = 0.0  # monotonic time of the last peak update
        self.srtt = 0.0
        self.rttvar = 0.0
        self.samples = 0
        self.silences = 0  # attempts in a row that got no answer in time (reset by an answer)

    def observe(self, sample: float, now: float) -> None:
        """A completed download that took `sample` seconds to its headers."""
        if sample < 0.0:
            sample = 0.0
        if self.samples:
            self.rttvar += _RTTVAR_BETA * (abs(self.srtt - sample) - self.rttvar)
            self.srtt += _SRTT_ALPHA * (sample - self.srtt)
        else:
            self.srtt, self.rttvar = sample, sample / 2
        self.samples += 1
        self.silences = 0
        # _peak(), inlined: this runs four times per good response.
        peak, elapsed = self.peak, now - self.stamp
        if peak != 0.0 and elapsed > 0.0:
            peak *= math.exp(-elapsed / PEAK_TAU)
        self.peak = sample if sample >= peak else peak + _PEAK_ALPHA * (sample - peak)
        self.stamp = now

    def bound(self, at_least: float, now: float) -> None:
        """An attempt got no answer in `at_least` seconds (a timeout): only the peak learns it."""
        self.silences += 1
        self._peak(at_least, now)

    def _peak(self, sample: float, now: float) -> None:
        current = self.current(now)
        self.peak = sample if sample >= current else current + _PEAK_ALPHA * (sample - current)
        self.stamp = now

    def current(self, now: float) -> float:
        """The peak estimate, decayed for the time since it was last updated."""
        elapsed = now - self.stamp
        if self.peak == 0.0 or elapsed <= 0.0:
            return self.peak
        return self.peak * math.exp(-elapsed / PEAK_TAU)

    def escalations(self) -> int:
        """Doublings every attempt through this path takes beyond its own (a domain's: see
        DomainLatency)."""
        return 0

    def timeout(self) -> float | None:
        """RFC 6298's retransmission timeout for this path, or None before any sample."""
        return self.srtt + 4.0 * self.rttvar if self.samples else None


@dataclass(frozen=True, slots=True)
class TimeoutRule:
    factor: float = 2.0  # safety margin over what the paths have shown (0: no per-attempt timeout)
    # seconds: about Linux TCP's 200 ms minimum RTO plus the deadline watch's tick. A floor of a
    # whole second (RFC 6298's) let one silent or slow first pick hold a place of a 20 ms domain
    # for fifty round trips.
    floor: float = 0.25
    # Each per-attempt timeout a request has already met doubles its next one, so a request that
    # keeps being cut reaches the user's full timeout within a few attempts. A path's own silences
    # in a row double it too, up to `path_escalations` times: a proxy too slow for the first limit
    # is measured on a later try instead of being taken for a silent one for good.
    escalation: float = 2.0
    path_escalations: int = 3

    @property
    def enabled(self) -> bool:
        return self.factor > 0.0

    def attempt_timeout(
        self, domain: Latency | None, path: Latency | None, *, cuts: int, user_timeout: float
    ) -> float | None:
        """Seconds this attempt may take, or None when only the user's timeout applies.

        `path`: the estimates of the (proxy, domain) pair, or of the proxy when the pair has none.
        """
        if not self.enabled or domain is None:
            return None
        shown = domain.timeout()
        if shown is None:
            return None  # the domain has shown nothing yet: nothing to compare a path with
        cuts = max(cuts, min(domain.escalations(), self.path_escalations))
        if path is not None:
            if (own := path.timeout()) is not None:
                shown = max(shown, own)  # a slow path that answers is slow, not silent
            cuts = max(cuts, min(path.silences, self.path_escalations))
        limit = max(self.floor, self.factor * shown) * self.escalation ** min(cuts, 30)
        return limit if limit < user_timeout else None


_FAST_PATH_SAMPLES = 3  # answers a path must have given before it can speak for the domain


class DomainLatency(Latency):
    """A domain's estimates over every path, and the timeout its fastest path has shown.

    Slow proxies that answered first must not teach the domain that it is slow: the domain takes
    as long as its fastest known path takes (a slow path keeps its own, longer, estimate).
    """

    __slots__ = ("fast_path", "fast_srtt", "fast_timeout", "silent")

    def __init__(self) -> None:
        super().__init__()
        self.fast_path: str | None = None
        self.fast_timeout = 0.0
        self.fast_srtt = 0.0
        self.silent: set[str] | None = None  # paths cut here since the domain last answered

    def observe(self, sample: float, now: float) -> None:
        super().observe(sample, now)
        self.silent = None

    def silent_through(self, path: str, sent_at: float) -> int:
        """An attempt through `path`, sent at `sent_at`, was cut: how many paths have been since
        the last answer. A cut of an attempt sent before that answer is no silence of the domain
        (the deadline watch cuts every attempt past its limit in one tick)."""
        if self.samples and self.stamp > sent_at:
            return len(self.silent) if self.silent else 0
        silent = self.silent
        if silent is None:
            silent = self.silent = set()
        silent.add(path)
        return len(silent)

    def escalations(self) -> int:
        """Doublings every attempt here takes: one per silent path past the first (one silent
        path is that path's own problem)."""
        return len(self.silent) - 1 if self.silent else 0

    def path_observed(self, key: str, path: Latency) -> None:
        """`path` (a proxy's estimates on this domain) has just learned a sample."""
        shown = path.timeout()
        if shown is None or path.samples < _FAST_PATH_SAMPLES:
            return
        # The fastest path's own estimate is followed both ways; another path takes over as soon
        # as it shows a shorter one.
        if key == self.fast_path or self.fast_path is None or shown < self.fast_timeout:
            self.fast_path, self.fast_timeout, self.fast_srtt = key, shown, path.srtt

    def typical(self) -> float:
        """A page's usual latency here: its fastest path's, when one has shown it."""
        return self.srtt if self.fast_path is None else min(self.srtt, self.fast_srtt)

    def timeout(self) -> float | None:
        shown = super().timeout()
        if shown is None or self.fast_path is None:
            return shown
        return min(shown, self.fast_timeout)


class DomainLatencies:
    """Per-domain estimates, bounded (least recently used first out) for broad crawls."""

    def __init__(self, max_domains: int = 10_000) -> None:
        self._table: OrderedDict[str, DomainLatency] = OrderedDict()
        self._max = max_domains

    def get(self, domain: str) -> DomainLatency | None:
        return self._table.get(domain)

    def observe(self, domain: str, sample: float, now: float) -> DomainLatency:
        entry = self._table.get(domain)
        if entry is None:
            entry = self._table[domain] = DomainLatency()
            if len(self._table) > self._max:
                self._table.popitem(last=False)
        else:
            self._table.move_to_end(domain)
        entry.observe(sample, now)
        return entry

    def __len__(self) -> int:
        return len(self._table)
