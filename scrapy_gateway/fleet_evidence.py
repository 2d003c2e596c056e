"""The fleet's outcomes, in Redis: every process learns from what all of them see (core/heard.py).

Every 50 ms each process appends what it saw since (successes with their latency, failures with
the blame it settled, first attempts sent per domain) as one entry of the stream
`<prefix>:outcomes`, and reads the entries the others appended. `Gateway.hear` takes them in: the
judge's history, the proxies' and pairs' scores and latencies, the domains' latencies, the outage
gates' evidence and the retry budgets are then the fleet's, not each process's share of it. A
process on its own would judge an origin's overload from a quarter of the paths a fleet of four
uses, and take most of its failures for bans.

An entry carries no credentials: proxies are named by `Proxy.key` (scheme, user, host and port),
as in the proxy news. Entries older than `_STALE` (a process that stalled) are skipped, and so is
anything while Redis is lost (the outcomes of that time stay with the process that saw them).
An entry this version cannot read is skipped: the network's input never stops the crawl.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scrapy_gateway import stats as keys
from scrapy_gateway.core.faults import Blame, Fault
from scrapy_gateway.core.heard import Heard, Outbox

if TYPE_CHECKING:
    from scrapy_gateway.core.events import Event
    from scrapy_gateway.core.gateway import Gateway
    from scrapy_gateway.fleet import FleetLeases

logger = logging.getLogger("scrapy_gateway")

EVERY = 0.05  # seconds between exchanges of outcomes (one round trip each)
_KEPT = 5_000  # stream entries Redis keeps (approximately): 20 per second per process
_STALE = 5.0  # seconds after which an entry is no news any more
_HISTORY = 2.0  # seconds of the fleet's successes a starting process takes in (as if seen now)
_FRESH = 0.5  # seconds: older failures are skipped (they would count as seen now)
_READ = 200  # entries per read
_LONGEST = 86_400.0  # seconds: a latency, wait or Retry-After past this is garbage, not news

_BLAMES = {b.value[:2]: b for b in Blame}  # "pr", "pa", "or", "un"
_FLAGS = ("throttles", "hard", "retryable", "answered", "transport", "retires")
_CUT, _WITHDREW, _EVERYONE = 1 << 6, 1 << 7, 1 << 8


def encode(heard: Heard) -> list[Any]:
    """One outcome as a short JSON list (the stream carries thousands a second)."""
    fault, none = heard.fault, -1.0
    row: list[Any] = [heard.proxy or "", heard.domain, none if heard.latency is None else round(heard.latency, 4)]
    if fault is None:
        return row
    flags = sum(1 << i for i, name in enumerate(_FLAGS) if getattr(fault, name))
    flags |= (_CUT if heard.cut else 0) | (_WITHDREW if heard.withdrew else 0) | (_EVERYONE if heard.everyone else 0)
    row += [
        fault.kind,
        fault.blame.value[:2],
        heard.evidence.value[:2],
        flags,
        none if fault.retry_after is None else fault.retry_after,
        heard.probe or "",
        none if heard.waited is None else round(heard.waited, 4),
    ]
    return row


def _seconds(value: Any) -> float | None:
    """A duration from the stream: None for "none" (-1) and for anything no download could take."""
    seconds = float(value)
    return seconds if 0.0 <= seconds <= _LONGEST else None


def decode(row: Any) -> Heard | None:
    """The outcome of `encode`, or None when the row is not one (another version, or garbage)."""
    if not isinstance(row, list):
        return None
    try:
        proxy, domain, latency = str(row[0]) or None, str(row[1]), _seconds(row[2])
        if len(row) == 3:
            return Heard(proxy, domain, latency=latency)
        kind, blame, evidence, flags = str(row[3]), _BLAMES[row[4]], _BLAMES[row[5]], int(row[6])
        retry_after, probe, waited = _seconds(row[7]), str(row[8]) or None, _seconds(row[9])
    except (TypeError, ValueError, KeyError, IndexError, OverflowError):
        return None
    named = {name: bool(flags & (1 << i)) for i, name in enumerate(_FLAGS)}
    fault = Fault(kind, blame, retry_after=retry_after, **named)
    return Heard(
        proxy,
        domain,
        fault=fault,
        evidence=evidence,
        cut=bool(flags & _CUT),
        everyone=bool(flags & _EVERYONE),
        probe=probe,
        waited=waited,
        withdrew=bool(flags & _WITHDREW),
    )


class SharedEvidence:
    def __init__(self, fleet: FleetLeases, core: Gateway, rng: random.Random) -> None:
        self.fleet = fleet
        self.core = core
        self.rng = rng
        self.outbox = Outbox()
        # Called with (domain, events) when an outcome heard about the domain changed something here.
        self.on_events: Callable[[str, list[Event]], None] | None = None
        self._seen = "0-0"
        self._loop: asyncio.Task[None] | None = None

    @property
    def _key(self) -> str:
        return f"{self.fleet.prefix}:outcomes"

    def start(self) -> None:
        """After the fleet has started: from now on, this process shares and hears outcomes."""
        # A process joining a running fleet starts with what the others saw just before: without
        # it, its first requests judge the origin from no history at all.
        self._seen = f"{int((self.fleet.redis_now() - _HISTORY) * 1000)}-0"
        self.core.outbox = self.outbox
        self._loop = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        self.core.outbox = None
        if self._loop is not None:
            self._loop.cancel()
            self._loop = None
        await self._exchange(read=False)  # the last outcomes, for the processes that go on

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(EVERY)
            try:
                await self._exchange()
            except Exception:  # a bug here must not end the sharing for the rest of the crawl
                logger.exception("scrapy-gateway: sharing outcomes with the fleet failed")

    async def _exchange(self, *, read: bool = True) -> None:
        """Append what this process saw and read what the others did: one round trip."""
        outcomes, sent = self.outbox.take()
        fleet = self.fleet
        if not fleet.shared:
            return  # while Redis is lost, what this process saw stays its own
        pipe = fleet.client.pipeline(transaction=False)
        if outcomes or sent:
            fields = {"by": fleet.token, "o": json.dumps([encode(h) for h in outcomes]), "s": json.dumps(sent)}
            pipe.xadd(self._key, fields, maxlen=_KEPT, approximate=True)
        if read:
            pipe.xread({self._key: self._seen}, count=_READ)
        while len(pipe):
            replies = await fleet.call(pipe.execute())
            if not read or not replies:
                return
            entries = [entry for _stream, batch in replies[-1] or () for entry in batch]
            for entry_id, fields in entries:
                self._seen = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                self._hear(self._seen, fields)
            if len(entries) < _READ or not fleet.shared:
                return
            pipe.xread({self._key: self._seen}, count=_READ)  # a backlog: read on

    def _hear(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        fleet = self.fleet
        try:
            if fields[b"by"].decode() == fleet.token:
                return
            age = max(0.0, fleet.redis_now() - int(entry_id.split("-", 1)[0]) / 1000.0)
            if age > _STALE:
                return
            rows, sent = json.loads(fields[b"o"]), json.loads(fields[b"s"])
            if not isinstance(rows, list) or not isinstance(sent, dict):
                return
        except (KeyError, ValueError, UnicodeDecodeError, RecursionError):
            return
        core, now = self.core, fleet.clock()
        for domain, count in sent.items():
            if isinstance(domain, str) and isinstance(count, int) and count > 0:
                core.heard_sent(domain, count, now)
        heard = 0
        for row in rows:
            outcome = decode(row)
            # Failures are taken in as seen now: old ones would crowd the judge's and the gates'
            # windows into one moment (a joining process's history keeps its successes only).
            if outcome is None or (outcome.fault is not None and age > _FRESH):
                continue
            events = core.hear(outcome, now, self.rng, at=now - age)
            heard += 1
            if events and self.on_events is not None:
                self.on_events(outcome.domain, events)
        fleet.stats.inc_value(keys.FLEET_HEARD, heard)
