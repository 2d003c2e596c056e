"""Loopback HTTP/1.1 forward proxies (absolute-form and CONNECT) with failure modes.

h11 frames every well-formed message, to the client and to the origin alike; raw socket writes
are kept for the faults that are meant to be malformed (garbage, truncate, huge_headers,
status_only, reset) and for the bytes of a CONNECT tunnel.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import h11

from ._epoch import Epoch
from ._loop import LoopThread

log = logging.getLogger("demo_world")

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

# Heads above this are hostile or broken, from the client or from upstream.
MAX_HEAD = 64 * 1024

# Headers that describe one hop only (RFC 9110 7.6.1) and therefore must not
# be relayed; Content-Length is re-computed because we re-frame every body.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)

# Everything a misbehaving or vanished peer can raise (OSError covers resets and timeouts).
PEER_ERRORS = (h11.RemoteProtocolError, OSError)

RawHeaders = list[tuple[bytes, bytes]]


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
    # (start, duration) in seconds after the WORLD's first request (any proxy or origin): inside
    # that window the proxy answers every request with its own 502, like a provider-wide outage.
    outage: tuple[float, float] | None = None
    # (period, down, phase) in seconds of the world's clock: the proxy answers its own 502 from
    # phase + k * period to phase + k * period + down, for every k >= 0, and works in between.
    flap: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown proxy mode {self.mode!r}")
        if self.outage is not None and (self.outage[0] < 0 or self.outage[1] < 0):
            raise ValueError(f"outage must be (start >= 0, duration >= 0), not {self.outage!r}")
        if self.flap is not None and not (self.flap[0] > 0 and 0 <= self.flap[1] <= self.flap[0] and self.flap[2] >= 0):
            raise ValueError(f"flap must be (period > 0, 0 <= down <= period, phase >= 0), not {self.flap!r}")
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


def _header(headers: RawHeaders, name: bytes) -> bytes | None:
    """First value of a header; `name` is lower-case."""
    return next((v for k, v in headers if k.lower() == name), None)


def _end_to_end(headers: RawHeaders) -> RawHeaders:
    """Drop hop-by-hop headers, including any the Connection header names."""
    drop = set(HOP_BY_HOP)
    for k, v in headers:
        if k.lower() == b"connection":
            drop.update(token.strip().lower() for token in v.split(b","))
    return [(k, v) for k, v in headers if k.lower() not in drop]


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close so the peer sees ECONNRESET, like a crashing proxy, not a clean FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Peer:
    """One h11 connection over an asyncio stream pair."""

    def __init__(self, role: type[Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conn = h11.Connection(role, max_incomplete_event_size=MAX_HEAD)
        self.reader = reader
        self.writer = writer

    async def next_event(self) -> Any:
        while (event := self.conn.next_event()) is h11.NEED_DATA:
            self.conn.receive_data(await self.reader.read(65536))  # b"" at EOF, which h11 judges
        return event

    async def read_body(self) -> bytes:
        parts = []
        while not isinstance(event := await self.next_event(), h11.EndOfMessage):
            parts.append(event.data)
        return b"".join(parts)

    def render(self, *events: h11.Event) -> bytes:
        return b"".join(self.conn.send(event) or b"" for event in events)


class _Refused(Exception):
    """The proxy answers this request itself: (status, Proxy-Status error type)."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(status, error)
        self.status = status
        self.error = error


class Proxy:
    """Handle returned by World.add_proxy; public methods are thread-safe."""

    def __init__(
        self, name: str, spec: ProxySpec, loop: LoopThread, host: str = "127.0.0.1", epoch: Epoch | None = None
    ) -> None:
        self.name = name
        self.spec = spec
        self.host = host
        self._loop = loop
        self._epoch = epoch or Epoch()
        self._listener = _Listener(host, self._serve)
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
        client = _Peer(h11.SERVER, reader, writer)
        while isinstance(req := await client.next_event(), h11.Request):
            body = await client.read_body()
            if not await self._handle(client, req, body):
                return
            await writer.drain()
            if client.conn.our_state is not h11.DONE or client.conn.their_state is not h11.DONE:
                return  # one side asked to close (Connection: close, HTTP/1.0)
            client.conn.start_next_cycle()

    async def _handle(self, client: _Peer, req: h11.Request, body: bytes) -> bool:
        """Answer one request; False when the connection is finished with."""
        c = self.counters
        c.requests += 1
        self._epoch.mark(time.monotonic())
        headers = req.headers.raw_items()
        raw_auth = _header(headers, b"proxy-authorization")
        auth = raw_auth.decode("latin-1") if raw_auth is not None else None
        if auth is not None:
            c.authorization_values_seen.add(auth)
        if req.method == b"CONNECT":
            c.connects += 1
        if self.spec.latency:
            await asyncio.sleep(self.spec.latency)
        mode, writer = self._mode, client.writer
        if mode == "blackhole":
            while await client.reader.read(65536):
                pass  # swallow everything until the client gives up
            return False
        if mode == "reset":
            _abort_with_rst(writer)
            return False
        if mode in _MALFORMED:
            writer.write(_MALFORMED[mode])
            await writer.drain()
            return False
        if self._token is not None and not _auth_ok(auth, self._token):
            c.auth_failures += 1
            challenge = [(b"Proxy-Authenticate", b'Basic realm="demo"')]
            writer.write(self._error(client, req, 407, "http_request_denied", challenge))
            return True
        try:
            host, port = self._destination(req)
            if mode == "bad_gateway" or (mode == "flaky" and self._rng.random() < self.spec.flaky_p):
                raise _Refused(502, "destination_unavailable")
            if self._in_outage() or self._flapped_down():
                raise _Refused(502, "destination_unavailable")
            banned = self.spec.banned_hosts
            if host in banned or f"{host}:{port}" in banned:
                raise _Refused(502, "http_request_denied")
            if req.method == b"CONNECT":
                await self._tunnel(client, host, port)
                return False
            head, relayed = await self._forward(client, req, body, host, port)
            if mode == "truncate":
                writer.write((head + relayed)[: len(head) + len(relayed) - max(1, len(relayed) // 2)])
                await writer.drain()
                return False
            writer.write(head + relayed)
        except _Refused as refusal:
            if refusal.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
                c.own_errors += 1
            writer.write(self._error(client, req, refusal.status, refusal.error))
        return True

    def _in_outage(self) -> bool:
        if self.spec.outage is None:
            return False
        since = self._epoch.since(time.monotonic())
        start, duration = self.spec.outage
        return since is not None and start <= since < start + duration

    def _flapped_down(self) -> bool:
        if self.spec.flap is None:
            return False
        since = self._epoch.since(time.monotonic())
        period, down, phase = self.spec.flap
        return since is not None and since >= phase and (since - phase) % period < down

    def _destination(self, req: h11.Request) -> tuple[str, int]:
        target = req.target.decode("latin-1")
        if req.method == b"CONNECT":
            host, sep, port = target.rpartition(":")
            if not sep or not port.isdigit():
                raise _Refused(400, "http_request_error")
            return host.strip("[]"), int(port)
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            raise _Refused(400, "http_request_error")
        try:
            return parts.hostname, parts.port or 80
        except ValueError as exc:  # port out of range
            raise _Refused(400, "http_request_error") from exc

    def _error(
        self, client: _Peer, req: h11.Request, status: int, error: str, extra: RawHeaders | None = None
    ) -> bytes:
        headers = [(b"Content-Type", b"text/plain; charset=utf-8"), *(extra or [])]
        if self.spec.proxy_status:
            headers.append((b"Proxy-Status", f"demo-{self.name}; error={error}".encode()))
        body = f"demo proxy {self.name}: {status} ({error})\n".encode()
        headers.append((b"Content-Length", str(len(body)).encode()))
        response = h11.Response(status_code=status, headers=headers, reason=_phrase(status))
        return client.render(response, *_body_events(req, body))

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            # From the proxy's own address, as a real exit: origins see one client address per proxy.
            connecting = asyncio.open_connection(host, port, local_addr=(self.host, 0))
            return await asyncio.wait_for(connecting, self.spec.upstream_timeout)
        except ConnectionRefusedError as exc:
            raise _Refused(502, "connection_refused") from exc
        except TimeoutError as exc:
            raise _Refused(504, "connection_timeout") from exc
        except OSError as exc:
            raise _Refused(502, "destination_unavailable") from exc

    async def _forward(self, client: _Peer, req: h11.Request, body: bytes, host: str, port: int) -> tuple[bytes, bytes]:
        """Relay one request on a fresh upstream connection; the answer as (head, body) bytes."""
        parts = urlsplit(req.target.decode("latin-1"))
        target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        headers = _end_to_end(req.headers.raw_items())  # strips Proxy-Authorization & co
        if _header(headers, b"host") is None:
            headers.insert(0, (b"Host", parts.netloc.encode()))
        headers.append((b"Connection", b"close"))  # one upstream connection per request keeps this simple
        if body or req.method in (b"POST", b"PUT", b"PATCH"):
            headers.append((b"Content-Length", str(len(body)).encode()))
        up_reader, up_writer = await self._connect(host, port)
        upstream = _Peer(h11.CLIENT, up_reader, up_writer)
        try:
            request = h11.Request(method=req.method, target=target, headers=headers)
            up_writer.write(upstream.render(request, h11.Data(data=body), h11.EndOfMessage()))
            resp, resp_body = await asyncio.wait_for(self._read_response(upstream), self.spec.upstream_timeout)
        except TimeoutError as exc:
            raise _Refused(504, "http_response_timeout") from exc
        except PEER_ERRORS as exc:
            raise _Refused(502, "http_response_incomplete") from exc
        finally:
            up_writer.close()
        self.counters.forwarded += 1
        out = _end_to_end(resp.headers.raw_items())
        if self._via:
            out.append((b"Via", f"1.1 demo-{self.name}".encode()))
        if self.spec.proxy_status:
            out.append((b"Proxy-Status", f"demo-{self.name}; received-status={resp.status_code}".encode()))
        length = _header(resp.headers.raw_items(), b"content-length") if req.method == b"HEAD" else None
        out.append((b"Content-Length", length if length and length.isdigit() else str(len(resp_body)).encode()))
        reason = resp.reason or _phrase(resp.status_code)
        head = client.render(h11.Response(status_code=resp.status_code, headers=out, reason=reason))
        return head, client.render(*_body_events(req, resp_body))

    @staticmethod
    async def _read_response(upstream: _Peer) -> tuple[h11.Response, bytes]:
        while not isinstance(resp := await upstream.next_event(), h11.Response):
            if not isinstance(resp, h11.InformationalResponse):
                raise h11.RemoteProtocolError("upstream closed before answering")
        return resp, await upstream.read_body()

    async def _tunnel(self, client: _Peer, host: str, port: int) -> None:
        up_reader, up_writer = await self._connect(host, port)
        self.counters.forwarded += 1
        via = [(b"Via", f"1.1 demo-{self.name}".encode())] if self._via else []
        writer = client.writer
        writer.write(client.render(h11.Response(status_code=200, headers=via, reason=b"Connection established")))
        # h11 has switched protocols; what it read past the CONNECT head belongs to the tunnel.
        early, _ = client.conn.trailing_data
        if early:
            up_writer.write(early)

        def abort_both() -> None:
            writer.transport.abort()
            up_writer.transport.abort()

        try:
            await asyncio.gather(
                _pipe(client.reader, up_writer, abort_both),
                _pipe(up_reader, writer, abort_both),
            )
        finally:
            up_writer.close()


def _body_events(req: h11.Request, body: bytes) -> list[h11.Event]:
    # h11 refuses body bytes where none may go (HEAD); Content-Length still says what GET would get.
    return [h11.Data(data=body), h11.EndOfMessage()] if body and req.method != b"HEAD" else [h11.EndOfMessage()]


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, abort_both: Callable[[], None]) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        # Half-close so the far side sees EOF but can still answer.
        if dst.can_write_eof() and not dst.is_closing():
            dst.write_eof()
    except OSError:
        # One side broke: tear down both, or the other pipe waits forever.
        abort_both()


class _Listener:
    """One bound host:port. stop() closes the socket AND live connections,
    because a crashed server would drop keep-alive clients too; start() again
    re-binds the same port so URLs handed out earlier stay valid."""

    def __init__(
        self, host: str, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> None:
        self.host = host
        self.port = 0
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.StreamWriter, asyncio.Task[Any] | None] = {}

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._on_connect, self.host, self.port, backlog=1024, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = [t for t in self._conns.values() if t is not None]
        for writer in list(self._conns):
            writer.transport.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns[writer] = asyncio.current_task()
        try:
            await self._handler(reader, writer)
        except (*PEER_ERRORS, asyncio.CancelledError):
            pass  # the peer broke the connection, or stop() severed it
        except Exception:  # a bug in a handler must not take the world down
            log.debug("proxy handler crashed", exc_info=True)
        finally:
            self._conns.pop(writer, None)
            writer.close()
