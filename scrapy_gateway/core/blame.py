"""Blame from history: settle an UNKNOWN failure with what the pool has seen lately.

A failure that does not say whose it is (a plain 502 from a plain HTTP proxy, a timeout, a dropped
reply) is judged against the last `window` seconds:
- PROXY  when this proxy has also failed on another domain, both domains work through other
  proxies, and this one has succeeded nowhere since;
- ORIGIN when the domain has failed through three proxies (two in a pool of two) since it last
  worked through any (an outage), or, for a failure that carries a status, when the failing path
  has worked on it lately and reliably (its failure rate there, whoever was blamed, is low): the
  path is fine, so the origin is shedding load (an overload); or when three paths that all work
  on the domain have failed on it within two seconds (a deep overload, where no path is reliable);
- PAIR   when the domain works through other proxies but has not lately worked through this one:
  the signature of a proxy banned on one domain, which keeps serving the others;
- UNKNOWN otherwise: the caller charges it to the (proxy, domain) pair's score only.

Before those rules, and for failures the status blamed on the origin too: a path whose recent
failures on a domain stand out from the other paths' there at the same time (an outlier, as in
Envoy's success-rate outlier detection, tested per path since the verdict is needed at once) is
the path's fault: PROXY when it has also failed on another domain since it last worked, else PAIR.
Its failures then are not the origin's, whatever the status said: a proxy that went down, a flaky
exit, an address the site rate-limits (nginx's limit_req answers 503). The origin verdicts of its
run, and of its failures just before it, are counted as overturned (`Judge.overturned`), and
its next failures are its own until it works again (the requests it still carried when it was
taken out fail in a burst, too fast for the others to show anything in between). Within the window
after, a repeat offender's first failure counts as a run of two (a flapping proxy going down again).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from scrapy_gateway.core.faults import Blame

_RECENT = 16  # failures remembered per domain and per proxy
# A path is reliable while its failure rate is below RELIABLE: after a failure it takes about
# seven successes in a row (0.1 * 0.9**7 < 0.05), which a proxy failing half the time rarely has.
RELIABLE = 0.05
_RATE_ALPHA = 0.1
_UNPROVEN = 2 * RELIABLE
# While the domain's limit is back where the origin last overloaded, a failure through a path that
# mostly works is the probe hurting again: only a path this flaky is suspected instead.
_PROBING_RELIABLE = 0.25
_SHARED_WINDOW = 2.0  # seconds: failures this close together through working paths are one event
_SHARED_PATHS = 3  # working paths that must share it
_SHARED_SHARE = 0.5  # and the share of the paths that worked in that window they must be
# Outliers: a path's last PATH_OUTCOMES outcomes on a domain, and the domain's last DOMAIN_OUTCOMES
# through any path. A path stands out when its failures (its current run, or all of its recent
# ones) are less likely than OUTLIER_P at the failure rate the other paths show over the domain's
# last outcomes (smoothed: (failures + 1) / (outcomes + 2); paths failing twice in a row now left
# out), and the others keep working meanwhile: OUTLIER_SUCCESSES successes through OUTLIER_PATHS
# other paths since the run began (or since its previous failure). At P = 0.001 a run of 2 stands
# out against 30 clean answers elsewhere, a run of 3 against a 10 % failure rate, half of 10
# failing against 5 %; an overload failing 30 % of all requests needs a run of 6 on one path.
PATH_OUTCOMES = 10
DOMAIN_OUTCOMES = 48
OUTLIER_P = 0.001
OUTLIER_SUCCESSES = 3
OUTLIER_PATHS = 2  # distinct other paths those successes came through (so a pool of 2 has no outliers)
# A path this many failures in a row into its run is left out of the others' yardstick.
_FAILING_RUN = 2
_PATHS_TRACKED = _RECENT * 4  # per domain, the paths with the most recent outcomes (as `worked`)
# What a path's failure on a domain was judged, as its outcomes remember it.
_OTHER, _ORIGIN, _OUTLIER = 0, 1, 2


@dataclass(slots=True)
class _Trail:
    failures: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=_RECENT))
    last_success: float = float("-inf")
    # For domains: the proxies that recently worked on it, most recent last.
    worked: OrderedDict[str, float] = field(default_factory=OrderedDict)
    # For domains: each path's failure rate (EWMA over all its outcomes, whoever was blamed).
    rates: dict[str, float] = field(default_factory=dict)
    # For domains: the last outcomes (time, when its request was sent, path, ok), and each path's
    # own (time, ok, what its failure was judged: _OTHER, _ORIGIN, _OUTLIER, when it was sent), for
    # the outlier test. Lists, trimmed by hand: most domains see few outcomes.
    outcomes: list[tuple[float, float, str, bool]] = field(default_factory=list)
    paths: OrderedDict[str, list[tuple[float, bool, int, float]]] = field(default_factory=OrderedDict)
    # For domains: when each path was last found an outlier there (a repeat offender's first
    # failure is its own), for as many paths as `paths`.
    flagged: OrderedDict[str, float] | None = None  # made on the first (most trails never need it)
    # For domains: when each path's last failed request there was sent (for as many paths as
    # `paths`), which outlives the domain's last outcomes on a busy domain.
    failed_sent: dict[str, float] | None = None  # made on the first failure (as `flagged`)


class Judge:
    def __init__(self, window: float = 30.0, max_domains: int = 10_000, max_proxies: int = 200_000) -> None:
        self.window = window
        self._domains: OrderedDict[str, _Trail] = OrderedDict()
        self._proxies: OrderedDict[str, _Trail] = OrderedDict()
        self._max_domains = max_domains
        self._max_proxies = max_proxies
        # Origin verdicts that the last failure() showed were the path's (its run turned out an
        # outlier), and when the first of that run's failures came.
        self.overturned = 0
        self.overturned_since = 0.0

    @staticmethod
    def _trail(table: OrderedDict[str, _Trail], key: str, cap: int) -> _Trail:
        trail = table.get(key)
        if trail is None:
            trail = table[key] = _Trail()
            if len(table) > cap:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        return trail

    def success(self, proxy: str, domain: str, now: float, sent: float | None = None) -> None:
        """`sent`: when the request left (default: now), for the outlier test's "at the same time"."""
        dom = self._trail(self._domains, domain, self._max_domains)
        dom.last_success = now
        worked = dom.worked
        worked[proxy] = now
        worked.move_to_end(proxy)
        if len(worked) > _RECENT * 4:
            gone, _ = worked.popitem(last=False)
            dom.rates.pop(gone, None)
        # A new path starts unproven: it must first show several successes in a row.
        dom.rates[proxy] = dom.rates.get(proxy, _UNPROVEN) * (1.0 - _RATE_ALPHA)
        _remember(dom, proxy, now, now if sent is None else sent, True, _OTHER)
        self._trail(self._proxies, proxy, self._max_proxies).last_success = now

    def worked(self, proxy: str, domain: str, now: float) -> bool:
        """The path has worked on the domain within the window."""
        trail = self._domains.get(domain)
        return trail is not None and _worked(trail, proxy, now - self.window)

    def answering(self, domain: str, now: float, within: float = 1.0) -> bool:
        """The domain sent a good response in the last `within` seconds."""
        trail = self._domains.get(domain)
        return trail is not None and trail.last_success >= now - within

    def failure(
        self,
        proxy: str,
        domain: str,
        now: float,
        blame: Blame,
        *,
        sent: float | None = None,
        pool_size: int = 3,
        transport: bool = False,
        path_only: bool = False,
        probing: bool = False,
        growing: bool = False,
    ) -> Blame:
        """Record a failure and return its blame, settled from history when it was UNKNOWN.

        `sent`: when its request left (default: now). `pool_size`: how many proxies could have
        carried the request (an outage is seen through min(3, pool_size) of them). `transport`: no
        status came back (a drop, a timeout, a failed tunnel): a dying proxy drops connections too,
        so it is no evidence of an overload. `path_only`: the failure is evidence about the path
        alone (a per-attempt timeout, which only happens because the domain answers faster
        elsewhere): never the origin's.
        `probing`: the domain's concurrency limit is at or above where the origin last overloaded.
        `growing`: the domain's limit is in slow start, past its first step.
        """
        dom = self._trail(self._domains, domain, self._max_domains)
        prx = self._trail(self._proxies, proxy, self._max_proxies)
        self.overturned = 0
        outlier = False
        since = now - self.window
        sent = now if sent is None else sent
        if blame is Blame.UNKNOWN and path_only:
            if self._fails_everywhere(proxy, domain, dom, prx, since):
                blame = Blame.PROXY
            else:
                blame = self._pair_or_unknown(proxy, dom, since)
        elif (
            blame in (Blame.UNKNOWN, Blame.ORIGIN) and (counted := self._stands_out(proxy, dom, now, sent)) is not None
        ):
            blame = Blame.PROXY if self._failed_elsewhere(proxy, domain, prx, since) else Blame.PAIR
            self.overturned, self.overturned_since = _overturn(dom, proxy, counted)
            outlier = True
            flagged = dom.flagged = dom.flagged if dom.flagged is not None else OrderedDict()
            flagged[proxy] = now
            flagged.move_to_end(proxy)
            if len(flagged) > _PATHS_TRACKED:
                flagged.popitem(last=False)
        elif blame is Blame.UNKNOWN:
            paths = min(3, max(pool_size, 2))
            blame = self._settle(proxy, domain, dom, prx, now, paths, transport, probing, growing)
        self._record(dom, prx, proxy, domain, now, sent, blame, path_only, outlier=outlier)
        return blame

    def record(
        self, proxy: str, domain: str, now: float, blame: Blame, *, sent: float | None = None, path_only: bool = False
    ) -> None:
        """A failure already judged (by another process of the fleet): remember it as it was judged."""
        dom = self._trail(self._domains, domain, self._max_domains)
        prx = self._trail(self._proxies, proxy, self._max_proxies)
        self._record(dom, prx, proxy, domain, now, now if sent is None else sent, blame, path_only, mine=False)

    @staticmethod
    def _record(
        dom: _Trail,
        prx: _Trail,
        proxy: str,
        domain: str,
        now: float,
        sent: float,
        blame: Blame,
        path_only: bool,
        mine: bool = True,
        outlier: bool = False,
    ) -> None:
        """`mine`: judged here (an origin verdict of another process is its own to overturn);
        `outlier`: judged the path's by the outlier test."""
        if proxy in dom.worked:  # only paths that have worked carry a rate (bounded with them)
            rate = dom.rates.get(proxy, 0.0)
            dom.rates[proxy] = rate + _RATE_ALPHA * (1.0 - rate)
        if blame is not Blame.PROXY or outlier:
            mark = _OUTLIER if outlier else _ORIGIN if mine and blame is Blame.ORIGIN else _OTHER
            _remember(dom, proxy, now, sent, False, mark)
        # Proxy-wide faults are not evidence about the domain, and vice versa.
        if blame is not Blame.PROXY and not path_only:
            dom.failures.append((now, proxy))
        if blame is not Blame.ORIGIN:
            prx.failures.append((now, domain))

    def _settle(
        self,
        proxy: str,
        domain: str,
        dom: _Trail,
        prx: _Trail,
        now: float,
        outage_paths: int,
        transport: bool,
        probing: bool = False,
        growing: bool = False,
    ) -> Blame:
        since = now - self.window
        if self._fails_everywhere(proxy, domain, dom, prx, since):
            return Blame.PROXY
        last: dict[str, float] = {}  # other proxies that failed on this domain lately: when, last
        for t, p in dom.failures:
            if t >= since and p != proxy:
                last[p] = t
        # An outage: failing through several proxies since it last worked. While the domain keeps
        # answering, two of them at least must be paths that worked on it: proxies that never did,
        # failing fast between its successes, are the ban signature (a start-up burst through bad
        # proxies), while an overload also fails the paths that work.
        failing = [p for p, t in last.items() if t > dom.last_success] + [proxy]
        if len(failing) >= outage_paths:
            if dom.last_success < now - _SHARED_WINDOW:
                return Blame.ORIGIN
            if sum(1 for p in failing if _worked(dom, p, since)) >= min(2, outage_paths - 1):
                return Blame.ORIGIN
        # Overload: a path that works here, and reliably (a flaky proxy's failures have raised its
        # rate), failing now and then: the path is fine, so the origin is shedding load. While the
        # limit probes (where it last hurt, or doubling in slow start), a path that mostly works
        # is enough: slow start's overshoot fails at once whatever the path, and a path that has
        # worked once or twice is already one that a ban would not let through.
        if not transport and _worked(dom, proxy, since):
            if dom.rates.get(proxy, 0.0) < (_PROBING_RELIABLE if probing or growing else RELIABLE):
                return Blame.ORIGIN
        elif not transport and probing and _works_without(dom, proxy, since):
            # The ban signature, but at the limit where the origin last overloaded: the probe is
            # the likelier cause. A real ban shows again on this path's next try.
            return Blame.ORIGIN
        # Overload, shared: paths that all work here fail at about the same time. No path is
        # reliable in a deep overload (each fails often), but the failure is common to most of
        # them; a few flaky proxies failing while the others keep working is not.
        if not transport and _worked(dom, proxy, since):
            recent = now - _SHARED_WINDOW
            shared = 1 + sum(1 for p, t in last.items() if t >= recent and _worked(dom, p, since))
            if shared >= _SHARED_PATHS and shared >= _SHARED_SHARE * _working(dom, recent):
                return Blame.ORIGIN
        return self._pair_or_unknown(proxy, dom, since)

    def _fails_everywhere(self, proxy: str, domain: str, dom: _Trail, prx: _Trail, since: float) -> bool:
        """This proxy failed lately on another domain that works through other proxies, as does
        this one, and it has succeeded nowhere since."""
        return _works_without(dom, proxy, since) and self._failed_elsewhere(proxy, domain, prx, since)

    def _stands_out(self, proxy: str, dom: _Trail, now: float, sent: float) -> float | None:
        """This failure (of a request sent at `sent`) makes the path an outlier on the domain (see
        OUTLIER_P), or its current run of failures already did: since when its failures are its own
        (None: it does not stand out). The others' successes count only for requests sent no later
        than this one: at the end of an outage, a path's requests sent during it still fail while
        the others' sent after it succeed, which says the origin is back, not that the path is bad."""
        floor = now - self.window
        mine = [o for o in dom.paths.get(proxy, ()) if o[0] >= floor] + [(now, False, _OTHER, sent)]
        run = _run(mine)
        if any(mark == _OUTLIER for _t, _ok, mark, _sent in mine[-run:]):
            return mine[-run][0]
        # The yardstick: the other paths over the domain's last outcomes (DOMAIN_OUTCOMES, within
        # the window), a steadier rate than over the run's own few instants.
        good, bad, _paths = _others(dom, proxy, floor, math.inf)
        rate = (bad + 1) / (good + bad + 2)
        # A repeat offender, found an outlier here lately and back: its first failure counts as a
        # run of two (the one that stood out, and this), against the others working meanwhile
        # (since it last worked: an outage's first failure through it finds them just failing).
        # Otherwise the overload rule takes it, and each time a flapper goes down costs a cut.
        flagged = dom.flagged.get(proxy, -math.inf) if dom.flagged is not None else -math.inf
        if run == 1 and len(mine) > 1 and flagged >= floor and _tail(2, 2, rate) < OUTLIER_P:
            good_since, _bad, paths_since = _others(dom, proxy, mine[-2][0], sent)
            if good_since >= OUTLIER_SUCCESSES and paths_since >= OUTLIER_PATHS:
                # Its own too: its failures just before, with a late success in between (a
                # request sent before it went down again, answered after its first failures).
                return min(t for t, ok, _mark, _left in mine if not ok and t >= now - _SHARED_WINDOW)
        failed = [(t, left) for t, ok, _mark, left in mine if not ok]
        if len(failed) < 2:
            return None
        # Its current run, and all its recent outcomes; each only while the others keep working
        # meanwhile ("at the same time": an outage's first failures come through one path first).
        # Either way, its failures were its own: those of its run, and the ones just before (within
        # _SHARED_WINDOW: a request sent before it went bad may answer well after its first
        # failures); not older ones, which may have been a real overload's. "Meanwhile" is the
        # others' requests sent no later than this one (a path whose failures take seconds is still
        # compared) that were out while the first of the failures was: sent after it left, or
        # answered after it came back. Not those sent before and answered before: when failures
        # take a second (nginx timing a stalled origin out), the requests sent just before the
        # stall keep landing through the others while the path it reaches first fails in a row.
        start = mine[-run][0] - _SHARED_WINDOW
        own = min(t for t, _left in failed if t >= start)
        first = mine[-run]
        for bad, seen, (back, left) in ((run, run, (first[0], first[3])), (len(failed), len(mine), failed[-2])):
            if bad < 2 or _tail(bad, seen, rate) >= OUTLIER_P:
                continue
            good_since, _bad, paths_since = _others(dom, proxy, left, sent, back)
            if good_since >= OUTLIER_SUCCESSES and paths_since >= OUTLIER_PATHS:
                return own
        return None

    def _failed_elsewhere(self, proxy: str, domain: str, prx: _Trail, since: float) -> bool:
        """The proxy has failed since `since`, and since it last worked anywhere, on another domain
        that works through other proxies (a domain failing for everyone says nothing of it)."""
        for t, other in prx.failures:
            if t < since or other == domain or prx.last_success >= t:
                continue
            trail = self._domains.get(other)
            if trail is not None and _works_without(trail, proxy, since):
                return True
        return False

    @staticmethod
    def _pair_or_unknown(proxy: str, dom: _Trail, since: float) -> Blame:
        """The ban signature: the domain works through other proxies, never lately through this one."""
        if not _worked(dom, proxy, since) and _works_without(dom, proxy, since):
            return Blame.PAIR
        return Blame.UNKNOWN


def _worked(dom: _Trail, proxy: str, since: float) -> bool:
    return dom.worked.get(proxy, float("-inf")) >= since


def _working(dom: _Trail, since: float) -> int:
    """How many paths have worked on the domain since `since` (its `worked` is oldest first)."""
    count = 0
    for t in reversed(dom.worked.values()):
        if t < since:
            break
        count += 1
    return count


def _works_without(dom: _Trail, proxy: str, since: float) -> bool:
    """The domain has worked lately through some proxy other than this one."""
    return any(t >= since for p, t in reversed(dom.worked.items()) if p != proxy)


def _remember(dom: _Trail, proxy: str, now: float, sent: float, ok: bool, mark: int) -> None:
    """One outcome on the domain, for the outlier test (bounded: see the module constants)."""
    dom.outcomes.append((now, sent, proxy, ok))
    if len(dom.outcomes) > DOMAIN_OUTCOMES:
        del dom.outcomes[0]
    mine = dom.paths.get(proxy)
    if mine is None:
        mine = dom.paths[proxy] = []
        if len(dom.paths) > _PATHS_TRACKED:
            gone, _ = dom.paths.popitem(last=False)
            if dom.failed_sent is not None:
                dom.failed_sent.pop(gone, None)
    else:
        dom.paths.move_to_end(proxy)
    if not ok:
        failed = dom.failed_sent = dom.failed_sent if dom.failed_sent is not None else {}
        failed[proxy] = max(sent, failed.get(proxy, sent))
    mine.append((now, ok, mark, sent))
    if len(mine) > PATH_OUTCOMES:
        del mine[0]


def _others(dom: _Trail, proxy: str, since: float, sent_by: float, back: float = -math.inf) -> tuple[int, int, int]:
    """Outcomes on the domain since `since` of requests sent by `sent_by` (and, when sent before
    `since`, answered from `back` on), through the other paths, but those failing again and
    again now (their last two outcomes failures): (successes, failures, paths that succeeded).
    When most of a pool is banned, the rest shows what the site does; in an overload, a path's
    one failure in a row is common and keeps its outcomes in the yardstick. When the domain's
    last outcomes do not reach back to `since` (a path whose failures take seconds, on a busy
    domain), those sent by `sent_by` are forgotten: every outcome kept counts, as it arrived;
    unless at least half of the other paths there (those not failing again and again) failed a
    request sent since then too. That is a storm whose failures take seconds (nginx's 504s):
    the others' later successes say it is over, not that this path is bad. (One path's failure
    now and then, on a busy domain, is not.)"""
    ok = bad = 0
    paths: set[str] = set()
    failing = {path for path, outcomes in dom.paths.items() if _run(outcomes) >= _FAILING_RUN}
    for t, sent, path, good in reversed(dom.outcomes):
        if t < since:
            break
        if path == proxy or path in failing or sent > sent_by or (sent < since and t < back):
            continue
        if good:
            ok += 1
            paths.add(path)
        else:
            bad += 1
    else:
        if sent_by != math.inf and len(dom.outcomes) >= DOMAIN_OUTCOMES and not _shared(dom, proxy, failing, since):
            return _others(dom, proxy, since, math.inf, back)
    return ok, bad, len(paths)


def _shared(dom: _Trail, proxy: str, failing: set[str], since: float) -> bool:
    """At least half of the other paths of the domain's last outcomes (but those in `failing`)
    failed a request sent since `since`."""
    around = {path for _t, _sent, path, _ok in dom.outcomes if path != proxy and path not in failing}
    failed = dom.failed_sent or {}
    shared = sum(1 for path in around if failed.get(path, -math.inf) >= since)
    return shared > 0 and 2 * shared >= len(around)


def _run(outcomes: list[tuple[float, bool, int, float]]) -> int:
    """The failures in a row at the end of a path's outcomes."""
    run = 0
    for _t, ok, _mark, _sent in reversed(outcomes):
        if ok:
            break
        run += 1
    return run


def _overturn(dom: _Trail, proxy: str, since: float) -> tuple[int, float]:
    """The path's failures since `since` that were judged the origin's: now known to be its own.
    Each is counted once. (How many, when the earliest came.)"""
    mine = dom.paths.get(proxy, [])
    count, first = 0, math.inf
    for i in range(len(mine) - 1, -1, -1):
        t, ok, mark, left = mine[i]
        if t < since:
            break
        if not ok and mark == _ORIGIN:
            mine[i] = (t, ok, _OTHER, left)
            count, first = count + 1, t
    return count, first


def _tail(failed: int, seen: int, rate: float) -> float:
    """P(at least `failed` failures in `seen` tries at `rate` each): binomial."""
    return sum(math.comb(seen, i) * rate**i * (1.0 - rate) ** (seen - i) for i in range(failed, seen + 1))
