"""GatewayMiddleware: the Scrapy adapter around the decision core.

It sits at 595, between RetryMiddleware (550) and HttpProxyMiddleware (750), above
HttpCompressionMiddleware (590): its process_request picks the proxy before HttpProxyMiddleware
turns the URL's credentials into a header, and its process_response sees a 502 (or a truncated
reply) before RetryMiddleware or decompression do. It translates Scrapy objects for the core, asks
it, and applies the answer; it makes no decision of its own.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from scrapy import Request, signals
from scrapy.downloadermiddlewares.httpcompression import HttpCompressionMiddleware
from scrapy.downloadermiddlewares.httpproxy import HttpProxyMiddleware
from scrapy.downloadermiddlewares.retry import RetryMiddleware, get_retry_request
from scrapy.exceptions import NotConfigured, ResponseDataLossError
from scrapy.http import Response
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import load_object

from scrapy_gateway import meta as m
from scrapy_gateway import stats as keys
from scrapy_gateway.compat import engine_of
from scrapy_gateway.config import ConfigError
from scrapy_gateway.core.attempt import Attempt
from scrapy_gateway.core.events import Ejected, Event, GateClosed, PairEjected, Retired
from scrapy_gateway.core.faults import Fault, TransportError, classify_status, classify_transport
from scrapy_gateway.core.gates import PROVIDER, Hold
from scrapy_gateway.core.gateway import Verdict, opens_outage
from scrapy_gateway.core.pool import Exhausted, Pick, Wait
from scrapy_gateway.core.proxies import Proxy, ProxyListError, parse_proxy
from scrapy_gateway.downloader import GatewayDownloaderMixin
from scrapy_gateway.errors import HeldAtStart, NoProxyAvailable
from scrapy_gateway.handlers import transport_failure
from scrapy_gateway.runtime import GatewayRuntime

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from typing_extensions import Self

logger = logging.getLogger("scrapy_gateway")

_HEADERS = (b"Proxy-Status", b"X-Squid-Error", b"Retry-After")
_UNJUDGED = object()


class _GiveUpOnly(logging.LoggerAdapter):  # type: ignore[type-arg]
    """get_retry_request's logger: its give-up ERROR stays, its "Retrying" DEBUG line is ours."""

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        pass


class GatewayMiddleware:
    def __init__(self, crawler: Crawler, runtime: GatewayRuntime) -> None:
        self.crawler = crawler
        self.runtime = runtime
        self.config = runtime.config
        self.core = runtime.core
        self.room = runtime.room
        self.report = runtime.report
        self.health_report = runtime.health_report
        self.stats = runtime.stats
        self._retry_logger = _GiveUpOnly(logger, {})
        self._now = runtime.clock  # runtime.now(), without the extra call on every request
        self._carries_own_route = runtime.carries_own_route
        # A request's first record is the same value for every request without meta of its own
        # (Attempt is frozen): built once, not per request.
        self._plain_first = self._new_first_attempt({})
        self._has_pool = bool(runtime.core.pool)  # the pool's proxies are fixed at start-up
        self._closing = False
        self._ask_partial = _may_ask_for_partial_bodies(crawler, type(self))
        self._judged: WeakKeyDictionary[Request, Verdict | None] = WeakKeyDictionary()
        self.mask = runtime.mask
        runtime.judging = True
        runtime.starting = self._starting
        self._http_proxy: HttpProxyMiddleware | None = None  # the crawl's, found on first use
        self._http_proxy_looked = False
        crawler.signals.connect(self._downloaded, signal=signals.response_downloaded)
        if runtime.fleet is not None:
            # With a Redis state the fleet's limit rules each slot (fleet_limits.py): this
            # process reports what it sees and applies what the fleet decided; and the proxies
            # another process took out are out here too.
            runtime.fleet.on_limit = self._fleet_limit
            runtime.fleet.on_proxy_news = self._fleet_proxy_news
        if runtime.evidence is not None:
            runtime.evidence.on_events = self._heard_events  # what the others' outcomes changed here

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        runtime = GatewayRuntime.of(crawler)
        if not runtime.config.enabled:
            raise NotConfigured("GATEWAY_ENABLED is off")
        runtime.check_downloader()
        return cls(crawler, runtime)

    def _left_alone(self, meta: dict[str, Any]) -> bool:
        """`meta`: the request's (asked four times per attempt, so read once by the caller)."""
        return bool(meta.get(m.SKIP)) or self._carries_own_route(meta)

    # -- requests --------------------------------------------------------------------------

    def process_request(self, request: Request) -> Request | None:
        meta = request.meta
        if self._left_alone(meta):
            return None
        attempt = m.attempt_of(meta)
        if attempt is None:
            attempt = self._first_attempt(meta)
        elif self.room.wait_left(attempt) > 0.0:
            # Due later (back from a JOBDIR or redis queue): handed back, it waits in the room.
            return request
        domain = m.domain_of(request)
        now = self._now()
        proxy_key: str | None = None
        pinned = m.PIN in meta
        users_proxy = not pinned and m.PROXY in meta and not attempt.rotating
        probe = None
        if not attempt.final:
            admitted = self.core.admit(domain, now, via_pool=not (pinned or users_proxy))
            if isinstance(admitted, Hold):
                if not admitted.stalled:
                    return self._hold(request, attempt, admitted, now)
                self._stalled(admitted)
                attempt = replace(attempt, final=True)
            else:
                probe = admitted.probe
                if probe is not None:
                    self.stats.inc_value(keys.GATES_PROBES)
        if pinned:
            proxy_key = self._pin(request)
        elif users_proxy:
            pass  # the user's own proxy (or None for direct): kept as is, not scored
        elif self._has_pool:
            choice = self.core.route(domain, now, self.runtime.rng, attempt.tried)
            if not isinstance(choice, Pick):
                return self._no_proxy(request, attempt, choice)
            proxy = choice.proxy
            meta[m.PROXY] = proxy.url
            proxy_key = proxy.key
        asked_partial = attempt.asked_partial and meta.get(m.DATALOSS) is False
        if self._ask_partial and m.DATALOSS not in meta:
            # A cut body still carries its status and headers (a 503's Retry-After, say): have
            # Scrapy hand it over, judge it, and deliver ResponseDataLossError if we give up.
            meta[m.DATALOSS] = False
            asked_partial = True
        first = attempt.sends == 0
        meta.pop(m.DOWNLOAD_LATENCY, None)  # an earlier attempt's: the deadline watch reads this one's
        meta[m.ATTEMPT] = attempt.sending(proxy_key, now, pinned=pinned, asked_partial=asked_partial, probe=probe)
        if first:
            self.stats.inc_value(keys.REQUESTS)
        self.core.sent(proxy_key, domain, now, first_attempt=first)
        return None

    def _starting(self, request: Request) -> None:
        """As its transfer starts: a request admitted and routed on arrival has queued for its
        slot, and meanwhile an outage gate may have opened (the first failures of the requests
        ahead of it), or its proxy may have been taken out. The gate holds it back then (raising
        HeldAtStart, which process_exception turns into the parked request); a proxy taken out is
        replaced by another, with that proxy's credentials only, as Scrapy's HttpProxyMiddleware
        sets them (without it, the request goes as routed)."""
        meta = request.meta
        attempt = m.attempt_of(meta)
        # Left alone, a request's record (copied from another's meta) is nobody's: it must not
        # take a probe whose outcome nothing would report.
        if attempt is None or self._left_alone(meta):
            return
        domain, now = m.domain_of(request), self._now()
        admitted = self.core.starting(attempt, domain, now)  # Go() at once while no gate is open
        if isinstance(admitted, Hold):
            if not admitted.stalled:
                raise HeldAtStart(admitted)
            self._stalled(admitted)  # its gate stalled while it queued: its last try, as on arrival
            meta[m.ATTEMPT] = attempt = replace(attempt, final=True)
        elif admitted.probe is not None:
            meta[m.ATTEMPT] = attempt = replace(attempt, probe=admitted.probe)
            self.stats.inc_value(keys.GATES_PROBES)
        if attempt.proxy is None or not self.core.stranded(attempt, domain, now):
            return  # the common case ends here
        record = self.core.pool.records.get(attempt.proxy)
        http_proxy = self._find_http_proxy()
        # Only a request that still goes where this middleware sent it (no other component has
        # changed its proxy since, and its record is not one copied from another request's meta).
        if record is None or http_proxy is None or not _goes_to(meta.get(m.PROXY), record.proxy):
            return
        choice = self.core.reroute(attempt, domain, now, self.runtime.rng)
        if choice is None:
            return
        routed = Request(request.url, meta={m.PROXY: choice.proxy.url})
        try:
            http_proxy.process_request(routed)
        except Exception as exc:  # a password its HTTPPROXY_AUTH_ENCODING cannot encode, say
            logger.warning(
                "scrapy-gateway: %(request)s goes through the proxy it was first routed to: %(error)s",
                {"request": request, "error": self.mask.text(f"{type(exc).__name__}: {exc}")},
            )
            return
        meta[m.ATTEMPT] = self.core.rerouted(attempt, choice.proxy.key, domain, now)
        _forget_proxy(request)
        meta[m.PROXY] = routed.meta[m.PROXY]
        if m.AUTH_PROXY in routed.meta:
            meta[m.AUTH_PROXY] = routed.meta[m.AUTH_PROXY]
            request.headers[b"Proxy-Authorization"] = routed.headers[b"Proxy-Authorization"]
        self.stats.inc_value(keys.REROUTED)

    def _find_http_proxy(self) -> HttpProxyMiddleware | None:
        """The crawl's HttpProxyMiddleware (None when disabled): it already ran for the request."""
        if not self._http_proxy_looked:
            engine = engine_of(self.crawler)
            manager = engine.downloader.middleware if engine is not None else None
            chain = getattr(manager, "middlewares", ())
            self._http_proxy = next((mw for mw in chain if isinstance(mw, HttpProxyMiddleware)), None)
            self._http_proxy_looked = True
        return self._http_proxy

    def _first_attempt(self, meta: dict[str, Any]) -> Attempt:
        if m.RETRY_TIMES in meta or m.DONT_RETRY in meta or m.MAX_RETRY_TIMES in meta:
            return self._new_first_attempt(meta)
        return self._plain_first  # what _new_first_attempt gives for a meta without those keys

    def _new_first_attempt(self, meta: dict[str, Any]) -> Attempt:
        retry_times = meta.get(m.RETRY_TIMES, 0)
        if meta.get(m.DONT_RETRY) or self.config.retries_off:
            return Attempt(0, 0, retries=retry_times)
        limit = meta.get(m.MAX_RETRY_TIMES)
        if limit is not None:
            # A request's own limit is a limit on every kind of retry when it is zero.
            limit = int(limit)
            return Attempt(limit, self.config.max_proxy_retries if limit else 0, retries=retry_times)
        return Attempt(self.config.max_retries, self.config.max_proxy_retries, retries=retry_times)

    def _pin(self, request: Request) -> str | None:
        try:
            proxy = parse_proxy(str(request.meta[m.PIN]))
        except ProxyListError as exc:
            raise ConfigError(f"meta[{m.PIN!r}] of {request.url}: {exc}") from None
        request.meta[m.PROXY] = proxy.url
        record = self.core.pool.records.get(proxy.key)
        # Scored as the pool's proxy only with the pool's credentials: a pin with another password
        # must not get the pool's good proxy retired for its own 407.
        return proxy.key if record is not None and record.proxy.password == proxy.password else None

    def _no_proxy(self, request: Request, attempt: Attempt, choice: Wait | Exhausted) -> Request:
        if isinstance(choice, Exhausted) or self.config.when_all_down == "close":
            self.stats.inc_value(keys.NO_PROXY_ERRORS)
            self._close_crawl("gateway_no_proxies")
            raise NoProxyAvailable("no usable proxy left in GATEWAY_PROXIES; not sending without one")
        # Every proxy is cooling down: wait for the first re-admission, parked in the room (or, off
        # the scheduler's path, in GatewayDownloaderMixin.fetch), holding no concurrency.
        self.stats.inc_value(keys.NO_PROXY_WAITS)
        delay = max(0.05, choice.until - self._now())
        waiting = request.replace(dont_filter=True)
        waiting.meta[m.ATTEMPT] = replace(attempt, not_before=self.runtime.wall() + delay)
        return waiting

    def _stalled(self, hold: Hold) -> None:
        """Its gate stayed open past GATEWAY_OUTAGE_STALL: one last try, and its real outcome."""
        self.stats.inc_value(keys.GATES_STALLED)
        if hold.announce:
            logger.error(
                "scrapy-gateway: %(scope)s has failed for longer than GATEWAY_OUTAGE_STALL: its requests get "
                "one last try each and end with what it gives",
                {"scope": "every proxy" if hold.scope == PROVIDER else hold.scope},
            )

    def _hold(self, request: Request, attempt: Attempt, hold: Hold, now: float) -> Request:
        """An outage gate holds it: parked in the room until a probe or the release (parking.py)."""
        self.stats.inc_value(keys.GATES_HELD)
        waiting = request.replace(dont_filter=True)
        not_before = self.runtime.wall() + max(0.0, hold.until - now)
        waiting.meta[m.ATTEMPT] = replace(attempt, held=hold.scope, not_before=not_before)
        return waiting

    def _events(self, events: tuple[Event, ...] | list[Event]) -> None:
        self.report.events(events)
        for event in events:
            if isinstance(event, GateClosed):
                self.room.release(event.scope)

    def _heard_events(self, domain: str, events: list[Event]) -> None:
        """What another process's outcome about `domain` changed here; an outage gate it opened
        undoes the cuts of the domain's slot since it last worked, in the fleet's limit too."""
        self._events(events)
        fleet = self.runtime.fleet
        if fleet is not None and opens_outage(events, domain):
            fleet.outage(domain, self.config.ceiling(domain))

    def _share_news(self, events: tuple[Event, ...]) -> None:
        """With a Redis state, the proxies and pairs this process took out are out for the fleet."""
        fleet = self.runtime.fleet
        if fleet is not None:
            for event in events:
                if isinstance(event, Ejected | PairEjected | Retired):
                    fleet.publish_proxy_news(event)

    def _fleet_proxy_news(self, event: Event, seconds_left: float) -> None:
        if self.core.gates.is_open(PROVIDER):
            return  # the pool is innocent of a provider-wide outage, whoever saw it
        if self.core.pool.learned(event, self._now(), seconds_left=seconds_left):
            self.report.learned(event, seconds_left)

    def _close_crawl(self, reason: str) -> None:
        engine = engine_of(self.crawler)
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
        if not self._left_alone(request.meta):
            self._judged[request] = self._judge_response(request, response)

    def process_response(self, request: Request, response: Response) -> Request | Response:
        if self._left_alone(request.meta):
            return response
        verdict = self._judged.pop(request, _UNJUDGED)
        if verdict is _UNJUDGED:  # not downloaded: a cache hit, or another middleware's answer
            if "cached" in response.flags:
                self._release(request)  # a cached page says nothing about the proxy or the origin now
                return response
            verdict = self._judge_response(request, response)
        if verdict is None:
            return response
        assert isinstance(verdict, Verdict)
        retry = self._act(request, verdict)
        if retry is not None:
            return retry
        if self._cut_by_us(request, response):
            # Given up on a truncated reply: the spider gets what Scrapy itself would deliver.
            raise ResponseDataLossError(f"the response of {request.url} was cut short")
        return response

    def process_exception(self, request: Request, exception: Exception) -> Request | None:
        if isinstance(exception, HeldAtStart):
            return self._held_at_start(request, exception.hold)
        # Scrubbed in place (the same object) unless its class cannot take the masked text; then
        # the stand-in is raised, so that nothing after this point (RetryMiddleware, errbacks,
        # Scrapy's "Error downloading" log line) sees a proxy password.
        masked = self.mask.for_request(request).exception(exception)
        retry = self._on_exception(request, masked)
        if retry is None and masked is not exception:
            raise masked from masked.__cause__
        return retry

    def _on_exception(self, request: Request, exception: BaseException) -> Request | None:
        if self._left_alone(request.meta):
            return None
        found = transport_failure(exception, self.config.transport_rules)
        if found is None:
            self._release(request)
            return None
        fault = classify_transport(found.kind, via_proxy=bool(request.meta.get(m.PROXY)), status=found.status)
        return self._act(request, self._judge(request, fault))

    def _held_at_start(self, request: Request, hold: Hold) -> Request:
        """Nothing was sent: it frees its place on the proxy and waits on the gate again, routed
        afresh when it goes (without the proxy's credentials meanwhile)."""
        attempt = m.attempt_of(request.meta)
        assert attempt is not None  # only _starting raises it, for a request with a record
        now = self._now()
        self.core.unsent(attempt, m.domain_of(request), now)
        self.stats.inc_value(keys.GATES_HELD_AT_START)
        waiting = self._hold(request, attempt.waiting_on(hold.scope), hold, now)
        if attempt.rotating:
            _forget_proxy(waiting)
        return waiting

    def _release(self, request: Request) -> None:
        """The download ended in something that is nobody's fault: only free what it held."""
        attempt = m.attempt_of(request.meta)
        if attempt is not None:
            domain = self._where(request)[0]
            self.core.released(attempt.proxy, domain, probe=attempt.probe, now=self._now())

    def _where(self, request: Request) -> tuple[str, str]:
        domain = m.domain_of(request)
        return domain, str(request.meta.get(m.DOWNLOAD_SLOT, domain))

    def _cut_by_us(self, request: Request, response: Response) -> bool:
        """A truncated body Scrapy handed over only because the gateway asked it to."""
        if "dataloss" not in response.flags:
            return False
        attempt = m.attempt_of(request.meta)
        return attempt is not None and attempt.asked_partial

    def _judge_response(self, request: Request, response: Response) -> Verdict | None:
        """Tell the core how a download went; None when it went well."""
        meta = request.meta
        attempt = m.attempt_of(meta)
        via_proxy = bool(meta.get(m.PROXY))
        status = response.status
        handled = status in self.config.http_codes or (status == 407 and via_proxy)
        if not handled and self._cut_by_us(request, response):
            # The headers arrived, the body did not: a dropped reply, retried like one.
            return self._judge(request, classify_transport(TransportError.DROPPED, via_proxy=via_proxy))
        if not handled:
            domain, slot = self._where(request)
            load = _load(meta)
            events, new_limit = self.core.on_success(
                attempt.proxy if attempt else None,
                domain,
                slot,
                self._now(),
                _latency(meta),
                load,
                sent_at=_started(meta, attempt) if attempt else None,
            )
            if events:
                self._events(events)
            fleet = self.runtime.fleet
            if fleet is not None and fleet.shared:
                fleet.clean(slot, self.config.ceiling(slot), load)
            elif new_limit is not None:  # alone, or while Redis is lost: this process's own limits
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
            now_epoch=self.runtime.wall(),
            retry_after_cap=self.config.retry_after_max,
        )
        return self._judge(request, fault)

    def _judge(self, request: Request, fault: Fault) -> Verdict:
        """Ask the core about a failure and apply what it decided about the domain."""
        domain, slot = self._where(request)
        attempt = m.attempt_of(request.meta) or self._first_attempt(request.meta)
        # Retries share Scrapy's retry_times counter: those RetryMiddleware made count too.
        shared = request.meta.get(m.RETRY_TIMES, 0) - attempt.proxy_retries
        if shared > attempt.retries:
            attempt = replace(attempt, retries=shared)
        started = _started(request.meta, attempt)
        if started is not None:
            # Sent when its transfer began, not when it joined its slot's queue: errors of requests
            # queued before a cut but sent after it are the new limit's, and do cut again.
            attempt = replace(attempt, sent_at=started)
        verdict = self.core.on_failure(
            fault,
            attempt,
            domain=domain,
            slot=slot,
            ceiling=self.config.ceiling(slot),
            now=self._now(),
            rng=self.runtime.rng,
            load=_load(request.meta),
        )
        fleet = self.runtime.fleet
        if fleet is not None and fleet.shared:
            ceiling = self.config.ceiling(slot)
            if verdict.outage:
                fleet.outage(slot, ceiling)
            elif verdict.overload:
                sent_at = attempt.sent_at if attempt.sent_at is not None else self._now()
                fleet.overloaded(slot, ceiling, sent_at, _load(request.meta))
            elif verdict.doubtful:
                fleet.doubtful(slot, ceiling, _load(request.meta))
        elif verdict.new_limit is not None:
            self._apply_limit(slot, verdict.new_limit, verdict.fault, doubtful=verdict.doubtful)
        return verdict

    def _fleet_limit(self, slot: str, limit: int) -> None:
        self._apply_limit(slot, limit, None, fleet=True)

    def _act(self, request: Request, verdict: Verdict) -> Request | None:
        """Return the retry request, or None after giving up."""
        meta = request.meta
        retry = None
        if verdict.fault.retryable and not meta.get(m.DONT_RETRY):
            retry_times = meta.get(m.RETRY_TIMES, 0)
            retry = get_retry_request(
                request,
                spider=self.crawler.spider,  # type: ignore[arg-type]
                reason=verdict.fault.kind,
                # The core decided; this only lets get_retry_request agree (or log the give-up).
                max_retry_times=retry_times + (1 if verdict.retry else 0),
                stats_base_key=keys.RETRY_BASE,
                logger=self._retry_logger,  # type: ignore[arg-type]
            )
        self.report.failure(verdict, retried=retry is not None)
        if self.health_report is not None:
            self.health_report.failure(m.domain_of(request), verdict, retry is not None)
        self._share_news(verdict.events)
        if retry is None or verdict.next_attempt is None:
            meta[m.DONT_RETRY] = True  # the gateway gave up: RetryMiddleware must not try again
            return None
        self._prepare_retry(request, retry, verdict)
        logger.debug(
            "Retrying %(request)s after %(kind)s (%(blame)s) in %(delay).2fs",
            {"request": retry, "kind": verdict.fault.kind, "blame": verdict.fault.blame.value, "delay": verdict.delay},
        )
        return retry

    def _prepare_retry(self, original: Request, retry: Request, verdict: Verdict) -> None:
        meta = retry.meta
        assert verdict.next_attempt is not None
        previous = m.attempt_of(meta)
        not_before = self.runtime.wall() + verdict.delay if verdict.delay > 0 else None
        told = verdict.fault.retry_after is not None
        meta[m.ATTEMPT] = replace(verdict.next_attempt, not_before=not_before, told_to_wait=told)
        if previous is not None and previous.rotating:
            # Our choice, not the user's: the next attempt picks again. Drop the old proxy's
            # credentials here too, so they can never ride along to the next proxy.
            _forget_proxy(retry)
        if verdict.next_attempt.held is not None:
            # Held by an outage gate: the outage costs it no retry, in Scrapy's count either.
            meta[m.RETRY_TIMES] = original.meta.get(m.RETRY_TIMES, 0)
        if verdict.next_attempt.asked_partial:
            meta.pop(m.DATALOSS, None)  # ours, not the user's: set again on the next attempt

    def _apply_limit(
        self, slot: str, limit: int, fault: Fault | None, *, fleet: bool = False, doubtful: bool = False
    ) -> None:
        engine = engine_of(self.crawler)
        downloader = engine.downloader if engine else None
        live = downloader.slots.get(slot) if downloader else None
        old = live.concurrency if live is not None else limit
        if live is not None:
            live.concurrency = limit
            if limit > old and isinstance(downloader, GatewayDownloaderMixin):
                # Nothing else pulls the slot's queue when no download ends: the fleet's limit
                # raised for requests long unanswered (fleet.late) would free rooms nobody takes.
                downloader._process_queue(live)
        if fleet and limit == old:
            return
        self.report.limit(slot, limit, old, fault, fleet=fleet, doubtful=doubtful)


def _forget_proxy(request: Request) -> None:
    """The gateway's proxy choice, and the credentials HttpProxyMiddleware set for it, are gone."""
    request.meta.pop(m.PROXY, None)
    request.meta.pop(m.AUTH_PROXY, None)
    request.headers.pop(b"Proxy-Authorization", None)


def _goes_to(url: object, proxy: Proxy) -> bool:
    """`meta["proxy"]` (as HttpProxyMiddleware left it) names this proxy's host and port."""
    try:
        named = parse_proxy(url) if isinstance(url, str) else None
    except ProxyListError:
        return False
    return named is not None and (named.host, named.port) == (proxy.host, proxy.port)


def _latency(meta: dict[str, Any]) -> float | None:
    """Scrapy's time to the response headers (set by its handlers), not time queued in a slot."""
    value = meta.get(m.DOWNLOAD_LATENCY)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _started(meta: dict[str, Any], attempt: Attempt) -> float | None:
    """When this attempt's transfer began (set by the gateway's downloader); None when unknown or
    older than the attempt (meta copied from another request)."""
    started = meta.get(m.STARTED)
    if isinstance(started, float) and attempt.sent_at is not None and started >= attempt.sent_at:
        return started
    return None


def _load(meta: dict[str, Any]) -> int | None:
    """Requests in flight on its slot when it was sent (set by the gateway's downloader)."""
    value = meta.get(m.LOAD)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _priority(settings: Any, component: type) -> int | None:
    for key, priority in settings.getwithbase("DOWNLOADER_MIDDLEWARES").items():
        if priority is not None and (key is component or (isinstance(key, str) and load_object(key) is component)):
            return int(priority)
    return None


def _may_ask_for_partial_bodies(crawler: Crawler, me: type) -> bool:
    """Whether to ask Scrapy for truncated bodies (see process_request); checks our place, too.

    The gateway must see a response before RetryMiddleware and set the proxy before
    HttpProxyMiddleware; it may ask for truncated bodies only where it sees them before
    HttpCompressionMiddleware would decompress them, and never when HttpCacheMiddleware (which
    sees them first) could store one.
    """
    settings = crawler.settings
    mine = _priority(settings, me)
    retry = _priority(settings, RetryMiddleware)
    proxy = _priority(settings, HttpProxyMiddleware)
    if mine is not None and ((retry is not None and mine <= retry) or (proxy is not None and mine >= proxy)):
        raise ConfigError(
            f"DOWNLOADER_MIDDLEWARES: scrapy-gateway's middleware at {mine} must come after RetryMiddleware "
            f"({retry}) and before HttpProxyMiddleware ({proxy}); the add-on puts it at 595"
        )
    compression = _priority(settings, HttpCompressionMiddleware)
    return (
        settings.getbool("DOWNLOAD_FAIL_ON_DATALOSS", True)
        and not settings.getbool("HTTPCACHE_ENABLED", False)
        and (mine is None or compression is None or mine > compression)
    )
