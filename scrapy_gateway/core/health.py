"""Health of one proxy, or of one proxy on one domain: a score, a streak and a cooldown.

The rules, in one place:
- score is an EWMA of failures: a failure moves it `alpha` of the way to 1, a success `alpha` of the
  way to 0. A proxy is ejected when its score reaches `eject_score` or its streak of consecutive
  failures reaches `eject_streak`; a hard failure (refused connection, bad credentials) ejects at
  once.
- an ejected record is out for `base * 2**(strikes-1)` seconds, capped at `cooldown_cap`, jittered
  by +-20 %; then it is on probation: it carries one request at a time, the first success clears
  it, the first failure ejects it again for longer. Each ejection is a strike; a strike is
  forgiven for every `cooldown_base` seconds the record then stays in (as Envoy's ejection
  multiplier), so a repeat offender stays out longer and a proxy that failed once long ago starts
  afresh.
- `base` is `cooldown_base` for a record that has never worked (a dead or misconfigured proxy: a
  probe of it is likely wasted), and `relapse` for one that has: a proxy that goes bad mid-crawl
  (down for a while, an exit that flaps) is usually back soon, and short first cooldowns re-admit
  it within a few seconds of its recovery. Not so a refusal the site itself wrote for this
  address (a ban): the site decided, and its decision lasts; that ejection takes `cooldown_base`.
- besides the score, each record keeps its outcomes over a longer memory (about 32, decayed),
  across ejections: `reliability`, which selection reads alongside the score. A proxy that fails
  half the time heals its score on every probation; it does not heal these. Failures judged the
  origin's count here too (`doubted`), never in the score or the streak: a path that fails more
  often than the others is a worse choice, whoever is to blame, while only blame ejects.
- after `retire_after` ejections without a success in between it is retired for the rest of the
  crawl (0 = never); only ejections of a full `cooldown_base` or more count, so a proxy that has
  worked is retired no sooner than one that never did. Wrong credentials retire it at once.
"""

from __future__ import annotations

import math
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
    relapse: float = 1.0  # the first cooldown of a record that has worked (see the module's text)

    def cooldown(self, base: float, strikes: float) -> float:
        """Before jitter: `base` doubled for each strike past the first, capped."""
        return float(min(self.cooldown_cap, base * 2 ** min(max(strikes - 1.0, 0.0), 30.0)))


# The members, as plain names: on Python 3.11 every `State.ACTIVE` is an attribute lookup through
# the enum's class (about 80 ns), and `usable` runs several times per request.
_ACTIVE, _EJECTED = State.ACTIVE, State.EJECTED
_KEEP = 1.0 - 1.0 / 32.0  # the kept outcomes fade geometrically over about 32 of them


class Health:
    """Mutable health record; owned by one pool, never shared across threads."""

    __slots__ = (
        "back_at",
        "ejected_at",
        "ejections",
        "inflight",
        "kept_failed",
        "kept_ok",
        "last_success",
        "latency",
        "probation",
        "score",
        "state",
        "streak",
        "strikes",
        "until",
    )

    def __init__(self) -> None:
        self.score = 0.0
        self.streak = 0
        self.state = State.ACTIVE
        self.until = 0.0  # monotonic time the cooldown ends, when EJECTED
        self.ejections = 0  # consecutive full-length ejections without a success in between
        self.strikes = 0.0  # ejections, less those forgiven for the time it stayed in since
        self.back_at: float | None = None  # when it last came (back) into service and worked
        self.probation = False
        self.inflight = 0
        self.last_success = float("-inf")
        self.latency = Latency()  # how long its successful downloads took (latency.py)
        self.ejected_at = 0.0
        # Its outcomes over a longer memory than the score's, kept across ejections (decayed
        # counts): a proxy that fails half the time looks fine on probation, never over these.
        self.kept_ok = 0.0
        self.kept_failed = 0.0

    def usable(self, now: float) -> bool:
        """In rotation now; an ejected record whose cooldown is over comes back on probation."""
        if self.state is _EJECTED and now >= self.until:
            self.state = _ACTIVE
            self.probation = True
        return self.state is _ACTIVE and not (self.probation and self.inflight > 0)

    def succeed(self, rules: HealthRules, now: float) -> bool:
        """Record a success; True when it ended a probation (a re-admission)."""
        self.score *= 1.0 - rules.alpha
        self.kept_ok = self.kept_ok * _KEEP + 1.0
        self.kept_failed *= _KEEP
        self.streak = 0
        self.ejections = 0
        self.last_success = now
        if self.back_at is None:
            self.back_at = now
        readmitted = self.probation
        self.probation = False
        return readmitted

    def doubted(self) -> None:
        """A failure judged not its own (the origin's): only the kept outcomes, which selection
        reads, learn it; a path that fails more often than the others still costs more."""
        self.kept_failed = self.kept_failed * _KEEP + 1.0
        self.kept_ok *= _KEEP

    def reliability(self) -> float:
        """Its chance of success over the kept outcomes, with one optimistic pseudo-success (a
        record with no outcomes yet is 1.0: the latency prior, not this, prices the unknown)."""
        return (self.kept_ok + 1.0) / (self.kept_ok + self.kept_failed + 1.0)

    def fail(self, rules: HealthRules, *, hard: bool) -> bool:
        """Record a failure; True when the record now deserves ejection."""
        self.score += rules.alpha * (1.0 - self.score)
        self.kept_failed = self.kept_failed * _KEEP + 1.0
        self.kept_ok *= _KEEP
        self.streak += 1
        return hard or self.probation or self.score >= rules.eject_score or self.streak >= rules.eject_streak

    def eject(self, rules: HealthRules, now: float, rng: random.Random, *, durable: bool = False) -> bool:
        """Take out of rotation; True when this ejection retires it for good. `durable`: the
        site refused this address (no quick look, whether it worked before or not)."""
        self.probation = False
        self.strikes = self.strikes_now(rules, now) + 1.0
        self.back_at = None
        # Past the strike whose cooldown reaches the cap, more strikes would only keep it out longer
        # after it recovers, without any longer cooldown to show for them.
        self.strikes = min(self.strikes, 2.0 + math.log2(rules.cooldown_cap / min(rules.relapse, rules.cooldown_base)))
        quick = self.last_success > float("-inf") and not durable
        base = min(rules.relapse, rules.cooldown_base) if quick else rules.cooldown_base
        cooldown = rules.cooldown(base, self.strikes)
        if cooldown >= rules.cooldown_base:
            self.ejections += 1
        if rules.retire_after and self.ejections >= rules.retire_after:
            self.state = State.RETIRED
            return True
        self.state = State.EJECTED
        self.ejected_at = now
        self.until = now + min(rules.cooldown_cap, cooldown * rng.uniform(0.8, 1.2))
        # Re-admitted records start from half the threshold, so one more failure sends them back.
        self.score = rules.eject_score / 2
        self.streak = 0
        return False

    def strikes_now(self, rules: HealthRules, now: float) -> float:
        """Strikes, less those its time in service since it came back has forgiven."""
        if self.back_at is None:
            return self.strikes
        return max(0.0, self.strikes - (now - self.back_at) / rules.cooldown_base)

    def forgive(self, rules: HealthRules) -> None:
        """Undo an ejection that was not this record's fault (a provider-wide outage)."""
        self.state = State.ACTIVE
        self.probation = False
        self.ejections = max(0, self.ejections - 1)
        self.strikes = max(0.0, self.strikes - 1.0)
        self.score = rules.eject_score / 2
        self.streak = 0

    def retire(self) -> None:
        self.state = State.RETIRED
        self.probation = False
