"""Loopback HTTP/1.1 origin servers with scriptable failure behaviour, on aiohttp's low-level server."""

from __future__ import annotations

import asyncio
import email.utils
import html
import logging
import math
import random
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ._epoch import Epoch
from ._loop import LoopThread

log = logging.getLogger("demo_world")


@dataclass(frozen=True, slots=True)
class OriginSpec:
    """How an origin behaves. Checks apply in this order, first match wins: a banned client
    address, overload, down, status_override, fail_for_seconds, retry_after, flaky."""

    tls: bool = False
    # Storming domain: 502 until this long after the FIRST request it receives.
    fail_for_seconds: float = 0.0
    # At most this many requests in flight; one more arriving gets 502 at once.
    capacity: int | None = None
    service_time: float = 0.0
    # Per path: first hit 503 + Retry-After, hits before the deadline count as early.
    retry_after: float | None = None
    retry_after_date: bool = False
    flaky: float = 0.0
    status_override: int | None = None
    slow: float = 0.0
    down: bool = False
    # Pads 200 bodies, for benchmarks that want realistic page sizes.
    body_bytes: int = 0
    seed: int | None = None
    # Origin outage by refusal: the listening socket is closed from the start until this long after
    # the WORLD's first request (proxies then answer their own 502 "connection_refused").
    closed_for_seconds: float = 0.0
    # A per-IP rate limit: each client address in `ban_ips` is answered `ban_status` (nginx
    # limit_req's default, 503) from its (ban_after + 1)-th request on; the others never are.
    ban_ips: frozenset[str] = frozenset()
    ban_after: int = 0
    ban_status: int = 503


@dataclass(slots=True)
class OriginCounters:
    requests: int = 0
    paths: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    max_in_flight: int = 0
    overload: int = 0
    early: int = 0
    banned: int = 0  # requests answered ban_status for their client address
    proxy_authorization_seen: int = 0
    # Connections cut by stop(): a response counted in `statuses` may have been lost with one.
    aborted: int = 0


class _DebugOnly(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp logs peers that send junk or vanish as errors; in this world they are the point."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)


def _path_of(target: str) -> str:
    # A client that wrongly sends absolute-form straight to us still counts by path.
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return target


class Origin:
    """Handle returned by World.add_origin; public methods are thread-safe."""

    def __init__(self, name: str, spec: OriginSpec, host: str, loop: LoopThread, epoch: Epoch | None = None) -> None:
        self.name = name
        self.spec = spec  # read on every request, so tests may swap it mid-crawl
        self.host = host
        self._loop = loop
        self._epoch = epoch or Epoch()
        self._port = 0
        self._runner: web.ServerRunner | None = None
        self._site: web.TCPSite | None = None
        self._ssl: ssl.SSLContext | None = None
        self._handling: set[asyncio.Task[Any]] = set()
        self._rng = random.Random(spec.seed)
        self.counters = OriginCounters()
        self._down = spec.down
        self._in_flight = 0
        self._first_request_at: float | None = None
        self._ready_at: dict[str, float] = {}
        self._from_ip: dict[str, int] = {}  # requests per banned client address (spec.ban_ips)

    # -- public, any thread -------------------------------------------------
    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"origin {self.name!r} has no port before World.start()")
        return self._port

    @property
    def scheme(self) -> str:
        return "https" if self.spec.tls else "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        if path and not path.startswith("/"):
            path = "/" + path
        return self.base_url + path

    @property
    def down(self) -> bool:
        return self._down

    def set_down(self, down: bool = True) -> None:
        self._down = down  # a bool store is atomic; no loop hop needed

    def stop(self) -> None:
        """Really close the listening socket (clients get connection refused)."""
        self._loop.run(self._close())

    def start(self) -> None:
        """Re-open the listening socket on the same IP:port."""
        self._loop.run(self._open())

    @property
    def listening(self) -> bool:
        return self._site is not None

    # -- loop thread ----------------------------------------------------------
    async def _start(self, ssl_ctx: ssl.SSLContext | None) -> None:
        self._ssl = ssl_ctx
        server = web.Server(
            self._handle,
            access_log=None,
            logger=_DebugOnly(log, {}),
            # The old hand-written world took heads up to 64 KiB; so does this one.
            max_line_size=65536,
            max_field_size=65536,
        )
        self._runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        await self._open()
        if self.spec.closed_for_seconds > 0:
            # Bound once for a real port (as dead proxies are), then closed until the timer opens it.
            await self._close()
            self._epoch.call_after(self.spec.closed_for_seconds, self._reopen)

    def _reopen(self) -> None:
        if self._runner is not None:  # not stopped meanwhile
            task = asyncio.get_running_loop().create_task(self._open())
            self._handling.add(task)  # kept referenced until done, and cancelled by a stop
            task.add_done_callback(self._handling.discard)

    async def _stop(self) -> None:
        await self._close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _open(self) -> None:
        if self._site is not None or self._runner is None:
            return
        site = web.TCPSite(self._runner, self.host, self._port, ssl_context=self._ssl, backlog=1024, reuse_address=True)
        await site.start()
        self._site, self._port = site, self._runner.addresses[0][1]  # its only site: OS-chosen port first

    async def _close(self) -> None:
        """Like a crash: the socket, the keep-alive connections and the requests in progress all go."""
        site, self._site = self._site, None
        if site is None or self._runner is None or self._runner.server is None:
            return
        await site.stop()
        for conn in self._runner.server.connections:
            if conn.transport is not None:
                conn.transport.abort()
                self.counters.aborted += 1
        tasks = list(self._handling)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def reset(self, *, state: bool) -> None:
        self.counters = OriginCounters()
        if state:
            self._first_request_at = None
            self._ready_at.clear()
            self._from_ip.clear()

    def snapshot(self) -> dict[str, Any]:
        c = self.counters
        return {
            "url": self.base_url if self._port else None,
            "listening": self.listening,
            "down": self._down,
            "requests": c.requests,
            "paths": dict(c.paths),
            "statuses": dict(c.statuses),
            "in_flight": self._in_flight,
            "max_in_flight": c.max_in_flight,
            "overload": c.overload,
            "early": c.early,
            "banned": c.banned,
            "proxy_authorization_seen": c.proxy_authorization_seen,
            "aborted": c.aborted,
            "first_request_at": self._first_request_at,  # time.monotonic(); fail_for_seconds counts from it
        }

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        task = asyncio.current_task()
        assert task is not None
        self._handling.add(task)
        try:
            return await self._respond(request)
        finally:
            self._handling.discard(task)

    async def _respond(self, request: web.BaseRequest) -> web.Response:
        c = self.counters
        c.requests += 1
        path = _path_of(request.raw_path)  # as sent, not re-encoded
        c.paths[path] = c.paths.get(path, 0) + 1
        if "Proxy-Authorization" in request.headers:
            c.proxy_authorization_seen += 1
        now = time.monotonic()
        if self._first_request_at is None:
            self._first_request_at = now
        self._epoch.mark(now)
        # max_in_flight counts arrivals, overloaded ones included, so it
        # measures the concurrency the client really exerted.
        self._in_flight += 1
        try:
            c.max_in_flight = max(c.max_in_flight, self._in_flight)
            status, headers, immediate = self._decide(path, now, request.remote)
            delay = 0.0 if immediate else self.spec.slow + self.spec.service_time
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            self._in_flight -= 1
        key = str(status)
        c.statuses[key] = c.statuses.get(key, 0) + 1
        headers.append(("Content-Type", "text/html; charset=utf-8"))
        # aiohttp frames it: Content-Length (kept, body dropped, for HEAD), keep-alive, Date, Server.
        return web.Response(status=status, headers=headers, body=self._body(path, status))

    def _decide(self, path: str, now: float, client: str | None = None) -> tuple[int, list[tuple[str, str]], bool]:
        """(status, extra headers, answer-without-service-time)."""
        spec = self.spec
        if client is not None and client in spec.ban_ips:
            seen = self._from_ip[client] = self._from_ip.get(client, 0) + 1
            if seen > spec.ban_after:
                self.counters.banned += 1
                return spec.ban_status, [], True
        if spec.capacity is not None and self._in_flight > spec.capacity:
            self.counters.overload += 1
            return 502, [], True
        if self._down:
            return 502, [], True
        if spec.status_override is not None:
            return spec.status_override, [], False
        assert self._first_request_at is not None
        if spec.fail_for_seconds and now - self._first_request_at < spec.fail_for_seconds:
            return 502, [], False
        if spec.retry_after is not None:
            ready = self._ready_at.get(path)
            if ready is None:
                self._ready_at[path] = now + spec.retry_after
                return 503, [("Retry-After", self._retry_after(spec.retry_after))], False
            if now < ready:
                self.counters.early += 1
                return 503, [("Retry-After", self._retry_after(ready - now))], False
        if spec.flaky and self._rng.random() < spec.flaky:
            return 502, [], False
        return 200, [], False

    def _retry_after(self, remaining: float) -> str:
        # Rounded UP: a client obeying the header must never arrive early.
        if self.spec.retry_after_date:
            return email.utils.formatdate(math.ceil(time.time() + remaining), usegmt=True)
        return str(math.ceil(remaining))

    def _body(self, path: str, status: int) -> bytes:
        name, where = html.escape(self.name), html.escape(path)
        text = (
            f"<!doctype html><html><head><title>{name} {where}</title></head>"
            f"<body><h1>{name}</h1><p>path: {where}</p><p>status: {status}</p>"
        )
        if status == 200 and self.spec.body_bytes > len(text):
            pad = self.spec.body_bytes - len(text) - len("<!---->") - len("</body></html>\n")
            text += "<!--" + "x" * max(0, pad) + "-->"
        return (text + "</body></html>\n").encode()
