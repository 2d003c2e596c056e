"""Scrapy and Twisted download exceptions, mapped to the core's backend-neutral kinds.

The table is ordered: the first class that matches wins, so specific classes come before their
bases (ConnectionRefusedError before ConnectError).
"""

from __future__ import annotations

from scrapy.core.downloader.handlers.http11 import TunnelError
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
    IgnoreRequest,
    ResponseDataLossError,
)
from twisted.internet import error as twisted_errors
from twisted.web.client import ResponseFailed

from scrapy_gateway.core.faults import TransportError

_TABLE: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], TransportError], ...] = (
    (TunnelError, TransportError.TUNNEL),
    ((DownloadConnectionRefusedError, twisted_errors.ConnectionRefusedError), TransportError.REFUSED),
    ((CannotResolveHostError, twisted_errors.DNSLookupError), TransportError.DNS),
    ((DownloadTimeoutError, twisted_errors.TimeoutError, twisted_errors.TCPTimedOutError), TransportError.TIMEOUT),
    (
        (
            ResponseDataLossError,
            DownloadFailedError,
            ResponseFailed,
            twisted_errors.ConnectionDone,
            twisted_errors.ConnectionLost,
            twisted_errors.ConnectError,
        ),
        TransportError.DROPPED,
    ),
)


class GatewayError(IgnoreRequest):
    """Raised into a request's errback when the gateway cannot send it at all."""


class NoProxyAvailable(GatewayError):
    """Every proxy of the pool is retired (or, with GATEWAY_WHEN_ALL_DOWN = "close", out)."""


class RetryCancelled(GatewayError):
    """The crawl closed while this request waited for its retry, and no JOBDIR could keep it."""


def transport_error(exc: BaseException) -> TransportError | None:
    """The kind of a download exception, or None when it is not a transport failure."""
    for classes, kind in _TABLE:
        if isinstance(exc, classes):
            return kind
    return None
