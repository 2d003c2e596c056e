"""GatewayMiddleware on its own: which proxy, which retry, which wait, who was blamed."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from scrapy import Request
from scrapy.downloadermiddlewares.httpproxy import HttpProxyMiddleware
from scrapy.exceptions import DownloadConnectionRefusedError, ResponseDataLossError
from scrapy.http import Response

from scrapy_gateway.core.attempt import Attempt
from scrapy_gateway.core.health import HealthRules, State
from scrapy_gateway.core.proxies import parse_proxy
from scrapy_gateway.errors import HeldAtStart
from scrapy_gateway.meta import ATTEMPT, attempt_of
from tests.adapters.conftest import Rig

POOL = ["http://alice:pw-a@10.0.0.1:3128", "http://bob:pw-b@10.0.0.2:3128", "http://10.0.0.3:3128"]
KEYS = [parse_proxy(url).key for url in POOL]
URL = "http://shop.example/p/1"


def send(rig: Rig, request: Request) -> Attempt:
    assert rig.middleware.process_request(request) is None
    attempt = attempt_of(request.meta)
    assert attempt is not None
    return attempt


def answer(rig: Rig, request: Request, status: int, **headers: str) -> Request | Response:
    response = Response(request.url, status=status, headers=headers, request=request)
    return rig.middleware.process_response(request, response)


def test_first_attempt_takes_a_pool_proxy_and_is_counted(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    request = Request(URL)
    attempt = send(r, request)
    assert attempt.proxy in KEYS and not attempt.pinned
    assert attempt.sent_at == r.clock.monotonic_now
    assert request.meta["proxy"] == POOL[KEYS.index(attempt.proxy)]
    assert r.stat("gateway/requests") == 1
    assert r.runtime.core.pool.records[attempt.proxy].health.inflight == 1


def test_a_proxy_refusal_retries_at_once_on_another_proxy_without_its_credentials(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    request = Request(URL)
    first = send(r, request)
    request.headers[b"Proxy-Authorization"] = b"Basic c2VjcmV0"
    retry = r.middleware.process_exception(request, DownloadConnectionRefusedError("refused"))
    assert isinstance(retry, Request)
    attempt = attempt_of(retry.meta)
    assert attempt is not None
    assert attempt.tried == (first.proxy,) and attempt.not_before is None
    assert attempt.proxy_retries == 1 and attempt.retries == 0  # paid from the proxy allowance
    assert "proxy" not in retry.meta and b"Proxy-Authorization" not in retry.headers
    assert r.runtime.core.pool.records[first.proxy].health.state is State.EJECTED
    second = send(r, retry)
    assert second.proxy not in (None, first.proxy)
    assert r.stat("gateway/requests") == 1  # a retry is not a new request
    assert r.stat("gateway/retry/blame/proxy") == 1


def test_a_503_with_retry_after_waits_at_least_that_long(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    request = Request("https://shop.example/p/1")  # through a tunnel: the origin's own 503
    send(r, request)
    retry = answer(r, request, 503, **{"Retry-After": "7"})
    assert isinstance(retry, Request)
    attempt = attempt_of(retry.meta)
    assert attempt is not None and attempt.not_before is not None
    assert attempt.not_before - r.clock.wall_now >= 7.0
    assert r.runtime.room.remaining(retry) >= 7.0
    assert r.stat("gateway/retry/blame/origin") == 1
    assert r.stat("gateway/retry_after/count") == 1


def test_dont_retry_and_max_retry_times_zero_mean_no_retry_of_any_kind(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    for meta in ({"dont_retry": True}, {"max_retry_times": 0}):
        request = Request(URL, meta=dict(meta))
        send(r, request)
        assert r.middleware.process_exception(request, DownloadConnectionRefusedError("refused")) is None
        request = Request(URL, meta=dict(meta))
        send(r, request)
        assert isinstance(answer(r, request, 503), Response)
    assert r.stat("gateway/retry/count") == 0


def test_a_pinned_proxy_with_wrong_credentials_ends_the_request_at_once(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    request = Request(URL, meta={"gateway_proxy": POOL[0]})
    attempt = send(r, request)
    assert attempt.pinned and attempt.proxy == KEYS[0]
    result = answer(r, request, 407)
    assert isinstance(result, Response) and result.status == 407
    assert request.meta["dont_retry"] is True  # RetryMiddleware must not try it either
    assert r.runtime.core.pool.records[KEYS[0]].health.state is State.RETIRED
    assert r.stat("gateway/retry/count") == 0


def test_a_407_from_a_proxy_outside_the_pool_is_not_retried(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    request = Request(URL, meta={"proxy": "http://carol:nope@10.9.9.9:8080"})
    assert send(r, request).proxy is None  # the user's own proxy: used, never scored
    assert isinstance(answer(r, request, 407), Response)
    assert r.stat("gateway/retry/count") == 0


def test_a_407_through_a_rotating_pool_retires_the_proxy_and_retries_elsewhere(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    request = Request(URL)
    first = send(r, request)
    retry = answer(r, request, 407)
    assert isinstance(retry, Request)
    assert r.runtime.core.pool.records[first.proxy].health.state is State.RETIRED
    assert send(r, retry).proxy != first.proxy


@pytest.mark.parametrize(
    ("settings", "retried"),
    [({}, True), ({"RETRY_ENABLED": False}, False), ({"RETRY_TIMES": 0}, False), ({"RETRY_TIMES": 1}, True)],
)
def test_scrapy_retry_settings_are_honoured(rig: Callable[..., Rig], settings: dict, retried: bool) -> None:
    r = rig(**settings)  # no pool: direct requests, origin-blamed 500s
    request = Request(URL)
    send(r, request)
    result = answer(r, request, 500)
    assert isinstance(result, Request) is retried
    if isinstance(result, Request):
        r.clock.advance(60.0)  # past its backoff, as the waiting room would release it
        send(r, result)
        again = answer(r, result, 500)
        assert isinstance(again, Request) is (settings.get("RETRY_TIMES", 5) > 1)


def test_retry_times_sets_the_origin_retries_unless_the_gateway_setting_does(rig: Callable[..., Rig]) -> None:
    assert rig(RETRY_TIMES=3).runtime.config.max_retries == 3
    assert rig(RETRY_TIMES=3, GATEWAY_MAX_RETRIES=7).runtime.config.max_retries == 7
    assert rig().runtime.config.max_retries == 5


def test_a_request_due_later_is_handed_back_and_goes_once_due(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    request = Request(URL)
    request.meta[ATTEMPT] = Attempt(5, 10, not_before=r.clock.wall_now + 3.0, scheduled=True)
    assert r.middleware.process_request(request) is request  # to the scheduler, where the room parks it
    r.clock.advance(3.1)
    assert r.middleware.process_request(request) is None  # due: it goes


def test_a_request_that_waited_for_a_proxy_is_counted_once_it_goes(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL[:1])
    blocked = Request(URL)
    send(r, blocked)
    r.middleware.process_exception(blocked, DownloadConnectionRefusedError("refused"))  # the only proxy: out
    first = Request("http://shop.example/p/2")
    waiting = r.middleware.process_request(first)
    assert isinstance(waiting, Request) and r.runtime.room.remaining(waiting) > 0.0
    assert r.stat("gateway/requests") == 1 and r.stat("gateway/no_proxy/waits") == 1
    r.clock.advance(400.0)  # past any cooldown: the proxy is on probation
    assert send(r, waiting).sends == 1
    assert r.stat("gateway/requests") == 2  # a first attempt, though it has waited


def test_a_pin_with_another_password_is_not_the_pool_proxy(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    request = Request(URL, meta={"gateway_proxy": POOL[0].replace("pw-a", "typo")})
    assert send(r, request).proxy is None  # used as given, scored as nobody
    assert isinstance(answer(r, request, 407), Response)
    assert r.runtime.core.pool.records[KEYS[0]].health.state is State.ACTIVE


def test_retries_made_by_retrymiddleware_count_against_the_limit(rig: Callable[..., Rig]) -> None:
    r = rig(RETRY_TIMES=2)
    request = Request(URL, meta={"retry_times": 2})  # RetryMiddleware already retried it twice
    send(r, request)
    assert isinstance(answer(r, request, 503), Response)


def test_a_cached_response_scores_nothing(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    request = Request(URL)
    attempt = send(r, request)
    cached = Response(URL, status=502, request=request, flags=["cached"])
    assert r.middleware.process_response(request, cached) is cached
    record = r.runtime.core.pool.records[attempt.proxy]
    assert record.health.inflight == 0 and record.successes == 0 and not record.failures


def test_no_partial_bodies_are_asked_for_when_a_cache_could_store_them(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL, HTTPCACHE_ENABLED=True)
    request = Request(URL)
    send(r, request)
    assert "download_fail_on_dataloss" not in request.meta


def test_the_middleware_out_of_place_is_a_start_up_error(rig: Callable[..., Rig]) -> None:
    from scrapy_gateway.config import ConfigError

    with pytest.raises(ConfigError, match=r"DOWNLOADER_MIDDLEWARES: .* at 800 must come after RetryMiddleware"):
        rig(ADDONS={}, DOWNLOADER="scrapy_gateway.GatewayDownloader",
            DOWNLOADER_MIDDLEWARES={"scrapy_gateway.GatewayMiddleware": 800})  # fmt: skip


def test_a_truncated_reply_is_judged_by_its_status_and_headers(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    request = Request("https://shop.example/p/1")
    send(r, request)
    assert request.meta["download_fail_on_dataloss"] is False  # Scrapy hands the cut body over
    cut = Response(request.url, status=503, headers={"Retry-After": "5"}, request=request, flags=["dataloss"])
    retry = r.middleware.process_response(request, cut)
    assert isinstance(retry, Request)
    attempt = attempt_of(retry.meta)
    assert attempt is not None and attempt.not_before is not None
    assert attempt.not_before - r.clock.wall_now >= 5.0  # the Retry-After held, though the body was cut
    assert "download_fail_on_dataloss" not in retry.meta


def test_a_truncated_success_is_a_dropped_reply_and_ends_as_scrapy_would(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    request = Request(URL, meta={"max_retry_times": 0})
    send(r, request)
    cut = Response(request.url, status=200, request=request, flags=["dataloss"])
    with pytest.raises(ResponseDataLossError):
        r.middleware.process_response(request, cut)
    request = Request(URL)
    send(r, request)
    cut = Response(request.url, status=200, request=request, flags=["dataloss"])
    assert isinstance(r.middleware.process_response(request, cut), Request)
    assert r.stat("gateway/failures/dropped") == 2


def test_a_copy_of_a_request_keeps_knowing_its_truncated_body_was_asked_for(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    request = Request(URL)
    send(r, request)
    r.middleware._downloaded(Response(URL, status=301, request=request), request)
    redirected = request.replace(url="https://shop.example/p/1")  # as RedirectMiddleware copies it
    send(r, redirected)
    cut = Response(redirected.url, status=200, request=redirected, flags=["dataloss"])
    assert isinstance(r.middleware.process_response(redirected, cut), Request)  # retried, not delivered


def test_a_users_own_dataloss_choice_is_left_alone(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    request = Request(URL, meta={"download_fail_on_dataloss": False})
    send(r, request)
    cut = Response(request.url, status=200, request=request, flags=["dataloss"])
    assert r.middleware.process_response(request, cut) is cut


def test_requests_that_choose_their_own_route_are_left_alone(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    for meta in ({"playwright": True}, {"zyte_api_automap": True}, {"gateway_skip": True}):
        request = Request(URL, meta=dict(meta))
        assert r.middleware.process_request(request) is None
        assert "proxy" not in request.meta and ATTEMPT not in request.meta
        response = Response(URL, status=502, request=request)
        assert r.middleware.process_response(request, response) is response
    assert r.stat("gateway/requests") == 0


def test_a_redirect_copy_is_routed_again(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    request = Request(URL)
    first = send(r, request)
    r.middleware._downloaded(Response(URL, status=301, request=request), request)  # a success for the pool
    redirected = request.replace(url="http://shop.example/p/2")
    second = send(r, redirected)
    assert second.proxy in KEYS and second.sent_at is not None
    assert r.runtime.core.pool.records[first.proxy].successes == 1


class VendorTunnelError(Exception):
    """A download handler's own exception the built-in table does not know."""


def test_a_crawl_can_extend_the_exception_table(rig: Callable[..., Rig]) -> None:
    r = rig(
        GATEWAY_PROXIES=POOL,
        GATEWAY_TRANSPORT_ERRORS=[[f"{__name__}.VendorTunnelError", "tunnel", r"proxy said (?P<status>\d{3})"]],
    )
    request = Request("https://shop.example/p/1")
    first = send(r, request)
    retry = r.middleware.process_exception(request, VendorTunnelError("proxy said 407"))
    assert isinstance(retry, Request)
    assert r.runtime.core.pool.records[first.proxy].health.state is State.RETIRED
    assert r.stat("gateway/failures/tunnel_407") == 1


def test_a_bad_exception_table_entry_is_named_at_start_up(rig: Callable[..., Rig]) -> None:
    from scrapy_gateway.config import ConfigError

    with pytest.raises(ConfigError, match=r"GATEWAY_TRANSPORT_ERRORS: entry 1: .*'sideways'"):
        rig(GATEWAY_TRANSPORT_ERRORS=[["mylib.Err", "sideways"]])


def _queued_behind_an_ejection(r: Rig, request: Request) -> str:
    """The request routed as it entered the downloader, its proxy's URL credentials turned into a
    header by HttpProxyMiddleware; then, while it queued, its proxy was taken out."""
    first = send(r, request)
    r.middleware._http_proxy, r.middleware._http_proxy_looked = HttpProxyMiddleware(), True
    HttpProxyMiddleware().process_request(request)
    assert first.proxy is not None
    r.runtime.core.pool.records[first.proxy].health.eject(HealthRules(), r.clock.monotonic_now, random.Random(0))
    return first.proxy


@pytest.mark.parametrize("seed", range(4))
def test_a_request_queued_while_its_proxy_was_taken_out_goes_through_another(
    rig: Callable[..., Rig], seed: int
) -> None:
    r = rig(GATEWAY_PROXIES=POOL, GATEWAY_SEED=seed)
    request = Request(URL)
    old = _queued_behind_an_ejection(r, request)
    assert r.runtime.starting is not None
    r.runtime.starting(request)
    attempt = attempt_of(request.meta)
    assert attempt is not None and attempt.proxy not in (None, old)
    new = POOL[KEYS.index(attempt.proxy)]
    assert request.meta["proxy"] == new.replace("alice:pw-a@", "").replace("bob:pw-b@", "")
    # Its credentials, and only its: the old proxy's header is gone.
    expected = HttpProxyMiddleware()._get_proxy(new, "")[0]
    assert request.headers.get(b"Proxy-Authorization") == (b"Basic " + expected if expected else None)
    records = r.runtime.core.pool.records
    assert (records[old].health.inflight, records[attempt.proxy].health.inflight) == (0, 1)
    assert r.stat("gateway/rerouted") == 1


def test_requests_the_gateway_did_not_route_as_they_are_keep_their_proxy(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    routed = Request(URL)
    old = _queued_behind_an_ejection(r, routed)
    assert r.runtime.starting is not None
    # A request made with a copy of another's meta (its attempt record too) that the gateway
    # leaves alone, and one whose proxy another component changed after the gateway chose it.
    skipped = Request(URL, meta={**routed.meta, "gateway_skip": True, "proxy": "http://mine:8080"})
    changed = routed.replace()
    changed.meta["proxy"] = "http://elsewhere:8080"
    for request in (skipped, changed):
        r.runtime.starting(request)
        assert request.meta["proxy"] in ("http://mine:8080", "http://elsewhere:8080")
        assert attempt_of(request.meta) == attempt_of(routed.meta)
    assert r.runtime.core.pool.records[old].health.inflight == 1  # still counted where it was sent
    assert r.stat("gateway/rerouted") == 0


def _open_gate(r: Rig, domain: str = "shop.example") -> None:
    """Five failures through five paths, the quiet time over: the domain's gate opens."""
    gates, now = r.runtime.core.gates, r.clock.monotonic()
    for path in "abcd":
        gates.failure(domain, path, now - 2.0, random.Random(1), paths_needed=3)
    assert gates.failure(domain, "e", now, random.Random(1), paths_needed=3) is not None


def test_a_request_queued_while_its_domains_gate_opened_is_held_back_as_its_transfer_starts(
    rig: Callable[..., Rig],
) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    request, other = Request(URL), Request(URL)
    first = send(r, request)
    send(r, other)
    HttpProxyMiddleware().process_request(request)  # its proxy's credentials, as a header
    _open_gate(r)
    assert r.runtime.starting is not None
    with pytest.raises(HeldAtStart) as raised:
        r.runtime.starting(request)
    waiting = r.middleware.process_exception(request, raised.value)
    assert isinstance(waiting, Request) and waiting is not request
    attempt = attempt_of(waiting.meta)
    assert attempt is not None and attempt.held == "shop.example" and attempt.proxy is None
    assert attempt.sends == first.sends and attempt.retries == 0  # the outage costs it no retry
    # Routed afresh when it goes: nothing of the proxy it did not use rides along.
    assert "proxy" not in waiting.meta and b"Proxy-Authorization" not in waiting.headers
    records = r.runtime.core.pool.records
    assert first.proxy is not None and records[first.proxy].health.inflight == 0
    assert sum(record.requests for record in records.values()) == 1  # the other's: this one never went
    assert r.stat("gateway/gates/held_at_start") == 1
    # The probe, when it comes due, goes: the first request to start then becomes it.
    r.clock.advance(60.0)
    r.runtime.starting(other)
    probing = attempt_of(other.meta)
    assert probing is not None and probing.probe == "shop.example"


def test_requests_of_other_domains_and_those_left_alone_start_while_a_gate_is_open(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    elsewhere, skipped = Request("http://other.example/"), Request(URL, meta={"gateway_skip": True})
    send(r, elsewhere)
    skipped.meta[ATTEMPT] = attempt_of(elsewhere.meta)  # a copy of another request's record
    _open_gate(r)
    assert r.runtime.starting is not None
    for request in (elsewhere, skipped):
        r.runtime.starting(request)  # no HeldAtStart
    assert r.stat("gateway/gates/held_at_start") == 0


def test_a_request_left_alone_with_a_copied_record_never_takes_the_gates_probe(rig: Callable[..., Rig]) -> None:
    r = rig(GATEWAY_PROXIES=POOL)
    routed = Request(URL)
    send(r, routed)
    skipped = Request(URL, meta={**routed.meta, "gateway_skip": True})
    _open_gate(r)
    r.clock.advance(60.0)  # a probe is due
    assert r.runtime.starting is not None
    r.runtime.starting(skipped)  # nobody reports a left-alone request's outcome: no probe for it
    assert attempt_of(skipped.meta) == attempt_of(routed.meta)
    assert r.runtime.core.gates.probe_due("shop.example", r.clock.monotonic())
    assert r.stat("gateway/gates/probes") == 0


def test_a_request_queued_while_its_gate_stalled_gets_its_last_try_as_its_transfer_starts(
    rig: Callable[..., Rig],
) -> None:
    r = rig(GATEWAY_PROXIES=POOL, GATEWAY_OUTAGE_STALL=10)
    request = Request(URL)
    send(r, request)
    _open_gate(r)
    r.runtime.core.gates._scopes["shop.example"].probing = True  # a probe already on its way
    r.clock.advance(11.0)
    assert r.runtime.starting is not None
    r.runtime.starting(request)  # no HeldAtStart: it goes, as its last try
    attempt = attempt_of(request.meta)
    assert attempt is not None and attempt.final
    assert r.stat("gateway/gates/stalled") == 1
