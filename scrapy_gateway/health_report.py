"""The crawl health report (GATEWAY_REPORT_FILE): samples the gateway on a timer, writes a page at close.

The Scrapy side of core/timeline.py: a looping call samples every GATEWAY_REPORT_INTERVAL seconds
(nothing is added per request but one count per failure), reading each download slot's limit and
transfers from Scrapy's downloader, which the core does not see. At spider_closed it renders the
page (report_page.py) and replaces the file atomically, so a reader never sees half a page; a
failure there is logged and never reaches the close, which must still save state and finish.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from scrapy.utils.asyncio import AsyncioLoopingCall, create_looping_call

from scrapy_gateway import stats as keys
from scrapy_gateway.compat import engine_of
from scrapy_gateway.core.faults import Blame
from scrapy_gateway.core.gateway import Gateway, Verdict
from scrapy_gateway.core.timeline import Sampler, SlotView
from scrapy_gateway.masking import CredentialMask
from scrapy_gateway.report_page import Summary, render

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector
    from twisted.internet.task import LoopingCall

logger = logging.getLogger("scrapy_gateway")

# (label, stats key): the summary line at the top of the page
_FIGURES = (
    ("pages", "response_received_count"),
    ("items", "item_scraped_count"),
    ("first attempts", keys.REQUESTS),
    ("retries", f"{keys.RETRY_BASE}/count"),
    ("gave up", f"{keys.RETRY_BASE}/max_reached"),
    ("ejections", keys.EJECTIONS),
    ("gates opened", keys.GATES_OPENED),
)


class HealthReport:
    def __init__(
        self,
        crawler: Crawler,
        gateway: Gateway,
        stats: StatsCollector,
        mask: CredentialMask,
        path: str,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.crawler = crawler
        self.stats = stats
        self.mask = mask
        self.path = Path(path)
        self.interval = interval
        self.clock = clock
        self.wall = wall
        self.sampler = Sampler(gateway)
        self._loop: AsyncioLoopingCall | LoopingCall | None = None
        self._began = 0.0

    def failure(self, domain: str, verdict: Verdict, retried: bool) -> None:
        fault = verdict.fault
        self.sampler.failure(domain, fault.kind, fault.blame.value, retried)

    def start(self) -> None:
        self._began = self.clock()
        self.sample()
        loop = create_looping_call(self.sample)
        loop.start(self.interval, now=False)
        self._loop = loop

    def sample(self) -> None:
        try:
            self.sampler.sample(self.clock(), self._slots())
        except Exception:  # a bug here must not stop the crawl, nor the next samples
            logger.exception("scrapy-gateway: sampling for the health report failed")

    def _slots(self) -> dict[str, SlotView]:
        engine = engine_of(self.crawler)
        downloader = engine.downloader if engine is not None else None
        slots = getattr(downloader, "slots", None) or {}
        return {key: SlotView(slot.concurrency, len(slot.transferring)) for key, slot in slots.items()}

    def close(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        try:
            self.sampler.finish(self.clock(), self._slots())
            page = render(self.sampler, self._summary(), self.mask)
            self.write(page)
        except Exception as exc:
            logger.error(
                "scrapy-gateway: could not write the health report %(path)s: %(error)s",
                {"path": str(self.path), "error": self.mask.text(f"{type(exc).__name__}: {exc}")},
                exc_info=not isinstance(exc, OSError),  # a bug of ours deserves its traceback
            )
            return
        logger.info(
            "scrapy-gateway: health report written to %(path)s (%(kb).0f kB)",
            {"path": str(self.path), "kb": len(page.encode()) / 1000},
        )

    def write(self, page: str) -> None:
        """Replace the file at once: a new name in the same folder, then renamed over it."""
        handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(page)
            os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from whoever serves the folder
            os.replace(temporary, self.path)
        except BaseException:
            os.unlink(temporary)
            raise

    def _summary(self) -> Summary:
        stats = self.stats
        spider = self.crawler.spider
        name = getattr(spider, "name", None) or "crawl"
        figures = [(label, stats.get_value(key, 0)) for label, key in _FIGURES]
        figures.append(("seconds", round(self.clock() - self._began, 1)))
        blame = {who.value: stats.get_value(keys.blame(who.value), 0) for who in Blame}
        generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.wall()))
        return Summary(f"scrapy-gateway health report: {name}", generated, figures, blame)
