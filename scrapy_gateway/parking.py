"""The waiting room: retries wait here, outside Scrapy's scheduler and downloader.

A request that waits inside the downloader holds a global concurrency unit (notes/scrapy-2.19.md),
so a storming domain would starve the healthy ones. Instead a request carrying a `NOT_BEFORE`
wall-clock time is caught by the `request_scheduled` signal, kept out of the scheduler (raising
IgnoreRequest there is silent: no errback, no request_dropped) and handed back with
`engine.crawl` when its time comes. While anything waits, `spider_idle` keeps the spider open.

At close, waiting requests are not lost: with a JOBDIR they go into the scheduler's disk queue (and
wait again on resume, because they still carry `NOT_BEFORE`); without one each ends in its errback
with `RetryCancelled`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from scrapy import Request, signals
from scrapy.exceptions import DontCloseSpider, IgnoreRequest
from scrapy.utils.asyncio import CallLaterResult, call_later
from scrapy.utils.job import job_dir
from twisted.python.failure import Failure

from scrapy_gateway import stats as keys
from scrapy_gateway.errors import RetryCancelled

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

NOT_BEFORE = "_gateway_not_before"  # wall-clock (epoch) seconds; survives a pause and resume
_EARLY_TOLERANCE = 0.002  # timers may fire a hair early; never enough to beat a Retry-After


class WaitingRoom:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self._waiting: dict[Request, CallLaterResult] = {}
        self._closing = False
        crawler.signals.connect(self._on_scheduled, signal=signals.request_scheduled)
        crawler.signals.connect(self._on_idle, signal=signals.spider_idle)

    def __len__(self) -> int:
        return len(self._waiting)

    @staticmethod
    def must_wait(request: Request) -> float:
        """Seconds this request must still wait (0 when it may go now)."""
        not_before = request.meta.get(NOT_BEFORE)
        if not isinstance(not_before, (int, float)):
            return 0.0
        remaining = float(not_before) - time.time()
        return remaining if remaining > _EARLY_TOLERANCE else 0.0

    def _on_scheduled(self, request: Request) -> None:
        delay = self.must_wait(request)
        if delay <= 0.0 or self._closing:
            return
        self._waiting[request] = call_later(delay, self._release, request)
        stats = self.crawler.stats
        if stats is not None:
            stats.max_value(keys.WAITING_MAX, len(self._waiting))
        raise IgnoreRequest  # silently keeps it out of the scheduler; see the module docstring

    def _release(self, request: Request) -> None:
        if self._waiting.pop(request, None) is None:
            return
        request.meta.pop(NOT_BEFORE, None)
        engine = self.crawler.engine
        if engine is None or engine.spider is None:
            return
        engine.crawl(request)

    def _on_idle(self) -> None:
        if self._waiting:
            raise DontCloseSpider

    def flush(self) -> None:
        """Hand every waiting request back before the scheduler closes (see GatewayDownloader)."""
        self._closing = True
        if not self._waiting:
            return
        waiting, self._waiting = self._waiting, {}
        engine = self.crawler.engine
        persistent = job_dir(self.crawler.settings) is not None
        stats = self.crawler.stats
        for request, timer in waiting.items():
            timer.cancel()
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
        logger.info(
            "scrapy-gateway: %(n)d waiting retries %(what)s at close",
            {"n": len(waiting), "what": "saved to JOBDIR" if persistent else "sent to their errbacks"},
        )
