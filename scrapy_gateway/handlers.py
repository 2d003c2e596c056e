"""Download handlers' exceptions, mapped to the core's backend-neutral failure kinds.

Each download handler reports the same network failure its own way (checked with crawls through
squid, tinyproxy and dead ports on Scrapy 2.19; see tests/real/test_handlers.py):

- Scrapy's HTTP/1.1 handler raises Scrapy's own classes (`DownloadTimeoutError`, ...) and, for a
  CONNECT the proxy refused, `TunnelError("... [{'status': 407, 'reason': b'...'}]")`.
- The aiohttp handler (reactorless mode, `TWISTED_REACTOR_ENABLED = False`) raises the same Scrapy
  classes, but chooses them by aiohttp's class, so they mislead: a refused CONNECT is a
  `DownloadFailedError("407, message='Proxy Authentication Required', url='http://user:PASS@...'")`
  and a TLS failure with the origin inside the tunnel is a `DownloadConnectionRefusedError`.
  Scrapy keeps aiohttp's exception as `__cause__`, and that is what the rules below read.
- scrapy-impersonate (curl_cffi) raises curl_cffi's exceptions (`ConnectionError`, `Timeout`, ...,
  all `CurlError` and `OSError`), whose only precise record is curl's error code in the text:
  `curl: (7) CONNECT tunnel failed, response 407`.

A rule is a class (or the dotted name of one, so that optional libraries are never imported here),
an optional regular expression searched in `str(exception)`, and the kind. A named group `status`
in the expression is the proxy's status for a refused CONNECT. The first rule, in table order, that
matches the exception or any exception it was raised from (`__cause__`, or an unsuppressed
`__context__`) wins, so specific rules come first. Rules registered with
`register_transport_error` are tried before the built-in ones, the latest first.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

from scrapy.core.downloader.handlers.http11 import TunnelError
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
    ResponseDataLossError,
)
from twisted.internet import error as twisted_errors
from twisted.web.client import ResponseFailed

from scrapy_gateway.core.faults import TransportError

ExceptionClass = type[BaseException] | str  # a class, or "package.module.Class"
_CHAIN_LIMIT = 16  # exceptions followed along __cause__/__context__ (chains can be cyclic)


@dataclass(frozen=True, slots=True)
class TransportFailure:
    """What the table says about an exception: its kind, and the proxy's answer to our CONNECT."""

    kind: TransportError
    status: int | None = None


@dataclass(frozen=True, slots=True)
class TransportRule:
    exception: ExceptionClass
    kind: TransportError
    pattern: re.Pattern[str] | None = None
    _resolved: list[type[BaseException]] = field(default_factory=list, compare=False, repr=False)

    def exception_class(self) -> type[BaseException] | None:
        """The class, once its module is imported (an exception of it cannot exist before)."""
        if not isinstance(self.exception, str):
            return self.exception
        if self._resolved:
            return self._resolved[0]
        module_name, _, name = self.exception.rpartition(".")
        module = sys.modules.get(module_name)
        found = getattr(module, name, None) if module is not None else None
        if isinstance(found, type) and issubclass(found, BaseException):
            self._resolved.append(found)
            return found
        return None

    def match(self, exc: BaseException) -> TransportFailure | None:
        cls = self.exception_class()
        if cls is None or not isinstance(exc, cls):
            return None
        if self.pattern is None:
            return TransportFailure(self.kind)
        found = self.pattern.search(_text(exc))
        if found is None:
            return None
        status = found.groupdict().get("status")
        return TransportFailure(self.kind, int(status) if status else None)


def rule(
    exception: ExceptionClass, kind: TransportError | str, pattern: str | re.Pattern[str] | None = None
) -> TransportRule:
    """A rule; `kind` is a TransportError or its value ("refused", "timeout", "dns", "dropped", "tunnel")."""
    if isinstance(exception, str) and "." not in exception:
        raise ValueError(f"exception {exception!r}: give the full dotted path, e.g. 'package.module.Class'")
    if not isinstance(exception, str) and not (isinstance(exception, type) and issubclass(exception, BaseException)):
        raise TypeError(f"exception must be an exception class or its dotted path, not {exception!r}")
    compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
    return TransportRule(exception, TransportError(kind), compiled)


_T = TransportError
_CURL = "curl_cffi.curl.CurlError"  # base of every curl_cffi exception, requests' ones included
# The status in Scrapy's TunnelError text: [{'status': 407, 'reason': b'...'}] (see faults.tunnel_status).
_TUNNEL_STATUS = r"['\"]status['\"]\s*:\s*(?P<status>\d{3})"

BUILTIN_RULES: tuple[TransportRule, ...] = (
    # The gateway's own per-attempt timeout (a DownloadTimeoutError, so it must come first).
    rule("scrapy_gateway.errors.AttemptTimeout", _T.CUT),
    # Scrapy's HTTP/1.1 handler: the proxy refused our CONNECT (status unreadable for garbage).
    rule(TunnelError, _T.TUNNEL, _TUNNEL_STATUS),
    rule(TunnelError, _T.TUNNEL),
    # aiohttp (reactorless mode), found as the __cause__ of Scrapy's exception.
    rule("aiohttp.ClientHttpProxyError", _T.TUNNEL, r"^(?P<status>\d{3}),"),  # "407, message=..."
    rule("aiohttp.ClientProxyConnectionError", _T.REFUSED),  # the proxy's port, not the origin's
    rule("aiohttp.ClientConnectorDNSError", _T.DNS),
    # TLS with the origin, inside the tunnel: Scrapy calls it DownloadConnectionRefusedError.
    rule("aiohttp.ClientSSLError", _T.DROPPED),
    rule(ConnectionRefusedError, _T.REFUSED),  # the builtin one: a direct connection refused
    rule("aiohttp.ClientConnectorError", _T.DROPPED),  # reset/closed while connecting (TLS included)
    # curl_cffi (scrapy-impersonate): curl's error code is in the text, "curl: (N) ...".
    # (curl reports a refused CONNECT as code 7 or, depending on its version, 56)
    rule(_CURL, _T.TUNNEL, r"curl: \((?:7|56)\) CONNECT tunnel failed, response (?P<status>\d{3})"),
    rule(_CURL, _T.REFUSED, r"curl: \(7\)"),  # COULDNT_CONNECT: to the proxy when there is one
    rule(_CURL, _T.DNS, r"curl: \((?:5|6)\)"),  # COULDNT_RESOLVE_PROXY, COULDNT_RESOLVE_HOST
    rule(_CURL, _T.TIMEOUT, r"curl: \(28\)"),  # OPERATION_TIMEDOUT
    # The proxy closed or botched our CONNECT without a status; PROXY (97): proxy handshake error.
    rule(_CURL, _T.TUNNEL, r"curl: \((?:56\) Proxy CONNECT aborted|97\))"),
    # WEIRD_SERVER_REPLY, PARTIAL_FILE, SSL_CONNECT_ERROR, GOT_NOTHING, SEND_ERROR, RECV_ERROR,
    # HTTP2, HTTP2_STREAM: the connection broke or the reply made no sense.
    rule(_CURL, _T.DROPPED, r"curl: \((?:8|16|18|35|52|55|56|92)\)"),
    rule(_CURL, _T.DROPPED, r"curl: \(1\) Received HTTP/0\.9"),  # not HTTP at all (garbage for a status line)
    # Scrapy's backend-neutral exceptions, and Twisted's for code that raises them directly.
    rule(DownloadConnectionRefusedError, _T.REFUSED),
    rule(twisted_errors.ConnectionRefusedError, _T.REFUSED),
    rule(CannotResolveHostError, _T.DNS),
    rule(twisted_errors.DNSLookupError, _T.DNS),
    rule(DownloadTimeoutError, _T.TIMEOUT),
    rule(twisted_errors.TimeoutError, _T.TIMEOUT),
    rule(twisted_errors.TCPTimedOutError, _T.TIMEOUT),
    rule(ResponseDataLossError, _T.DROPPED),
    rule(DownloadFailedError, _T.DROPPED),
    rule(ResponseFailed, _T.DROPPED),
    rule(twisted_errors.ConnectionDone, _T.DROPPED),
    rule(twisted_errors.ConnectionLost, _T.DROPPED),
    rule(twisted_errors.ConnectError, _T.DROPPED),
)

_registered: list[TransportRule] = []


def register_transport_error(
    exception: ExceptionClass, kind: TransportError | str, pattern: str | re.Pattern[str] | None = None
) -> TransportRule:
    """Teach the gateway a download handler's exception; returns the rule (for unregistering).

    Registered rules are tried before the built-in ones, the latest first, so a registration can
    also override a built-in rule. Example, for a handler whose timeouts are `mylib.Timeout`:
    `register_transport_error("mylib.Timeout", "timeout")`; for one that writes the proxy's status
    in the text: `register_transport_error(MyError, "tunnel", r"proxy said (?P<status>\\d{3})")`.
    """
    new = rule(exception, kind, pattern)
    _registered.insert(0, new)
    return new


def unregister_transport_error(registered: TransportRule) -> None:
    """Remove a rule added by register_transport_error (no error if it is not there)."""
    if registered in _registered:
        _registered.remove(registered)


def transport_rules() -> tuple[TransportRule, ...]:
    """Every rule in the order they are tried: registered ones first, then BUILTIN_RULES."""
    return (*_registered, *BUILTIN_RULES)


def transport_failure(exc: BaseException, first: tuple[TransportRule, ...] = ()) -> TransportFailure | None:
    """The kind of a download exception (and the CONNECT status), or None if not a transport failure.

    `first`: rules tried before all others (a crawl's GATEWAY_TRANSPORT_ERRORS)."""
    chain = list(exception_chain(exc))
    for candidate in (*first, *transport_rules()):
        for link in chain:
            found = candidate.match(link)
            if found is not None:
                return found
    return None


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then what it was raised from, as Python's traceback prints them."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _CHAIN_LIMIT:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not break the download path
        return ""
