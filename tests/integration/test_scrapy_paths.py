"""The paths of Scrapy a plugin must fit: download_async, a project's Downloader, retry settings."""

from __future__ import annotations

from demo_world import OriginSpec, ProxySpec, World

from tests.conftest import gateway_settings, run_crawl


def test_a_delayed_retry_on_the_download_async_path_waits_without_spinning(world: World) -> None:
    # ROBOTSTXT_OBEY fetches robots.txt through engine.download_async, which never passes the
    # scheduler: its 503 + Retry-After must wait on a timer, not be handed back again and again.
    origin = world.add_origin("ra", OriginSpec(retry_after=4.0))
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(3)]
    result = run_crawl(gateway_settings([], ROBOTSTXT_OBEY=True, LOG_LEVEL="INFO"), urls)
    result.assert_each_request_ended_once(3)
    assert len(result.by_kind("callback")) == 3
    snap = world.snapshot()["origins"]["ra"]
    assert snap["paths"]["/robots.txt"] == 2 and snap["early"] == 0
    # Spinning burnt a core for the whole Retry-After (4 s of CPU); waiting burns next to none.
    assert result.cpu < 2.0, result.cpu


def test_a_projects_own_downloader_keeps_working_and_the_limit_holds(world: World) -> None:
    origin = world.add_origin("a", OriginSpec(service_time=0.05))
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(30)]
    settings = gateway_settings(
        [], CONCURRENT_REQUESTS_PER_DOMAIN=2, DOWNLOADER="tests.harness.project_downloader.ProjectDownloader"
    )
    result = run_crawl(settings, urls)
    assert len(result.by_kind("callback")) == 30
    assert result.stat("project_downloader/fetches") == 30  # the project's own class did the work
    assert world.snapshot()["origins"]["a"]["max_in_flight"] <= 2


def test_stock_scrapy_still_overshoots_its_per_domain_limit(world: World) -> None:
    # The reason GatewayDownloaderMixin exists. The day this fails, Scrapy has fixed it: drop the fix.
    origin = world.add_origin("a", OriginSpec(service_time=0.05))
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(40)]
    result = run_crawl({"CONCURRENT_REQUESTS_PER_DOMAIN": 2, "LOG_LEVEL": "INFO"}, urls)
    assert len(result.by_kind("callback")) == 40
    assert world.snapshot()["origins"]["a"]["max_in_flight"] > 2


def test_retry_enabled_off_means_no_retry_at_all(world: World) -> None:
    failing = world.add_origin("e", OriginSpec(status_override=503))
    broken = world.add_origin("b", OriginSpec(status_override=500))
    world.start()
    result = run_crawl(gateway_settings([], RETRY_ENABLED=False), [failing.url("/"), broken.url("/")])
    assert sorted(o["status"] for o in result.by_kind("errback")) == [500, 503]
    assert result.stat("downloader/request_count") == 2
    assert result.stat("gateway/retry/count") == 0
    assert "RETRY_ENABLED is off: the gateway retries nothing" in result.log


def test_a_pinned_proxy_with_wrong_credentials_is_tried_once(world: World) -> None:
    origin = world.add_origin("a")
    locked = world.add_proxy("locked", ProxySpec(credentials=("user", "right")))
    world.start()
    wrong = locked.url.replace(":right@", ":wrong@")
    meta = {"gateway_proxy": wrong, "max_retry_times": 0}
    result = run_crawl(gateway_settings([wrong]), [origin.url("/p")], meta=meta)
    assert [o["status"] for o in result.outcomes] == [407]
    assert world.snapshot()["proxies"]["locked"]["requests"] == 1
    assert result.stat("gateway/retirements") == 1
    assert "wrong" not in result.log


def test_each_retry_logs_one_retrying_line(world: World) -> None:
    origin = world.add_origin("storm", OriginSpec(fail_for_seconds=0.3))
    world.start()
    result = run_crawl(gateway_settings([], GATEWAY_BACKOFF_BASE=0.1), [origin.url("/p")])
    retries = result.stat("gateway/retry/count")
    assert retries >= 1
    assert result.log.count("Retrying <GET") == retries
