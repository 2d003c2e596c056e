"""Outage gates: when a domain fails through every path, or everything fails through every proxy,
hold the requests and probe, instead of retrying into the outage.

Two scopes share one mechanism: a gate per domain (the origin, or its own gateway, is down) and one
for the whole pool, `PROVIDER` (the proxy provider or the host's own network is down: every domain
fails through every proxy at once). A gate opens when, since the scope last worked:
- at least `open_after` failures came back, through at least `paths_needed` distinct paths (three
  proxies for a domain, as the judge's outage rule; half the pool for the provider), and
- nothing has worked for a quiet time: `quiet_round_trips` of the scope's own round-trip timeout
  (RFC 6298's, from latency.py), within `quiet_min`..`quiet_max`, or `quiet` before anything is
  measured. An origin shedding load keeps answering in between, so it is an overload. Before
  anything at all is measured (a crawl's first domain), a domain waits only `quiet_min`: its
  first requests would otherwise spend their retries before the gate opens, and a gate opened by
  mistake closes at the first success. The provider's gate, which suspends ejections, always
  waits the full time (from the first outcome it saw), so that a start-up burst through a few bad
  proxies is no outage.

Between the evidence and the quiet time (enough failures through enough paths, but something
worked too recently) the gate is *pending*: new requests wait for it, until the quiet time is over
(the next failure then opens the gate) or a success clears it. Without that, every failure of an
origin that fails fast makes room for the next request, and a few hundred attempts go out in the
quarter of a second the quiet time takes.

While a gate is open, requests of its scope wait (the adapter parks them, holding no concurrency)
and one probe at a time goes out. A probe that fails makes the next wait `probe_share` of how long
the gate has been open (at least `probe_min`, at most `probe_max`, +-20 % jitter): the release is
late by a bounded share of the outage, and a long outage sees a probe every `probe_max` seconds.
The first success in the scope closes the gate, and the adapter releases what waits at once (the
concurrency limit paces it). Retries held by a gate cost no retry allowance: the gate's own limit,
`stall_after` seconds open, ends them with an error instead.

Failures that open or arrive at an open gate are not overload evidence (no concurrency cut), and an
open provider gate suspends ejections and retirements: the pool is innocent of a provider outage.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from dataclasses import dataclass, field

from scrapy_gateway.core.events import GateClosed, GateOpened

PROVIDER = "*"  # the scope of the whole pool


@dataclass(frozen=True, slots=True)
class GateRules:
    open_after: int = 5
    quiet: float = 1.0  # seconds without a success before failures can open a gate (unmeasured)
    quiet_round_trips: float = 4.0
    quiet_min: float = 0.25
    quiet_max: float = 2.0
    # seconds: the release is then at most about a second late (plus jitter), and an outage of 20 s
    # costs 20 probes where a floor of 0.5 s cost 34 (the share below takes over after 20 s).
    probe_min: float = 1.0
    pending_recheck: float = 0.1  # seconds a request waits on a pending gate before asking again
    probe_max: float = 30.0
    probe_share: float = 0.05
    # Seconds open after which held requests end with an error (0: never): one DOWNLOAD_TIMEOUT of
    # Scrapy's, so that a domain down for good delays the crawl's end by that, not for ever.
    stall_after: float = 180.0
    provider_share: float = 0.5  # share of the pool that must have failed to open the provider gate


@dataclass(frozen=True, slots=True)
class Go:
    """Send it; `probe` names the scope it probes, if any."""

    probe: str | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """Wait until `until` (monotonic) or the gate's release, whichever comes first."""

    scope: str
    until: float
    stalled: bool = False  # open longer than stall_after: end the request with an error
    announce: bool = False  # the first stalled answer of this opening: log it once


_GO = Go()


@dataclass(slots=True)
class _Scope:
    first_seen: float
    last_success: float = -math.inf
    failures: int = 0  # since the last success
    paths: set[str] = field(default_factory=set)  # distinct paths that failed since the last success
    worked_paths: set[str] = field(default_factory=set)  # those of them that had worked here lately
    opened_at: float | None = None  # set while the gate is open
    next_probe: float = 0.0
    probing: bool = False
    held: int = 0  # requests told to wait during this opening
    stall_told: bool = False


class OutageGates:
    def __init__(self, rules: GateRules, max_domains: int = 10_000) -> None:
        self.rules = rules
        self._scopes: OrderedDict[str, _Scope] = OrderedDict()
        self._open = 0  # gates open now
        self._pending: dict[str, float] = {}  # scope -> when its quiet time ends (see above)
        self._max = max_domains

    def _scope(self, key: str, now: float) -> _Scope:
        scope = self._scopes.get(key)
        if scope is None:
            scope = self._scopes[key] = _Scope(first_seen=now)
            if len(self._scopes) > self._max:
                self._evict()
        else:
            self._scopes.move_to_end(key)
        return scope

    def _evict(self) -> None:
        for key, scope in self._scopes.items():  # the least recently used closed gate goes
            if scope.opened_at is None and key != PROVIDER:
                del self._scopes[key]
                return

    def is_open(self, key: str) -> bool:
        scope = self._scopes.get(key)
        return scope is not None and scope.opened_at is not None

    def open_scopes(self) -> list[str]:
        return [key for key, scope in self._scopes.items() if scope.opened_at is not None]

    def quiet_time(self, round_trip: float | None) -> float:
        """How long nothing may work before failures are an outage's, given the scope's RTO."""
        rules = self.rules
        if round_trip is None:
            return rules.quiet
        return min(rules.quiet_max, max(rules.quiet_min, rules.quiet_round_trips * round_trip))

    # -- admission -------------------------------------------------------------------------

    def admit(self, keys: tuple[str, ...], now: float) -> Go | Hold:
        """May a request of these scopes (provider first, then its domain) go now?"""
        if not self._open and not self._pending:
            return _GO  # the hot path: no gate is open or pending anywhere
        for key in keys:
            scope = self._scopes.get(key)
            if scope is None or scope.opened_at is None:
                until = self._pending.get(key)
                if until is not None:
                    if until > now:  # asked again shortly: a success may clear it meanwhile
                        return Hold(key, min(until, now + self.rules.pending_recheck))
                    del self._pending[key]
                continue
            if self.stalled(key, now):
                announce = not scope.stall_told
                scope.stall_told = True
                return Hold(key, now, stalled=True, announce=announce)
            if self.probe_due(key, now):
                scope.probing = True
                return Go(probe=key)
            return self._hold(scope, key, now)
        return Go()

    def hold_retry(self, keys: tuple[str, ...], now: float) -> Hold | None:
        """A retry whose scope is gated waits for it; None when no gate is open."""
        for key in keys:
            scope = self._scopes.get(key)
            if scope is not None and scope.opened_at is not None:
                return self._hold(scope, key, now)
        return None

    def _hold(self, scope: _Scope, key: str, now: float) -> Hold:
        scope.held += 1
        # The adapter wakes a held request as the probe, or all of them at the release; `until`
        # is only the fallback of a request that cannot be held that way (it then asks again).
        return Hold(key, max(scope.next_probe, now + self.rules.probe_min / 2))

    def pending(self, key: str, now: float) -> bool:
        """The scope's gate is pending (see the module docstring): its requests wait a little."""
        until = self._pending.get(key)
        return until is not None and until > now

    def probe_due(self, key: str, now: float) -> bool:
        scope = self._scopes.get(key)
        return scope is not None and scope.opened_at is not None and not scope.probing and now >= scope.next_probe

    def stalled(self, key: str, now: float) -> bool:
        scope = self._scopes.get(key)
        stall = self.rules.stall_after
        return bool(stall) and scope is not None and scope.opened_at is not None and now - scope.opened_at >= stall

    def since(self, key: str) -> float:
        """When the scope last worked (or was first seen): what happened after is the outage's."""
        scope = self._scopes.get(key)
        return -math.inf if scope is None else max(scope.last_success, scope.first_seen)

    # -- outcomes --------------------------------------------------------------------------

    def success(self, keys: tuple[str, ...], now: float, *, opened_before: float | None = None) -> list[GateClosed]:
        """`opened_before`: only gates opened before then close (a success another process saw a
        moment ago says nothing of a gate opened here since)."""
        events: list[GateClosed] = []
        for key in keys:
            scope = self._scopes.get(key)  # no LRU bump: the hot path of every good response
            if scope is None:
                scope = self._scope(key, now)
            elif opened_before is not None and scope.opened_at is not None and scope.opened_at > opened_before:
                continue
            scope.last_success = now
            if scope.failures or scope.paths or scope.worked_paths:
                scope.failures = 0
                scope.paths.clear()
                scope.worked_paths.clear()
            if self._pending:
                self._pending.pop(key, None)
            if scope.opened_at is not None:
                events.append(GateClosed(key, now - scope.opened_at, scope.held))
                self._open -= 1
                scope.opened_at = None
                scope.probing = False
                scope.held = 0
                scope.stall_told = False
        return events

    def failure(
        self,
        key: str,
        path: str,
        now: float,
        rng: random.Random,
        *,
        paths_needed: int,
        round_trip: float | None = None,
        worked: bool = True,
    ) -> GateOpened | None:
        """A failure that counts as outage evidence in this scope; the event if it opens the gate.
        `round_trip`: the scope's round-trip timeout, when measured (see quiet_time). `worked`: the
        path had worked on the failing domain lately."""
        scope = self._scope(key, now)
        scope.failures += 1
        if len(scope.paths) < 64:  # enough to count distinct paths; bounded for huge pools
            scope.paths.add(path)
            if worked:
                scope.worked_paths.add(path)
        if scope.opened_at is not None:
            return None
        rules = self.rules
        quiet = self.quiet_time(round_trip)
        if key != PROVIDER and scope.last_success == -math.inf and round_trip is None:
            quiet = rules.quiet_min  # never worked, nothing measured: see the module docstring
        if scope.failures >= rules.open_after and len(scope.paths) >= paths_needed:
            quiet_from = max(scope.last_success, scope.first_seen)
            if now - quiet_from < quiet:
                # Pending only on an outage's signature: paths that worked fail too (or nothing has
                # worked yet). Proxies that never worked here failing between its successes are a
                # start-up burst through bad or banned proxies, and must not hold the domain.
                if scope.last_success == -math.inf or len(scope.worked_paths) >= min(2, paths_needed):
                    self._pending[key] = quiet_from + quiet
                return None
            self._pending.pop(key, None)
            scope.opened_at = now
            self._open += 1
            scope.probing = False
            scope.next_probe = now + self._probe_wait(0.0, rng)
            return GateOpened(key, scope.failures, len(scope.paths))
        return None

    def probe_ended(self, key: str, now: float, rng: random.Random | None) -> None:
        """The probe failed (the next one waits), or said nothing (rng None: another goes now)."""
        scope = self._scopes.get(key)
        if scope is not None and scope.opened_at is not None:
            scope.probing = False
            scope.next_probe = now if rng is None else now + self._probe_wait(now - scope.opened_at, rng)

    def probe_heard(self, key: str, now: float, rng: random.Random) -> None:
        """Another process of the fleet probed this scope, and the probe failed: this process's
        next probe waits as if it had been its own, so that the fleet probes about once per wait,
        not once per process (one already on its way is left to end)."""
        scope = self._scopes.get(key)
        if scope is not None and scope.opened_at is not None and not scope.probing:
            scope.next_probe = max(scope.next_probe, now + self._probe_wait(now - scope.opened_at, rng))

    def _probe_wait(self, open_for: float, rng: random.Random) -> float:
        rules = self.rules
        wait = min(rules.probe_max, max(rules.probe_min, rules.probe_share * open_for))
        return wait * rng.uniform(0.8, 1.2)

    def provider_paths_needed(self, pool_size: int) -> int:
        return max(1, min(pool_size, max(3, math.ceil(pool_size * self.rules.provider_share))))
