"""pytest plugin that scripts/scrapy_suite.py loads (-p scrapy_suite_plugin) into Scrapy's own test suite.

GATEWAY_SUITE_MODE says what every Crawler built in that suite gets, at "project" priority, right
after Crawler.__init__ (so get_crawler, CrawlerRunner, CrawlerProcess and bare Crawler(...) alike):

- "stock": nothing, Scrapy as it is;
- "addon": ADDONS = {"scrapy_gateway.Addon": 0}, merged into any ADDONS the test sets itself;
- "downloader": DOWNLOADER = "scrapy_gateway.GatewayDownloader" alone, unless the test sets its own.

GATEWAY_SUITE_RESULTS names a JSON file that gets every test's outcome: {nodeid: [outcome, message]}.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

MODE = os.environ.get("GATEWAY_SUITE_MODE", "stock")
MODES = ("stock", "addon", "downloader")
ADDON = "scrapy_gateway.Addon"
DOWNLOADER = "scrapy_gateway.GatewayDownloader"

_results: dict[str, list[str]] = {}
_crawlers_changed = 0


def _patch_crawler() -> None:
    from scrapy.crawler import Crawler
    from scrapy.settings import SETTINGS_PRIORITIES

    project = SETTINGS_PRIORITIES["project"]
    original = Crawler.__init__

    def __init__(self: Crawler, *args: Any, **kwargs: Any) -> None:
        global _crawlers_changed
        original(self, *args, **kwargs)
        settings = self.settings
        if settings.frozen:
            return
        if MODE == "addon":
            addons = dict(settings.getdict("ADDONS"))
            addons.setdefault(ADDON, 0)
            settings.set("ADDONS", addons, priority=max(settings.getpriority("ADDONS") or 0, project))
        elif (settings.getpriority("DOWNLOADER") or 0) < project:
            settings.set("DOWNLOADER", DOWNLOADER, priority="project")
        else:
            return
        _crawlers_changed += 1

    Crawler.__init__ = __init__  # type: ignore[method-assign]


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if MODE not in MODES:
        raise pytest.UsageError(f"GATEWAY_SUITE_MODE={MODE!r}: one of {', '.join(MODES)}")
    if MODE != "stock":
        _patch_crawler()


def pytest_report_header(config: pytest.Config) -> str:
    what = {
        "stock": "stock Scrapy",
        "addon": f"ADDONS = {{{ADDON!r}: 0}}",
        "downloader": f"DOWNLOADER = {DOWNLOADER!r}",
    }
    return f"scrapy-gateway suite mode: {MODE} ({what.get(MODE, '?')})"


def _message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    current = _results.get(report.nodeid)
    if report.when == "setup" or current is None:
        if report.skipped:
            outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"
            _results[report.nodeid] = [outcome, ""]
        elif report.failed:
            _results[report.nodeid] = ["error", _message(report)]
        else:
            _results[report.nodeid] = ["passed", ""]
    elif report.when == "call" and current[0] == "passed":
        if report.failed:
            _results[report.nodeid] = ["failed", _message(report)]
        elif report.skipped:
            _results[report.nodeid] = ["xfailed" if hasattr(report, "wasxfail") else "skipped", ""]
    elif report.when == "teardown" and report.failed and current[0] in ("passed", "skipped", "xfailed"):
        _results[report.nodeid] = ["error", "teardown: " + _message(report)]


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _results[report.nodeid] = ["error", "collection: " + _message(report)]  # type: ignore[arg-type]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MODE != "stock":
        terminalreporter.write_line(f"scrapy-gateway suite mode {MODE}: {_crawlers_changed} crawlers changed")


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("GATEWAY_SUITE_RESULTS")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"mode": MODE, "crawlers_changed": _crawlers_changed, "results": _results}, f, indent=0)
