"""scrapy-gateway: proxy rotation, blame and backoff for 502s and other gateway failures."""

from scrapy_gateway.addon import Addon
from scrapy_gateway.config import ConfigError
from scrapy_gateway.downloader import GatewayDownloader, GatewayDownloaderMixin
from scrapy_gateway.errors import AttemptTimeout, GatewayError, NoProxyAvailable, RetryCancelled
from scrapy_gateway.middleware import GatewayMiddleware

__all__ = [
    "Addon",
    "AttemptTimeout",
    "ConfigError",
    "GatewayDownloader",
    "GatewayDownloaderMixin",
    "GatewayError",
    "GatewayMiddleware",
    "NoProxyAvailable",
    "RetryCancelled",
]
__version__ = "0.2.0.dev0"
