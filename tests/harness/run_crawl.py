"""Run one real Scrapy crawl in this process and print its outcome as JSON (the tests' subprocess).

Input (argv[1], a JSON file): {"settings": {...}, "urls": [...], "meta": {...}, "dont_filter": bool,
"errback": bool, "progress": path (optional)}. A resumed crawl (JOBDIR) needs dont_filter false, so
the saved dupefilter skips the start URLs. Without an errback (errback false) a failure is only
Scrapy's "Error downloading" log line.
Output (argv[2]): {"outcomes": [...], "stats": {...}, "close_reason": str, "elapsed": float,
"cpu": float (CPU seconds from spider_opened on), "opened": float (time.monotonic() at
spider_opened: the system-wide clock, which a test compares with the world's epoch)}.
Every request ends in exactly one callback or errback; the list lets a test prove it.

Times are seconds from the crawl's own start (the spider_opened signal), not from this process's:
an outcome's `at`, and `elapsed` up to spider_closed. With "progress", the crawl's stats and
outcome count are written to that file (atomically, as JSON) every 20 ms while it runs, so a test
can wait for a condition ("8 retries are waiting") instead of sleeping a fixed time.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
import warnings
from collections.abc import AsyncIterator
from typing import Any

import scrapy
from scrapy.crawler import AsyncCrawlerProcess, CrawlerProcess
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.asyncio import create_looping_call
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

    def __init__(
        self, urls: list[str], meta: dict[str, Any], dont_filter: bool, errback: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.errback = errback
        self.urls = urls
        self.extra_meta = meta
        self.dont_filter = dont_filter

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for number, url in enumerate(self.urls):
            yield scrapy.Request(
                url,
                callback=self.parse,
                errback=self.failed if self.errback else None,
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
                "proxy": getattr(response.meta.get("_gateway_attempt"), "proxy", None),
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
                "error_text": error_text(failure.value),
                "status": status,
                "at": since_opened(),
                "retries": request.meta.get("retry_times", 0),
            }
        )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def error_text(exc: BaseException) -> str:
    """Everything an errback could print: the traceback with its chain, and the str, repr and args
    of every exception linked to this one (__cause__ and __context__, even a suppressed one)."""
    texts = traceback.format_exception(exc)
    todo: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args), repr(vars(current))]
        todo += [current.__cause__, current.__context__]
    return "\n".join(texts)


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
        # Reactorless mode (TWISTED_REACTOR_ENABLED = False) needs the asyncio-only process.
        process_class = CrawlerProcess if settings.get("TWISTED_REACTOR_ENABLED", True) else AsyncCrawlerProcess
        process = process_class(settings)
        crawler = process.create_crawler(ProbeSpider)
        outcome: dict[str, str] = {}
        progress_path = spec.get("progress")
        progress: list[Any] = []  # a looping call, made once the event loop runs

        def opened(spider: scrapy.Spider) -> None:
            global OPENED
            OPENED = time.monotonic()
            if progress_path:
                progress.append(create_looping_call(write_progress, crawler, progress_path))
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
        cpu_at_open: list[float] = []
        crawler.signals.connect(
            lambda: cpu_at_open.append(_cpu_seconds()), signal=scrapy.signals.spider_opened, weak=False
        )
        process.crawl(
            crawler,
            urls=spec["urls"],
            meta=spec.get("meta", {}),
            dont_filter=spec.get("dont_filter", True),
            errback=spec.get("errback", True),
        )
        process.start()
    deprecations = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    stats = {k: v for k, v in (crawler.stats.get_stats() if crawler.stats else {}).items()}
    out = {
        "deprecations": deprecations,
        "outcomes": OUTCOMES,
        "stats": stats,
        "close_reason": outcome.get("close_reason"),
        "elapsed": since_opened(CLOSED) if OPENED is not None else 0.0,
        "cpu": _cpu_seconds() - (cpu_at_open[0] if cpu_at_open else 0.0),
        "opened": OPENED,
    }
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(out, f, default=str)


if __name__ == "__main__":
    main()
