"""The health report of a real crawl, opened in a real headless Chromium (Debian's `chromium`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from demo_world import OriginSpec, ProxySpec, World

from tests.conftest import gateway_settings, run_crawl
from tests.real.servers import CHROMIUM, require_binary

PASSWORD = "rep0rt-s3cret"
CHARTS = 11  # report_page.py draws 6 proxy charts and 5 domain charts, whatever the crawl
BROWSER_TIMEOUT = 120.0  # seconds: a loaded 2-core machine starts Chromium slowly


def chromium(page: Path, profile: Path, *args: str) -> str:
    """Chromium's output for the page, once its scripts have run (virtual time lets them finish
    without waiting on the wall clock)."""
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # root in CI containers
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_report_of_a_crawl_with_failures_renders_in_chromium(world: World, tmp_path: Path) -> None:
    require_binary(CHROMIUM)
    shop = world.add_origin("shop", OriginSpec())
    news = world.add_origin("news", OriginSpec(fail_for_seconds=1.5))
    world.add_proxy("good1", ProxySpec())
    world.add_proxy("good2", ProxySpec())
    world.add_proxy("auth", ProxySpec(credentials=("reporter", PASSWORD)))
    world.add_proxy("bad_gateway", ProxySpec(mode="bad_gateway"))
    world.add_proxy("dead", ProxySpec(mode="dead"))
    world.start()
    report = tmp_path / "report.html"
    urls = [origin.url(f"/p/{i}") for origin in (shop, news) for i in range(60)]
    settings = gateway_settings(
        [p.url for p in world.proxies.values()], GATEWAY_REPORT_FILE=str(report), GATEWAY_REPORT_INTERVAL=0.1
    )
    result = run_crawl(settings, urls)
    result.assert_each_request_ended_once(len(urls))
    assert result.stat("gateway/retry/count") > 0, result.stats  # something to report
    assert "health report written to" in result.log

    page = report.read_text(encoding="utf-8")
    assert PASSWORD not in page and "reporter:***@" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, flags=re.I)  # offline
    assert len(page.encode()) < 1_000_000

    dom = chromium(report, tmp_path / "profile", "--dump-dom")
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:2000]
    attributes = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    assert attributes.get("errors") == "", attributes  # window.onerror saw nothing
    assert attributes.get("charts") == str(CHARTS) and attributes.get("rendered") == str(CHARTS), attributes
    assert dom.count("<canvas") >= CHARTS  # uPlot drew each one
    assert "http_502" in dom  # the retries table, filled by the page's script

    screenshot = tmp_path / "report.png"
    chromium(report, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1240,3200")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"health report screenshot: {screenshot}")
