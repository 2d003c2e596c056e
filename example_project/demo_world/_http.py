"""Just enough HTTP/1.1 framing for loopback origins and forward proxies.

Hand-rolled rather than http.server because the world must run thousands of
requests per second on one asyncio loop, without a thread per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

# Heads above this are hostile or broken; StreamReader's default limit
# (64 KiB) already caps readuntil(), so this is only documentation.
MAX_HEAD = 64 * 1024

_PHRASES = {s.value: s.phrase for s in HTTPStatus}

# Headers that describe one hop only (RFC 9110 7.6.1) and therefore must not
# be relayed; Content-Length is re-computed because we re-frame every body.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)

Headers = list[tuple[str, str]]


class ProtocolError(Exception):
    """The peer sent something we cannot frame; the connection is dropped."""


# Everything a misbehaving or vanished peer can raise (OSError covers resets,
# timeouts and ssl.SSLError). None of it is our bug, so none of it may reach
# asyncio's "unhandled exception" logging.
PEER_ERRORS = (
    ProtocolError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    OSError,
)


def header(headers: Headers, name: str) -> str | None:
    """First value of a header, case-insensitively."""
    lname = name.lower()
    for key, value in headers:
        if key.lower() == lname:
            return value
    return None


@dataclass(slots=True)
class Request:
    method: str
    target: str
    version: str
    headers: Headers
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return header(self.headers, name)

    @property
    def keep_alive(self) -> bool:
        conn = (self.header("connection") or "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    headers: Headers
    body: bytes


async def _read_head(reader: asyncio.StreamReader) -> list[str] | None:
    """Head lines, or None when the peer closed cleanly between messages."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise ProtocolError("truncated head") from exc
    except asyncio.LimitOverrunError as exc:
        raise ProtocolError("head too large") from exc
    # RFC 9112 2.2: tolerate stray CRLFs before a request line.
    lines = raw.decode("latin-1").lstrip("\r\n").split("\r\n")
    if not lines[0]:
        raise ProtocolError("empty head")
    return lines[:-2]


def _parse_headers(lines: list[str]) -> Headers:
    headers: Headers = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"bad header line {line!r}")
        headers.append((name, value.strip()))
    return headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise ProtocolError("bad chunk size") from exc
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers carry nothing we relay
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _read_body(reader: asyncio.StreamReader, headers: Headers, *, until_close: bool) -> bytes:
    te = header(headers, "transfer-encoding")
    if te is not None and "chunked" in te.lower():
        return await _read_chunked(reader)
    length = header(headers, "content-length")
    if length is not None:
        try:
            size = int(length)
        except ValueError as exc:
            raise ProtocolError("bad content-length") from exc
        return await reader.readexactly(size) if size > 0 else b""
    return await reader.read() if until_close else b""


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    lines = await _read_head(reader)
    if lines is None:
        return None
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ProtocolError(f"bad request line {lines[0]!r}")
    headers = _parse_headers(lines[1:])
    body = await _read_body(reader, headers, until_close=False)
    return Request(parts[0], parts[1], parts[2], headers, body)


async def read_response(reader: asyncio.StreamReader, method: str) -> Response:
    lines = await _read_head(reader)
    if lines is None:
        raise ProtocolError("upstream closed before answering")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ProtocolError(f"bad status line {lines[0]!r}")
    status = int(code)
    headers = _parse_headers(lines[1:])
    if method == "HEAD" or status < 200 or status in (204, 304):
        body = b""
    else:
        body = await _read_body(reader, headers, until_close=True)
    return Response(status, reason, headers, body)


def render_response(
    status: int,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    reason: str | None = None,
    close: bool = False,
    head_only: bool = False,
    length: int | None = None,
) -> bytes:
    """Serialise a response; head_only drops the body but keeps the length
    (which a relayed HEAD answer passes in as length)."""
    lines = [f"HTTP/1.1 {status} {reason or _PHRASES.get(status, 'Unknown')}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    lines.append(f"Content-Length: {len(body) if length is None else length}")
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


def render_request(method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def end_to_end(headers: Headers) -> Headers:
    """Drop hop-by-hop headers, including any the Connection header names."""
    drop = set(HOP_BY_HOP)
    conn = header(headers, "connection")
    if conn:
        drop.update(token.strip().lower() for token in conn.split(","))
    return [(k, v) for k, v in headers if k.lower() not in drop]


def abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close so the peer sees ECONNRESET, like a crashing proxy, not a clean FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
