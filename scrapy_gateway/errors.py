"""The exceptions scrapy-gateway raises, and the lookup of download exceptions' failure kinds.

The table itself, with the rules for each download handler, is in `scrapy_gateway.handlers`.
"""

from __future__ import annotations

from scrapy.exceptions import DownloadFailedError, DownloadTimeoutError, IgnoreRequest

from scrapy_gateway.core.faults import TransportError
from scrapy_gateway.core.gates import Hold
from scrapy_gateway.handlers import transport_failure


class GatewayError(IgnoreRequest):
    """Raised into a request's errback when the gateway cannot send it at all."""


class NoProxyAvailable(GatewayError):
    """Every proxy of the pool is retired (or, with GATEWAY_WHEN_ALL_DOWN = "close", out)."""


class RetryCancelled(GatewayError):
    """The crawl closed while this request waited for its retry, and no JOBDIR could keep it."""


class HeldAtStart(Exception):
    """Raised from the download handler, before anything is sent, for a request that an outage gate
    opened while it queued for its slot now holds; the gateway's own process_exception parks it
    (never an errback's: the middleware turns every one back into the request)."""

    def __init__(self, hold: Hold) -> None:
        super().__init__(f"held by the outage gate of {hold.scope}")
        self.hold = hold


class AttemptTimeout(DownloadTimeoutError):
    """The gateway cut an attempt short: it took longer than its domain and its proxy have shown
    they take (see scrapy_gateway/core/latency.py), well before DOWNLOAD_TIMEOUT. It is retried on
    another proxy; if the gateway gives up, the errback gets it, and Scrapy's own handling of a
    DownloadTimeoutError applies."""


class MaskedDownloadError(DownloadFailedError):
    """Stands in for a download exception that carried proxy credentials in its text and whose own
    class could not be given the masked text. `original_type` names that class ("module.Class").
    The masking picks a subclass that is also the matching Scrapy exception (DownloadTimeoutError,
    ...), so `failure.check()` against Scrapy's classes still works."""

    original_type: str = ""


def transport_error(exc: BaseException) -> TransportError | None:
    """The kind of a download exception, or None when it is not a transport failure."""
    found = transport_failure(exc)
    return found.kind if found is not None else None
