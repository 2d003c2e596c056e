"""The waiting room: retries wait here, outside Scrapy's scheduler and downloader.

A request that waits inside the downloader holds a global concurrency unit (notes/scrapy-2.19.md),
so a storming domain would starve the healthy ones. Instead a request whose attempt record carries
a `not_before` wall-clock time is caught by the `request_scheduled` signal, kept out of the
scheduler (raising IgnoreRequest there is silent: no errback, no request_dropped) and handed back
with `engine.crawl` when its time comes. While anything waits, `spider_idle` keeps the spider open.

Requests that never pass the scheduler (`engine.download_async`: robots.txt, media pipelines,
`scrapy shell`) cannot be parked that way: Scrapy downloads a request returned for them again at
once. They wait on a timer inside the middleware instead (`wait_here`), which costs them their
downloader place but never spins.

At close, nothing is lost: with a JOBDIR waiting requests go into the scheduler's disk queue (and
wait again on resume, since their record still carries `not_before`); without one each ends in its
errback with `RetryCancelled`, as does a request waiting in place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING
from weakref import WeakSet

from scrapy import Request, signals
from scrapy.exceptions import DontCloseSpider, IgnoreRequest
from scrapy.utils.asyncio import CallLaterResult, call_later
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.job import job_dir
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from scrapy_gateway import stats as keys
from scrapy_gateway.compat import engine_of
from scrapy_gateway.errors import RetryCancelled
from scrapy_gateway.meta import ATTEMPT, attempt_of

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

_EARLY_TOLERANCE = 0.002  # timers may fire a hair early; never enough to beat a Retry-After


class WaitingRoom:
    def __init__(self, crawler: Crawler, *, wall: Callable[[], float] = time.time) -> None:
        self.crawler = crawler
        self.wall = wall
        self._waiting: dict[Request, CallLaterResult] = {}
        self._in_place: dict[Deferred[None], CallLaterResult] = {}
        self._scheduled: WeakSet[Request] = WeakSet()  # requests seen on their way to the scheduler
        self._closing = False
        crawler.signals.connect(self._on_scheduled, signal=signals.request_scheduled)
        crawler.signals.connect(self._on_idle, signal=signals.spider_idle)

    def __len__(self) -> int:
        return len(self._waiting) + len(self._in_place)

    def remaining(self, request: Request) -> float:
        """Seconds this request must still wait (0 when it may go now)."""
        attempt = attempt_of(request.meta)
        if attempt is None or attempt.not_before is None:
            return 0.0
        left = attempt.not_before - self.wall()
        return left if left > _EARLY_TOLERANCE else 0.0

    def can_park(self, request: Request) -> bool:
        """Whether a request handed back to Scrapy now would pass the scheduler (and so this room)."""
        attempt = attempt_of(request.meta)
        return request in self._scheduled or (attempt is not None and attempt.persisted)

    def _on_scheduled(self, request: Request) -> None:
        delay = self.remaining(request)
        if delay <= 0.0 or self._closing:
            self._scheduled.add(request)
            return
        self._waiting[request] = call_later(delay, self._release, request)
        stats = self.crawler.stats
        if stats is not None:
            stats.max_value(keys.WAITING_MAX, len(self))
        raise IgnoreRequest  # silently keeps it out of the scheduler; see the module docstring

    def _release(self, request: Request) -> None:
        if self._waiting.pop(request, None) is None:
            return
        attempt = attempt_of(request.meta)
        if attempt is not None:
            request.meta[ATTEMPT] = replace(attempt, not_before=None, persisted=False)
        engine = engine_of(self.crawler)
        if engine is None or engine.spider is None:
            return
        engine.crawl(request)

    async def wait_here(self, delay: float) -> None:
        """Wait in place, for a request that cannot be parked; RetryCancelled if the crawl closes."""
        if self._closing:
            raise RetryCancelled("the crawl closed while this request waited for its retry")
        done: Deferred[None] = Deferred()
        self._in_place[done] = call_later(delay, self._wake, done)
        stats = self.crawler.stats
        if stats is not None:
            stats.max_value(keys.WAITING_MAX, len(self))
        await maybe_deferred_to_future(done)

    def _wake(self, done: Deferred[None]) -> None:
        if self._in_place.pop(done, None) is not None:
            done.callback(None)

    def _on_idle(self) -> None:
        if self._waiting:
            raise DontCloseSpider

    def flush(self) -> None:
        """Hand every waiting request back before the scheduler closes (see GatewayDownloader)."""
        self._closing = True
        for done, timer in list(self._in_place.items()):
            timer.cancel()
            del self._in_place[done]
            done.errback(Failure(RetryCancelled("the crawl closed while this request waited for its retry")))  # type: ignore[no-untyped-call]
        if not self._waiting:
            return
        waiting, self._waiting = self._waiting, {}
        engine = engine_of(self.crawler)
        persistent = job_dir(self.crawler.settings) is not None
        stats = self.crawler.stats
        for request, timer in waiting.items():
            timer.cancel()
            if engine is None:
                continue
            if persistent and engine.scheduler is not None:
                attempt = attempt_of(request.meta)
                if attempt is not None:
                    request.meta[ATTEMPT] = replace(attempt, persisted=True)
                engine.scheduler.enqueue_request(request)
                if stats is not None:
                    stats.inc_value(keys.WAITING_PERSISTED)
            else:
                failure = Failure(RetryCancelled("the crawl closed while this request waited for its retry"))  # type: ignore[no-untyped-call]
                engine.scraper.enqueue_scrape(failure, request)
                if stats is not None:
                    stats.inc_value(keys.WAITING_CANCELLED)
        logger.info(
            "scrapy-gateway: %(n)d waiting retries %(what)s at close",
            {"n": len(waiting), "what": "saved to JOBDIR" if persistent else "sent to their errbacks"},
        )
