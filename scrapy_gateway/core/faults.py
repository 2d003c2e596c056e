"""The vocabulary of failures: what went wrong, and whose fault it is.

Every rule that turns a status, a header or a transport error into a `Fault` lives in this module,
so the blame table in the README can be checked against one place. Nothing here knows about Scrapy:
the adapter translates Scrapy's exceptions into a `TransportError` name first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from scrapy_gateway.core.retry_after import parse_retry_after


class Blame(str, Enum):
    PROXY = "proxy"  # the proxy is broken for every domain
    PAIR = "pair"  # the proxy is refused by this one domain (ban, per-IP rate limit)
    ORIGIN = "origin"  # the site or its own gateway; proxies are innocent
    UNKNOWN = "unknown"  # the failure itself does not say; history may (see blame.py)


class TransportError(str, Enum):
    """Backend-neutral download errors, as the adapter maps Scrapy's exceptions."""

    REFUSED = "refused"
    TIMEOUT = "timeout"
    DNS = "dns"
    DROPPED = "dropped"  # connection lost, truncated body, reset
    TUNNEL = "tunnel"  # CONNECT refused by the proxy; the adapter passes its status when known
    CUT = "cut"  # the gateway's per-attempt timeout: slower than the domain and the path have shown


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str  # short, stable name used in stats: "http_502", "proxy_refused", ...
    blame: Blame
    throttles: bool = False  # evidence that the origin is overloaded: lower its concurrency
    hard: bool = False  # certain proxy breakage: eject without waiting for a score
    retry_after: float | None = None  # seconds, already capped by the caller's parser
    retryable: bool = True
    answered: bool = True  # something came back (False for a timeout: the path stayed silent)
    transport: bool = False  # no HTTP status came back (refused, dropped, timed out, tunnel failed)
    retires: bool = False  # the proxy's credentials are wrong: retire it, they do not heal mid-crawl


# RFC 9209 error types that describe the proxy itself rather than the next hop.
_PROXY_SIDE_ERRORS = frozenset(
    {
        "proxy_internal_error",
        "proxy_internal_response",
        "proxy_configuration_error",
        "proxy_loop_detected",
        "http_request_denied",
        "http_request_error",
        "destination_ip_prohibited",
        "connection_limit_reached",
    }
)
_PROXY_STATUS_ERROR = re.compile(r";\s*error\s*=\s*\"?([A-Za-z0-9_\-]+)")
# Squid's own error pages name the failure; ERR_CONNECT_FAIL/ERR_DNS_FAIL/ERR_READ_TIMEOUT are about
# reaching the origin, ERR_ACCESS_DENIED is the proxy refusing us.
_SQUID_ORIGIN_ERRORS = ("ERR_CONNECT_FAIL", "ERR_DNS_FAIL", "ERR_READ_TIMEOUT", "ERR_ZERO_SIZE")
_SQUID_PROXY_ERRORS = ("ERR_ACCESS_DENIED", "ERR_CACHE_ACCESS_DENIED", "ERR_TOO_BIG")

_CDN_ORIGIN_STATUSES = frozenset({520, 521, 522, 523, 524})
_THROTTLING_STATUSES = frozenset({502, 503, 504}) | _CDN_ORIGIN_STATUSES


def blame_from_headers(headers: Mapping[str, str]) -> Blame | None:
    """What the response's own headers prove, if anything. Keys are lower-case."""
    proxy_status = headers.get("proxy-status")
    if proxy_status:
        # Only the last member speaks for the proxy closest to us.
        last = proxy_status.split(",")[-1]
        match = _PROXY_STATUS_ERROR.search(last)
        if match is None:
            return Blame.ORIGIN  # the proxy forwarded a status it received
        return Blame.PROXY if match.group(1).lower() in _PROXY_SIDE_ERRORS else Blame.ORIGIN
    squid_error = headers.get("x-squid-error", "")
    if squid_error.startswith(_SQUID_ORIGIN_ERRORS):
        return Blame.ORIGIN
    if squid_error.startswith(_SQUID_PROXY_ERRORS):
        return Blame.PAIR
    return None


def classify_status(
    status: int,
    headers: Mapping[str, str],
    *,
    via_proxy: bool,
    in_tunnel: bool,
    now_epoch: float,
    retry_after_cap: float,
) -> Fault:
    """Classify a response whose status the user asked the gateway to handle.

    `via_proxy`: the request went through a forward proxy. `in_tunnel`: it went through a CONNECT
    tunnel (HTTPS), where the proxy cannot have written the status.
    """
    retry_after = parse_retry_after(headers.get("retry-after"), now_epoch, retry_after_cap)
    kind = f"http_{status}"
    if status == 407 and via_proxy and not in_tunnel:
        return Fault(kind, Blame.PROXY, hard=True, retires=True)
    if not via_proxy or in_tunnel:
        evidence: Blame | None = Blame.ORIGIN
    else:
        evidence = blame_from_headers(headers)
    if status == 429:
        # A rate limit through a proxy is a limit on that proxy's address, for this domain.
        blame = Blame.PAIR if via_proxy else Blame.ORIGIN
        return Fault(kind, blame, throttles=not via_proxy, retry_after=retry_after)
    if status in (500, 408) or status in _CDN_ORIGIN_STATUSES or status == 503:
        # 500 is the application's bug, 408 the origin closing an idle request, 52x a CDN saying
        # the origin failed, 503 an origin overloaded or paused; a proxy's own 503 says so.
        blame = evidence if evidence in (Blame.PROXY, Blame.PAIR) else Blame.ORIGIN
        return Fault(kind, blame, throttles=status in _THROTTLING_STATUSES, retry_after=retry_after)
    if status in (502, 504):
        return Fault(kind, evidence or Blame.UNKNOWN, throttles=True, retry_after=retry_after)
    # Any other status the user listed: trust the evidence, else leave it to history.
    return Fault(kind, evidence or Blame.UNKNOWN, throttles=status >= 500, retry_after=retry_after)


ATTEMPT_TIMEOUT = "attempt_timeout"  # the kind of an attempt the gateway cut short

_TUNNEL_STATUS = re.compile(r"['\"]status['\"]\s*:\s*(\d{3})")


def tunnel_status(message: str) -> int | None:
    """The status a proxy gave to our CONNECT, from Scrapy's TunnelError message, if readable."""
    match = _TUNNEL_STATUS.search(message)
    return int(match.group(1)) if match else None


def classify_transport(
    error: TransportError, *, via_proxy: bool, status: int | None = None, message: str = ""
) -> Fault:
    """Classify a download that produced no response.

    `status`: the proxy's answer to a refused CONNECT, when the adapter knows it; without it, a
    TUNNEL error's status is read from `message` (Scrapy's TunnelError text).
    """
    if not via_proxy:
        # Without a proxy every transport failure is on the way to the origin.
        return Fault(f"origin_{error.value}", Blame.ORIGIN, throttles=error is TransportError.TIMEOUT, transport=True)
    if error is TransportError.REFUSED:
        return Fault("proxy_refused", Blame.PROXY, hard=True, transport=True)
    if error is TransportError.DNS:
        # Through an HTTP proxy Scrapy resolves only the proxy's host name.
        return Fault("proxy_dns", Blame.PROXY, hard=True, transport=True)
    if error is TransportError.CUT:
        # Not overload evidence: the domain answers faster through other paths (core/latency.py).
        return Fault(ATTEMPT_TIMEOUT, Blame.UNKNOWN, answered=False, transport=True)
    if error is TransportError.TUNNEL:
        if status is None:
            status = tunnel_status(message)
        if status == 407:
            return Fault("tunnel_407", Blame.PROXY, hard=True, transport=True, retires=True)
        if status in (403, 429):
            return Fault(f"tunnel_{status}", Blame.PAIR, transport=True)
        # throttles: if history settles it on the origin, it counts as the origin's overload.
        return Fault(f"tunnel_{status or 'error'}", Blame.UNKNOWN, throttles=True, transport=True)
    return Fault(
        error.value, Blame.UNKNOWN, throttles=True, answered=error is not TransportError.TIMEOUT, transport=True
    )
