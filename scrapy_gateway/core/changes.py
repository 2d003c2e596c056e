"""What changed between two periodic `Gateway:` lines, so an incident can be followed live.

Proxies and gates are told by their events as they happen, so a proxy out and back within one
interval still shows; throttled domains, and proxies whose cooldown ended (on probation: no event
says so, a good probe then readmits them), are compared between the two lines' snapshots, since a
limit moves many times a second and only where it stands matters to a reader.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from scrapy_gateway.core.events import (
    Ejected,
    Event,
    Forgiven,
    GateClosed,
    GateOpened,
    PairEjected,
    PairReadmitted,
    Readmitted,
    Retired,
)
from scrapy_gateway.core.gates import PROVIDER

NAMES_SHOWN = 3  # per kind of change; the rest are counted, so a 1,000-proxy incident is one line
# The order a reader follows an incident in: proxies, then the gates, then the domains' limits.
ORDER = ("out", "retired", "on probation", "back", "gate opened", "gate closed", "throttled", "released")


class Changes:
    def __init__(self, shown: int = NAMES_SHOWN) -> None:
        self.shown = shown
        self._throttled: dict[str, int] = {}
        self._out: set[str] = set()  # proxies out of rotation at the last line
        self._kinds: dict[str, dict[str, None]] = {}  # kind of change -> names, ordered, once each

    def event(self, event: Event) -> None:
        match event:
            case Ejected(proxy, _, _):
                self._add("out", proxy)
            case PairEjected(proxy, domain, _, _):
                self._add("out", f"{proxy} on {domain}")
            case Retired(proxy, _):
                self._add("retired", proxy)
            case Readmitted(proxy):
                self._add("back", proxy)
            case PairReadmitted(proxy, domain):
                self._add("back", f"{proxy} on {domain}")
            case Forgiven(count):
                self._add("back", f"{count} forgiven after the provider-wide outage")
            case GateOpened(scope, _, _):
                self._add("gate opened", _scope(scope))
            case GateClosed(scope, _, _):
                self._add("gate closed", _scope(scope))
            case _:
                pass  # a panic changes nobody's state

    def events(self, events: Iterable[Event]) -> None:
        for event in events:
            self.event(event)

    def line(self, throttled: Mapping[str, int], out: Collection[str] = ()) -> str:
        """The changes since the last call, as one clause, and a fresh start for the next one.
        `throttled`: the slots held below the user's limit now; `out`: the proxies out of rotation."""
        told = self._kinds.get("back", {}).keys() | self._kinds.get("retired", {}).keys()
        for proxy in sorted(self._out - set(out) - told):
            self._add("on probation", proxy)
        self._out = set(out)
        before, self._throttled = self._throttled, dict(throttled)
        for slot, limit in sorted(throttled.items()):
            old = before.get(slot)
            if old is None:
                self._add("throttled", f"{slot} to {limit}")
            elif old != limit:
                self._add("throttled", f"{slot} {old}->{limit}")
        for slot in sorted(before.keys() - throttled.keys()):
            self._add("released", slot)
        kinds, self._kinds = self._kinds, {}
        if not kinds:
            return "no change"
        return "; ".join(f"{kind} {self._names(list(kinds[kind]))}" for kind in ORDER if kind in kinds)

    def _add(self, kind: str, name: str) -> None:
        self._kinds.setdefault(kind, {})[name] = None

    def _names(self, names: list[str]) -> str:
        shown = ", ".join(names[: self.shown])
        return shown + (f" (+{len(names) - self.shown} more)" if len(names) > self.shown else "")


def _scope(scope: str) -> str:
    return "every proxy" if scope == PROVIDER else scope
