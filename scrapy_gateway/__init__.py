"""scrapy-gateway: proxy rotation, blame and backoff for 502s and other gateway failures."""

from scrapy_gateway.addon import Addon
from scrapy_gateway.downloader import GatewayDownloader
from scrapy_gateway.middleware import GatewayMiddleware

__all__ = ["Addon", "GatewayDownloader", "GatewayMiddleware"]
__version__ = "0.1.0"
