"""The reporter, the add-on's downloader composition and the Scrapy internals check, directly."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import scrapy
from scrapy.core.downloader import Downloader
from scrapy.settings import Settings

from scrapy_gateway import Addon, GatewayDownloader, GatewayDownloaderMixin
from scrapy_gateway.compat import IncompatibleScrapy, check_internals, missing_internals
from scrapy_gateway.config import ConfigError
from scrapy_gateway.core.events import Ejected, PairEjected, Panic, Readmitted, Retired
from scrapy_gateway.core.proxies import parse_proxy
from scrapy_gateway.runtime import GatewayRuntime
from tests.adapters.conftest import Rig

PROXY = parse_proxy("http://alice:s3cret@10.0.0.1:3128")


class ProjectDownloader(Downloader):
    """A project's own Downloader subclass, as some projects have."""


def test_each_event_has_its_stats_and_log_line(rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture) -> None:
    r = rig(GATEWAY_PROXIES=[PROXY.url])
    with caplog.at_level(logging.INFO, logger="scrapy_gateway"):
        r.runtime.report.events(
            [
                Ejected(PROXY.key, "proxy_refused", 10.0),
                PairEjected(PROXY.key, "shop.example", "http_429", 20.0),
                Retired(PROXY.key, "http_407"),
                Readmitted(PROXY.key),
                Panic(PROXY.key, "timeout"),
            ]
        )
    assert r.stat("gateway/ejections/count") == 1 and r.stat("gateway/ejections/proxy_refused") == 1
    assert r.stat("gateway/pair_ejections/http_429") == 1
    assert r.stat("gateway/retirements") == 1 and r.stat("gateway/readmissions") == 1
    assert r.stat("gateway/panic") == 1
    text = caplog.text
    assert "out of rotation for 10s after proxy_refused" in text
    assert "for shop.example only" in text and "retired for the rest of the crawl" in text
    assert "s3cret" not in text


def test_the_periodic_line_names_what_changed_since_the_last_one(
    rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    r = rig(GATEWAY_PROXIES=[PROXY.url], GATEWAY_LOG_INTERVAL=0)
    report = r.runtime.report
    with caplog.at_level(logging.INFO, logger="scrapy_gateway"):
        report.events([Ejected(PROXY.key, "proxy_refused", 10.0)])
        report.periodic()
        report.events([Readmitted(PROXY.key)])
        report.periodic()
        report.periodic()
    lines = [rec.getMessage() for rec in caplog.records if rec.getMessage().startswith("Gateway:")]
    assert len(lines) == 3
    assert lines[0].endswith(f"since the last line: out {PROXY.key}")
    assert lines[1].endswith(f"since the last line: back {PROXY.key}")
    assert lines[2].endswith("since the last line: no change")
    assert all("s3cret" not in line for line in lines)


def test_close_table_masks_credentials(rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture) -> None:
    r = rig(GATEWAY_PROXIES=[PROXY.url], GATEWAY_LOG_INTERVAL=0)
    with caplog.at_level(logging.INFO, logger="scrapy_gateway"):
        r.runtime.report.close()
    assert "alice:***@10.0.0.1:3128" in caplog.text and "s3cret" not in caplog.text
    assert r.stat("gateway/proxies/total") == 1 and r.stat("gateway/proxies/active") == 1


def test_the_addon_keeps_a_projects_downloader_and_gives_it_the_fix() -> None:
    settings = Settings({"DOWNLOADER": f"{__name__}.ProjectDownloader"}, priority="project")
    Addon().update_settings(settings)
    composed = settings["DOWNLOADER"]
    assert issubclass(composed, GatewayDownloaderMixin) and issubclass(composed, ProjectDownloader)
    assert settings.getpriority("DOWNLOADER") == 20  # still the project's own setting
    plain = Settings()
    Addon().update_settings(plain)
    assert plain["DOWNLOADER"] == "scrapy_gateway.GatewayDownloader"


def test_a_manual_setup_without_the_downloader_fix_is_a_clear_start_up_error(rig: Callable[..., Rig]) -> None:
    with pytest.raises(ConfigError, match="GatewayDownloaderMixin"):
        rig(ADDONS={}, DOWNLOADER_MIDDLEWARES={"scrapy_gateway.GatewayMiddleware": 595})


def test_the_scrapy_internals_the_fix_relies_on_are_there(rig: Callable[..., Rig]) -> None:
    r = rig()
    runtime = GatewayRuntime.of(r.crawler)
    assert runtime is r.runtime  # one runtime per crawler, whoever asks
    downloader = GatewayDownloader(r.crawler)
    assert missing_internals(downloader) == []
    assert downloader.gateway_runtime is r.runtime

    class Bare:
        pass

    with pytest.raises(IncompatibleScrapy, match=f"Scrapy {scrapy.__version__}.*Downloader.per_slot_settings"):
        check_internals(Bare())


def test_handlers_that_choose_their_own_route_are_named_at_start_up() -> None:
    from scrapy_gateway.runtime import _own_route_handlers

    handlers = {
        "https": "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler",
        "http": "scrapy_zyte_api.handler.ScrapyZyteAPIHTTPDownloadHandler",
    }
    assert _own_route_handlers(Settings({"DOWNLOAD_HANDLERS": handlers})) == ["scrapy_playwright", "scrapy_zyte_api"]
    assert _own_route_handlers(Settings()) == []


class QueueingDownloader(Downloader):
    def _process_queue(self, slot: object) -> None:  # a project's own queue handling
        super()._process_queue(slot)  # type: ignore[arg-type]


def test_a_projects_downloader_with_its_own_queue_handling_is_refused_by_name() -> None:
    settings = Settings({"DOWNLOADER": f"{__name__}.QueueingDownloader"}, priority="project")
    with pytest.raises(ConfigError, match="QueueingDownloader overrides _process_queue"):
        Addon().update_settings(settings)


def test_curl_reports_a_refused_connect_with_either_code() -> None:
    from curl_cffi.curl import CurlError

    from scrapy_gateway.core.faults import TransportError
    from scrapy_gateway.handlers import TransportFailure, transport_failure

    for code in (7, 56):
        found = transport_failure(CurlError(f"curl: ({code}) CONNECT tunnel failed, response 407"))
        assert found == TransportFailure(TransportError.TUNNEL, 407)


def test_the_downloader_alone_enforces_the_users_limit_without_a_slow_start(
    rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the middleware nothing reports clean responses: a slow start would stay at its first limit.
    from scrapy.utils.test import get_crawler

    monkeypatch.setattr(Downloader, "_start_slot_gc", lambda self: None)  # it needs a running reactor

    request = scrapy.Request("http://site.example/page")
    alone = get_crawler(settings_dict={"DOWNLOADER": "scrapy_gateway.GatewayDownloader"})
    _, slot = GatewayDownloader(alone)._get_slot(request)
    assert slot.concurrency == alone.settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN") == 8
    judged = rig()
    _, slot = GatewayDownloader(judged.crawler)._get_slot(request)
    assert slot.concurrency == judged.runtime.config.policy.concurrency_start == 2
