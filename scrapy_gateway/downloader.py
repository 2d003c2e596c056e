"""GatewayDownloader: Scrapy's Downloader, with per-slot concurrency that holds.

Two changes, both small:
1. Under the asyncio reactor Scrapy 2.19 pops a slot's whole queue before any download task runs
   (the request joins `slot.transferring` only when its task starts), so `slot.concurrency` is not
   enforced. Reserving the transfer place before scheduling the task makes it hold.
2. Slots idle for 60 s are garbage-collected and recreated with defaults; a gateway limit is
   re-applied whenever a slot is (re)created, and the waiting room is flushed before the
   scheduler closes.
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING, Any

from scrapy.core.downloader import Downloader, Slot
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import _schedule_coro

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler

    from scrapy_gateway.middleware import GatewayMiddleware


class GatewayDownloader(Downloader):
    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        from scrapy_gateway.middleware import GatewayMiddleware

        found = [mw for mw in self.middleware.middlewares if isinstance(mw, GatewayMiddleware)]
        self.gateway: GatewayMiddleware | None = found[0] if found else None

    def slot_ceiling(self, key: str) -> int:
        """The user's own limit for a slot: its DOWNLOAD_SLOTS entry, else the global one."""
        configured: Any = self.per_slot_settings.get(key, {}).get("concurrency")
        return int(configured) if configured is not None else (self.ip_concurrency or self.domain_concurrency)

    def _get_slot(self, request: Request, spider: Spider | None = None) -> tuple[str, Slot]:
        key, slot = super()._get_slot(request)
        if self.gateway is not None:
            limit = self.gateway.gateway.concurrency.limit(key)
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
            _schedule_coro(self._wait_for_download(slot, request, queue_dfd))
            if delay:
                self._process_queue(slot)
                break

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.room.flush()
        super().close()
