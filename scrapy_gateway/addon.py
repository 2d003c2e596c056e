"""The add-on: `ADDONS = {"scrapy_gateway.Addon": 0}` enables everything with good defaults.

It changes only what the manual set-up in the README changes, at the add-on priority, so a value
the user wrote in settings.py always wins.
"""

from __future__ import annotations

from scrapy.settings import BaseSettings

from scrapy_gateway.middleware import GatewayMiddleware

MIDDLEWARE_ORDER = 580  # after RetryMiddleware (550), before HttpProxyMiddleware (750)
DOWNLOADER = "scrapy_gateway.GatewayDownloader"


class Addon:
    def update_settings(self, settings: BaseSettings) -> None:
        settings.setdefault_in_component_priority_dict("DOWNLOADER_MIDDLEWARES", GatewayMiddleware, MIDDLEWARE_ORDER)
        settings.set("DOWNLOADER", DOWNLOADER, priority="addon")
