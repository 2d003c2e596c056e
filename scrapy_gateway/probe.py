"""gateway-check's prober: one GET per path (direct, or through one proxy), timed phase by phase.

Plain asyncio and h11, so that each phase is seen on its own, as curl -w shows them: DNS of the
first hop, TCP connect to it, TLS with an https:// proxy, the CONNECT for an https URL through a
proxy, TLS with the origin, the first byte of the answer, its end. Only the first hop's name is
resolved here: through a proxy, the proxy resolves the origin, as it does for a crawl.
Proxy-Authorization goes to the proxy alone: on the CONNECT for an https URL (the origin's
request travels inside the tunnel without it), on the request itself for an http URL, and never
on a direct path.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
from w3lib.http import basic_auth_header

from scrapy_gateway.core.diagnosis import Phase, Probe, Timings
from scrapy_gateway.core.faults import TransportError
from scrapy_gateway.core.proxies import DEFAULT_PORTS, Proxy, netloc_host

EVIDENCE_HEADERS = ("via", "proxy-status", "x-squid-error", "retry-after", "server")
_MAX_BODY = 1 << 20  # bytes read of an answer: enough to time it, bounded for a huge page


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str  # origin-form: /path?query

    @property
    def netloc(self) -> str:
        return f"{netloc_host(self.host)}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> Target:
        """Raises ValueError naming what is wrong with the URL."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r} is not a valid URL") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"{url!r}: only http:// and https:// URLs can be checked")
        if not parts.hostname:
            raise ValueError(f"{url!r} has no host")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        target = cls(url, scheme, parts.hostname, port or DEFAULT_PORTS[scheme], path)
        try:  # h11 refuses what it would not send (spaces, control characters): say so now
            h11.Request(method="GET", target=target.absolute, headers=[(b"Host", target.host_header.encode("idna"))])
        except (h11.LocalProtocolError, UnicodeError):
            raise ValueError(f"{url!r} cannot be sent as an HTTP/1.1 request") from None
        return target

    @property
    def host_header(self) -> str:
        host = netloc_host(self.host)
        return host if DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"

    @property
    def absolute(self) -> str:
        """The absolute form a plain HTTP proxy is sent (without the URL's userinfo or fragment)."""
        return f"{self.scheme}://{self.host_header}{self.path}"


def client_tls() -> ssl.SSLContext:
    """Certificates are not checked, as Scrapy's default context factory does not check them: the
    check sees what a crawl sees."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _Failed(Exception):
    def __init__(self, error: TransportError, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail
        self.status = status


class _Stream(asyncio.Protocol):
    """Bytes as they arrive; stays the protocol when start_tls wraps the transport."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._wake()

    def eof_received(self) -> bool | None:
        self._closed = True
        self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> bytes:
        """The next bytes received; b"" once the peer has closed."""
        while not self._chunks and not self._closed:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._chunks.popleft() if self._chunks else b""


class _Path:
    """One attempt: its phase and timings so far, kept when a timeout interrupts it."""

    def __init__(
        self,
        target: Target,
        proxy: Proxy | None,
        *,
        user_agent: str,
        auth_encoding: str,
        tls: ssl.SSLContext,
        clock: Callable[[], float],
    ) -> None:
        self.target, self.proxy, self.tls, self.clock = target, proxy, tls, clock
        self.user_agent = user_agent
        self.authorization: bytes | None = None
        if proxy is not None and (proxy.username or proxy.password):
            try:
                self.authorization = basic_auth_header(proxy.username, proxy.password, auth_encoding)
            except UnicodeEncodeError:  # a password latin-1 cannot write: what else could the proxy expect
                self.authorization = basic_auth_header(proxy.username, proxy.password, "utf-8")
        self.tunnel = proxy is not None and target.scheme == "https"
        self.started = clock()
        self.marks: dict[str, float] = {}
        self.phase = Phase.DNS
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.transport: asyncio.Transport | None = None
        self.stream = _Stream()

    def mark(self, name: str) -> None:
        self.marks[name] = self.clock() - self.started

    def timings(self) -> Timings:
        return Timings(**self.marks)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        hop = (self.proxy.host, self.proxy.port) if self.proxy else (self.target.host, self.target.port)
        try:
            addresses = await loop.getaddrinfo(*hop, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise _Failed(TransportError.DNS, f"{hop[0]} does not resolve: {exc.strerror}") from None
        self.mark("dns")
        self.phase = Phase.CONNECT
        await self._connect(loop, addresses)
        self.mark("connect")
        if self.proxy is not None and self.proxy.scheme == "https":
            self.phase = Phase.PROXY_TLS
            await self._start_tls(loop, self.proxy.host)
            self.mark("proxy_tls")
        if self.tunnel:
            self.phase = Phase.TUNNEL
            await self._connect_tunnel()
            self.mark("tunnel")
        if self.target.scheme == "https":
            self.phase = Phase.TLS
            await self._start_tls(loop, self.target.host)
            self.mark("tls")
        self.phase = Phase.RESPONSE
        await self._get()
        self.mark("total")

    async def _connect(self, loop: asyncio.AbstractEventLoop, addresses: Sequence[tuple[Any, ...]]) -> None:
        problem: OSError | None = None
        for address in addresses:
            host, port = address[4][0], address[4][1]
            try:
                self.transport, _ = await loop.create_connection(lambda: self.stream, host, port)
                return
            except OSError as exc:
                problem = exc
        raise _Failed(TransportError.REFUSED, f"connect to {self._hop()} failed: {_text(problem)}")

    def _hop(self) -> str:
        return f"{self.proxy.host}:{self.proxy.port}" if self.proxy else self.target.netloc

    async def _start_tls(self, loop: asyncio.AbstractEventLoop, host: str) -> None:
        assert self.transport is not None
        try:
            wrapped = await loop.start_tls(self.transport, self.stream, self.tls, server_hostname=host)
        except (OSError, ssl.SSLError) as exc:
            raise _Failed(TransportError.DROPPED, f"TLS with {host} failed: {_text(exc)}") from None
        if wrapped is None:
            raise _Failed(TransportError.DROPPED, f"TLS with {host} failed: the connection closed")
        self.transport = wrapped

    def _write(self, data: bytes | None) -> None:
        if data:
            assert self.transport is not None
            self.transport.write(data)

    def _request_headers(self, *, with_auth: bool) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"Host", self.target.host_header.encode("idna")),
            (b"User-Agent", self.user_agent.encode("latin-1", "replace")),
            (b"Accept", b"*/*"),
            (b"Accept-Encoding", b"identity"),
            (b"Connection", b"close"),
        ]
        if with_auth and self.authorization is not None:
            headers.append((b"Proxy-Authorization", self.authorization))
        return headers

    async def _connect_tunnel(self) -> None:
        conn = h11.Connection(h11.CLIENT)
        headers = [(b"Host", self.target.netloc.encode("idna"))]
        if self.authorization is not None:
            headers.append((b"Proxy-Authorization", self.authorization))
        self._write(conn.send(h11.Request(method="CONNECT", target=self.target.netloc, headers=headers)))
        self._write(conn.send(h11.EndOfMessage()))
        response = await self._response(conn, first_byte=None)
        if not 200 <= response.status_code < 300:
            raise _Failed(TransportError.TUNNEL, f"CONNECT answered {response.status_code}", response.status_code)

    async def _get(self) -> None:
        conn = h11.Connection(h11.CLIENT)
        plain_proxy = self.proxy is not None and not self.tunnel
        target = self.target.absolute if plain_proxy else self.target.path
        request = h11.Request(method="GET", target=target, headers=self._request_headers(with_auth=plain_proxy))
        self._write(conn.send(request))
        self._write(conn.send(h11.EndOfMessage()))
        await self._response(conn, first_byte="ttfb")
        received = 0
        while received <= _MAX_BODY:
            event = await self._next(conn)
            if isinstance(event, h11.Data):
                received += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return

    async def _response(self, conn: h11.Connection, *, first_byte: str | None) -> h11.Response:
        """The answer's head: its status and evidence headers are kept."""
        while True:
            event = await self._next(conn, first_byte=first_byte)
            first_byte = None
            if isinstance(event, h11.Response):
                self.status = event.status_code
                self.headers = _evidence(event.headers)
                return event

    async def _next(self, conn: h11.Connection, *, first_byte: str | None = None) -> h11.Event:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise _Failed(TransportError.DROPPED, f"not a valid HTTP answer: {exc}") from None
            if event is h11.NEED_DATA:
                data = await self.stream.read()
                if first_byte is not None and data:
                    self.mark(first_byte)
                    first_byte = None
                conn.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise _Failed(TransportError.DROPPED, "the connection closed before the answer was complete")
            if event is h11.PAUSED:  # only after a whole answer, which the callers never read past
                raise _Failed(TransportError.DROPPED, "the peer sent more than one answer")
            assert isinstance(event, h11.Event)
            return event

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # nothing more is wanted from the peer: no graceful close to wait for

    def result(self, failure: _Failed | None) -> Probe:
        return Probe(
            url=self.target.url,
            host=self.target.netloc,
            proxy=self.proxy.masked if self.proxy else None,
            status=failure.status if failure is not None else self.status,
            headers=self.headers,
            error=failure.error if failure is not None else None,
            phase=self.phase if failure is not None else None,
            tunnel=self.tunnel,
            detail=failure.detail if failure is not None else "",
            timings=self.timings(),
        )


def _evidence(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    for name, value in headers:
        key = name.decode("latin-1").lower()
        if key in EVIDENCE_HEADERS:
            found.setdefault(key, []).append(value.decode("latin-1"))
    return {key: ", ".join(values) for key, values in found.items()}


def _text(exc: BaseException | None) -> str:
    if exc is None:
        return "no address"
    return str(exc) or type(exc).__name__


async def probe_path(
    target: Target,
    proxy: Proxy | None,
    *,
    timeout: float,
    user_agent: str,
    auth_encoding: str = "latin-1",
    tls: ssl.SSLContext | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Probe:
    """One GET of `target`, direct (`proxy` None) or through `proxy`; never raises for the network."""
    path = _Path(
        target, proxy, user_agent=user_agent, auth_encoding=auth_encoding, tls=tls or client_tls(), clock=clock
    )
    failure: _Failed | None = None
    try:
        await asyncio.wait_for(path.run(), timeout)
    except _Failed as exc:
        failure = exc
    except asyncio.TimeoutError:
        failure = _Failed(TransportError.TIMEOUT, f"no progress past {path.phase.value} within {timeout:g} s")
    except OSError as exc:  # a reset or a broken pipe while writing
        failure = _Failed(TransportError.DROPPED, _text(exc))
    finally:
        with contextlib.suppress(Exception):
            path.close()
    return path.result(failure)


async def probe_all(
    targets: Sequence[Target],
    proxies: Sequence[Proxy],
    *,
    direct: bool,
    timeout: float,
    concurrency: int,
    per_site: int,
    user_agent: str,
    auth_encoding: str = "latin-1",
) -> list[Probe]:
    """Every URL by every path, at most `concurrency` at a time and `per_site` on one site; in URL
    order, direct first."""
    limit = asyncio.Semaphore(concurrency)
    # A site that sheds load when many paths ask at once would look as if the paths failed it.
    sites = {target.netloc: asyncio.Semaphore(per_site) for target in targets}
    tls = client_tls()
    paths: list[Proxy | None] = [*([None] if direct else []), *proxies]

    async def one(target: Target, proxy: Proxy | None) -> Probe:
        # The site's turn first, so that waiting for it holds no place another site could use;
        # the timeout counts from the path's start, not from these waits.
        async with sites[target.netloc], limit:
            return await probe_path(
                target, proxy, timeout=timeout, user_agent=user_agent, auth_encoding=auth_encoding, tls=tls
            )

    return list(await asyncio.gather(*(one(target, proxy) for target in targets for proxy in paths)))
