"""Adapters tested directly: a Crawler built by Scrapy's get_crawler (never run), a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from scrapy.crawler import Crawler
from scrapy.utils.test import get_crawler

from scrapy_gateway.middleware import GatewayMiddleware
from scrapy_gateway.runtime import GatewayRuntime


@dataclass
class FakeClock:
    monotonic_now: float = 1000.0
    wall_now: float = 1_700_000_000.0

    def monotonic(self) -> float:
        return self.monotonic_now

    def time(self) -> float:
        return self.wall_now

    def advance(self, seconds: float) -> None:
        self.monotonic_now += seconds
        self.wall_now += seconds


@dataclass
class Rig:
    crawler: Crawler
    runtime: GatewayRuntime
    middleware: GatewayMiddleware
    clock: FakeClock

    def stat(self, key: str) -> Any:
        assert self.crawler.stats is not None
        return self.crawler.stats.get_value(key, 0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rig(clock: FakeClock) -> Callable[..., Rig]:
    def build(**settings: Any) -> Rig:
        crawler = get_crawler(
            settings_dict={"ADDONS": {"scrapy_gateway.Addon": 0}, "GATEWAY_SEED": 1, "LOG_LEVEL": "DEBUG", **settings}
        )
        runtime = GatewayRuntime.install(crawler, clock=clock.monotonic, wall=clock.time)
        middleware = GatewayMiddleware.from_crawler(crawler)
        crawler.spider = crawler._create_spider()  # get_retry_request reads the spider's stats
        return Rig(crawler, runtime, middleware, clock)

    return build
