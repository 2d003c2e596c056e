"""GatewayDownloaderMixin: per-slot concurrency that holds, for Scrapy's Downloader or yours.

Three changes, all small:
1. Under the asyncio reactor Scrapy 2.19 pops a slot's whole queue before any download task runs
   (the request joins `slot.transferring` only when its task starts), so `slot.concurrency` is not
   enforced. Reserving the transfer place before scheduling the task makes it hold.
2. Slots idle for 60 s are garbage-collected and recreated with defaults; a gateway limit is
   re-applied whenever a slot is (re)created, and the waiting room is flushed before the
   scheduler closes.
3. A request due later that arrives without passing the scheduler waits in `fetch`, before the
   downloader counts it (see parking.py).
4. Downloads run under the gateway's per-attempt timeouts: the handler table is wrapped in a
   DeadlineWatch (see deadlines.py), and, with a shared state, under fleet-wide leases (fleet.py);
   as each transfer starts, the middleware may hold it back for an outage gate that opened while
   it waited, or move it off a proxy taken out meanwhile.

A project with a Downloader of its own combines them as
`class MyDownloader(GatewayDownloaderMixin, YourDownloader)`; the add-on does that by itself.
"""

from __future__ import annotations

import warnings
from time import monotonic
from typing import TYPE_CHECKING, ClassVar

from scrapy.core.downloader import Downloader, Slot
from scrapy.exceptions import ScrapyDeprecationWarning
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import _schedule_coro, deferred_from_coro, maybe_deferred_to_future
from scrapy.utils.deprecate import argument_is_required
from scrapy.utils.python import global_object_name

from scrapy_gateway import meta as m
from scrapy_gateway.compat import check_internals
from scrapy_gateway.deadlines import DeadlineWatch, WatchedHandlers
from scrapy_gateway.runtime import GatewayRuntime

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.internet.defer import Deferred

    _Base = Downloader
else:
    _Base = object


class GatewayDownloaderMixin(_Base):
    gateway_holds_slot_limits: ClassVar[bool] = True  # what GatewayRuntime.check_downloader looks for

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        check_internals(self)
        self.gateway_runtime = runtime = GatewayRuntime.of(crawler)
        timeout = crawler.settings.getfloat("DOWNLOAD_TIMEOUT")
        self.gateway_deadlines = DeadlineWatch(runtime.core, runtime.clock, timeout, self._gateway_late)
        # Duck-typed: it forwards every other attribute to Scrapy's own table.
        self.handlers = WatchedHandlers(  # type: ignore[assignment]
            self.handlers, self.gateway_deadlines, runtime.fleet, self._gateway_slot_of, self._gateway_starting
        )
        # A project's fetch(request, spider) still gets its spider, and the deprecation warning
        # Scrapy would have given it (the engine only sees this class's optional argument).
        self._fetch_needs_spider = argument_is_required(super().fetch, "spider")
        if self._fetch_needs_spider:
            warnings.warn(
                f"The fetch() method of {global_object_name(type(self))} requires a spider argument,"
                " this is deprecated and the argument will not be passed in future Scrapy versions.",
                ScrapyDeprecationWarning,
                stacklevel=2,
            )

    def fetch(self, request: Request, spider: Spider | None = None) -> Deferred[Response | Request]:
        # A request due later that reached the downloader without being parked (engine.download_async
        # never passes the scheduler) waits here, before super().fetch counts it as active.
        if self.gateway_runtime.room.remaining(request) > 0.0 and not self.gateway_runtime.room.can_park(request):
            return deferred_from_coro(self._fetch_when_due(request))
        return self._fetch(request)

    def _gateway_slot_of(self, request: Request) -> tuple[str, int]:
        """The request's slot key and the user's limit there (fleet.py: the fleet's ceiling)."""
        key = self.get_slot_key(request)
        return key, self.gateway_runtime.config.ceiling(key)

    def _gateway_late(self, key: str, waiting: int) -> None:
        """`waiting` downloads of the slot have waited long with nothing heard back (deadlines.py):
        in slow start, their rooms go to the next requests (concurrency.py, `late`)."""
        runtime = self.gateway_runtime
        fleet = runtime.fleet
        if fleet is not None and fleet.shared:
            # The fleet's limit rules there (fleet_limits.py): Redis raises it, the leases follow.
            if fleet.late(key, runtime.config.ceiling(key), waiting):
                runtime.report.unheard(key, None, None, runtime.core.unheard_after())
            return
        slot = self.slots.get(key)
        limit = runtime.core.concurrency.late(key, waiting)
        if slot is None or limit is None:
            return
        old, slot.concurrency = slot.concurrency, limit
        runtime.report.unheard(key, limit, old, runtime.core.unheard_after())
        self._process_queue(slot)

    def _gateway_starting(self, request: Request) -> None:
        """As its transfer starts (the middleware sets the hook: it is built after this class)."""
        starting = self.gateway_runtime.starting
        if starting is not None:
            starting(request)

    async def _fetch_when_due(self, request: Request) -> Response | Request:
        await self.gateway_runtime.room.wait_here(request)
        return await maybe_deferred_to_future(self._fetch(request))

    def _fetch(self, request: Request) -> Deferred[Response | Request]:
        if self._fetch_needs_spider:
            return super().fetch(request, self.crawler.spider)  # type: ignore[no-any-return]
        return super().fetch(request)  # type: ignore[no-any-return]

    def _get_slot(self, request: Request, spider: Spider | None = None) -> tuple[str, Slot]:
        key, slot = super()._get_slot(request)
        runtime = self.gateway_runtime
        control = runtime.core.concurrency
        limit = control.limit(key)
        if runtime.fleet is not None and runtime.fleet.shared and runtime.judging:
            # The fleet's limit (fleet_limits.py), slow start's first one until Redis has said.
            shared = runtime.fleet.limit(key) or control.initial
            limit = min(shared, runtime.config.ceiling(key)) if shared else None
        elif limit is None and runtime.judging:
            limit = control.begin(key, runtime.config.ceiling(key))  # slow start
        if limit is not None:
            slot.concurrency = limit
        return key, slot

    def _process_queue(self, slot: Slot) -> None:
        if slot.latercall:
            return
        now = monotonic()
        delay = slot.download_delay()
        if delay:
            penalty = delay - now + slot.lastseen
            if penalty > 0:
                slot.latercall = call_later(penalty, self._latercall, slot)
                return
        while slot.queue and slot.free_transfer_slots() > 0:
            slot.lastseen = now
            request, queue_dfd = slot.queue.popleft()
            slot.transferring.add(request)  # the fix: reserve before the task exists
            request.meta[m.LOAD] = len(slot.transferring)  # what slow start learns from (concurrency.py)
            _schedule_coro(self._wait_for_download(slot, request, queue_dfd))
            if delay:
                self._process_queue(slot)
                break

    def close(self) -> None:
        self.gateway_runtime.room.flush()
        self.gateway_deadlines.stop()
        super().close()


class GatewayDownloader(GatewayDownloaderMixin, Downloader):
    """Scrapy's Downloader with the gateway's fix: `DOWNLOADER = "scrapy_gateway.GatewayDownloader"`."""
