"""Loopback HTTP/1.1 forward proxies (absolute-form and CONNECT) with failure modes."""

from __future__ import annotations

import asyncio
import base64
import binascii
import random
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from ._http import (
    PEER_ERRORS,
    ProtocolError,
    Request,
    Response,
    abort_with_rst,
    end_to_end,
    header,
    read_request,
    read_response,
    render_request,
    render_response,
)
from ._loop import LoopThread
from ._server import Listener

Mode = Literal[
    "good", "dead", "blackhole", "bad_gateway", "flaky", "reset", "garbage", "truncate", "huge_headers", "status_only"
]
MODES: tuple[Mode, ...] = (
    "good",
    "dead",
    "blackhole",
    "bad_gateway",
    "flaky",
    "reset",
    # Bad input from the network, for robustness tests:
    "garbage",  # answers bytes that are not HTTP at all
    "truncate",  # forwards, but cuts the body in half and closes
    "huge_headers",  # a 200 with a 256 KiB header
    "status_only",  # sends a status line, then closes
)
_MALFORMED: dict[str, bytes] = {
    "garbage": b"\x16\x03\x01\x00\xa5 this is not HTTP \x00\xff\r\n\r\n",
    "huge_headers": b"HTTP/1.1 200 OK\r\nX-Huge: " + b"a" * 262144 + b"\r\nContent-Length: 2\r\n\r\nok",
    "status_only": b"HTTP/1.1 200 OK\r\n",
}


@dataclass(frozen=True, slots=True)
class ProxySpec:
    mode: Mode = "good"
    flaky_p: float = 0.5
    # Hostnames (or host:port) this proxy refuses with its own 502.
    banned_hosts: AbstractSet[str] = frozenset()
    credentials: tuple[str, str] | None = None
    # RFC 9209 Proxy-Status on own errors (and received-status on relayed ones).
    proxy_status: bool = False
    # Via on relayed responses; None follows proxy_status.
    via: bool | None = None
    latency: float = 0.0
    upstream_timeout: float = 30.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown proxy mode {self.mode!r}")
        # Accept any iterable (a plain set is the natural thing to write).
        object.__setattr__(self, "banned_hosts", frozenset(self.banned_hosts))


@dataclass(slots=True)
class ProxyCounters:
    requests: int = 0
    connects: int = 0
    own_errors: int = 0
    forwarded: int = 0
    auth_failures: int = 0
    authorization_values_seen: set[str] = field(default_factory=set)


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _auth_ok(value: str | None, expected_token: str) -> bool:
    if value is None:
        return False
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        # Compare decoded, so padding/whitespace variants of the same secret pass.
        return base64.b64decode(token.strip(), validate=True) == base64.b64decode(expected_token)
    except (binascii.Error, ValueError):
        return False


class _Refused(Exception):
    """The proxy answers this request itself: (status, Proxy-Status error type)."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(status, error)
        self.status = status
        self.error = error


class Proxy:
    """Handle returned by World.add_proxy; public methods are thread-safe."""

    def __init__(self, name: str, spec: ProxySpec, loop: LoopThread) -> None:
        self.name = name
        self.spec = spec
        self.host = "127.0.0.1"
        self._loop = loop
        self._listener = Listener(self.host, self._serve)
        self._rng = random.Random(spec.seed)
        self._mode: Mode = spec.mode
        self._token = _basic(*spec.credentials) if spec.credentials else None
        self.counters = ProxyCounters()
        self._via = spec.proxy_status if spec.via is None else spec.via

    # -- public, any thread -------------------------------------------------
    @property
    def port(self) -> int:
        if not self._listener.port:
            raise RuntimeError(f"proxy {self.name!r} has no port before World.start()")
        return self._listener.port

    @property
    def url(self) -> str:
        """Proxy URL, with the credentials embedded when the proxy requires them."""
        if self.spec.credentials:
            user, password = self.spec.credentials
            return f"http://{user}:{password}@{self.host}:{self.port}"
        return self.bare_url

    @property
    def bare_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def authorization(self) -> str | None:
        """The Proxy-Authorization value this proxy accepts, if it wants one."""
        return f"Basic {self._token}" if self._token else None

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode) -> None:
        """Switch behaviour at run time; to/from "dead" closes/re-opens the port."""
        self._loop.run(self._set_mode(mode))

    # -- loop thread ----------------------------------------------------------
    async def _set_mode(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}")
        self._mode = mode
        if mode == "dead":
            await self._listener.stop()
        else:
            await self._listener.start()

    async def _start(self) -> None:
        # Dead proxies still bind once: the URL needs a real port that refuses.
        await self._listener.start()
        if self._mode == "dead":
            await self._listener.stop()

    async def _stop(self) -> None:
        await self._listener.stop()

    def reset(self, *, state: bool) -> None:
        del state  # proxies keep no per-request state beyond counters
        self.counters = ProxyCounters()

    def snapshot(self) -> dict[str, Any]:
        c = self.counters
        return {
            "url": self.url if self._listener.port else None,
            "mode": self._mode,
            "requests": c.requests,
            "connects": c.connects,
            "own_errors": c.own_errors,
            "forwarded": c.forwarded,
            "auth_failures": c.auth_failures,
            "authorization_values_seen": sorted(c.authorization_values_seen),
        }

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            req = await read_request(reader)
            if req is None:
                return
            if not await self._handle(req, reader, writer):
                return
            await writer.drain()
            if not req.keep_alive:
                return

    async def _handle(self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is finished with."""
        c = self.counters
        c.requests += 1
        auth = req.header("proxy-authorization")
        if auth is not None:
            c.authorization_values_seen.add(auth)
        if req.method == "CONNECT":
            c.connects += 1
        if self.spec.latency:
            await asyncio.sleep(self.spec.latency)
        mode = self._mode
        if mode == "blackhole":
            while await reader.read(65536):
                pass  # swallow everything until the client gives up
            return False
        if mode == "reset":
            abort_with_rst(writer)
            return False
        if mode in _MALFORMED:
            writer.write(_MALFORMED[mode])
            await writer.drain()
            return False
        if self._token is not None and not _auth_ok(auth, self._token):
            c.auth_failures += 1
            challenge = [("Proxy-Authenticate", 'Basic realm="demo"')]
            writer.write(self._error(407, "http_request_denied", req, challenge))
            return True
        try:
            host, port = self._destination(req)
            if mode == "bad_gateway" or (mode == "flaky" and self._rng.random() < self.spec.flaky_p):
                raise _Refused(502, "destination_unavailable")
            banned = self.spec.banned_hosts
            if host in banned or f"{host}:{port}" in banned:
                raise _Refused(502, "http_request_denied")
            if req.method == "CONNECT":
                await self._tunnel(host, port, reader, writer)
                return False
            relayed = await self._forward(req, host, port)
            if mode == "truncate":
                writer.write(relayed[: len(relayed) - max(1, _body_length(relayed) // 2)])
                await writer.drain()
                return False
            writer.write(relayed)
        except _Refused as refusal:
            if refusal.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
                c.own_errors += 1
            writer.write(self._error(refusal.status, refusal.error, req))
        return True

    def _destination(self, req: Request) -> tuple[str, int]:
        if req.method == "CONNECT":
            host, sep, port = req.target.rpartition(":")
            if not sep or not port.isdigit():
                raise _Refused(400, "http_request_error")
            return host.strip("[]"), int(port)
        parts = urlsplit(req.target)
        if parts.scheme != "http" or not parts.hostname:
            raise _Refused(400, "http_request_error")
        try:
            return parts.hostname, parts.port or 80
        except ValueError as exc:  # port out of range
            raise _Refused(400, "http_request_error") from exc

    def _error(
        self,
        status: int,
        error: str,
        req: Request,
        extra: list[tuple[str, str]] | None = None,
    ) -> bytes:
        headers = [("Content-Type", "text/plain; charset=utf-8"), *(extra or [])]
        if self.spec.proxy_status:
            headers.append(("Proxy-Status", f"demo-{self.name}; error={error}"))
        body = f"demo proxy {self.name}: {status} ({error})\n".encode()
        return render_response(status, headers, body, close=not req.keep_alive)

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.wait_for(asyncio.open_connection(host, port), self.spec.upstream_timeout)
        except ConnectionRefusedError as exc:
            raise _Refused(502, "connection_refused") from exc
        except TimeoutError as exc:
            raise _Refused(504, "connection_timeout") from exc
        except OSError as exc:
            raise _Refused(502, "destination_unavailable") from exc

    async def _forward(self, req: Request, host: str, port: int) -> bytes:
        parts = urlsplit(req.target)
        target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        headers = end_to_end(req.headers)  # strips Proxy-Authorization & co
        if not any(k.lower() == "host" for k, _ in headers):
            headers.insert(0, ("Host", parts.netloc))
        # One fresh upstream connection per request keeps this simple.
        headers.append(("Connection", "close"))
        up_reader, up_writer = await self._connect(host, port)
        try:
            up_writer.write(render_request(req.method, target, headers, req.body))
            resp = await asyncio.wait_for(read_response(up_reader, req.method), self.spec.upstream_timeout)
        except TimeoutError as exc:
            raise _Refused(504, "http_response_timeout") from exc
        except PEER_ERRORS as exc:
            raise _Refused(502, "http_response_incomplete") from exc
        finally:
            up_writer.close()
        self.counters.forwarded += 1
        out = end_to_end(resp.headers)
        if self._via:
            out.append(("Via", f"1.1 demo-{self.name}"))
        if self.spec.proxy_status:
            out.append(("Proxy-Status", f"demo-{self.name}; received-status={resp.status}"))
        return render_response(
            resp.status,
            out,
            resp.body,
            reason=resp.reason,
            close=not req.keep_alive,
            head_only=req.method == "HEAD",
            length=_head_length(resp) if req.method == "HEAD" else None,
        )

    async def _tunnel(
        self,
        host: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        up_reader, up_writer = await self._connect(host, port)
        self.counters.forwarded += 1
        via = f"Via: 1.1 demo-{self.name}\r\n" if self._via else ""
        writer.write(f"HTTP/1.1 200 Connection established\r\n{via}\r\n".encode())

        def abort_both() -> None:
            writer.transport.abort()
            up_writer.transport.abort()

        try:
            await asyncio.gather(
                _pipe(reader, up_writer, abort_both),
                _pipe(up_reader, writer, abort_both),
            )
        finally:
            up_writer.close()


def _head_length(resp: Response) -> int | None:
    value = header(resp.headers, "content-length")
    return int(value) if value is not None and value.isdigit() else None


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, abort_both: Callable[[], None]) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        # Half-close so the far side sees EOF but can still answer.
        if dst.can_write_eof() and not dst.is_closing():
            dst.write_eof()
    except (OSError, ProtocolError):
        # One side broke: tear down both, or the other pipe waits forever.
        abort_both()


def _body_length(raw: bytes) -> int:
    _, _, body = raw.partition(b"\r\n\r\n")
    return len(body)
