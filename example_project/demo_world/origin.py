"""Loopback HTTP/1.1 origin servers with scriptable failure behaviour."""

from __future__ import annotations

import asyncio
import email.utils
import html
import math
import random
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ._http import Request, read_request, render_response
from ._loop import LoopThread
from ._server import Listener


@dataclass(frozen=True, slots=True)
class OriginSpec:
    """How an origin behaves. Checks apply in field order below, first match wins:
    overload, down, status_override, fail_for_seconds, retry_after, flaky."""

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


@dataclass(slots=True)
class OriginCounters:
    requests: int = 0
    paths: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    max_in_flight: int = 0
    overload: int = 0
    early: int = 0
    proxy_authorization_seen: int = 0


def _path_of(target: str) -> str:
    # A client that wrongly sends absolute-form straight to us still counts by path.
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return target


class Origin:
    """Handle returned by World.add_origin; public methods are thread-safe."""

    def __init__(self, name: str, spec: OriginSpec, host: str, loop: LoopThread) -> None:
        self.name = name
        self.spec = spec
        self.host = host
        self._loop = loop
        self._listener = Listener(host, self._serve)
        self._rng = random.Random(spec.seed)
        self.counters = OriginCounters()
        self._down = spec.down
        self._in_flight = 0
        self._first_request_at: float | None = None
        self._ready_at: dict[str, float] = {}
        self._ssl: ssl.SSLContext | None = None

    # -- public, any thread -------------------------------------------------
    @property
    def port(self) -> int:
        if not self._listener.port:
            raise RuntimeError(f"origin {self.name!r} has no port before World.start()")
        return self._listener.port

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
        self._loop.run(self._listener.stop())

    def start(self) -> None:
        """Re-open the listening socket on the same IP:port."""
        self._loop.run(self._listener.start(self._ssl))

    @property
    def listening(self) -> bool:
        return self._listener.listening

    # -- loop thread ----------------------------------------------------------
    async def _start(self, ssl_ctx: ssl.SSLContext | None) -> None:
        self._ssl = ssl_ctx
        await self._listener.start(ssl_ctx)

    async def _stop(self) -> None:
        await self._listener.stop()

    def reset(self, *, state: bool) -> None:
        self.counters = OriginCounters()
        if state:
            self._first_request_at = None
            self._ready_at.clear()

    def snapshot(self) -> dict[str, Any]:
        c = self.counters
        return {
            "url": self.base_url if self._listener.port else None,
            "listening": self.listening,
            "down": self._down,
            "requests": c.requests,
            "paths": dict(c.paths),
            "statuses": dict(c.statuses),
            "in_flight": self._in_flight,
            "max_in_flight": c.max_in_flight,
            "overload": c.overload,
            "early": c.early,
            "proxy_authorization_seen": c.proxy_authorization_seen,
        }

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            req = await read_request(reader)
            if req is None:
                return
            writer.write(await self._respond(req))
            await writer.drain()
            if not req.keep_alive:
                return

    async def _respond(self, req: Request) -> bytes:
        c = self.counters
        c.requests += 1
        path = _path_of(req.target)
        c.paths[path] = c.paths.get(path, 0) + 1
        if req.header("proxy-authorization") is not None:
            c.proxy_authorization_seen += 1
        now = time.monotonic()
        if self._first_request_at is None:
            self._first_request_at = now
        # max_in_flight counts arrivals, overloaded ones included, so it
        # measures the concurrency the client really exerted.
        self._in_flight += 1
        try:
            c.max_in_flight = max(c.max_in_flight, self._in_flight)
            status, headers, immediate = self._decide(path, now)
            delay = 0.0 if immediate else self.spec.slow + self.spec.service_time
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            self._in_flight -= 1
        key = str(status)
        c.statuses[key] = c.statuses.get(key, 0) + 1
        body = self._body(path, status)
        headers.append(("Content-Type", "text/html; charset=utf-8"))
        return render_response(
            status,
            headers,
            body,
            close=not req.keep_alive,
            head_only=req.method == "HEAD",
        )

    def _decide(self, path: str, now: float) -> tuple[int, list[tuple[str, str]], bool]:
        """(status, extra headers, answer-without-service-time)."""
        spec = self.spec
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
                return (
                    503,
                    [("Retry-After", self._retry_after(spec.retry_after))],
                    False,
                )
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
