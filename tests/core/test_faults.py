"""faults.py: status, header and transport classification."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scrapy_gateway.core.faults import (
    Blame,
    Fault,
    TransportError,
    blame_from_headers,
    classify_status,
    classify_transport,
    tunnel_status,
)

NOW = 1_700_000_000.0
CAP = 600.0
CDN = (520, 521, 522, 523, 524)


def classify(status: int, headers: dict[str, str] | None = None, *, mode: str = "proxy") -> Fault:
    assert mode in ("direct", "proxy", "tunnel")
    return classify_status(
        status,
        headers or {},
        via_proxy=mode != "direct",
        in_tunnel=mode == "tunnel",
        now_epoch=NOW,
        retry_after_cap=CAP,
    )


def scrapy_tunnel_message(status: int, reason: bytes, host: str = "127.0.0.1", port: int = 8080) -> str:
    """Exactly how scrapy.core.downloader.handlers.http11 words a refused CONNECT."""
    extra = {"status": status, "reason": reason}
    return f"Could not open CONNECT tunnel with proxy {host}:{port} [{extra!r}]"


# -- classify_status: (status, mode) -> (blame, throttles) with no headers -----------------------

EXPECTED_NO_HEADERS = [
    # direct: the origin wrote it, always
    (500, "direct", Blame.ORIGIN, False),
    (502, "direct", Blame.ORIGIN, True),
    (503, "direct", Blame.ORIGIN, True),
    (504, "direct", Blame.ORIGIN, True),
    *[(s, "direct", Blame.ORIGIN, True) for s in CDN],
    (429, "direct", Blame.ORIGIN, True),
    (408, "direct", Blame.ORIGIN, False),
    # plain HTTP proxy: 502/504 could be the proxy or the origin -> UNKNOWN
    (500, "proxy", Blame.ORIGIN, False),
    (502, "proxy", Blame.UNKNOWN, True),
    (503, "proxy", Blame.ORIGIN, True),
    (504, "proxy", Blame.UNKNOWN, True),
    *[(s, "proxy", Blame.ORIGIN, True) for s in CDN],
    (429, "proxy", Blame.PAIR, False),
    (408, "proxy", Blame.ORIGIN, False),
    # inside a CONNECT tunnel the proxy cannot have written the status
    (500, "tunnel", Blame.ORIGIN, False),
    (502, "tunnel", Blame.ORIGIN, True),
    (503, "tunnel", Blame.ORIGIN, True),
    (504, "tunnel", Blame.ORIGIN, True),
    *[(s, "tunnel", Blame.ORIGIN, True) for s in CDN],
    (429, "tunnel", Blame.PAIR, False),
    (408, "tunnel", Blame.ORIGIN, False),
]


@pytest.mark.parametrize(("status", "mode", "blame", "throttles"), EXPECTED_NO_HEADERS)
def test_classify_status_without_headers(status, mode, blame, throttles):
    fault = classify(status, mode=mode)
    assert fault == Fault(f"http_{status}", blame, throttles=throttles, hard=False, retry_after=None, retryable=True)


def test_407_through_plain_proxy_is_hard_proxy_fault():
    assert classify(407, mode="proxy") == Fault("http_407", Blame.PROXY, hard=True, retryable=True, retires=True)


def test_407_inside_tunnel_is_not_the_proxys():
    fault = classify(407, mode="tunnel")
    assert fault.blame is Blame.ORIGIN
    assert not fault.hard


def test_407_direct_is_origin():
    fault = classify(407, mode="direct")
    assert fault.blame is Blame.ORIGIN
    assert not fault.hard


@pytest.mark.parametrize(
    ("status", "mode", "blame", "throttles"),
    [
        (403, "proxy", Blame.UNKNOWN, False),
        (403, "direct", Blame.ORIGIN, False),
        (403, "tunnel", Blame.ORIGIN, False),
        (501, "proxy", Blame.UNKNOWN, True),
        (501, "direct", Blame.ORIGIN, True),
    ],
)
def test_other_listed_statuses_trust_evidence_else_unknown(status, mode, blame, throttles):
    fault = classify(status, mode=mode)
    assert (fault.kind, fault.blame, fault.throttles, fault.hard) == (f"http_{status}", blame, throttles, False)


# -- Proxy-Status and X-Squid-Error ---------------------------------------------------------------

FORWARDED = "ExampleProxy; received-status=502"
PROXY_OWN = "ExampleProxy; error=proxy_internal_error"
DEST_DOWN = "ExampleProxy; error=destination_unavailable"


@pytest.mark.parametrize(
    ("status", "proxy_status", "blame"),
    [
        (502, FORWARDED, Blame.ORIGIN),
        (502, PROXY_OWN, Blame.PROXY),
        (502, DEST_DOWN, Blame.ORIGIN),
        (504, FORWARDED, Blame.ORIGIN),
        (504, PROXY_OWN, Blame.PROXY),
        (504, "ExampleProxy; error=connection_timeout", Blame.ORIGIN),
        (503, PROXY_OWN, Blame.PROXY),
        (503, DEST_DOWN, Blame.ORIGIN),
        (500, PROXY_OWN, Blame.PROXY),
        (522, PROXY_OWN, Blame.PROXY),
        (502, 'ExampleProxy; error="proxy_internal_error"', Blame.PROXY),
        (502, "ExampleProxy; error=PROXY_INTERNAL_ERROR", Blame.PROXY),
        (502, "ExampleProxy; error=connection_limit_reached", Blame.PROXY),
        (502, "ExampleProxy;error = http_request_denied; details=x", Blame.PROXY),
        (502, "ExampleProxy; next-hop=origin.example; error=dns_error", Blame.ORIGIN),
    ],
)
def test_proxy_status_header_via_plain_proxy(status, proxy_status, blame):
    fault = classify(status, {"proxy-status": proxy_status}, mode="proxy")
    assert fault.blame is blame
    assert fault.kind == f"http_{status}"
    assert fault.throttles is (status != 500)


def test_proxy_status_only_last_member_speaks():
    far_broken = f"Upstream; error=proxy_internal_error, {FORWARDED}"
    near_broken = f"{FORWARDED}, Near; error=proxy_internal_error"
    assert classify(502, {"proxy-status": far_broken}).blame is Blame.ORIGIN
    assert classify(502, {"proxy-status": near_broken}).blame is Blame.PROXY


@pytest.mark.parametrize("mode", ["direct", "tunnel"])
def test_proxy_headers_are_ignored_when_the_proxy_cannot_have_written_them(mode):
    headers = {"proxy-status": PROXY_OWN, "x-squid-error": "ERR_ACCESS_DENIED 0"}
    assert classify(502, headers, mode=mode).blame is Blame.ORIGIN
    assert classify(503, headers, mode=mode).blame is Blame.ORIGIN


@pytest.mark.parametrize(
    ("status", "squid", "blame"),
    [
        (502, "ERR_CONNECT_FAIL 111", Blame.ORIGIN),
        (503, "ERR_DNS_FAIL 0", Blame.ORIGIN),
        (504, "ERR_READ_TIMEOUT 0", Blame.ORIGIN),
        (502, "ERR_ZERO_SIZE_OBJECT 0", Blame.ORIGIN),
        (403, "ERR_ACCESS_DENIED 0", Blame.PAIR),
        (502, "ERR_ACCESS_DENIED 0", Blame.PAIR),
        (503, "ERR_CACHE_ACCESS_DENIED 0", Blame.PAIR),
        (500, "ERR_TOO_BIG 0", Blame.PAIR),
        (502, "ERR_SOMETHING_NEW 0", Blame.UNKNOWN),
        (503, "ERR_SOMETHING_NEW 0", Blame.ORIGIN),
    ],
)
def test_squid_error_header(status, squid, blame):
    assert classify(status, {"x-squid-error": squid}, mode="proxy").blame is blame


def test_proxy_status_wins_over_squid_error():
    headers = {"proxy-status": PROXY_OWN, "x-squid-error": "ERR_CONNECT_FAIL 111"}
    assert classify(502, headers).blame is Blame.PROXY
    assert blame_from_headers(headers) is Blame.PROXY


def test_blame_from_headers_without_evidence():
    assert blame_from_headers({}) is None
    assert blame_from_headers({"x-squid-error": ""}) is None
    assert blame_from_headers({"proxy-status": ""}) is None
    assert blame_from_headers({"server": "squid"}) is None


def test_retry_after_is_parsed_and_capped():
    assert classify(429, {"retry-after": "30"}, mode="direct").retry_after == 30.0
    assert classify(429, {"retry-after": "30"}, mode="proxy").retry_after == 30.0
    assert classify(503, {"retry-after": "100000"}, mode="direct").retry_after == CAP
    assert classify(502, {"retry-after": "soon"}, mode="proxy").retry_after is None
    assert classify(503, {}, mode="direct").retry_after is None


# -- tunnel_status ----------------------------------------------------------------------------------


def test_tunnel_status_reads_scrapys_message():
    message = (
        "Could not open CONNECT tunnel with proxy 127.0.0.1:8080 "
        "[{'status': 407, 'reason': b'Proxy Authentication Required'}]"
    )
    assert tunnel_status(message) == 407
    assert tunnel_status(scrapy_tunnel_message(403, b"Forbidden")) == 403
    assert tunnel_status(scrapy_tunnel_message(502, b"Bad Gateway", "proxy.example", 3128)) == 502


@pytest.mark.parametrize(
    "message",
    [
        "",
        "Could not open CONNECT tunnel with proxy 127.0.0.1:8080 [b'garbage from the proxy']",
        "Connection was refused by other side: 111: Connection refused.",
        "status 407",
        "{'status': 40}",
    ],
)
def test_tunnel_status_unreadable(message):
    assert tunnel_status(message) is None


def test_tunnel_status_accepts_double_quotes():
    assert tunnel_status('[{"status": 429, "reason": "Too Many"}]') == 429


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_tunnel_status_never_raises(text):
    result = tunnel_status(text)
    assert result is None or 100 <= result <= 999


@settings(max_examples=100, deadline=None)
@given(st.integers(100, 599), st.binary(max_size=40))
def test_tunnel_status_round_trips_any_reason(status, reason):
    assert tunnel_status(scrapy_tunnel_message(status, reason)) == status


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["proxy-status", "x-squid-error", "via", "server"]), st.text()))
def test_blame_from_headers_never_raises(headers):
    assert blame_from_headers(headers) in (None, Blame.PROXY, Blame.PAIR, Blame.ORIGIN)


# -- classify_transport -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "message", "expected"),
    [
        (TransportError.REFUSED, "", Fault("proxy_refused", Blame.PROXY, hard=True, transport=True)),
        (TransportError.DNS, "", Fault("proxy_dns", Blame.PROXY, hard=True, transport=True)),
        (TransportError.TIMEOUT, "", Fault("timeout", Blame.UNKNOWN, throttles=True, answered=False, transport=True)),
        (TransportError.DROPPED, "", Fault("dropped", Blame.UNKNOWN, throttles=True, transport=True)),
        (
            TransportError.TUNNEL,
            scrapy_tunnel_message(407, b"Proxy Authentication Required"),
            Fault("tunnel_407", Blame.PROXY, hard=True, transport=True, retires=True),
        ),
        (
            TransportError.TUNNEL,
            scrapy_tunnel_message(403, b"Forbidden"),
            Fault("tunnel_403", Blame.PAIR, transport=True),
        ),
        (
            TransportError.TUNNEL,
            scrapy_tunnel_message(429, b"Too Many Requests"),
            Fault("tunnel_429", Blame.PAIR, transport=True),
        ),
        (
            TransportError.TUNNEL,
            scrapy_tunnel_message(502, b"Bad Gateway"),
            Fault("tunnel_502", Blame.UNKNOWN, throttles=True, transport=True),
        ),
        (
            TransportError.TUNNEL,
            "Could not open CONNECT tunnel [b'xx']",
            Fault("tunnel_error", Blame.UNKNOWN, throttles=True, transport=True),
        ),
    ],
)
def test_classify_transport_via_proxy(error, message, expected):
    assert classify_transport(error, via_proxy=True, message=message) == expected


@pytest.mark.parametrize("error", list(TransportError))
def test_classify_transport_direct_is_always_origin(error):
    message = scrapy_tunnel_message(407, b"Proxy Authentication Required")
    fault = classify_transport(error, via_proxy=False, message=message)
    assert fault == Fault(
        f"origin_{error.value}", Blame.ORIGIN, throttles=error is TransportError.TIMEOUT, transport=True
    )
    assert not fault.hard
