"""The crawlers compared on every scenario, as Scrapy settings.

All share the downloader limits (Scrapy's defaults), DOWNLOAD_TIMEOUT and a time cap; each keeps
its own retry defaults, which the table shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RANDOM_PROXY = {"benchmarks.random_proxy.RandomProxyMiddleware": 540}
# The sweep's oracle for a pool of one proxy (a rotating endpoint): stock, retrying until it gets
# through. 10 retries lose a page with probability f**11 (2e-8 at f = 0.2).
ORACLE_RETRIES = {"RETRY_TIMES": 10}


@dataclass(frozen=True)
class Contender:
    name: str
    retries: str  # the retry configuration, as shown in the table
    description: str


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender("stock", "RETRY_TIMES=2", "RetryMiddleware, uniformly random proxy per attempt"),
        Contender("stock+at", "RETRY_TIMES=2", "the same with AutoThrottle (its defaults)"),
        Contender("rotating", "PAGE_RETRY=5", "scrapy-rotating-proxies 0.6.2 as its README says"),
        Contender("gateway", "MAX_RETRIES=5", "scrapy-gateway add-on, defaults"),
        Contender("oracle", "RETRY_TIMES=2", "stock, random proxy among the good ones only"),
        Contender(
            "oracle-8",
            "RETRY_TIMES=2",
            "the oracle with its 8-per-domain limit enforced (GatewayDownloader alone; stock Scrapy "
            "under asyncio lets a slot exceed it)",
        ),
    )
}


def common(cap: float, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {
        "CONCURRENT_REQUESTS": 16,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 8,
        "DOWNLOAD_TIMEOUT": 2,
        "CLOSESPIDER_TIMEOUT": cap,
        "LOG_LEVEL": "INFO",
        "LOGSTATS_INTERVAL": 10,
        **(overrides or {}),  # a sweep cell's: DOWNLOAD_TIMEOUT, the per-domain ceiling, ...
    }


def settings(
    name: str, proxies: list[str], good: list[str], cap: float, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    base = common(cap, overrides)
    if name == "stock":
        return {**base, "DOWNLOADER_MIDDLEWARES": RANDOM_PROXY, "BENCH_PROXIES": proxies}
    if name == "stock+at":
        return {**base, "DOWNLOADER_MIDDLEWARES": RANDOM_PROXY, "BENCH_PROXIES": proxies, "AUTOTHROTTLE_ENABLED": True}
    if name == "oracle":
        return {**base, "DOWNLOADER_MIDDLEWARES": RANDOM_PROXY, "BENCH_PROXIES": good}
    if name == "oracle-8":
        return {
            **base,
            "DOWNLOADER_MIDDLEWARES": RANDOM_PROXY,
            "BENCH_PROXIES": good,
            "DOWNLOADER": "scrapy_gateway.GatewayDownloader",
        }
    if name == "rotating":
        return {
            **base,
            "ROTATING_PROXY_LIST": proxies,
            "DOWNLOADER_MIDDLEWARES": {
                "rotating_proxies.middlewares.RotatingProxyMiddleware": 610,
                "rotating_proxies.middlewares.BanDetectionMiddleware": 620,
            },
        }
    if name == "gateway":
        return {**base, "ADDONS": {"scrapy_gateway.Addon": 0}, "GATEWAY_PROXIES": proxies}
    raise ValueError(f"unknown contender {name!r}; known: {', '.join(CONTENDERS)}")
