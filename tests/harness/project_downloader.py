"""A project's own Downloader subclass, for the test that the add-on keeps it."""

from __future__ import annotations

from typing import Any

from scrapy.core.downloader import Downloader


class ProjectDownloader(Downloader):
    def fetch(self, request: Any, spider: Any = None) -> Any:
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("project_downloader/fetches")
        return super().fetch(request)
