"""The table of download handlers' exceptions (scrapy_gateway.handlers) and credential masking
(scrapy_gateway.masking), on real exception objects: aiohttp's come from Scrapy's own
AiohttpDownloadHandler and curl_cffi's from curl itself, run against small loopback servers that
misbehave the way proxies do. Scrapy's HTTP/1.1 handler needs a reactor, so its exceptions are
built the way it builds them (texts copied from scrapy/core/downloader/handlers/http11.py)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest
from scrapy import Request, Spider
from scrapy.core.downloader.handlers.http11 import TunnelError
from scrapy.crawler import AsyncCrawlerRunner
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
    IgnoreRequest,
    ResponseDataLossError,
)
from scrapy.utils.test import get_crawler
from twisted.internet import error as twisted_errors
from twisted.web.client import ResponseFailed

from scrapy_gateway.core.faults import Blame, TransportError, classify_transport
from scrapy_gateway.errors import MaskedDownloadError, transport_error
from scrapy_gateway.handlers import (
    BUILTIN_RULES,
    TransportFailure,
    register_transport_error,
    transport_failure,
    transport_rules,
    unregister_transport_error,
)
from scrapy_gateway.masking import MASK, CredentialMask, mask_exception
from tests.harness.run_crawl import error_text
from tests.real.servers import free_port

T = TransportError
USER, PASSWORD = "crawler", "S3cr3t!pw"  # "!" is written %21 in a URL
PROXY_AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


# -- loopback servers that misbehave like proxies ----------------------------------------------------


class FakeProxy:
    """Accepts connections on 127.0.0.1 and answers each one with `behaviour(conn)`."""

    def __init__(self, behaviour: Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(50)
        self.port = self.sock.getsockname()[1]
        self.behaviour = behaviour
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.settimeout(5)
            conn.recv(65536)
            self.behaviour(conn)

    def url(self, user: str | None = USER, password: str = "S3cr3t%21pw") -> str:
        return f"http://{user}:{password}@127.0.0.1:{self.port}" if user else f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.close()


def answer(raw: bytes) -> Callable[[socket.socket], None]:
    def behaviour(conn: socket.socket) -> None:
        conn.sendall(raw)
        conn.close()

    return behaviour


def status(code: int, reason: str) -> Callable[[socket.socket], None]:
    return answer(f"HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())


def silent(conn: socket.socket) -> None:
    threading.Event().wait(4)


def reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def tunnel_then_garbage(conn: socket.socket) -> None:
    """Opens the tunnel, then the "origin" answers the TLS hello with plain HTTP."""
    conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    conn.close()


@pytest.fixture
def proxies() -> Iterator[Callable[[Callable[[socket.socket], None]], FakeProxy]]:
    started: list[FakeProxy] = []

    def start(behaviour: Callable[[socket.socket], None]) -> FakeProxy:
        started.append(FakeProxy(behaviour))
        return started[-1]

    yield start
    for proxy in started:
        proxy.close()


# -- real exceptions from the handlers ------------------------------------------------------------------


def request(url: str, proxy: str, **meta: object) -> Request:
    """As HttpProxyMiddleware leaves it: credentials moved from meta["proxy"] to the header."""
    plain = proxy.split("@")[-1] if "@" in proxy else proxy
    headers = {"Proxy-Authorization": PROXY_AUTH} if "@" in proxy else {}
    return Request(
        url, meta={"proxy": "http://" + plain.split("://")[-1], "download_timeout": 1, **meta}, headers=headers
    )


def aiohttp_error(req: Request) -> Exception:
    """What Scrapy's AiohttpDownloadHandler (reactorless mode) raises for this request."""
    from scrapy.core.downloader.handlers._aiohttp import AiohttpDownloadHandler

    async def fetch() -> Exception:
        # The handler reads only the crawler's settings. Not get_crawler, nor _apply_settings: both
        # refuse reactorless mode once an earlier test in this process has installed a reactor.
        crawler = AsyncCrawlerRunner({"TWISTED_REACTOR_ENABLED": False}).create_crawler(Spider)
        handler = AiohttpDownloadHandler(crawler)
        try:
            await handler.download_request(req)
        except Exception as exc:
            return exc
        finally:
            await handler.close()
        raise AssertionError("the download succeeded")

    return asyncio.run(fetch())


def curl_error(url: str, proxy: str | None) -> Exception:
    """What curl_cffi (scrapy-impersonate's backend) raises for this download."""
    from curl_cffi import requests as curl_requests

    try:
        curl_requests.get(url, proxy=proxy, timeout=1, verify=False, impersonate="chrome")
    except Exception as exc:
        return exc
    raise AssertionError("the download succeeded")


def tunnel_error(status_code: int | None, reason: bytes = b"") -> TunnelError:
    extra = {"status": status_code, "reason": reason} if status_code else b"\x16\x03garbage"
    return TunnelError(f"Could not open CONNECT tunnel with proxy 127.0.0.1:3128 [{extra!r}]")


def wrapped(outer: Exception, inner: BaseException) -> Exception:
    """`outer` raised from `inner`, as Scrapy's handlers do."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except Exception as exc:
        return exc


# All an errback or a log could print: the same reading the crawl harness gives its errbacks.
everything = error_text


SECRETS = (PASSWORD, "S3cr3t%21pw", PROXY_AUTH.split()[1])


def assert_masked(exc: BaseException) -> None:
    text = everything(exc)
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in:\n{text}"


# -- the table: Scrapy's HTTP/1.1 handler and Twisted ---------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (tunnel_error(407, b"Proxy Authentication Required"), TransportFailure(T.TUNNEL, 407)),
        (tunnel_error(403, b"Forbidden"), TransportFailure(T.TUNNEL, 403)),
        (tunnel_error(503, b"Service Unavailable"), TransportFailure(T.TUNNEL, 503)),
        (tunnel_error(None), TransportFailure(T.TUNNEL)),
        (
            wrapped(DownloadConnectionRefusedError("refused"), twisted_errors.ConnectionRefusedError()),
            TransportFailure(T.REFUSED),
        ),
        (wrapped(CannotResolveHostError("dns"), twisted_errors.DNSLookupError()), TransportFailure(T.DNS)),
        (DownloadTimeoutError("Getting x took longer than 3.0 seconds."), TransportFailure(T.TIMEOUT)),
        (wrapped(DownloadFailedError("[lost]"), ResponseFailed([])), TransportFailure(T.DROPPED)),
        (ResponseDataLossError(""), TransportFailure(T.DROPPED)),
        (twisted_errors.ConnectionLost(), TransportFailure(T.DROPPED)),
        (twisted_errors.TCPTimedOutError(), TransportFailure(T.TIMEOUT)),
    ],
)
def test_http11_exceptions(exc: BaseException, expected: TransportFailure) -> None:
    assert transport_failure(exc) == expected
    assert transport_error(exc) is expected.kind


@pytest.mark.parametrize("exc", [ValueError("no"), IgnoreRequest("filtered"), KeyError("proxy")])
def test_other_exceptions_are_not_transport_failures(exc: BaseException) -> None:
    assert transport_failure(exc) is None
    assert transport_error(exc) is None


# -- the table: aiohttp (reactorless mode), from Scrapy's real handler --------------------------------


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (status(407, "Proxy Authentication Required"), TransportFailure(T.TUNNEL, 407)),
        (status(403, "Forbidden"), TransportFailure(T.TUNNEL, 403)),
        (status(503, "Service Unavailable"), TransportFailure(T.TUNNEL, 503)),
        (silent, TransportFailure(T.TIMEOUT)),
        (reset, TransportFailure(T.DROPPED)),
        # TLS with the origin fails inside the tunnel: Scrapy says DownloadConnectionRefusedError,
        # but the proxy's port was open; not a refused proxy.
        (tunnel_then_garbage, TransportFailure(T.DROPPED)),
    ],
    ids=["407", "403", "503", "silent", "reset", "tls-in-tunnel"],
)
def test_aiohttp_https_through_a_proxy(
    proxies: Callable[[Callable[[socket.socket], None]], FakeProxy],
    behaviour: Callable[[socket.socket], None],
    expected: TransportFailure,
) -> None:
    proxy = proxies(behaviour)
    exc = aiohttp_error(request("https://127.0.0.9:4443/", proxy.url()))
    if behaviour is tunnel_then_garbage:
        assert isinstance(exc, DownloadConnectionRefusedError)  # Scrapy's name for aiohttp's connector errors
    assert transport_failure(exc) == expected, repr(exc)
    masked = CredentialMask().for_request(request("https://x/", proxy.url())).exception(exc)
    assert masked is exc
    assert transport_failure(masked) == expected
    assert_masked(masked)


def test_aiohttp_407_text_is_the_reported_one_and_gets_masked(
    proxies: Callable[[Callable[[socket.socket], None]], FakeProxy],
) -> None:
    import aiohttp

    proxy = proxies(status(407, "Proxy Authentication Required"))
    exc = aiohttp_error(request("https://127.0.0.9:4443/", proxy.url()))
    # The report of issue section 3, exactly: the decoded password in Scrapy's exception text.
    assert type(exc) is DownloadFailedError
    assert str(exc) == (
        f"407, message='Proxy Authentication Required', url='http://{USER}:{PASSWORD}@127.0.0.1:{proxy.port}'"
    )
    assert isinstance(exc.__cause__, aiohttp.ClientHttpProxyError)
    masked = mask_exception(exc, proxy_urls=[proxy.url()])
    assert masked is exc and type(masked) is DownloadFailedError
    assert (
        str(masked) == f"407, message='Proxy Authentication Required', url='http://{USER}:***@127.0.0.1:{proxy.port}'"
    )
    assert isinstance(masked.__cause__, aiohttp.ClientHttpProxyError)  # failure.check() still works
    assert_masked(masked)


def test_aiohttp_dead_proxy_and_unresolvable_proxy() -> None:
    dead = aiohttp_error(request("https://127.0.0.9:4443/", f"http://127.0.0.1:{free_port()}"))
    assert isinstance(dead, DownloadConnectionRefusedError)
    assert transport_failure(dead) == TransportFailure(T.REFUSED)
    dns = aiohttp_error(request("http://127.0.0.9:4443/", "http://u:p@proxy.invalid:3128"))
    assert isinstance(dns, CannotResolveHostError)
    assert transport_failure(dns) == TransportFailure(T.DNS)


def test_aiohttp_direct_refusal_is_still_refused() -> None:
    exc = aiohttp_error(Request(f"http://127.0.0.1:{free_port()}/", meta={"download_timeout": 1}))
    assert transport_failure(exc) == TransportFailure(T.REFUSED)


# -- the table: curl_cffi (scrapy-impersonate), from curl itself --------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "url", "expected", "code"),
    [
        (status(407, "Proxy Authentication Required"), "https://127.0.0.9:4443/", TransportFailure(T.TUNNEL, 407), 7),
        (status(429, "Too Many Requests"), "https://127.0.0.9:4443/", TransportFailure(T.TUNNEL, 429), 7),
        (status(503, "Service Unavailable"), "https://127.0.0.9:4443/", TransportFailure(T.TUNNEL, 503), 7),
        (silent, "http://127.0.0.9:4443/", TransportFailure(T.TIMEOUT), 28),
        (answer(b""), "http://127.0.0.9:4443/", TransportFailure(T.DROPPED), 52),
        (reset, "http://127.0.0.9:4443/", TransportFailure(T.DROPPED), 56),
        (answer(b"HTTP/1.1 200 OK\r\n"), "https://127.0.0.9:4443/", TransportFailure(T.TUNNEL), 56),
        (tunnel_then_garbage, "https://127.0.0.9:4443/", TransportFailure(T.DROPPED), 35),
        (answer(b"\x16\x03 not HTTP\r\n\r\n"), "http://127.0.0.9:4443/", TransportFailure(T.DROPPED), 1),
    ],
    ids=["407", "429", "503", "silent", "empty", "reset", "connect-aborted", "tls-in-tunnel", "garbage"],
)
def test_curl_errors(
    proxies: Callable[[Callable[[socket.socket], None]], FakeProxy],
    behaviour: Callable[[socket.socket], None],
    url: str,
    expected: TransportFailure,
    code: int,
) -> None:
    proxy = proxies(behaviour)
    exc = curl_error(url, proxy.url())
    assert f"curl: ({code})" in str(exc), str(exc)
    assert isinstance(exc, OSError)  # not one of Scrapy's: RetryMiddleware retries it as an OSError
    assert transport_failure(exc) == expected, str(exc)


def test_curl_dead_and_unresolvable_proxy() -> None:
    dead = curl_error("http://127.0.0.9:4443/", f"http://127.0.0.1:{free_port()}")
    assert "curl: (7) Failed to connect" in str(dead)
    assert transport_failure(dead) == TransportFailure(T.REFUSED)
    unresolvable = curl_error("http://127.0.0.9:4443/", "http://proxy.invalid:3128")
    assert "curl: (5)" in str(unresolvable)
    assert transport_failure(unresolvable) == TransportFailure(T.DNS)


# -- the table: faults from it ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status_code", "kind", "blame", "hard"),
    [
        (407, "tunnel_407", Blame.PROXY, True),
        (403, "tunnel_403", Blame.PAIR, False),
        (429, "tunnel_429", Blame.PAIR, False),
        (503, "tunnel_503", Blame.UNKNOWN, False),
        (None, "tunnel_error", Blame.UNKNOWN, False),
    ],
)
def test_status_from_the_table_decides_the_tunnel_fault(
    status_code: int | None, kind: str, blame: Blame, hard: bool
) -> None:
    fault = classify_transport(T.TUNNEL, via_proxy=True, status=status_code)
    assert (fault.kind, fault.blame, fault.hard) == (kind, blame, hard)
    # The message is only read when no status is given (TunnelError's text, as before).
    assert classify_transport(T.TUNNEL, via_proxy=True, status=407, message="'status': 503").kind == "tunnel_407"


# -- the table: extending it ----------------------------------------------------------------------------


class BackendTimeout(Exception):
    pass


class BackendError(Exception):
    pass


@pytest.fixture
def registered() -> Iterator[list[object]]:
    rules: list[object] = []
    yield rules
    for added in rules:
        unregister_transport_error(added)  # type: ignore[arg-type]


def test_register_a_class_and_a_pattern_with_a_status(registered: list[object]) -> None:
    assert transport_failure(BackendTimeout()) is None
    registered.append(register_transport_error(BackendTimeout, "timeout"))
    registered.append(register_transport_error(BackendError, T.TUNNEL, r"proxy said (?P<status>\d{3})"))
    assert transport_failure(BackendTimeout()) == TransportFailure(T.TIMEOUT)
    assert transport_failure(BackendError("proxy said 407 to CONNECT")) == TransportFailure(T.TUNNEL, 407)
    assert transport_failure(BackendError("something else")) is None  # the pattern must match
    # Found in the chain too, as the handlers' wrapped exceptions are.
    assert transport_failure(wrapped(RuntimeError("wrapper"), BackendTimeout())) == TransportFailure(T.TIMEOUT)


def test_registered_rules_come_first_and_can_override(registered: list[object]) -> None:
    exc = DownloadFailedError("proxy said 429")
    assert transport_failure(exc) == TransportFailure(T.DROPPED)
    registered.append(register_transport_error(DownloadFailedError, "tunnel", r"proxy said (?P<status>\d{3})"))
    assert transport_failure(exc) == TransportFailure(T.TUNNEL, 429)
    assert transport_rules()[0] is registered[0]
    assert transport_rules()[1:] == BUILTIN_RULES
    unregister_transport_error(registered.pop())  # type: ignore[arg-type]
    assert transport_failure(exc) == TransportFailure(T.DROPPED)


def test_register_by_dotted_name_never_imports(registered: list[object]) -> None:
    registered.append(register_transport_error("not_imported_package.errors.Boom", "dropped"))
    assert transport_failure(BackendError()) is None
    registered.append(register_transport_error(f"{__name__}.BackendError", "dropped"))
    assert transport_failure(BackendError()) == TransportFailure(T.DROPPED)


@pytest.mark.parametrize(
    ("args", "error"),
    [(("NoDots", "timeout"), ValueError), ((int, "timeout"), TypeError), ((BackendError, "slow"), ValueError)],
)
def test_register_rejects_what_it_cannot_use(args: tuple[object, str], error: type[Exception]) -> None:
    with pytest.raises(error):
        register_transport_error(*args)  # type: ignore[arg-type]


def test_the_chain_is_followed_safely() -> None:
    a, b = DownloadFailedError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a  # a cycle
    assert transport_failure(a) == TransportFailure(T.DROPPED)
    assert transport_failure(b) == TransportFailure(T.DROPPED)  # through the cycle to a

    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    assert transport_failure(wrapped(Broken(), twisted_errors.ConnectionLost())) == TransportFailure(T.DROPPED)


# -- masking: text -----------------------------------------------------------------------------------


@pytest.fixture
def mask() -> CredentialMask:
    return CredentialMask.from_urls([f"http://{USER}:S3cr3t%21pw@proxy.example:3128"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("url='http://crawler:S3cr3t!pw@h:1'", f"url='http://crawler:{MASK}@h:1'"),
        ("http://crawler:S3cr3t%21pw@h:1", f"http://crawler:{MASK}@h:1"),
        ("http://crawler:S3cr3t%21PW@h:1", f"http://crawler:{MASK}@h:1"),  # unknown: any URL password
        ("escaped S3cr3t%21pw, as written", f"escaped {MASK}, as written"),
        ("bare S3cr3t!pw in a sentence", f"bare {MASK} in a sentence"),
        (f"{{b'Proxy-Authorization': [b'{PROXY_AUTH}']}}", f"{{b'Proxy-Authorization': [b'Basic {MASK}']}}"),
        (f"token {PROXY_AUTH.split()[1]} alone", f"token {MASK} alone"),
        ("'Proxy-Authorization': 'Basic dW5rbm93bjpwdw=='", f"'Proxy-Authorization': 'Basic {MASK}'"),
        ("https://other:pw2@gw.example:8000/path", f"https://other:{MASK}@gw.example:8000/path"),
        ("http://127.0.0.1:3128/a@b and user@example.com", "http://127.0.0.1:3128/a@b and user@example.com"),
        ("Connection was refused by other side: 111", "Connection was refused by other side: 111"),
    ],
)
def test_mask_text(mask: CredentialMask, text: str, expected: str) -> None:
    assert mask.text(text) == expected
    assert mask.leaks(text) is (text != expected)


def test_mask_every_percent_encoding_and_escape() -> None:
    mask = CredentialMask([("u", "a/b\\c'd")])
    text = "a/b\\c'd a%2Fb%5Cc%27d a%2fb%5cc%27d " + repr("a/b\\c'd") + " " + repr(b"a/b\\c'd")
    assert mask.text(text) == " ".join([MASK] * 3) + f' "{MASK}" b"{MASK}"'


def test_mask_for_request_reads_meta_and_header() -> None:
    req = Request(
        "https://origin.example/",
        meta={"proxy": "http://proxy.example:3128", "gateway_proxy": "http://pin:Pinned-pw@p.example:1"},
        headers={"Proxy-Authorization": PROXY_AUTH},
    )
    mask = CredentialMask().for_request(req)
    assert mask.text(f"{PASSWORD} Pinned-pw") == f"{MASK} {MASK}"
    assert mask.for_request(req) is mask  # nothing new: the same mask


def test_mask_from_proxies_of_a_pool() -> None:
    from scrapy_gateway.core.proxies import parse_proxy

    mask = CredentialMask.from_proxies([parse_proxy("http://u1:p%40ss-one@a:1"), parse_proxy("http://u2:two-pw@b:2")])
    assert mask.text("p@ss-one p%40ss-one two-pw") == f"{MASK} {MASK} {MASK}"


# -- masking: exceptions -------------------------------------------------------------------------------


def test_nothing_to_mask_leaves_the_exception_untouched(mask: CredentialMask) -> None:
    exc = wrapped(DownloadFailedError("no secret here"), ConnectionResetError(104, "reset"))
    args, cause = exc.args, exc.__cause__
    assert mask.exception(exc) is exc
    assert exc.args is args and exc.__cause__ is cause


def test_in_place_keeps_class_attributes_and_chain(mask: CredentialMask) -> None:
    class ProxyFailure(Exception):
        def __init__(self, url: str, code: int, detail: str) -> None:  # not rebuildable from one arg
            super().__init__(f"{code} via {url}")
            self.url, self.code, self.detail = url, code, detail

    inner = ProxyFailure(f"http://{USER}:S3cr3t%21pw@h:1", 407, f"sent {PROXY_AUTH}")
    exc = wrapped(DownloadFailedError(f"407 via http://{USER}:{PASSWORD}@h:1"), inner)
    exc.add_note(f"retry with {PASSWORD}")
    masked = mask.exception(exc)
    assert masked is exc and type(masked) is DownloadFailedError
    assert type(masked.__cause__) is ProxyFailure and masked.__cause__ is inner
    assert inner.code == 407 and inner.url == f"http://{USER}:{MASK}@h:1"
    assert str(masked) == f"407 via http://{USER}:{MASK}@h:1"
    assert masked.__suppress_context__ is True  # "from": as it was
    assert_masked(masked)


def test_text_from_elsewhere_swaps_in_a_subclass_of_the_same_name(mask: CredentialMask) -> None:
    class Opaque(DownloadTimeoutError):
        __slots__ = ("_where",)

        def __init__(self, where: str) -> None:
            super().__init__()
            self._where = where

        def __str__(self) -> str:
            return f"timed out at {self._where}"

    exc = Opaque(f"http://{USER}:{PASSWORD}@h:1")
    masked = mask.exception(exc)
    assert masked is exc
    assert isinstance(masked, Opaque) and type(masked).__name__ == "Opaque"
    assert type(masked).__module__ == Opaque.__module__
    assert str(masked) == f"timed out at http://{USER}:{MASK}@h:1"
    assert "Opaque" in repr(masked)
    assert transport_failure(masked) == TransportFailure(T.TIMEOUT)
    assert mask.exception(masked) is masked  # masking twice changes nothing


def test_a_builtin_oserror_is_masked_in_place_fields_included(mask: CredentialMask) -> None:
    # Its text comes from strerror/filename, not args; masked in place, nothing unmasked is left
    # behind to become a stand-in's __context__.
    cause = DownloadFailedError(f"see {PASSWORD}")
    exc = wrapped(OSError(2, "No such file", f"http://{USER}:{PASSWORD}@h:1"), cause)  # type: ignore[arg-type]
    masked = mask.exception(exc)
    assert masked is exc and isinstance(masked, OSError)
    assert f"{USER}:{MASK}@h:1" in str(masked)
    assert masked.__cause__ is cause and str(cause) == f"see {MASK}"
    assert_masked(masked)


def test_unsubclassable_class_falls_back_to_a_gateway_exception(mask: CredentialMask) -> None:
    class Sealed(DownloadTimeoutError):
        _where: str
        __slots__ = ("_where",)  # its text comes from a slot: masking args and attributes cannot reach it

        def __init_subclass__(cls) -> None:
            raise TypeError("sealed")  # and no subclass can carry the masked text

        def __str__(self) -> str:
            return f"timed out at {self._where}"

    exc = Sealed()
    exc._where = f"http://{USER}:{PASSWORD}@h:1"
    masked = mask.exception(exc)
    assert type(masked).__name__ == "MaskedDownloadTimeoutError"
    assert isinstance(masked, MaskedDownloadError) and isinstance(masked, DownloadTimeoutError)
    assert masked.original_type.endswith("Sealed")  # type: ignore[attr-defined]
    assert str(masked) == f"timed out at http://{USER}:{MASK}@h:1"
    assert transport_failure(masked) == TransportFailure(T.TIMEOUT)
    assert_masked(masked)
    assert str(exc) == f"timed out at http://{USER}:{PASSWORD}@h:1"  # the original, left as it was


def test_masking_survives_cycles_and_broken_text(mask: CredentialMask) -> None:
    a, b = DownloadFailedError(f"a {PASSWORD}"), ValueError(f"b {PASSWORD}")
    a.__context__, b.__context__ = b, a

    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    a.__cause__ = Broken()
    assert mask.exception(a) is a
    assert str(a) == f"a {MASK}" and str(b) == f"b {MASK}"


def test_mask_exception_one_off() -> None:
    exc = DownloadFailedError(f"url='http://{USER}:{PASSWORD}@h:1' {PROXY_AUTH}")
    masked = mask_exception(exc, credentials=[(USER, PASSWORD)])
    assert str(masked) == f"url='http://{USER}:{MASK}@h:1' Basic {MASK}"


# -- the middleware: the minimal wiring ---------------------------------------------------------------


def _middleware() -> object:
    from scrapy_gateway.middleware import GatewayMiddleware

    crawler = get_crawler(
        settings_dict={
            "DOWNLOADER": "scrapy_gateway.GatewayDownloader",
            "GATEWAY_PROXIES": [f"http://{USER}:S3cr3t%21pw@127.0.0.1:3128"],
        }
    )
    return GatewayMiddleware.from_crawler(crawler)


def test_middleware_scrubs_in_place_and_raises_a_stand_in_only_when_it_must() -> None:
    middleware = _middleware()
    # gateway_skip: no engine here to judge the failure; the masking comes first all the same.
    req = Request("https://origin.example/", meta={"proxy": "http://127.0.0.1:3128", "gateway_skip": True})
    exc = DownloadFailedError(
        f"407, message='Proxy Authentication Required', url='http://{USER}:{PASSWORD}@127.0.0.1:3128'"
    )
    assert middleware.process_exception(req, exc) is None  # type: ignore[attr-defined]
    assert PASSWORD not in str(exc)  # Scrapy re-raises this very object
    builtin = OSError(2, "No such file", f"http://{USER}:{PASSWORD}@h:1")
    try:
        raise builtin
    except OSError as handled:
        assert middleware.process_exception(req, handled) is None  # type: ignore[attr-defined]
    assert PASSWORD not in str(builtin) and PASSWORD not in repr(builtin.args)  # masked in place
