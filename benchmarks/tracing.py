"""A per-response trace for benchmark experiments, and where a contender's failures went.

    BENCH_SETTINGS='{"EXTENSIONS": {"benchmarks.tracing.Trace": 0}, "BENCH_TRACE_FILE": "/tmp/t.jsonl"}' \\
        python -m benchmarks.sweep --only flapping --contenders gateway --repeat 1
    python -m benchmarks.tracing /tmp/t.jsonl

The extension writes one JSON line per download that returned a response (response_downloaded:
before any middleware judged it), from the crawl's own start: seconds since spider_opened, the
proxy (credentials masked), the status, the URL, the download latency. The summary sorts each
proxy's failures (status >= 500) by what came before them on that proxy: `first` (after a success,
or its first answer), `follow` (within 0.5 s of a failure: sent before the proxy was out), `probe`
(later, after a failure: a look after a cooldown that found it still bad). Only the last crawl
of a run is kept in the file.
"""

from __future__ import annotations

import collections
import json
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured

from scrapy_gateway.core.proxies import mask_url

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response

_FOLLOW = 0.5  # seconds: a failure this soon after another on the same proxy followed it


class Trace:
    def __init__(self, crawler: Crawler) -> None:
        path = crawler.settings.get("BENCH_TRACE_FILE")
        if not path:
            raise NotConfigured("BENCH_TRACE_FILE names no file")
        self._path = str(path)
        self._out: IO[str] | None = None
        self._t0 = 0.0
        crawler.signals.connect(self._opened, signals.spider_opened)
        crawler.signals.connect(self._downloaded, signals.response_downloaded)
        crawler.signals.connect(self._closed, signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Trace:
        return cls(crawler)

    def _opened(self, spider: Spider) -> None:
        self._out = open(self._path, "w")  # noqa: SIM115 (closed at spider_closed)
        self._t0 = time.monotonic()

    def _downloaded(self, response: Response, request: Request) -> None:
        if self._out is None:
            return
        proxy = request.meta.get("proxy")
        row = [
            round(time.monotonic() - self._t0, 4),
            mask_url(proxy) if isinstance(proxy, str) else None,
            response.status,
            request.url,
            round(float(request.meta.get("download_latency", -1.0)), 4),
        ]
        self._out.write(json.dumps(row) + "\n")

    def _closed(self, spider: Spider) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def failure_kinds(rows: list[list[Any]]) -> dict[str, collections.Counter[str]]:
    """Per proxy: its failures as first, follow and probe (see the module docstring)."""
    by_proxy: dict[str, list[tuple[float, float, bool]]] = collections.defaultdict(list)
    for at, proxy, status, _url, latency in rows:
        by_proxy[str(proxy)].append((at - max(latency, 0.0), at, status >= 500))
    kinds: dict[str, collections.Counter[str]] = {}
    for proxy, outcomes in by_proxy.items():
        counts: collections.Counter[str] = collections.Counter()
        previous: tuple[bool, float] | None = None  # (failed, when it arrived)
        for sent, at, failed in sorted(outcomes):
            if failed:
                if previous is None or not previous[0]:
                    counts["first"] += 1
                elif sent - previous[1] > _FOLLOW:
                    counts["probe"] += 1
                else:
                    counts["follow"] += 1
            previous = (failed, at)
        kinds[proxy] = counts
    return kinds


def main() -> None:
    with open(sys.argv[1]) as trace:
        rows = [json.loads(line) for line in trace]
    total: collections.Counter[str] = collections.Counter()
    for proxy, counts in sorted(failure_kinds(rows).items()):
        served = sum(1 for row in rows if str(row[1]) == proxy)
        print(f"{proxy}: {served} responses, failures {dict(counts) or 0}")
        total.update(counts)
    print(f"all: {len(rows)} responses, failures {dict(total)} ({sum(total.values())})")


if __name__ == "__main__":
    main()
