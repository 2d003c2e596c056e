"""Run one real Scrapy crawl in this process and print its outcome as JSON (the tests' subprocess).

Input (argv[1], a JSON file): {"settings": {...}, "urls": [...], "meta": {...}, "dont_filter": bool,
"progress": path (optional)}. A resumed crawl (JOBDIR) needs dont_filter false, so the saved
dupefilter skips the start URLs.
Output (argv[2]): {"outcomes": [...], "stats": {...}, "close_reason": str, "elapsed": float}.
Every request ends in exactly one callback or errback; the list lets a test prove it.

Times are seconds from the crawl's own start (the spider_opened signal), not from this process's:
an outcome's `at`, and `elapsed` up to spider_closed. With "progress", the crawl's stats and
outcome count are written to that file (atomically, as JSON) every 20 ms while it runs, so a test
can wait for a condition ("8 retries are waiting") instead of sleeping a fixed time.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import scrapy
from scrapy.crawler import CrawlerProcess
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

OUTCOMES: list[dict[str, Any]] = []
OPENED: float | None = None  # monotonic time of spider_opened
CLOSED: float | None = None  # ... and of spider_closed
PROGRESS_INTERVAL = 0.02


def since_opened(now: float | None = None) -> float:
    """Seconds since the crawl started (spider_opened)."""
    assert OPENED is not None, "an outcome before spider_opened"
    return (time.monotonic() if now is None else now) - OPENED


class ProbeSpider(scrapy.Spider):
    name = "probe"

    def __init__(self, urls: list[str], meta: dict[str, Any], dont_filter: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.urls = urls
        self.extra_meta = meta
        self.dont_filter = dont_filter

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for number, url in enumerate(self.urls):
            yield scrapy.Request(
                url,
                callback=self.parse,
                errback=self.failed,
                dont_filter=self.dont_filter,
                meta={**self.extra_meta, "n": number},
            )

    def parse(self, response: scrapy.http.Response) -> None:
        OUTCOMES.append(
            {
                "n": response.meta["n"],
                "url": response.request.url if response.request else response.url,
                "kind": "callback",
                "status": response.status,
                "at": since_opened(),
                "proxy": response.meta.get("_gateway_proxy_key"),
                "retries": response.meta.get("retry_times", 0),
            }
        )

    def failed(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        status = failure.value.response.status if failure.check(HttpError) else None
        OUTCOMES.append(
            {
                "n": request.meta["n"],
                "url": request.url,
                "kind": "errback",
                "error": type(failure.value).__name__,
                "status": status,
                "at": since_opened(),
                "retries": request.meta.get("retry_times", 0),
            }
        )


def write_progress(crawler: Any, path: str) -> None:
    """The crawl so far, for a test polling it: {"at", "outcomes" (a count), "stats"}."""
    stats = crawler.stats.get_stats() if crawler.stats else {}
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"at": since_opened(), "outcomes": len(OUTCOMES), "stats": stats}, f, default=str)
    os.replace(tmp, path)


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings = {"LOG_LEVEL": "INFO", "TELNETCONSOLE_ENABLED": False, **spec["settings"]}
        process = CrawlerProcess(settings)
        crawler = process.create_crawler(ProbeSpider)
        outcome: dict[str, str] = {}
        progress_path = spec.get("progress")
        progress: list[LoopingCall] = []  # made once the reactor is installed

        def opened(spider: scrapy.Spider) -> None:
            global OPENED
            OPENED = time.monotonic()
            if progress_path:
                progress.append(LoopingCall(write_progress, crawler, progress_path))
                progress[0].start(PROGRESS_INTERVAL, now=True)

        def closed(spider: scrapy.Spider, reason: str) -> None:
            global CLOSED
            CLOSED = time.monotonic()
            outcome["close_reason"] = reason
            for call in progress:
                if call.running:
                    call.stop()

        crawler.signals.connect(opened, signal=scrapy.signals.spider_opened)
        crawler.signals.connect(closed, signal=scrapy.signals.spider_closed)
        process.crawl(crawler, urls=spec["urls"], meta=spec.get("meta", {}), dont_filter=spec.get("dont_filter", True))
        process.start()
    deprecations = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    stats = {k: v for k, v in (crawler.stats.get_stats() if crawler.stats else {}).items()}
    out = {
        "deprecations": deprecations,
        "outcomes": OUTCOMES,
        "stats": stats,
        "close_reason": outcome.get("close_reason"),
        "elapsed": since_opened(CLOSED) if OPENED is not None else 0.0,
    }
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(out, f, default=str)


if __name__ == "__main__":
    main()
