"""Shared fixtures: the loopback demo world, and real crawls run in a subprocess.

Each crawl gets its own Python process (a Twisted reactor cannot be restarted), while the world's
servers run in this process's background thread: the two never share a GIL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from demo_world import OriginSpec, ProxySpec, World

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class CrawlResult:
    outcomes: list[dict[str, Any]]
    stats: dict[str, Any]
    close_reason: str | None
    elapsed: float
    log: str
    cpu: float = 0.0
    opened: float | None = None  # time.monotonic() at spider_opened (comparable with the world's epoch)

    def by_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.outcomes if o["kind"] == kind]

    def stat(self, key: str) -> Any:
        return self.stats.get(key, 0)

    def assert_each_request_ended_once(self, count: int) -> None:
        numbers = sorted(o["n"] for o in self.outcomes)
        assert numbers == list(range(count)), f"lost or duplicated requests: {numbers}"


def run_crawl(
    settings: dict[str, Any],
    urls: list[str],
    *,
    meta: dict[str, Any] | None = None,
    dont_filter: bool = True,
    errback: bool = True,
    timeout: float = 120,
) -> CrawlResult:
    with tempfile.TemporaryDirectory() as folder:
        spec_path, out_path = Path(folder, "in.json"), Path(folder, "out.json")
        spec_path.write_text(
            json.dumps(
                {"settings": settings, "urls": urls, "meta": meta or {}, "dont_filter": dont_filter, "errback": errback}
            )
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "harness" / "run_crawl.py"), str(spec_path), str(out_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        if not out_path.exists():
            raise AssertionError(f"crawl failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        data = json.loads(out_path.read_text())
    assert not data["deprecations"], data["deprecations"]  # Scrapy 2.19, asyncio reactor, no warnings
    return CrawlResult(
        data["outcomes"],
        data["stats"],
        data["close_reason"],
        data["elapsed"],
        done.stderr,
        data.get("cpu", 0.0),
        data.get("opened"),
    )


def gateway_settings(proxies: list[str], **extra: Any) -> dict[str, Any]:
    """Settings of a test crawl: the add-on, short timeouts (and outage stalls), deterministic randomness."""
    return {
        "ADDONS": {"scrapy_gateway.Addon": 0},
        "GATEWAY_PROXIES": proxies,
        "GATEWAY_SEED": 1,
        "GATEWAY_LOG_INTERVAL": 1,
        "DOWNLOAD_TIMEOUT": 3,
        "GATEWAY_OUTAGE_STALL": 5,  # a test's origin that is down for good gets its last tries soon
        "LOG_LEVEL": "DEBUG",
        **extra,
    }


SILENT_FIRST_SEED = 3  # GATEWAY_SEED that draws both silent proxies of `silent_first_picks` first
SILENT_FIRST_PAGES = 40


def silent_first_picks(world: World) -> tuple[list[str], list[str]]:
    """Two proxies that accept and never answer, then two good ones, on distinct addresses, and
    one origin; the world started. With GATEWAY_SEED = SILENT_FIRST_SEED a crawl's first two
    requests (slow start's two rooms) go to the silent ones: nothing can come back, and no
    per-attempt timeout applies on a domain that has never answered. The pages' URLs, the proxies."""
    origin = world.add_origin("a", OriginSpec(service_time=0.02))
    holes = [world.add_proxy(f"hole{i}", ProxySpec(mode="blackhole"), host=f"127.0.1.{i + 1}") for i in range(2)]
    good = [world.add_proxy(f"good{i}", ProxySpec(), host=f"127.0.1.{i + 3}") for i in range(2)]
    world.start()
    return [origin.url(f"/p/{i}") for i in range(SILENT_FIRST_PAGES)], [p.url for p in (*holes, *good)]


def assert_silent_picks_were_cut(result: CrawlResult, download_timeout: float) -> None:
    """Every page of `silent_first_picks` came, the silent proxies' rooms went to the next requests
    (`unheard`), the good proxies answered, and the silent ones were cut then, not after
    DOWNLOAD_TIMEOUT."""
    result.assert_each_request_ended_once(SILENT_FIRST_PAGES)
    assert len(result.by_kind("callback")) == SILENT_FIRST_PAGES
    assert result.stat("gateway/concurrency/unheard") >= 1
    assert result.stat("gateway/failures/attempt_timeout") >= 2
    assert result.elapsed < download_timeout / 4, result.elapsed


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    try:
        yield w
    finally:
        w.stop()
