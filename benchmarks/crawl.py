"""One benchmark crawl in this process (run as a subprocess: a Twisted reactor cannot restart).

    python benchmarks/crawl.py SPEC.json OUT.json

SPEC: {"settings": {...}, "urls": [[url, label], ...]}. OUT: {"outcomes": [[n, label, ok, at,
error], ...], "stats": {...}, "close_reason": str, "opened_to_closed": float, "opened_monotonic":
float}. `at` is seconds since the spider opened; `ok` is true for a page that reached its callback.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import scrapy
from scrapy.crawler import Crawler, CrawlerProcess
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

KEPT_STATS = ("downloader/", "retry/", "gateway/", "proxies/", "bans/", "finish_reason", "elapsed_time_seconds")


class BenchSpider(scrapy.Spider):
    name = "bench"
    custom_settings: dict[str, Any] = {}

    def __init__(self, urls: list[list[str]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.urls = urls
        self.opened_at = time.monotonic()
        self.cpu_at_open = time.process_time()
        self.cpu_at_last = self.cpu_at_open  # this process's CPU time at the last outcome
        self.outcomes: list[list[Any]] = []

    async def start(self) -> AsyncIterator[scrapy.Request]:
        self.opened_at = time.monotonic()
        self.cpu_at_open = self.cpu_at_last = time.process_time()
        for number, (url, label) in enumerate(self.urls):
            yield scrapy.Request(
                url,
                callback=self.parse,
                errback=self.failed,
                dont_filter=True,
                meta={"n": number, "label": label},
            )

    def parse(self, response: scrapy.http.Response) -> None:
        meta = response.meta
        self.outcomes.append([meta["n"], meta["label"], True, time.monotonic() - self.opened_at, None])
        self.cpu_at_last = time.process_time()

    def failed(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        error = type(failure.value).__name__
        if isinstance(failure.value, HttpError):
            error = f"http_{failure.value.response.status}"
        meta = request.meta
        self.outcomes.append([meta["n"], meta["label"], False, time.monotonic() - self.opened_at, error])
        self.cpu_at_last = time.process_time()


def dump(crawler: Crawler, closed: dict[str, Any], path: str) -> None:
    stats = crawler.stats.get_stats() if crawler.stats else {}
    spider = crawler.spider
    out = {
        "outcomes": list(spider.outcomes) if isinstance(spider, BenchSpider) else [],
        "stats": {k: v for k, v in list(stats.items()) if k.startswith(KEPT_STATS)},
        "close_reason": closed.get("reason"),
        "opened_to_closed": closed.get("at"),
        # time.monotonic() is system-wide on Linux: the parent compares it with the world's clock.
        "opened_monotonic": spider.opened_at if isinstance(spider, BenchSpider) else None,
        # CPU seconds this process spent from the spider's opening to the last outcome.
        "cpu": spider.cpu_at_last - spider.cpu_at_open if isinstance(spider, BenchSpider) else None,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, default=str)


def watchdog(crawler: Crawler, closed: dict[str, Any], path: str, after: float) -> None:
    """A crawl still running `after` seconds in is stuck closing: report what it did, and exit."""

    def fire() -> None:
        spider = crawler.spider
        closed.setdefault("reason", "stuck_closing")
        if isinstance(spider, BenchSpider):
            closed.setdefault("at", time.monotonic() - spider.opened_at)
        dump(crawler, closed, path)
        os._exit(0)

    timer = threading.Timer(after, fire)
    timer.daemon = True
    timer.start()


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    settings = {"LOG_LEVEL": "INFO", "TELNETCONSOLE_ENABLED": False, **spec["settings"]}
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(BenchSpider)
    closed: dict[str, Any] = {}
    cap = float(settings.get("CLOSESPIDER_TIMEOUT") or 0)
    if cap:
        watchdog(crawler, closed, sys.argv[2], cap + 15)

    def on_closed(spider: BenchSpider, reason: str) -> None:
        closed["reason"] = reason
        closed["at"] = time.monotonic() - spider.opened_at

    crawler.signals.connect(on_closed, signal=scrapy.signals.spider_closed)
    process.crawl(crawler, urls=spec["urls"])
    process.start()
    # Read after the reactor stopped: errbacks fired while closing (cancelled retries) count too.
    dump(crawler, closed, sys.argv[2])


if __name__ == "__main__":
    main()
