"""What the pool and the outage gates did, as typed events the adapter reports (log lines and stats).

One frozen class per event, as h11 does: the reporter matches on the type, so a new kind of event
cannot be forgotten silently by a string comparison.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ejected:
    """The proxy is out of rotation for every domain, for `seconds`."""

    proxy: str  # Proxy.key
    cause: str  # the fault kind that caused it
    seconds: float


@dataclass(frozen=True, slots=True)
class PairEjected:
    """The proxy is out of rotation for one domain only (a ban), for `seconds`."""

    proxy: str
    domain: str
    cause: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Retired:
    """The proxy is out for the rest of the crawl."""

    proxy: str
    cause: str


@dataclass(frozen=True, slots=True)
class Readmitted:
    proxy: str


@dataclass(frozen=True, slots=True)
class PairReadmitted:
    proxy: str
    domain: str


@dataclass(frozen=True, slots=True)
class Panic:
    """Too much of the pool is failing on soft evidence to take this proxy out."""

    proxy: str
    cause: str


@dataclass(frozen=True, slots=True)
class GateOpened:
    """Requests of `scope` (a domain, or "*": the whole pool) wait while probes go out (gates.py)."""

    scope: str
    failures: int  # failures since it last worked
    paths: int  # distinct paths they came through


@dataclass(frozen=True, slots=True)
class GateClosed:
    """A success in `scope`: what waits on its gate goes now."""

    scope: str
    seconds: float  # how long it was open
    held: int  # times a request was told to wait while it was open


@dataclass(frozen=True, slots=True)
class Forgiven:
    """Proxies ejected during what turned out to be a provider-wide outage are back in rotation."""

    proxies: int


Event = Ejected | PairEjected | Retired | Readmitted | PairReadmitted | Panic | GateOpened | GateClosed | Forgiven
