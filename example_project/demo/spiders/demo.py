"""The demo spider: N pages on each origin, every outcome counted, a summary per origin at close.

Run by run_demo.py, or by hand against a running world (`python -m demo_world` prints its URLs):

    scrapy crawl demo -a origins=shop=http://127.0.0.2:PORT,news=http://127.0.0.3:PORT -a pages=20 \
        -s 'GATEWAY_PROXIES=http://127.0.0.1:PORT1 http://127.0.0.1:PORT2'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

import scrapy
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.http import Response
from twisted.python.failure import Failure


def parse_origins(value: Mapping[str, str] | str) -> dict[str, str]:
    """`{"shop": "http://..."}`, or the command-line form "shop=http://...,news=http://..."."""
    if isinstance(value, str):
        pairs = (item.partition("=") for item in value.split(",") if item.strip())
        return {name.strip(): url.strip().rstrip("/") for name, _, url in pairs}
    return {name: url.rstrip("/") for name, url in value.items()}


class DemoSpider(scrapy.Spider):
    name = "demo"

    def __init__(self, origins: Mapping[str, str] | str = "", pages: int | str = 60, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.origins = parse_origins(origins)
        if not self.origins:
            raise ValueError("the demo spider needs origins: -a origins=name=http://host:port,...")
        self.pages = int(pages)
        self.ok: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.errors: Counter[tuple[str, str]] = Counter()

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> DemoSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider.summarize, signal=signals.spider_closed)
        return spider

    @property
    def expected(self) -> int:
        return self.pages * len(self.origins)

    async def start(self) -> AsyncIterator[scrapy.Request]:
        # Interleaved, so the three origins are crawled side by side.
        for page in range(1, self.pages + 1):
            for name, base in self.origins.items():
                yield scrapy.Request(
                    f"{base}/page/{page}",
                    callback=self.parse,
                    errback=self.on_error,
                    cb_kwargs={"origin": name},
                )

    def parse(self, response: Response, origin: str) -> None:
        self.ok[origin] += 1
        self._count("ok", origin)

    def on_error(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        origin = request.cb_kwargs["origin"]
        self.failed[origin] += 1
        self.errors[origin, type(failure.value).__name__] += 1
        self._count("failed", origin)
        self.logger.warning("Page failed: %s (%s)", request.url, type(failure.value).__name__)

    def _count(self, outcome: str, origin: str) -> None:
        if self.crawler.stats is not None:
            self.crawler.stats.inc_value(f"demo/{outcome}/{origin}")

    def summarize(self, reason: str) -> None:
        lines = [f"Demo summary ({reason}):"]
        for name in self.origins:
            errors = ", ".join(f"{kind}={n}" for (origin, kind), n in sorted(self.errors.items()) if origin == name)
            lines.append(
                f"  {name:<6} ok {self.ok[name]:>3}/{self.pages}  failed {self.failed[name]:>3}"
                + (f"  ({errors})" if errors else "")
            )
        self.logger.info("\n".join(lines))
