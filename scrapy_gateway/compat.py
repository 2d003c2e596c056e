"""The private Scrapy internals scrapy-gateway relies on, checked in one place at start-up.

GatewayDownloaderMixin replaces `Downloader._process_queue` (to reserve a transfer place before the
download task exists), hooks `_get_slot`, and wraps `handlers.download_request_async` (to time
each download). If a Scrapy release renames any of these, the crawl
must stop at start-up with a message naming the version, not misbehave quietly.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import scrapy
from scrapy.core import engine as _engine_module
from scrapy.core.downloader import Downloader, Slot
from scrapy.utils import defer

if TYPE_CHECKING:
    from scrapy.core.engine import ExecutionEngine
    from scrapy.crawler import Crawler

_DOWNLOADER_METHODS = ("_process_queue", "_wait_for_download", "_latercall", "_get_slot", "_download")
_DOWNLOADER_ATTRIBUTES = ("slots", "per_slot_settings", "ip_concurrency", "domain_concurrency", "handlers")
_SLOT_ATTRIBUTES = ("queue", "transferring", "latercall", "lastseen", "concurrency", "download_delay")


class IncompatibleScrapy(RuntimeError):
    """The installed Scrapy lacks an internal the gateway's downloader fix relies on."""


def missing_internals(downloader: Any) -> list[str]:
    missing = [f"Downloader.{name}" for name in _DOWNLOADER_METHODS if not callable(getattr(Downloader, name, None))]
    missing += [f"Downloader.{name}" for name in _DOWNLOADER_ATTRIBUTES if not hasattr(downloader, name)]
    handlers = getattr(downloader, "handlers", None)
    if handlers is not None and not inspect.iscoroutinefunction(getattr(handlers, "download_request_async", None)):
        missing.append("Downloader.handlers.download_request_async (a coroutine)")
    try:
        probe = Slot(1, 0.0)
    except TypeError:
        missing.append("Slot(concurrency, delay)")
    else:
        missing += [f"Slot.{name}" for name in _SLOT_ATTRIBUTES if not hasattr(probe, name)]
    if not callable(getattr(defer, "_schedule_coro", None)):
        missing.append("scrapy.utils.defer._schedule_coro")
    engine_slot_init = getattr(getattr(_engine_module, "_Slot", None), "__init__", None)
    if "closing" not in getattr(getattr(engine_slot_init, "__code__", None), "co_names", ()):
        missing.append("scrapy.core.engine._Slot.closing")
    return missing


def check_internals(downloader: Any) -> None:
    missing = missing_internals(downloader)
    if missing:
        raise IncompatibleScrapy(
            f"scrapy-gateway's downloader fix does not fit Scrapy {scrapy.__version__}: missing "
            f"{', '.join(missing)}. It was written for Scrapy 2.19; upgrade scrapy-gateway, or use "
            "a Scrapy release it supports."
        )


def engine_of(crawler: Crawler) -> ExecutionEngine | None:
    """The crawler's engine, or None before the crawl starts (2.19's property raises then)."""
    try:
        return crawler.engine
    except RuntimeError:
        return None


def is_closing(crawler: Crawler) -> bool:
    """The spider is closing: Scrapy has logged "Closing spider" and waits for what is in progress.

    Scrapy sends no signal at that point (spider_closed comes after); its engine slot's private
    `closing` Deferred is set then. Requests waiting in place must stop waiting at that moment, or
    the close waits out their timers.
    """
    engine = engine_of(crawler)
    slot = getattr(engine, "_slot", None)
    return engine is None or slot is None or getattr(slot, "closing", None) is not None
