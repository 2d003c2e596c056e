"""The crawl's gateway: one object per crawler that owns the core, the waiting room and the config.

The middleware and the downloader both find it with `GatewayRuntime.of(crawler)`; neither knows
the other, so the import graph stays a tree (runtime <- middleware, runtime <- downloader). Clock
and randomness live here and are injectable, so the adapters can be unit-tested without a crawl.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from scrapy import Request, signals
from scrapy.exceptions import CloseSpider
from scrapy.utils.asyncio import is_asyncio_available
from scrapy.utils.misc import load_object

from scrapy_gateway import jobstate
from scrapy_gateway import meta as m
from scrapy_gateway.compat import engine_of, is_closing
from scrapy_gateway.config import ConfigError, GatewayConfig
from scrapy_gateway.core.gateway import Gateway
from scrapy_gateway.fleet import FleetLeases, FleetUnavailable
from scrapy_gateway.fleet_evidence import SharedEvidence
from scrapy_gateway.fleet_waiting import ADOPT_EVERY, SharedWaiting
from scrapy_gateway.health_report import HealthReport
from scrapy_gateway.masking import CredentialMask
from scrapy_gateway.parking import WaitingRoom
from scrapy_gateway.report import Reporter

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger("scrapy_gateway")

# Download handlers that choose the route themselves (a browser, an API): a request they carry
# never goes through meta["proxy"], so scoring a proxy for it would score the wrong thing.
_OWN_ROUTE_HANDLERS = ("scrapy_playwright.", "scrapy_zyte_api.")
_ATTRIBUTE = "_scrapy_gateway_runtime"  # on the crawler: both die together (a weak map would pin it)


class GatewayRuntime:
    def __init__(
        self,
        crawler: Crawler,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.crawler = crawler
        self.config = GatewayConfig.from_settings(crawler.settings)
        self.clock = clock  # monotonic seconds: every decision of the core
        self.wall = wall  # epoch seconds: Retry-After dates, and waits that survive a restart
        self.core = Gateway(self.config.proxies, self.config.policy)
        self.mask = CredentialMask.from_proxies(self.config.proxies)  # what must never be shown
        self.rng = random.Random(self.config.seed)
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.room = WaitingRoom(crawler, wall=wall, gates=self.core.gates, clock=clock)
        self.report = Reporter(self.core, crawler.stats, self.config.log_interval, self.room.__len__, clock=clock)
        self.health_report = self._health_report()
        self.own_route_handlers = _own_route_handlers(crawler.settings)
        self.zyte_transparent = bool(crawler.settings.getbool("ZYTE_API_TRANSPARENT_MODE", False))
        # Set by the middleware: without it nothing reports clean responses, so a slow start
        # begun by the downloader alone would never grow past its first limit.
        self.judging = False
        # Set by the middleware: the downloader calls it as a request's transfer starts (it may
        # raise HeldAtStart: see errors.py).
        self.starting: Callable[[Request], None] | None = None
        self.fleet = self._fleet() if self.config.enabled else None
        self.waiting = None if self.fleet is None else SharedWaiting(self.fleet, crawler.spidercls.name)
        self.evidence = None if self.fleet is None else SharedEvidence(self.fleet, self.core, self.rng)
        self.room.shared = self.waiting
        self._adopter: asyncio.Task[None] | None = None
        if self.config.enabled:
            crawler.signals.connect(self._opened, signal=signals.spider_opened)
            crawler.signals.connect(self._closed, signal=signals.spider_closed)
            if self.fleet is not None:
                crawler.signals.connect(self._join_fleet, signal=signals.spider_opened)
                crawler.signals.connect(self._leave_fleet, signal=signals.spider_closed)

    def _fleet(self) -> FleetLeases | None:
        config = self.config
        if config.state == "memory":
            return None
        if not is_asyncio_available():
            raise ConfigError(
                "GATEWAY_STATE: a Redis state needs Scrapy's asyncio reactor (TWISTED_REACTOR = "
                "'twisted.internet.asyncioreactor.AsyncioSelectorReactor', Scrapy's default) or "
                "TWISTED_REACTOR_ENABLED = False"
            )
        try:
            import redis.asyncio  # noqa: F401
        except ImportError:
            message = "GATEWAY_STATE: a Redis state needs redis-py: pip install scrapy-gateway[redis]"
            raise ConfigError(message) from None
        fleet = FleetLeases(
            config.state, config.state_prefix, config.lease_ttl, self.stats, self.clock, self.core.concurrency
        )
        # The fleet's limit rules each slot (the downloader applies it): its phase judges failures.
        self.core.fleet_phase = fleet.phase
        return fleet

    def _health_report(self) -> HealthReport | None:
        config = self.config
        if not config.enabled or config.report_file is None:
            return None
        return HealthReport(
            self.crawler,
            self.core,
            self.stats,
            self.mask,
            config.report_file,
            config.report_interval,
            clock=self.clock,
            wall=self.wall,
        )

    @classmethod
    def of(cls, crawler: Crawler) -> GatewayRuntime:
        """The crawler's runtime, created by whichever component asks first."""
        runtime: GatewayRuntime | None = getattr(crawler, _ATTRIBUTE, None)
        if runtime is None:
            runtime = cls(crawler)
            setattr(crawler, _ATTRIBUTE, runtime)
        return runtime

    @classmethod
    def install(cls, crawler: Crawler, **kwargs: Any) -> GatewayRuntime:
        """Create the crawler's runtime with an injected clock (tests); before any component."""
        if getattr(crawler, _ATTRIBUTE, None) is not None:
            raise RuntimeError("this crawler already has a scrapy-gateway runtime")
        runtime = cls(crawler, **kwargs)
        setattr(crawler, _ATTRIBUTE, runtime)
        return runtime

    def check_downloader(self) -> None:
        """Per-domain limits hold only with the gateway's downloader fix; say so at start-up."""
        downloader = load_object(self.crawler.settings["DOWNLOADER"])
        if not getattr(downloader, "gateway_holds_slot_limits", False):
            raise ConfigError(
                "DOWNLOADER: scrapy-gateway needs its downloader fix: use the add-on, or set DOWNLOADER = "
                "'scrapy_gateway.GatewayDownloader', or for a Downloader of your own "
                "`class MyDownloader(scrapy_gateway.GatewayDownloaderMixin, YourDownloader)`; without it "
                "per-domain limits do not hold and waiting retries are lost at close"
            )

    def carries_own_route(self, meta: Mapping[str, Any]) -> bool:
        """The request (of this meta) goes through a browser or an API that picks the route, not
        meta["proxy"]."""
        if meta.get(m.PLAYWRIGHT):
            return True
        if meta.get(m.ZYTE_API) or meta.get(m.ZYTE_API_AUTOMAP):
            return True
        return self.zyte_transparent and meta.get(m.ZYTE_API_AUTOMAP, True) is not False

    def now(self) -> float:
        return self.clock()

    # -- lifecycle -------------------------------------------------------------------------

    def _opened(self) -> None:
        jobstate.restore(self.core, self.crawler.settings)
        self.report.start()
        if self.health_report is not None:
            self.health_report.start()
        if self.core.pool:
            logger.info("scrapy-gateway: %(n)d proxies in the pool", {"n": len(self.core.pool)})
        extra = self.config.max_proxy_retries
        logger.info(
            "scrapy-gateway: %(note)s%(extra)s",
            {
                "note": self.config.retry_note,
                "extra": f"; up to {extra} more on other proxies for a proxy's own failures" if extra else "",
            },
        )
        if self.own_route_handlers or self.zyte_transparent:
            logger.info(
                "scrapy-gateway: requests carried by %(handlers)s (meta playwright, zyte_api, "
                "zyte_api_automap, or Zyte API transparent mode) choose their own route: the gateway "
                "leaves them alone and scores no proxy for them",
                {"handlers": ", ".join(self.own_route_handlers) or "scrapy_zyte_api"},
            )

    async def _join_fleet(self) -> None:
        assert self.fleet is not None and self.waiting is not None and self.evidence is not None
        try:
            await self.fleet.start()
        except FleetUnavailable as exc:
            logger.error("scrapy-gateway: %(error)s", {"error": exc})
            raise CloseSpider("gateway_state_unavailable") from None
        self.evidence.start()
        await self.waiting.start()
        waiting = self.waiting
        self.fleet.on_rejoin = lambda: waiting.rejoined(self.crawler.spider, self.room.parked())
        await self._adopt()
        self._adopter = asyncio.ensure_future(self._adopt_loop())

    async def _adopt(self) -> None:
        """Schedule the waiting retries of processes that are gone (they wait here again)."""
        assert self.waiting is not None
        engine, spider = engine_of(self.crawler), self.crawler.spider
        if engine is None or spider is None or is_closing(self.crawler):
            return
        adopted = await self.waiting.adopt(spider)
        if is_closing(self.crawler) or self.room.closing:
            # Closing meanwhile: they stay in Redis, owned by this process until it says goodbye
            # (a moment from now), then the fleet's next process takes them.
            self.waiting.forget(adopted)
            return
        for request in adopted:
            engine.crawl(request)

    async def _adopt_loop(self) -> None:
        assert self.fleet is not None and self.waiting is not None
        while True:
            await asyncio.sleep(min(ADOPT_EVERY, self.fleet.ttl / 3.0))
            try:
                await self.waiting.keep_alive()
                await self._adopt()
            except Exception:  # a bug here must not stop the renewal: the fleet would take over
                logger.exception("scrapy-gateway: keeping this process's waiting retries in Redis failed")

    async def _leave_fleet(self) -> None:
        assert self.fleet is not None and self.waiting is not None and self.evidence is not None
        if self._adopter is not None:
            self._adopter.cancel()
            self._adopter = None
        await self.evidence.close()
        await self.waiting.leave()
        await self.fleet.close()

    def _closed(self) -> None:
        self.report.close()
        jobstate.save(self.core, self.crawler.settings)
        if self.health_report is not None:
            self.health_report.close()


def _own_route_handlers(settings: Any) -> list[str]:
    handlers = settings.getdict("DOWNLOAD_HANDLERS") if hasattr(settings, "getdict") else {}
    found = []
    for handler in handlers.values():
        path = handler if isinstance(handler, str) else f"{getattr(handler, '__module__', '')}."
        if isinstance(path, str) and path.startswith(_OWN_ROUTE_HANDLERS):
            found.append(path.split(".", 1)[0])
    return sorted(set(found))
