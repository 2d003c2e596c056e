"""Real crawls through squid (with good and wrong credentials), tinyproxy and a dead port, with
each download handler users combine with the gateway: Scrapy's HTTP/1.1 handler, the aiohttp
handler of reactorless mode, and scrapy-impersonate (curl_cffi). Each handler reports the same
failures with its own exceptions; the gateway must read them all the same way, and no proxy
password may reach the log, the stats or an errback."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from demo_world import OriginSpec, World

from scrapy_gateway.core.proxies import parse_proxy
from tests.conftest import CrawlResult, gateway_settings, run_crawl
from tests.real.servers import Servers, free_port

IMPERSONATE = "scrapy_impersonate.ImpersonateDownloadHandler"
# handler name -> (settings, request meta)
HANDLERS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "http11": ({}, {}),
    "aiohttp": ({"TWISTED_REACTOR_ENABLED": False}, {}),
    # curl_cffi verifies certificates (the demo world's CA is not in its store) and ignores
    # DOWNLOAD_TIMEOUT: both are request arguments of its own.
    "impersonate": (
        {"DOWNLOAD_HANDLERS": {"http": IMPERSONATE, "https": IMPERSONATE}},
        {"impersonate": "chrome", "impersonate_args": {"verify": False, "timeout": 3}},
    ),
}

ALICE, ALICE_PASSWORD = "alice", "Alice-S3cret-pw"
BOB, BOB_PASSWORD = "bob", "b-secret"
# Wrong, and written percent-encoded as a URL needs it ("!"): its decoded form must not leak either.
WRONG_PASSWORD = "Wr0ng%21Bob-Pass"


def secrets() -> list[str]:
    """Every form of the two passwords in the pool that could be written into a text."""
    forms = []
    for user, password in ((ALICE, ALICE_PASSWORD), (BOB, WRONG_PASSWORD)):
        for plain in {password, unquote(password)}:
            forms += [plain, base64.b64encode(f"{user}:{plain}".encode()).decode()]
    return forms


def assert_no_secret(result: CrawlResult) -> None:
    places = {
        "log": result.log,
        "stats": json.dumps(result.stats, default=str),
        "errbacks": json.dumps(result.by_kind("errback")),
    }
    for secret in secrets():
        for place, text in places.items():
            at = text.find(secret)
            assert at < 0, f"{secret!r} in the {place}: ...{text[max(0, at - 300) : at + 100]}..."


@pytest.fixture
def servers() -> Iterator[Servers]:
    with Servers() as started:
        yield started


@pytest.mark.parametrize("handler", list(HANDLERS))
def test_wrong_credentials_retired_dead_port_ejected_and_no_password_leaks(
    handler: str, world: World, servers: Servers
) -> None:
    settings, meta = HANDLERS[handler]
    web, tls = world.add_origin("web"), world.add_origin("tls", OriginSpec(tls=True))
    world.start()
    open_squid = servers.squid()
    alices = servers.squid(users=[(ALICE, ALICE_PASSWORD)])
    locked = servers.squid(users=[(BOB, BOB_PASSWORD)])
    tiny = servers.tinyproxy()
    dead = f"http://127.0.0.1:{free_port()}"
    good = [open_squid.url, alices.proxy_url(ALICE, ALICE_PASSWORD), tiny.url]
    wrong = locked.proxy_url(BOB, WRONG_PASSWORD)
    urls = [u for i in range(30) for u in (web.url(f"/p/{i}"), tls.url(f"/p/{i}"))]
    result = run_crawl(gateway_settings([*good, wrong, dead], **settings), urls, meta=meta)

    result.assert_each_request_ended_once(60)
    failed = result.by_kind("errback")
    assert not failed, f"{handler}: {len(failed)} pages not fetched: {failed[:3]}\n{result.log[-3000:]}"
    assert all(o["status"] == 200 for o in result.by_kind("callback"))
    used = Counter(o["proxy"] for o in result.by_kind("callback"))
    assert set(used) <= {parse_proxy(p).key for p in good}, used
    assert sum(used.values()) == 60
    # Wrong credentials: retired at once, for good (a 407 response for http, a refused CONNECT for https).
    assert result.stat("gateway/failures/http_407") + result.stat("gateway/failures/tunnel_407") > 0, result.stats
    assert result.stat("gateway/retirements") == 1, result.stats
    assert result.stat("gateway/proxies/retired") == 1
    rejected = locked.access_log()
    assert rejected and all(line.status == 407 for line in rejected), rejected
    # The dead port, if it was tried (an untried proxy is taken only when the known good ones are
    # busy: pool.py): refused, which ejects it at once. tests/test_errors.py covers the refusal
    # itself through each handler.
    if result.stat("gateway/failures/proxy_refused"):
        assert result.stat("gateway/ejections/proxy_refused") == 1, result.stats
    # The proxies' faults are not the origins': no origin was slowed down.
    assert result.stat("gateway/concurrency/decreases") == 0, result.stats
    assert "retired" in result.log
    assert_no_secret(result)


@pytest.mark.parametrize("handler", list(HANDLERS))
def test_connect_refused_with_407_retires_the_proxy(handler: str, world: World, servers: Servers) -> None:
    """HTTPS only: the wrong credentials show only as a refused CONNECT, each handler its own way."""
    settings, meta = HANDLERS[handler]
    tls = world.add_origin("tls", OriginSpec(tls=True))
    world.start()
    alices = servers.squid(users=[(ALICE, ALICE_PASSWORD)])
    locked = servers.squid(users=[(BOB, BOB_PASSWORD)])
    good, wrong = alices.proxy_url(ALICE, ALICE_PASSWORD), locked.proxy_url(BOB, WRONG_PASSWORD)
    urls = [tls.url(f"/p/{i}") for i in range(30)]
    result = run_crawl(gateway_settings([wrong, good], **settings), urls, meta=meta)

    assert_no_secret(result)
    result.assert_each_request_ended_once(30)
    assert not result.by_kind("errback"), result.by_kind("errback")[:3]
    assert Counter(o["proxy"] for o in result.by_kind("callback")) == {parse_proxy(good).key: 30}
    assert result.stat("gateway/failures/tunnel_407") > 0, result.stats
    assert result.stat("gateway/retirements") == 1, result.stats
    rejected = locked.access_log()
    assert rejected and all(line.method == "CONNECT" and line.status == 407 for line in rejected), rejected
    assert len(rejected) <= 16, len(rejected)  # retired at once: only the first burst reached it


@pytest.mark.parametrize("errback", [True, False], ids=["errback", "no-errback"])
@pytest.mark.parametrize("handler", list(HANDLERS))
def test_squid_503_on_connect_to_a_refused_origin_reaches_errbacks_and_log_masked(
    handler: str, errback: bool, world: World, servers: Servers
) -> None:
    """The gateway gives up on a refused origin: errbacks, or Scrapy's "Error downloading" line
    (with its traceback) when there is no errback, get the handler's error without the password."""
    settings, meta = HANDLERS[handler]
    tls = world.add_origin("tls", OriginSpec(tls=True))
    world.start()
    alices = servers.squid(users=[(ALICE, ALICE_PASSWORD)])
    refused = f"https://127.0.0.1:{free_port()}"
    urls = [refused + f"/gone/{i}" for i in range(3)] + [tls.url(f"/p/{i}") for i in range(10)]
    result = run_crawl(
        gateway_settings([alices.proxy_url(ALICE, ALICE_PASSWORD)], **settings), urls, meta=meta, errback=errback
    )

    assert_no_secret(result)
    assert sorted(o["url"] for o in result.by_kind("callback")) == sorted(urls[3:])
    assert result.stat("gateway/failures/tunnel_503") > 0, result.stats
    assert result.stat("gateway/retirements") == 0 and result.stat("gateway/ejections/count") == 0, result.stats
    errors = [line for line in result.log.splitlines() if "Error downloading" in line]
    if errback:
        failed = result.by_kind("errback")
        assert sorted(o["url"] for o in failed) == sorted(urls[:3]), failed
        texts = [o["error_text"] for o in failed]
    else:
        assert not result.by_kind("errback")
        assert len(errors) == 3, errors
        texts = [result.log]
    if handler == "aiohttp":
        # aiohttp wrote the proxy URL, password included, into the error: now masked.
        assert all(f"{ALICE}:***@127.0.0.1:{alices.port}" in text for text in texts), texts[0][-3000:]
