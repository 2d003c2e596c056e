"""Per-attempt timeouts: the adapter half of core/latency.py.

Every download the gateway routed through its pool runs under watch until its response headers
arrive (Scrapy's handlers set `download_latency` then, and the estimates are times to headers: a
large body that takes its time is never cut). Every `TICK` seconds each one is compared with the
limit the core gives for it *now*: the estimates move while it waits, so
a request sent at a crawl's start to a proxy that never answers is cut as soon as the first
answers have shown how long a page takes, not after DOWNLOAD_TIMEOUT. A download past its limit
is cancelled (Scrapy's own timeout is a cancellation too, which closes the connection) and fails
with AttemptTimeout; the middleware retries it on another proxy.

The same look counts, per slot, the downloads that have waited past `Gateway.unheard_after` and
tells `late` (the downloader: concurrency.py's `late` frees their rooms while the slot is in slow
start and has heard nothing back; with a Redis state, fleet.py's `late` asks the fleet's limit).

The watch wraps the downloader's handler table (`Downloader.handlers`), so it times the download
itself, never the time a request queued in its slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy.utils.asyncio import CallLaterResult, call_later
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from twisted.internet.defer import Deferred

from scrapy_gateway import meta as m
from scrapy_gateway.errors import AttemptTimeout

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.http import Response

    from scrapy_gateway.core.gateway import Gateway
    from scrapy_gateway.fleet import FleetLeases

TICK = 0.1  # seconds between looks at the downloads in flight: a cut comes at most this late

Download = Callable[["Request"], Awaitable["Response"]]


@dataclass(slots=True, eq=False)
class _Watched:
    request: Request
    domain: str
    proxy: str
    cuts: int
    user_timeout: float
    started: float
    cancel: Callable[[], object]
    cut_at: float | None = None  # the limit it was cut at, once cut


class DeadlineWatch:
    def __init__(
        self,
        core: Gateway,
        clock: Callable[[], float],
        default_timeout: float,
        late: Callable[[str, int], None] | None = None,
    ) -> None:
        self.core = core
        self.clock = clock
        self.default_timeout = default_timeout  # DOWNLOAD_TIMEOUT, for requests without the meta key
        self.late = late  # (slot, downloads waiting past Gateway.unheard_after there)
        self._watched: set[_Watched] = set()
        self._timer: CallLaterResult | None = None

    def __len__(self) -> int:
        return len(self._watched)

    async def download(self, inner: Download, request: Request) -> Response:
        meta = request.meta
        attempt = m.attempt_of(meta)
        if not self.core.timeouts.enabled or attempt is None or attempt.proxy is None or attempt.pinned:
            return await inner(request)  # not the gateway's route to time (see the module docstring)
        # The gateway's downloader runs every download in a task of its own (downloader.py), so
        # cancelling that task cuts this download and nothing else, without a task per download
        # for the watch. Off the asyncio reactor, or outside a task, the download gets its own.
        task = _current_task()
        if task is None:
            return await self._download_apart(inner, request, attempt.proxy, attempt.cuts)
        watched = self._watch(request, meta, attempt.proxy, attempt.cuts, task.cancel)
        try:
            return await inner(request)
        except (Exception, asyncio.CancelledError):
            if watched.cut_at is None:
                raise  # not cut by us (a failure of its own, or the crawl stopping): not ours to explain
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+: the task is not being cancelled
            if uncancel is not None:
                uncancel()
            raise self._timeout(watched) from None
        finally:
            self._watched.discard(watched)

    async def _download_apart(self, inner: Download, request: Request, proxy: str, cuts: int) -> Response:
        download: Deferred[Response] = deferred_from_coro(inner(request))
        watched = self._watch(request, request.meta, proxy, cuts, download.cancel)
        try:
            return await maybe_deferred_to_future(download)
        except (Exception, asyncio.CancelledError):
            # A cancelled Deferred reaches the handler as a Twisted failure, which Scrapy maps to
            # DownloadFailedError: whatever it became, a download we cut failed because we cut it.
            if watched.cut_at is None:
                raise
            raise self._timeout(watched) from None
        finally:
            self._watched.discard(watched)

    def _watch(
        self, request: Request, meta: dict[str, Any], proxy: str, cuts: int, cancel: Callable[[], object]
    ) -> _Watched:
        user_timeout = meta.get(m.DOWNLOAD_TIMEOUT) or self.default_timeout
        domain = m.domain_of(request)
        watched = _Watched(request, domain, proxy, cuts, float(user_timeout), self.clock(), cancel)
        self._watched.add(watched)
        self._arm()
        return watched

    @staticmethod
    def _timeout(watched: _Watched) -> AttemptTimeout:
        return AttemptTimeout(
            f"Getting {watched.request.url} took longer than {watched.cut_at:.2f} seconds: scrapy-gateway's "
            f"per-attempt timeout, from what this domain and proxy have shown (DOWNLOAD_TIMEOUT: "
            f"{watched.user_timeout:g} s)"
        )

    def _arm(self) -> None:
        if self._timer is None and self._watched:
            self._timer = call_later(TICK, self._tick)

    def _tick(self) -> None:
        self._timer = None
        now = self.clock()
        unheard = self.core.unheard_after() if self.late is not None else None
        waiting: dict[str, int] = {}
        for watched in list(self._watched):
            if watched.cut_at is not None or m.DOWNLOAD_LATENCY in watched.request.meta:
                continue  # already cut, or its headers have arrived
            waited = now - watched.started
            limit = self.core.attempt_timeout(
                watched.domain, watched.proxy, cuts=watched.cuts, user_timeout=watched.user_timeout
            )
            if limit is not None and waited >= limit:
                watched.cut_at = limit
                watched.cancel()
            elif unheard is not None and waited >= unheard:
                slot = str(watched.request.meta.get(m.DOWNLOAD_SLOT, watched.domain))
                waiting[slot] = waiting.get(slot, 0) + 1
        try:
            if self.late is not None:
                for slot, count in waiting.items():
                    self.late(slot, count)
        finally:
            self._arm()  # whatever a slot's raise did, the cuts go on

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _current_task() -> asyncio.Task[Any] | None:
    """The asyncio task running this download; None off the asyncio reactor (no running loop).
    asyncio.current_task() raises without a running loop, which is what is_asyncio_available()
    looked for first: one look per download instead of two."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


class WatchedHandlers:
    """Scrapy's handler table with every download the gateway routes under a DeadlineWatch, and,
    with a shared state, every download under a fleet-wide lease of its slot (fleet.py). `before`
    sees each request as its transfer starts, after those waits."""

    def __init__(
        self,
        handlers: Any,
        watch: DeadlineWatch,
        fleet: FleetLeases | None = None,
        slot_of: Callable[[Request], tuple[str, int]] | None = None,
        before: Callable[[Request], None] | None = None,
    ) -> None:
        self._handlers = handlers
        self._watch = watch
        self._fleet = fleet
        self._slot_of = slot_of
        self._before = before  # called as each transfer starts (the middleware's late rerouting)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handlers, name)

    async def download_request_async(self, request: Request) -> Response:
        fleet = self._fleet
        if fleet is None or self._slot_of is None:
            return await self._download(request)
        slot, limit = self._slot_of(request)
        lease = await fleet.acquire(slot, limit)
        if lease is not None:
            # The fleet's in flight, not this process's; a lease passed on here knows no fresh
            # count. (Without a lease, Redis is lost: this process's own count stands.)
            load = fleet.load_of(lease)
            if load is not None:
                request.meta[m.LOAD] = load
            else:
                request.meta.pop(m.LOAD, None)
        try:
            return await self._download(request)
        finally:
            fleet.release(slot, lease)

    def _download(self, request: Request) -> Awaitable[Response]:
        # When the transfer starts, after any wait in the slot's queue: what "sent" means for
        # the once-per-round-trip rule of the concurrency control and for a silent path's wait.
        # Not a coroutine of its own: its caller awaits the watch's directly (one frame fewer
        # per download), and what _before raises reaches that caller all the same.
        if self._before is not None:
            self._before(request)  # after every wait: in the slot's queue, and for a fleet lease
        request.meta[m.STARTED] = self._watch.clock()
        return self._watch.download(self._handlers.download_request_async, request)
