"""Every request meta key scrapy-gateway reads or writes, spelled once."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy.utils.httpobj import urlparse_cached

from scrapy_gateway.core.attempt import Attempt

if TYPE_CHECKING:
    from scrapy import Request

# Public: set by users.
SKIP = "gateway_skip"  # True: the gateway leaves this request alone (no proxy, no retry, no scoring)
PIN = "gateway_proxy"  # a proxy URL this request must use (retries keep it)

# Private: the request's attempt record (frozen, since Scrapy copies meta shallowly).
ATTEMPT = "_gateway_attempt"
# Private: monotonic time the download itself started (it may have queued in its slot before).
STARTED = "_gateway_started"
# Private: requests in flight on its slot (the fleet's, with a Redis state) when it was sent, itself included.
LOAD = "_gateway_load"

# Scrapy's own keys the gateway honours.
PROXY = "proxy"
RETRY_TIMES = "retry_times"
MAX_RETRY_TIMES = "max_retry_times"
DONT_RETRY = "dont_retry"
DOWNLOAD_SLOT = "download_slot"
DOWNLOAD_TIMEOUT = "download_timeout"  # the user's timeout of this request (DownloadTimeoutMiddleware sets it)
DOWNLOAD_LATENCY = "download_latency"  # set by Scrapy's handlers: seconds to the response headers
DATALOSS = "download_fail_on_dataloss"  # False: Scrapy hands over a truncated body, flagged "dataloss"
AUTH_PROXY = "_auth_proxy"  # HttpProxyMiddleware's record of whose credentials the header carries

# Other plugins' keys: such a request picks its route in a browser or an API, not meta["proxy"].
PLAYWRIGHT = "playwright"  # scrapy-playwright
ZYTE_API = "zyte_api"  # scrapy-zyte-api
ZYTE_API_AUTOMAP = "zyte_api_automap"  # scrapy-zyte-api; with ZYTE_API_TRANSPARENT_MODE, on by default


def attempt_of(meta: Mapping[str, Any]) -> Attempt | None:
    value = meta.get(ATTEMPT)
    return value if isinstance(value, Attempt) else None


def domain_of(request: Request) -> str:
    """The request's host name ("" if none): what the core keys a domain by."""
    return _hostname(urlparse_cached(request).netloc)


@lru_cache(maxsize=4096)
def _hostname(netloc: str) -> str:
    # ParseResult.hostname re-parses the netloc on every read; a crawl asks several times per
    # request for a few hosts.
    return urlsplit(f"//{netloc}").hostname or ""
