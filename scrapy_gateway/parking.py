"""The waiting room: retries wait here, outside Scrapy's scheduler and downloader.

A request that waits inside the downloader holds a global concurrency unit (notes/scrapy-2.19.md),
so a storming domain would starve the healthy ones. Instead a request whose attempt record carries
a `not_before` wall-clock time is caught by the `request_scheduled` signal, kept out of the
scheduler (raising IgnoreRequest there is silent: no errback, no request_dropped) and handed back
with `engine.crawl` when its time comes. While anything waits, `spider_idle` keeps the spider open.

Requests that never pass the scheduler (`engine.download_async`: robots.txt, media pipelines,
`scrapy shell`) cannot be parked that way: Scrapy downloads a request returned for them again at
once. They wait in GatewayDownloaderMixin.fetch instead (`wait_here`), before the downloader counts
them as active, so they hold no concurrency either and never spin.

Requests held by an outage gate (core/gates.py; their record names the gate) wait here too, in a
queue per gate instead of on a timer: every `_GATE_TICK` seconds the room hands one of them back
when the gate wants a probe, all of them when it closes (`release`), and all of them for one last
try each (their record marked `final`) when it has stayed open past its stall limit.

At close nothing is lost: with a Redis state, what Redis keeps for the fleet stays there
(fleet_waiting.py); else with a JOBDIR, or a scheduler that keeps its queue between runs
(scrapy-redis with SCHEDULER_PERSIST), parked requests go into the scheduler's queue (and wait
again on resume, since their record still carries `not_before`); otherwise each ends in its
errback with `RetryCancelled`, as does a request waiting in place once the spider starts closing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from scrapy import Request, signals
from scrapy.exceptions import DontCloseSpider, IgnoreRequest
from scrapy.utils.asyncio import CallLaterResult, call_later
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.job import job_dir
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from scrapy_gateway import stats as keys
from scrapy_gateway.compat import engine_of, is_closing
from scrapy_gateway.core.gates import PROVIDER
from scrapy_gateway.errors import RetryCancelled
from scrapy_gateway.meta import ATTEMPT, attempt_of, domain_of

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from scrapy_gateway.core.attempt import Attempt
    from scrapy_gateway.core.gates import OutageGates
    from scrapy_gateway.fleet_waiting import SharedWaiting

logger = logging.getLogger(__name__)

_EARLY_TOLERANCE = 0.002  # timers may fire a hair early; never enough to beat a Retry-After
_CLOSE_CHECK = 0.25  # seconds between looks at whether the spider is closing, while waiting in place
_GATE_TICK = 0.1  # seconds between looks at the open gates' probes and stall limits


class WaitingRoom:
    def __init__(
        self,
        crawler: Crawler,
        *,
        wall: Callable[[], float] = time.time,
        gates: OutageGates | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.crawler = crawler
        self.wall = wall
        self.clock = clock
        self.gates = gates
        self._waiting: dict[Request, CallLaterResult | None] = {}  # None: released while closing
        self._held: dict[str, list[Request]] = {}  # gate scope -> requests, oldest first
        self._gate_timer: CallLaterResult | None = None
        self._in_place = 0
        self._closing = False
        self.shared: SharedWaiting | None = None  # with a Redis state: what waits is kept there too
        crawler.signals.connect(self._on_scheduled, signal=signals.request_scheduled)
        crawler.signals.connect(self._on_idle, signal=signals.spider_idle)

    def parked(self) -> list[Request]:
        """The requests waiting here on a timer or a gate."""
        return [*self._waiting, *(r for held in self._held.values() for r in held)]

    @property
    def closing(self) -> bool:
        """flush() has run: nothing is parked any more."""
        return self._closing

    def __len__(self) -> int:
        return len(self._waiting) + self._in_place + sum(len(held) for held in self._held.values())

    def remaining(self, request: Request) -> float:
        """Seconds this request must still wait (0 when it may go now)."""
        return self.wait_left(attempt_of(request.meta))

    def wait_left(self, attempt: Attempt | None) -> float:
        """`remaining`, for a request whose record the caller has at hand."""
        if attempt is None or attempt.not_before is None:
            return 0.0
        left = attempt.not_before - self.wall()
        return left if left > _EARLY_TOLERANCE else 0.0

    @staticmethod
    def can_park(request: Request) -> bool:
        """Whether a request handed back to Scrapy now would pass the scheduler (and so this room)."""
        attempt = attempt_of(request.meta)
        return attempt is not None and attempt.scheduled

    def _on_scheduled(self, request: Request) -> None:
        attempt = attempt_of(request.meta)
        if attempt is None:
            return  # a first attempt: nothing to wait for, nothing to remember
        if not attempt.scheduled:
            # Remembered in the record, so it holds for copies and after a JOBDIR/redis round trip.
            request.meta[ATTEMPT] = attempt = replace(attempt, scheduled=True)
        if attempt.held is not None:
            if not self._closing and self.gates is not None and self.gates.is_open(attempt.held):
                self._hold(attempt.held, request)
                raise IgnoreRequest  # as below: silently kept out of the scheduler
            if self.gates is not None and self.gates.pending(attempt.held, self.clock()):
                # A pending gate: wait out the short recheck on a timer, then ask again.
                request.meta[ATTEMPT] = attempt = replace(attempt, held=None)
            else:
                # The gate closed while it was on its way here (or it came back from a JOBDIR): go now.
                request.meta[ATTEMPT] = attempt = replace(attempt, held=None, not_before=None)
        delay = self.remaining(request)
        if delay <= 0.0 or self._closing:
            if self.shared is not None:
                self.shared.unpark(request)  # one taken over from a gone process goes now
            return
        self._waiting[request] = call_later(delay, self._release, request)
        self._share(request)
        stats = self.crawler.stats
        if stats is not None:
            stats.max_value(keys.WAITING_MAX, len(self))
        raise IgnoreRequest  # silently keeps it out of the scheduler; see the module docstring

    def _release(self, request: Request) -> None:
        if request not in self._waiting:
            return
        if is_closing(self.crawler):
            self._waiting[request] = None  # the scheduler will not be drained again: flush() ends it
            return
        del self._waiting[request]
        self._hand_back(request)

    async def wait_here(self, request: Request) -> None:
        """Wait out the request's `not_before` in place; RetryCancelled once the spider is closing."""
        self._in_place += 1
        stats = self.crawler.stats
        if stats is not None:
            stats.max_value(keys.WAITING_MAX, len(self))
        try:
            while (left := self.remaining(request)) > 0.0:
                if self._closing or is_closing(self.crawler):
                    if stats is not None:
                        stats.inc_value(keys.WAITING_CANCELLED)
                    raise RetryCancelled("the crawl closed while this request waited for its retry")
                tick: Deferred[None] = Deferred()
                call_later(min(left, _CLOSE_CHECK), tick.callback, None)
                await maybe_deferred_to_future(tick)
        finally:
            self._in_place -= 1
        attempt = attempt_of(request.meta)
        if attempt is not None:
            request.meta[ATTEMPT] = replace(attempt, not_before=None)

    # -- held by outage gates ---------------------------------------------------------------

    def _share(self, request: Request) -> None:
        # Not once the crawl is closing: flush() could not know whether Redis got it in time.
        if self.shared is not None and self.crawler.spider is not None and not is_closing(self.crawler):
            self.shared.park(request, self.crawler.spider)

    def _hold(self, scope: str, request: Request) -> None:
        self._held.setdefault(scope, []).append(request)
        self._share(request)
        stats = self.crawler.stats
        if stats is not None:
            stats.max_value(keys.WAITING_MAX, len(self))
        if self._gate_timer is None:
            self._gate_timer = call_later(_GATE_TICK, self._gate_tick)

    def release(self, scope: str) -> int:
        """The gate closed: hand back everything it held, at once (the slot limits pace it), and
        the retries of its scope still waiting out a backoff computed while it was down."""
        held = self._held.pop(scope, [])
        for request in held:
            self._hand_back(request)
        self._wake_backoffs(scope)
        return len(held)

    def _wake_backoffs(self, scope: str) -> None:
        # A Retry-After is the origin's own word and keeps its time; a backoff only guessed.
        for request, timer in list(self._waiting.items()):
            attempt = attempt_of(request.meta)
            if timer is None or attempt is None or attempt.told_to_wait:
                continue
            if scope != PROVIDER and domain_of(request) != scope:
                continue
            timer.cancel()
            del self._waiting[request]
            self._hand_back(request)

    def _hand_back(self, request: Request) -> None:
        """To the engine, due now and waiting on no gate."""
        if self.shared is not None:
            self.shared.unpark(request)
        attempt = attempt_of(request.meta)
        if attempt is not None:
            request.meta[ATTEMPT] = replace(attempt, held=None, not_before=None)
        engine = engine_of(self.crawler)
        if engine is not None:
            engine.crawl(request)

    def _gate_tick(self) -> None:
        self._gate_timer = None
        if self._closing or is_closing(self.crawler) or self.gates is None:
            return  # flush() takes care of what is held
        now = self.clock()
        for scope in list(self._held):
            held = self._held[scope]
            if not self.gates.is_open(scope):
                self.release(scope)
            elif self.gates.stalled(scope, now):
                self._end_stalled(scope)
            elif self.gates.probe_due(scope, now) and held:
                self._hand_back(held.pop(0))  # it asks again, and goes as the probe
                if not held:
                    del self._held[scope]
        if self._held:
            self._gate_timer = call_later(_GATE_TICK, self._gate_tick)

    def _end_stalled(self, scope: str) -> None:
        """One last try each, past the gate: the spider gets what the outage gives them."""
        held = self._held.pop(scope, [])
        stats = self.crawler.stats
        for request in held:
            attempt = attempt_of(request.meta)
            if attempt is not None:
                request.meta[ATTEMPT] = replace(attempt, final=True)
            self._hand_back(request)
            if stats is not None:
                stats.inc_value(keys.GATES_STALLED)
        if held:
            logger.error(
                "scrapy-gateway: %(scope)s has failed for longer than GATEWAY_OUTAGE_STALL: %(n)d waiting "
                "requests get one last try each",
                {"scope": "every proxy" if scope == PROVIDER else scope, "n": len(held)},
            )

    def _on_idle(self) -> None:
        if self._waiting or self._held:
            raise DontCloseSpider

    def flush(self) -> None:
        """Hand every parked request back before the scheduler closes (see GatewayDownloaderMixin)."""
        self._closing = True
        if self._gate_timer is not None:
            self._gate_timer.cancel()
            self._gate_timer = None
        for held in self._held.values():
            for request in held:
                self._waiting[request] = None
        self._held = {}
        if not self._waiting:
            return
        waiting, self._waiting = self._waiting, {}
        engine = engine_of(self.crawler)
        persistent = job_dir(self.crawler.settings) is not None or _scheduler_persists(engine)
        stats = self.crawler.stats
        kept = 0
        for request, timer in waiting.items():
            if timer is not None:
                timer.cancel()
            if self.shared is not None:
                if self.shared.kept(request):
                    kept += 1  # in Redis: the fleet's next process takes it (fleet_waiting.py)
                    if stats is not None:
                        stats.inc_value(keys.WAITING_PERSISTED)
                    continue
                self.shared.unpark(request)  # not confirmed in time: ended here, so removed there
            if engine is None:
                continue
            if persistent and engine.scheduler is not None:
                engine.scheduler.enqueue_request(request)
                if stats is not None:
                    stats.inc_value(keys.WAITING_PERSISTED)
            else:
                failure = Failure(RetryCancelled("the crawl closed while this request waited for its retry"))  # type: ignore[no-untyped-call]
                engine.scraper.enqueue_scrape(failure, request)
                if stats is not None:
                    stats.inc_value(keys.WAITING_CANCELLED)
        if kept:
            logger.info("scrapy-gateway: %(n)d waiting retries left in the fleet's Redis at close", {"n": kept})
        if len(waiting) > kept:
            logger.info(
                "scrapy-gateway: %(n)d waiting retries %(what)s at close",
                {
                    "n": len(waiting) - kept,
                    "what": "saved in the scheduler's queue" if persistent else "sent to their errbacks",
                },
            )


def _scheduler_persists(engine: object) -> bool:
    """A scheduler that keeps its queue across runs without a JOBDIR: scrapy-redis's with
    SCHEDULER_PERSIST = True (its `persist`). Parked retries go into it (they are dont_filter, so
    its dupefilter keeps them) and wait again in whichever process takes them next."""
    scheduler = getattr(engine, "scheduler", None)
    return getattr(scheduler, "persist", False) is True
