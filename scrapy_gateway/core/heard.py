"""Outcomes shared by the processes of a fleet: what one process saw, for the others to learn from.

Each process judges its own downloads (blame.py), and keeps its own pool, judge, latencies, budget
and gates. With a shared state (fleet_evidence.py), every outcome it sees is also written to the
fleet, and every process takes in the others' outcomes with `Gateway.hear`: the same history,
scores, latency estimates, outage evidence and budget spending, as if it had seen them itself
when they arrive (about 50 ms later; fleet_evidence.py skips failures older than half a second,
and a joining process takes in the last 2 s of successes). What stays with the process that saw
the outcome is its decision: retries, and ejections (those reach the others as proxy news, for
what is left of their cooldown: ProxyPool.learned), so that one failure is never counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from scrapy_gateway.core.faults import Blame, Fault


@dataclass(frozen=True, slots=True)
class Heard:
    """One outcome: a success when `fault` is None, else a failure with its blame settled."""

    proxy: str | None  # Proxy.key; None: sent without a pool proxy
    domain: str
    latency: float | None = None  # a success's time to its headers
    fault: Fault | None = None
    evidence: Blame = Blame.UNKNOWN  # the failure's own blame, before history settled it
    cut: bool = False  # a per-attempt timeout: evidence about the path only
    everyone: bool = False  # but for a cut made while the domain was slow through other paths too
    probe: str | None = None  # the outage gate (scope) the attempt probed
    waited: float | None = None  # an unanswered failure: seconds it waited for nothing
    withdrew: bool = False  # its retry took a token of the domain's retry budget


class Outbox:
    """What this process saw since the fleet last took it (bounded: a lost Redis takes nothing)."""

    __slots__ = ("outcomes", "sent")

    LIMIT = 20_000  # outcomes kept between two shipments; older ones are dropped

    def __init__(self) -> None:
        self.outcomes: list[Heard] = []
        self.sent: dict[str, int] = {}  # domain -> first attempts sent (the budget's deposits)

    def add(self, heard: Heard) -> None:
        outcomes = self.outcomes
        outcomes.append(heard)
        if len(outcomes) > self.LIMIT:
            del outcomes[: len(outcomes) // 2]

    def sending(self, domain: str) -> None:
        sent = self.sent
        sent[domain] = sent.get(domain, 0) + 1

    def take(self) -> tuple[list[Heard], dict[str, int]]:
        outcomes, sent = self.outcomes, self.sent
        self.outcomes, self.sent = [], {}
        return outcomes, sent
