"""What the gateway did, told to the crawl log and the stats.

Proxies are named by `Proxy.key` (scheme, user, host, port): never a password.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from scrapy.utils.asyncio import AsyncioLoopingCall, create_looping_call

try:
    from typing import assert_never
except ImportError:  # Python 3.10
    from typing_extensions import assert_never

from scrapy_gateway import stats as keys
from scrapy_gateway.core.changes import Changes
from scrapy_gateway.core.events import (
    Ejected,
    Event,
    Forgiven,
    GateClosed,
    GateOpened,
    PairEjected,
    PairReadmitted,
    Panic,
    Readmitted,
    Retired,
)
from scrapy_gateway.core.faults import Fault
from scrapy_gateway.core.gates import PROVIDER
from scrapy_gateway.core.gateway import Gateway, Verdict
from scrapy_gateway.core.health import State

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector
    from twisted.internet.task import LoopingCall

logger = logging.getLogger("scrapy_gateway")


class Reporter:
    def __init__(
        self,
        gateway: Gateway,
        stats: StatsCollector,
        interval: float,
        waiting: Callable[[], int],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway = gateway
        self.clock = clock
        self.waiting = waiting  # how many retries wait in the waiting room now
        self.stats = stats
        self.interval = interval
        self.changes = Changes()  # what the next periodic line tells as new
        self._loop: AsyncioLoopingCall | LoopingCall | None = None

    # -- per decision ----------------------------------------------------------------------

    def failure(self, verdict: Verdict, retried: bool) -> None:
        fault = verdict.fault
        self.stats.inc_value(keys.failure(fault.kind))
        self.stats.inc_value(keys.blame(fault.blame.value))
        if verdict.overturned:
            self.stats.inc_value(keys.BLAME_OVERTURNED, verdict.overturned)
        if retried:
            self.stats.inc_value(keys.retry_blame(fault.blame.value))
            if fault.retry_after is not None:
                self.stats.inc_value(keys.RETRY_AFTER_COUNT)
                self.stats.max_value(keys.RETRY_AFTER_MAX, fault.retry_after)
            if verdict.budget_wait > 0:
                self.stats.inc_value(keys.BUDGET_EXHAUSTED)
        self.events(verdict.events)

    def learned(self, event: Event, seconds_left: float) -> None:
        """A proxy (or pair) another process of the fleet took out is out here too (fleet.py)."""
        self.stats.inc_value(keys.FLEET_LEARNED)
        self.changes.event(event)
        match event:
            case Ejected(proxy, cause, _):
                where = ""
            case PairEjected(proxy, domain, cause, _):
                where = f" for {domain} only"
            case Retired(proxy, cause):
                logger.warning(
                    "Proxy %(proxy)s retired for the rest of the crawl: another process of the fleet saw %(cause)s",
                    {"proxy": proxy, "cause": cause},
                )
                return
            case _:
                return
        logger.info(
            "Proxy %(proxy)s out of rotation%(where)s for %(s).0fs: another process of the fleet saw %(cause)s",
            {"proxy": proxy, "where": where, "s": seconds_left, "cause": cause},
        )

    def events(self, events: Iterable[Event]) -> None:
        for event in events:
            self.event(event)

    def event(self, event: Event) -> None:
        self.changes.event(event)
        match event:
            case Ejected(proxy, cause, seconds):
                self.stats.inc_value(keys.EJECTIONS)
                self.stats.inc_value(keys.ejection(cause))
                logger.info(
                    "Proxy %(proxy)s out of rotation for %(s).0fs after %(cause)s",
                    {"proxy": proxy, "s": seconds, "cause": cause},
                )
            case PairEjected(proxy, domain, cause, seconds):
                self.stats.inc_value(keys.PAIR_EJECTIONS)
                self.stats.inc_value(keys.pair_ejection(cause))
                logger.info(
                    "Proxy %(proxy)s out of rotation for %(domain)s only, for %(s).0fs after %(cause)s",
                    {"proxy": proxy, "domain": domain, "s": seconds, "cause": cause},
                )
            case Retired(proxy, cause):
                self.stats.inc_value(keys.RETIREMENTS)
                logger.warning(
                    "Proxy %(proxy)s retired for the rest of the crawl after %(cause)s",
                    {"proxy": proxy, "cause": cause},
                )
            case Readmitted(proxy):
                self.stats.inc_value(keys.READMISSIONS)
                logger.info("Proxy %(proxy)s back in rotation after a good probe", {"proxy": proxy})
            case PairReadmitted():
                self.stats.inc_value(keys.PAIR_READMISSIONS)
            case Panic(proxy, cause):
                self.stats.inc_value(keys.PANIC)
                logger.warning(
                    "Too many proxies failing (%(cause)s) to take %(proxy)s out: keeping it, least-bad first",
                    {"proxy": proxy, "cause": cause},
                )
            case GateOpened(scope, failures, paths):
                self.stats.inc_value(keys.GATES_OPENED)
                logger.warning(
                    "%(what)s failed %(n)d times through %(paths)d paths and nothing works: holding its "
                    "requests and probing until it answers",
                    {"what": _scope_name(scope), "n": failures, "paths": paths},
                )
            case GateClosed(scope, seconds, held):
                self.stats.inc_value(keys.GATES_CLOSED)
                self.stats.max_value(keys.GATES_MAX_SECONDS, round(seconds, 3))
                logger.warning(
                    "%(what)s answers again after %(s).1fs: releasing what waited on it (%(held)d holds)",
                    {"what": _scope_name(scope), "s": seconds, "held": held},
                )
            case Forgiven(count):
                self.stats.inc_value(keys.FORGIVEN, count)
                logger.info("%(n)d proxies ejected during the provider-wide outage are back in rotation", {"n": count})
            case _:
                assert_never(event)

    def limit(
        self, slot: str, new: int, old: int, fault: Fault | None, *, fleet: bool = False, doubtful: bool = False
    ) -> None:
        """`fleet`: the fleet's shared limit changed (fleet_limits.py), not this process's own;
        `doubtful`: slow start took back the room of a failure nobody can blame yet."""
        self.stats.set_value(keys.concurrency_limit(slot), new)
        if doubtful and new < old:
            self.stats.inc_value(keys.CONCURRENCY_HELD_BACK)
            logger.debug(
                "Concurrency of %(slot)s held back to %(new)d in slow start: %(kind)s, that nobody can blame "
                "yet, frees no room",
                {"slot": slot, "new": new, "kind": fault.kind if fault else "a failure"},
            )
            return
        if new < old:
            self.stats.inc_value(keys.CONCURRENCY_DECREASES)
            if fleet:
                logger.info(
                    "Concurrency of %(slot)s lowered from %(old)d to %(new)d: the fleet's limit",
                    {"slot": slot, "old": old, "new": new},
                )
                return
            logger.info(
                "Concurrency of %(slot)s lowered from %(old)d to %(new)d after origin-blamed %(kind)s",
                {"slot": slot, "old": old, "new": new, "kind": fault.kind if fault else "errors"},
            )
        else:
            self.stats.inc_value(keys.CONCURRENCY_INCREASES)
            logger.debug("Concurrency of %(slot)s raised to %(new)d", {"slot": slot, "new": new})

    def unheard(self, slot: str, new: int | None, old: int | None, after: float) -> None:
        """Slow start gave the rooms of requests that waited past `after` seconds, with nothing
        heard back from the slot, to the next ones (concurrency.py, `late`); `new` and `old` are
        None when the fleet's limit is raised (fleet.py, `late`: Redis tells the new one)."""
        self.stats.inc_value(keys.CONCURRENCY_UNHEARD)
        if new is None or old is None:
            logger.debug(
                "Concurrency of %(slot)s: the fleet's limit is asked to rise in slow start: nothing has "
                "come back in %(after).2f s, so the requests waiting that long free their rooms",
                {"slot": slot, "after": after},
            )
            return
        self.stats.set_value(keys.concurrency_limit(slot), new)
        logger.debug(
            "Concurrency of %(slot)s raised from %(old)d to %(new)d in slow start: nothing has come back "
            "in %(after).2f s, so the requests waiting that long free their rooms",
            {"slot": slot, "old": old, "new": new, "after": after},
        )

    # -- over time -------------------------------------------------------------------------

    def gauges(self) -> dict[str, int]:
        counts = self.gateway.pool.counts(self.clock())
        self.stats.set_value(keys.PROXIES_TOTAL, len(self.gateway.pool))
        self.stats.set_value(keys.PROXIES_ACTIVE, counts["active"])
        self.stats.set_value(keys.PROXIES_EJECTED, counts["ejected"])
        self.stats.set_value(keys.PROXIES_RETIRED, counts["retired"])
        return counts

    def start(self) -> None:
        self.gauges()
        if self.interval > 0:
            loop = create_looping_call(self.periodic)
            loop.start(self.interval, now=False)
            self._loop = loop

    def periodic(self) -> None:
        counts = self.gauges()
        throttled = self.gateway.concurrency.limits()
        shown = ", ".join(f"{slot}={limit}" for slot, limit in sorted(throttled.items())[:5]) or "none"
        logger.info(
            "Gateway: proxies %(active)d active, %(ejected)d out, %(retired)d retired; "
            "retries %(retries)d, %(waiting)d waiting; throttled domains: %(throttled)s; "
            "since the last line: %(changes)s",
            {
                **counts,
                "retries": self.stats.get_value(f"{keys.RETRY_BASE}/count", 0),
                "waiting": self.waiting(),
                "throttled": shown + (f" (+{len(throttled) - 5} more)" if len(throttled) > 5 else ""),
                "changes": self.changes.line(throttled, self.gateway.pool.ejected(self.clock())),
            },
        )

    def close(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.gauges()
        if len(self.gateway.pool) == 0:
            return
        rows = [
            "%-44s %-9s %6s %9s %6s %7s  %s"
            % ("proxy", "state", "health", "requests", "ok", "origin", "proxy failures")
        ]
        for record in sorted(self.gateway.pool, key=lambda r: r.proxy.key)[:200]:
            health = record.health
            state = "probation" if health.probation else health.state.value
            shown = "%6.2f" % (1.0 - health.score) if health.state is State.ACTIVE else "%6s" % "-"
            failures = ", ".join(f"{k}={n}" for k, n in sorted(record.failures.items())) or "-"
            rows.append(
                "%-44s %-9s %s %9d %6d %7d  %s"
                % (
                    record.proxy.masked[:44],
                    state,
                    shown,
                    record.requests,
                    record.successes,
                    record.origin_failures,
                    failures,
                )
            )
        if len(self.gateway.pool) > 200:
            rows.append(f"... and {len(self.gateway.pool) - 200} more proxies")
        logger.info("Gateway proxy table:\n%(table)s", {"table": "\n".join(rows)})


def _scope_name(scope: str) -> str:
    return "Every proxy (provider-wide)" if scope == PROVIDER else f"Domain {scope}"
