"""The add-on: `ADDONS = {"scrapy_gateway.Addon": 0}` enables everything with good defaults.

It changes only what the manual set-up in the README changes, at the add-on priority, so a value
the user wrote in settings.py always wins; a Downloader of the user's own is kept and given the
gateway's fix by composition rather than replaced.
"""

from __future__ import annotations

import logging

from scrapy.core.downloader import Downloader
from scrapy.settings import BaseSettings
from scrapy.utils.misc import load_object

from scrapy_gateway.config import ConfigError
from scrapy_gateway.downloader import GatewayDownloader, GatewayDownloaderMixin
from scrapy_gateway.middleware import GatewayMiddleware

logger = logging.getLogger("scrapy_gateway")

MIDDLEWARE_ORDER = 595  # after RetryMiddleware (550) and HttpCompression (590), before Redirect (600)
DOWNLOADER = "scrapy_gateway.GatewayDownloader"


class Addon:
    def update_settings(self, settings: BaseSettings) -> None:
        settings.setdefault_in_component_priority_dict("DOWNLOADER_MIDDLEWARES", GatewayMiddleware, MIDDLEWARE_ORDER)
        current = load_object(settings["DOWNLOADER"])
        if current is Downloader or not isinstance(current, type):
            settings.set("DOWNLOADER", DOWNLOADER, priority="addon")
        elif issubclass(current, Downloader) and not issubclass(current, GatewayDownloaderMixin):
            settings.set("DOWNLOADER", with_gateway_fix(current), priority=settings.getpriority("DOWNLOADER") or 0)
            logger.info(
                "scrapy-gateway: DOWNLOADER %(name)s gets the gateway's per-slot limit fix (GatewayDownloaderMixin)",
                {"name": f"{current.__module__}.{current.__qualname__}"},
            )


def with_gateway_fix(downloader: type[Downloader]) -> type[Downloader]:
    """`downloader` with GatewayDownloaderMixin in front, for projects that subclass Downloader."""
    if issubclass(downloader, GatewayDownloaderMixin):
        return downloader
    if downloader is Downloader:
        return GatewayDownloader
    if downloader._process_queue is not Downloader._process_queue:
        # The mixin's _process_queue does not call the project's: one of the two fixes would be lost.
        raise ConfigError(
            f"DOWNLOADER: {downloader.__module__}.{downloader.__qualname__} overrides _process_queue, which "
            "scrapy-gateway's per-slot limit fix replaces; combine them by hand in a subclass of "
            "GatewayDownloaderMixin, or drop the add-on"
        )
    # The same name, module and qualified name: the project's class, with the fix in front (Scrapy's
    # own messages about it, such as deprecation warnings, keep naming it as the project wrote it).
    return type(
        downloader.__name__,
        (GatewayDownloaderMixin, downloader),
        {"__module__": downloader.__module__, "__qualname__": downloader.__qualname__},
    )
