"""GatewayMiddleware: the Scrapy adapter around the decision core.

It sits at 580, between RetryMiddleware (550) and HttpProxyMiddleware (750): its process_request
picks the proxy before HttpProxyMiddleware turns the URL's credentials into a header, and its
process_response sees a 502 before RetryMiddleware does. It translates Scrapy objects for the core,
asks it, and applies the answer; it makes no decision of its own.
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from scrapy import Request, signals
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.exceptions import NotConfigured
from scrapy.http import Response
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import load_object

from scrapy_gateway import jobstate
from scrapy_gateway import stats as keys
from scrapy_gateway.config import ConfigError, GatewayConfig
from scrapy_gateway.core.faults import Fault, classify_status, classify_transport
from scrapy_gateway.core.gateway import Gateway, Verdict
from scrapy_gateway.core.pool import Exhausted, Pick
from scrapy_gateway.core.proxies import ProxyListError, parse_proxy
from scrapy_gateway.downloader import GatewayDownloader
from scrapy_gateway.errors import NoProxyAvailable
from scrapy_gateway.handlers import transport_failure
from scrapy_gateway.masking import CredentialMask
from scrapy_gateway.parking import NOT_BEFORE, WaitingRoom
from scrapy_gateway.report import Reporter

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from typing_extensions import Self

logger = logging.getLogger("scrapy_gateway")

# Public meta keys.
SKIP = "gateway_skip"  # True: the gateway leaves this request alone
PIN = "gateway_proxy"  # a proxy URL this request must use (retries keep it)
# Private meta keys (immutable values: meta is copied shallowly).
PROXY_KEY = "_gateway_proxy_key"
TRIED = "_gateway_tried"
SENT_AT = "_gateway_sent_at"
PROXY_RETRIES = "_gateway_proxy_retries"  # retries paid from GATEWAY_MAX_PROXY_RETRIES
_HEADERS = (b"Proxy-Status", b"X-Squid-Error", b"Retry-After")
_UNJUDGED = object()


class GatewayMiddleware:
    def __init__(self, crawler: Crawler, config: GatewayConfig) -> None:
        self.crawler = crawler
        self.config = config
        self.gateway = Gateway(config.proxies, config.policy)
        self.rng = random.Random(config.seed)
        self.room = WaitingRoom(crawler)
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.report = Reporter(self.gateway, crawler.stats, config.log_interval, self.room.__len__)
        self._closing = False
        crawler.signals.connect(self._opened, signal=signals.spider_opened)
        crawler.signals.connect(self._closed, signal=signals.spider_closed)
        crawler.signals.connect(self._downloaded, signal=signals.response_downloaded)
        self._judged: WeakKeyDictionary[Request, Verdict | None] = WeakKeyDictionary()
        self.mask = CredentialMask.from_proxies(config.proxies)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        config = GatewayConfig.from_settings(crawler.settings)
        if not config.enabled:
            raise NotConfigured("GATEWAY_ENABLED is off")
        downloader = load_object(crawler.settings["DOWNLOADER"])
        if not (isinstance(downloader, type) and issubclass(downloader, GatewayDownloader)):
            raise ConfigError(
                "DOWNLOADER: scrapy-gateway needs DOWNLOADER = 'scrapy_gateway.GatewayDownloader' "
                "(the add-on sets it); without it per-domain limits do not hold and waiting retries "
                "are lost at close"
            )
        return cls(crawler, config)

    def _opened(self) -> None:
        jobstate.restore(self.gateway, self.crawler.settings)
        self.report.start()
        if self.gateway.pool:
            logger.info("scrapy-gateway: %(n)d proxies in the pool", {"n": len(self.gateway.pool)})

    def _closed(self) -> None:
        self.report.close()
        jobstate.save(self.gateway, self.crawler.settings)

    # -- requests --------------------------------------------------------------------------

    def process_request(self, request: Request) -> Request | None:
        meta = request.meta
        if meta.get(SKIP):
            return None
        if self.room.must_wait(request):
            return request  # resumed from a JOBDIR before its time: wait again, outside
        domain = urlparse_cached(request).hostname or ""
        now = time.monotonic()
        proxy_key: str | None = None
        if PIN in meta and PROXY_KEY not in meta:
            proxy_key = self._pin(request)
        elif "proxy" in meta and PROXY_KEY not in meta:
            pass  # the user's own proxy (or None for direct): kept as is, not scored
        elif self.gateway.pool:
            choice = self.gateway.route(domain, now, self.rng, meta.get(TRIED, ()))
            if not isinstance(choice, Pick):
                return self._no_proxy(request, choice)
            meta["proxy"] = choice.proxy.url
            proxy_key = meta[PROXY_KEY] = choice.proxy.key
        meta[SENT_AT] = now
        first_attempt = not meta.get("retry_times")
        if first_attempt:
            self.stats.inc_value(keys.REQUESTS)
        self.gateway.sent(proxy_key, domain, now, first_attempt=first_attempt)
        return None

    def _pin(self, request: Request) -> str | None:
        try:
            proxy = parse_proxy(str(request.meta[PIN]))
        except ProxyListError as exc:
            raise ConfigError(f"meta[{PIN!r}] of {request.url}: {exc}") from None
        request.meta["proxy"] = proxy.url
        record = self.gateway.pool.records.get(proxy.key)
        if record is not None:
            request.meta[PROXY_KEY] = proxy.key
            return proxy.key
        return None

    def _no_proxy(self, request: Request, choice: object) -> Request:
        if isinstance(choice, Exhausted) or self.config.when_all_down == "close":
            self.stats.inc_value(keys.NO_PROXY_ERRORS)
            self._close_crawl("gateway_no_proxies")
            raise NoProxyAvailable("no usable proxy left in GATEWAY_PROXIES; not sending without one")
        # Every proxy is cooling down: wait outside the downloader for the first re-admission.
        until = getattr(choice, "until", time.monotonic() + 1.0)
        self.stats.inc_value(keys.NO_PROXY_WAITS)
        waiting = request.replace(dont_filter=True)
        waiting.meta[NOT_BEFORE] = time.time() + max(0.05, until - time.monotonic())
        return waiting

    def _close_crawl(self, reason: str) -> None:
        engine = self.crawler.engine
        if self._closing or engine is None or engine.spider is None:
            return
        self._closing = True
        logger.error(
            "scrapy-gateway: closing the crawl (%(reason)s): every proxy is retired or out", {"reason": reason}
        )
        deferred_from_coro(engine.close_spider_async(reason=reason))

    # -- outcomes --------------------------------------------------------------------------

    def _downloaded(self, response: Response, request: Request) -> None:
        # response_downloaded fires before the downloader starts the slot's next request, so a
        # concurrency cut decided here already holds for it (in process_response it would not).
        if not request.meta.get(SKIP):
            self._judged[request] = self._judge_response(request, response)

    def process_response(self, request: Request, response: Response) -> Request | Response:
        if request.meta.get(SKIP):
            return response
        verdict = self._judged.pop(request, _UNJUDGED)
        if verdict is _UNJUDGED:  # a response that was not downloaded (a cache, another middleware)
            verdict = self._judge_response(request, response)
        if verdict is None:
            return response
        assert isinstance(verdict, Verdict)
        return self._act(request, verdict) or response

    def process_exception(self, request: Request, exception: Exception) -> Request | None:
        # Scrubbed in place (the same object) unless its class cannot take the masked text; then
        # the stand-in is raised, so that nothing after this point (RetryMiddleware, errbacks,
        # Scrapy's "Error downloading" log line) sees a proxy password.
        masked = self.mask.for_request(request).exception(exception)
        retry = self._on_exception(request, masked)
        if retry is None and masked is not exception:
            raise masked from masked.__cause__
        return retry

    def _on_exception(self, request: Request, exception: BaseException) -> Request | None:
        meta = request.meta
        if meta.get(SKIP):
            return None
        found = transport_failure(exception)
        if found is None:
            self.gateway.released(meta.get(PROXY_KEY), self._where(request)[0])
            return None
        fault = classify_transport(found.kind, via_proxy=bool(meta.get("proxy")), status=found.status)
        return self._act(request, self._judge(request, fault))

    def _where(self, request: Request) -> tuple[str, str]:
        domain = urlparse_cached(request).hostname or ""
        return domain, str(request.meta.get("download_slot", domain))

    def _judge_response(self, request: Request, response: Response) -> Verdict | None:
        """Tell the core how a download went; None when it went well."""
        meta = request.meta
        via_proxy = bool(meta.get("proxy"))
        if response.status not in self.config.http_codes and not (response.status == 407 and via_proxy):
            domain, slot = self._where(request)
            events, new_limit = self.gateway.on_success(
                meta.get(PROXY_KEY), domain, slot, time.monotonic(), meta.get(SENT_AT)
            )
            self.report.events(events)
            if new_limit is not None:
                self._apply_limit(slot, new_limit, None)
            return None
        headers = {}
        for name in _HEADERS:
            value = response.headers.get(name)
            if value:
                headers[name.decode().lower()] = value.decode("latin-1")
        fault = classify_status(
            response.status,
            headers,
            via_proxy=via_proxy,
            in_tunnel=via_proxy and urlparse_cached(request).scheme == "https",
            now_epoch=time.time(),
            retry_after_cap=self.config.retry_after_max,
        )
        return self._judge(request, fault)

    def _judge(self, request: Request, fault: Fault) -> Verdict:
        """Ask the core about a failure and apply what it decided about the domain."""
        meta = request.meta
        domain, slot = self._where(request)
        now = time.monotonic()
        proxy_retries = meta.get(PROXY_RETRIES, 0)
        downloader = self.crawler.engine.downloader if self.crawler.engine else None
        ceiling = downloader.slot_ceiling(slot) if isinstance(downloader, GatewayDownloader) else 8
        verdict = self.gateway.on_failure(
            fault,
            proxy=meta.get(PROXY_KEY),
            domain=domain,
            slot=slot,
            ceiling=ceiling,
            retries_done=meta.get("retry_times", 0) - proxy_retries,
            max_retries=meta.get("max_retry_times", self.config.max_retries),
            proxy_retries_done=proxy_retries,
            max_proxy_retries=self.config.max_proxy_retries,
            sent_at=meta.get(SENT_AT, now),
            now=now,
            rng=self.rng,
        )
        if verdict.new_limit is not None:
            self._apply_limit(slot, verdict.new_limit, verdict.fault)
        return verdict

    def _act(self, request: Request, verdict: Verdict) -> Request | None:
        """Return the retry request, or None after giving up."""
        meta = request.meta
        retry_times = meta.get("retry_times", 0)
        retry = None
        if verdict.fault.retryable and not meta.get("dont_retry"):
            retry = get_retry_request(
                request,
                spider=self.crawler.spider,  # type: ignore[arg-type]
                reason=verdict.fault.kind,
                # The core decided; this only lets get_retry_request agree (or log the give-up).
                max_retry_times=retry_times + (1 if verdict.retry else 0),
                stats_base_key=keys.RETRY_BASE,
                logger=logger,
            )
        self.report.failure(verdict, retried=retry is not None)
        if retry is None:
            meta["dont_retry"] = True  # the gateway gave up: RetryMiddleware must not try again
            return None
        if verdict.proxy_allowance:
            retry.meta[PROXY_RETRIES] = meta.get(PROXY_RETRIES, 0) + 1
        self._prepare_retry(retry, meta.get(PROXY_KEY), verdict.delay)
        logger.debug(
            "Retrying %(request)s after %(kind)s (%(blame)s) in %(delay).2fs",
            {"request": retry, "kind": verdict.fault.kind, "blame": verdict.fault.blame.value, "delay": verdict.delay},
        )
        return retry

    @staticmethod
    def _prepare_retry(retry: Request, proxy_key: str | None, delay: float) -> None:
        meta = retry.meta
        if proxy_key is not None:
            meta[TRIED] = (*meta.get(TRIED, ()), proxy_key)
        if PROXY_KEY in meta and PIN not in meta:
            # Our choice, not the user's: the next attempt picks again. Drop the old proxy's
            # credentials here too, so they can never ride along to the next proxy.
            del meta[PROXY_KEY]
            meta.pop("proxy", None)
            meta.pop("_auth_proxy", None)
            retry.headers.pop(b"Proxy-Authorization", None)
        elif PROXY_KEY in meta:
            del meta[PROXY_KEY]  # pinned: the same proxy again, re-resolved in process_request
        meta.pop(SENT_AT, None)
        if delay > 0:
            meta[NOT_BEFORE] = time.time() + delay

    def _apply_limit(self, slot: str, limit: int, fault: Fault | None) -> None:
        engine = self.crawler.engine
        downloader = engine.downloader if engine else None
        live = downloader.slots.get(slot) if downloader else None
        old = live.concurrency if live is not None else limit
        if live is not None:
            live.concurrency = limit
        self.report.limit(slot, limit, old, fault)
