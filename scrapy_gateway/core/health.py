"""Health of one proxy, or of one proxy on one domain: a score, a streak and a cooldown.

The rules, in one place:
- score is an EWMA of failures: a failure moves it `alpha` of the way to 1, a success `alpha` of the
  way to 0. A proxy is ejected when its score reaches `eject_score` or its streak of consecutive
  failures reaches `eject_streak`; a hard failure (refused connection, bad credentials) ejects at
  once.
- an ejected proxy is out for `cooldown_base * 2**(ejections-1)` seconds, capped at `cooldown_cap`,
  jittered by +-20 %; then it is on probation: it carries one request at a time, the first success
  clears it, the first failure ejects it again for longer.
- after `retire_after` ejections without a success in between it is retired for the rest of the
  crawl (0 = never); wrong credentials retire it at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from scrapy_gateway.core.latency import Latency


class State(str, Enum):
    ACTIVE = "active"
    EJECTED = "ejected"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class HealthRules:
    alpha: float = 0.3
    eject_score: float = 0.6
    eject_streak: int = 3
    cooldown_base: float = 10.0
    cooldown_cap: float = 300.0
    retire_after: int = 6

    def cooldown(self, ejections: int, rng: random.Random) -> float:
        exponent = min(max(ejections - 1, 0), 30)
        return float(min(self.cooldown_cap, self.cooldown_base * 2**exponent * rng.uniform(0.8, 1.2)))


class Health:
    """Mutable health record; owned by one pool, never shared across threads."""

    __slots__ = (
        "ejected_at",
        "ejections",
        "inflight",
        "last_success",
        "latency",
        "probation",
        "score",
        "state",
        "streak",
        "until",
    )

    def __init__(self) -> None:
        self.score = 0.0
        self.streak = 0
        self.state = State.ACTIVE
        self.until = 0.0  # monotonic time the cooldown ends, when EJECTED
        self.ejections = 0  # consecutive ejections without a success in between
        self.probation = False
        self.inflight = 0
        self.last_success = float("-inf")
        self.latency = Latency()  # how long its successful downloads took (latency.py)
        self.ejected_at = 0.0

    def usable(self, now: float) -> bool:
        """In rotation now; an ejected record whose cooldown is over comes back on probation."""
        if self.state is State.EJECTED and now >= self.until:
            self.state = State.ACTIVE
            self.probation = True
        return self.state is State.ACTIVE and not (self.probation and self.inflight > 0)

    def succeed(self, rules: HealthRules, now: float) -> bool:
        """Record a success; True when it ended a probation (a re-admission)."""
        self.score *= 1.0 - rules.alpha
        self.streak = 0
        self.ejections = 0
        self.last_success = now
        readmitted = self.probation
        self.probation = False
        return readmitted

    def fail(self, rules: HealthRules, *, hard: bool) -> bool:
        """Record a failure; True when the record now deserves ejection."""
        self.score += rules.alpha * (1.0 - self.score)
        self.streak += 1
        return hard or self.probation or self.score >= rules.eject_score or self.streak >= rules.eject_streak

    def eject(self, rules: HealthRules, now: float, rng: random.Random) -> bool:
        """Take out of rotation; True when this ejection retires it for good."""
        self.ejections += 1
        self.probation = False
        if rules.retire_after and self.ejections >= rules.retire_after:
            self.state = State.RETIRED
            return True
        self.state = State.EJECTED
        self.ejected_at = now
        self.until = now + rules.cooldown(self.ejections, rng)
        # Re-admitted records start from half the threshold, so one more failure sends them back.
        self.score = rules.eject_score / 2
        self.streak = 0
        return False

    def forgive(self, rules: HealthRules) -> None:
        """Undo an ejection that was not this record's fault (a provider-wide outage)."""
        self.state = State.ACTIVE
        self.probation = False
        self.ejections = max(0, self.ejections - 1)
        self.score = rules.eject_score / 2
        self.streak = 0

    def retire(self) -> None:
        self.state = State.RETIRED
        self.probation = False
