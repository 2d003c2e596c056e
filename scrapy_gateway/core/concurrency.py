"""Adaptive concurrency per download slot (target domain): AIMD with a memory of where it hurt.

- An origin-blamed overload error cuts the limit to `limit * beta`, at most once per round trip:
  errors from requests sent before the last cut were caused by the old limit and do not cut again.
- Each clean response adds `1 / limit` (one unit per window of `limit` responses), up to the
  user's own limit. The limit is a real number; the slot gets it rounded half up. When the next
  step up would reach the limit that last overloaded the origin, growth slows by `caution`, and
  twice more for each overload in a row at that same limit (up to 16-fold), so the sawtooth
  spends little time above the origin's capacity.
- Slow start (TCP's): a slot the gateway has not seen starts at `initial` and grows by one per
  clean response (doubling per round trip) up to the user's limit, until the first overload, so
  that a crawl's first burst against an origin that serves one at a time is two requests, not
  the user's 32. A doubtful failure in slow start (a status no one could blame on the origin
  yet, sent with more in flight than any that went well) frees no room (`doubtful`). The first
  overload ends slow start at half the limit, or just below the fewest in flight with which a
  request failed, if that is more.
- Slow start's first round trip can be long for reasons that are not the origin's: its first
  requests drew slow or silent proxies. While a slot in slow start has heard nothing back at all,
  each request that has waited past `Gateway.unheard_after` (RFC 6298's initial RTO before anything
  is measured) frees its room, as TCP's timeout takes a segment for lost (`late`): without that, two
  first picks through silent proxies held the domain until DOWNLOAD_TIMEOUT.
- Nor can an overload that came before anything went well say much about the load: the first
  failures may be a start-up burst through bad proxies, which fail fast whatever the load. When
  the slot's first clean response went out with as many in flight as that overload said would
  hurt, the overload is undone (back to where it found the slot), as an outage gate would undo it.
- Probes (the step into the limit that hurt) are at least PROBE_SPACING / 2 clean responses apart.
- Proxy-blamed failures never reach this module. An outage is not an overload either: when an
  outage gate opens (gates.py), the cuts made since the last clean response are undone. Nor is a
  proxy's failure that looked like one: when the judge finds that the failure behind the last cut
  was its path's (blame.py, outliers), that cut is undone (`overturned`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Phase:
    """Where a slot's limit stands, for what judges its failures (Gateway.on_failure): with a
    Redis state the fleet's limit rules the slot, and its phase comes from Redis (fleet.py)."""

    starting: bool = False  # in slow start (ConcurrencyControl.starting)
    growing: bool = False  # in slow start, above its first limit (ConcurrencyControl.growing)
    probing: bool = False  # at or above the limit that last hurt (ConcurrencyControl.probing)


@dataclass(slots=True)
class _Cut:
    by: str | None  # the path whose failure made it
    at: float  # when
    before: tuple[float, float, int, bool, float, int]  # (value, hurt_at, repeats, starting, cut_at, over) before it
    overturned: bool = False  # the judge found that failure was the path's own
    # A floor mark instead of a cut: overloads that cut nothing (the limit at its minimum), by
    # path, when first. Undoing the cuts before it waits until each was overturned.
    floor: dict[str | None, float] | None = None


@dataclass(slots=True)
class _Limit:
    value: float
    ceiling: int
    cut_at: float = float("-inf")  # monotonic time of the last cut
    hurt_at: float = math.inf  # limit at which the origin last overloaded
    repeats: int = 0  # overloads in a row at that same effective limit
    calm: float = math.inf  # the limit at the last clean response (inf: none since it was created)
    starting: bool = False  # in slow start: +1 per clean response until the first overload
    settled: int = 0  # clean responses at the user's limit since slow start reached it
    held: int = 0  # in slow start: the most requests in flight when one that went well was sent
    over: int = 0  # in slow start: the fewest in flight when one that failed was sent (0: none)
    cuts: list[_Cut] = field(default_factory=list)  # the last ones, oldest first, for `overturned`
    # Before its first overload, while it has never answered well: (value, starting, over), what
    # an outage gate opening restores (calm has nothing to say then).
    fresh: tuple[float, bool, int] | None = None
    heard: bool = False  # any outcome came back (clean, doubtful or an overload): `late` is over


_MAX_REPEATS = 4  # probing slows down at most 16-fold beyond `caution`
_CUTS_KEPT = 8  # cuts that can still be undone, per slot
_FLOOR_PATHS = 16  # paths a floor mark names; past them, it stands for good
_MANY = "*"  # a floor mark's stand-in for the paths past _FLOOR_PATHS (never a proxy key)
PROBE_SPACING = 200.0  # clean responses per unit of growth into the limit that hurt, at least


class ConcurrencyControl:
    def __init__(
        self, minimum: int, beta: float, caution: float = 32.0, max_slots: int = 10_000, initial: int = 2
    ) -> None:
        self.minimum = minimum
        self.initial = initial  # slow start's first limit (0: no slow start)
        self._seen: OrderedDict[str, None] = OrderedDict()  # slots slow start has begun for
        self.beta = beta
        self.caution = caution
        self._limits: OrderedDict[str, _Limit] = OrderedDict()
        self._max_slots = max_slots

    def limit(self, slot: str) -> int | None:
        """The enforced limit, or None when the slot has never been throttled (user's own)."""
        entry = self._limits.get(slot)
        return None if entry is None else _effective(entry.value)

    def limits(self) -> dict[str, int]:
        """The slots held below the user's limit by an overload (slow start is not shown)."""
        return {
            slot: _effective(e.value)
            for slot, e in self._limits.items()
            if _effective(e.value) < e.ceiling and not e.starting
        }

    def begin(self, slot: str, ceiling: int) -> int | None:
        """A slot seen for the first time: its slow-start limit, or None (the user's own)."""
        if slot in self._seen or slot in self._limits:
            return None
        self._seen[slot] = None
        if len(self._seen) > self._max_slots:
            self._seen.popitem(last=False)
        if not self.initial or ceiling <= self.initial:
            return None
        self._limits[slot] = _Limit(float(self.initial), ceiling, starting=True)
        if len(self._limits) > self._max_slots:
            self._evict()
        return self.initial

    def probing(self, slot: str) -> bool:
        """The slot's limit is back at or above where the origin last overloaded."""
        entry = self._limits.get(slot)
        return entry is not None and _effective(entry.value) >= _effective(entry.hurt_at)

    def starting(self, slot: str) -> bool:
        """The slot is in slow start."""
        entry = self._limits.get(slot)
        return entry is not None and entry.starting

    def growing(self, slot: str) -> bool:
        """The slot is in slow start, above its first limit: each round trip doubles it, so the
        capacity may be anywhere below it."""
        return self.starting(slot) and self._limits[slot].value > self.initial

    def phase(self, slot: str) -> Phase:
        """The slot's phase, as the three questions above answer it."""
        return Phase(self.starting(slot), self.growing(slot), self.probing(slot))

    def overloaded(
        self, slot: str, ceiling: int, sent_at: float, now: float, load: int | None = None, by: str | None = None
    ) -> int | None:
        """An origin-blamed overload error; return the new limit if it changed. `load`: as for
        `clean`; `by`: the path it failed through."""
        entry = self._limits.get(slot)
        if entry is None:
            entry = self._limits[slot] = _Limit(float(ceiling), ceiling)
            if len(self._limits) > self._max_slots:
                self._evict()
        else:
            self._limits.move_to_end(slot)
        entry.heard = True
        if sent_at < entry.cut_at:
            return None
        if entry.calm == math.inf and entry.fresh is None:
            entry.fresh = (entry.value, entry.starting, entry.over)
        before = _effective(entry.value)
        undo = (entry.value, entry.hurt_at, entry.repeats, entry.starting, entry.cut_at, entry.over)
        if entry.starting:
            # Slow start doubled the limit over the last round trip, so the capacity lies between
            # half of it and it: go back to the half, and probe just above it cautiously. Unless
            # the failures say more: one sent with N in flight (more than any that went well)
            # means a capacity below N, and an origin that fails fast answers the overshoot in
            # the order it was sent, long before the doubling is over (past 16 it fails the 17th
            # while the limit is still 18).
            entry.starting = False
            self._failed_at(entry, load)
            estimate = entry.value / 2.0
            if entry.over:
                estimate = max(estimate, float(entry.over - 1))
            entry.value = max(float(self.minimum), min(entry.value, estimate))  # an end, never a raise
            entry.hurt_at, entry.repeats = entry.value + 1.0, 0
        elif before >= _effective(entry.hurt_at):
            # Hurt again at (or above) the lowest limit known to hurt: the capacity is just below
            # it, so step back to the limit that held instead of cutting by beta again.
            entry.repeats = min(entry.repeats + 1, _MAX_REPEATS)
            entry.value = max(float(self.minimum), float(_effective(entry.hurt_at) - 1))
        else:
            # Hurt below any known point (a first overload, or the capacity shrank).
            entry.repeats = 0
            entry.hurt_at = entry.value
            entry.value = max(float(self.minimum), entry.value * self.beta)
        entry.cut_at = now
        after = _effective(entry.value)
        if after < before:
            entry.cuts.append(_Cut(by, now, undo))
            _trim(entry.cuts)
        elif entry.cuts:
            # A cut of nothing (at the minimum, or too small to change the whole limit): an undo
            # of the cuts before must not skip an overload that stands here. One mark for the run
            # of them, so that a storm at the minimum does not push the cuts that got it there
            # out of the list.
            mark = entry.cuts[-1]
            if mark.floor is None:
                mark = _Cut(by, now, undo, floor={})
                entry.cuts.append(mark)
            assert mark.floor is not None
            # Its first time: the judge overturns a path's recent failures, not an older overload.
            mark.floor.setdefault(by if by in mark.floor or len(mark.floor) < _FLOOR_PATHS else _MANY, now)
        return after if after != before else None

    def overturned(self, slot: str, by: str, since: float = -math.inf) -> int | None:
        """The failures through `by` since `since` were that path's own: undo the cuts they made,
        with every later cut that was overturned too (growth since is kept); a cut followed by one
        that stands is undone when that one is. The new limit if it changed."""
        entry = self._limits.get(slot)
        if entry is None:
            return None
        for cut in entry.cuts:
            if cut.floor is not None:
                if by in cut.floor and cut.floor[by] >= since:
                    del cut.floor[by]
                cut.overturned = not cut.floor
            elif cut.by == by and cut.at >= since:
                cut.overturned = True
        undo = None
        while entry.cuts and entry.cuts[-1].overturned:
            undo = entry.cuts.pop().before
        if undo is None:
            return None
        before = _effective(entry.value)
        value, entry.hurt_at, entry.repeats, entry.starting, entry.cut_at, entry.over = undo
        entry.value = max(entry.value, value)
        after = _effective(entry.value)
        if after >= entry.ceiling and not entry.starting:
            del self._limits[slot]  # the user's own limit rules again
            return entry.ceiling if after != before else None
        return after if after != before else None

    def doubtful(self, slot: str, load: int | None = None) -> int | None:
        """A failure with a status that may be an overload, not blamed on the origin (a path not
        proven on the domain yet, or no evidence); the new limit if it changed.

        Only slow start heeds it, and only for a request sent with more in flight than any that
        went well (`load`; unknown counts as more): the room it frees is not given to another
        request (the limit goes down by one, never below slow start's first); the next clean
        response gives it back. An origin that fails fast past its capacity answers every request
        above it at once: without this, each error makes room for the next, for as long as the
        failing paths are fresh ones the judge cannot blame on the origin yet. A bad proxy failing
        at a load that has worked costs nothing.
        """
        entry = self._limits.get(slot)
        if entry is None or not entry.starting:
            return None
        entry.heard = True
        self._failed_at(entry, load)
        if load is not None and load <= entry.held:
            return None
        before = _effective(entry.value)
        entry.value = max(float(self.initial), float(self.minimum), entry.value - 1.0)
        after = _effective(entry.value)
        return after if after != before else None

    def late(self, slot: str, waiting: int) -> int | None:
        """`waiting` requests of a slot in slow start that has heard nothing back yet have waited
        past the silence allowed (see the module docstring): each frees its room, over slow start's
        first limit. Called again with the count as it grows, it raises no further for the same
        ones. The new limit if it changed."""
        entry = self._limits.get(slot)
        if entry is None or not entry.starting or entry.heard or waiting <= 0:
            return None
        before = _effective(entry.value)
        entry.value = min(float(entry.ceiling), max(entry.value, float(self.initial + waiting)))
        after = _effective(entry.value)
        return after if after != before else None

    @staticmethod
    def _failed_at(entry: _Limit, load: int | None) -> None:
        """A failure sent with `load` in flight; one at a load that has gone well says nothing."""
        if load is not None and load > entry.held and (not entry.over or load < entry.over):
            entry.over = load

    def clean(self, slot: str, load: int | None = None) -> int | None:
        """A clean response on a throttled slot; the new limit if it changed. `load`: the requests
        in flight on the slot when it was sent, itself included (None: not known)."""
        entry = self._limits.get(slot)
        if entry is None:
            return None
        entry.heard = True
        if (
            entry.calm == math.inf
            and entry.fresh is not None
            and load is not None
            and load >= _effective(entry.hurt_at)
        ):
            self._unhurt(entry, entry.fresh)
        before = _effective(entry.value)
        step = 1.0 if entry.starting else 1.0 / max(entry.value, 1.0)
        if entry.starting and load is not None and load > entry.held:
            entry.held = load
        if not entry.starting and before + 1 >= _effective(entry.hurt_at):
            # The next step up is where the origin last overloaded: probe it slowly, and twice as
            # slowly each time the probe hurt again at the same place. A probe costs about one
            # error whatever the limit, so probes are at least PROBE_SPACING / 2 clean responses
            # apart: at a limit of 1 or 2, `caution` alone would spend 3-6 % of the requests on them.
            step = 1.0 / max(max(entry.value, 1.0) * self.caution, PROBE_SPACING) / 2**entry.repeats
        entry.value = min(float(entry.ceiling), entry.value + step)
        entry.calm = entry.value
        after = _effective(entry.value)
        if after > _effective(entry.hurt_at):
            entry.hurt_at, entry.repeats = math.inf, 0  # it held past where it hurt: capacity grew
        if after >= entry.ceiling:
            # Slow start reaches the user's limit within a round trip of overshooting it: its
            # first overload there must still halve, so it is kept for one full window.
            if entry.starting:
                entry.settled += 1
            if not entry.starting or entry.settled >= entry.ceiling:
                del self._limits[slot]  # fully recovered: the user's own limit rules again
            return entry.ceiling if after != before else None
        return after if after != before else None

    @staticmethod
    def _unhurt(entry: _Limit, fresh: tuple[float, bool, int]) -> None:
        """The slot's first clean response went out with as many in flight as its first overload,
        which came before anything had gone well, said would hurt: that overload was no load's (a
        start-up burst through bad proxies looks the same). Back to where it found the slot
        (`fresh`), as an outage gate opening would."""
        value, entry.starting, entry.over = fresh
        entry.value = max(entry.value, value)
        entry.fresh = None
        entry.hurt_at, entry.repeats, entry.cut_at = math.inf, 0, float("-inf")
        entry.cuts.clear()

    def outage(self, slot: str) -> int | None:
        """An outage gate opened: undo the cuts since the last clean response; the new limit."""
        entry = self._limits.get(slot)
        if entry is None:
            return None
        before = _effective(entry.value)
        if entry.calm < math.inf:
            entry.value = min(float(entry.ceiling), max(entry.value, entry.calm))
        elif entry.fresh is not None:
            # It never answered well: back to where its first overload found it (slow start's
            # first limit), not to the user's, or every request queued for the slot leaves at once.
            value, entry.starting, entry.over = entry.fresh
            entry.value = max(entry.value, value)
        entry.fresh = None
        entry.hurt_at, entry.repeats, entry.cut_at = math.inf, 0, float("-inf")
        entry.cuts.clear()
        after = _effective(entry.value)
        if after >= entry.ceiling and not entry.starting:
            del self._limits[slot]
        return after if after != before else None

    def export(self) -> dict[str, list[float]]:
        return {
            slot: [e.value, e.ceiling, e.hurt_at if math.isfinite(e.hurt_at) else -1.0]
            for slot, e in self._limits.items()
        }

    def restore(self, saved: dict[str, list[float]]) -> None:
        for slot, (value, ceiling, hurt_at) in saved.items():
            self._limits[slot] = _Limit(float(value), int(ceiling), hurt_at=math.inf if hurt_at < 0 else float(hurt_at))

    def _evict(self) -> None:
        """Forget the least recently throttled slot (it falls back to the user's own limit)."""
        self._limits.popitem(last=False)


def _trim(cuts: list[_Cut]) -> None:
    """Keep the last _CUTS_KEPT cuts (floor marks do not count), and the marks after the first."""
    if sum(1 for cut in cuts if cut.floor is None) > _CUTS_KEPT:
        first = next(i for i, cut in enumerate(cuts) if cut.floor is None)
        del cuts[: first + 1]
        while cuts and cuts[0].floor is not None:
            del cuts[0]


def _effective(value: float) -> int:
    """The whole number of requests a fractional limit allows (rounded half up)."""
    return int(value + 0.5) if math.isfinite(value) else 2**31
