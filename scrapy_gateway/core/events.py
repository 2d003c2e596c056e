"""What the pool did, as typed events the adapter reports (log lines and stats).

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


Event = Ejected | PairEjected | Retired | Readmitted | PairReadmitted | Panic
