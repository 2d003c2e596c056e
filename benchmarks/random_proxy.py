"""The stock contenders' rotation: a uniformly random proxy on every attempt, retries included.

    DOWNLOADER_MIDDLEWARES = {"benchmarks.random_proxy.RandomProxyMiddleware": 540}
    BENCH_PROXIES = ["http://127.0.0.1:8001", ...]

`process_request` runs low to high, so at 540 it runs before HttpProxyMiddleware (750); it always
overwrites `meta["proxy"]`, so a retry built by RetryMiddleware (a copy of the failed request,
meta included) goes through a fresh random draw instead of keeping the proxy that failed.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from scrapy.exceptions import NotConfigured

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from typing_extensions import Self


class RandomProxyMiddleware:
    def __init__(self, proxies: list[str], seed: int | None) -> None:
        self.proxies = proxies
        self.rng = random.Random(seed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        proxies = crawler.settings.getlist("BENCH_PROXIES")
        if not proxies:
            raise NotConfigured("BENCH_PROXIES is empty")
        seed = crawler.settings.get("BENCH_SEED")
        return cls(proxies, None if seed is None else int(seed))

    def process_request(self, request: Request) -> None:
        request.meta["proxy"] = self.rng.choice(self.proxies)
